"""Chapter 8 — every method in one setting (plan).

The papers compare their method with a few others, each in its own setting, with single runs. Here one teacher
per task (the fine-tuned checkpoint), one student (a copy of the checkpoint's first layers, the larger student
of chapters 3 and 7) and the settings table's schedule serve every method, over seeds. Each method's runs are
built by its own chapter's functions, so a run that a chapter already made in this setting is the same
experiment, found by its config and reused, never trained twice.

Rows per task: the teacher, and for the student: labels only; label smoothing (ε = 0.1); KD (T = 2, α = 0.5);
PKD-Skip and PKD-Last; ALP-KD; TinyBERT's task distillation from the layer copy, with and without its
augmentation; Annealing KD; TAKD (an assistant halfway between student and teacher); MATE-KD.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import LayerCopy
from ..profiles import Profile
from . import alp, annealing, layerwise, mate, pkd, student, teacher, tinybert

CHAPTER = "compare"
EPSILON = 0.1  # label smoothing, as chapter 1's row
#: encoder depth of each teacher checkpoint (the assistant sits halfway between it and the student)
TEACHER_DEPTH = {"minilm-l6": 6, "bert-base-uncased": 12}
METHODS = ("labels only", "label smoothing", "KD", "PKD-Skip", "PKD-Last", "ALP-KD", "TinyBERT TD",
           "TinyBERT TD, no augmentation", "Annealing KD", "TAKD", "MATE-KD")


@dataclass(frozen=True)
class Setting:
    tasks: tuple
    seeds: int  # seeds per method and task
    depth: int | None = None  # the student's layers; None: the larger student of chapters 3 and 7


SETTINGS = {
    # CI: one seed, and the 1-layer student of the smoke runs of chapters 3, 5 and 6, whose runs it reuses
    "smoke": Setting(("sst2", "stsb"), seeds=1, depth=1),
    "cpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), seeds=3),
    "gpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), seeds=5),
}


def setting(profile: Profile) -> Setting:
    return SETTINGS[profile.name]


def depth(profile: Profile) -> int:
    """The student's depth: the larger student of chapters 3 and 7 (3 layers under a 6-layer teacher)."""
    return setting(profile).depth or layerwise.setting(profile).depths[0]


def assistant_layers(profile: Profile) -> tuple:
    top = TEACHER_DEPTH.get(profile.teacher, 6)
    return tuple(range((depth(profile) + top) // 2))


def row(task: str, name: str) -> str:
    return f"{task} · {name}"


def method_runs(profile: Profile, task: str, name: str) -> list:
    """The experiments (one per seed) of method ``name`` on ``task`` in this chapter's setting."""
    d, n = depth(profile), setting(profile).seeds
    layers, seeds = tuple(range(d)), profile.seeds[:n]
    layerwise_rows = {**pkd.kd_rows(profile, task, d), **pkd.pkd_rows(profile, task, d), **alp.alp_rows(profile, task, d)}
    by_name = {"labels only": "fine-tuned on labels", "KD": "vanilla KD", "PKD-Skip": "PKD-Skip",
               "PKD-Last": "PKD-Last", "ALP-KD": "ALP-KD"}
    if name in by_name:
        return layerwise_rows[layerwise.row(task, d, by_name[name])][:n]
    copy = LayerCopy(profile.teacher, layers)
    build = {
        "label smoothing": lambda sd: student(profile, CHAPTER, task, "label_smoothing", sd, label="label smoothing",
                                              layers=layers, epsilon=EPSILON),
        "TinyBERT TD": lambda sd: tinybert.tinybert(profile, task, sd, start=copy, label="TinyBERT TD"),
        "TinyBERT TD, no augmentation": lambda sd: tinybert.tinybert(profile, task, sd, start=copy, augment=False,
                                                                     label="TinyBERT TD, no DA"),
        "Annealing KD": lambda sd: annealing.annealed(profile, task, sd, layers=layers),
        "TAKD": lambda sd: annealing.takd(profile, task, sd, layers, assistant_layers(profile)),
        "MATE-KD": lambda sd: mate.mate_kd(profile, task, sd, layers),
    }
    return [build[name](sd) for sd in seeds]


def applies(name: str, task: str) -> bool:
    """Whether method ``name`` has a meaning on ``task``: label smoothing needs classes (not STS-B's scores)."""
    from ..data import get_task

    return not (name == "label smoothing" and get_task(task).is_regression)


def plan(profile: Profile) -> dict:
    rows = {}
    for task in setting(profile).tasks:
        rows[row(task, "teacher")] = [teacher(profile, task)]
        for name in METHODS:
            if applies(name, task):
                rows[row(task, name)] = method_runs(profile, task, name)
    return rows
