"""Chapter 6 — Rashid et al. 2021, *MATE-KD: Masked Adversarial TExt, a Companion to Knowledge Distillation*
(plan).

The same 2-layer student as chapter 5, over seeds, per task: labels only; vanilla KD (the book's KD row);
KD on a transfer set of masked-LM rewrites without an adversary (TinyBERT's augmenter with kdlib's masked
LM: the paper's "TinyBERT aug + KD" row); MATE-KD, whose generator starts from the same masked LM and
learns to rewrite sentences where the student and the teacher disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import TinyBertAugment
from ..profiles import Profile
from . import masked_lm, student, teacher

CHAPTER = "mate"
T, ALPHA = 2.0, 0.5  # the KD rows: the book's KD row


@dataclass(frozen=True)
class Setting:
    tasks: tuple
    student_layers: tuple
    n_aug: int  # rewrites per sentence in the augmentation baseline
    generator_steps: int = 10  # the official code's rhythm
    student_steps: int = 100


SETTINGS = {
    "smoke": Setting(("sst2",), (0,), n_aug=2, generator_steps=1, student_steps=2),
    "cpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), (0, 1), n_aug=2),
    "gpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), (0, 1), n_aug=20),
}


def setting(profile: Profile) -> Setting:
    return SETTINGS[profile.name]


def plan(profile: Profile) -> dict:
    s, mlm = setting(profile), masked_lm(profile)
    rows = {}
    for task in s.tasks:
        t = teacher(profile, task)
        each = lambda f: [f(seed) for seed in profile.seeds[:3]]  # noqa: E731
        kd = lambda sd, label: student(profile, CHAPTER, task, "kd", sd, t, label=label,  # noqa: E731
                                       layers=s.student_layers, T=T, alpha=ALPHA)
        rows[f"{task} · teacher"] = [t]
        rows[f"{task} · labels only"] = each(lambda sd: student(profile, CHAPTER, task, "finetune", sd,
                                                               label="labels only", layers=s.student_layers))
        rows[f"{task} · KD"] = each(lambda sd: kd(sd, "KD"))
        rows[f"{task} · KD on masked-LM rewrites"] = each(lambda sd: kd(sd, "KD + rewrites").replace(
            augment=TinyBertAugment(mlm, n_aug=s.n_aug)))
        rows[f"{task} · MATE-KD"] = each(lambda sd: student(
            profile, CHAPTER, task, "mate", sd, t, label="MATE-KD", layers=s.student_layers, generator=mlm,
            generator_steps=s.generator_steps, student_steps=s.student_steps))
    return rows
