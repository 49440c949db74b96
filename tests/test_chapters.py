"""Every chapter, executed headlessly by papermill under the smoke profile, into a temporary folder."""
import json

import pytest

from kdlib.chapters import CHAPTERS

from .conftest import ROOT

NOTEBOOKS = [c for c in CHAPTERS.values() if c.notebook.endswith(".ipynb")]


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
        assert 0 <= r["best"][main] <= 100 and r["history"] and r["config"]["profile"] == "smoke"
        assert r["wall_time_s"] > 0 and r["git_commit"] and r["hardware"]["device"] in ("cpu", "cuda")
        assert len(r["dev_logits"]) == r["n_dev"]
    teachers = [r for r in records if r["config"]["chapter"] == "teachers" and r["label"] == "teacher"
                and r["config"]["task"] == "sst2"]
    assert teachers and all(t["best"]["accuracy"] > 70 for t in teachers)  # the toy task is learnable
