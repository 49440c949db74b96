"""nbval re-executes the committed chapters against their stored records, except a chapter still being
written (registered, not yet in ``_toc.yml``): its records are still being made, and re-executing it would
train its plan. The smoke runs in tests/test_chapters.py still execute it."""
from pathlib import Path

from kdlib.chapters import CHAPTERS, in_book

_listed = {c.key for c in in_book(Path(__file__).resolve().parent.parent)}
collect_ignore = [c.notebook.split("/", 1)[1] for c in CHAPTERS.values()
                  if c.key not in _listed and c.notebook.endswith(".ipynb")]


try:  # pytest -n N (pytest-xdist): tests are spread one by one, a notebook's cells kept together in order, in one
    from xdist.scheduler import LoadScopeScheduling  # kernel (nbval runs them as one session)
except ImportError:  # without xdist this hook would be unknown to pytest
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:
    class NotebookScheduling(LoadScopeScheduling):
        """``--dist load`` (``-n``'s default), except that a notebook's cells are one unit of work."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path.endswith(".ipynb") else nodeid

    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") == "load":
            return NotebookScheduling(config, log)
