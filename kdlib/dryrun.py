"""The gpu profile checked without a GPU: every code path of a chapter's gpu plan, a few steps each, on a CPU.

GPUs are rarely at hand where this book is made, and a gpu run that fails after an hour of queueing costs more
than the run. ``kdbook experiment <chapter> --profile gpu --dry-run`` takes the chapter's gpu plan as it is (the
methods, hyper-parameters, batch sizes, sequence lengths, learning rates, chains of runs, augmentations) and runs
each of its distinct runs for ``steps`` optimiser steps:

* on synthetic data of each task's shape (``steps`` batches of training examples, a few dev examples), so that no
  GLUE copy is needed;
* under bf16 autocast (``KDLIB_MIXED_PRECISION=bf16``), the path a GPU takes;
* with the gpu teacher's checkpoint, or, where its weights cannot be fetched (no hub here), a **stand-in** of its
  shape: the same configuration and vocabulary with random weights (seeded), built once in the cache;
* into a throw-away store: nothing it writes is a result.

Runs that differ only by their seed, or by a task of the same kind (single sentences, pairs, scores), take the
same code path, so one of each is run. What it proves: the plan builds, every method's step and every stage's
hand-over runs with the gpu settings and the autocast path, and the teacher's shape fits the students' maps.
What it does not: speed, memory on a GPU, or any result.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .config import Experiment, FromRun, Pretrained, closure
from .data import get_task
from .errors import KDLibError

#: the configurations of checkpoints that a stand-in can take the shape of (BERT-base, uncased: the vocabulary of
#: minilm-l6's tokenizer, which the stand-in borrows)
SHAPES = {"bert-base-uncased": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                    intermediate_size=3072, max_position_embeddings=512, vocab_size=30522)}
DEV_EXAMPLES = 16


def weights_reachable(checkpoint: str) -> bool:
    """Whether ``from_pretrained`` can load ``checkpoint`` here (a local folder, a packaged model, or the hub)."""
    from .models import resolve_checkpoint
    from .profiles import hub_available

    if checkpoint not in SHAPES:
        return True
    try:
        resolve_checkpoint(checkpoint)
    except KDLibError:
        return False
    return hub_available()


def standin(checkpoint: str, folder: Path) -> str:
    """A folder holding a model of ``checkpoint``'s shape with random weights (seed 0) and minilm-l6's
    tokenizer (the same uncased WordPiece vocabulary); made once."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .models import resolve_checkpoint
    from .store import locked

    if checkpoint not in SHAPES:
        raise KDLibError(f"no stand-in shape for checkpoint {checkpoint!r}; valid choices: {', '.join(SHAPES)}")
    target = folder / f"standin-{checkpoint}"
    with locked(target.with_suffix(".json"), "a stand-in checkpoint"):
        if not (target / "config.json").is_file():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = BertModel(BertConfig(**SHAPES[checkpoint]))
            tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".standin-"))
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model.save_pretrained(tmp)
            hf_logging.enable_progress_bar()
            AutoTokenizer.from_pretrained(resolve_checkpoint("minilm-l6")).save_pretrained(tmp)
            os.replace(tmp, target)
    return str(target)


def shrink(exp: Experiment, steps: int, swap: dict, batch: int | None = None) -> Experiment:
    """``exp`` as the dry run trains it: synthetic data for ``steps`` batches, one epoch, one augmented sample per
    example, checkpoints in ``swap`` replaced, and the same done to every run it depends on (teacher, start,
    generator, masked LM). ``batch``: at most this many examples per batch (``None``: the run's own batch size);
    the sequence length and every other setting stay the plan's."""

    def again(e):
        return shrink(e, steps, swap, batch)

    def model(m):
        if isinstance(m, FromRun):
            return FromRun(again(m.run))
        if getattr(m, "checkpoint", None) in swap:
            return dataclasses.replace(m, checkpoint=swap[m.checkpoint])
        return m

    def value(v):
        return again(v) if isinstance(v, Experiment) else v

    teacher = exp.teacher
    if isinstance(teacher, Experiment):
        teacher = again(teacher)
    elif isinstance(teacher, Pretrained) and teacher.checkpoint in swap:
        teacher = Pretrained(swap[teacher.checkpoint])
    augment = exp.augment
    if augment is not None:  # one sample per example: the same path, without multiplying the steps
        augment = dataclasses.replace(augment, **{f: 1 for f in ("n_aug", "n_iter") if hasattr(augment, f)})
    if augment is not None and isinstance(getattr(augment, "mlm", None), Experiment):
        augment = dataclasses.replace(augment, mlm=again(augment.mlm))
    size = exp.batch_size if batch is None else min(batch, exp.batch_size)
    return exp.replace(data="synthetic", batch_size=size, train_size=steps * size, dev_size=DEV_EXAMPLES, epochs=1,
                       model=model(exp.model), teacher=teacher, augment=augment,
                       hparams={k: value(v) for k, v in exp.hp.items()})


def path_of(exp: Experiment) -> tuple:
    """What decides the code a run takes (its method, model, hyper-parameter names, teacher, start, augmentation
    and the kind of its task), not its seed, numbers or task."""
    spec = get_task(exp.task)
    kind = "text" if spec.unlabelled else "score" if spec.is_regression else "pair" if spec.is_pair else "single"
    model = exp.model
    start = path_of(model.run) if isinstance(model, FromRun) else None
    teacher = path_of(exp.teacher) if isinstance(exp.teacher, Experiment) else getattr(exp.teacher, "kind", None)
    return (exp.method, model.kind, start, teacher, tuple(sorted(exp.hp)), getattr(exp.augment, "kind", None), kind,
            exp.keep, bool(exp.evals_per_epoch))


def shape_of(exp: Experiment) -> tuple:
    """:func:`path_of` with the sizes: what decides a run's work per token and per step (its models' shapes, the
    shapes of the runs it depends on), not its seed, numbers, data or task."""
    def model_shape(m):
        if isinstance(m, FromRun):
            return ("from_run", shape_of(m.run))
        return (m.kind, *[(f.name, getattr(m, f.name)) for f in dataclasses.fields(m)])

    t = exp.teacher
    teacher = shape_of(t) if isinstance(t, Experiment) else None if t is None else model_shape(t)
    mlm = getattr(exp.augment, "mlm", None)
    return (path_of(exp), model_shape(exp.model), teacher,
            tuple(shape_of(v) for _, v in sorted(exp.hp.items()) if isinstance(v, Experiment)),
            shape_of(mlm) if isinstance(mlm, Experiment) else None)


def distinct_runs(plan: dict, key=None) -> list:
    """``(row, experiment)`` for one experiment per code path of ``plan`` (per ``key(experiment)``: default
    :func:`path_of`), in the plan's order."""
    key = key or path_of
    seen, out = set(), []
    for row, exps in plan.items():
        for exp in exps:
            p = key(exp)
            if p not in seen:
                seen.add(p)
                out.append((row, exp))
    return out


@contextmanager
def environment(**env):
    """Environment variables set inside, restored (or removed) after."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def default_store() -> Path:
    """Where dry runs keep what they make: a folder of the cache (not of the results), so that the teachers and
    stand-ins one chapter's dry run makes serve the next."""
    from .store import cache_dir

    return cache_dir() / "dryrun"


def dry_run(plan: dict, steps: int = 2, store: str | Path | None = None, progress: bool = False,
            count: bool = False, batch: int | None = None) -> list:
    """Run one experiment per code path of a gpu ``plan`` as :func:`shrink` makes it, under bf16 autocast, in a
    store of its own (``store``; ``None``: a temporary folder, removed afterwards; see :func:`default_store`),
    never the results. Returns one dict per run: the row, method, task, batch (as run), length, steps and seconds;
    a failure raises with the row named. ``batch``: at most this many examples per step (``None``: each run's own
    batch size); the same code paths, faster on a CPU whose bf16 kernels are slow (no AVX-512).

    ``count``: one run per :func:`shape_of` instead, with :mod:`kdlib.flops` counting; each dict then also holds
    ``work``, ``(shape, record)`` for the run and each run it depends on (the record as the dry run made it)."""
    import shutil

    from .runner import run

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise KDLibError(f"steps must be an integer >= 1, got {steps!r}")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise KDLibError(f"batch must be an integer >= 1 or None (each run's own), got {batch!r}")
    if count and batch is not None:
        raise KDLibError("a counted dry run takes each run's own batch size (the estimate counts it); got batch="
                         f"{batch!r}")
    runs = distinct_runs(plan, shape_of if count else path_of)
    if not runs:
        raise KDLibError("the plan has no runs to check")
    own = store is None
    root = Path(tempfile.mkdtemp(prefix="kdlib-dryrun-")) if own else Path(store)
    root.mkdir(parents=True, exist_ok=True)
    results = None
    try:
        configs = [json.dumps(e.to_dict(), default=list) for _, e in runs]  # every run it depends on, too
        used = [c for c in SHAPES if any(f'"{c}"' in text for text in configs)]
        swap = {c: standin(c, root) for c in used if not weights_reachable(c)}
        out = []
        # counted runs are counted afresh, by this code, into records of their own (removed afterwards)
        results = Path(tempfile.mkdtemp(dir=root, prefix=".counted-")) if count else root / "results"
        with environment(KDLIB_RESULTS_DIR=str(results),
                          KDLIB_CACHE_DIR=str(root / "cache"), KDLIB_MIXED_PRECISION="bf16", KDLIB_RECOMPUTE="0",
                          KDLIB_COUNT_FLOPS="1" if count else "0"):
            for row, exp in runs:
                small = shrink(exp, steps, swap, batch)
                t0 = time.perf_counter()
                try:
                    rec = run(small, progress=progress)
                except Exception as err:
                    raise KDLibError(f"dry run of row {row!r} ({exp.method}) failed: {type(err).__name__}: {err}") from err
                out.append({"row": row, "method": exp.method, "task": exp.task, "batch": small.batch_size,
                            "max_length": exp.max_length, "standin": sorted(swap),
                            "steps": rec["history"][-1]["step"] if rec["history"] else steps,
                            "seconds": round(time.perf_counter() - t0, 2)})
                if count:  # the records of its closure, stored by the run above: loaded, not made again
                    out[-1]["work"] = [(shape_of(e), run(s)) for e, s in zip(closure(exp), closure(small))]
        return out
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
        elif count and results is not None:
            shutil.rmtree(results, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# What the gpu profile would take on an H100: an estimate from counted work
# ---------------------------------------------------------------------------------------------------
#: the assumptions of :func:`estimate`, each a (fast, slow) pair; the book's cost page states them
H100_BF16_FLOPS = 989e12  # an H100 SXM's dense bf16 tensor-core peak, FLOP/s (NVIDIA's data sheet)
UTILISATION = (0.5, 0.2)  # the share of that peak a step's matrix products reach
SECONDS_PER_OP = (10e-6, 40e-6)  # what one operator call of an eager step costs at least (dispatch, launch)


def padded_tokens(exp: Experiment, split: str, tokenizer, batch_size: int, memo: dict | None = None) -> tuple:
    """``(examples, token positions, batches)`` of one pass over ``exp``'s real ``split`` as the loop batches it
    (length-bucketed, padded to each batch's longest row). An augmented training set counts its new examples as
    long as their sources. ``memo`` keeps the token lengths of a data set across calls."""
    from .data import bucketed_batches, encode
    from .data import padded_tokens as data_padded_tokens
    from .runner import split_data

    memo = {} if memo is None else memo
    key = (exp.task, split, exp.data, exp.train_size if split == "train" else exp.dev_size, exp.subset_seed,
           exp.max_length, tokenizer.name_or_path)
    if key not in memo:
        memo[key] = [len(x) for x in encode(tokenizer, split_data(exp, split), exp.max_length).input_ids]
    lengths = memo[key]
    batches = bucketed_batches(lengths, batch_size, exp.seed * 1000 if split == "train" else None)
    tokens = data_padded_tokens(lengths, batches)
    times = 1
    if split == "train" and exp.augment is not None:
        times = 1 + next((getattr(exp.augment, f) for f in ("n_aug", "n_iter") if hasattr(exp.augment, f)), 0)
    return len(lengths) * times, tokens * times, len(batches) * times


def _rate(work: dict, part: str) -> tuple:
    w = work.get(part)
    if not w or not w["calls"]:
        return 0.0, 0.0
    return w["flops"] / max(w["tokens"], 1), w["ops"] / w["calls"]


def estimate(plan: dict, steps: int = 2, store: str | Path | None = None, progress: bool = False) -> list:
    """One dict per run of ``plan`` and of every run it depends on (each once): its FLOPs and operator calls on
    the real data, the seconds an H100 would take for them as a (fast, slow) pair under the assumptions above,
    and what bounds the slow one (``arithmetic`` or operator ``calls``). The counts per token and per step come
    from a counted :func:`dry_run` of each shape; the tokens from the task's real data (the local GLUE copy).
    What it leaves out: data loading, making the augmented sets, and work on the host while the GPU waits."""
    import math

    from .models import load_tokenizer
    from .train import TrainArgs

    dry = dry_run(plan, steps=steps, store=store, progress=progress, count=True)
    by_shape = {shape: rec for row in dry for shape, rec in row["work"]}
    swap = dict.fromkeys(dry[0]["standin"]) if dry else {}
    toks, out, caches, memo = {}, [], set(), {}
    everything = {e.hash: e for exps in plan.values() for top in exps for e in closure(top)}
    for exp in everything.values():
        rec = by_shape[shape_of(exp)]
        ckpt = exp.model.checkpoint
        if ckpt not in toks:
            toks[ckpt] = load_tokenizer("minilm-l6" if ckpt in swap else ckpt)  # a stand-in borrows its vocabulary
        tok = toks[ckpt]
        n, train_tokens, batches = padded_tokens(exp, "train", tok, exp.batch_size, memo)
        n_dev, dev_tokens, dev_batches = padded_tokens(exp, "dev", tok, TrainArgs().eval_batch_size, memo)
        steps_total = math.ceil(batches * exp.epochs)
        evals = exp.evals_per_epoch * math.ceil(exp.epochs)
        f_train, o_train = _rate(rec["work"], "train")
        f_eval, o_eval = _rate(rec["work"], "eval")
        flops = f_train * train_tokens * exp.epochs + f_eval * dev_tokens * evals
        ops = o_train * steps_total + o_eval * dev_batches * evals
        cached = (rec.get("teacher_source") or {}).get("cached")
        if cached and isinstance(exp.teacher, Experiment):  # the teacher's forward over the training set, once
            key = (exp.teacher.hash, exp.task, exp.train_size, exp.subset_seed, exp.max_length,
                   json.dumps(exp.augment.making_dict() if exp.augment else None, sort_keys=True))
            if key not in caches:
                caches.add(key)
                flops += _rate(by_shape[shape_of(exp.teacher)]["work"], "eval")[0] * train_tokens
        seconds = [max(flops / (H100_BF16_FLOPS * u), ops * t) for u, t in zip(UTILISATION, SECONDS_PER_OP)]
        out.append({"run": exp.label or exp.method, "task": exp.task, "seed": exp.seed, "hash": exp.hash,
                    "examples": n, "steps": steps_total, "flops": float(f"{flops:.4g}"), "ops": int(ops),
                    "seconds_fast": float(f"{seconds[0]:.4g}"), "seconds_slow": float(f"{seconds[1]:.4g}"),
                    "bound": "arithmetic" if flops / (H100_BF16_FLOPS * UTILISATION[1]) >= ops * SECONDS_PER_OP[1]
                    else "calls"})
    return out
