"""Tables and plots made from result records — never from numbers typed in by hand.

A chapter runs its plan (``{row label: [experiments over seeds]}``) with :func:`kdlib.runner.run_plan` and gets
``{row label: [records]}`` back; :func:`results_table` turns that into a pandas table with mean ± std over
seeds beside the paper's figure, and :func:`plot_curves` draws dev score against training progress.
"""
from __future__ import annotations

import math
import warnings
from statistics import mean, stdev

import numpy as np
import pandas as pd

from .data import get_task


class Table:
    """A table with its caption, as a page shows it: an HTML table whose ``<caption>`` says what it holds (task,
    metric, setting), and the same caption above the table in plain text. Both are deterministic (a fixed
    element id, no memory addresses), so nbval can compare them.

    Strings are shown as given; numbers with ``precision`` decimals (one rounding for the whole table, or format
    them before). A default 0…N index is hidden."""

    def __init__(self, df: pd.DataFrame, caption: str, key: str | None = None, precision: int = 2):
        import re

        self.df, self.caption, self.precision = df, caption, precision
        self.key = key or re.sub(r"[^a-z0-9]+", "-", caption.lower()).strip("-")[:40] or "table"

    def _plain_index(self) -> bool:
        return isinstance(self.df.index, pd.RangeIndex) and self.df.index.name is None

    def _repr_html_(self) -> str:
        styler = self.df.style.set_caption(self.caption).set_uuid(self.key).set_table_attributes('class="dataframe"')
        styler = styler.format(precision=self.precision)  # numbers not formatted by the caller: one rounding
        styler = styler.set_table_styles([{"selector": "caption", "props": "caption-side: top; text-align: left; "
                                           "font-weight: 600; padding-bottom: 0.4em;"}])
        if self._plain_index():
            styler = styler.hide(axis="index")
        return styler.to_html()

    def __repr__(self) -> str:
        return f"{self.caption}\n{self.df.to_string(index=not self._plain_index())}"


def main_metric(records: list) -> str:
    return get_task(records[0]["config"]["task"]).main_metric


def scores(records: list, metric: str | None = None) -> list:
    metric = metric or main_metric(records)
    return [r["best"][metric] for r in records]


def mean_std(values: list, digits: int = 1) -> str:
    """``"81.2 ± 0.4"`` over seeds; a single value prints alone."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def agreement(record: dict, teacher: dict) -> float:
    """How often ``record``'s dev predictions equal ``teacher``'s (percent), from the stored dev logits."""
    from .metrics import agreement as _agree

    return _agree(record["dev_logits"], teacher["dev_logits"])


def results_table(results: dict, rows: list | None = None, metric: str | None = None,
                  paper: dict | None = None, paper_label: str = "paper", teacher: dict | None = None) -> pd.DataFrame:
    """One row per plan row: the score (mean ± std over seeds), seeds, agreement with the teacher's
    predictions, parameters, wall time per run, and the paper's figure where one is given.

    Agreement is measured against ``teacher`` (a record) for every row when given, else against each
    record's own teacher."""
    rows = rows or list(results)
    table = []
    for row in rows:
        recs = results[row]
        metric_ = metric or main_metric(recs)
        if teacher is not None:
            agree = [agreement(r, teacher) for r in recs if r["hash"] != teacher["hash"]]
        else:
            agree = [r["teacher"]["agreement"] for r in recs if r.get("teacher") and r["teacher"].get("agreement")]
        entry = {
            "": row,
            f"dev {metric_}": mean_std(scores(recs, metric_)),
            "seeds": len(recs),
            "agrees with teacher %": mean_std(agree) if agree else "–",
            "params (M)": f"{recs[0]['student_params'] / 1e6:.1f}",
            "train examples": f"{recs[0]['n_train']:,}",
            "min / run": f"{mean(r['wall_time_s'] for r in recs) / 60:.1f}",
        }
        if paper is not None:
            entry[paper_label] = paper.get(row, "")
        table.append(entry)
    df = pd.DataFrame(table).set_index("")
    df.index.name = None
    return df


def describe_setting(records: list, width: int | None = 84) -> str:
    """How a set of records was obtained (for table captions), wrapped to ``width`` columns."""
    r = records[0]
    c = r["config"]
    hw = r["hardware"]
    where = hw.get("gpu") or f"CPU ({hw['cpu_count']} cores)"
    optim = "" if c.get("optimizer", "adamw") == "adamw" else f"{c['optimizer']} "
    text = (f"profile {c['profile']}, task {c['task']} ({c['data']} data, {r['n_train']:,} train / "
            f"{r['n_dev']:,} dev), student {_model(c['model'])}, {c['epochs']:g} epoch(s), {optim}lr {c['lr']:g}, "
            f"batch {c['batch_size']}, on {where}, kdlib {r['kdlib_version']} @ {r['git_commit'][:12]}")
    if width is None:
        return text
    import textwrap

    return textwrap.fill(text, width)


def _model(m: dict) -> str:
    """A stored model config in words (records of every kind of model)."""
    kind = m.get("kind")
    if kind == "bilstm":
        return f"BiLSTM ({m['hidden']} units, FC {m['fc']}, {m['embeddings']} embeddings)"
    if kind == "fresh_bert":
        return f"fresh BERT L{m['layers']} H{m['hidden']} A{m['heads']}"
    if kind == "layer_copy":
        return f"{len(m['layers'])}-layer copy of {m['checkpoint']} (layers {list(m['layers'])})"
    if kind == "from_run":
        run, root = m["run"], m["run"]["model"]
        while root.get("kind") == "from_run":  # a chain of runs: name the architecture it started as
            root = root["run"]["model"]
        label = f" ({run['label']})" if run.get("label") else ""
        return f"{_model(root)}, continued from run {run.get('hash', '?')}{label}"
    return m["checkpoint"]


def size_speed_table(record: dict, paper: dict | None = None) -> pd.DataFrame:
    """Tang et al.'s Table 2 from a size/speed record (:func:`kdlib.chapters.size_speed`): parameters with and
    without the word-embedding table, seconds for the whole set, and the ratios to the reference model.
    ``paper`` maps a model name to ``(paper model, params, seconds)`` for the paper's columns."""
    rows = []
    ref = next(r for r in record["rows"] if r["model"] == record["config"]["reference"])
    for r in record["rows"]:
        entry = {"": r["model"], "params (M)": r["params"] / 1e6,
                 "w/o embeddings (M)": r["params w/o embeddings"] / 1e6,
                 "seconds": r["seconds"],
                 "fewer params ×": r["fewer params ×"],
                 "fewer params w/o emb. ×": ref["params w/o embeddings"] / r["params w/o embeddings"],
                 "faster ×": r["faster ×"]}
        if paper is not None and r["model"] in paper:
            name, params, secs = paper[r["model"]]
            pref = paper[record["config"]["reference"]]
            entry.update({"paper model": name, "paper params (M)": params / 1e6, "paper seconds": secs,
                          "paper: fewer params ×": pref[1] / params, "paper: faster ×": pref[2] / secs})
        rows.append(entry)
    df = pd.DataFrame(rows).set_index("")
    df.index.name = None
    return df


def welch(a: list, b: list, metric: str | None = None) -> tuple:
    """``(mean of a − mean of b, Welch's p or None)`` over the seeds of two rows (None: too few seeds, or no spread)."""
    from scipy.stats import ttest_ind

    sa, sb = scores(a, metric), scores(b, metric)
    p = None
    if len(sa) > 1 and len(sb) > 1 and (np.std(sa) > 0 or np.std(sb) > 0):
        with warnings.catch_warnings():  # near-equal scores make scipy warn about precision; p is still fine
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(ttest_ind(sa, sb, equal_var=False).pvalue)
    return mean(sa) - mean(sb), p


def difference(a: list, b: list, metric: str | None = None) -> str:
    """Mean difference of two rows over seeds with Welch's t-test, as a sentence fragment."""
    diff, p = welch(a, b, metric)
    text = f"{diff:+.2f} points ({len(scores(a, metric))} vs {len(scores(b, metric))} seeds"
    return text + (f", Welch t-test {p_value(p)})" if p is not None else ")")


def p_value(p: float) -> str:
    """A p-value as a paper writes it: ``p = 0.37``, ``p = 0.04``, ``p < 0.01`` (never ``p = 0.00``)."""
    return "p < 0.01" if p < 0.01 else f"p = {p:.2f}"


def caption(records: list, what: str | None = None) -> str:
    """A results table's caption: task, metric and how it was measured, then the setting of ``records``."""
    spec = get_task(records[0]["config"]["task"])
    what = what or f"{spec.folder} dev {main_metric(records)}"  # the GLUE folder is the task's usual name
    seeds = f"mean ± std over {len(records)} seeds" if len(records) > 1 else "one seed"
    return f"{what}, at the best evaluation point, {seeds}. Setting: {describe_setting(records, width=None)}."


def pivot(results: dict, rows: list, cols: list, key, metric: str | None = None, digits: int = 1) -> pd.DataFrame:
    """A table of mean ± std over seeds with one cell per (row, column): ``key(row, col)`` names the plan row
    behind a cell (e.g. method × student depth); a missing plan row leaves "–"."""
    table = {}
    for col in cols:
        cells = []
        for r in rows:
            recs = results.get(key(r, col))
            cells.append(mean_std(scores(recs, metric), digits) if recs else "–")
        table[col] = cells
    return pd.DataFrame(table, index=rows)


def summary_matrix(records: list, name: str) -> np.ndarray:
    """The mean over seeds of a matrix each record's dev-set ``summary`` holds (e.g. ALP's weights)."""
    mats = [np.asarray(r["summary"][name], dtype=float) for r in records if (r.get("summary") or {}).get(name)]
    if not mats:
        raise ValueError(f"no record holds a {name!r} summary")
    return np.mean(mats, axis=0)


def ran_on(records: list) -> str:
    """Where ``records`` ran, for a caption that shows their wall times: the GPU, or the CPU's cores and the
    threads per run; and, where the runs were made on CPUs with different vector kernels (other machines), how
    many on each, since their times then compare only roughly."""
    from collections import Counter

    hws = [r.get("hardware", {}) for r in records]
    gpus = sorted({h["gpu"] for h in hws if h.get("gpu")})
    if gpus:
        on_cpu = sum(not h.get("gpu") for h in hws)
        return ", ".join(gpus) + (f" ({on_cpu} of the {len(hws)} runs on a CPU)" if on_cpu else "")
    cores = "/".join(str(c) for c in sorted({h["cpu_count"] for h in hws if h.get("cpu_count")})) or "?"
    threads = "/".join(str(t) for t in sorted({h["torch_threads"] for h in hws if h.get("torch_threads")})) or "?"
    text = f"a {cores}-core CPU, {threads} thread(s) per run"
    kernels = Counter(h.get("cpu_capability") or "not recorded" for h in hws)
    if len(kernels) > 1:
        runs = ", ".join(f"{k} {n}" for k, n in sorted(kernels.items(), key=lambda kv: (kv[0] == "not recorded", kv[0])))
        text += (f" (more than one machine: runs per CPU vector-kernel set, {runs}; a time compares with one from "
                 "another machine only roughly)")
    return text


def cost_table(results: dict, rows: list) -> pd.DataFrame:
    """What each row costs: wall time per run and where it ran (threads matter on a CPU shared by two runs),
    and the cached teacher numbers one example's loss reads (stored in float16, so ×2 bytes), per example
    and per training step ("not recorded" for records made before kdlib stored that count)."""
    table = []
    for row in rows:
        recs = results[row]
        c = recs[0]["config"]
        recorded = "teacher_floats_per_example" in recs[0]  # records older than the field say nothing
        floats = recs[0].get("teacher_floats_per_example") or 0
        hw = recs[0].get("hardware", {})
        where = hw.get("gpu") or f"CPU, {hw.get('torch_threads', '?')} thread(s)"
        table.append({"": row, "min / run": f"{mean(r['wall_time_s'] for r in recs) / 60:.1f}", "ran on": where,
                      "teacher numbers / example": f"{floats:,}" if recorded else "not recorded",
                      "teacher KiB / step": f"{floats * 2 * c['batch_size'] / 1024:.1f}" if recorded else "–"})
    df = pd.DataFrame(table).set_index("")
    df.index.name = None
    return df


def curve(records: list, metric: str | None = None):
    """Mean (and std) dev score at each evaluation point over seeds: (epochs, mean, std)."""
    metric = metric or main_metric(records)
    points = sorted({p["epoch"] for r in records for p in r["history"]})
    means, stds = [], []
    for e in points:
        vals = [p[metric] for r in records for p in r["history"] if p["epoch"] == e]
        means.append(mean(vals))
        stds.append(stdev(vals) if len(vals) > 1 else 0.0)
    return np.array(points), np.array(means), np.array(stds)


def plateau(results: dict, rows: list | None = None, metric: str | None = None) -> pd.DataFrame:
    """Has each row's dev curve flattened before its runs ended? The mean score (over seeds) at the last
    evaluation, what the last quarter of training added to it, and the best point's epoch. The settings
    table (:mod:`kdlib.settings`) is sized so that the gain of the last quarter is small against the
    seed-to-seed spread."""
    out = []
    for row in rows or list(results):
        recs = results[row]
        if not recs or not recs[0]["history"]:
            continue
        x, m, s = curve(recs, metric)
        if len(x) < 2:
            continue
        before = np.interp(0.75 * x[-1], x, m)  # the mean score three quarters into the run
        spread = float(np.std(scores(recs, metric), ddof=1)) if len(recs) > 1 else float("nan")
        out.append({"row": row, "epochs": round(float(x[-1]), 2), "last": round(float(m[-1]), 2),
                    "gain in the last quarter": round(float(m[-1] - before), 2),
                    "std over seeds": round(spread, 2),
                    "best at epoch": round(float(np.mean([r["best"]["epoch"] for r in recs])), 2)})
    return pd.DataFrame(out).set_index("row") if out else pd.DataFrame()


def plot_curves(results: dict, rows: list, metric: str | None = None, ax=None, title: str = ""):
    """Dev score against epochs for several rows (mean over seeds, band = ± 1 std)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6))
    for row in rows:
        x, m, s = curve(results[row], metric)
        ax.plot(x, m, marker="o", ms=3, label=row)
        if s.any():
            ax.fill_between(x, m - s, m + s, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"dev {metric or main_metric(results[rows[0]])}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def against_teacher(results: dict, task: str, names, row, paper=None, metric: str | None = None,
                    floor: tuple | None = None) -> pd.DataFrame:
    """:func:`results_table` of the rows ``row(task, name)`` (one of them ``"teacher"``), with each row's distance
    to the teacher and, where ``paper(task, name)`` gives the paper's figure (a string as printed, or None), the
    paper's figure and its distance to the paper's teacher. ``floor``: ``(name, metrics)`` of a model that ignores
    its input (:func:`kdlib.chapters.constant_baseline`), added as a last row with its score, its distance to the
    teacher and how often the teacher predicts its class."""
    teacher = results[row(task, "teacher")][0]
    rows = [row(task, n) for n in names]
    df = results_table(results, rows, metric, teacher=teacher)  # agreement with this teacher, every row
    df = df.drop(columns=["params (M)", "train examples"])  # the same for every student: the caption says them
    if get_task(task).is_regression:  # agreement of predicted classes means nothing for a score
        df = df.drop(columns=["agrees with teacher %"])
    df.index = list(names)
    metric = metric or main_metric(results[rows[-1]])
    top = teacher["best"][metric]
    df.insert(1, "− teacher", ["–" if n == "teacher" else f"{mean(scores(results[r], metric)) - top:+.1f}"
                               for n, r in zip(names, rows)])
    theirs = {n: paper(task, n) for n in names} if paper else {}
    if any(v is not None for v in theirs.values()):
        ref = theirs.get("teacher")
        df["paper"] = [theirs[n] or "" for n in names]
        df["paper − teacher"] = ["" if theirs[n] is None or ref is None or n == "teacher"
                                 else f"{float(theirs[n]) - float(ref):+.1f}" for n in names]
    if floor is not None:
        name, metrics = floor
        extra = {c: "–" for c in df.columns}
        extra.update({c: "" for c in ("paper", "paper − teacher") if c in df.columns})
        extra[f"dev {metric}"] = f"{metrics[metric]:.1f}"
        extra["− teacher"] = f"{metrics[metric] - top:+.1f}"
        if "agrees with teacher %" in df.columns and "label" in metrics:
            from .metrics import predictions_from_logits

            same = predictions_from_logits(teacher["dev_logits"]) == metrics["label"]
            extra["agrees with teacher %"] = f"{100 * np.mean(same):.1f}"
        df.loc[name] = extra
    return df


def plateau_by_task(results: dict, tasks, names, row, metric: str | None = None) -> pd.DataFrame:
    """:func:`plateau` of the rows ``row(task, name)`` for each task, indexed by (GLUE task name, name)."""
    frames = {get_task(t).folder: plateau({n: results[row(t, n)] for n in names if row(t, n) in results},
                                          metric=metric) for t in tasks}
    return pd.concat(frames, names=["task", "row"])


def task_differences(results: dict, tasks, pairs, row, metric: str | None = None) -> pd.DataFrame:
    """``A − B`` over seeds with Welch's p (:func:`welch`) for each task (rows) and pair (columns), one short cell
    each: ``+0.84 (p = 0.05)``."""
    def cell(a, b):
        diff, p = welch(a, b, metric)
        return f"{diff:+.2f}" + (f" ({p_value(p)})" if p is not None else "")

    out = {get_task(t).folder: {f"{a} − {b}": cell(results[row(t, a)], results[row(t, b)]) for a, b in pairs}
           for t in tasks}
    return pd.DataFrame(out).T


def gaps_to_teacher(results: dict, tasks, names, row, paper=None, metric: str | None = None) -> dict:
    """Teacher − student for each task and name: ``{task: {name: (mean over seeds, std over seeds, the paper's
    gap or None)}}``; ``paper(task, name)`` gives the paper's teacher − student, or None where it has none."""
    out = {}
    for task in tasks:
        top = scores(results[row(task, "teacher")], metric)[0]
        out[task] = {}
        for name in names:
            sc = np.asarray(scores(results[row(task, name)], metric))
            out[task][name] = (float(top - sc.mean()), float(sc.std(ddof=1)) if len(sc) > 1 else 0.0,
                               paper(task, name) if paper else None)
    return out


def plot_task_bars(values: dict, ax=None, ylabel: str = "", paper_label: str = "paper"):
    """Grouped bars, one group per task and one bar per name (``values[task][name] = (value, std, paper value or
    None)``), ± 1 std as error bars, the paper's value as a black cross on its bar."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    tasks = list(values)
    names = list(values[tasks[0]])
    width, crossed = 0.8 / len(names), False
    for i, name in enumerate(names):
        x = np.arange(len(tasks)) + (i - (len(names) - 1) / 2) * width
        got = [values[t][name] for t in tasks]
        ax.bar(x, [g[0] for g in got], width, yerr=[g[1] for g in got], capsize=2, label=name, color=f"C{i}")
        theirs = [(xi, g[2]) for xi, g in zip(x, got) if g[2] is not None]
        if theirs:
            ax.scatter(*zip(*theirs), marker="x", color="black", s=18, zorder=3,
                       label=None if crossed else paper_label)
            crossed = True
    ax.set_xticks(range(len(tasks)), [get_task(t).folder for t in tasks])
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    return ax


def plot_stage_curves(stages: dict, metric: str | None = None, ax=None, title: str = "", label: str = ""):
    """Dev score through runs that follow one another (``{stage name: [records over seeds]}``): each stage's
    mean curve over seeds (band = ± 1 std) on one epoch axis, each starting where the one before ended, with
    the boundaries marked. Returns the axis; the line is labelled ``label`` (or the last stage's name)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.6))
    offset, colour = 0.0, None
    names = list(stages)
    for i, name in enumerate(names):
        recs = stages[name]
        x, m, s = curve(recs, metric)
        (line,) = ax.plot(offset + x, m, marker="o", ms=3, color=colour,
                          label=(label or names[-1]) if i == 0 else None)
        colour = line.get_color()
        if s.any():
            ax.fill_between(offset + x, m - s, m + s, alpha=0.15, color=colour)
        end = offset + float(recs[0]["config"]["epochs"])
        if i < len(names) - 1:
            ax.axvline(end, color=colour, lw=0.8, ls="--")
            ax.text(end, 0.02, f" end of {name}", transform=ax.get_xaxis_transform(), fontsize=7, color=colour,
                    rotation=90, va="bottom")
        offset = end
    ax.set_xlabel("epoch (stages one after another)")
    ax.set_ylabel(f"dev {metric or main_metric(next(iter(stages.values())))}")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_loss_terms(stages: dict, ax=None, title: str = ""):
    """Each term of the training loss (the records' ``losses``) across runs that follow one another
    (``{stage name: record}``), on one step axis with the stage boundaries marked; log scale."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 3.6))
    offset, colours = 0, {}
    for name, rec in stages.items():
        points = rec.get("losses") or []
        terms = [k for k in (points[0] if points else {}) if k not in ("step", "loss")] or ["loss"]
        for term in terms:
            if term not in colours:
                colours[term] = f"C{len(colours)}"
            ax.plot([offset + p["step"] for p in points], [p[term] for p in points], color=colours[term],
                    label=term if term not in ax.get_legend_handles_labels()[1] else None)
        last = max((p["step"] for p in points), default=0)
        ax.axvline(offset + last, color="grey", lw=0.8, ls="--")
        # a long stage name goes on two lines, so that the names of short neighbouring stages do not overlap
        ax.text(offset + last / 2, 1.02, name.replace(": ", ":\n"), transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7)
        offset += last
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step (stages one after another)")
    ax.set_ylabel("loss term (weighted)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(colours))
    if title:
        ax.set_title(title, fontsize=10, pad=24)
    return ax


def softmax(logits, T: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=float) / T
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def entropy_bits(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1)
    return -(p * np.log2(p)).sum(-1)


def fmt(x: float, digits: int = 2) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
