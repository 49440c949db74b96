"""What the rendered pages need beyond Jupyter Book's defaults.

1. MathJax served with the built book, so formulas typeset without a network.

MathJax 3 comes from the PyPI package ``django-static-mathjax`` (the plain MathJax distribution as package data;
it needs no Django). The build copies the parts the ``tex-mml-chtml`` component loads (the component, TeX
extensions, CHTML fonts, menu, accessibility) into ``_static/mathjax/`` and points Sphinx's ``mathjax_path`` there.

2. Each page script once. sphinx-thebe adds its inline configuration (``const THEBE_JS_URL = ...``) every time
Sphinx reads the sources, and the bibliography makes Sphinx read twice; a second ``const`` is a JavaScript
``SyntaxError`` on every page. Identical scripts are dropped from the page context.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.errors import ExtensionError

ENTRY = "tex-mml-chtml.js"
#: what ``tex-mml-chtml.js`` loads on demand (autoloaded TeX packages, fonts, menu, speech/explorer)
PARTS = (ENTRY, "input", "output/chtml", "ui", "a11y", "sre", "adaptors")
TARGET = "mathjax"  # under _static


def mathjax_source() -> Path:
    """The folder of MathJax's ``es5`` build in the installed package, or one line saying what to install."""
    spec = importlib.util.find_spec("mathjax")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        es5 = Path(root) / "static" / "mathjax" / "es5"
        if (es5 / ENTRY).is_file():
            return es5
    raise ExtensionError("offline MathJax: no MathJax files found; valid choices: pip install "
                         "'django-static-mathjax>=3.2,<4' (it ships MathJax 3 as package data)")


def _point_sphinx_at_local_copy(app, config) -> None:
    mathjax_source()  # fail early, in one line, when the package is missing
    config.mathjax_path = f"{TARGET}/{ENTRY}"  # relative paths are relative to _static


def _copy(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    src, dst = mathjax_source(), Path(app.outdir) / "_static" / TARGET
    for part in PARTS:
        s = src / part
        if s.is_dir():
            shutil.copytree(s, dst / part, dirs_exist_ok=True)
        elif s.is_file():
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / part)


def _drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts, seen = context.get("script_files"), set()
    if not scripts:
        return
    kept = []
    for js in scripts:
        # an inline script's file name is None from one extension and "" from another
        key = (getattr(js, "filename", str(js)) or "", getattr(js, "priority", 0),
               repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app):
    app.connect("config-inited", _point_sphinx_at_local_copy, priority=900)
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    app.connect("build-finished", _copy)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
