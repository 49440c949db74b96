"""The appendix "What it costs": what the gpu profile would take on an H100, estimated from counted work.

No GPU answered while this book was made, so the gpu profile's time is an **estimate**, made on a CPU: a
counted dry run (:func:`kdlib.dryrun.estimate`) measures each distinct run's FLOPs per token and operator calls
per step, the real data gives the tokens and steps, and two assumptions turn them into hours (an H100's bf16
peak at a share of it, and a least cost per operator call). ``kdbook estimate`` makes the stored record; the
page reads it.
"""
from __future__ import annotations

import os

from . import CHAPTERS, chapter_plan

CHAPTER = "cost"
KIND = "gpu_estimate"


def planned() -> list:
    """The chapters with a plan, in the book's registry order."""
    return [k for k, c in CHAPTERS.items() if c.plan]


def _config(chapters: list, steps: int) -> dict:
    from ..dryrun import H100_BF16_FLOPS, SECONDS_PER_OP, UTILISATION

    return {"chapters": {k: sorted({e.hash for exps in chapter_plan(k, "gpu").values() for e in exps})
                         for k in chapters},
            "steps": steps, "peak_flops": H100_BF16_FLOPS, "utilisation": list(UTILISATION),
            "seconds_per_op": list(SECONDS_PER_OP)}


def gpu_estimate(chapters: list | None = None, teacher: str | None = None, steps: int = 2, force: bool = False,
                 stored_only: bool = False, progress: bool = False) -> dict | None:
    """The stored estimate of the gpu profile's runs for ``chapters`` (default: every planned chapter): one row
    per run of each chapter's plan and of every run it depends on (``chapter``, ``run``, ``task``, ``seed``,
    ``flops``, ``ops``, ``seconds_fast``, ``seconds_slow``, ``bound``). ``teacher``: the gpu profile's teacher
    checkpoint (``KDLIB_GPU_TEACHER``; default: as this machine plans it, BERT-base where the hub answers).
    Made by a counted dry run and the local GLUE copy; ``stored_only`` never makes it (``None`` when it is not
    stored)."""
    from ..dryrun import SHAPES, _environment
    from ..errors import check_choice
    from ..profiles import get_profile

    chapters = planned() if chapters is None else list(chapters)
    for k in chapters:
        check_choice("chapter", k, planned())
    if teacher is not None and not os.path.isdir(teacher):
        check_choice("teacher", teacher, ("minilm-l6", *SHAPES, "a local checkpoint folder"))
    with _environment(**({"KDLIB_GPU_TEACHER": teacher} if teacher else {})):
        return _gpu_estimate(chapters, get_profile("gpu").teacher, steps, force, stored_only, progress)


def _gpu_estimate(chapters, teacher, steps, force, stored_only, progress):
    from ..dryrun import default_store, estimate
    from ..store import measurement

    def compute() -> dict:
        rows = []
        for k in chapters:
            rows += [{"chapter": k, **r} for r in estimate(chapter_plan(k, "gpu"), steps=steps,
                                                            store=default_store(), progress=progress)]
        return {"rows": rows}

    return measurement(KIND, "gpu", CHAPTER, {"teacher": teacher, **_config(chapters, steps)}, compute, force=force,
                       stored_only=stored_only)


def by_chapter(rec: dict):
    """Per chapter: its runs, their work and the hours an H100 would take (fast and slow assumption), and the
    share of runs bound by operator calls rather than by arithmetic."""
    import pandas as pd

    df = pd.DataFrame(rec["rows"])
    titles = {k: CHAPTERS[k].title for k in df["chapter"].unique()}
    out = df.groupby("chapter", sort=False).agg(
        runs=("run", "size"), pflop=("flops", lambda x: x.sum() / 1e15), calls=("ops", lambda x: x.sum() / 1e6),
        fast=("seconds_fast", lambda x: x.sum() / 3600), slow=("seconds_slow", lambda x: x.sum() / 3600),
        by_calls=("bound", lambda b: (b == "calls").mean() * 100))
    out.index = [titles[k] for k in out.index]
    out.index.name = "chapter"
    out["by_calls"] = out["by_calls"].round(0).astype(int)
    return out.rename(columns={"pflop": "PFLOP", "calls": "operator calls (M)", "fast": "H100 hours (fast)",
                               "slow": "H100 hours (slow)", "by_calls": "% runs bound by calls"})


def cpu_time(profile: str) -> "object":
    """Per chapter of the book: the runs its ``profile`` plan needs (the runs it depends on included, each once),
    how many are stored, and their stored wall time in hours (as each run measured it, on whatever machine and
    beside whatever else made it)."""
    import pandas as pd

    from ..config import closure
    from ..store import load_record, stored_path
    from . import in_book

    rows = []
    for ch in in_book():
        if ch.plan is None:
            continue
        runs = {e.hash: e for exps in chapter_plan(ch.key, profile).values() for top in exps for e in closure(top)}
        paths = [stored_path(e) for e in runs.values()]
        walls = [load_record(p)["wall_time_s"] for p in paths if p is not None]
        rows.append({"chapter": ch.title, "runs": len(runs), "stored": len(walls), "hours": sum(walls) / 3600})
    return pd.DataFrame(rows).set_index("chapter")


def bench_table(rec: dict):
    """The bench's medians (and their range over rounds): examples per second of each side, then the ratios."""
    import pandas as pd

    from .. import report

    s = rec["summary"]
    rows = [{"what": k, "unit": "examples/s", **v} for k, v in s["examples_per_s"].items()]
    rows += [{"what": k, "unit": "× (ratio of times)", **v} for k, v in s["ratios"].items()]
    df = pd.DataFrame(rows).set_index("what")[["unit", "median", "min", "max"]]
    hw = rec["hardware"]
    where = hw.get("gpu") or f"a {hw['cpu_count']}-core CPU, {hw['torch_threads']} thread(s)"
    c = rec["config"]
    return report.Table(df.round(2), f"kdlib against the Trainer recipe for KD: one epoch of {rec['examples']} "
                        f"{rec['data']} {c['task']} examples, a {len(c['layers'])}-layer copy of {c['checkpoint']} "
                        f"taught by the whole checkpoint, batch {c['batch_size']}; the workload is "
                        f"{rec['workload_runs']} students sharing one teacher; median, min and max over "
                        f"{c['rounds']} interleaved rounds on {where}", key="cost-bench")


def plot_bench(rec: dict, ax=None):
    """Examples per second of each side (median, with the range over rounds as a bar)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    items = list(rec["summary"]["examples_per_s"].items())
    for i, (k, v) in enumerate(items):
        ax.barh(i, v["median"], color="C1" if k.startswith("kdlib") else "C0", alpha=0.85)
        ax.plot([v["min"], v["max"]], [i, i], color="k", lw=1)
    ax.set_yticks(range(len(items)), [k for k, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training examples per second (median; line: range over rounds)")
    ax.grid(axis="x", alpha=0.3)
    return ax


def book_total(rec: dict) -> dict:
    """The whole book's gpu profile: each run once (a run that several chapters share, e.g. a teacher, counted
    once), its FLOPs, hours (fast, slow), the share of runs bound by operator calls, and the hours its arithmetic
    alone would take at the slow share of the peak."""
    import pandas as pd

    from ..dryrun import H100_BF16_FLOPS, UTILISATION

    df = pd.DataFrame(rec["rows"]).drop_duplicates("hash")
    return {"runs": len(df), "eflop": df["flops"].sum() / 1e18, "hours_fast": df["seconds_fast"].sum() / 3600,
            "hours_slow": df["seconds_slow"].sum() / 3600, "calls_bound_pct": (df["bound"] == "calls").mean() * 100,
            "arithmetic_hours": df["flops"].sum() / (H100_BF16_FLOPS * UTILISATION[1]) / 3600}


def costliest(rec: dict, n: int = 6):
    """The ``n`` rows (a chapter's run, its seeds together) with the longest estimate per run."""
    import pandas as pd

    df = pd.DataFrame(rec["rows"])
    g = df.groupby(["chapter", "run", "task"], sort=False).agg(
        seeds=("seed", "size"), steps=("steps", "max"), pflop=("flops", lambda x: x.mean() / 1e15),
        fast=("seconds_fast", lambda x: x.mean() / 60), slow=("seconds_slow", lambda x: x.mean() / 60))
    g = g.sort_values("slow", ascending=False).head(n).reset_index()
    return pd.DataFrame({"chapter": g["chapter"].map(lambda k: CHAPTERS[k].title), "run": g["run"],
                         "task": g["task"], "seeds": g["seeds"], "steps per run": g["steps"],
                         "PFLOP per run": g["pflop"].round(1),
                         "minutes per run": [f"{a:.0f}–{b:.0f}" for a, b in zip(g["fast"], g["slow"])]})
