"""The built book as a reader sees it: every page opened in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium).

A page fails when an image did not load, when it shows fewer tables or figures than its notebook's outputs
hold, when math is left untypeset, when an output of a re-made chapter runs off the right edge of the page,
or when it logs a JavaScript error. A screenshot of every page and the
counts the browser saw are saved under ``_build/browser/`` of the book.
"""
from __future__ import annotations

import json
import shutil

import pytest

from kdlib.chapters import in_book

from .conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SHOTS = ROOT / "_build" / "browser"

#: typesetting finished (or no MathJax on the page): resolves with "ok"
WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done("no-mathjax"); return; }
MathJax.startup.promise.then(() => done("ok")).catch(e => done("error: " + e));
"""
#: what the page holds, outside code (raw math in prose means MathJax did not run)
INSPECT = """
const main = document.querySelector("main") || document.body;
const prose = main.cloneNode(true);
prose.querySelectorAll("pre, code, script, style, .highlight").forEach(e => e.remove());
const text = prose.textContent;
return {
  broken_images: [...main.querySelectorAll("img")].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  tables: main.querySelectorAll("table").length,
  figures: main.querySelectorAll("div.cell_output img, figure img").length,
  formulas: main.querySelectorAll("mjx-container").length,
  raw_math: ["\\\\(", "\\\\[", "$$"].filter(s => text.includes(s)),
  too_wide: [...main.querySelectorAll("div.cell_output > div, div.cell_output table")]
    .filter(e => e.scrollWidth > e.clientWidth + 4).length,
  height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
};
"""


def _browser():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("no browser here: install Debian's chromium and chromium-driver (apt-get install -y chromium "
                    "chromium-driver); .ci/run does")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--allow-file-access-from-files", "--window-size=1280,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


def _expected(notebook: str) -> dict:
    """Tables and figures among the outputs the page renders (cells not removed by a tag)."""
    nb = json.loads((ROOT / notebook).read_text())
    tables = figures = 0
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & {"remove-cell", "remove-output"}:
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            tables += "<table" in "".join(data.get("text/html", ""))
            figures += any(k.startswith("image/") for k in data)
    return {"tables": tables, "figures": figures}


def test_every_page_in_a_browser(built_book):
    driver = _browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    seen, problems = {}, []
    try:
        driver.set_script_timeout(60)
        for chapter in in_book(ROOT):
            name = chapter.notebook.rsplit(".", 1)[0]
            page = built_book / f"{name}.html"
            driver.get(page.as_uri())
            math = driver.execute_async_script(WAIT_FOR_MATH)
            got = driver.execute_script(INSPECT)
            errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            driver.set_window_size(1280, min(int(got["height"]) + 100, 20000))
            driver.save_screenshot(str(SHOTS / f"{chapter.key}.png"))
            driver.set_window_size(1280, 1000)
            seen[chapter.key] = {k: got[k] for k in ("tables", "figures", "formulas")}
            where = f"{name}.html"
            if math.startswith("error"):
                problems.append(f"{where}: MathJax failed ({math})")
            if got["broken_images"]:
                problems.append(f"{where}: images did not load: {got['broken_images']}")
            if got["raw_math"]:
                problems.append(f"{where}: untypeset math {got['raw_math']}")
            if errors:
                problems.append(f"{where}: JavaScript errors {errors}")
            seen[chapter.key]["outputs wider than the page"] = got["too_wide"]
            if got["too_wide"]:
                problems.append(f"{where}: {got['too_wide']} output(s) run off the right edge of the page")
            if chapter.notebook.endswith(".ipynb"):
                want = _expected(chapter.notebook)
                for kind in ("tables", "figures"):
                    if got[kind] < want[kind]:
                        problems.append(f"{where}: {got[kind]} {kind} shown, the notebook's outputs hold {want[kind]}")
    finally:
        driver.quit()
    (SHOTS / "pages.json").write_text(json.dumps(seen, indent=1))
    assert not problems, "\n".join(problems)
    assert seen["hinton"]["formulas"] > 0 and seen["hinton"]["figures"] > 0
