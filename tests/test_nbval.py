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
    """A stand-in for jupyter_client's LocalPortCache: only its set of ports handed out."""

    def __init__(self):
        self.currently_used_ports = set()


def _bound_beside_a_free_port():
    """A socket bound to a port ``p`` below the ephemeral range whose neighbour ``p + 1`` is free, and ``p``."""
    import socket

    for p in range(24000, 25000, 2):
        sock, other = socket.socket(), socket.socket()
        try:
            sock.bind(("127.0.0.1", p))
            other.bind(("127.0.0.1", p + 1))
            return sock, p
        except OSError:
            sock.close()
        finally:
            other.close()
    pytest.fail("no two free neighbouring ports in 24000-25000")


def test_worker_ports_stay_in_their_own_block_and_are_free():
    """Each worker's ports come from its own block, below the ephemeral range, each free when picked and never
    handed out twice; both workers get ports (stop 33: filtering bind(0)'s picks by parity left the odd worker
    looping forever, Linux's bind(0) handing out even ports)."""
    from .conftest import worker_ports

    blocks = []
    for index in (0, 1):
        cache, find = _Ports(), worker_ports(index, 2, low=20000, high=32000)
        ports = [find(cache, "127.0.0.1") for _ in range(20)]
        assert len(set(ports)) == 20 and cache.currently_used_ports == set(ports)
        assert all(20000 + 6000 * index <= p < 26000 + 6000 * index for p in ports)
        blocks.append(set(ports))
        s, taken = _bound_beside_a_free_port()
        with s:  # a port taken by someone else is skipped
            only = worker_ports(0, 1, low=taken, high=taken + 2)
            assert only(_Ports(), "127.0.0.1") == taken + 1
    assert not blocks[0] & blocks[1]
    full = _Ports()
    full.currently_used_ports.update({30000, 30001})
    with pytest.raises(OSError, match="no free port in 30000..30001 for pytest worker 0"):
        worker_ports(0, 1, low=30000, high=30002)(full, "127.0.0.1")


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
    """Under ``pytest -n N`` the real port finder picks from this worker's block; without xdist it is
    jupyter_client's."""
    from jupyter_client.connect import LocalPortCache

    from .conftest import KERNEL_PORTS, worker_stripe

    cache = LocalPortCache.instance()
    port = cache.find_available_port("127.0.0.1")
    cache.return_port(port)
    if (stripe := worker_stripe()) is None:
        assert LocalPortCache.find_available_port.__module__.startswith("jupyter_client")
    else:
        span = (KERNEL_PORTS[1] - KERNEL_PORTS[0]) // stripe[1]
        assert KERNEL_PORTS[0] + stripe[0] * span <= port < KERNEL_PORTS[0] + (stripe[0] + 1) * span


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
