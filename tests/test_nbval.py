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


class _Ports:
    """A stand-in for jupyter_client's LocalPortCache: hands out the given ports in order, records returns."""

    def __init__(self, ports):
        self.ports, self.returned = list(ports), []

    def find(self, ip):
        return self.ports.pop(0)

    def return_port(self, port):
        self.returned.append(port)


def test_striped_port_finder_keeps_to_its_residue_class():
    from .conftest import striped

    cache = _Ports([40001, 40003, 40002, 40004, 40006])
    find = striped(type(cache).find, index=0, count=2)
    assert [find(cache, "127.0.0.1"), find(cache, "127.0.0.1")] == [40002, 40004]
    assert cache.returned == [40001, 40003]  # given back to the cache, not kept from the other worker
    cache = _Ports([50000, 50003, 50002])
    assert striped(type(cache).find, index=1, count=3)(cache, "127.0.0.1") == 50002


def test_worker_stripe_reads_xdist_environment(monkeypatch):
    from .conftest import worker_stripe

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert worker_stripe() == (1, 2)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "master")
    assert worker_stripe() is None
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert worker_stripe() is None


def test_this_session_picks_kernel_ports_as_its_worker_should():
    """Under ``pytest -n N`` the real port finder is striped to this worker; without xdist it is jupyter_client's."""
    from jupyter_client.connect import LocalPortCache

    from .conftest import worker_stripe

    cache = LocalPortCache.instance()
    port = cache.find_available_port("127.0.0.1")
    cache.return_port(port)
    if (stripe := worker_stripe()) is None:
        assert LocalPortCache.find_available_port.__module__.startswith("jupyter_client")
    else:
        assert port % stripe[1] == stripe[0]


def test_nbval_kernel_start_is_retried_only_when_the_kernel_died():
    from .conftest import _retried

    calls = []

    def dies_twice(**kw):
        calls.append(kw)
        if len(calls) < 3:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "km", "kc"

    with pytest.warns(UserWarning, match="starting it again"):
        assert _retried(dies_twice)(kernel_name="python3") == ("km", "kc")
    assert len(calls) == 3

    def always_dies(**kw):
        raise RuntimeError("Kernel died before replying to kernel_info")

    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="died"):
        _retried(always_dies, attempts=2)()

    def times_out(**kw):
        calls.append(kw)
        raise RuntimeError("Kernel didn't respond in 60 seconds")

    calls.clear()
    with pytest.raises(RuntimeError, match="respond"):
        _retried(times_out)()
    assert len(calls) == 1
