"""GLUE tasks: what each one is, how to read it, and how to batch it.

Two sources give the same :class:`TaskData`:

* a local folder in the original GLUE layout (``<dir>/SST-2/train.tsv`` ...), passed as ``data_dir`` or
  through the ``KDLIB_GLUE_DIR`` environment variable. The TSVs are read with quoting **off**, as the
  GLUE/BERT processors do (some sentences start with ``"``); CoLA has no header; MRPC headers carry a BOM.
* the Hugging Face hub (``nyu-mll/glue`` through ``datasets``) when no folder is given.

The smoke profile uses :func:`synthetic_task`, a small deterministic data set with a task's shape, so the
whole book runs without any data. Batching uses dynamic padding and length-bucketed batches.
"""
from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import KDLibError, check_choice, choices
from .losses import PARTLY_LABELLED, UNLABELLED

GLUE_ENV = "KDLIB_GLUE_DIR"


@dataclass(frozen=True)
class TaskSpec:
    """What a GLUE task looks like on disk and how it is scored."""

    name: str  # our name, e.g. "sst2"
    folder: str  # folder in the GLUE layout, e.g. "SST-2"
    text_columns: tuple  # one column (single sentence) or two (pairs); names or indices (no header)
    label_column: str | int
    labels: tuple | None  # label strings in class-index order; None for regression
    metrics: tuple  # reported metrics; the first is the one used for model selection
    header: bool = True
    splits: dict = field(default_factory=lambda: {"train": "train", "dev": "dev"})
    hub_splits: dict = field(default_factory=lambda: {"train": "train", "dev": "validation"})
    hub_text_columns: tuple = ("sentence",)
    unlabelled: bool = False  # plain sentences (the "text" task: masked-LM fitting, general distillation)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


_PAIR = ("sentence1", "sentence2")
TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",)),
    "cola": TaskSpec("cola", "CoLA", (3,), 1, ("0", "1"), ("mcc", "accuracy"), header=False),
    "mrpc": TaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"),
                     ("f1", "accuracy"), hub_text_columns=_PAIR),
    "rte": TaskSpec("rte", "RTE", _PAIR, "label", ("entailment", "not_entailment"), ("accuracy",),
                    hub_text_columns=_PAIR),
    "stsb": TaskSpec("stsb", "STS-B", _PAIR, "score", None, ("pearson", "spearman"),
                     hub_text_columns=_PAIR),
    "qnli": TaskSpec("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                     ("accuracy",), hub_text_columns=("question", "sentence")),
    "qqp": TaskSpec("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"),
                    ("f1", "accuracy"), hub_text_columns=("question1", "question2")),
    "mnli": TaskSpec("mnli", "MNLI", _PAIR, "gold_label", ("entailment", "neutral", "contradiction"),
                     ("accuracy",), splits={"train": "train", "dev": "dev_matched"},
                     hub_splits={"train": "train", "dev": "validation_matched"},
                     hub_text_columns=("premise", "hypothesis")),
    "wnli": TaskSpec("wnli", "WNLI", _PAIR, "label", ("0", "1"), ("accuracy",), hub_text_columns=_PAIR),
    # no labels: every sentence of the GLUE training splits (dev: held-out GLUE dev sentences), scored by
    # the masked-token accuracy of a masked LM, or not at all (general distillation keeps its last state)
    "text": TaskSpec("text", "", ("sentence",), "", ("none",), ("masked_accuracy",), unlabelled=True),
}
#: held-out sentences in the "text" task's dev split (drawn from every GLUE dev split, seed 0)
TEXT_DEV_SENTENCES = 2000
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def get_task(name: str) -> TaskSpec:
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    check_choice("task", name if key not in TASKS else key, TASKS)
    return TASKS[key]


@dataclass
class TaskData:
    """One split of one task: parallel lists of texts and labels (class index, or float score)."""

    task: str
    split: str
    text_a: list
    text_b: list | None
    labels: list
    source: str = "glue"

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices: Sequence[int]) -> "TaskData":
        idx = list(indices)
        return TaskData(self.task, self.split, [self.text_a[i] for i in idx],
                        None if self.text_b is None else [self.text_b[i] for i in idx],
                        [self.labels[i] for i in idx], self.source)

    def subset(self, n: int | None, seed: int = 0) -> "TaskData":
        """The same ``n`` examples for the same seed, kept in file order; ``None`` keeps all."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise KDLibError(f"subset size must be >= 1, got {n}")
        rng = np.random.RandomState(seed)
        return self.select(sorted(rng.permutation(len(self))[:n].tolist()))


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def glue_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The GLUE folder to read: the argument, else ``$KDLIB_GLUE_DIR``, else ``None`` (use the hub)."""
    d = data_dir if data_dir is not None else os.environ.get(GLUE_ENV) or None
    if d is None:
        return None
    d = Path(d).expanduser()
    where = "argument" if data_dir else GLUE_ENV
    if d.exists() and not d.is_dir():
        raise KDLibError(f"GLUE folder {str(d)!r} (from {where}) is a file, not a folder; point it at the folder "
                         "that holds SST-2/, MRPC/, ...")
    if not d.is_dir():
        raise KDLibError(f"GLUE folder {str(d)!r} does not exist (from {where})")
    return d


def load_task(task: str, split: str, data_dir: str | os.PathLike | None = None) -> TaskData:
    """Load ``split`` ("train" or "dev") of ``task`` from a GLUE folder, or from the hub if none is set."""
    spec = get_task(task)
    check_choice("split", split, spec.splits)
    folder = glue_dir(data_dir)
    if spec.unlabelled:
        sentences = unlabelled_text(data_dir=data_dir, split=split)["sentences"]
        return TaskData(spec.name, split, sentences, None, [0] * len(sentences), "glue")
    if folder is None:
        return _load_hub(spec, split)
    return read_glue_tsv(spec, folder / spec.folder / f"{spec.splits[split]}.tsv", split)


def unlabelled_text(tasks=None, data_dir: str | os.PathLike | None = None, split: str = "train") -> dict:
    """Unlabelled sentences (the ``text`` task) for fitting a masked LM and for general distillation
    (TinyBERT's stage 1; the paper uses English Wikipedia).

    ``train``: every sentence of the *training* splits of ``tasks`` (default: every task whose train.tsv the
    GLUE folder holds), both sides of a pair, stripped and deduplicated in first-seen order; no dev text is
    seen before evaluation. ``dev``: :data:`TEXT_DEV_SENTENCES` held-out sentences drawn (seed 0) from the
    dev splits, none of them also a training sentence. Returns ``{"sentences": [...], "words": n,
    "tasks": [...]}``."""
    folder = glue_dir(data_dir)
    if folder is None:
        raise KDLibError("unlabelled text needs a GLUE folder; set KDLIB_GLUE_DIR")
    check_choice("split", split, ("train", "dev"))

    def sentences(which: str) -> tuple:
        specs = [get_task(t) for t in (tasks or TASKS) if not get_task(t).unlabelled]
        names = [s.name for s in specs if (folder / s.folder / f"{s.splits[which]}.tsv").is_file()]
        seen, out = set(), []
        for t in names:
            d = load_task(t, which, folder)
            for text in d.text_a + (d.text_b or []):
                text = text.strip()
                if text and text not in seen:
                    seen.add(text)
                    out.append(text)
        return out, names

    out, names = sentences("train")
    if not names:
        raise KDLibError(f"no task's train.tsv under {folder}; valid choices: a folder in the GLUE layout")
    if split == "dev":
        train = set(out)
        held, names = sentences("dev")
        held = [t for t in held if t not in train]
        keep = sorted(np.random.RandomState(0).permutation(len(held))[:TEXT_DEV_SENTENCES].tolist())
        out = [held[i] for i in keep]
    return {"sentences": out, "words": sum(len(t.split()) for t in out), "tasks": [get_task(t).name for t in names]}


def read_glue_tsv(spec: TaskSpec, path: Path, split: str) -> TaskData:
    if not path.is_file():
        have = sorted(p.name for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise KDLibError(f"GLUE folder {str(path.parent)!r} has no {path.name} for split {split!r} of "
                         f"task {spec.name!r}; files there: {choices(have) or 'none'}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig drops MRPC's BOM
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:
        raise KDLibError(f"{str(path)!r} is not UTF-8 text (byte {err.start}); GLUE files are UTF-8") from None
    if not rows or (spec.header and len(rows) == 1):
        raise KDLibError(f"{str(path)!r} has no examples ({'empty' if not rows else 'only a header'}); "
                         f"it needs rows of task {spec.name!r}")
    if spec.header:
        header, rows = rows[0], rows[1:]
        wanted = [*spec.text_columns, spec.label_column]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise KDLibError(f"{str(path)!r} has columns {header} which do not match task {spec.name!r}: "
                             f"it needs {wanted}")
        cols = [header.index(c) for c in wanted]
        first = 2  # file line of rows[0]
    else:
        cols = [*spec.text_columns, spec.label_column]
        first = 1
    width = max(cols) + 1
    bad = next((i for i, r in enumerate(rows) if r and len(r) < width), None)
    if bad is not None:
        raise KDLibError(f"{str(path)!r} line {bad + first} has {len(rows[bad])} columns; task {spec.name!r} "
                         f"needs at least {width}")
    rows = [r for r in rows if r]
    text_a = [r[cols[0]] for r in rows]
    text_b = [r[cols[1]] for r in rows] if spec.is_pair else None
    raw = [r[cols[-1]] for r in rows]
    return TaskData(spec.name, split, text_a, text_b, _encode_labels(spec, raw, path), "glue")


def _encode_labels(spec: TaskSpec, raw: list, where) -> list:
    if spec.is_regression:
        return [float(x) for x in raw]
    index = {lab: i for i, lab in enumerate(spec.labels)}
    out = []
    for x in raw:
        if x not in index:
            raise KDLibError(f"label {x!r} in {str(where)!r} is not a label of task {spec.name!r}; "
                             f"valid labels: {choices(spec.labels)}")
        out.append(index[x])
    return out


def _load_hub(spec: TaskSpec, split: str) -> TaskData:  # pragma: no cover - needs the hub
    from datasets import load_dataset

    ds = load_dataset("nyu-mll/glue", spec.name, split=spec.hub_splits[split])
    cols = spec.hub_text_columns
    labels = [float(x) for x in ds["label"]] if spec.is_regression else list(ds["label"])
    return TaskData(spec.name, split, list(ds[cols[0]]), list(ds[cols[1]]) if spec.is_pair else None,
                    labels, "hub")


# ---------------------------------------------------------------------------------------------------
# A synthetic task for the smoke profile
# ---------------------------------------------------------------------------------------------------
_POS = "good great fine superb moving funny charming lovely smart warm brilliant touching".split()
_NEG = "bad dull poor boring awful flat tedious weak bland clumsy stale grim".split()
_FILL = "the film a story its cast this plot movie script and but with very quite rather".split()


#: the part of speech of every synthetic word (Penn Treebank tags, as NLTK's tagger gives them)
SYNTHETIC_TAGS = {**{w: "JJ" for w in _POS + _NEG},
                  **dict(zip(_FILL, "DT NN DT NN PRP$ NN DT NN NN NN CC CC IN RB RB RB".split()))}


def synthetic_pos_tag_sents(sentences: list) -> list:
    """POS tags of synthetic sentences, read from the grammar that wrote them (``nltk.pos_tag_sents``'s
    shape). The ``smoke`` profile uses it instead of NLTK's tagger, so it needs no tagger download."""
    return [[(w, SYNTHETIC_TAGS.get(w, "NN")) for w in words] for words in sentences]


def synthetic_task(task: str, split: str, n: int, seed: int = 0) -> TaskData:
    """A deterministic toy data set with ``task``'s shape (labels follow sentiment words, 10% flipped)."""
    spec = get_task(task)
    rng = random.Random(f"{spec.name}-{split}-{seed}")

    def sentence(label: int) -> str:
        words = [rng.choice(_FILL) for _ in range(rng.randint(4, 12))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(_POS if label else _NEG))
        return " ".join(words)

    if spec.unlabelled:
        text = [sentence(rng.randint(0, 1)) for _ in range(n)]
        return TaskData(spec.name, split, text, None, [0] * n, "synthetic")
    text_a, text_b, labels = [], [] if spec.is_pair else None, []
    for _ in range(n):
        y = rng.randint(0, 1)
        if spec.is_pair:  # label: do both sentences carry the same sentiment?
            first = rng.randint(0, 1)
            text_a.append(sentence(first))
            text_b.append(sentence(first if y else 1 - first))
        else:
            text_a.append(sentence(y))
        noisy = 1 - y if rng.random() < 0.1 else y
        labels.append(float(noisy * 5) if spec.is_regression else noisy % spec.num_labels)
    return TaskData(spec.name, split, text_a, text_b, labels, "synthetic")


# ---------------------------------------------------------------------------------------------------
# Tokenisation and batching
# ---------------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """Token ids per example (unpadded) plus labels; ``idx`` ties a row to its cached teacher outputs."""

    input_ids: list
    token_type_ids: list
    labels: list
    regression: bool

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer, data: TaskData, max_length: int) -> Encoded:
    enc = tokenizer(data.text_a, data.text_b, truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    return Encoded(enc["input_ids"], enc["token_type_ids"], list(data.labels),
                   get_task(data.task).is_regression)


def collate(enc: Encoded, indices: Sequence[int], pad_id: int = 0) -> dict:
    """Pad one batch to its own longest row (dynamic padding)."""
    width = max(len(enc.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    tt = torch.zeros((len(indices), width), dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for r, i in enumerate(indices):
        n = len(enc.input_ids[i])
        ids[r, :n] = torch.tensor(enc.input_ids[i])
        tt[r, :n] = torch.tensor(enc.token_type_ids[i])
        mask[r, :n] = 1
    labels = [enc.labels[i] for i in indices]
    missing = [v != v if enc.regression else v == UNLABELLED for v in labels]  # a score's NaN, a class's UNLABELLED
    if any(missing):
        labels, dtype = [float("nan") if m else float(v) for v, m in zip(labels, missing)], PARTLY_LABELLED
    else:
        dtype = torch.float if enc.regression else torch.long
    return {"input_ids": ids, "token_type_ids": tt, "attention_mask": mask,
            "labels": torch.tensor(labels, dtype=dtype),
            "idx": torch.tensor(list(indices), dtype=torch.long)}


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int | None,
                     bucket_factor: int = 50) -> list:
    """Batches of similar length: shuffle, cut into pools of ``batch_size*bucket_factor``, sort each pool
    by length, cut into batches, shuffle the batches. ``seed=None`` gives a fixed, sorted order (eval)."""
    if batch_size < 1:
        raise KDLibError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    if seed is None:
        order = sorted(range(n), key=lambda i: lengths[i])
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.RandomState(seed)
    perm = rng.permutation(n).tolist()
    pool = batch_size * bucket_factor
    batches = []
    for start in range(0, n, pool):
        chunk = sorted(perm[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def padded_tokens(lengths: Sequence[int], batches: list) -> int:
    """The token positions of ``batches`` (lists of example indices into ``lengths``) as the loop pads them, each
    batch to its longest row: what the matrix products of a pass run over."""
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)
