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

from .config import Experiment, FromRun, Pretrained
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


def shrink(exp: Experiment, steps: int, swap: dict) -> Experiment:
    """``exp`` as the dry run trains it: synthetic data for ``steps`` batches, one epoch, one augmented sample per
    example, checkpoints in ``swap`` replaced, and the same done to every run it depends on (teacher, start,
    generator, masked LM)."""

    def model(m):
        if isinstance(m, FromRun):
            return FromRun(shrink(m.run, steps, swap))
        if getattr(m, "checkpoint", None) in swap:
            return dataclasses.replace(m, checkpoint=swap[m.checkpoint])
        return m

    def value(v):
        return shrink(v, steps, swap) if isinstance(v, Experiment) else v

    teacher = exp.teacher
    if isinstance(teacher, Experiment):
        teacher = shrink(teacher, steps, swap)
    elif isinstance(teacher, Pretrained) and teacher.checkpoint in swap:
        teacher = Pretrained(swap[teacher.checkpoint])
    augment = exp.augment
    if augment is not None:  # one sample per example: the same path, without multiplying the steps
        augment = dataclasses.replace(augment, **{f: 1 for f in ("n_aug", "n_iter") if hasattr(augment, f)})
    if augment is not None and isinstance(getattr(augment, "mlm", None), Experiment):
        augment = dataclasses.replace(augment, mlm=shrink(augment.mlm, steps, swap))
    return exp.replace(data="synthetic", train_size=steps * exp.batch_size, dev_size=DEV_EXAMPLES, epochs=1,
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


def distinct_runs(plan: dict) -> list:
    """``(row, experiment)`` for one experiment per code path of ``plan``, in the plan's order."""
    seen, out = set(), []
    for row, exps in plan.items():
        for exp in exps:
            p = path_of(exp)
            if p not in seen:
                seen.add(p)
                out.append((row, exp))
    return out


@contextmanager
def _environment(**env):
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


def dry_run(plan: dict, steps: int = 2, store: str | Path | None = None, progress: bool = False) -> list:
    """Run one experiment per code path of a gpu ``plan`` as :func:`shrink` makes it, under bf16 autocast, in a
    store of its own (``store``; ``None``: a temporary folder, removed afterwards; see :func:`default_store`),
    never the results. Returns one dict per run: the row, method, task, batch, length, steps and seconds; a
    failure raises with the row named."""
    import shutil

    from .runner import run

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise KDLibError(f"steps must be an integer >= 1, got {steps!r}")
    runs = distinct_runs(plan)
    if not runs:
        raise KDLibError("the plan has no runs to check")
    own = store is None
    root = Path(tempfile.mkdtemp(prefix="kdlib-dryrun-")) if own else Path(store)
    root.mkdir(parents=True, exist_ok=True)
    try:
        configs = [json.dumps(e.to_dict(), default=list) for _, e in runs]  # every run it depends on, too
        used = [c for c in SHAPES if any(f'"{c}"' in text for text in configs)]
        swap = {c: standin(c, root) for c in used if not weights_reachable(c)}
        out = []
        with _environment(KDLIB_RESULTS_DIR=str(root / "results"), KDLIB_CACHE_DIR=str(root / "cache"),
                          KDLIB_MIXED_PRECISION="bf16", KDLIB_RECOMPUTE="0"):
            for row, exp in runs:
                small = shrink(exp, steps, swap)
                t0 = time.perf_counter()
                try:
                    rec = run(small, progress=progress)
                except Exception as err:
                    raise KDLibError(f"dry run of row {row!r} ({exp.method}) failed: {type(err).__name__}: {err}") from err
                out.append({"row": row, "method": exp.method, "task": exp.task, "batch": exp.batch_size,
                            "max_length": exp.max_length, "standin": sorted(swap),
                            "steps": rec["history"][-1]["step"] if rec["history"] else steps,
                            "seconds": round(time.perf_counter() - t0, 2)})
        return out
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
