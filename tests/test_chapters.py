"""Every chapter, executed headlessly by papermill under the smoke profile, into a temporary folder."""
import json

import pytest

from kdlib.chapters import CHAPTERS, in_book

from .conftest import ROOT

NOTEBOOKS = [c for c in in_book(ROOT) if c.notebook.endswith(".ipynb")]


def test_the_book_lists_registered_chapters_only(tmp_path):
    from kdlib.errors import KDLibError

    assert [c.key for c in in_book(ROOT)][:3] == ["intro", "hinton", "bilstm"]
    assert all((ROOT / c.notebook).is_file() for c in in_book(ROOT))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: chapters/00_introduction\nchapters:\n"
                                       "- file: chapters/99_nothing\n")
    with pytest.raises(KDLibError, match="_toc.yml lists 'chapters/99_nothing', which is not a registered chapter"):
        in_book(tmp_path)
    assert set(CHAPTERS) >= {"pkd", "alp"}  # registered: their plans run with `kdbook experiment`


@pytest.mark.slow
@pytest.mark.parametrize("chapter", NOTEBOOKS, ids=lambda c: c.key)
def test_chapter_runs_under_smoke(chapter, store):
    import papermill as pm

    out = store / f"{chapter.key}.ipynb"
    pm.execute_notebook(str(ROOT / chapter.notebook), str(out), parameters={"profile": "smoke"},
                        cwd=str(ROOT / "chapters"), kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert not errors
    records = [json.loads(p.read_text()) for p in (store / "results" / "smoke").glob("*/*.json")]
    from kdlib.chapters import chapter_plan

    expected = {e.hash for exps in chapter_plan(chapter.key, "smoke").values() for e in exps}
    assert expected <= {r["hash"] for r in records}
    for r in records:
        main = next(k for k in r["best"] if k not in ("epoch", "step", "train_loss"))
        low = -100 if r["config"]["task"] == "stsb" else 0  # a correlation may be negative
        assert low <= r["best"][main] <= 100 and r["history"] and r["config"]["profile"] == "smoke"
        assert r["wall_time_s"] > 0 and r["git_commit"] and r["hardware"]["device"] in ("cpu", "cuda")
        assert len(r["dev_logits"]) == r["n_dev"]
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
