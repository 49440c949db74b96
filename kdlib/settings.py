"""The settings table: how long and how fast every run of a task trains, per profile.

One row per (profile, task) and role (the teacher's fine-tuning, a student's training), shared by every
chapter, so that a KD row of one chapter and a labels-only row of another are trained alike and their
records are the same records. A chapter whose method needs other settings (the BiLSTM's AdaDelta, say)
says so beside the table.

The ``cpu`` rows are sized so that a student's dev curve has flattened before the run ends: the small
pair tasks (MRPC, STS-B, RTE, CoLA) get many epochs, because one epoch of them is only 100–250 steps.
:func:`kdlib.report.plateau` measures, on the stored records, how much the last quarter of each curve
still gained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import check_choice


@dataclass(frozen=True)
class RunSettings:
    epochs: float
    lr: float
    batch_size: int
    max_length: int
    evals_per_epoch: int

    def as_dict(self) -> dict:
        return asdict(self)


R = RunSettings
#: a task's roles: the teacher's fine-tuning, a student's training; the label-free ``text`` task has the
#: fitting of kdlib's masked LM (:mod:`kdlib.mlm`) and general distillation (a student, no evaluation)
ROLES = ("teacher", "student", "masked_lm")

#: (profile, task) -> {role: RunSettings}. The gpu rows are the papers' (BERT-base: 3–4 epochs, lr 2e-5 for
#: the teacher and 5e-5 for students, 128 tokens); a gpu run without the hub uses minilm-l6 with the
#: cpu learning rates (see :func:`get`).
TABLE = {
    # CI: synthetic data, a few hundred examples; the chapters' code paths at the least time (most of CI is these
    # runs): students 1 epoch (12 steps) with two dev evaluations (two points on every curve), the teacher 2 epochs
    ("smoke", "sst2"): {"teacher": R(2, 1e-4, 32, 32, 1), "student": R(1, 5e-4, 32, 32, 2)},
    ("smoke", "mrpc"): {"teacher": R(2, 1e-4, 32, 32, 1), "student": R(1, 5e-4, 32, 32, 2)},
    ("smoke", "stsb"): {"teacher": R(2, 1e-4, 32, 32, 1), "student": R(1, 5e-4, 32, 32, 2)},
    ("smoke", "cola"): {"teacher": R(2, 1e-4, 32, 32, 1), "student": R(1, 5e-4, 32, 32, 2)},
    ("smoke", "rte"): {"teacher": R(2, 1e-4, 32, 32, 1), "student": R(1, 5e-4, 32, 32, 2)},
    ("smoke", "text"): {"masked_lm": R(1, 1e-3, 32, 32, 1), "student": R(2, 5e-4, 32, 32, 0)},
    # 2 CPU cores. SST-2: 67k sentences, ~1,050 steps an epoch at batch 64; its students still gained ~0.6
    # points in the last quarter of one epoch, so they get two. The small tasks: ~1,000+ student steps.
    ("cpu", "sst2"): {"teacher": R(1, 5e-5, 32, 64, 4), "student": R(2, 1e-4, 64, 64, 4)},
    ("cpu", "mrpc"): {"teacher": R(3, 5e-5, 32, 128, 4), "student": R(10, 2e-4, 32, 128, 2)},
    ("cpu", "stsb"): {"teacher": R(3, 5e-5, 32, 128, 4), "student": R(8, 2e-4, 32, 128, 2)},
    ("cpu", "cola"): {"teacher": R(3, 5e-5, 32, 64, 4), "student": R(8, 2e-4, 32, 64, 2)},
    ("cpu", "rte"): {"teacher": R(4, 5e-5, 32, 128, 4), "student": R(12, 2e-4, 32, 128, 2)},
    # the GLUE training sentences (98,544; 1.1M words against TinyBERT's 2.5B): the masked LM's head and
    # encoder, 1 epoch; general distillation, 3 epochs (as the paper's), the last state kept
    ("cpu", "text"): {"masked_lm": R(1, 5e-4, 64, 64, 4), "student": R(3, 5e-4, 64, 64, 0)},
    ("gpu", "sst2"): {"teacher": R(3, 2e-5, 32, 128, 4), "student": R(3, 5e-5, 32, 128, 4)},
    ("gpu", "mrpc"): {"teacher": R(4, 2e-5, 32, 128, 4), "student": R(4, 5e-5, 32, 128, 4)},
    ("gpu", "stsb"): {"teacher": R(4, 2e-5, 32, 128, 4), "student": R(4, 5e-5, 32, 128, 4)},
    ("gpu", "cola"): {"teacher": R(4, 2e-5, 32, 128, 4), "student": R(4, 5e-5, 32, 128, 4)},
    ("gpu", "rte"): {"teacher": R(4, 2e-5, 32, 128, 4), "student": R(4, 5e-5, 32, 128, 4)},
    # TinyBERT's general distillation: 3 epochs, batch 256, lr 1e-4, 128 tokens
    ("gpu", "text"): {"masked_lm": R(3, 5e-4, 64, 128, 4), "student": R(3, 1e-4, 256, 128, 0)},
}


def get(profile, task: str, role: str) -> RunSettings:
    """The settings of ``role`` for ``task`` under ``profile`` (a :class:`~kdlib.profiles.Profile` or name)."""
    from dataclasses import replace

    name = getattr(profile, "name", profile)
    check_choice("role", role, ROLES)
    tasks = sorted(t for p, t in TABLE if p == name)
    check_choice(f"task for the {name} profile's settings", task, tasks)
    check_choice(f"role for task {task!r}", role, TABLE[(name, task)])
    s = TABLE[(name, task)][role]
    if name == "gpu" and getattr(profile, "teacher", "bert-base-uncased") != "bert-base-uncased":
        s = replace(s, lr=TABLE[("cpu", task)][role].lr)  # a small teacher and students learn faster
    return s


def table(profile) -> "pd.DataFrame":  # noqa: F821
    """The profile's settings as a table (rows: task and role), for a chapter to show."""
    import pandas as pd

    name = getattr(profile, "name", profile)
    rows = [{"task": t, "role": role, **get(profile, t, role).as_dict()}
            for (p, t) in TABLE if p == name for role in ROLES if role in TABLE[(p, t)]]
    return pd.DataFrame(rows).set_index(["task", "role"])
