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
    from ..dryrun import SHAPES, environment
    from ..errors import check_choice
    from ..profiles import get_profile

    chapters = planned() if chapters is None else list(chapters)
    for k in chapters:
        check_choice("chapter", k, planned())
    if teacher is not None and not os.path.isdir(teacher):
        check_choice("teacher", teacher, ("minilm-l6", *SHAPES, "a local checkpoint folder"))
    with environment(**({"KDLIB_GPU_TEACHER": teacher} if teacher else {})):
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


def _where(rec: dict) -> str:
    hw = rec["hardware"]
    return hw.get("gpu") or f"a {hw['cpu_count']}-core CPU"


def stacked_table(rec: dict):
    """``kdbook bench --stacked``: for each stack size S, both sides' examples per second, the measured speed-up,
    the counted work of a stacked step against S lone ones, and the H100 estimate of the speed-up."""
    import pandas as pd

    from .. import report

    rows = []
    for S, v in rec["summary"].items():
        h = [v["h100 estimate"][e]["speedup"] for e in ("fast", "slow")]
        for k, unit in (("sequential examples/s", "examples/s"), ("stacked examples/s", "examples/s"),
                        ("speedup", "× (sequential / stacked time)")):
            rows.append({"S": int(S), "what": k, "unit": unit, **v[k]})
        rows.append({"S": int(S), "what": "operator calls: S lone steps / one stacked step", "unit": "×",
                     "median": v["ops per step: S lone steps / one stacked step"]})
        rows.append({"S": int(S), "what": "FLOPs: one stacked step / S lone steps", "unit": "×",
                     "median": v["flops per step: one stacked step / S lone steps"]})
        rows.append({"S": int(S), "what": "H100 estimate of the speed-up (fast–slow assumption)", "unit": "×",
                     "min": min(h), "max": max(h)})
    df = _blank(pd.DataFrame(rows).set_index(["S", "what"])[["unit", "median", "min", "max"]], 2)
    c = rec["config"]
    return report.Table(df, f"S seeds of one KD run trained one after another against the same S "
                        f"trained as one stack: one epoch of {rec['examples']} {rec['data']} {c['task']} examples "
                        f"each, a {len(c['layers'])}-layer copy of {c['checkpoint']}, batch {c['batch_size']}; "
                        f"median, min and max over {c['rounds']} interleaved rounds on {_where(rec)}; the work "
                        "counted on a few steps; the H100 estimate is the cost model above", key="cost-stacked")


def _blank(df, decimals: int):
    """``df``'s numbers as text with ``decimals`` decimals, and an empty cell where there is none."""
    out = df.copy().astype(object)
    for col in ("median", "min", "max"):
        out[col] = [("" if x != x else f"{x:.{decimals}f}") for x in df[col]]
    return out


def plot_stacked(rec: dict, ax=None):
    """For each stack size S: the speed-up measured here (median, range over rounds) and the H100 estimate
    (its fast–slow range), against 1 (no gain) and S (the most a stack of S can gain)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.8))
    items = list(rec["summary"].items())
    for i, (S, v) in enumerate(items):
        m = v["speedup"]
        ax.barh(2 * i, m["median"], color="C0", alpha=0.85, label="measured here" if i == 0 else None)
        ax.plot([m["min"], m["max"]], [2 * i, 2 * i], color="k", lw=1)
        h = sorted(v["h100 estimate"][e]["speedup"] for e in ("fast", "slow"))
        ax.barh(2 * i + 0.8, h[1], color="C1", alpha=0.85, label="H100 estimate (line: fast–slow)" if i == 0 else None)
        ax.plot(h, [2 * i + 0.8] * 2, color="k", lw=1)
        ax.plot([int(S)] * 2, [2 * i - 0.5, 2 * i + 1.3], color="grey", ls=":", lw=1)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks([2 * i + 0.4 for i in range(len(items))], [f"S = {S}" for S, _ in items])
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of one stack over S runs one after another (dotted: S)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return ax


def stacked_finding(rec: dict) -> str:
    """What the stacked bench shows, in sentences built from its numbers."""
    s = rec["summary"]
    parts = []
    for S, v in s.items():
        m = v["speedup"]
        parts.append(f"S = {S} stacked seeds train {m['median']:.2f}× as fast as {S} lone runs one after another "
                     f"(range over rounds {m['min']:.2f}–{m['max']:.2f}×)")
    text = "On this CPU, " + "; ".join(parts) + "."
    if "3" in s:
        met = s["3"]["speedup"]["median"] >= 1.5
        text += f" The goal of 1.5× at S = 3 is {'met' if met else 'not met'} here."
    flop = {k: x["flops per step: one stacked step / S lone steps"] for k, x in s.items()}
    calls = {k: x["ops per step: S lone steps / one stacked step"] for k, x in s.items()}
    text += (" A stacked step does " + ", ".join(f"{flop[k]:.2f}× (S = {k})" for k in s) + " the arithmetic of its "
             "lone steps: each seed keeps its own data order, so its batch comes from another length bucket than "
             "its neighbours' and is padded to the longest of them. A CPU step of this student is bound by its "
             "arithmetic, which a stack cannot reduce and here increases; that is why stacking loses on this CPU. "
             "Its lone steps make " + ", ".join(f"{calls[k]:.1f}× (S = {k})" for k in s) + " the operator calls of "
             "one stacked step, and an H100 step of a small student is bound by its calls (the cost model above): "
             "the model estimates a stack " + ", ".join(f"{_span(x['h100 estimate'])} as fast as its lone runs "
                                                        f"(S = {k})" for k, x in s.items()) +
             " on an H100, an estimate, not a measurement, until a GPU is at hand.")
    return text


def _span(h100: dict) -> str:
    lo, hi = sorted(h100[e]["speedup"] for e in ("fast", "slow"))
    return f"{lo:.1f}×" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}–{hi:.1f}×"


def tuning_finding(rec: dict) -> str:
    """What the threads and compile bench shows, in sentences built from its numbers."""
    th, comp = rec["summary"]["threads"], rec["summary"]["compile"]
    ones, twos = th["side by side, 1 thread each"], th["side by side, 2 threads each"]
    r1, r2 = ones["ratio to one after another"], twos["ratio to one after another"]
    text = (f"Two jobs side by side with one thread each finish {r1['median']:.2f}× as fast as the same two one "
            f"after another with two threads (range {r1['min']:.2f}–{r1['max']:.2f}×); side by side with two "
            f"threads each, {r2['median']:.2f}×. ")
    if r1["median"] >= 1.2:
        text += ("One thread per job is adopted: the book's background re-makes run so (`OMP_NUM_THREADS=1`), and "
                 "their records say so (`hardware.torch_threads`). ")
    else:
        text += "No thread setting gains 1.2×; the book keeps one thread per job, as its records say. "
    sp = comp["speedup (second epoch)"]
    extra = comp["compiling, extra seconds (first epoch)"]
    text += (f"Compiled, the student's step runs {sp['median']:.2f}× as fast as eager (range {sp['min']:.2f}–"
             f"{sp['max']:.2f}×), after compiling (at most {extra['max']:.0f} s more in a round's first epoch; less "
             f"once PyTorch's on-disk cache holds the compiled kernels), and its losses "
             f"{'equal' if comp['losses identical'] else 'differ from'} eager's"
             + ("" if comp["losses identical"] else
                f" by up to {comp['largest loss difference']:.2g} (compiled code draws its dropout masks from its "
                "own generator and rounds differently), so its records would not be the eager ones") + ". ")
    adopt = sp["median"] >= 1.2 and comp["losses identical"]
    text += ("It is adopted." if adopt else "It is not adopted: it would need ≥ 1.2× with the same records.")
    return text


def tuning_table(rec: dict):
    """``kdbook bench --tuning``: how two jobs share the CPU (examples per second, ratio to one after another),
    and the compiled student step against eager."""
    import pandas as pd

    from .. import report

    s = rec["summary"]
    rows = []
    for side, v in s["threads"].items():
        rows.append({"what": f"two jobs {side}", "unit": "examples/s", **v["examples/s"]})
        rows.append({"what": f"two jobs {side}: ratio to one after another", "unit": "×",
                     **v["ratio to one after another"]})
    comp = s["compile"]
    rows.append({"what": "torch.compile: speed-up of the step (second epoch)", "unit": "×",
                 **comp["speedup (second epoch)"]})
    rows.append({"what": "torch.compile: extra seconds of the first epoch (compiling)", "unit": "s",
                 **comp["compiling, extra seconds (first epoch)"]})
    rows.append({"what": "torch.compile: largest difference of a step's loss from eager's", "unit": "",
                 "median": comp["largest loss difference"]})
    df = _blank(pd.DataFrame(rows).set_index("what")[["unit", "median", "min", "max"]], 3)
    c = rec["config"]
    return report.Table(df, f"Threads and compile: one-epoch KD jobs on {rec['examples']} {rec['data']} "
                        f"{c['task']} examples, a {len(c['layers'])}-layer copy of {c['checkpoint']}, batch "
                        f"{c['batch_size']}; median, min and max over {c['rounds']} interleaved rounds on "
                        f"{_where(rec)}", key="cost-tuning")


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
