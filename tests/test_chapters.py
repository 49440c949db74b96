"""Every chapter, executed headlessly by papermill under the smoke profile, into a temporary folder; and what
the committed notebooks must hold for the rendered page (figures, hidden parameters)."""
import json
import re

import pytest

from kdlib.chapters import CHAPTERS, in_book

from .conftest import ROOT, shared_tmp

NOTEBOOKS = [c for c in in_book(ROOT) if c.notebook.endswith(".ipynb")]
#: and the chapters still being written (registered, their notebook committed, not yet in _toc.yml)
WRITTEN = NOTEBOOKS + [c for c in CHAPTERS.values() if c not in NOTEBOOKS and c.notebook.endswith(".ipynb")
                       and (ROOT / c.notebook).is_file()]


def test_the_book_lists_registered_chapters_only(tmp_path):
    from kdlib.errors import KDLibError

    assert [c.key for c in in_book(ROOT)][:3] == ["intro", "hinton", "bilstm"]
    assert all((ROOT / c.notebook).is_file() for c in in_book(ROOT))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: chapters/00_introduction\nchapters:\n"
                                       "- file: chapters/99_nothing\n")
    with pytest.raises(KDLibError, match="_toc.yml lists 'chapters/99_nothing', which is not a registered chapter"):
        in_book(tmp_path)
    assert set(CHAPTERS) >= {"pkd", "alp"}  # registered: their plans run with `kdbook experiment`


@pytest.fixture(scope="session")
def _smoke_book(tmp_path_factory):
    return shared_tmp(tmp_path_factory, "smoke-book")


@pytest.fixture
def book_store(_smoke_book, monkeypatch):
    """One results and cache folder for every chapter's smoke run, as a reader's clone has one: a run that two
    chapters plan (a teacher, a row one chapter reuses from another) is made once and found by the other, also
    when two ``pytest -n`` workers run two chapters at once (the store's locks make one wait for the other)."""
    monkeypatch.setenv("KDLIB_RESULTS_DIR", str(_smoke_book / "results"))
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(_smoke_book / "cache"))
    monkeypatch.delenv("KDLIB_RECOMPUTE", raising=False)
    return _smoke_book


@pytest.mark.slow
@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.key)
def test_chapter_runs_under_smoke(chapter, book_store, tmp_path, monkeypatch):
    import papermill as pm

    store = book_store
    if chapter.plan is None:  # a page without experiments gets a store of its own: it must make no record
        store = tmp_path
        monkeypatch.setenv("KDLIB_RESULTS_DIR", str(store / "results"))
    before = {p.name for p in (store / "results").rglob("*.json")}
    out = store / f"{chapter.key}.ipynb"
    pm.execute_notebook(str(ROOT / chapter.notebook), str(out), parameters={"profile": "smoke"},
                        cwd=str(ROOT / "chapters"), kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert not errors
    records = [json.loads(p.read_text()) for p in (store / "results" / "smoke").glob("*/*.json")]
    if chapter.plan is None:  # a page without experiments (the papers' numbers) makes no records
        assert {p.name for p in (store / "results").rglob("*.json")} == before
        return
    from kdlib.chapters import chapter_plan

    expected = {e.hash for exps in chapter_plan(chapter.key, "smoke").values() for e in exps}
    assert expected <= {r["hash"] for r in records}
    for r in records:
        assert r["history"] and r["config"]["profile"] == "smoke"
        assert r["wall_time_s"] > 0 and r["git_commit"] and r["hardware"]["device"] in ("cpu", "cuda")
        main = next((k for k in r["best"] if k not in ("epoch", "step", "train_loss")), None)
        if main is None:  # a run without dev evaluations (general distillation, a stage kept for the next)
            assert r["config"]["evals_per_epoch"] == 0 and r["config"]["keep"] == "last" and r["dev_logits"] == []
            continue
        low = -100 if r["config"]["task"] == "stsb" else 0  # a correlation may be negative
        assert low <= r["best"][main] <= 100
        # a masked LM's dev score is its masked-token accuracy: it keeps no logits per example
        assert len(r["dev_logits"]) == (0 if r["config"]["method"] == "mlm" else r["n_dev"])
    teachers = [r for r in records if r["config"]["chapter"] == "teachers" and r["label"] == "teacher"
                and r["config"]["task"] == "sst2"]
    assert teachers and all(t["best"]["accuracy"] > 70 for t in teachers)  # the toy task is learnable


def test_layer_chapters_share_records():
    """Chapter 3 reuses chapter 1's 2-layer SST-2 rows; chapter 7 reuses chapter 3's rows; the
    students have the planned depths and the pair tasks the teacher's maximum length."""
    from kdlib.chapters import chapter_plan, pkd

    hinton, p3, p7 = (chapter_plan(k, "cpu") for k in ("hinton", "pkd", "alp"))
    hashes = lambda exps: [e.hash for e in exps]
    assert hashes(p3[pkd.row("sst2", 2, "vanilla KD")]) == hashes(hinton["student, KD T=2 α=0.5"])
    assert hashes(p3[pkd.row("sst2", 2, "fine-tuned on labels")]) == hashes(hinton["student, labels only"])
    shared = [r for r in p3 if not r.startswith("grid")]
    assert all(hashes(p3[r]) == hashes(p7[r]) for r in shared)
    for task in ("sst2", "mrpc", "stsb"):
        for d in (3, 2):
            for name, kind in pkd.MAPPINGS.items():
                exps = p3[pkd.row(task, d, name)]
                assert len(exps) == 3 and all(len(e.model.layers) == d for e in exps)
                assert exps[0].hp == {"T": 2.0, "alpha": 0.5, "beta": pkd.BETA, "mapping": kind}
            alp_exp = p7[pkd.row(task, d, "ALP-KD")][0]
            assert alp_exp.method == "alp" and alp_exp.chapter == "alp"
    stsb = p3[pkd.row("stsb", 3, "PKD-Skip")][0]
    assert stsb.max_length == stsb.teacher.max_length == 128 and stsb.epochs == 8  # the settings table


@pytest.mark.parametrize("chapter", NOTEBOOKS, ids=lambda c: c.key)
def test_checked_cells_hold_no_figures(chapter):
    """nbval compares the outputs of cells tagged ``nbval-check-output``; CI runs with MPLBACKEND=Agg, where
    ``plt.show()`` displays nothing, so a tagged cell that shows a figure fails there and nowhere else."""
    nb = json.loads((ROOT / chapter.notebook).read_text())
    tagged = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
              and "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    with_figures = [i for i in tagged if any("image/png" in o.get("data", {}) for o in nb["cells"][i]["outputs"])]
    assert tagged and not with_figures, f"{chapter.notebook}: tagged cells {with_figures} show a figure"


#: a cell that draws: matplotlib figures and kdlib's plot helpers
DRAWS = re.compile(r"plt\.(subplots|figure|show)\(|report\.plot_\w+\(")


def _code_cells(chapter):
    nb = json.loads((ROOT / chapter.notebook).read_text())
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


@pytest.mark.parametrize("chapter", NOTEBOOKS, ids=lambda c: c.key)
def test_figure_cells_show_their_figure(chapter):
    """A cell that draws a figure holds an image in the committed notebook (a chapter executed with a
    non-interactive backend such as Agg shows the reader nothing where the text says "see the plot")."""
    blank = [i for i, c in _code_cells(chapter) if DRAWS.search("".join(c["source"]))
             and not any(k.startswith("image/") for o in c.get("outputs", []) for k in o.get("data", {}))]
    assert not blank, f"{chapter.notebook}: cells {blank} draw a figure, but the committed notebook holds no image"


@pytest.mark.parametrize("chapter", WRITTEN, ids=lambda c: c.key)
def test_parameters_cells_are_hidden(chapter):
    cells = [(i, c["metadata"].get("tags", [])) for i, c in _code_cells(chapter)]
    params = [(i, tags) for i, tags in cells if {"parameters", "injected-parameters"} & set(tags)]
    assert params and all("remove-cell" in tags for _, tags in params), f"{chapter.notebook}: {params}"


def test_kdbook_run_renders_figures_inline_and_hides_parameters(tmp_path):
    """`kdbook run` executes with the inline backend whatever MPLBACKEND says, and tags papermill's parameters
    cells ``remove-cell``."""
    import os
    import subprocess
    import sys

    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 'profile = "cpu"',
                     "outputs": [], "execution_count": None},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1])\nplt.show()"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    (book / "_toc.yml").write_text("format: jb-book\nroot: chapters/00_introduction\n")
    path = book / "chapters" / "99_plot.ipynb"
    path.write_text(json.dumps(nb))
    from kdlib import cli

    out = tmp_path / "out.ipynb"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    code = ("import sys; from kdlib import cli, chapters as c; "
            "c.CHAPTERS['plot'] = c.Chapter('plot', 'chapters/99_plot.ipynb', 'plot'); "
            f"sys.exit(cli.main(['run', 'chapters/99_plot.ipynb', '--profile', 'smoke', '--output', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=book, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = json.loads(out.read_text())["cells"]
    assert any("image/png" in o.get("data", {}) for o in cells[-1]["outputs"])
    tagged = [c["metadata"]["tags"] for c in cells if c["metadata"].get("tags")]
    assert len(tagged) == 2 and all("remove-cell" in t for t in tagged)  # parameters + injected parameters
    assert cli.INLINE_BACKEND.endswith("backend_inline")


def test_examples_shown_on_a_page_come_from_a_stored_record(store, monkeypatch):
    """A page shows example texts from a measurement record, so it needs no data once the record exists."""
    from kdlib import runner
    from kdlib.chapters import chapter_plan, examples

    exp = chapter_plan("hinton", "smoke")["teacher"][0]
    got = examples("hinton", exp, [3, 1, 3])
    assert list(got) == [1, 3] and all(isinstance(t, str) and t for t in got.values())
    assert len(list((store / "results" / "smoke" / "hinton" / "measurements").glob("examples-*.json"))) == 1

    def no_data(*args, **kwargs):
        raise OSError("no data here")

    monkeypatch.setattr(runner, "split_data", no_data)
    assert examples("hinton", exp, [1, 3]) == got  # read back from the record
    assert examples("hinton", exp, [2]) is None  # not stored, and no data to read it from


def test_chapter_two_shows_its_data_from_stored_records(store, monkeypatch):
    """Chapter 2's augmented examples and the always-paraphrase baseline are stored measurements."""
    from kdlib import runner
    from kdlib.chapters import bilstm, chapter_plan, constant_baseline
    from kdlib.profiles import get_profile

    P = get_profile("smoke")
    shown = bilstm.augmentation_examples(P, n_iter=3, count=2, min_words=6)
    assert len(shown) == 2 and all(ex["original"] and ex["samples"] for ex in shown)
    pair_teacher = chapter_plan("bilstm", "smoke")["MRPC: teacher"][0]
    always = constant_baseline("bilstm", pair_teacher, label=1)
    assert 0 < always["accuracy"] < 100 and always["f1"] > always["accuracy"]  # F1 of the positive class

    monkeypatch.setattr(runner, "split_data", lambda *a, **k: (_ for _ in ()).throw(OSError("no data")))
    assert bilstm.augmentation_examples(P, n_iter=3, count=2, min_words=6) == shown
    assert constant_baseline("bilstm", pair_teacher, label=1) == always
    assert constant_baseline("bilstm", pair_teacher, label=0) is None


def test_the_majority_class_floor_is_a_stored_record(store, monkeypatch):
    """With no label, the constant baseline predicts the training subset's most frequent class and names it."""
    import numpy as np

    from kdlib import runner
    from kdlib.chapters import constant_baseline, teacher
    from kdlib.chapters import floor as floor_row
    from kdlib.errors import KDLibError
    from kdlib.profiles import get_profile

    t = teacher(get_profile("smoke"), "mrpc")
    majority = int(np.bincount(runner.split_data(t, "train").labels).argmax())
    floor = constant_baseline("annealing", t)
    assert floor["label"] == majority
    assert {k: v for k, v in floor.items() if k != "label"} == constant_baseline("annealing", t, label=majority)
    with pytest.raises(KDLibError, match="label 2 is not a class of mrpc: choose one of 0, 1, or None"):
        constant_baseline("annealing", t, label=2)
    with pytest.raises(KDLibError, match="no score on stsb \\(a regression task\\)"):
        constant_baseline("annealing", teacher(get_profile("smoke"), "stsb"))
    assert floor_row(get_profile("smoke"), "mrpc") == (f"always class {majority} (train majority)", floor)
    assert floor_row(get_profile("smoke"), "stsb") is None  # a regression task has no constant score
    monkeypatch.setattr(runner, "split_data", lambda *a, **k: (_ for _ in ()).throw(OSError("no data")))
    assert constant_baseline("annealing", t) == floor  # read back from its record, without data
    assert floor_row(get_profile("smoke"), "mrpc")[1] == floor  # the teachers' copy, read back the same way
    assert floor_row(get_profile("smoke"), "sst2") is None  # neither stored nor computable: the table goes without


@pytest.mark.glue
@pytest.mark.skipif(not __import__("os").environ.get("KDLIB_GLUE_DIR"), reason="KDLIB_GLUE_DIR not set")
def test_the_majority_class_floors_of_the_real_dev_sets(store):
    """Counted from the GLUE TSVs: MRPC dev has 279 paraphrases in 408 pairs, RTE's training set 1,249 of 2,490
    entailments (the majority, by 8), RTE dev 146 entailments in 277, CoLA dev 721 acceptable in 1,043."""
    from kdlib.chapters import constant_baseline, teacher
    from kdlib.profiles import get_profile

    cpu = get_profile("cpu")
    floor = {t: constant_baseline("annealing", teacher(cpu, t)) for t in ("mrpc", "rte", "cola")}
    assert floor["mrpc"] == {"f1": pytest.approx(100 * 2 * 279 / (279 + 408)),
                             "accuracy": pytest.approx(100 * 279 / 408), "label": 1}
    assert floor["rte"] == {"accuracy": pytest.approx(100 * 146 / 277), "label": 0}
    assert floor["cola"] == {"mcc": 0.0, "accuracy": pytest.approx(100 * 721 / 1043), "label": 1}
