"""The book builds offline with warnings as errors, and each chapter's results table is in the HTML."""
import json
import re
import pytest

from kdlib.chapters import in_book

from .conftest import ROOT


@pytest.mark.slow
def test_book_builds_with_results_tables(built_book):
    html_root = built_book
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


@pytest.mark.slow
def test_math_is_served_with_the_book(built_book):
    """MathJax comes from a package and is copied into the build: no page loads it from a CDN."""
    assert (built_book / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    for page in built_book.glob("chapters/*.html"):
        html = page.read_text()
        assert "cdn.jsdelivr" not in html and "mathjax@" not in html, page.name
        if "class=\"math" in html:
            assert "_static/mathjax/tex-mml-chtml.js" in html, page.name


@pytest.mark.slow
def test_citations_link_to_the_bibliography(built_book):
    bib = (built_book / "chapters" / "bibliography.html").read_text()
    for key in ("Hinton", "Tang", "Sun", "Passban"):
        assert key in bib
    appendix = (built_book / "chapters" / "appendix_paper_numbers.html").read_text()
    assert re.search(r'href="bibliography.html#id\d+"', appendix)
    assert "shared/reference" not in appendix
