"""Chapter 1 — Hinton et al. 2015, *Distilling the Knowledge in a Neural Network*, on SST-2.

Rows: the teacher; a deliberately under-trained teacher; the student trained on labels only, with label
smoothing, with KD from the teacher and with KD from the under-trained teacher (all over the profile's
seeds); and a small grid over T and α on the first seed.
"""
from __future__ import annotations

from .. import papers
from . import seeds, teacher

TASK = "sst2"
T_MAIN, ALPHA_MAIN = 2.0, 0.5
T_GRID = (1.0, 4.0, 8.0)
ALPHA_GRID = (0.9, 1.0)
WEAK_FRACTION = 64  # the under-trained teacher sees 1/64 of the data for one epoch


def weak_teacher(profile):
    full = profile.train_size
    if full is None:  # the full SST-2 training set
        full = 67349
    return teacher(profile, TASK, train_size=max(64, full // WEAK_FRACTION), epochs=1,
                   label="under-trained teacher")


def plan(profile) -> dict:
    t = teacher(profile, TASK)
    weak = weak_teacher(profile)
    ch = "hinton"
    rows = {
        "teacher": [t],
        "under-trained teacher": [weak],
        "student, labels only": seeds(profile, ch, TASK, "finetune", label="labels only"),
        "student, label smoothing ε=0.1": seeds(profile, ch, TASK, "label_smoothing",
                                                label="label smoothing", epsilon=0.1),
        f"student, KD T={T_MAIN:g} α={ALPHA_MAIN:g}": seeds(profile, ch, TASK, "kd", t, label="KD",
                                                           T=T_MAIN, alpha=ALPHA_MAIN),
        "student, KD from the under-trained teacher": seeds(profile, ch, TASK, "kd", weak,
                                                             label="KD (weak teacher)", T=T_MAIN,
                                                             alpha=ALPHA_MAIN),
    }
    for T in T_GRID:
        rows[f"grid: KD T={T:g} α={ALPHA_MAIN:g}"] = seeds(profile, ch, TASK, "kd", t, n=1,
                                                          label=f"KD T={T:g}", T=T, alpha=ALPHA_MAIN)
    for a in ALPHA_GRID:
        rows[f"grid: KD T={T_MAIN:g} α={a:g}"] = seeds(profile, ch, TASK, "kd", t, n=1,
                                                      label=f"KD α={a:g}", T=T_MAIN, alpha=a)
    return rows


#: The paper's figures (MNIST test errors out of 10,000; a different task and model family from ours), from
#: kdlib/papers.yaml, where they are marked as recalled.
_MNIST = lambda row: papers.figure("hinton2015distilling", "mnist", row).value
PAPER = {
    "teacher": f"{_MNIST('large net (teacher)')} (large net)",
    "student, labels only": f"{_MNIST('small net, labels only')} (small net)",
    f"student, KD T={T_MAIN:g} α={ALPHA_MAIN:g}": f"{_MNIST('small net, distilled at T = 20')} (small net, T = 20)",
}
PAPER_SOURCE = papers.source("hinton2015distilling", "mnist")
PAPER_LABEL = "paper: MNIST test errors"
