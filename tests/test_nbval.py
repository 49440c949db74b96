"""nbval re-executes the committed chapters against their stored records; a changed record must show."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from kdlib.chapters import CHAPTERS

from .conftest import ROOT

CH1 = ROOT / CHAPTERS["hinton"].notebook


def _nbval(nb, results, tmp):
    env = {**os.environ, "KDLIB_RESULTS_DIR": str(results), "KDLIB_CACHE_DIR": str(tmp / "cache")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), str(nb)],
                          capture_output=True, text=True, env=env, cwd=tmp)


def _committed_profile(nb_path):
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            return "".join(cell["source"]).split('"')[1]
    return None


@pytest.mark.slow
def test_changed_stored_metric_makes_nbval_fail(tmp_path):
    profile = _committed_profile(CH1)
    if profile is None:
        pytest.skip("chapter 1 is not committed with executed outputs")
    results = tmp_path / "results"
    shutil.copytree(ROOT / "results", results)
    nb = tmp_path / CH1.name
    shutil.copy(CH1, nb)
    ok = _nbval(nb, results, tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:]

    from kdlib.chapters import chapter_plan
    from kdlib.store import stored_path

    os.environ["KDLIB_RESULTS_DIR"] = str(results)
    try:
        path = stored_path(chapter_plan("hinton", profile)["student, labels only"][0])
    finally:
        del os.environ["KDLIB_RESULTS_DIR"]
    rec = json.loads(path.read_text())
    rec["best"]["accuracy"] += 1.0
    path.write_text(json.dumps(rec))
    bad = _nbval(nb, results, tmp_path)
    assert bad.returncode != 0 and "failed" in bad.stdout
