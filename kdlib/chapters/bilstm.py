"""Chapter 2 — Tang et al. 2019, *Distilling Task-Specific Knowledge from BERT into Simple Neural Networks*.

A one-layer BiLSTM student (:mod:`kdlib.bilstm`) learns from the fine-tuned teacher's logits with MSE
(BiLSTM_SOFT, ``logit_mse`` with α = 1), on the training set alone and on a transfer set grown by the
paper's augmenter (:class:`kdlib.augment.TangAugmenter`), on SST-2 and on the sentence-pair task MRPC.
AdaDelta (lr 1.0, ρ 0.95, no schedule) as in the paper.

Word vectors: the paper's 300-d word2vec is not obtainable offline. The student reads the teacher's
WordPiece tokens and starts from the teacher's own input-embedding table (384-d for ``minilm-l6``), kept
fixed ("static", like the static channel of the paper's multichannel embeddings). An ablation row replaces
it by a 300-d table trained from scratch ("random"); kdlib also offers "tuned" (the teacher's table, trained).

Per-profile sizes are in :data:`SETTINGS`; :func:`plan` lists every row.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import papers, settings
from ..config import BiLSTM, Experiment, TangAugment
from ..profiles import Profile
from . import teacher

CHAPTER = "bilstm"
TASK, PAIR_TASK = "sst2", "mrpc"
P_MASK, P_POS, P_NG = 0.1, 0.1, 0.25  # the paper's augmentation probabilities
KL_T = 2.0  # the temperature of the KL ablation row


@dataclass(frozen=True)
class Setting:
    hidden: int  # LSTM units per direction
    fc: int  # units of the ReLU layer
    batch_size: int
    epochs: float  # SST-2, every row (with or without augmentation)
    n_iter: int  # augmented samples per SST-2 example in the main row
    ablation_n_iter: int  # ... in the ablation block (cheaper on a CPU)
    pair_epochs: float
    pair_n_iter: int
    ablation_seeds: int  # seeds of the single-operation ablation rows


SETTINGS = {
    "smoke": Setting(hidden=32, fc=32, batch_size=32, epochs=4, n_iter=2, ablation_n_iter=1, pair_epochs=4,
                     pair_n_iter=2, ablation_seeds=1),
    # sized for 2 CPU cores: a static embedding table (AdaDelta on the 11.7M-entry table would triple a
    # step), 2 augmented samples per SST-2 example instead of 20, the ablations at 1 sample and one seed.
    # AdaDelta has no decaying schedule: at 2 epochs the distilled SST-2 students still gained 1.5-1.8
    # points in the last quarter (kdlib 0.2 records of 2026-11-23), so SST-2 gets 4.
    "cpu": Setting(hidden=150, fc=200, batch_size=50, epochs=4, n_iter=2, ablation_n_iter=1, pair_epochs=6,
                   pair_n_iter=10, ablation_seeds=1),
    # the paper's settings: 300/400 units, 20 (single) and 10 (pair) samples per example
    "gpu": Setting(hidden=300, fc=400, batch_size=50, epochs=10, n_iter=20, ablation_n_iter=5, pair_epochs=10,
                   pair_n_iter=10, ablation_seeds=3),
}


def setting(profile: Profile) -> Setting:
    return SETTINGS[profile.name]


def augment(n_iter: int, p_mask: float = P_MASK, p_pos: float = P_POS, p_ng: float = P_NG) -> TangAugment:
    return TangAugment(p_mask, p_pos, p_ng, n_iter)


def pair_teacher(profile: Profile) -> Experiment:
    return teacher(profile, PAIR_TASK)


def bilstm(profile: Profile, task: str, method: str, seed: int, teacher_exp: Experiment | None = None,
           label: str = "", augment: TangAugment | None = None, embeddings: str = "static",
           **hparams) -> Experiment:
    """The BiLSTM student trained by ``method`` (AdaDelta, lr 1.0, this chapter's epochs and batch) on
    ``task``, at the settings table's maximum length for the task."""
    s, table = setting(profile), settings.get(profile, task, "student")
    pair = task != TASK
    return Experiment(chapter=CHAPTER, profile=profile.name, task=task, method=method,
                      model=BiLSTM(profile.teacher, s.hidden, s.fc, embeddings), teacher=teacher_exp,
                      hparams=hparams, data=profile.data, train_size=profile.train_size,
                      dev_size=profile.dev_size, epochs=s.pair_epochs if pair else s.epochs, lr=1.0,
                      batch_size=s.batch_size, max_length=table.max_length, seed=seed, evals_per_epoch=4,
                      warmup_ratio=0.0, weight_decay=0.0, optimizer="adadelta", augment=augment,
                      label=label or method)


def _seeds(profile, *args, n=None, **kwargs):
    return [bilstm(profile, *args, seed=s, **kwargs) for s in profile.seeds[:n]]


def plan(profile: Profile) -> dict:
    s = setting(profile)
    t, tp = teacher(profile, TASK), pair_teacher(profile)
    soft = dict(method="logit_mse", alpha=1.0)
    rows = {"teacher": [t]}
    rows["BiLSTM, labels only"] = _seeds(profile, TASK, "finetune", label="BiLSTM")
    rows["BiLSTM_SOFT, no augmentation"] = _seeds(profile, TASK, teacher_exp=t, label="BiLSTM_SOFT", **soft)
    rows[f"BiLSTM_SOFT, augmented (n_iter {s.n_iter})"] = _seeds(
        profile, TASK, teacher_exp=t, label=f"BiLSTM_SOFT aug{s.n_iter}", augment=augment(s.n_iter), **soft)
    rows["MRPC: teacher"] = [tp]
    rows["MRPC: BiLSTM, labels only"] = _seeds(profile, PAIR_TASK, "finetune", label="MRPC BiLSTM")
    rows["MRPC: BiLSTM_SOFT, no augmentation"] = _seeds(profile, PAIR_TASK, teacher_exp=tp,
                                                        label="MRPC BiLSTM_SOFT", **soft)
    rows[f"MRPC: BiLSTM_SOFT, augmented (n_iter {s.pair_n_iter})"] = _seeds(
        profile, PAIR_TASK, teacher_exp=tp, label=f"MRPC BiLSTM_SOFT aug{s.pair_n_iter}",
        augment=augment(s.pair_n_iter), **soft)
    # ablations on SST-2, at ablation_n_iter samples per example
    n, k = s.ablation_n_iter, s.ablation_seeds
    base = f"ablation: all three operations (n_iter {n})"
    if n != s.n_iter:
        rows[base] = _seeds(profile, TASK, teacher_exp=t, n=k, label=f"all ops aug{n}", augment=augment(n), **soft)
    else:
        base = f"BiLSTM_SOFT, augmented (n_iter {s.n_iter})"
    rows["ablation: no masking"] = _seeds(profile, TASK, teacher_exp=t, n=k, label="no masking",
                                          augment=augment(n, p_mask=0.0), **soft)
    rows["ablation: no POS replacement"] = _seeds(profile, TASK, teacher_exp=t, n=k, label="no POS",
                                                  augment=augment(n, p_pos=0.0), **soft)
    rows["ablation: no n-gram sampling"] = _seeds(profile, TASK, teacher_exp=t, n=k, label="no n-gram",
                                                  augment=augment(n, p_ng=0.0), **soft)
    rows[f"ablation: KL at T={KL_T:g} instead of MSE"] = _seeds(
        profile, TASK, "kd", teacher_exp=t, n=k, label=f"KL T={KL_T:g}", augment=augment(n), T=KL_T, alpha=1.0)
    rows["embeddings: random 300-d, trained"] = _seeds(profile, TASK, teacher_exp=t, n=k, label="random table",
                                                       embeddings="random", **soft)
    return rows


#: The row each ablation row is compared with.
def ablation_base(profile: Profile) -> str:
    s = setting(profile)
    if s.ablation_n_iter != s.n_iter:
        return f"ablation: all three operations (n_iter {s.ablation_n_iter})"
    return f"BiLSTM_SOFT, augmented (n_iter {s.n_iter})"


def augmentation_examples(profile: Profile, n_iter: int = 4, count: int = 4, min_words: int = 8) -> list | None:
    """What the augmenter makes of the first ``count`` training sentences of at least ``min_words`` words
    (``n_iter`` samples each), as a stored measurement record: ``[{"index", "original", "samples"}]``, or
    ``None`` where neither the data nor a stored record is here."""
    from ..runner import split_data
    from . import stored_measurement

    exp = teacher(profile, TASK)

    def compute() -> dict:
        train = split_data(exp, "train")
        picks = [i for i, t in enumerate(train.text_a) if len(t.split()) >= min_words][:count]
        made = augment(n_iter).make(seed=0).examples(train, picks)
        return {"examples": [{"index": i, "original": orig[0], "samples": [s[0] for s in samples]}
                             for i, (orig, samples) in zip(picks, made)]}

    config = {"task": TASK, "data": exp.data, "train_size": exp.train_size, "augment": augment(n_iter).hash_dict(),
              "count": count, "min_words": min_words}
    rec = stored_measurement("augmentation_examples", CHAPTER, profile.name, config, compute)
    return None if rec is None else rec["examples"]


def measure(profile: Profile, devices: tuple = ("cpu", "cuda"), force: bool = False) -> list:
    """Size/speed records (Tang et al.'s Table 2) for the teacher and the BiLSTM: whole SST-2 training set,
    batch 512; one record per device that is here, or whose record was stored on another machine."""
    from . import size_speed_records

    models = {"teacher": teacher(profile, TASK), "BiLSTM": bilstm(profile, TASK, "finetune", 0)}
    return size_speed_records(CHAPTER, models, "teacher", devices, force)


#: The paper's figures (kdlib/papers.yaml: Tang et al.'s Table 1, GLUE test server, teacher BERT-large; the
#: student a BiLSTM on word2vec). MRPC is not among the paper's tasks.
def paper(profile: Profile) -> dict:
    sst2 = lambda row: papers.figure("tang2019distilling", "glue_test", row, "SST-2").value
    return {"teacher": f"{sst2('BERT-large')} (BERT-large)", "BiLSTM, labels only": sst2("BiLSTM, no distillation"),
            f"BiLSTM_SOFT, augmented (n_iter {setting(profile).n_iter})":
                f"{sst2('BiLSTM_SOFT (distilled, n_iter 20)')} (n_iter 20)"}


PAPER_LABEL = "paper: SST-2 test acc"
PAPER_SOURCE = papers.source("tang2019distilling", "glue_test")
_SPEED = lambda row: tuple(papers.figure("tang2019distilling", "size_speed", row, c).value for c in ("params", "seconds"))
#: model → (the paper's model, its parameters, its seconds over SST-2 train), from kdlib/papers.yaml
PAPER_SPEED = {"teacher": ("BERT-large", *_SPEED("BERT-large")), "BiLSTM": ("BiLSTM_SOFT", *_SPEED("BiLSTM_SOFT"))}
PAPER_SPEED_SOURCE = papers.source("tang2019distilling", "size_speed")
