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

from ..config import LayerCopy, Pretrained
from ..profiles import Profile
from . import alp, annealing, chain, floor, layerwise, mate, peak_memory_mb, pkd, run_minutes, student, teacher, \
    teacher_passes, tinybert

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


# ---------------------------------------------------------------------------------------------------
# What the page shows: the table over tasks, the ranks and their test, each method against KD, the cost
# ---------------------------------------------------------------------------------------------------
def present(results: dict, profile: Profile) -> list:
    """The methods with records on every task of the setting (label smoothing has none on STS-B)."""
    return [m for m in METHODS if all(row(t, m) in results for t in setting(profile).tasks)]


def means(results: dict, profile: Profile, methods: list | None = None):
    """Mean dev score over seeds, tasks (rows, GLUE names) × methods (columns), each task in its own metric."""
    import numpy as np
    import pandas as pd

    from .. import report
    from ..data import get_task

    methods = methods or [m for m in METHODS if any(row(t, m) in results for t in setting(profile).tasks)]
    return pd.DataFrame({m: [float(np.mean(report.scores(results[row(t, m)]))) if row(t, m) in results else np.nan
                             for t in setting(profile).tasks] for m in methods},
                        index=[get_task(t).folder for t in setting(profile).tasks])


def table(results: dict, profile: Profile):
    """Methods (rows) × tasks: mean ± std over seeds and the rank within the task, the average score and the
    average rank over the tasks where every method has a score."""
    import pandas as pd

    from .. import report, stats
    from ..data import get_task

    tasks = setting(profile).tasks
    full = present(results, profile)
    ranks = stats.ranks(means(results, profile, full).to_numpy())  # tasks × methods
    out = {}
    for m in METHODS:
        cells = {}
        for t in tasks:
            recs = results.get(row(t, m))
            rank = f" ({ranks[tasks.index(t), full.index(m)]:g})" if m in full else ""
            cells[get_task(t).folder] = report.mean_std(report.scores(recs)) + rank if recs else "–"
        avg = means(results, profile, [m])[m]
        cells["average"] = f"{avg.mean():.1f}" if avg.notna().all() else "–"
        cells["average rank"] = f"{ranks[:, full.index(m)].mean():.2f}" if m in full else "–"
        out[m] = cells
    teachers = {get_task(t).folder: f"{report.scores(results[row(t, 'teacher')])[0]:.1f}" for t in tasks}
    floors = {get_task(t).folder: f"{f[1][report.main_metric(results[row(t, 'KD')])]:.1f}"
              for t, f in ((t, floor(profile, t)) for t in tasks) if f is not None}
    df = pd.DataFrame(out).T
    first = results[row(tasks[0], "labels only")]
    metrics = ", ".join(f"{get_task(t).folder} {report.main_metric(results[row(t, 'KD')])}" for t in tasks)

    def listed(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    always = f" The training set's majority class, predicted for every input: {listed(floors)}." if floors else ""
    return report.Table(df, f"Every method on one {depth(profile)}-layer student: dev score per task ({metrics}), mean ± "
                        f"std over {len(first)} seed(s), with the method's rank on the task in brackets (1 = best), the "
                        f"average over tasks and the average rank (over the methods that run on every task). Teachers: "
                        f"{listed(teachers)}.{always} Setting: {report.describe_setting(first, width=None)}.",
                        key="compare-table")


def ranking(results: dict, profile: Profile, alpha: float = 0.05) -> dict:
    """Friedman's test over tasks on the methods present on every task, and Nemenyi's critical difference."""
    from .. import stats

    m = means(results, profile, present(results, profile))
    got = stats.friedman(m.to_numpy())
    return {**got, "names": list(m.columns), "alpha": alpha,
            "cd": stats.critical_difference(len(m.columns), len(m.index), alpha)}


def against_kd(results: dict, profile: Profile):
    """Each method minus KD on each task (mean over seeds) with Welch's p, and Holm's correction over every
    (method, task) comparison in the table."""
    import pandas as pd

    from .. import report, stats
    from ..data import get_task

    cells, ps = [], []
    for m in METHODS:
        if m == "KD":
            continue
        for t in setting(profile).tasks:
            if row(t, m) in results:
                diff, p = report.welch(results[row(t, m)], results[row(t, "KD")])
                cells.append((m, get_task(t).folder, diff, p))
                if p is not None:
                    ps.append(p)
    holm = iter(stats.holm(ps)) if ps else iter(())
    out = {}
    for m, task, diff, p in cells:
        text = f"{diff:+.2f}" + (f" ({report.p_value(next(holm))})" if p is not None else "")
        out.setdefault(m, {})[task] = text
    df = pd.DataFrame(out).T.fillna("–")
    tested = (f"with Welch's p-value corrected by Holm's method for the {len(ps)} comparisons of the table" if ps
              else "no p-values: a test needs at least two seeds a side")
    return report.Table(df, f"Each method minus KD on each task's dev metric (mean over seeds), {tested}",
                        key="compare-against-kd")


def cost(results: dict, plan: dict, profile: Profile):
    """Per method: minutes per run on each task (mean over seeds; every stage of a chain counted; a teacher or
    assistant shared by several runs is not), the teacher's forward passes per training example, and the peak
    memory of its runs."""
    import numpy as np
    import pandas as pd

    from .. import report
    from ..data import get_task

    tasks = setting(profile).tasks

    def over(m, f):
        vals = [f(e) for t in tasks if row(t, m) in plan for e in plan[row(t, m)]]
        return vals if vals and None not in vals else None

    df = pd.DataFrame({get_task(t).folder: {m: f"{np.mean([run_minutes(e) for e in plan[row(t, m)]]):.1f}"
                                            if row(t, m) in plan else "–" for m in METHODS} for t in tasks})
    passes = {m: over(m, teacher_passes) for m in METHODS}
    df["teacher passes / example"] = [f"{np.mean(passes[m]):.2f}" if passes[m] else "–" for m in METHODS]
    peaks = {m: over(m, peak_memory_mb) for m in METHODS}
    df["peak memory (MB)"] = [f"{max(peaks[m]):.0f}" if peaks[m] else "–" for m in METHODS]
    where = report.ran_on([r for t in tasks for m in METHODS if row(t, m) in plan for e in plan[row(t, m)]
                           for r in chain(e)])  # the timed runs
    return report.Table(df, f"The cost of each method: minutes per run on each task (mean over seeds, every stage of "
                        f"a run that starts from another counted), the teacher's forward passes per training example "
                        f"(1 for a cache made once and shared; live calls counted per batch; mean over runs), and the "
                        f"highest peak memory of its runs (the process's resident set on a CPU; – where a record "
                        f"predates its measurement), on {where}", key="compare-cost")


def plot_score_cost(results: dict, plan: dict, profile: Profile, ax=None):
    """Average score over tasks against minutes per run (mean over tasks), one point per method present on
    every task."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    full = present(results, profile)
    avg = means(results, profile, full).mean()
    tasks = setting(profile).tasks
    for i, m in enumerate(full):
        minutes = np.mean([np.mean([run_minutes(e) for e in plan[row(t, m)]]) for t in tasks])
        ax.scatter(minutes, avg[m], color=f"C{i % 10}", s=30)
        ax.annotate(m, (minutes, avg[m]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    from matplotlib.ticker import ScalarFormatter

    ax.set(xscale="log", xlabel="minutes per run (mean over tasks, all stages; log scale)",
           ylabel="average dev score over tasks")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.grid(alpha=0.3)
    return ax


#: the seed deck's "all-in-1" slide (kdlib/papers.yaml): its rows under the book's method names
CLAIM = ("seeddeck_allin1", "dev_bert_base")
CLAIM_ROWS = {"teacher": "BERT-base (teacher)", "KD": "vanilla KD", "PKD-Skip": "PKD", "ALP-KD": "ALP-KD",
              "Annealing KD": "Annealing KD", "MATE-KD": "MATE-KD"}
#: the ordering the slide reads into its averages, worst first
CLAIMED_ORDER = ("labels only", "KD", "PKD-Skip", "ALP-KD", "Annealing KD", "MATE-KD")


def claimed(profile: Profile):
    """The slide's figures on this chapter's tasks, under the book's method names, with their average over these
    tasks and the rank of that average among the slide's students (1 = best). The slide has no row without KD;
    its PKD row is set against the book's PKD-Skip (the PKD paper's better variant)."""
    import pandas as pd

    from .. import papers, report
    from ..data import get_task

    cols = [get_task(t).folder for t in setting(profile).tasks]
    df = pd.DataFrame({name: [float(papers.figure(*CLAIM, slide, c).value) for c in cols]
                       for name, slide in CLAIM_ROWS.items()}, index=cols).T
    df["average"] = df[cols].mean(axis=1)
    students = df.drop(index="teacher")
    df["rank of average"] = students["average"].rank(ascending=False).reindex(df.index)
    return report.Table(df.round(2), f"{papers.source(*CLAIM)}: the slide's figures for this chapter's tasks "
                        "(BERT-base teacher, 6-layer students, one run each), their average over these tasks and its "
                        "rank among the slide's students", key="compare-claimed")


# ---------------------------------------------------------------------------------------------------
# Every student the book trains: score against size and CPU latency, with the Pareto front
# ---------------------------------------------------------------------------------------------------
PARETO_TASK = "sst2"  # the one task every chapter trains on


def architecture(model) -> str | None:
    """A student's shape as a short name (what its size and latency depend on); ``None`` for a masked LM."""
    from ..config import BiLSTM, FreshBert, FromRun, LayerCopy, MaskedLM, Pretrained

    if isinstance(model, FromRun):
        return architecture(model.run.model)
    if isinstance(model, LayerCopy):
        return f"{len(model.layers)}-layer copy of {model.checkpoint}"
    if isinstance(model, FreshBert):
        return f"BERT L{model.layers} H{model.hidden}"
    if isinstance(model, BiLSTM):
        return f"BiLSTM {model.hidden}"
    if isinstance(model, Pretrained):
        return f"{model.checkpoint} (the teacher)"
    assert isinstance(model, MaskedLM)
    return None


def book_students(profile: Profile, task: str = PARETO_TASK) -> dict:
    """``{(chapter key, row): experiments}`` for every row of every chapter's plan that trains a classifier on
    ``task`` (the teacher included, not chapter 1's under-trained one; a row that several chapters share, by its
    runs, once)."""
    from . import CHAPTERS, chapter_plan

    out, seen = {}, set()
    for key, ch in CHAPTERS.items():
        if ch.plan is None:
            continue
        for r, exps in chapter_plan(key, profile.name).items():
            runs = frozenset(e.hash for e in exps)
            if exps[0].task != task or architecture(exps[0].model) is None or runs in seen:
                continue
            if isinstance(exps[0].model, Pretrained) and exps[0].label != "teacher":  # chapter 1's weak teacher
                continue
            seen.add(runs)
            out[(key, r)] = exps
    return out


def measure(profile: Profile, devices: tuple = ("cpu", "cuda"), force: bool = False) -> list:
    """Size and speed of every student shape the book trains on SST-2, and of the teacher (the reference): the
    whole training set at batch 512, on each device here (:func:`kdlib.chapters.size_speed_records`)."""
    from . import size_speed_records

    models, reference = _shapes(profile)
    return size_speed_records(CHAPTER, models, reference, devices, force)


def _shapes(profile: Profile) -> tuple:
    """``({architecture: an experiment of that shape}, the teacher's architecture)`` over the book's students."""
    models = {}
    for exps in book_students(profile).values():
        models.setdefault(architecture(exps[0].model), exps[0])
    return models, next(k for k in models if k.endswith("(the teacher)"))


def pareto_points(profile: Profile, task: str = PARETO_TASK):
    """One point per stored row of :func:`book_students`: chapter, row, architecture, parameters, the mean dev
    score over its seeds, and the CPU seconds of its architecture over the training set where that is measured;
    ``front``: on the Pareto front of score against parameters (no smaller model scores higher)."""
    import numpy as np
    import pandas as pd

    from .. import report
    from ..runner import run
    from ..store import stored_path
    from . import CHAPTERS, size_speed

    rows = []
    for (key, r), exps in book_students(profile, task).items():
        if any(stored_path(e) is None for e in exps):
            continue
        recs = [run(e) for e in exps]
        rows.append({"chapter": CHAPTERS[key].title, "row": r, "architecture": architecture(exps[0].model),
                     "params": recs[0]["student_params"], "score": float(np.mean(report.scores(recs))),
                     "seeds": len(recs)})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    models, reference = _shapes(profile)
    timed = size_speed(CHAPTER, models, reference, stored_only=True)
    seconds = {x["model"]: x["seconds"] for x in timed["rows"]} if timed else {}
    df["cpu_seconds"] = df["architecture"].map(seconds)
    df = df.sort_values(["params", "score"], ascending=[True, False]).reset_index(drop=True)
    df["front"] = pareto_front(list(df["params"]), list(df["score"]))
    return df


def pareto_front(cost, score) -> list:
    """For each point, whether it is on the Pareto front: no point of lower or equal ``cost`` scores as high
    (ties in cost: only the best of them)."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -score[i]))
    front, best = [False] * len(cost), float("-inf")
    for i in order:
        if score[i] > best:
            front[i], best = True, score[i]
    return front


def plot_pareto(points, ax=None):
    """Dev score against parameters (and against CPU seconds where measured), the Pareto front joined."""
    import matplotlib.pyplot as plt

    axes = list(ax) if ax is not None else list(plt.subplots(1, 2, figsize=(10, 4), sharey=True)[1])
    archs = list(dict.fromkeys(points["architecture"]))
    for a, (col, label) in zip(axes, (("params", "parameters (log scale)"),
                                      ("cpu_seconds", "CPU seconds over the training set, batch 512 (log)"))):
        have = points.dropna(subset=[col])
        a.set_xlabel(label)
        if have.empty:  # the shapes' CPU time is not measured yet (kdbook experiment compare measures it)
            a.text(0.5, 0.5, "not measured yet", transform=a.transAxes, ha="center", va="center", color="0.4")
            continue
        for i, arch in enumerate(archs):
            sub = have[have["architecture"] == arch]
            a.scatter(sub[col], sub["score"], s=18, color=f"C{i % 10}", label=arch, alpha=0.8)
        on = have[[bool(f) for f in pareto_front(list(have[col]), list(have["score"]))]].sort_values(col)
        a.step(on[col], on["score"], where="post", color="k", lw=1, label="Pareto front")
        a.set_xscale("log")
        a.grid(alpha=0.3)
    axes[0].set_ylabel("dev score (mean over seeds)")
    axes[0].legend(fontsize=7, loc="lower right")
    return axes
