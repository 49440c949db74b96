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
from . import FLOOR_CAPTION, baselines, floor, masked_lm, student, teacher

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


def rewrites_kd(profile: Profile, task: str, seed: int, layers: tuple | None = None):
    """KD on the training set plus masked-LM rewrites (TinyBERT's augmenter, no adversary). The rewrites carry no
    label, as in TinyBERT: the rewriting may change a sentence's meaning, so only the teacher's term trains on them,
    as only the teacher's terms train on MATE-KD's rewrites; the hard-label term reads the original examples."""
    s = setting(profile)
    layers = s.student_layers if layers is None else tuple(layers)
    return student(profile, CHAPTER, task, "kd", seed, teacher(profile, task), label="KD + rewrites", layers=layers,
                   T=T, alpha=ALPHA).replace(augment=TinyBertAugment(masked_lm(profile), n_aug=s.n_aug, labels="none"))


def mate_kd(profile: Profile, task: str, seed: int, layers: tuple | None = None):
    """MATE-KD, its generator starting from kdlib's masked LM."""
    s = setting(profile)
    layers = s.student_layers if layers is None else tuple(layers)
    return student(profile, CHAPTER, task, "mate", seed, teacher(profile, task), label="MATE-KD", layers=layers,
                   generator=masked_lm(profile), generator_steps=s.generator_steps, student_steps=s.student_steps)


def plan(profile: Profile) -> dict:
    s = setting(profile)
    rows = {}
    for task in s.tasks:
        each = lambda f: [f(seed) for seed in profile.seeds[:3]]  # noqa: E731
        rows.update({f"{task} · {k}": v for k, v in baselines(profile, CHAPTER, task, s.student_layers, T, ALPHA).items()})
        rows[f"{task} · KD on masked-LM rewrites"] = each(lambda sd: rewrites_kd(profile, task, sd))
        rows[f"{task} · MATE-KD"] = each(lambda sd: mate_kd(profile, task, sd))
    return rows


# ---------------------------------------------------------------------------------------------------
# What the page shows: each task against the paper, what the generator writes, the divergence it finds, the cost
# ---------------------------------------------------------------------------------------------------
NAMES = ("teacher", "labels only", "KD", "KD on masked-LM rewrites", "MATE-KD")
STUDENTS = NAMES[1:]
#: the paper's table (RoBERTa-large teacher, DistilRoBERTa student): its column for each task, its row for each of ours
PAPER = ("rashid2021matekd", "dev_distilroberta")
PAPER_COLUMN = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "rte": "RTE"}
PAPER_ROW = {"teacher": "teacher", "labels only": "student", "KD": "student + KD",
             "KD on masked-LM rewrites": "student + TinyBERT aug + KD", "MATE-KD": "student + MATE-KD"}


def row(task: str, name: str) -> str:
    return f"{task} · {name}"


def paper_figure(task: str, name: str) -> str | None:
    """The paper's figure for one of our rows on ``task`` (as printed), or None where it has none."""
    from .. import papers

    col = PAPER_COLUMN.get(task)
    return papers.figure(*PAPER, PAPER_ROW[name], col).value if col and name in PAPER_ROW else None


def table(results: dict, profile: Profile, task: str, metric: str | None = None):
    """Dev score of each row on ``task`` (mean ± std over seeds), its distance to the teacher, and the paper's
    figures beside, as a captioned :class:`~kdlib.report.Table`."""
    from .. import papers, report
    from ..data import get_task

    last = floor(profile, task)
    df = report.against_teacher(results, task, NAMES, row, paper_figure, metric, last)
    labels = results[row(task, "labels only")]
    metric = metric or report.main_metric(labels)
    s = setting(profile)
    checkpoint = results[row(task, "teacher")][0]["config"]["model"]["checkpoint"]
    what = (f"{get_task(task).folder} dev {metric}: a {len(s.student_layers)}-layer student under the fine-tuned "
            f"{checkpoint} teacher, trained four ways")
    caption = report.caption(labels, what) + (
        f" The rewrites: {s.n_aug} per training example, TinyBERT's augmenter with kdlib's masked LM, with no label "
        f"(the KD term alone trains on them). MATE-KD: "
        f"{s.generator_steps} generator step(s), then {s.student_steps} student step(s), in turn."
        + (FLOOR_CAPTION if last else ""))
    if task in PAPER_COLUMN:
        caption += f" Paper: {papers.source(*PAPER)}, RoBERTa-large teacher, DistilRoBERTa (6-layer) student."
    return report.Table(df, caption, key=f"mate-{task}-{metric}")


def paper_gap(task: str, name: str) -> float | None:
    theirs, ref = paper_figure(task, name), paper_figure(task, "teacher")
    return None if theirs is None or ref is None else float(ref) - float(theirs)


def plot_gaps(results: dict, profile: Profile, ax=None):
    """Bars: how far each student row stays below the teacher on each task (± 1 std over seeds); crosses: the
    paper's gap for the same row (DistilRoBERTa under RoBERTa-large)."""
    from .. import report

    values = report.gaps_to_teacher(results, setting(profile).tasks, STUDENTS, row, paper_gap)
    return report.plot_task_bars(values, ax, "teacher − student (points of each task's metric)",
                                 "paper (DistilRoBERTa)")


def differences(results: dict, profile: Profile, metric: str | None = None):
    """MATE-KD and the rewrites against KD, MATE-KD against the rewrites, KD against labels (Welch over seeds)."""
    from .. import report

    pairs = (("MATE-KD", "KD"), ("KD on masked-LM rewrites", "KD"), ("MATE-KD", "KD on masked-LM rewrites"),
             ("KD", "labels only"))
    df = report.task_differences(results, setting(profile).tasks, pairs, row, metric)
    df.columns = ["MATE-KD − KD", "rewrites − KD", "MATE-KD − rewrites", "KD − labels only"]
    n = len(results[row(setting(profile).tasks[0], "KD")])
    return report.Table(df, f"Differences between rows on each task's dev metric: the mean over {n} seeds of one row "
                        "minus the other's, and Welch's p-value (under 0.05 with so few seeds: weak evidence, not proof)",
                        key="mate-differences")


def rewrites_table(results: dict, task: str, seed: int = 0, n: int = 6):
    """What the generator writes at the end of a MATE-KD run: dev examples beside their rewrites, with the
    teacher's and the student's outputs on each (the record's ``examples``)."""
    import pandas as pd

    from .. import report
    from ..data import get_task

    rec = results[row(task, "MATE-KD")][seed]
    ex = rec["examples"]
    regression = get_task(task).is_regression
    show = (lambda v: f"{v[0]:.2f}") if regression else (lambda v: f"{v[-1]:.2f}")
    rows = [{"dev #": e["dev_index"], "label": e["label"], "clean": e["clean"], "rewritten": e["rewritten"],
             "teacher": f"{show(e['teacher_clean'])} → {show(e['teacher_rewritten'])}",
             "student": f"{show(e['student_clean'])} → {show(e['student_rewritten'])}"} for e in ex["examples"][:n]]
    what = "score" if regression else f"p(class {len(ex['examples'][0]['teacher_clean']) - 1})"
    return report.Table(pd.DataFrame(rows),
                        f"{get_task(task).folder} dev examples rewritten once by MATE-KD's generator as training left it "
                        f"(seed {rec['config']['seed']}; {ex['mask_rate']:.0%} of tokens masked and sampled), with the "
                        f"teacher's and the student's {what} on the clean → the rewritten text. Over these "
                        f"{len(ex['examples'])} examples the divergence T²·KL(teacher ‖ student) is {ex['kl_clean']:.3f} "
                        f"on the clean and {ex['kl_rewritten']:.3f} on the rewritten text.", key=f"mate-rewrites-{task}")


def plot_divergence(results: dict, profile: Profile, ax=None):
    """The divergence T²·KL(teacher ‖ student) on the generator's rewrites through each MATE-KD run (the
    records' loss points; mean over seeds), one line per task."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..data import get_task

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    for task in setting(profile).tasks:
        curves = []
        for rec in results[row(task, "MATE-KD")]:
            pts = [p for p in rec["losses"] if "divergence" in p]
            last = max(p["step"] for p in pts)
            curves.append(np.interp(np.linspace(0, 1, 50), [p["step"] / last for p in pts],
                                    [p["divergence"] for p in pts]))
        ax.plot(np.linspace(0, 1, 50), np.mean(curves, axis=0), label=get_task(task).folder)
    ax.set(xlabel="share of the run's steps", ylabel="T²·KL(teacher ‖ student) on rewrites")
    low, high = ax.get_ylim()
    if low > 0 and high / low > 20:  # several orders of magnitude: a log scale
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def cost_table(results: dict, profile: Profile):
    """Seconds per optimiser step and minutes per run of each student row on each task (mean over seeds)."""
    import numpy as np
    import pandas as pd

    from .. import report
    from ..data import get_task

    def cells(recs, task, name):
        steps = [r["history"][-1]["step"] for r in recs]
        walls = [r["wall_time_s"] for r in recs]
        return {"s / step": f"{np.mean(walls) / np.mean(steps):.3f}", "min / run": f"{np.mean(walls) / 60:.1f}",
                "train examples": f"{recs[0]['n_train']:,}"}

    df = pd.concat({get_task(t).folder: pd.DataFrame({n: cells(results[row(t, n)], t, n) for n in STUDENTS}).T
                    for t in setting(profile).tasks}, names=["task", "row"])
    where = report.ran_on([r for t in setting(profile).tasks for n in STUDENTS for r in results[row(t, n)]])
    return report.Table(df, f"What each row costs, on {where}: seconds per optimiser step (MATE-KD: generator and "
                        "student steps together) and minutes per run; the rewrites' own making is not counted",
                        key="mate-cost")
