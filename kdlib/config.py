"""What a run is: a frozen, hashable config.

An :class:`Experiment` names the task and its data, the model the run starts from, the method and its
hyper-parameters, the teacher (itself an experiment), the optimisation settings and the seed. Its
:attr:`~Experiment.hash` identifies the run's record in the store, whatever chapter asks for it.

Models and augmentations are *tagged* dataclasses: each kind carries a ``kind`` tag into the config, so
a new kind (a narrower student, an MLM augmenter) needs no special case in hashing or caching:

* :class:`Pretrained` — a checkpoint as it is (a teacher to fine-tune);
* :class:`LayerCopy` — some encoder layers of a checkpoint, as DistilBERT and Patient KD start;
* :class:`FreshBert` — a randomly initialised BERT of any depth, width, heads and FFN size;
* :class:`BiLSTM` — Tang et al.'s BiLSTM over a checkpoint's vocabulary;
* :class:`MaskedLM` — a checkpoint with a masked-LM head (fitted on plain text; TinyBERT's augmenter and
  MATE-KD's generator);
* :class:`FromRun` — the trained weights of another experiment (runs start from runs: general
  distillation, then task distillation; the first phase of Annealing KD, then the second).

Hashes cover every field that changes what a run computes, and nothing else (the chapter that shows a
record, its display label, whether the weights are kept). Nested experiments (teachers, ``FromRun``)
hash by their own hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from .data import get_task
from .errors import KDLibError, check_choice

#: Bumped when the meaning of a config changes; part of every hash. 2: every module a run builds is
#: initialised under the run's seed (kdlib 0.2).
SCHEMA = 2
DATA_SOURCES = ("glue", "synthetic")
OPTIMIZERS = ("adamw", "adadelta")
KEEP = ("best", "last")
BILSTM_EMBEDDINGS = ("static", "tuned", "random")


class _Tagged:
    """A config part with a ``kind`` tag; ``to_dict`` puts the tag first."""

    kind = ""

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if hasattr(v, "to_dict") else (list(v) if isinstance(v, tuple) else v)
        return d

    def hash_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.hash if isinstance(v, Experiment) else (list(v) if isinstance(v, tuple) else v)
        return d


@dataclass(frozen=True)
class Pretrained(_Tagged):
    checkpoint: str
    kind = "pretrained"

    def describe(self) -> str:
        return self.checkpoint


@dataclass(frozen=True)
class LayerCopy(_Tagged):
    checkpoint: str
    layers: tuple  # 0-based encoder layers copied, in order
    kind = "layer_copy"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(_layer_index(i) for i in self.layers))
        if not self.layers:
            raise KDLibError("a student needs at least one layer; got an empty layer list")

    def describe(self) -> str:
        return f"{len(self.layers)}-layer copy of {self.checkpoint} (layers {list(self.layers)})"


@dataclass(frozen=True)
class FreshBert(_Tagged):
    checkpoint: str  # whose tokenizer and vocabulary
    layers: int
    hidden: int
    heads: int
    intermediate: int | None = None  # FFN size; None: 4 × hidden
    kind = "fresh_bert"

    def __post_init__(self):
        for name in ("layers", "hidden", "heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise KDLibError(f"fresh BERT {name} must be a positive integer, got {v!r}")
        if self.hidden % self.heads:
            raise KDLibError(f"hidden size {self.hidden} is not divisible by {self.heads} heads; choose a width "
                             f"that is a multiple of the head count")

    def describe(self) -> str:
        ffn = self.intermediate or 4 * self.hidden
        return f"fresh BERT L{self.layers} H{self.hidden} A{self.heads} FFN{ffn} (vocab of {self.checkpoint})"


@dataclass(frozen=True)
class BiLSTM(_Tagged):
    checkpoint: str  # whose tokenizer (and, unless random, input-embedding table)
    hidden: int = 150
    fc: int = 200
    embeddings: str = "static"  # the checkpoint's table kept fixed, trained along ("tuned"), or "random" 300-d
    kind = "bilstm"

    def __post_init__(self):
        check_choice("BiLSTM embeddings", self.embeddings, BILSTM_EMBEDDINGS)

    def describe(self) -> str:
        return f"BiLSTM {self.hidden} units, FC {self.fc}, {self.embeddings} embeddings"


@dataclass(frozen=True)
class MaskedLM(_Tagged):
    checkpoint: str
    tune_layers: int = 0  # top encoder layers trained with the head (0: the encoder stays frozen)
    kind = "masked_lm"

    def __post_init__(self):
        if not isinstance(self.tune_layers, int) or isinstance(self.tune_layers, bool) or self.tune_layers < 0:
            raise KDLibError(f"tune_layers must be an integer >= 0, got {self.tune_layers!r}")

    def describe(self) -> str:
        top = f", top {self.tune_layers} layer(s) tuned" if self.tune_layers else ", encoder frozen"
        return f"{self.checkpoint} with a masked-LM head{top}"


@dataclass(frozen=True)
class FromRun(_Tagged):
    run: "Experiment"  # its trained weights (best or last, as that run keeps) are this model's start
    kind = "from_run"

    @property
    def checkpoint(self) -> str:
        return self.run.model.checkpoint

    def to_dict(self) -> dict:
        return {"kind": self.kind, "run": {"hash": self.run.hash, **self.run.to_dict()}}  # names the run it starts from

    def describe(self) -> str:
        return f"the weights of run {self.run.hash} ({self.run.label or self.run.method}: {self.run.model.describe()})"


MODEL_KINDS = {c.kind: c for c in (Pretrained, LayerCopy, FreshBert, BiLSTM, MaskedLM, FromRun)}


#: What a transfer set's new examples carry as labels: their source sentence's label ("copied"), or none
#: ("none": only the teacher's terms train on them, as TinyBERT's and Tang et al.'s transfer sets).
AUGMENT_LABELS = ("copied", "none")


class _Augment(_Tagged):
    """A transfer set's recipe. Its ``labels`` choice is how the run trains on the new examples, not how they are
    made: it stays out of the cached transfer set's key, and out of the hash when it is the default ("copied")."""

    def _check_labels(self):
        check_choice("transfer-set labels", self.labels, AUGMENT_LABELS)

    def hash_dict(self) -> dict:
        d = super().hash_dict()
        if d["labels"] == AUGMENT_LABELS[0]:
            del d["labels"]  # runs stored before the choice existed keep their hashes
        return d

    def making_dict(self) -> dict:
        """What the transfer set itself depends on (the cache's key)."""
        d = self.hash_dict()
        d.pop("labels", None)
        return d


@dataclass(frozen=True)
class TangAugment(_Augment):
    """Tang et al. 2019's transfer set: masking, POS-guided replacement, n-gram sampling, n_iter samples."""

    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    n_iter: int = 1
    labels: str = "copied"  # see AUGMENT_LABELS
    kind = "tang"

    def __post_init__(self):
        from .augment import TangAugmenter

        self._check_labels()
        TangAugmenter(self.p_mask, self.p_pos, self.p_ng, self.n_iter)  # validates

    def make(self, seed: int):
        from .augment import TangAugmenter

        return TangAugmenter(self.p_mask, self.p_pos, self.p_ng, self.n_iter, seed=seed)

    def runs(self) -> dict:
        """The trained runs the augmenter reads, by name (none: it reads the data and a POS tagger)."""
        return {}

    def arguments(self, loaded: dict) -> dict:
        """The augmenter's arguments besides the data, from :meth:`runs` loaded as ``(model, tokenizer)``."""
        return {}


@dataclass(frozen=True)
class TinyBertAugment(_Augment):
    """Jiao et al. 2020's transfer set: each word, with probability ``p_t``, becomes one of ``k`` candidates —
    the masked LM's best words for a one-piece word, the nearest neighbours in the checkpoint's input-embedding
    table for a word of several pieces (the paper: GloVe) — ``n_aug`` samples per sentence. ``mlm`` is the
    masked LM's run (:func:`kdlib.chapters.masked_lm`)."""

    mlm: "Experiment"
    p_t: float = 0.4
    k: int = 15
    n_aug: int = 20
    content_words_only: bool = True  # as the paper's code: no stop words, punctuation or numbers replaced
    labels: str = "copied"  # see AUGMENT_LABELS
    kind = "tinybert"

    def __post_init__(self):
        self._check_labels()
        if not isinstance(self.mlm, Experiment) or self.mlm.method != "mlm":
            raise KDLibError("TinyBERT's augmentation needs a masked LM: give mlm=masked_lm(profile), a run of "
                             "method 'mlm'")
        self.make(0)  # validates

    def make(self, seed: int):
        from .augment import TinyBertAugmenter

        return TinyBertAugmenter(self.p_t, self.k, self.n_aug, seed=seed, content_words_only=self.content_words_only)

    def runs(self) -> dict:
        """The trained runs the augmenter reads, by name: the masked LM (its weights key the cached transfer set)."""
        return {"mlm": self.mlm}

    def arguments(self, loaded: dict) -> dict:
        """The augmenter's word candidates, from the masked LM of :meth:`runs` loaded as ``(model, tokenizer)``."""
        from .augment import word_candidates

        model, tok = loaded["mlm"]
        return {"candidates": word_candidates(model, tok, self.mlm.max_length)}


AUGMENT_KINDS = {c.kind: c for c in (TangAugment, TinyBertAugment)}


def _layer_index(i) -> int:
    import operator

    try:
        if isinstance(i, bool):
            raise TypeError
        return operator.index(i)
    except TypeError:
        raise KDLibError(f"layer index {i!r} is not an integer; give 0-based layer numbers such as 0, 1, 2") from None


@dataclass(frozen=True)
class Experiment:
    chapter: str  # where the record is first stored; not part of the hash (any chapter finds it)
    profile: str
    task: str
    method: str
    model: _Tagged
    teacher: "Experiment | Pretrained | None" = None  # a run, or a checkpoint as it is (general distillation)
    hparams: tuple = ()  # sorted (name, value) pairs; see hp
    data: str = "glue"
    train_size: int | None = None
    dev_size: int | None = None  # only for synthetic data
    subset_seed: int = 0
    epochs: float = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    evals_per_epoch: int = 1  # 0: no dev evaluation (the last state is kept)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # or "adadelta" (Tang et al. 2019: lr 1.0, rho 0.95, constant)
    augment: _Tagged | None = None
    keep: str = "best"  # which state the run ends with: the best dev evaluation or the last step
    #: the seeds trained together as one stacked model (kdlib.stacked), this run's seed among them; () alone.
    #: Part of the hash when set: a stacked seed's dropout masks are not the ones the run alone would draw
    stack: tuple = ()
    label: str = field(default="", compare=False)  # display name; not part of the hash
    keep_model: bool = field(default=False, compare=False)  # save the kept weights (teachers, FromRun)

    def __post_init__(self):
        from .methods import make_objective, needs_teacher

        get_task(self.task)
        check_choice("data source", self.data, DATA_SOURCES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("keep", self.keep, KEEP)
        if not isinstance(self.model, tuple(MODEL_KINDS.values())):
            raise KDLibError(f"model must be one of {', '.join(MODEL_KINDS)}; got {type(self.model).__name__}")
        if self.augment is not None and not isinstance(self.augment, tuple(AUGMENT_KINDS.values())):
            raise KDLibError(f"augment must be one of {', '.join(AUGMENT_KINDS)}; got {type(self.augment).__name__}")
        if isinstance(self.hparams, dict):
            object.__setattr__(self, "hparams", tuple(sorted(self.hparams.items())))
        if self.stack:
            stack = tuple(self.stack)
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in stack) or len(set(stack)) != len(stack) \
                    or len(stack) < 2 or self.seed not in stack:
                raise KDLibError(f"stack must be two or more distinct integer seeds including this run's seed "
                                 f"{self.seed}; got {self.stack!r}")
            object.__setattr__(self, "stack", tuple(sorted(stack)))
        if self.evals_per_epoch == 0 and self.keep == "best":
            raise KDLibError("keep='best' needs dev evaluations; set evals_per_epoch ≥ 1 or keep='last'")
        objective = make_objective(self.method, self.hp)  # validates the method and its hyper-parameters
        if get_task(self.task).unlabelled and not objective.label_free:
            from .methods import label_free_methods

            raise KDLibError(f"task {self.task!r} has no labels, and method {self.method!r} needs them; valid "
                             f"choices on it: {label_free_methods()}")
        if objective.classification_only and get_task(self.task).is_regression:
            raise KDLibError(f"method {self.method!r} needs class labels, and task {self.task!r} is a regression; "
                             "valid choices: a classification task")
        if self.evals_per_epoch and get_task(self.task).unlabelled and not objective.evaluates:
            raise KDLibError(f"method {self.method!r} has no dev score on task {self.task!r}; set evals_per_epoch=0 "
                             "and keep='last'")
        if needs_teacher(self.method) and self.teacher is None:
            raise KDLibError(f"method {self.method!r} needs a teacher experiment")
        if self.teacher is not None and not isinstance(self.teacher, (Experiment, Pretrained)):
            raise KDLibError(f"teacher must be an Experiment or a Pretrained checkpoint; got {type(self.teacher).__name__}")
        if isinstance(self.teacher, Pretrained) and "logits" in objective.teacher_quantities:
            raise KDLibError(f"method {self.method!r} reads the teacher's logits, and pre-trained checkpoint "
                             f"{self.teacher.checkpoint!r} has no trained task head; give a fine-tuned teacher "
                             "experiment")

    @property
    def hp(self) -> dict:
        return dict(self.hparams)

    def to_dict(self) -> dict:
        """The whole config as JSON-able data (what a record stores)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.to_dict()
        d["augment"] = None if self.augment is None else self.augment.to_dict()
        d["teacher"] = None if self.teacher is None else self.teacher.to_dict()
        d["hparams"] = {k: {"hash": v.hash, **v.to_dict()} if isinstance(v, Experiment) else v for k, v in self.hp.items()}
        if not d["stack"]:
            del d["stack"]
        return d

    def hash_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare and f.name != "chapter"}
        d["model"] = self.model.hash_dict()
        d["augment"] = None if self.augment is None else self.augment.hash_dict()
        t = self.teacher
        d["teacher"] = None if t is None else t.hash if isinstance(t, Experiment) else t.hash_dict()
        d["hparams"] = {k: v.hash if isinstance(v, Experiment) else v for k, v in self.hp.items()}  # a run by its hash
        d["schema"] = SCHEMA
        if not d["stack"]:
            del d["stack"]  # a run trained alone: its hash as before stacks existed
        return d

    @property
    def hash(self) -> str:
        blob = json.dumps(self.hash_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "Experiment":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        return self.model.describe()


def seed_for(seed: int, purpose: str) -> int:
    """A seed for one purpose of a run (``"init"``, ``"modules"``, ``"train"``), derived from the run's seed
    so that, say, the weights drawn for a head do not change when the data order's draw does."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def dependencies(exp: Experiment) -> list:
    """The runs ``exp`` needs made first, in a fixed order: its teacher, its start, the runs its hyper-parameters
    name (a generator's start), its augmentation's masked LM."""
    deps = [exp.teacher] if isinstance(exp.teacher, Experiment) else []
    if isinstance(exp.model, FromRun):
        deps.append(exp.model.run)
    deps += [v for _, v in sorted(exp.hp.items()) if isinstance(v, Experiment)]
    mlm = getattr(exp.augment, "mlm", None)
    return deps + ([mlm] if isinstance(mlm, Experiment) else [])


def closure(exp: Experiment) -> list:
    """``exp`` and every run it depends on, each once, dependencies first."""
    out, seen = [], set()

    def visit(e):
        for d in dependencies(e):
            visit(d)
        if e.hash not in seen:
            seen.add(e.hash)
            out.append(e)

    visit(exp)
    return out
