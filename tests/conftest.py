"""Hermetic tests: no network (only loopback sockets), HF offline, results and caches in tmp folders."""
from __future__ import annotations

import os
import random
import socket
import warnings
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("KDLIB_PROGRESS", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one thread per worker (and per kernel it starts), so that
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # N workers share N cores, not fight

ROOT = Path(__file__).resolve().parent.parent
_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("/"):
        raise OSError(f"tests are hermetic: connection to {host!r} refused")
    return _connect(self, address)


socket.socket.connect = _guarded_connect


def worker_stripe() -> tuple[int, int] | None:
    """This pytest-xdist worker's (index, count), or None outside ``pytest -n``."""
    name, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (name.startswith("gw") and name[2:].isdigit() and count.isdigit()):
        return None
    return int(name[2:]), int(count)


#: kernel ports for ``pytest -n`` workers: below Linux's ephemeral range (32768-60999), which bind(0) and
#: outgoing connections draw from, split into one block per worker
KERNEL_PORTS = (20000, 32000)
_pick = random.Random()  # its own generator: a test that seeds `random` must not decide the ports


def worker_ports(index: int, count: int, low: int = KERNEL_PORTS[0], high: int = KERNEL_PORTS[1]):
    """A replacement for jupyter_client's ``LocalPortCache.find_available_port`` that picks a free port from this
    worker's own block of ``[low, high)``. jupyter_client binds port 0 and closes the socket
    (jupyter/jupyter_client#487); its cache keeps one process from handing a port out twice, but under
    ``pytest -n`` two workers start kernels (nbval's, papermill's) at the same time, and one could pick a port the
    other picked before its kernel binds it: that kernel then dies before it replies (stop 32's CI). Filtering the
    OS's picks does not work: Linux's bind(0) hands out even ports first. Disjoint blocks outside the ephemeral range
    cannot collide between workers, nor with the OS's own picks."""
    span = (high - low) // count
    first = low + index * span

    def find_available_port(cache, ip):
        for port in _pick.sample(range(first, first + span), span):
            if port in cache.currently_used_ports:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((ip, port))
                except OSError:
                    continue
            cache.currently_used_ports.add(port)
            return port
        raise OSError(f"no free port in {first}..{first + span - 1} for pytest worker {index}")
    return find_available_port


def _retried(start, attempts: int = 3):
    """nbval's ``start_new_kernel``, tried again (up to ``attempts`` times) when the kernel dies while starting:
    nbval hides the kernel's stderr, and one transient death would otherwise fail every cell of a notebook."""
    def start_new_kernel(*args, **kwargs):
        for attempt in range(1, attempts + 1):
            try:
                return start(*args, **kwargs)
            except RuntimeError as err:
                if attempt == attempts or "died" not in str(err):
                    raise
                warnings.warn(f"nbval's kernel died while starting ({err}); starting it again ({attempt + 1}/"
                              f"{attempts})")
    return start_new_kernel


try:  # nbval and jupyter_client come with the test extra; without them no notebook runs here
    import nbval.kernel
    from jupyter_client.connect import LocalPortCache
except ImportError:
    pass
else:
    nbval.kernel.start_new_kernel = _retried(nbval.kernel.start_new_kernel)
    if (_stripe := worker_stripe()) is not None:
        LocalPortCache.find_available_port = worker_ports(*_stripe)


def shared_tmp(tmp_path_factory, name: str) -> Path:
    """A folder of this test session that every ``pytest -n`` worker sees (the same one for all of them)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Empty results and cache folders for one test."""
    monkeypatch.setenv("KDLIB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KDLIB_RECOMPUTE", raising=False)
    return tmp_path


def write_tsv(path: Path, rows, bom: bool = False, final_newline: bool = True):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(r) for r in rows) + ("\n" if final_newline else "")
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")


@pytest.fixture
def glue_folder(tmp_path):
    """A small folder in the original GLUE layout, with the format's quirks."""
    g = tmp_path / "glue"
    write_tsv(g / "SST-2" / "train.tsv", [["sentence", "label"], ["hide new secretions ", "0"],
                                          ['" quoted start without an end ', "1"], ["a gorgeous film ", "1"],
                                          ["dull , dull , dull ", "0"]])
    write_tsv(g / "SST-2" / "dev.tsv", [["sentence", "label"], ["it 's a charming journey . ", "1"],
                                        ["unflinchingly bleak ", "0"]])
    write_tsv(g / "CoLA" / "train.tsv", [["gj04", "1", "", "Our friends won't buy this analysis."],
                                         ["gj04", "0", "*", "One more pseudo generalization."]],
              final_newline=False)
    write_tsv(g / "MRPC" / "train.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                         ["1", "1", "2", 'He said " yes " .', "He agreed ."],
                                         ["0", "3", "4", "A cat .", "A dog ."]], bom=True)
    write_tsv(g / "RTE" / "train.tsv", [["index", "sentence1", "sentence2", "label"],
                                        ["0", '"Quoted premise.', "Hypothesis.", "entailment"],
                                        ["1", "P.", "H.", "not_entailment"]])
    write_tsv(g / "STS-B" / "train.tsv", [["index", "genre", "filename", "year", "old_index", "source1",
                                           "source2", "sentence1", "sentence2", "score"],
                                          ["0", "g", "f", "y", "0", "s", "s", "A man.", "A person.", "4.2"]])
    return g


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The book built once per test session, offline, warnings as errors; its ``_build/html`` folder."""
    import shutil
    import subprocess
    import sys

    beside = Path(sys.executable).with_name("jupyter-book")  # the venv's, when it is not activated
    exe = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if exe is None:
        pytest.skip("jupyter-book not installed")
    from kdlib.store import locked

    out = shared_tmp(tmp_path_factory, "book")  # under pytest -n, one worker builds it and the others wait
    html = out / "_build" / "html"
    with locked(out / "build", "building the book"):
        if not (out / "built").is_file():
            proc = subprocess.run([exe, "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            (out / "built").touch()
    return html


#: the smoke runs' single-thread seconds on a 2-core AVX2 CPU (pytest --durations, 2026-12-07), longest first:
#: under ``pytest -n`` the longest units of work start first, so that no worker is left with one at the end
SMOKE_COST = ["pkd", "compare", "bilstm", "hinton", "annealing", "mate", "alp", "tinybert"]


def pytest_collection_modifyitems(config, items):
    def rank(item):
        if getattr(item, "originalname", None) != "test_chapter_runs_under_smoke":  # nbval's cells have none
            return len(SMOKE_COST) + 1
        key = item.callspec.id
        return SMOKE_COST.index(key) if key in SMOKE_COST else len(SMOKE_COST)

    items.sort(key=rank)  # stable: every other test keeps its place
