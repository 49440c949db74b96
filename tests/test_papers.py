"""The papers' numbers: one data file in the package, read by the chapters, every table sourced."""
import json
import re

import pytest

from kdlib import papers
from kdlib.errors import KDLibError

from .conftest import ROOT


def test_figures_and_their_status():
    f = papers.figure("hinton2015distilling", "mnist", "small net, distilled at T = 20")
    assert (f.value, f.status, f.column) == (74, "recalled", "test errors")
    assert papers.figure("tang2019distilling", "glue_test", "BERT-large", "SST-2").value == "94.9"
    assert papers.figure("passban2021alpkd", "dev_2layer", "ALP", "STS-B").value == "46.04"
    assert papers.source("sun2019patient", "glue_test").startswith("Sun et al. 2019, ")
    assert papers.source("sun2019patient", "glue_test").endswith("test split (recalled)")


@pytest.mark.parametrize("args, message", [
    (("nobody2020", "t", "r"), "paper 'nobody2020'; valid choices: hinton2015distilling"),
    (("hinton2015distilling", "cifar", "r"), "valid choices: mnist"),
    (("hinton2015distilling", "mnist", "huge net"), "valid choices: large net (teacher)"),
    (("tang2019distilling", "glue_test", "BERT-large"), "has several columns; valid choices: SST-2, QQP"),
    (("passban2021alpkd", "dev_2layer", "CKD", "SST-2"), "gives no figure for 'CKD', 'SST-2'"),
])
def test_bad_lookups_name_the_valid_choices(args, message):
    with pytest.raises(KDLibError, match=re.escape(message)):
        papers.figure(*args)


def test_every_table_is_complete_and_cited():
    bib = (ROOT / "references.bib").read_text()
    tables = list(papers.tables())
    assert len(tables) >= 6
    for info, df in tables:
        assert f"{{{info['paper']}," in bib, f"{info['paper']} is not in references.bib"
        assert info["status"] in papers.statuses() and info["split"] in ("train", "dev", "test")
        assert info["caption"] and info["where"] and len(df) == len(info["rows"])


def test_a_bad_data_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "papers.yaml"
    bad.write_text("statuses: {quoted: q}\npapers:\n  x:\n    short: X\n    title: T\n    tables:\n"
                   "      t: {caption: c, where: w, split: dev, status: guessed, columns: [a], rows: {r: [1]}}\n")
    with pytest.raises(KDLibError, match=r"papers.yaml: x/t: status 'guessed'; valid choices: quoted"):
        papers._load(str(bad))
    bad.write_text(bad.read_text().replace("guessed", "quoted").replace("r: [1]", "r: [1, 2]"))
    with pytest.raises(KDLibError, match=r"row 'r' has 2 values for 1 columns"):
        papers._load(str(bad))


def test_chapters_cite_nothing_outside_the_repository():
    """A reader of the book or a user of a clone has no ../shared: no page or library text points there."""
    texts = {p: p.read_text() for p in [*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("chapters/*.md"),
                                        *ROOT.glob("kdlib/**/*.py")]}
    for path, text in texts.items():
        if path.suffix == ".ipynb":  # prose and code, not the stored outputs of a stale run
            nb = json.loads(text)
            text = "\n".join("".join(c["source"]) for c in nb["cells"])
        assert "shared/reference" not in text and "papers.md" not in text, path.name
