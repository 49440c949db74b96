"""Chapter 4 — Jiao et al. 2020, *TinyBERT: Distilling BERT for Natural Language Understanding* (plan).

The student is narrower as well as shallower than its teacher, so nothing can be copied: a fresh BERT with
the teacher's head count learns everything by distillation, in two stages that are runs starting from runs:

1. *general distillation* on plain text (the ``text`` task) from the **pre-trained** checkpoint:
   attention, hidden-state and embedding losses, no labels, the last state kept;
2. *task distillation* from the general-distillation weights with the **fine-tuned** teacher, on the
   training set plus TinyBERT's augmented sentences: (i) the intermediate losses, then (ii) the prediction
   loss (soft cross-entropy at T = 1).

The shape is TinyBERT4's in proportion: 4 of BERT-base's 12 layers and 312 of its 768 units become 2 of
``minilm-l6``'s 6 layers and 156 of its 384 (13 per head, 12 heads), FFN 600 (1200/3072 of 1536).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import settings
from ..config import Experiment, FreshBert, FromRun, Pretrained, TinyBertAugment
from ..profiles import Profile
from . import masked_lm, teacher

CHAPTER = "tinybert"


@dataclass(frozen=True)
class Setting:
    layers: int
    hidden: int
    heads: int
    ffn: int
    tasks: tuple
    n_aug: int  # augmented sentences per training sentence (the paper: 20 for SST-2, 30 for small tasks)
    #: task → epochs of task distillation's (intermediate, prediction) stages over the training set plus its
    #: augmentations; a task not named here uses the settings table's student epochs for both
    stage_epochs: dict
    #: the task of the ablations: CoLA, where the paper's ablations (Tables 6–8, MNLI, MRPC and CoLA) move most
    ablation_task: str = "cola"
    p_t: float = 0.4
    k: int = 15


SETTINGS = {
    "smoke": Setting(layers=1, hidden=48, heads=12, ffn=96, tasks=("sst2",), n_aug=2, stage_epochs={},
                     ablation_task="sst2"),
    # one augmentation per sentence (per side of a pair), and about as many examples per stage as the settings
    # table gives the students that train on labels: SST-2 2 epochs of 67k sentences, 1 epoch of 67k + 67k
    "cpu": Setting(layers=2, hidden=156, heads=12, ffn=600, tasks=("sst2", "mrpc", "stsb", "cola"), n_aug=1,
                   stage_epochs={"sst2": (1, 1), "mrpc": (4, 3), "stsb": (3, 3), "cola": (4, 4)}),
    # the paper's code: 10 epochs of intermediate-layer distillation, then 3 of the prediction layer
    "gpu": Setting(layers=4, hidden=312, heads=12, ffn=1200, tasks=("sst2", "mrpc", "stsb", "cola"), n_aug=20,
                   stage_epochs={t: (10, 3) for t in ("sst2", "mrpc", "stsb", "cola")}),
}


def setting(profile: Profile) -> Setting:
    return SETTINGS[profile.name]


def student_model(profile: Profile) -> FreshBert:
    s = setting(profile)
    return FreshBert(profile.teacher, s.layers, s.hidden, s.heads, s.ffn)


def general(profile: Profile, seed: int = 0, **hparams) -> Experiment:
    """General distillation on the GLUE training sentences from the pre-trained checkpoint (no labels, no dev
    score, the last state kept): the start of every TinyBERT row of every task."""
    r = settings.get(profile, "text", "student")
    return Experiment(chapter=CHAPTER, profile=profile.name, task="text", method="tinybert",
                      model=student_model(profile), teacher=Pretrained(profile.teacher),
                      hparams={"stage": "intermediate", **hparams}, data=profile.data,
                      train_size=profile.train_size, dev_size=profile.dev_size, epochs=r.epochs, lr=r.lr,
                      batch_size=r.batch_size, max_length=r.max_length, seed=seed, evals_per_epoch=0, keep="last",
                      label="general distillation", keep_model=True)


def augmentation(profile: Profile) -> TinyBertAugment:
    s = setting(profile)
    return TinyBertAugment(masked_lm(profile), p_t=s.p_t, k=s.k, n_aug=s.n_aug)


def task_run(profile: Profile, task: str, method: str, seed: int, model, label: str, teacher_exp=None,
             augment=None, keep: str = "best", keep_model: bool = False, epochs: int | None = None,
             **hparams) -> Experiment:
    """A run on ``task`` with the settings table's student row (evaluated unless it keeps its last state)."""
    r = settings.get(profile, task, "student")
    return Experiment(chapter=CHAPTER, profile=profile.name, task=task, method=method, model=model,
                      teacher=teacher_exp, hparams=hparams, data=profile.data, train_size=profile.train_size,
                      dev_size=profile.dev_size, epochs=epochs or r.epochs, lr=r.lr, batch_size=r.batch_size,
                      max_length=r.max_length, seed=seed, evals_per_epoch=r.evals_per_epoch if keep == "best" else 0,
                      keep=keep, augment=augment, label=label, keep_model=keep_model)


def tinybert(profile: Profile, task: str, seed: int, start=None, augment=True, label: str = "TinyBERT",
             **hparams) -> Experiment:
    """Task distillation: the intermediate stage from ``start`` (general distillation by default), then the
    prediction stage from its weights, both on the training set plus the augmented sentences."""
    t, aug = teacher(profile, task), augmentation(profile) if augment else None
    first = intermediate(profile, task, seed, start, augment, label, **hparams)
    return task_run(profile, task, "tinybert", seed, FromRun(first), label, t, aug,
                    epochs=stage_epochs(profile, task)[1], stage="prediction",
                    **{k: v for k, v in hparams.items() if k == "pred"})


def intermediate(profile: Profile, task: str, seed: int, start=None, augment=True, label: str = "TinyBERT",
                 **hparams) -> Experiment:
    """Task distillation's first stage: the intermediate losses from ``start`` (general distillation by
    default) with the fine-tuned teacher, the last state kept for the second stage."""
    start = FromRun(general(profile)) if start is None else start
    aug = augmentation(profile) if augment else None
    return task_run(profile, task, "tinybert", seed, start, f"{label}: intermediate", teacher(profile, task), aug,
                    keep="last", keep_model=True, epochs=stage_epochs(profile, task)[0], stage="intermediate",
                    **hparams)


def stage_epochs(profile: Profile, task: str) -> tuple:
    """Epochs of task distillation's two stages on ``task`` (the intermediate layers, then the prediction)."""
    epochs = settings.get(profile, task, "student").epochs
    return setting(profile).stage_epochs.get(task, (epochs, epochs))


def plan(profile: Profile) -> dict:
    s = setting(profile)
    fresh, gd = student_model(profile), FromRun(general(profile))
    rows = {}
    for task in s.tasks:
        t = teacher(profile, task)
        each = lambda f: [f(seed) for seed in profile.seeds[:3]]  # noqa: E731
        rows[f"{task} · teacher"] = [t]
        rows[f"{task} · labels only, random init"] = each(lambda sd: task_run(profile, task, "finetune", sd, fresh,
                                                                             "labels, random init"))
        rows[f"{task} · labels only, from GD"] = each(lambda sd: task_run(profile, task, "finetune", sd, gd,
                                                                         "labels, from GD"))
        rows[f"{task} · KD, from GD"] = each(lambda sd: task_run(profile, task, "kd", sd, gd, "KD, from GD", t,
                                                                T=1.0, alpha=1.0))
        rows[f"{task} · TinyBERT"] = each(lambda sd: tinybert(profile, task, sd))
    main = s.ablation_task
    rows[f"ablation: {main} · no general distillation"] = [tinybert(profile, main, 0, start=fresh, label="no GD")]
    rows[f"ablation: {main} · no augmentation"] = [tinybert(profile, main, 0, augment=False, label="no DA")]
    for term in ("attn", "hidn", "embd"):
        rows[f"ablation: {main} · no L_{term}"] = [tinybert(profile, main, 0, label=f"no {term}", **{term: 0.0})]
    # without the prediction loss the second stage trains on the labels (the training set, not augmented);
    # its first stage is the TinyBERT row's own
    rows[f"ablation: {main} · no L_pred"] = [task_run(profile, main, "finetune", 0, FromRun(intermediate(profile, main, 0)),
                                                       "no pred", epochs=stage_epochs(profile, main)[1])]
    for mapping in ("top", "bottom"):
        rows[f"ablation: {main} · {mapping} layer map"] = [tinybert(profile, main, 0, label=f"{mapping} map",
                                                                    mapping=mapping)]
    return rows
