"""``kdbook bench``: kdlib's loop against the common ``transformers.Trainer`` recipe for KD, side by side in one run.

Every side trains the same student (a copy of the checkpoint's first layers) by Hinton KD (``losses.hinton_kd``,
the same function on every side) with the same optimiser (fused AdamW, linear warm-up and decay, clipping at 1),
batch and examples, for one epoch, without dev evaluation:

* ``trainer, padded``: a ``Trainer`` subclass that runs the teacher on every batch, every row padded to the
  maximum length (the recipe most KD tutorials give);
* ``trainer, dynamic``: the same, each batch padded to its longest row;
* ``trainer, grouped``: the same, batches of similar length (``train_sampling_strategy="group_by_length"``);
* ``kdlib``: the teacher's logits made once for the training set (timed, and counted), then :func:`kdlib.train.train`
  with length-bucketed batches.

Two workloads: **one run** (each side's examples per second; kdlib's with and without its cache), and **the
book's workload**, ``runs`` students sharing one teacher (``seeds`` seeds × two KD settings), where kdlib makes its
cache once and the Trainer runs the teacher on every batch of every run. Sides are interleaved over ``rounds``
(their order rotated) so that a slow spell of a shared machine falls on all of them; the record keeps every
round's seconds and the medians. The same command runs on a GPU (bf16 autocast there, as the book's loop).
"""
from __future__ import annotations

import queue
import statistics
import tempfile
import time

import torch

from .errors import KDLibError

SIDES = ("trainer, padded", "trainer, dynamic", "trainer, grouped", "kdlib")
#: the two KD settings of the workload (the book's KD row, and a softer one)
SETTINGS = ({"T": 2.0, "alpha": 0.5}, {"T": 4.0, "alpha": 0.9})


def _data(task: str, n: int, seed: int = 0):
    """``n`` training examples of ``task``: the local GLUE copy where there is one, else synthetic ones."""
    from .data import load_task, synthetic_task

    import os

    try:
        return load_task(task, "train").subset(n, seed), "glue"
    except (KDLibError, OSError):  # no local copy, and no hub (a ConnectionError is an OSError)
        if os.environ.get("KDLIB_GLUE_DIR"):  # a folder the user named: its error, not a silent fallback
            raise
        return synthetic_task(task, "train", n, seed), "synthetic"


def _teacher(checkpoint: str, num_labels: int):
    """The teacher: the checkpoint with a head drawn under seed 0 (its weights do not change the time)."""
    from .models import load_classifier

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_classifier(checkpoint, num_labels).eval()


def _student(checkpoint: str, layers: tuple, num_labels: int):
    """A fresh student: a copy of the checkpoint's ``layers``."""
    from .models import student_from_teacher

    return student_from_teacher(checkpoint, layers, num_labels)


class _KDTrainer:
    """Made on first use: a ``transformers.Trainer`` whose loss runs the teacher on the batch."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is None:
            from transformers import Trainer

            from .losses import hinton_kd

            class KDTrainer(Trainer):
                def __init__(self, *a, teacher=None, T=2.0, alpha=0.5, **kw):
                    super().__init__(*a, **kw)
                    self.teacher, self.T, self.alpha = teacher.to(self.args.device), T, alpha

                def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                    labels = inputs.pop("labels")
                    with torch.no_grad():
                        teacher_logits = self.teacher(**inputs).logits
                    out = model(**inputs)
                    loss = hinton_kd(out.logits, teacher_logits, labels, self.T, self.alpha)
                    return (loss, out) if return_outputs else loss

            cls.cls = KDTrainer
        return cls.cls


def trainer_run(side: str, enc, tokenizer, teacher, student, setting: dict, batch_size: int, max_length: int,
                lr: float, seed: int) -> float:
    """One epoch of the Trainer recipe ``side`` on ``enc``; returns the seconds of ``trainer.train()``."""
    from transformers import DataCollatorWithPadding, TrainingArguments

    rows = [{"input_ids": enc.input_ids[i], "token_type_ids": enc.token_type_ids[i],
             "attention_mask": [1] * len(enc.input_ids[i]), "labels": int(enc.labels[i])} for i in range(len(enc))]
    padded = side == "trainer, padded"
    collator = DataCollatorWithPadding(tokenizer, padding="max_length" if padded else True,
                                       max_length=max_length if padded else None)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=lr,
            weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,  # 0.1: a ratio
            optim="adamw_torch_fused", seed=seed, save_strategy="no", eval_strategy="no", report_to=[],
            logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
            bf16=torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if side == "trainer, grouped" else "random")
        trainer = _KDTrainer.get()(model=student, args=args, train_dataset=rows, data_collator=collator,
                                   teacher=teacher, **setting)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # its summary line per run, nothing timed
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def kdlib_cache(teacher, enc, pad_id: int) -> tuple:
    """The teacher's logits for every example, as the book caches them; returns ``(logits, seconds)``."""
    from .train import make_loader, predict

    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher.to(device)
    start = time.perf_counter()
    logits = predict(teacher, make_loader(enc, 256, False, pad_id=pad_id), device=device)
    return logits, time.perf_counter() - start


def kdlib_run(task: str, enc, student, logits, setting: dict, batch_size: int, lr: float, seed: int,
              pad_id: int) -> float:
    """One epoch of kdlib's loop on ``enc`` with cached teacher logits; returns its seconds."""
    from .methods import make_objective
    from .steps import OptimArgs
    from .teachers import CachedTeacher, TeacherSource
    from .train import TrainArgs, train

    step = make_objective("kd", dict(setting)).make_step(student, OptimArgs(lr=lr))
    source = TeacherSource(CachedTeacher({"logits": logits}), None)
    start = time.perf_counter()
    train(step, enc, None, task, TrainArgs(epochs=1, batch_size=batch_size, evals_per_epoch=0, keep="last", seed=seed),
          teacher=source, pad_id=pad_id, progress=False)
    return time.perf_counter() - start


def _workload(task: str, examples: int, checkpoint: str, max_length: int) -> tuple:
    """``(spec, tokenizer, data, source, encoded, pad id)``: a bench's training examples, encoded."""
    from .data import encode, get_task
    from .models import load_tokenizer, quiet_transformers

    spec = get_task(task)
    quiet_transformers()
    tok = load_tokenizer(checkpoint)
    data, source = _data(task, examples)
    return spec, tok, data, source, encode(tok, data, max_length), tok.pad_token_id or 0


def _cached_workload(task: str, examples: int, checkpoint: str, max_length: int) -> tuple:
    """:func:`_workload` and the teacher's logits for its examples, for a bench whose sides all read them (made
    once here, untimed)."""
    spec, tok, data, source, enc, pad = _workload(task, examples, checkpoint, max_length)
    logits, _ = kdlib_cache(_teacher(checkpoint, spec.num_labels), enc, pad)
    return spec, tok, data, source, enc, pad, logits


def stacked_run(task: str, enc, students: list, logits, setting: dict, batch_size: int, lr: float,
                pad_id: int) -> float:
    """One epoch of ``students`` (seeds 0, 1, ...) trained as one stack (:mod:`kdlib.stacked`) on ``enc`` with
    cached teacher logits; returns its seconds."""
    from .methods import make_objective
    from .stacked import train_stacked
    from .steps import OptimArgs
    from .teachers import CachedTeacher, TeacherSource
    from .train import TrainArgs

    source = TeacherSource(CachedTeacher({"logits": logits}), None)
    start = time.perf_counter()
    train_stacked(make_objective("kd", dict(setting)), students, list(range(len(students))), enc, None, task,
                  TrainArgs(epochs=1, batch_size=batch_size, evals_per_epoch=0, keep="last"), OptimArgs(lr=lr),
                  teacher=source, pad_id=pad_id, progress=False)
    return time.perf_counter() - start


def _counted(f) -> dict:
    """The training steps' work of ``f()`` (:mod:`kdlib.flops`): FLOPs and operator calls per step."""
    from . import flops
    from .dryrun import environment

    with environment(**{flops.ENV: "1"}), flops.run_tally() as tally:
        f()
    t = tally["train"]
    return {"flops_per_step": t["flops"] / t["calls"], "ops_per_step": t["ops"] / t["calls"], "steps": t["calls"]}


def bench_stacked(examples: int = 1500, rounds: int = 3, stacks: tuple = (3, 5), task: str = "sst2",
                  checkpoint: str = "minilm-l6", layers: tuple = (0, 1), batch_size: int = 32,
                  max_length: int = 128, lr: float = 1e-4, progress: bool = False) -> dict:
    """S seeds of one KD run (the book's row, T 2, α 0.5) trained one after another against the same S trained as
    one stack, for each S of ``stacks``: one epoch each, the teacher's logits cached beforehand (shared, not
    timed); sides interleaved over ``rounds``, their order alternated. Besides the seconds, the work of a
    stacked step and of a lone one is counted on a few steps (:mod:`kdlib.flops`), and an H100's time for
    each is estimated as the gpu profile's is (:func:`kdlib.dryrun.estimate`'s model)."""
    from tqdm import tqdm

    from .data import encode
    from .dryrun import H100_BF16_FLOPS, SECONDS_PER_OP, UTILISATION

    check(examples=examples, rounds=rounds, batch_size=batch_size, task=task, stacks=stacks)
    spec, tok, data, source, enc, pad, logits = _cached_workload(task, examples, checkpoint, max_length)
    setting = SETTINGS[0]

    def students(n):
        return [_student(checkpoint, layers, spec.num_labels) for _ in range(n)]

    def sequential(n):
        return sum(kdlib_run(task, enc, m, logits, setting, batch_size, lr, s, pad) for s, m in enumerate(students(n)))

    out = []
    bar = tqdm(total=rounds * len(stacks) * 2, desc="bench (stacks)", disable=not progress)
    for r in range(rounds):
        times = {}
        for n in stacks:
            sides = ("sequential", "stacked") if r % 2 == 0 else ("stacked", "sequential")
            for side in sides:
                times[f"{side} {n}"] = sequential(n) if side == "sequential" else \
                    stacked_run(task, enc, students(n), logits, setting, batch_size, lr, pad)
                bar.update(1)
        out.append(times)
    bar.close()
    few = encode(tok, data.subset(8 * batch_size, 0), max_length)  # a few steps are enough to count a step
    counts = {"lone": _counted(lambda: kdlib_run(task, few, students(1)[0], logits[:len(few)], setting, batch_size,
                                                 lr, 0, pad))}
    for n in stacks:
        counts[f"stacked {n}"] = _counted(lambda n=n: stacked_run(task, few, students(n), logits[:len(few)], setting,
                                                                  batch_size, lr, pad))
    return {"data": source, "examples": len(enc), "rounds": out, "counts": counts,
            "summary": summarize_stacked(out, counts, len(enc), stacks, H100_BF16_FLOPS, UTILISATION, SECONDS_PER_OP)}


def summarize_stacked(rounds: list, counts: dict, n: int, stacks, peak: float, utilisation, per_op) -> dict:
    """Medians (and extremes) over rounds of each side's examples per second (S seeds' examples) and of the
    speed-up (sequential seconds / stacked seconds); the H100 estimate of a step's time,
    max(FLOPs / (u · peak), calls · τ), for S lone steps and one stacked step, at both ends of (u, τ)."""
    def med(f):
        vals = [f(r) for r in rounds]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    out = {}
    lone = counts["lone"]
    for S in stacks:
        st = counts[f"stacked {S}"]
        h100 = {}
        for end, u, tau in (("fast", max(utilisation), min(per_op)), ("slow", min(utilisation), max(per_op))):
            def t(c):
                return max(c["flops_per_step"] / (u * peak), c["ops_per_step"] * tau)
            h100[end] = {"sequential_s_per_step": S * t(lone), "stacked_s_per_step": t(st),
                         "speedup": S * t(lone) / t(st)}
        out[str(S)] = {
            "sequential examples/s": med(lambda r, S=S: S * n / r[f"sequential {S}"]),
            "stacked examples/s": med(lambda r, S=S: S * n / r[f"stacked {S}"]),
            "speedup": med(lambda r, S=S: r[f"sequential {S}"] / r[f"stacked {S}"]),
            "ops per step: S lone steps / one stacked step": S * lone["ops_per_step"] / st["ops_per_step"],
            "flops per step: one stacked step / S lone steps": st["flops_per_step"] / (S * lone["flops_per_step"]),
            "h100 estimate": h100,
        }
    return out


# ---------------------------------------------------------------------------------------------------
# Threads and compile: how to run the book's jobs on a small shared CPU
# ---------------------------------------------------------------------------------------------------
def _epoch_steps(task: str, enc, student, logits, setting: dict, batch_size: int, lr: float, pad_id: int,
                 compiled: bool = False, epochs: int = 2) -> dict:
    """``epochs`` epochs of KD steps (kdlib's :class:`~kdlib.steps.SingleLossStep`, cached logits) on ``enc``;
    the seconds and the losses of each epoch. The first epoch warms up (a compiled student compiles there)."""
    from .methods import make_objective
    from .steps import OptimArgs
    from .teachers import CachedTeacher
    from .train import make_accelerator, make_loader

    if compiled:
        student = torch.compile(student, dynamic=True)
    torch.manual_seed(0)
    step = make_objective("kd", dict(setting)).make_step(student, OptimArgs(lr=lr))
    loader = make_loader(enc, batch_size, True, 0, pad_id)
    step.configure(epochs * len(loader))
    accelerator = make_accelerator()
    step.prepare(accelerator)
    teacher = CachedTeacher({"logits": logits})
    out = []
    for epoch in range(epochs):
        loader.batch_sampler.set_epoch(epoch)
        step.train(True)
        start, losses = time.perf_counter(), []
        for batch in loader:
            teacher.fill(batch, batch.pop("idx"), "cpu")
            losses.append(step.step(batch, accelerator)["loss"])
        out.append({"seconds": time.perf_counter() - start, "losses": losses})
    return out


def _job(threads: int, runs: list, args: tuple, barrier, results) -> None:
    """A process of the threads bench: ``threads`` threads, then (after every process is ready) each of ``runs``
    seeds' KD epoch in turn; puts its start and end times."""
    torch.set_num_threads(threads)
    task, enc, logits, setting, batch_size, lr, pad, checkpoint, layers, n = args
    students = [_student(checkpoint, layers, n) for _ in runs]
    barrier.wait()
    start = time.time()
    for student in students:
        kdlib_run(task, enc, student, logits, setting, batch_size, lr, 0, pad)
    results.put((start, time.time()))


#: how two jobs share a CPU of two cores: (processes at once, threads each)
THREADS = {"one after another, 2 threads": (1, 2), "side by side, 1 thread each": (2, 1),
           "side by side, 2 threads each": (2, 2)}


def threads_side(side: str, args: tuple) -> float:
    """The wall seconds of two one-epoch KD jobs run as ``side`` (:data:`THREADS`) says, process start and model
    loading excluded (every process waits at a barrier until all are ready)."""
    import multiprocessing as mp

    procs_n, threads = THREADS[side]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs_n), ctx.Queue()
    runs = [[0, 1]] if procs_n == 1 else [[0], [1]]
    procs = [ctx.Process(target=_job, args=(threads, r, args, barrier, results)) for r in runs]
    for p in procs:
        p.start()
    spans = []
    while len(spans) < len(procs):
        try:
            spans.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise KDLibError(f"a job of the threads bench died (exit code {dead[0].exitcode}); run the bench from "
                                 "`kdbook bench --tuning` or a script whose top level is under "
                                 "`if __name__ == '__main__':`")
    for p in procs:
        p.join()
    return max(e for _, e in spans) - min(s for s, _ in spans)


def bench_tuning(examples: int = 1500, rounds: int = 3, task: str = "sst2", checkpoint: str = "minilm-l6",
                 layers: tuple = (0, 1), batch_size: int = 32, max_length: int = 128, lr: float = 1e-4,
                 progress: bool = False) -> dict:
    """Two measurements for a small shared CPU, interleaved over ``rounds``:

    * **threads**: two one-epoch KD jobs run one after another with 2 threads, side by side with 1 thread
      each (what the book's background re-makes do), or side by side with 2 each (oversubscribed);
    * **compile**: the student's KD step eager against ``torch.compile(student, dynamic=True)``, 2 threads,
      the second epoch timed (the first warms up and compiles), and how far the compiled losses are from the
      eager ones."""
    from tqdm import tqdm

    check(examples=examples, rounds=rounds, batch_size=batch_size, task=task)
    spec, tok, data, source, enc, pad, logits = _cached_workload(task, examples, checkpoint, max_length)
    setting = SETTINGS[0]
    job = (task, enc, logits, setting, batch_size, lr, pad, checkpoint, tuple(layers), spec.num_labels)
    threads_before = torch.get_num_threads()
    out = []
    bar = tqdm(total=rounds * (len(THREADS) + 2), desc="bench (threads, compile)", disable=not progress)
    try:
        for r in range(rounds):
            times = {}
            order = list(THREADS)[r % len(THREADS):] + list(THREADS)[:r % len(THREADS)]
            for side in order:
                times[side] = threads_side(side, job)
                bar.update(1)
            torch.set_num_threads(2)
            for compiled in ((False, True) if r % 2 == 0 else (True, False)):
                torch.manual_seed(0)
                student = _student(checkpoint, layers, spec.num_labels)
                epochs = _epoch_steps(task, enc, student, logits, setting, batch_size, lr, pad, compiled=compiled)
                times["compiled" if compiled else "eager"] = epochs
                bar.update(1)
            out.append(times)
    finally:
        torch.set_num_threads(threads_before)
    bar.close()
    return {"data": source, "examples": len(enc), "rounds": out, "summary": summarize_tuning(out, len(enc))}


def summarize_tuning(rounds: list, n: int) -> dict:
    """Medians (and extremes) over rounds: each threads side's examples per second (both jobs' examples) and its
    ratio to one after another; the compiled step's speed-up over eager (second epochs), its first epoch's
    extra seconds (compiling), and the largest difference of its losses from eager's."""
    def med(f):
        vals = [f(r) for r in rounds]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    first = next(iter(THREADS))
    out = {"threads": {side: {"examples/s": med(lambda r, side=side: 2 * n / r[side]),
                              "ratio to one after another": med(lambda r, side=side: r[first] / r[side])}
                       for side in THREADS}}
    out["compile"] = {
        "speedup (second epoch)": med(lambda r: r["eager"][1]["seconds"] / r["compiled"][1]["seconds"]),
        "compiling, extra seconds (first epoch)": med(lambda r: r["compiled"][0]["seconds"] - r["eager"][0]["seconds"]),
        "largest loss difference": max(abs(a - b) for r in rounds for e in (0, 1)
                                       for a, b in zip(r["eager"][e]["losses"], r["compiled"][e]["losses"])),
        "losses identical": all(r["eager"][e]["losses"] == r["compiled"][e]["losses"] for r in rounds for e in (0, 1)),
    }
    return out


def check(**settings) -> None:
    """One clear line for a bad setting of :func:`bench` (before anything is made or written)."""
    from .data import get_task

    for name in ("examples", "rounds", "seeds", "batch_size"):
        v = settings.get(name, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise KDLibError(f"{name} must be an integer >= 1, got {v!r}")
    bad = [s for s in settings.get("stacks", ()) if not isinstance(s, int) or isinstance(s, bool) or s < 2]
    if bad:
        raise KDLibError(f"a stack's size must be an integer >= 2, got {bad[0]!r}")
    unknown = [s for s in settings.get("sides", ()) if s not in SIDES]
    if unknown:
        raise KDLibError(f"unknown side {unknown[0]!r}; valid choices: {', '.join(SIDES)}")
    task = settings.get("task", "sst2")
    spec = get_task(task)
    if spec.is_regression or spec.unlabelled:
        raise KDLibError(f"the bench trains a classifier; task {task!r} is not one; valid choices: sst2, cola, mrpc, "
                         "rte, qnli, wnli")


def bench(examples: int = 1500, rounds: int = 3, seeds: int = 3, task: str = "sst2", checkpoint: str = "minilm-l6",
          layers: tuple = (0, 1), batch_size: int = 32, max_length: int = 128, lr: float = 1e-4,
          sides: tuple = SIDES, progress: bool = False) -> dict:
    """The measurements of the module's docstring: ``{"rounds": [...], "summary": {...}}`` (seconds per round and
    side; medians of examples per second and their ratios)."""
    from tqdm import tqdm

    check(examples=examples, rounds=rounds, seeds=seeds, batch_size=batch_size, sides=sides, task=task)
    spec, tok, data, source, enc, pad = _workload(task, examples, checkpoint, max_length)
    runs = [(s, setting) for setting in SETTINGS for s in range(seeds)]
    out = []
    bar = tqdm(total=rounds * len(sides), desc="bench", disable=not progress)
    for r in range(rounds):
        order = list(sides[r % len(sides):]) + list(sides[:r % len(sides)])  # rotated: no side always first
        times = {}
        for side in order:
            teacher = _teacher(checkpoint, spec.num_labels)
            if side == "kdlib":
                logits, cache_s = kdlib_cache(teacher, enc, pad)
                one = [kdlib_run(task, enc, _student(checkpoint, layers, spec.num_labels), logits, st,
                                 batch_size, lr, s, pad) for s, st in runs]
                times[side] = {"cache": cache_s, "runs": one}
            else:
                one = [trainer_run(side, enc, tok, teacher, _student(checkpoint, layers, spec.num_labels),
                                   st, batch_size, max_length, lr, s) for s, st in (runs if side == "trainer, grouped"
                                                                                     else runs[:1])]
                times[side] = {"runs": one}
            bar.update(1)
        out.append(times)
    bar.close()
    return {"data": source, "examples": len(enc), "workload_runs": len(runs), "rounds": out,
            "summary": summarize(out, len(enc), len(runs))}


def summarize(rounds: list, n: int, workload: int) -> dict:
    """Medians over rounds: each side's examples per second on one run (kdlib's with and without its cache), the
    book's workload's for the grouped Trainer and kdlib (``workload`` runs, kdlib's cache made once), and the
    ratios to the padded recipe and to the grouped Trainer."""
    def med(f):
        vals = [f(r) for r in rounds]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}

    s = {}
    for side in rounds[0]:
        s[f"{side}: one run"] = med(lambda r, side=side: n / r[side]["runs"][0])
    if "kdlib" in rounds[0]:
        s["kdlib: one run with its cache"] = med(lambda r: n / (r["kdlib"]["runs"][0] + r["kdlib"]["cache"]))
        s["kdlib: workload, cache included"] = med(lambda r: workload * n / (sum(r["kdlib"]["runs"]) +
                                                                            r["kdlib"]["cache"]))
    if "trainer, grouped" in rounds[0]:
        s["trainer, grouped: workload"] = med(lambda r: workload * n / sum(r["trainer, grouped"]["runs"]))
    ratios = {}
    if "kdlib" in rounds[0] and "trainer, grouped" in rounds[0]:
        ratios["kdlib / trainer, grouped: workload"] = med(
            lambda r: sum(r["trainer, grouped"]["runs"]) / (sum(r["kdlib"]["runs"]) + r["kdlib"]["cache"]))
        ratios["kdlib / trainer, grouped: one run with its cache"] = med(
            lambda r: r["trainer, grouped"]["runs"][0] / (r["kdlib"]["runs"][0] + r["kdlib"]["cache"]))
    if "kdlib" in rounds[0] and "trainer, padded" in rounds[0]:
        ratios["kdlib / trainer, padded: one run"] = med(lambda r: r["trainer, padded"]["runs"][0] /
                                                        r["kdlib"]["runs"][0])
    return {"examples_per_s": s, "ratios": ratios}


def _stored(name: str, fn, lists: tuple, force: bool, stored_only: bool, kw: dict) -> dict | None:
    """``fn(**kw)`` as a stored measurement (``results/<cpu|gpu>/cost/measurements/<name>-<hash>.json``, with the
    usual provenance), keyed by its settings (``fn``'s defaults updated by ``kw``) and the device."""
    import inspect

    from .store import measurement

    settings = {k: v.default for k, v in inspect.signature(fn).parameters.items() if k != "progress"}
    settings.update({k: v for k, v in kw.items() if k != "progress"})
    settings.update({k: list(settings[k]) for k in lists})
    check(**{k: v for k, v in settings.items() if k in ("examples", "rounds", "seeds", "batch_size", "task", "sides",
                                                       "stacks")})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return measurement(name, "gpu" if device == "cuda" else "cpu", "cost", {**settings, "device": device},
                       lambda: fn(**kw), force=force, stored_only=stored_only)


def stored_bench(force: bool = False, stored_only: bool = False, **kw) -> dict | None:
    """:func:`bench` as a stored measurement (``bench-<hash>.json``); made by it unless stored."""
    return _stored("bench", bench, ("layers", "sides"), force, stored_only, kw)


def stored_bench_stacked(force: bool = False, stored_only: bool = False, **kw) -> dict | None:
    """:func:`bench_stacked` as a stored measurement (``bench_stacked-<hash>.json``)."""
    return _stored("bench_stacked", bench_stacked, ("layers", "stacks"), force, stored_only, kw)


def stored_bench_tuning(force: bool = False, stored_only: bool = False, **kw) -> dict | None:
    """:func:`bench_tuning` as a stored measurement (``bench_tuning-<hash>.json``)."""
    return _stored("bench_tuning", bench_tuning, ("layers",), force, stored_only, kw)
