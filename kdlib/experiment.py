"""Experiments and the results store.

An :class:`Experiment` is a frozen config: task, model, method and hyper-parameters, seed, profile and
data size. :func:`run` turns it into a *result record*, a JSON file at
``results/<profile>/<chapter>/<hash>.json`` that says what was run, what it scored and how it was
obtained (hardware, kdlib version and git commit, wall time). Records are written atomically.

Running an experiment whose record exists loads the record instead of training, unless ``force=True``
or the environment sets ``KDLIB_RECOMPUTE=1``. That is how a chapter renders results computed on a
GPU elsewhere, and how nbval re-executes committed chapters on a CPU in minutes.

Large artefacts never go into ``results/``: fine-tuned teacher weights, teacher outputs and resumable
training states live in the cache folder (``KDLIB_CACHE_DIR``, default ``<book>/.kdlib_cache``).
"""
from __future__ import annotations

import dataclasses
import functools
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .data import TaskData, encode, get_task, load_task, synthetic_task
from .errors import KDLibError, check_choice
from .methods import make_objective, needs_teacher
from .metrics import agreement
from .models import count_parameters, quiet_transformers, fresh_student, load_classifier, load_tokenizer, student_from_teacher
from .train import TrainArgs, atomic_torch_save, make_loader, predict, progress_enabled, train

RESULTS_ENV, CACHE_ENV, RECOMPUTE_ENV = "KDLIB_RESULTS_DIR", "KDLIB_CACHE_DIR", "KDLIB_RECOMPUTE"
DATA_SOURCES = ("glue", "synthetic")


@dataclass(frozen=True)
class ModelSpec:
    """Which network: a checkpoint as is, a copy keeping some of its layers, or a fresh BERT."""

    checkpoint: str
    layers: tuple | None = None  # 0-based encoder layers copied from the checkpoint; None keeps all
    fresh: tuple | None = None  # (layers, hidden, heads) for a randomly initialised BERT (vocab of checkpoint)
    # (hidden, fc, embeddings) for Tang et al.'s BiLSTM over the checkpoint's vocabulary; embeddings is one
    # of BILSTM_EMBEDDINGS: the checkpoint's word-embedding table kept fixed ("static") or trained along
    # ("tuned"), or a 300-d table trained from scratch ("random")
    bilstm: tuple | None = None

    def describe(self) -> str:
        if self.bilstm:
            return f"BiLSTM {self.bilstm[0]} units, FC {self.bilstm[1]}, {self.bilstm[2]} embeddings"
        if self.fresh:
            return f"fresh BERT L{self.fresh[0]} H{self.fresh[1]} (vocab of {self.checkpoint})"
        if self.layers is not None:
            return f"{len(self.layers)}-layer copy of {self.checkpoint} (layers {list(self.layers)})"
        return self.checkpoint


@dataclass(frozen=True)
class Experiment:
    chapter: str  # where the record is stored; not part of the hash
    profile: str
    task: str
    method: str
    model: ModelSpec
    teacher: "Experiment | None" = None
    hparams: tuple = ()  # sorted (name, value) pairs; see hp()
    data: str = "glue"
    train_size: int | None = None
    dev_size: int | None = None  # only for synthetic data
    subset_seed: int = 0
    epochs: float = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    evals_per_epoch: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # or "adadelta" (Tang et al. 2019: lr 1.0, rho 0.95, constant)
    augment: tuple | None = None  # (p_mask, p_pos, p_ng, n_iter) of a Tang et al. transfer set
    label: str = field(default="", compare=False)  # display name; not part of the hash
    keep_model: bool = field(default=False, compare=False)  # save the best weights (teachers); not hashed

    def __post_init__(self):
        get_task(self.task)
        check_choice("data source", self.data, DATA_SOURCES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.augment is not None:
            from .augment import TangAugmenter

            TangAugmenter(*self.augment)  # validates the probabilities and n_iter
        if self.model.bilstm is not None:
            check_choice("BiLSTM embeddings", self.model.bilstm[2], BILSTM_EMBEDDINGS)
        if isinstance(self.hparams, dict):
            object.__setattr__(self, "hparams", tuple(sorted(self.hparams.items())))
        make_objective(self.method, self.hp)  # validates the method and its hyper-parameters
        if needs_teacher(self.method) and self.teacher is None:
            raise KDLibError(f"method {self.method!r} needs a teacher experiment")

    @property
    def hp(self) -> dict:
        return dict(self.hparams)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hparams"] = self.hp
        if self.teacher is not None:
            d["teacher"] = self.teacher.to_dict()
        return d

    @property
    def hash(self) -> str:
        return config_hash(self)

    def replace(self, **changes) -> "Experiment":
        return dataclasses.replace(self, **changes)


#: Fields added to Experiment or ModelSpec after the first records were written, with their defaults.
#: At its default such a field is left out of the hash, so adding a field keeps every stored record valid.
ADDED_FIELDS: dict = {"optimizer": "adamw", "augment": None, "model.bilstm": None}
OPTIMIZERS = ("adamw", "adadelta")
TEACHER_OUTPUTS = ("cls", "logits")
BILSTM_EMBEDDINGS = ("static", "tuned", "random")


def _hashable(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k not in ("chapter", "label", "keep_model")
         and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
    if isinstance(d.get("model"), dict):
        d["model"] = {k: v for k, v in d["model"].items()
                      if not (f"model.{k}" in ADDED_FIELDS and v == ADDED_FIELDS[f"model.{k}"])}
    if d.get("teacher"):
        d["teacher"] = _hashable(d["teacher"])
    return d


def config_hash(exp: Experiment) -> str:
    blob = json.dumps(_hashable(exp.to_dict()), sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Where things live
# ---------------------------------------------------------------------------------------------------
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


def record_path(exp: Experiment) -> Path:
    return results_dir() / exp.profile / exp.chapter / f"{exp.hash}.json"


def model_dir(exp: Experiment) -> Path:
    return cache_dir() / "models" / exp.hash


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def recompute_requested() -> bool:
    return os.environ.get(RECOMPUTE_ENV, "") not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------------------------------
# Records
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


def hardware() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = "cuda"
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def provenance() -> dict:
    """How a record was made: hardware, kdlib version and commit, and when (every record kind ends so)."""
    return {"hardware": hardware(), "kdlib_version": __version__, "git_commit": git_commit(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def load_record(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def find_record(exp: Experiment) -> dict | None:
    path = record_path(exp)
    return load_record(path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------
# Data, teacher outputs, models
# ---------------------------------------------------------------------------------------------------
def split_data(exp: Experiment, split: str) -> TaskData:
    size = exp.train_size if split == "train" else exp.dev_size
    if exp.data == "synthetic":
        if size is None:
            raise KDLibError(f"synthetic data needs a {split} size")
        data = synthetic_task(exp.task, split, size, seed=exp.subset_seed)
    else:
        data = load_task(exp.task, split)
        data = data.subset(size, exp.subset_seed) if split == "train" else data
    return data


def augmented(exp: Experiment, data: TaskData) -> TaskData:
    """The Tang et al. augmentations of ``data`` (new examples only), cached on disk (tagging takes a while)."""
    from .augment import TangAugmenter

    key_src = {"task": data.task, "data": exp.data, "size": exp.train_size, "n": len(data),
               "subset_seed": exp.subset_seed, "augment": list(exp.augment)}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "augmented" / f"{key}.json"
    if path.is_file():
        extra = TaskData(**json.loads(path.read_text()))
    else:
        extra = TangAugmenter(*exp.augment, seed=exp.subset_seed).augment(data)
        atomic_write_text(path, json.dumps(dataclasses.asdict(extra)))
    return extra


def concat(a: TaskData, b: TaskData) -> TaskData:
    both = None if a.text_b is None else a.text_b + b.text_b
    return TaskData(a.task, f"{a.split}+{b.split}", a.text_a + b.text_a, both, a.labels + b.labels, a.source)


def build_model(exp: Experiment, num_labels: int, tokenizer):
    spec = exp.model
    if spec.bilstm:
        from .bilstm import BiLSTMClassifier

        hidden, fc, init = spec.bilstm
        table = None
        if init != "random":
            table = load_classifier(spec.checkpoint, num_labels).get_input_embeddings().weight.detach().clone()
        torch.manual_seed(exp.seed)
        model = BiLSTMClassifier(len(tokenizer), num_labels, embed_dim=300 if table is None else table.size(1),
                                 hidden=hidden, fc=fc, pair=get_task(exp.task).is_pair,
                                 padding_idx=tokenizer.pad_token_id or 0, embeddings=table)
        model.embed.weight.requires_grad_(init != "static")
        return model
    if spec.fresh:
        layers, hidden, heads = spec.fresh
        return fresh_student(len(tokenizer), num_labels, layers, hidden, heads, seed=exp.seed)
    if spec.layers is not None:
        return student_from_teacher(spec.checkpoint, spec.layers, num_labels)
    return load_classifier(spec.checkpoint, num_labels)


def teacher_model(teacher: Experiment, progress: bool | None = None):
    """The fine-tuned teacher's weights, training (and recording) it first if they are not cached."""
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    path = model_dir(teacher)
    if not (path / "config.json").is_file():
        print(f"[kdlib] teacher weights {teacher.hash} not cached: fine-tuning the teacher"
              + (" (its stored record will be replaced)" if find_record(teacher) else ""))
        run(teacher, force=True, keep_model=True, progress=progress)
    return AutoModelForSequenceClassification.from_pretrained(path)


def teacher_outputs(teacher: Experiment, data: TaskData, exp: Experiment, progress: bool | None = None,
                    outputs: tuple = ("logits",)) -> dict:
    """The teacher's outputs for every example of ``data``, cached on disk under a key made of the teacher,
    its tokenizer, the task, split, data source, subset, maximum length and the outputs asked for:
    ``"logits"``, and ``"cls"`` for the [CLS] vector of every hidden state (intermediate-layer methods)."""
    outputs = tuple(sorted(set(outputs) | {"logits"}))
    unknown = [o for o in outputs if o not in TEACHER_OUTPUTS]
    if unknown:
        raise KDLibError(f"unknown teacher output {unknown[0]!r}; valid choices: {', '.join(TEACHER_OUTPUTS)}")
    key_src = {"teacher": teacher.hash, "tokenizer": teacher.model.checkpoint, "task": data.task,
               "split": data.split, "data": exp.data, "n": len(data), "size": exp.train_size,
               "subset_seed": exp.subset_seed, "max_length": exp.max_length, "outputs": list(outputs)}
    if data.split.endswith("+tang"):  # an augmented transfer set: its config names it
        key_src["augment"] = list(exp.augment)
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "teacher_outputs" / f"{key}.pt"
    if path.is_file():
        return torch.load(path)
    model = teacher_model(teacher, progress)
    tok = load_tokenizer(teacher.model.checkpoint)
    enc = encode(tok, data, exp.max_length)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    loader = make_loader(enc, 256, False, pad_id=tok.pad_token_id or 0)
    if "cls" in outputs:
        logits, cls = predict(model, loader, device=device, cls_states=True)
        out = {"logits": logits, "cls": cls}
    else:
        out = {"logits": predict(model, loader, device=device)}
    atomic_torch_save(out, path)
    return out


def measurement(kind: str, profile: str, chapter: str, config: dict, compute, force: bool = False,
                stored_only: bool = False) -> dict | None:
    """A stored record of a measurement that is not a training run (a size/speed table, loss terms at
    initialisation): ``results/<profile>/<chapter>/measurements/<kind>-<hash of config>.json``.

    Loaded when stored (unless ``force`` or ``KDLIB_RECOMPUTE``); else ``compute()`` returns the record's
    fields, and the record is written with the same provenance as a training record. ``stored_only``
    returns the stored record or ``None``, never computing."""
    config = {"kind": kind, "profile": profile, **config}
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:16]
    path = results_dir() / profile / chapter / "measurements" / f"{kind}-{key}.json"
    if path.is_file() and (stored_only or (not force and not recompute_requested())):
        return load_record(path)
    if stored_only:
        return None
    start = time.perf_counter()
    fields = compute()
    record = {"schema": 1, "kind": kind, "hash": key, "config": config, **fields,
              "wall_time_s": round(time.perf_counter() - start, 1), **provenance()}
    text = json.dumps(record, indent=1) + "\n"
    atomic_write_text(path, text)
    return json.loads(text)


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def run(exp: Experiment, force: bool = False, keep_model: bool = False, progress: bool | None = None) -> dict:
    """The result record of ``exp``: loaded if stored, else computed, stored and returned."""
    keep_model = keep_model or exp.keep_model
    path = record_path(exp)
    if path.is_file() and not force and not recompute_requested():
        return load_record(path)  # a teacher's weights are fetched (or retrained) only when needed
    spec = get_task(exp.task)
    train_data, dev_data = split_data(exp, "train"), split_data(exp, "dev")
    extra = augmented(exp, train_data) if exp.augment is not None else None
    teacher_rec, cache, dev_cls = None, None, None
    objective = make_objective(exp.method, exp.hp)
    if needs_teacher(exp.method):
        teacher_rec = run(exp.teacher, progress=progress)
        # the original examples' outputs are shared with every run on the same data; the augmented ones
        # are cached per transfer set
        wanted = objective.teacher_outputs
        cache = teacher_outputs(exp.teacher, train_data, exp, progress, wanted)
        if objective.summarizes_dev:
            dev_cls = teacher_outputs(exp.teacher, dev_data, exp, progress, ("cls",))["cls"]
        if extra is not None:
            more = teacher_outputs(exp.teacher, extra, exp, progress, wanted)
            cache = {k: torch.cat([cache[k], more[k]]) for k in cache}
    if extra is not None:
        train_data = concat(train_data, extra)
    tok = load_tokenizer(exp.model.checkpoint)
    train_enc = encode(tok, train_data, exp.max_length)
    dev_enc = encode(tok, dev_data, exp.max_length)
    model = build_model(exp, spec.num_labels, tok)
    args = TrainArgs(epochs=exp.epochs, lr=exp.lr, batch_size=exp.batch_size, seed=exp.seed,
                     evals_per_epoch=exp.evals_per_epoch, warmup_ratio=exp.warmup_ratio,
                     weight_decay=exp.weight_decay, optimizer=exp.optimizer)
    state_dir = cache_dir() / "runs" / exp.hash
    result = train(model, train_enc, dev_enc, exp.task, objective, args,
                   teacher_cache=cache, state_dir=state_dir, keep_best=keep_model,
                   pad_id=tok.pad_token_id or 0, progress=progress, desc=exp.label or exp.method,
                   dev_teacher_cls=dev_cls)
    if keep_model:
        model.load_state_dict(result.best_state)
        model.save_pretrained(model_dir(exp))
        tok.save_pretrained(model_dir(exp))
    logits = result.best_dev_logits
    record = {
        "schema": 1,
        "hash": exp.hash,
        "label": exp.label,
        "config": exp.to_dict(),
        "best": result.best,
        "history": result.history,
        "dev_logits": [[round(float(x), 4) for x in row] for row in logits.tolist()],
        "n_train": len(train_data),
        "n_dev": len(dev_data),
        "student_params": count_parameters(model),
        "teacher": None if teacher_rec is None else {
            "hash": teacher_rec["hash"], "best": teacher_rec["best"],
            "agreement": _agreement(logits, teacher_rec, spec.is_regression)},
        "wall_time_s": round(result.wall_time_s, 1),
        "teacher_floats_per_example": None if cache is None else objective.teacher_floats(
            cache, getattr(getattr(model, "config", None), "num_hidden_layers", 0)),
        "summary": result.best_summary,
        **provenance(),
    }
    text = json.dumps(record, indent=1) + "\n"
    if _is_main_process():  # under `accelerate launch` only one process writes
        atomic_write_text(path, text)
        _clean_state(state_dir)
    return json.loads(text)  # exactly what a later load returns


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _agreement(student_logits, teacher_rec: dict, regression: bool) -> float | None:
    """How often the student's dev prediction equals the teacher's (percent)."""
    if regression or not teacher_rec.get("dev_logits"):
        return None
    return round(agreement(student_logits.numpy(), teacher_rec["dev_logits"]), 2)


def _clean_state(state_dir: Path) -> None:
    for f in (state_dir / "last.pt",):
        f.unlink(missing_ok=True)
    try:
        state_dir.rmdir()
    except OSError:
        pass


def run_all(experiments, force: bool = False, progress: bool | None = None) -> list:
    """Run (or load) each experiment in turn; returns their records in the same order."""
    from tqdm import tqdm

    todo = [e for e in experiments if force or recompute_requested() or find_record(e) is None]
    records = []
    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=len(todo), desc="experiments", disable=not todo or not show, leave=False)
    for exp in experiments:
        fresh = exp in todo
        records.append(run(exp, force=force, progress=progress))
        if fresh:
            bar.update(1)
            best = records[-1]["best"]
            main = get_task(exp.task).main_metric
            print(f"[kdlib] {exp.chapter}/{exp.label or exp.method} seed {exp.seed}: dev {main} "
                  f"{best[main]:.2f} (epoch {best['epoch']}), {records[-1]['wall_time_s']:.0f} s")
    bar.close()
    return records


git_commit()  # pin the commit at import time
