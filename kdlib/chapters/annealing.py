"""Chapter 5 — Jafari et al. 2021, *Annealing Knowledge Distillation* (plan), with Mirzadeh et al. 2019's
teacher assistant (TAKD) as the other answer to the capacity gap.

The student is well below the teacher (2 of ``minilm-l6``'s 6 layers on the ``cpu`` profile); the
assistant sits between (4 layers). Rows per task, over seeds:

* labels only; vanilla KD (T = 2, α = 0.5, the book's KD row);
* TAKD: the teacher distils the assistant (KD), the assistant distils the student (KD);
* Annealing KD: stage I matches Φ(T)·z_t with T lowered from τ_max to 1 over the run (a run of method
  ``annealing``, its best state kept), stage II trains on the labels from stage I's best weights (a run that
  starts from a run, with its own optimiser and schedule).

τ_max is the paper's: 7 for SST-2 and MRPC, 14 for the others. The paper gives each value of T k epochs; the
settings table gives a run its epochs, and the schedule keeps the paper's shape in equal shares of the steps.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import FromRun
from ..profiles import Profile
from . import student, teacher

CHAPTER = "annealing"
T, ALPHA = 2.0, 0.5  # vanilla KD and TAKD's two steps: the book's KD row
TAU_MAX = {"sst2": 7, "mrpc": 7, "qnli": 7, "wnli": 7}  # the others: 14


def tau_max(task: str) -> int:
    return TAU_MAX.get(task, 14)


@dataclass(frozen=True)
class Setting:
    tasks: tuple
    student_layers: tuple
    assistant_layers: tuple


SETTINGS = {
    "smoke": Setting(("sst2", "stsb"), (0,), (0, 1)),
    "cpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), (0, 1), (0, 1, 2, 3)),
    "gpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), (0, 1), (0, 1, 2, 3)),
}


def setting(profile: Profile) -> Setting:
    return SETTINGS[profile.name]


def assistant(profile: Profile, task: str):
    """TAKD's assistant: a copy of the checkpoint's first layers, distilled from the teacher (seed 0, kept)."""
    s = setting(profile)
    return student(profile, CHAPTER, task, "kd", 0, teacher(profile, task), label="assistant (KD)",
                   layers=s.assistant_layers, T=T, alpha=ALPHA).replace(keep_model=True)


def annealed(profile: Profile, task: str, seed: int, label: str = "Annealing KD"):
    """Stage II (labels) from stage I's best weights; stage I anneals the teacher's logits."""
    s = setting(profile)
    stage1 = student(profile, CHAPTER, task, "annealing", seed, teacher(profile, task), label=f"{label}: stage I",
                     layers=s.student_layers, tau_max=tau_max(task)).replace(keep_model=True)
    return student(profile, CHAPTER, task, "finetune", seed, label=f"{label}: stage II",
                   layers=s.student_layers).replace(model=FromRun(stage1))


def plan(profile: Profile) -> dict:
    s = setting(profile)
    rows = {}
    for task in s.tasks:
        t, a = teacher(profile, task), assistant(profile, task)
        each = lambda f: [f(seed) for seed in profile.seeds[:3]]  # noqa: E731
        rows[f"{task} · teacher"] = [t]
        rows[f"{task} · assistant"] = [a]
        rows[f"{task} · labels only"] = each(lambda sd: student(profile, CHAPTER, task, "finetune", sd,
                                                               label="labels only", layers=s.student_layers))
        rows[f"{task} · KD"] = each(lambda sd: student(profile, CHAPTER, task, "kd", sd, t, label="KD",
                                                      layers=s.student_layers, T=T, alpha=ALPHA))
        rows[f"{task} · TAKD"] = each(lambda sd: student(profile, CHAPTER, task, "kd", sd, a, label="TAKD",
                                                        layers=s.student_layers, T=T, alpha=ALPHA))
        rows[f"{task} · Annealing KD"] = each(lambda sd: annealed(profile, task, sd))
    return rows
