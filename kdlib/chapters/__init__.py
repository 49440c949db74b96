"""The book's chapters: where each notebook is and which experiments it runs.

A chapter's *plan* maps a row label ("student, KD") to the experiments behind it (one per seed).
The notebook and ``kdbook experiment`` run the same plan, so a chapter rerun on a GPU through the CLI
and the rendered notebook read the same records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import settings
from ..config import Experiment, LayerCopy, MaskedLM, Pretrained
from ..errors import KDLibError, check_choice
from ..profiles import Profile, get_profile

TEACHERS = "teachers"  # records of fine-tuned teachers, shared by every chapter


def teacher(profile: Profile, task: str, train_size: int | None = None, epochs: float | None = None,
            label: str = "teacher") -> Experiment:
    """The profile's teacher: its checkpoint fine-tuned on ``task`` with the settings table's teacher row
    (once, reused by every chapter)."""
    s = settings.get(profile, task, "teacher")
    return Experiment(chapter=TEACHERS, profile=profile.name, task=task, method="finetune",
                      model=Pretrained(profile.teacher), data=profile.data,
                      train_size=profile.train_size if train_size is None else train_size,
                      dev_size=profile.dev_size, epochs=s.epochs if epochs is None else epochs, lr=s.lr,
                      batch_size=s.batch_size, max_length=s.max_length, seed=0,
                      evals_per_epoch=s.evals_per_epoch, label=label, keep_model=True)


#: the masked LM's encoder layers trained with its head (see :func:`masked_lm`): all six. On 20,000 GLUE
#: sentences (312 steps) the masked-token accuracy on held-out sentences was 5.8% with the head alone, 10.4%
#: with the top 2 layers and 17.3% with all 6 (the input-embedding table, tied to the output layer, frozen);
#: all-MiniLM-L6-v2 was tuned for sentence embeddings, far from its masked-LM pre-training
MLM_TUNE_LAYERS = 6


def masked_lm(profile: Profile) -> Experiment:
    """kdlib's masked LM (:mod:`kdlib.mlm`): the profile's checkpoint with a masked-LM head, fitted on the
    ``text`` task (the GLUE training sentences) with its top layers, under the settings table's
    ``masked_lm`` row; once, shared by TinyBERT's augmenter and MATE-KD's generator. Its record's dev score
    is the masked-token accuracy on held-out GLUE dev sentences."""
    s = settings.get(profile, "text", "masked_lm")
    return Experiment(chapter=TEACHERS, profile=profile.name, task="text", method="mlm",
                      model=MaskedLM(profile.teacher, MLM_TUNE_LAYERS), data=profile.data,
                      train_size=profile.train_size, dev_size=profile.dev_size, epochs=s.epochs, lr=s.lr,
                      batch_size=s.batch_size, max_length=s.max_length, seed=0,
                      evals_per_epoch=s.evals_per_epoch, label="masked LM", keep_model=True)


def student(profile: Profile, chapter: str, task: str, method: str, seed: int, teacher_exp=None,
            label: str = "", layers: tuple | None = None, **hparams) -> Experiment:
    """A copy of the first layers of the pre-trained checkpoint (the profile's default depth unless
    ``layers`` is given) trained by ``method`` with the settings table's student row for ``task``."""
    s = settings.get(profile, task, "student")
    layers = tuple(profile.student_layers if layers is None else layers)
    return Experiment(chapter=chapter, profile=profile.name, task=task, method=method,
                      model=LayerCopy(profile.teacher, layers), teacher=teacher_exp, hparams=hparams,
                      data=profile.data, train_size=profile.train_size, dev_size=profile.dev_size,
                      epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, max_length=s.max_length, seed=seed,
                      evals_per_epoch=s.evals_per_epoch, label=label or method)


def baselines(profile: Profile, chapter: str, task: str, layers: tuple, T: float = 2.0, alpha: float = 0.5,
              n: int = 3) -> dict:
    """The rows every method of a chapter is set against on ``task``: ``"teacher"``, and a copy of ``layers`` on
    ``"labels only"`` and with ``"KD"`` (T, α: the book's KD row), over the profile's first ``n`` seeds."""
    t = teacher(profile, task)
    return {"teacher": [t],
            "labels only": [student(profile, chapter, task, "finetune", sd, label="labels only", layers=layers)
                            for sd in profile.seeds[:n]],
            "KD": [student(profile, chapter, task, "kd", sd, t, label="KD", layers=layers, T=T, alpha=alpha)
                   for sd in profile.seeds[:n]]}


def chain(exp) -> list:
    """The records of one run and of the runs it starts from (stage I, an intermediate stage), the run first."""
    from ..config import FromRun
    from ..runner import run

    recs, model = [run(exp)], exp.model
    while isinstance(model, FromRun):
        recs.append(run(model.run))
        model = model.run.model
    return recs


def run_minutes(exp) -> float:
    """Wall time of one run and of the runs it starts from, in minutes."""
    return sum(r["wall_time_s"] for r in chain(exp)) / 60


def teacher_passes(exp) -> float:
    """The teacher's forward passes per training example, over a run and the runs it starts from: one where its
    outputs were cached (made once, shared by every run on the same data), plus its live calls times the batch
    over the examples (a record made before kdlib counted live calls: one call per step)."""
    total = 0.0
    for rec in chain(exp):
        src = rec.get("teacher_source") or {}
        calls = rec.get("teacher_live_calls")
        if calls is None and src.get("live"):
            calls = rec["history"][-1]["step"] if rec["history"] else 0
        total += bool(src.get("cached")) + (calls or 0) * rec["config"]["batch_size"] / max(rec["n_train"], 1)
    return total


def peak_memory_mb(exp) -> float | None:
    """The highest peak memory over a run and the runs it starts from (``None`` where a record has none)."""
    peaks = [(r.get("peak_memory") or {}).get("mb") for r in chain(exp)]
    return None if None in peaks else max(peaks)


def seeds(profile: Profile, chapter: str, task: str, method: str, teacher_exp=None, label: str = "",
          n: int | None = None, layers: tuple | None = None, **hparams) -> list:
    """One experiment per seed of the profile (the first ``n`` seeds if given)."""
    return [student(profile, chapter, task, method, s, teacher_exp, label, layers, **hparams)
            for s in profile.seeds[:n]]


def size_speed(chapter: str, models: dict, reference: str, batch_size: int = 512, device: str = "cpu",
            force: bool = False, stored_only: bool = False) -> dict | None:
    """A stored size/speed record for ``models`` (name → :class:`~kdlib.config.Experiment` whose
    architecture is timed) over the whole training set of their task, at ``batch_size`` on ``device``.

    Stored at ``results/<profile>/<chapter>/measurements/size_speed-<hash>.json`` with the same provenance as a
    training record, and loaded from there when present (unless ``force`` or ``KDLIB_RECOMPUTE``). Weights do
    not change the time, so each model is built as its experiment would start (no training needed).
    ``stored_only`` returns the stored record or ``None``, never measuring."""
    import torch

    from ..data import encode, get_task
    from ..errors import KDLibError
    from ..models import load_tokenizer, quiet_transformers
    from ..runner import build_model, split_data
    from ..speed import embedding_parameters, size_speed as time_models
    from ..store import measurement

    check_choice("device", device, ("cpu", "cuda"))
    check_choice("reference model", reference, models)
    exps = list(models.values())
    first = exps[0]
    config = {"task": first.task, "data": first.data, "train_size": first.train_size, "batch_size": batch_size,
              "device": device, "reference": reference,
              "models": {name: {"model": e.model.hash_dict(), "max_length": e.max_length} for name, e in models.items()}}

    def compute() -> dict:
        if device == "cuda" and not torch.cuda.is_available():
            raise KDLibError("no CUDA device here to time on; valid choices: cpu")
        quiet_transformers()
        spec = get_task(first.task)
        built, encodings = {}, {}
        for name, exp in models.items():
            tok = load_tokenizer(exp.model.checkpoint)
            built[name] = build_model(exp, spec.num_labels, tok)
            encodings[name] = encode(tok, split_data(exp.replace(augment=None), "train"), exp.max_length)
        rows = time_models(built, encodings, reference, batch_size, device)
        for r in rows:
            r["params w/o embeddings"] = r["params"] - embedding_parameters(built[r["model"]])
        return {"rows": rows, "n_examples": len(next(iter(encodings.values())))}

    return measurement("size_speed", first.profile, chapter, config, compute, force, stored_only)


def size_speed_records(chapter: str, models: dict, reference: str, devices: tuple = ("cpu", "cuda"),
                       force: bool = False) -> list:
    """:func:`size_speed` at batch 512 on each of ``devices`` that is here (measured unless stored, or again
    with ``force``), or whose record was stored on another machine."""
    import torch

    records = []
    for device in devices:
        here = device == "cpu" or torch.cuda.is_available()
        rec = size_speed(chapter, models, reference, batch_size=512, device=device, force=force and here,
                         stored_only=not here)
        if rec is not None:
            records.append(rec)
    return records


def stored_measurement(kind: str, chapter: str, profile: str, config: dict, compute) -> dict | None:
    """A measurement record that a page shows (:func:`kdlib.store.measurement`): read when stored, else computed
    and stored; ``None`` where it is not stored and cannot be computed here (no data, no network)."""
    from ..errors import KDLibError
    from ..store import measurement

    stored = measurement(kind, profile, chapter, config, compute, stored_only=True)
    if stored is not None:
        return stored
    try:
        return measurement(kind, profile, chapter, config, compute)
    except (KDLibError, OSError):
        return None


def _data_config(exp: Experiment) -> dict:
    return {"task": exp.task, "data": exp.data, "train_size": exp.train_size, "dev_size": exp.dev_size}


def examples(chapter: str, exp: Experiment, indices, split: str = "dev") -> dict | None:
    """The texts of some examples of ``exp``'s data (``{index: text}``, a pair joined by " ||| "), as a stored
    measurement record, so that a page can show them where no GLUE folder is (a reader's clone, CI).
    ``None`` without data and without a stored record."""
    from ..runner import split_data

    indices = sorted({int(i) for i in indices})

    def compute() -> dict:
        data = split_data(exp.replace(augment=None), split)
        join = (lambda i: data.text_a[i].strip()) if data.text_b is None else \
            (lambda i: f"{data.text_a[i].strip()} ||| {data.text_b[i].strip()}")
        return {"texts": {str(i): join(i) for i in indices}}

    rec = stored_measurement("examples", chapter, exp.profile,
                             {**_data_config(exp), "split": split, "indices": indices}, compute)
    return None if rec is None else {int(i): t for i, t in rec["texts"].items()}


def constant_baseline(chapter: str, exp: Experiment, label: int | None = None) -> dict | None:
    """Dev metrics of always predicting class ``label`` (the floor a classifier has to beat), as a stored
    measurement record; ``label=None``: the class most frequent in ``exp``'s training data (the lowest on a tie),
    which the metrics name as ``"label"``. ``None`` without data and without a stored record."""
    import numpy as np

    from ..data import get_task
    from ..metrics import task_metrics
    from ..runner import split_data

    spec = get_task(exp.task)
    if spec.is_regression:
        raise KDLibError(f"a constant prediction has no score on {exp.task} (a regression task): choose a "
                         "classification task")
    if label is not None and label not in range(spec.num_labels):
        raise KDLibError(f"label {label!r} is not a class of {exp.task}: choose one of "
                         f"{', '.join(map(str, range(spec.num_labels)))}, or None for the majority class")

    def compute() -> dict:
        data = exp.replace(augment=None)
        chosen = label
        if chosen is None:
            chosen = int(np.bincount(split_data(data, "train").labels, minlength=spec.num_labels).argmax())
        dev = split_data(data, "dev")
        probs = np.eye(spec.num_labels)[[chosen] * len(dev)]
        metrics = {k: float(v) for k, v in task_metrics(exp.task, probs, dev.labels).items()}
        return {"metrics": metrics if label is not None else {**metrics, "label": chosen}}

    config = {**_data_config(exp), "label": label if label is not None else "majority in train"}
    if label is None:
        config["subset_seed"] = exp.subset_seed  # the training subset decides the class
    rec = stored_measurement("constant_baseline", chapter, exp.profile, config, compute)
    return None if rec is None else rec["metrics"]


#: the sentence a table's caption adds under a :func:`floor` row
FLOOR_CAPTION = (" The last row predicts the training set's most frequent class for every input: the floor a student "
                 "has to beat.")


def floor(profile: Profile, task: str) -> tuple | None:
    """The row a results table ends with (:func:`kdlib.report.against_teacher`'s ``floor``): the majority class of
    the profile's teacher data on ``task``, always (a record beside the teachers', shared by every chapter);
    ``None`` for a regression task or where it is neither stored nor computable here."""
    from ..data import get_task

    if get_task(task).is_regression:
        return None
    always = constant_baseline(TEACHERS, teacher(profile, task))
    return None if always is None else (f"always class {always['label']} (train majority)", always)


@dataclass(frozen=True)
class Chapter:
    """A chapter's notebook and, if it runs experiments, the module in ``kdlib.chapters`` that plans them.

    The module has ``plan(profile) -> {row: [experiments]}`` and, optionally, ``measure(profile)`` for
    measurements that are not training runs (e.g. a size/speed table), run by ``kdbook experiment``. It is
    imported only when a plan is asked for."""

    key: str
    notebook: str  # path from the book root
    title: str
    module: str | None = None

    def _attr(self, name: str):
        if self.module is None:
            return None
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{self.module}"), name, None)

    @property
    def plan(self) -> Callable[[Profile], dict] | None:
        return self._attr("plan")

    @property
    def measure(self) -> Callable[[Profile], object] | None:
        return self._attr("measure")


CHAPTERS = {
    "intro": Chapter("intro", "chapters/00_introduction.md", "Introduction"),
    "hinton": Chapter("hinton", "chapters/01_hinton_kd.ipynb", "Hinton KD", "hinton"),
    "bilstm": Chapter("bilstm", "chapters/02_bert_to_bilstm.ipynb", "BERT to BiLSTM", "bilstm"),
    "pkd": Chapter("pkd", "chapters/03_patient_kd.ipynb", "Patient KD", "pkd"),
    "tinybert": Chapter("tinybert", "chapters/04_tinybert.ipynb", "TinyBERT", "tinybert"),
    "annealing": Chapter("annealing", "chapters/05_annealing_kd.ipynb", "Annealing KD", "annealing"),
    "mate": Chapter("mate", "chapters/06_mate_kd.ipynb", "MATE-KD", "mate"),
    "alp": Chapter("alp", "chapters/07_alp_kd.ipynb", "ALP-KD", "alp"),
    "compare": Chapter("compare", "chapters/08_every_method.ipynb", "Every method in one setting", "compare"),
    "cost": Chapter("cost", "chapters/appendix_cost.ipynb", "What it costs", "cost"),
    "paper-numbers": Chapter("paper-numbers", "chapters/appendix_paper_numbers.ipynb", "The papers' numbers"),
    "bibliography": Chapter("bibliography", "chapters/bibliography.md", "Bibliography"),
}


def in_book(root=None) -> list:
    """The registered chapters that the book's ``_toc.yml`` lists, in the book's order. A chapter that is
    registered (its plan can run) but not yet listed is still being written."""
    from pathlib import Path

    import yaml

    from ..store import book_root

    root = Path(root) if root else book_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    parts = toc.get("parts") or [{"chapters": toc.get("chapters", [])}]
    files = [toc["root"]] + [e["file"] for part in parts for e in part.get("chapters", [])]
    by_file = {c.notebook.rsplit(".", 1)[0]: c for c in CHAPTERS.values()}
    unknown = [f for f in files if f not in by_file]
    if unknown:
        raise KDLibError(f"_toc.yml lists {unknown[0]!r}, which is not a registered chapter; valid choices: "
                         f"{', '.join(by_file)}")
    return [by_file[f] for f in files]


def get_chapter(key: str) -> Chapter:
    check_choice("chapter", key, CHAPTERS)
    return CHAPTERS[key]


def chapter_plan(key: str, profile: str) -> dict:
    ch = get_chapter(key)
    return ch.plan(get_profile(profile)) if ch.plan else {}
