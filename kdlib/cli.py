"""``kdbook`` — run chapters, run their experiments, build the book, list stored results.

    kdbook run chapters/01_hinton_kd.ipynb --profile gpu     # rerun a chapter with papermill
    kdbook run --all --profile smoke                         # every chapter, quickly, on a CPU
    kdbook experiment hinton --profile gpu                   # a chapter's experiments without papermill
    kdbook build                                             # render the book to _build/html
    kdbook results --profile cpu                             # stored result records

Bad input ends with one line, ``kdbook: error: ...``, and exit status 2.
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import KDLibError, check_choice, choices


def _root() -> Path:
    from .store import book_root

    root = book_root()
    if root is None:
        raise KDLibError("not inside the book: no _toc.yml in this folder or above it")
    return root


def _registered_notebooks(root: Path) -> list:
    """The notebooks of every registered chapter that has one (a chapter being written included)."""
    from .chapters import CHAPTERS

    return [root / c.notebook for c in CHAPTERS.values() if c.notebook.endswith(".ipynb") and (root / c.notebook).is_file()]


def _notebooks(root: Path) -> list:
    """The notebooks of the book's chapters (those ``_toc.yml`` lists), in its order: a chapter still being
    written is registered but not listed, and runs only when named."""
    from .chapters import in_book

    return [root / c.notebook for c in in_book(root) if c.notebook.endswith(".ipynb")]


def _resolve_notebook(name: str, root: Path) -> Path:
    from .chapters import CHAPTERS

    if name in CHAPTERS:
        if not (root / CHAPTERS[name].notebook).is_file():
            raise KDLibError(f"chapter {name!r} has no notebook yet ({CHAPTERS[name].notebook}); its experiments run "
                             f"with: kdbook experiment {name}")
        name = CHAPTERS[name].notebook
    path = Path(name)
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else root / path
    known = _registered_notebooks(root)
    valid = [str(p.relative_to(root)) for p in known]
    if not path.is_file() or path.suffix != ".ipynb" or path.resolve() not in [p.resolve() for p in known]:
        raise KDLibError(f"unknown chapter {name!r}; valid choices: {choices(valid)} "
                         f"(or the chapter keys {choices(k for k, c in CHAPTERS.items() if c.plan)})")
    return path


_TYPES = {"int": int, "float": float, "str": str, "bool": None}


def parse_parameters(notebook: Path, pairs: list) -> dict:
    """``-p name value`` pairs checked against the notebook's parameters cell (names and types)."""
    import papermill as pm

    declared = pm.inspect_notebook(str(notebook))
    params = {}
    for name, raw in pairs:
        if name == "profile":
            raise KDLibError(f"set the profile with --profile, not -p profile {raw!r}; valid choices: "
                             "smoke, cpu, gpu")
        if name not in declared:
            raise KDLibError(f"unknown parameter {name!r} for {notebook.name}; valid choices: "
                             f"{choices(declared)}")
        kind = declared[name].get("inferred_type_name", "None")
        if kind in ("None", None):  # no annotation: take the type of the default value
            try:
                kind = type(ast.literal_eval(declared[name]["default"])).__name__
            except (ValueError, SyntaxError):
                kind = "None"
        try:
            if kind == "bool":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                value = raw.lower() in ("true", "1")
            elif kind in _TYPES:
                value = _TYPES[kind](raw)
            else:
                value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise KDLibError(f"parameter {name!r} of {notebook.name} expects {kind}, got {raw!r}") from None
        params[name] = value
    return params


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: papermill's tags for the parameters cell and the cell it injects; the rendered page shows neither
PARAMETER_TAGS = ("parameters", "injected-parameters")


def hide_parameters(path: Path) -> None:
    """Tag the parameters cells of an executed notebook ``remove-cell`` (the book does not render them)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if any(t in tags for t in PARAMETER_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, str(path))


def cmd_run(args) -> int:
    from .profiles import PROFILES

    check_choice("profile", args.profile, PROFILES)
    root = _root()
    if args.all == bool(args.notebooks):
        raise KDLibError("give chapter notebooks or --all (not both)")
    books = _notebooks(root) if args.all else [_resolve_notebook(n, root) for n in args.notebooks]
    if args.output and len(books) != 1:
        raise KDLibError("--output takes one notebook")
    jobs = []
    for nb in books:  # check everything before running anything
        params = {"profile": args.profile, **parse_parameters(nb, args.parameter or [])}
        if args.inplace:
            out = nb
        elif args.output:
            out = Path(args.output)
            if out.exists() and not args.force:
                raise KDLibError(f"{str(out)!r} exists; pass --force to overwrite it")
        else:
            out = root / "_build" / "executed" / args.profile / nb.name
        jobs.append((nb, out, params))
    env = os.environ
    if args.force_recompute:
        env["KDLIB_RECOMPUTE"] = "1"
    # the kernel inherits this: figures go into the notebook whatever MPLBACKEND the shell has (CI sets Agg)
    env["MPLBACKEND"] = INLINE_BACKEND
    import papermill as pm

    for nb, out, params in jobs:
        print(f"[kdbook] {nb.relative_to(root)} --profile {args.profile} -> {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=out.parent)
        os.close(fd)
        try:
            pm.execute_notebook(str(nb), tmp, parameters=params, cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=args.progress, log_output=args.log_output)
            hide_parameters(Path(tmp))
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return 0


def parse_shard(text: str) -> tuple:
    """``"i/N"`` → ``(i, N)``, 1 ≤ i ≤ N."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise KDLibError(f"shard {text!r} is not of the form i/N; valid choices: 1/N ... N/N, e.g. 1/4") from None
    if not (n >= 1 and 1 <= i <= n):
        raise KDLibError(f"shard {text!r} is out of range; valid choices: 1/{max(n, 1)} ... {max(n, 1)}/{max(n, 1)}")
    return i, n


def shard_plan(plan: dict, i: int, n: int) -> dict:
    """The rows and runs of ``plan`` that shard ``i`` of ``n`` makes: each run (by hash) belongs to exactly one
    shard, ``int(hash) mod n``, whatever machine or order computes the split."""
    mine = lambda e: int(e.hash, 16) % n == i - 1  # noqa: E731
    out = {row: [e for e in exps if mine(e)] for row, exps in plan.items()}
    return {row: exps for row, exps in out.items() if exps}


def cmd_experiment(args) -> int:
    from .chapters import CHAPTERS, chapter_plan
    from .report import results_table
    from .runner import run_plan

    planned = [k for k, c in CHAPTERS.items() if c.plan]
    if args.missing and (args.dry_run or args.force or args.batch is not None):
        other = "--dry-run" if args.dry_run else "--force" if args.force else "--batch"
        raise KDLibError(f"--missing lists what is not stored and trains nothing: drop {other}")
    if args.chapter == "all" and (args.dry_run or args.missing):  # every plan at once: a run two chapters share once
        plan = {f"{k}: {row}": exps for k in planned for row, exps in chapter_plan(k, args.profile).items()}
    else:
        check_choice("chapter", args.chapter,
                     planned + (["all (with --dry-run or --missing)"] if not (args.dry_run or args.missing) else ["all"]))
        plan = chapter_plan(args.chapter, args.profile)
    if args.only:
        unknown = [r for r in args.only if r not in plan]
        if unknown:
            raise KDLibError(f"unknown row {unknown[0]!r}; valid choices: {choices(plan)}")
        plan = {r: plan[r] for r in args.only}
    if args.shard:
        plan = shard_plan(plan, *parse_shard(args.shard))
        n = len({e.hash for exps in plan.values() for e in exps})
        print(f"[kdbook] shard {args.shard}: {n} of the plan's runs (teachers are made by whichever shard needs "
              "them first; the others wait and reuse them)")
    if args.dry_run:
        return _dry_run(args, plan)
    if args.missing:
        return _missing(plan)
    if args.batch is not None:
        raise KDLibError(f"--batch {args.batch} is for a --dry-run only; a real run takes the plan's batch sizes")
    results = run_plan(plan, force=args.force, progress=True if args.progress else None)
    for task in dict.fromkeys(exps[0].task for exps in plan.values()):  # one table per task (metrics differ)
        rows = [r for r, exps in plan.items() if exps[0].task == task]
        print(results_table(results, rows).to_string(), end="\n\n")
    measure = CHAPTERS[args.chapter].measure
    if measure is not None and args.shard:
        print("[kdbook] measurements (timings) are not taken in a shard: run the chapter unsharded once the "
              "shards are done, on an otherwise idle machine")
    elif measure is not None and not args.only:
        from .profiles import get_profile
        from .report import size_speed_table

        for rec in measure(get_profile(args.profile), force=args.force):
            if rec.get("kind") == "size_speed":
                print(f"size and speed on {rec['config']['device']}:")
                print(size_speed_table(rec).round(2).to_string())
            else:
                import pandas as pd

                print(f"{rec['kind']}:")
                print(pd.DataFrame(rec["rows"]).round(4).to_string(index=False))
    return 0


def cmd_estimate(args) -> int:
    import pandas as pd

    from .chapters.cost import by_chapter, gpu_estimate
    from .dryrun import H100_BF16_FLOPS, SECONDS_PER_OP, UTILISATION

    rec = gpu_estimate(args.chapters or None, teacher=args.teacher, steps=args.steps, force=args.force,
                       progress=bool(args.progress))
    print(f"[kdbook] an estimate, not a measurement: counted FLOPs and operator calls on the real data; an H100 at "
          f"{UTILISATION[0]:.0%} (fast) or {UTILISATION[1]:.0%} (slow) of its {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s "
          f"bf16 peak, and {SECONDS_PER_OP[0] * 1e6:.0f} or {SECONDS_PER_OP[1] * 1e6:.0f} µs at least per "
          "operator call")
    with pd.option_context("display.width", 200):
        print(by_chapter(rec).round(3).to_string())
    print(f"[kdbook] stored: results/gpu/cost/measurements/gpu_estimate-{rec['hash']}.json")
    return 0


def cmd_bench(args) -> int:
    import pandas as pd

    from .bench import stored_bench, stored_bench_stacked, stored_bench_tuning

    if args.stacked and args.tuning:
        raise KDLibError("--stacked and --tuning are two benches; valid choices: one of them, or neither")
    if args.tuning:
        from .chapters.cost import tuning_table

        rec = stored_bench_tuning(force=args.force, examples=args.examples, rounds=args.rounds,
                                  progress=bool(args.progress))
        with pd.option_context("display.width", 200):
            print(tuning_table(rec).df.to_string())
        print(f"[kdbook] stored: results/{rec['config']['profile']}/cost/measurements/bench_tuning-{rec['hash']}.json")
        return 0
    if args.stacked:
        rec = stored_bench_stacked(force=args.force, examples=args.examples, rounds=args.rounds,
                                   stacks=tuple(args.stacked), progress=bool(args.progress))
        print(f"[kdbook] S seeds one after another against the same S stacked, on {rec['examples']} {rec['data']} "
              f"examples, {rec['config']['rounds']} rounds (median, min, max over rounds)")
        rows = {}
        for S, v in rec["summary"].items():
            for k in ("sequential examples/s", "stacked examples/s", "speedup"):
                rows[f"S={S}: {k}"] = v[k]
            ends = [v["h100 estimate"][e]["speedup"] for e in ("fast", "slow")]
            rows[f"S={S}: H100 estimate, speedup"] = {"median": None, "min": min(ends), "max": max(ends)}
        with pd.option_context("display.width", 200):
            print(pd.DataFrame(rows).T.round(2).to_string())
        print(f"[kdbook] stored: results/{rec['config']['profile']}/cost/measurements/bench_stacked-{rec['hash']}.json")
        return 0
    rec = stored_bench(force=args.force, examples=args.examples, rounds=args.rounds, seeds=args.seeds,
                       progress=bool(args.progress))
    rows = {**rec["summary"]["examples_per_s"], **{f"ratio {k}": v for k, v in rec["summary"]["ratios"].items()}}
    print(f"[kdbook] bench on {rec['examples']} {rec['data']} examples, {rec['config']['rounds']} rounds "
          f"(median, min, max over rounds; examples/s, or a ratio of times)")
    with pd.option_context("display.width", 200):
        print(pd.DataFrame(rows).T.round(2).to_string())
    print(f"[kdbook] stored: results/{rec['config']['profile']}/cost/measurements/bench-{rec['hash']}.json")
    return 0


def _missing(plan: dict) -> int:
    """Print every run of ``plan`` (the runs it starts from included, each once) that has no stored record, with
    how long it should take at the pace of the plan's stored runs (:func:`_estimates`)."""
    from .config import closure
    from .store import stored_path

    runs = {}
    for row, exps in plan.items():
        for exp in exps:
            for e in closure(exp):
                runs.setdefault(e.hash, (e, row))
    missing = [(e, row) for e, row in runs.values() if stored_path(e) is None]
    minutes = _estimates([e for e, _ in runs.values()])
    for e, row in missing:
        m = minutes.get(e.hash)
        print(f"{e.hash}  {e.task:<5} {e.label or e.method}, seed {e.seed}  (row: {row})"
              + (f"  ≈ {m:.0f} min" if m is not None else ""))
    line = f"[kdbook] {len(runs) - len(missing)} of the plan's {len(runs)} runs are stored; {len(missing)} missing"
    known = [minutes[e.hash] for e, _ in missing if e.hash in minutes]
    if known:
        line += (f"; ≈ {sum(known) / 60:.1f} h of training for {len(known)} of them, at the pace of the stored runs "
                 "(their wall times, on their machines)")
    again, hours = _weights_to_remake([e for e, _ in missing])
    if again:
        line += (f"; first, {again} stored run{' is' if again == 1 else 's are'} trained again for "
                 f"{'its' if again == 1 else 'their'} weights (≈ {hours:.1f} h)")
    print(line)
    return 0


def _weights_to_remake(missing: list) -> tuple[int, float]:
    """Print the stored runs whose weights the ``missing`` runs start from (a teacher, a masked LM, a first stage)
    and that are not in this machine's cache: the runner trains them again first. Their stored time is what that
    costs; a record made with other CPU kernels than this machine's, or on another maker's CPU (whose BLAS code path
    differs), may not be reproduced to the last digits (then
    the runner replaces it and warns, and the runs made from the old weights stay as they were). Returns how many
    and their hours."""
    import torch

    from .config import closure
    from .runner import REPRODUCED_ATOL, has_weights
    from .store import cpu_model, load_record, stored_path

    here = torch.backends.cpu.get_cpu_capability()
    vendor = cpu_model().get("cpu_vendor")
    needed = {d.hash: d for e in missing for d in closure(e)[:-1]}
    again = [(d, stored_path(d)) for d in needed.values()]
    again = [(d, path) for d, path in again if path is not None and not has_weights(d)]
    total = 0.0
    for d, path in again:
        rec = load_record(path, ())
        minutes = rec.get("wall_time_s", 0) / 60
        total += minutes
        hw = rec.get("hardware") or {}
        made_on, made_by = hw.get("cpu_capability"), hw.get("cpu_vendor")
        if made_on and made_on != here:
            note = f"; its record was made with {made_on} kernels and this CPU has {here}"
        elif made_by and vendor and made_by != vendor:
            note = f"; its record was made on a {made_by} CPU and this one is {vendor}"
        else:
            note = ""
        note += f": it may not be reproduced to {REPRODUCED_ATOL:g}" if note else ""
        print(f"{d.hash}  {d.task:<5} {d.label or d.method}, seed {d.seed}  stored, weights not cached: trained again "
              f"first (≈ {minutes:.0f} min){note}")
    return len(again), total / 60


def _kind(exp) -> str:
    """What sets a run's pace apart from its task's: its method, architecture (a run that starts from another's
    weights: that run's), loss terms and augmentation."""
    import json

    def model(m: dict):
        return [m["kind"], m["run"]["method"], model(m["run"]["model"])] if m.get("kind") == "from_run" else m

    d = exp.to_dict()
    return json.dumps([d["method"], model(d["model"]), sorted(d["hparams"]), type(exp.augment).__name__])


def _estimates(exps: list) -> dict:
    """Minutes each run of ``exps`` without a record should take, from the stored ones: the median wall time of
    the stored runs of the same kind (:func:`_kind`) on the same task (other seeds); else, for each other task with
    stored runs of that kind, their median time per training example and epoch, times how much slower this task is
    than that one (the median ratio over the kinds stored on both: longer or shorter inputs) and this run's
    examples and epochs, the median over those tasks. A run with neither has no estimate.

    Paces are per example of the task's own training set (as a run without augmentation records it): a run on an
    augmented transfer set is the larger by its augmentation, which is part of its kind (a pair task's rewrites grow
    it about twice as much as a one-sentence task's, so such an estimate carried across the two is rough)."""
    from collections import defaultdict
    from statistics import median

    from .store import load_record, stored_path

    minutes, n_train = defaultdict(list), {}
    per_example = defaultdict(lambda: defaultdict(list))  # kind -> task -> minutes per training example and epoch
    paths = {e.hash: stored_path(e) for e in exps}
    timed = []
    for e in exps:
        rec = load_record(paths[e.hash], ()) if paths[e.hash] is not None else {}
        if isinstance(rec.get("wall_time_s"), (int, float)) and rec.get("n_train") and e.epochs:
            timed.append((e, rec["wall_time_s"] / 60))
            if e.augment is None:  # the training set itself, not a transfer set grown from it
                n_train[e.task, e.train_size, e.subset_seed] = rec["n_train"]
    for e, wall in timed:
        kind = _kind(e)
        minutes[kind, e.task].append(wall)
        if (n := n_train.get((e.task, e.train_size, e.subset_seed))) is not None:
            per_example[kind][e.task].append(wall / (n * e.epochs))

    def slower(task: str, than: str) -> float | None:
        ratios = [median(v[task]) / median(v[than]) for v in per_example.values() if task in v and than in v]
        return median(ratios) if ratios else None

    out = {}
    for e in exps:
        if paths[e.hash] is not None:
            continue
        kind, n = _kind(e), n_train.get((e.task, e.train_size, e.subset_seed))
        if minutes[kind, e.task]:
            out[e.hash] = median(minutes[kind, e.task])
            continue
        scaled = [median(v) * r for t, v in per_example[kind].items() if (r := slower(e.task, t)) is not None]
        if n and scaled:
            out[e.hash] = median(scaled) * n * e.epochs
    return out


def _dry_run(args, plan: dict) -> int:
    import pandas as pd

    from .dryrun import default_store, dry_run

    if args.force or args.shard:
        raise KDLibError("--dry-run stores no result; it takes neither --force nor --shard")
    rows = dry_run(plan, steps=args.steps, store=default_store(), progress=bool(args.progress), batch=args.batch)
    standin = rows[0]["standin"]
    print(f"[kdbook] dry run of {args.chapter}'s {args.profile} plan: {len(rows)} distinct runs of "
          f"{sum(len(v) for v in plan.values())}, {args.steps} step(s) each"
          + (f" of at most {args.batch} examples" if args.batch else "") + ", synthetic data, bf16 autocast on CPU"
          + (f"; stand-in weights of the shape of {', '.join(standin)}" if standin else ""))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).drop(columns="standin").to_string(index=False))
    print(f"[kdbook] every run of the plan built and trained; no result was stored (the dry run's own runs are in "
          f"{default_store()})")
    return 0


def cmd_build(args) -> int:
    root = _root()
    # the jupyter-book beside this Python (a venv that is not activated), else the one on PATH
    sibling = Path(sys.executable).parent / "jupyter-book"
    exe = str(sibling) if sibling.is_file() else shutil.which("jupyter-book")
    if exe is None:
        raise KDLibError("jupyter-book is not installed here; install the book with pip install -e .")
    cmd = [exe, "build", str(root), "--builder", "html"]
    if not args.no_strict:
        cmd += ["-W", "-n", "--keep-going"]
    if args.all:
        cmd.append("--all")
    print("[kdbook]", " ".join(cmd))
    return subprocess.run(cmd, cwd=root).returncode


def cmd_results(args) -> int:
    import pandas as pd

    from .chapters import CHAPTERS
    from .profiles import PROFILES
    from .store import BadRecord, iter_records, results_dir

    if args.profile:
        check_choice("profile", args.profile, PROFILES)
    base = results_dir()
    if args.chapter:
        stored = {p.name for p in base.glob("*/*") if p.is_dir()}
        check_choice("chapter", args.chapter, sorted(set(CHAPTERS) | stored | {"teachers"}))
    rows, bad = [], []
    for path, r in iter_records(args.profile, args.chapter):
        if isinstance(r, BadRecord):
            bad.append(str(r))
            continue
        c, best = r["config"], r["best"]
        metric = next((k for k in best if k not in ("epoch", "step", "train_loss")), None)
        rows.append({"profile": path.parent.parent.name, "chapter": path.parent.name, "hash": r["hash"],
                     "label": r.get("label", ""), "task": c.get("task"), "method": c.get("method"),
                     "hparams": c.get("hparams") or "", "seed": c.get("seed"), "n_train": r.get("n_train"),
                     "dev": f"{metric} {best[metric]:.2f}" if metric else "not evaluated",
                     "wall_s": r.get("wall_time_s"), "device": r.get("hardware", {}).get("gpu", "cpu")})
    if rows:
        df = pd.DataFrame(rows)
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 40):
            print(df.to_string(index=False))
    else:
        print(f"no result records under {base}" + (f" for profile {args.profile}" if args.profile else ""))
    for line in bad:
        print(f"bad record: {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="kdbook", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"kdlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="execute chapters with papermill")
    r.add_argument("notebooks", nargs="*", help="chapter notebooks or chapter keys (e.g. hinton)")
    r.add_argument("--all", action="store_true", help="every chapter of the book (as _toc.yml lists them)")
    r.add_argument("--profile", default="cpu", help="smoke, cpu or gpu (default cpu)")
    r.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter (checked against the parameters cell)")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--inplace", action="store_true", help="write the executed chapter back into chapters/")
    where.add_argument("--output", help="where to write the executed notebook (one chapter)")
    r.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    r.add_argument("--recompute", dest="force_recompute", action="store_true",
                   help="ignore stored records and train again (KDLIB_RECOMPUTE=1)")
    r.add_argument("--progress", action="store_true", help="papermill's cell progress bar")
    r.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("experiment", help="run a chapter's experiments (no papermill; for GPU machines)")
    e.add_argument("chapter", help="chapter key, e.g. hinton ('all' with --dry-run or --missing: every chapter's "
                   "plan)")
    e.add_argument("--profile", default="cpu")
    e.add_argument("--only", nargs="+", metavar="ROW", help="only these rows of the plan")
    e.add_argument("--force", action="store_true", help="train again even where a record is stored")
    e.add_argument("--progress", action="store_true", help="force progress bars on")
    e.add_argument("--shard", metavar="i/N", help="run only shard i of N (1-based): a deterministic split of the "
                   "plan's runs, for a Slurm job array or several GPUs; start the N shards at once")
    e.add_argument("--dry-run", action="store_true", help="check the plan without its data or a GPU: each distinct "
                   "run for a few steps on synthetic data, bf16 autocast, a stand-in of the teacher's shape where its "
                   "weights cannot be fetched; no result is stored")
    e.add_argument("--missing", action="store_true", help="list the plan's runs that have no stored record (the "
                   "runs they start from included), each with an estimate of its time from the stored runs, and train "
                   "nothing")
    e.add_argument("--steps", type=int, default=2, help="optimiser steps per run of a --dry-run (default 2)")
    e.add_argument("--batch", type=int, metavar="N", help="at most N examples per step of a --dry-run (default: each "
                   "run's own batch size; a smaller one takes the same code paths, faster where bf16 is slow on CPU)")
    e.set_defaults(func=cmd_experiment)

    t = sub.add_parser("estimate", help="estimate the gpu profile's H100 hours from a counted dry run (stored)")
    t.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapter keys (default: every planned chapter)")
    t.add_argument("--teacher", help="the gpu profile's teacher checkpoint (default: as this machine plans it; "
                   "bert-base-uncased: as a machine with the hub does, with a stand-in of its shape)")
    t.add_argument("--steps", type=int, default=2, help="optimiser steps per counted run (default 2)")
    t.add_argument("--force", action="store_true", help="count again even where the estimate is stored")
    t.add_argument("--progress", action="store_true", help="progress bars of the counted runs")
    t.set_defaults(func=cmd_estimate)

    h = sub.add_parser("bench", help="kdlib's loop against the Trainer recipe for KD, side by side (stored; time it "
                       "on an otherwise idle machine)")
    h.add_argument("--examples", type=int, default=1500, help="training examples per run (default 1500)")
    h.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    h.add_argument("--seeds", type=int, default=3, help="seeds per KD setting in the workload (default 3)")
    h.add_argument("--stacked", type=int, nargs="+", metavar="S",
                   help="instead: S seeds one after another against the same S trained as one stack (kdlib.stacked)")
    h.add_argument("--tuning", action="store_true",
                   help="instead: two jobs sharing the CPU (threads), and the compiled student step against eager")
    h.add_argument("--force", action="store_true", help="measure again even where the bench is stored")
    h.add_argument("--progress", action="store_true", help="a progress bar over rounds and sides")
    h.set_defaults(func=cmd_bench)

    b = sub.add_parser("build", help="render the book to _build/html (warnings are errors)")
    b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    b.add_argument("--all", action="store_true", help="rebuild every page")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("results", help="list stored result records")
    s.add_argument("--profile")
    s.add_argument("--chapter")
    s.set_defaults(func=cmd_results)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "profile", None) and args.func is not cmd_results:
            from .profiles import PROFILES

            check_choice("profile", args.profile, PROFILES)
        return args.func(args)
    except KDLibError as err:
        print(f"kdbook: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
