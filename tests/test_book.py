"""The book builds offline with warnings as errors, and each chapter's results table is in the HTML."""
import json
import re
import shutil
import subprocess

import pytest

from kdlib.chapters import in_book

from .conftest import ROOT


@pytest.mark.slow
def test_book_builds_with_results_tables(tmp_path):
    exe = shutil.which("jupyter-book")
    if exe is None:
        pytest.skip("jupyter-book not installed")
    proc = subprocess.run([exe, "build", str(ROOT), "--path-output", str(tmp_path), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html_root = tmp_path / "_build" / "html"
    for ch in in_book(ROOT):
        page = html_root / ch.notebook.rsplit(".", 1)[0]
        html = page.with_suffix(".html").read_text()
        assert "<h1>" in html or "<h1 " in html
        if ch.notebook.endswith(".ipynb"):
            nb = json.loads((ROOT / ch.notebook).read_text())
            assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{ch.notebook} has no outputs"
            tables = re.findall(r'<table[^>]*class="dataframe"', html)
            assert tables, f"no results table in {page}.html"
            assert "dev accuracy" in html or "dev " in html
