"""Where records and caches live, and how they are written.

A *result record* is a JSON file at ``results/<profile>/<chapter>/<hash>.json``: what was run (the whole
config), what it scored, and how it was obtained (hardware, kdlib version and git commit, wall time). Any
chapter finds a record by its config alone (:func:`find_record` looks in every chapter's folder of the
profile), so a comparison chapter reads the records other chapters made.

Measurements that are not training runs (a size/speed table, loss terms at initialisation) are records too,
under ``results/<profile>/<chapter>/measurements/``.

Every write goes to a uniquely named temporary file in the target folder and is renamed into place, so two
processes never see or leave half a file. Large artefacts (weights, teacher outputs, training states) live
in the cache folder (``KDLIB_CACHE_DIR``, default ``<book>/.kdlib_cache``), never in ``results/``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from . import __version__
from .errors import KDLibError

RESULTS_ENV, CACHE_ENV, RECOMPUTE_ENV = "KDLIB_RESULTS_DIR", "KDLIB_CACHE_DIR", "KDLIB_RECOMPUTE"
RECORD_FIELDS = ("hash", "config", "best", "history", "dev_logits")


class BadRecord(KDLibError):
    """A stored record that cannot be read (not JSON, or fields missing)."""


def book_root(start: Path | None = None) -> Path | None:
    """The folder holding ``_toc.yml`` at or above ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_toc.yml").is_file():
            return d
    pkg_root = Path(__file__).resolve().parent.parent
    return pkg_root if (pkg_root / "_toc.yml").is_file() else None


def results_dir() -> Path:
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    root = book_root()
    return (root / "results") if root else Path("results")


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    root = book_root()
    return (root / ".kdlib_cache") if root else Path.home() / ".cache" / "kdlib"


def recompute_requested() -> bool:
    return os.environ.get(RECOMPUTE_ENV, "") not in ("", "0", "false", "no")


def check_writable(folder: Path, what: str) -> Path:
    """Refuse, in one line, a folder that cannot be created or written (before any training starts)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        env = RESULTS_ENV if what == "results" else CACHE_ENV
        raise KDLibError(f"the {what} folder {str(folder)!r} cannot be written ({err.strerror or err}); "
                         f"fix its permissions or point {env} elsewhere") from None
    return folder


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a uniquely named temporary file, then rename."""
    _atomic(path, lambda f: torch.save(obj, f))


@contextmanager
def locked(path: Path, what: str = ""):
    """An inter-process lock on ``path`` (a ``.lock`` file beside it): a second process making the same
    teacher, cache or transfer set waits here, then finds it made."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Exception:
        print(f"[kdlib] waiting for another process to finish {what or path.name}", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The commit of the kdlib code this process imported (``+dirty`` if kdlib had local changes).

    Taken once, when kdlib is imported, so a commit made while a long run goes on is not claimed by it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        sha = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "kdlib"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


@functools.cache
def cpu_model() -> dict:
    """The CPU's maker and model as Linux names them (``vendor_id``, ``model name`` in /proc/cpuinfo); empty
    where that file does not exist. The maker matters besides the vector kernels: the BLAS library picks its own
    code path per maker, so an Intel and an AMD CPU with the same AVX-512 kernels can round a run differently
    (kdlib's masked LM: 22.86% masked-token accuracy made on an Intel AVX-512 CPU, 22.56% on an AMD one)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return {k: fields[f] for k, f in (("cpu_vendor", "vendor_id"), ("cpu_model", "model name")) if fields.get(f)}


def hardware() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": "cpu",
            # the vector kernels torch runs on this CPU (AVX2, AVX512): two kinds round differently
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), **cpu_model()}
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def provenance() -> dict:
    """How a record was made: hardware, kdlib version and commit, and when (every record kind ends so)."""
    return {"hardware": hardware(), "kdlib_version": __version__, "git_commit": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def load_record(path: Path, fields: tuple = ("hash", "config")) -> dict:
    """A stored record, or :class:`BadRecord` in one line naming the file and what to do."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRecord(f"{path}: not a valid record (not JSON: {err.msg if hasattr(err, 'msg') else err}); "
                        "delete it, or run again with --force to re-make it") from None
    if not isinstance(rec, dict):
        raise BadRecord(f"{path}: not a valid record (not a JSON object); delete it, or run again with --force")
    missing = [f for f in fields if f not in rec]
    if missing:
        raise BadRecord(f"{path}: not a valid record (fields missing: {', '.join(missing)}); delete it, "
                        "or run again with --force to re-make it")
    return rec


def record_path(exp) -> Path:
    """Where ``exp``'s record is written: under the chapter that asks for it first."""
    return results_dir() / exp.profile / exp.chapter / f"{exp.hash}.json"


def stored_path(exp) -> Path | None:
    """The stored record of ``exp`` in any chapter's folder of its profile (its own chapter first)."""
    own = record_path(exp)
    if own.is_file():
        return own
    found = sorted((results_dir() / exp.profile).glob(f"*/{exp.hash}.json"))
    return found[0] if found else None


def find_record(exp) -> dict | None:
    path = stored_path(exp)
    return None if path is None else load_record(path, RECORD_FIELDS)


def iter_records(profile: str | None = None, chapter: str | None = None):
    """Every stored run record as ``(path, record)``; a bad one as ``(path, BadRecord)``, and the walk goes on."""
    base = results_dir()
    for path in sorted(base.glob("*/*/*.json")):
        if (profile and path.parent.parent.name != profile) or (chapter and path.parent.name != chapter):
            continue
        try:
            yield path, load_record(path, RECORD_FIELDS)
        except BadRecord as err:
            yield path, err


def measurement(kind: str, profile: str, chapter: str, config: dict, compute, force: bool = False,
                stored_only: bool = False, same: tuple = ()) -> dict | None:
    """A stored record of a measurement that is not a training run (a size/speed table, loss terms at
    initialisation): ``results/<profile>/<chapter>/measurements/<kind>-<hash of config>.json``.

    Loaded when stored (unless ``force`` or ``KDLIB_RECOMPUTE``); else ``compute()`` returns the record's
    fields, and the record is written with the same provenance as a training record. ``stored_only``
    returns the stored record or ``None``, never computing. ``same`` names fields that say what was made
    (a digest of it): when computed again, a stored record whose ``same`` fields all equal the new ones is
    kept as stored (its wall time, machine and commit), as a training run re-made for its weights is."""
    config = {"kind": kind, "profile": profile, **config}
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:16]
    path = results_dir() / profile / chapter / "measurements" / f"{kind}-{key}.json"
    if path.is_file() and (stored_only or (not force and not recompute_requested())):
        return load_record(path)
    if stored_only:
        return None
    check_writable(path.parent, "results")
    start = time.perf_counter()
    fields = compute()
    if same and path.is_file():
        old = load_record(path)
        if all(k in old and old[k] == fields.get(k) for k in same):
            return old
    record = {"schema": 1, "kind": kind, "hash": key, "config": config, **fields,
              "wall_time_s": round(time.perf_counter() - start, 1), **provenance()}
    text = json.dumps(record, indent=1) + "\n"
    atomic_write_text(path, text)
    return json.loads(text)


git_commit()  # pin the commit at import time
