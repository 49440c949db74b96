"""One training loop for fine-tuning and every distillation method in the book.

The loop knows nothing about any method: a :class:`~kdlib.steps.TrainingStep` does each step (its modules,
its optimisers), the teacher source (:mod:`kdlib.teachers`) puts the teacher's quantities into the batch,
and the loop iterates epochs, evaluates on dev when asked, keeps the best or the last state, and saves a
resumable state after every epoch.

Built on ``accelerate``: device placement, bf16 autocast on a GPU, several processes through
``accelerate launch``, and ``save_state``/``load_state``, which restore every module, optimiser, scheduler
and RNG, so that a killed run started again continues from its last finished epoch to the same record.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from . import flops
from .data import Encoded, bucketed_batches, collate, padded_tokens
from .errors import KDLibError, check_choice
from .metrics import task_metrics
from .models import forward_quantities
from .store import atomic_torch_save, atomic_write_text

#: points of a record's ``losses`` curve: each the mean of every loss term over its share of the run's steps
LOSS_POINTS = 50


@dataclass
class TrainArgs:
    epochs: float = 3
    batch_size: int = 32
    evals_per_epoch: int = 1  # 0: no dev evaluation
    keep: str = "best"  # "best" dev evaluation, or the "last" state
    seed: int = 0
    eval_batch_size: int = 128


class _BucketSampler(Sampler):
    def __init__(self, lengths, batch_size, seed, shuffle):
        self.lengths, self.batch_size, self.seed, self.shuffle = lengths, batch_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _batches(self):
        return bucketed_batches(self.lengths, self.batch_size,
                                self.seed * 1000 + self.epoch if self.shuffle else None)

    def __iter__(self):
        return iter(self._batches())

    def __len__(self):
        return math.ceil(len(self.lengths) / self.batch_size)


def make_loader(enc: Encoded, batch_size: int, shuffle: bool, seed: int = 0, pad_id: int = 0) -> DataLoader:
    sampler = _BucketSampler([len(x) for x in enc.input_ids], batch_size, seed, shuffle)
    return DataLoader(range(len(enc)), batch_sampler=sampler, collate_fn=lambda ix: collate(enc, ix, pad_id))


PRECISION_ENV = "KDLIB_MIXED_PRECISION"
PRECISIONS = ("no", "bf16")


def mixed_precision() -> str:
    """Mixed precision of training and of the teacher's forward passes: ``KDLIB_MIXED_PRECISION`` (``no`` or
    ``bf16``) where set, else bf16 on a GPU and none on a CPU. A gpu dry run (:mod:`kdlib.dryrun`) sets bf16 on a
    CPU, so that the autocast path a GPU takes runs there too."""
    value = os.environ.get(PRECISION_ENV)
    if value:
        check_choice(PRECISION_ENV, value, PRECISIONS)
        return value
    return "bf16" if torch.cuda.is_available() else "no"


def autocast(device_type: str):
    """bf16 autocast on ``device_type`` when :func:`mixed_precision` says so, else a no-op context."""
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=mixed_precision() == "bf16")


def progress_enabled() -> bool:
    env = os.environ.get("KDLIB_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


@torch.no_grad()
def predict(model, loader, accelerator=None, device: str = "cpu", quantities: tuple = (), **forward_kwargs):
    """Logits for every example of ``loader``'s data, in data order (the loader may sort by length).

    With ``quantities`` (names of :data:`kdlib.teachers.QUANTITIES`, e.g. ``("cls",)``) returns
    ``(logits, {name: tensor})``. Under several processes every returned tensor is gathered, so each process
    holds every example. Eval mode, no gradients; bf16 autocast as :func:`mixed_precision` says."""
    model.eval()
    names = tuple(q for q in quantities if q != "logits")
    outs, extra, order = [], {n: [] for n in names}, []
    dev = accelerator.device if accelerator is not None else torch.device(device)
    for batch in loader:
        idx = batch.pop("idx")
        batch.pop("labels", None)
        batch = {k: v.to(dev) for k, v in batch.items()}
        ctx = accelerator.autocast() if accelerator is not None else autocast(dev.type)
        with ctx:
            got = forward_quantities(model, {**batch, **forward_kwargs}, ("logits", *names))
        parts = (got["logits"], *[got[n] for n in names], idx.to(dev))
        if accelerator is not None and accelerator.num_processes > 1:
            # every process's rows, padded to one token length where a quantity has one; the examples
            # a process repeats to even out the last batch come back twice and land on the same row below
            parts = tuple(accelerator.gather(accelerator.pad_across_processes(p, dim=1) if p.ndim >= 3 and
                                             n not in ("cls",) else p)
                          for n, p in zip(("logits", *names, "idx"), parts))
        outs.append(parts[0].cpu())
        for i, n in enumerate(names):
            extra[n].append(parts[1 + i].cpu())
        order.append(parts[-1].cpu())
    order = torch.cat(order)

    n = int(order.max()) + 1 if len(order) else 0

    def in_order(chunks):
        x = torch.cat(chunks)
        result = x.new_empty((n, *x.shape[1:]))
        result[order] = x
        return result

    logits = in_order(outs)
    return (logits, {n: in_order(v) for n, v in extra.items()}) if names else logits


def hidden_states(out) -> tuple:
    """The model output's hidden states, or one clear error when the model did not return them."""
    states = getattr(out, "hidden_states", None)
    if states is None:
        raise KDLibError(f"the model returned no hidden states ({type(out).__name__}); intermediate-layer "
                         "distillation needs a model that accepts output_hidden_states=True")
    return states


class PeakMemory:
    """The peak memory of a run, in MB: on a GPU the allocator's peak since the start (reset there); on a CPU the
    process's resident set, sampled every ``every`` seconds by a thread (a process that made runs before keeps
    what they left, so read it as "the process needed this much", not "this run alone")."""

    def __init__(self, device, every: float = 0.25):
        self.cuda, self.every, self.peak = torch.device(device).type == "cuda", every, 0
        self._stop = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        import threading

        import psutil

        proc, self._stop = psutil.Process(), threading.Event()

        def watch():
            while True:
                self.peak = max(self.peak, proc.memory_info().rss)
                if self._stop.wait(self.every):
                    return

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        return False

    def record(self) -> dict:
        return {"device": "cuda" if self.cuda else "cpu", "what": "allocated" if self.cuda else "process RSS",
                "mb": round(self.peak / 2 ** 20, 1)}


def make_accelerator():
    """An ``accelerate.Accelerator`` with the precision :func:`mixed_precision` says."""
    from accelerate import Accelerator

    try:
        return Accelerator(mixed_precision=mixed_precision())
    except ValueError:  # this process set accelerate up with the other precision (a dry run after a CPU run)
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()  # the precision only; the process group (PartialState) stays
        return Accelerator(mixed_precision=mixed_precision())


def eval_points(steps_per_epoch: int, evals_per_epoch: int, last_step: int) -> set:
    """The 0-based steps of an epoch after which the loop evaluates: ``evals_per_epoch`` evenly spaced ones,
    the epoch's last step always (the run's end needs a state even without dev evaluations)."""
    every = max(1, steps_per_epoch // max(1, evals_per_epoch))
    return {i for i in range(last_step) if i + 1 == last_step or
            ((i + 1) % every == 0 and (i + 1) // every < evals_per_epoch)}


class LossCurve:
    """A run's ``losses`` curve: each shown loss term's mean over every :data:`LOSS_POINTS`-th part of the run
    (and at its end). ``points`` is the list it appends to (a resumed run's, from its saved state)."""

    def __init__(self, total_steps: int, points: list):
        self.every, self.total, self.points, self.terms = max(1, total_steps // LOSS_POINTS), total_steps, points, {}

    def add(self, global_step: int, shown: dict) -> None:
        """The terms of step ``global_step`` (1-based); NaN terms (not measured this step) are left out."""
        for k, v in shown.items():
            if v == v:
                t, n = self.terms.get(k, (0.0, 0))
                self.terms[k] = (t + v, n + 1)
        if (global_step % self.every == 0 or global_step == self.total) and self.terms:
            self.points.append({"step": global_step, **{k: round(t / n, 6) for k, (t, n) in self.terms.items()}})
            self.terms = {}


@dataclass
class TrainResult:
    history: list
    best: dict
    best_dev_logits: torch.Tensor | None = None
    best_state: dict | None = field(default=None, repr=False)
    wall_time_s: float = 0.0
    best_summary: dict | None = None
    losses: list = field(default_factory=list)
    peak_memory: dict | None = None


def _save_state(accelerator, state_dir: Path, epoch: int, loop: dict) -> None:
    """The state after ``epoch``: accelerate's (modules, optimisers, schedules, RNGs of every process) and
    the loop's, in a new folder; ``latest`` names it once complete, and older ones are removed."""
    folder = state_dir / f"epoch-{epoch}"
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder), safe_serialization=False)
    if accelerator.is_main_process:
        atomic_torch_save(loop, folder / "loop.pt")
        atomic_write_text(state_dir / "latest", folder.name + "\n")
        for old in state_dir.glob("epoch-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _load_state(accelerator, state_dir: Path) -> dict | None:
    latest = state_dir / "latest"
    if not latest.is_file():
        return None
    folder = state_dir / latest.read_text().strip()
    if not (folder / "loop.pt").is_file():
        return None
    accelerator.load_state(str(folder))
    return torch.load(folder / "loop.pt", map_location="cpu", weights_only=False)


def train(step, train_enc: Encoded, dev_enc: Encoded | None, task: str, args: TrainArgs,
          teacher=None, state_dir: str | Path | None = None, keep_weights: bool = False,
          pad_id: int = 0, progress: bool | None = None, desc: str = "train",
          dev_teacher_cls: torch.Tensor | None = None) -> TrainResult:
    """Train ``step``'s modules on ``train_enc``; evaluate the student on ``dev_enc`` ``evals_per_epoch`` times
    an epoch (never if 0); keep the best evaluation's state or the last.

    ``teacher`` (a :class:`~kdlib.teachers.TeacherSource`) fills each batch with the quantities the objective
    reads. ``state_dir`` holds the resumable state after each epoch. ``dev_teacher_cls`` (the teacher's dev
    [CLS] states) goes to ``objective.summarize`` with the student's at each evaluation."""
    from accelerate.utils import set_seed
    from tqdm import tqdm

    if not args.epochs or args.epochs <= 0:
        raise KDLibError(f"epochs must be > 0, got {args.epochs}")
    evaluating = bool(args.evals_per_epoch) and dev_enc is not None
    if args.keep == "best" and not evaluating:
        raise KDLibError("keep='best' needs dev evaluations; set evals_per_epoch ≥ 1 or keep='last'")
    objective = step.objective
    progress = progress_enabled() if progress is None else progress
    accelerator = make_accelerator()
    set_seed(args.seed)
    train_dl = make_loader(train_enc, args.batch_size, True, args.seed, pad_id)
    sampler = train_dl.batch_sampler
    steps_per_epoch = len(train_dl)
    total_epochs = math.ceil(args.epochs)
    total_steps = max(1, int(round(args.epochs * steps_per_epoch)))
    step.configure(total_steps)
    step.prepare(accelerator)
    train_dl = accelerator.prepare(train_dl)
    dev_dl = accelerator.prepare(make_loader(dev_enc, args.eval_batch_size, False, pad_id=pad_id)) if evaluating else None
    if teacher is not None:
        teacher.to(accelerator.device)
    summarize = objective.summarizes_dev and dev_teacher_cls is not None
    # the dev tokens as the eval loader pads them (for kdlib.flops)
    dev_lengths = [len(x) for x in dev_enc.input_ids] if evaluating and flops.enabled() else []
    dev_tokens = padded_tokens(dev_lengths, bucketed_batches(dev_lengths, args.eval_batch_size, None)) \
        if dev_lengths else 0

    loop = {"history": [], "best": None, "best_logits": None, "best_state": None, "best_summary": None,
            "epoch": -1, "elapsed": 0.0, "losses": []}
    state_dir = Path(state_dir) if state_dir else None
    if state_dir is not None:
        saved = _load_state(accelerator, state_dir)
        if saved is not None:
            loop = saved
            accelerator.print(f"[{desc}] resuming after epoch {loop['epoch'] + 1} from {state_dir}")

    def kept_weights():
        return {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(step.student).state_dict().items()}

    def evaluate(epoch_pos: float, gstep: int, train_loss: float, at_end: bool):
        point = {"epoch": round(epoch_pos, 4), "step": gstep, "train_loss": round(train_loss, 6)}
        logits = cls = None
        with flops.counting("eval", dev_tokens):
            if evaluating and objective.evaluates:
                point.update(objective.evaluate(step.student, dev_dl, accelerator))
            elif evaluating:
                if summarize:
                    logits, got = predict(step.student, dev_dl, accelerator, quantities=("cls",),
                                          **objective.student_kwargs)
                    cls = got["cls"]
                else:
                    logits = predict(step.student, dev_dl, accelerator, **objective.student_kwargs)
                point.update(task_metrics(task, logits.numpy(), dev_enc.labels))
        loop["history"].append(point)
        main = next((k for k in point if k not in ("epoch", "step", "train_loss")), None)
        better = loop["best"] is None or (main is not None and point[main] > loop["best"][main])
        if (args.keep == "best" and better) or (args.keep == "last" and at_end):
            loop["best"], loop["best_logits"] = dict(point), logits
            if summarize:
                loop["best_summary"] = objective.summarize(cls.float(), dev_teacher_cls.float())
            if keep_weights:
                loop["best_state"] = kept_weights()
        step.train(True)

    with PeakMemory(accelerator.device) as memory:  # stopped however the loop ends
        t0 = time.perf_counter()
        start_epoch = loop["epoch"] + 1
        global_step = start_epoch * steps_per_epoch
        for epoch in range(start_epoch, total_epochs):
            objective.on_epoch_start(epoch, total_epochs)
            # the prepared loader re-sets its sampler's epoch from its own counter on every pass: set that
            getattr(train_dl, "set_epoch", sampler.set_epoch)(epoch)
            step.train(True)
            last_step = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            points = eval_points(steps_per_epoch, args.evals_per_epoch, last_step)
            running, count = 0.0, 0
            curve = LossCurve(total_steps, loop["losses"])  # a part cut by a resume starts afresh, as it did
            bar = tqdm(total=last_step, desc=f"{desc} epoch {epoch + 1}/{total_epochs}", disable=not progress,
                       leave=False, mininterval=2.0)
            for i, batch in enumerate(train_dl):
                if i >= last_step:
                    break
                idx = batch.pop("idx")
                objective.on_step_start(global_step, total_steps)
                with flops.counting("train", flops.tokens_of(batch)):
                    if teacher is not None:
                        teacher.fill(batch, idx, accelerator.device)
                    shown = step.step(batch, accelerator)
                main_loss = next(iter(shown.values()), None)  # the first value is the loss the student descends
                shown = {k: v for k, v in shown.items() if v == v}  # NaN: a value this step did not measure
                global_step += 1
                if main_loss is not None and main_loss == main_loss:
                    running += main_loss
                    count += 1
                curve.add(global_step, shown)
                bar.update(1)
                if count % 20 == 0:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
                at_end = i + 1 == last_step
                if i in points:
                    final = at_end and epoch == total_epochs - 1
                    if evaluating or final:
                        evaluate(epoch + (i + 1) / steps_per_epoch, global_step, running / max(count, 1), final)
            bar.close()
            loop["epoch"] = epoch
            if state_dir is not None:
                loop["elapsed"] = loop["elapsed"] + time.perf_counter() - t0
                t0 = time.perf_counter()
                _save_state(accelerator, state_dir, epoch, loop)
        wall = loop["elapsed"] + time.perf_counter() - t0
    return TrainResult(loop["history"], loop["best"], loop["best_logits"], loop["best_state"], wall,
                       loop["best_summary"], loop["losses"], memory.record())
