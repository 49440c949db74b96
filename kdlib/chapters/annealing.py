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
from . import FLOOR_CAPTION, baselines, chain, floor, run_minutes, student, teacher

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
    # a 6-layer teacher (no hub): the cpu setting's depths
    "gpu": Setting(("sst2", "mrpc", "stsb", "cola", "rte"), (0, 1), (0, 1, 2, 3)),
}
#: the paper's BERT-small setting under BERT-base: its student has 4 of BERT-large's 24 layers (2 of 12 here) and
#: its assistant, BERT-base, half its teacher's depth (6 of 12 here)
GPU_BERT_BASE = Setting(("sst2", "mrpc", "stsb", "cola", "rte"), (0, 1), (0, 1, 2, 3, 4, 5))


def setting(profile: Profile) -> Setting:
    if profile.name == "gpu" and profile.teacher == "bert-base-uncased":
        return GPU_BERT_BASE
    return SETTINGS[profile.name]


def assistant(profile: Profile, task: str, layers: tuple | None = None):
    """TAKD's assistant: a copy of the checkpoint's first layers (the setting's, or ``layers``), distilled from
    the teacher (seed 0, kept)."""
    layers = setting(profile).assistant_layers if layers is None else tuple(layers)
    return student(profile, CHAPTER, task, "kd", 0, teacher(profile, task), label="assistant (KD)",
                   layers=layers, T=T, alpha=ALPHA).replace(keep_model=True)


def takd(profile: Profile, task: str, seed: int, layers: tuple | None = None, assistant_layers: tuple | None = None):
    """TAKD: the student (the setting's layers, or ``layers``) distilled by KD from the assistant."""
    layers = setting(profile).student_layers if layers is None else tuple(layers)
    return student(profile, CHAPTER, task, "kd", seed, assistant(profile, task, assistant_layers), label="TAKD",
                   layers=layers, T=T, alpha=ALPHA)


def annealed(profile: Profile, task: str, seed: int, label: str = "Annealing KD", layers: tuple | None = None):
    """Stage II (labels) from stage I's best weights; stage I anneals the teacher's logits. The student copies
    the setting's layers, or ``layers``."""
    layers = setting(profile).student_layers if layers is None else tuple(layers)
    stage1 = student(profile, CHAPTER, task, "annealing", seed, teacher(profile, task), label=f"{label}: stage I",
                     layers=layers, tau_max=tau_max(task)).replace(keep_model=True)
    return student(profile, CHAPTER, task, "finetune", seed, label=f"{label}: stage II",
                   layers=layers).replace(model=FromRun(stage1))


def plan(profile: Profile) -> dict:
    s = setting(profile)
    rows = {}
    for task in s.tasks:
        each = lambda f: [f(seed) for seed in profile.seeds[:3]]  # noqa: E731
        base = baselines(profile, CHAPTER, task, s.student_layers, T, ALPHA)
        rows[f"{task} · teacher"] = base["teacher"]
        rows[f"{task} · assistant"] = [assistant(profile, task)]
        rows[f"{task} · labels only"], rows[f"{task} · KD"] = base["labels only"], base["KD"]
        rows[f"{task} · TAKD"] = each(lambda sd: takd(profile, task, sd))
        rows[f"{task} · Annealing KD"] = each(lambda sd: annealed(profile, task, sd))
    return rows


# ---------------------------------------------------------------------------------------------------
# What the page shows: each task against the paper, the gap to the teacher, the two stages, the cost
# ---------------------------------------------------------------------------------------------------
NAMES = ("teacher", "assistant", "labels only", "KD", "TAKD", "Annealing KD")
STUDENTS = NAMES[2:]
#: the paper's BERT-small table (BERT-large teacher, BERT-base assistant, a 4-layer student): its column for
#: each task and its row for each of ours
PAPER = ("jafari2021annealing", "dev_bert_small")
PAPER_COLUMN = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "rte": "RTE"}
PAPER_ROW = {"teacher": "teacher", "KD": "vanilla KD", "TAKD": "TAKD", "Annealing KD": "Annealing KD"}


def row(task: str, name: str) -> str:
    return f"{task} · {name}"


def stage_one(exp):
    """Stage I of an Annealing KD row's experiment (the run its stage II starts from)."""
    return exp.model.run


def chain_minutes(plan: dict, task: str, name: str) -> float:
    """Wall time of one run of a row, in minutes, mean over seeds, counting stage I for Annealing KD (the
    assistant that TAKD's students share is a run of its own row)."""
    from statistics import mean

    return mean(run_minutes(e) for e in plan[row(task, name)])


def paper_figure(task: str, name: str) -> str | None:
    """The paper's BERT-small figure for one of our rows on ``task`` (as printed), or None where it has none."""
    from .. import papers

    col = PAPER_COLUMN.get(task)
    return papers.figure(*PAPER, PAPER_ROW[name], col).value if col and name in PAPER_ROW else None


def table(results: dict, plan: dict, profile: Profile, task: str, metric: str | None = None):
    """Dev score of each row on ``task`` (mean ± std over seeds), its distance to the teacher, and the paper's
    BERT-small figures beside, as a captioned :class:`~kdlib.report.Table`."""
    from .. import papers, report
    from ..data import get_task

    last = floor(profile, task)
    df = report.against_teacher(results, task, NAMES, row, paper_figure, metric, last)
    df["min / run"] = [f"{chain_minutes(plan, task, n):.1f}" for n in NAMES] + ["–"] * (last is not None)
    labels = results[row(task, "labels only")]
    metric = metric or report.main_metric(labels)
    s = setting(profile)
    checkpoint = results[row(task, "teacher")][0]["config"]["model"]["checkpoint"]
    what = (f"{get_task(task).folder} dev {metric}: a {len(s.student_layers)}-layer student under the fine-tuned "
            f"{checkpoint} teacher, trained four ways (the assistant: {len(s.assistant_layers)} layers, "
            f"τ_max = {tau_max(task)})")
    caption = report.caption(labels, what) + (
        " Annealing KD's min / run counts both stages; TAKD's does not count its assistant, made once per task."
        + (FLOOR_CAPTION if last else ""))
    if task in PAPER_COLUMN:
        caption += (f" Paper: {papers.source(*PAPER)}, BERT-large teacher, BERT-base assistant, BERT-small "
                    "(4-layer) student.")
    return report.Table(df, caption, key=f"annealing-{task}-{metric}")


def paper_gap(task: str, name: str) -> float | None:
    """The paper's teacher − student for one of our rows on ``task`` (BERT-small under BERT-large), or None."""
    theirs, ref = paper_figure(task, name), paper_figure(task, "teacher")
    return None if theirs is None or ref is None else float(ref) - float(theirs)


def plot_gaps(results: dict, profile: Profile, ax=None):
    """Bars: how far each student row stays below the teacher on each task (± 1 std over seeds); crosses: the
    paper's gap for the same row (BERT-small under BERT-large)."""
    from .. import report

    values = report.gaps_to_teacher(results, setting(profile).tasks, STUDENTS, row, paper_gap)
    return report.plot_task_bars(values, ax, "teacher − student (points of each task's metric)",
                                 "paper (BERT-small)")


def stages(results: dict, plan: dict, task: str) -> dict:
    """The two runs behind the Annealing KD row on ``task``, over its seeds: ``{stage name: [records]}``."""
    from ..runner import run

    exps = plan[row(task, "Annealing KD")]
    return {"stage I (annealed logits)": [run(stage_one(e)) for e in exps],
            "stage II (labels)": results[row(task, "Annealing KD")]}


def differences(results: dict, profile: Profile, metric: str | None = None):
    """Annealing KD and TAKD against KD, and Annealing KD against TAKD, per task (Welch's t-test over seeds)."""
    from .. import report

    pairs = (("Annealing KD", "KD"), ("TAKD", "KD"), ("Annealing KD", "TAKD"), ("KD", "labels only"))
    df = report.task_differences(results, setting(profile).tasks, pairs, row, metric)
    n = len(results[row(setting(profile).tasks[0], "KD")])
    return report.Table(df, f"Differences between rows on each task's dev metric: the mean over {n} seeds of one row "
                        "minus the other's, and Welch's p-value (under 0.05 with so few seeds: weak evidence, not proof)",
                        key="annealing-differences")


def cost_table(plan: dict, profile: Profile):
    """Wall time of one run of each row on each task (minutes, mean over seeds; Annealing KD: both stages), and
    where the runs were made."""
    import pandas as pd

    from .. import report
    from ..data import get_task

    tasks = setting(profile).tasks
    df = pd.DataFrame({get_task(t).folder: {n: f"{chain_minutes(plan, t, n):.1f}" for n in NAMES} for t in tasks})
    timed = [r for t in tasks for n in NAMES for e in plan[row(t, n)] for r in chain(e)]
    return report.Table(df, f"Wall time of one run of each row (minutes, mean over seeds; Annealing KD: both stages; "
                        f"TAKD's students without their shared assistant, which is a row of its own), on "
                        f"{report.ran_on(timed)}", key="annealing-cost")


def stage_table(results: dict, plan: dict, profile: Profile):
    """What each stage of Annealing KD leaves on each task: the best dev score of stage I (annealed logits) and of
    stage II (labels, from stage I's best weights), mean ± std over seeds, and what stage II changed, seed by seed
    (the same seed's two runs are paired)."""
    import pandas as pd

    from .. import report
    from ..data import get_task

    out = {}
    for t in setting(profile).tasks:
        one, two = stages(results, plan, t).values()
        metric = report.main_metric(two)
        a, b = report.scores(one, metric), report.scores(two, metric)
        change = [y - x for x, y in zip(a, b)]
        out[f"{get_task(t).folder} ({metric})"] = {
            "stage I": report.mean_std(a, 2), "stage II": report.mean_std(b, 2),
            "stage II − stage I": report.mean_std(change, 2),
            "seeds where stage II is lower": f"{sum(c < 0 for c in change)} of {len(change)}"}
    return report.Table(pd.DataFrame(out).T, f"The best dev score of each stage of the Annealing KD students (mean ± "
                        f"std over {len(change)} seeds) and what stage II changed, each seed's stage II against its own "
                        "stage I", key="annealing-stages")
