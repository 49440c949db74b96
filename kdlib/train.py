"""One training loop for fine-tuning and every distillation method in the book.

The loop knows nothing about any method. An :class:`Objective` (see :mod:`kdlib.methods`) says what the
student's forward pass must return and turns the student's outputs and the batch into a loss; teacher
outputs arrive *in the batch* (``batch["teacher_logits"]`` ...), looked up from a per-example cache by
the batch's ``idx``. Objectives may also react to the start of each epoch (a temperature schedule, say).

Built on ``accelerate``: device placement, bf16 autocast on a GPU, several GPUs through
``accelerate launch``. The teacher never runs inside this loop: its outputs are computed once,
in eval mode under ``no_grad``, and cached on disk (:mod:`kdlib.teacher`).

After every epoch the loop saves a resumable state; a killed run started again continues from the last
finished epoch. The dev set is evaluated ``evals_per_epoch`` times an epoch and the best point kept.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from .data import Encoded, bucketed_batches, collate
from .errors import KDLibError
from .metrics import task_metrics


@dataclass
class TrainArgs:
    epochs: float = 3
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    evals_per_epoch: int = 1
    seed: int = 0
    eval_batch_size: int = 128
    optimizer: str = "adamw"  # "adadelta": Tang et al.'s AdaDelta (rho 0.95), constant learning rate


class Objective:
    """What one step minimises. Subclasses override :meth:`loss`; the base class is plain fine-tuning."""

    #: keyword arguments for the student's forward pass (e.g. ``{"output_hidden_states": True}``)
    student_kwargs: dict = {}
    #: teacher outputs the batch must carry, as keys of the teacher cache (e.g. ``("logits",)``)
    teacher_outputs: tuple = ()

    def loss(self, student_out, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based)."""

    #: True when :meth:`summarize` wants the student's and the teacher's [CLS] states on the dev set
    summarizes_dev: bool = False

    def summarize(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> dict:
        """What to record about the student's dev-set states at the best evaluation (e.g. ALP's attention
        weights averaged over the dev set). Both have shape (examples, layers + 1, hidden)."""
        return {}

    def teacher_floats(self, cache: dict, student_depth: int) -> int:
        """How many cached teacher numbers one training example's loss reads (the cost column)."""
        return sum(int(cache[k][0].numel()) for k in self.teacher_outputs)


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


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def progress_enabled() -> bool:
    env = os.environ.get("KDLIB_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def _optimizer(model, args: TrainArgs):
    if args.optimizer == "adadelta":  # frozen parameters (a static embedding table) stay out of it
        return torch.optim.Adadelta([p for p in model.parameters() if p.requires_grad], lr=args.lr, rho=0.95)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused AdamW is ~6x faster on CPU here (the 30k-row embedding table dominates the step)
        return torch.optim.AdamW(groups, lr=args.lr, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch or device without fused kernels
        return torch.optim.AdamW(groups, lr=args.lr)


@torch.no_grad()
def predict(model, loader, accelerator=None, device: str = "cpu", cls_states: bool = False, **forward_kwargs):
    """Logits for every example of ``loader``'s data, in data order (the loader may sort by length).

    With ``cls_states`` returns ``(logits, cls)`` where ``cls`` holds the [CLS] vector of every hidden state
    (embeddings and each layer), shape (examples, layers + 1, hidden), in float16 to keep caches small.
    Eval mode, no gradients; bf16 autocast on a GPU."""
    model.eval()
    outs, states, order = [], [], []
    if cls_states:
        forward_kwargs = {**forward_kwargs, "output_hidden_states": True}
    for batch in loader:
        idx = batch.pop("idx")
        batch.pop("labels", None)
        if accelerator is not None:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.autocast():
                out = model(**batch, **forward_kwargs)
            logits = out.logits.float()
            logits, idx = accelerator.gather_for_metrics((logits, idx.to(accelerator.device)))
        else:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                out = model(**batch, **forward_kwargs)
            logits = out.logits.float()
        if cls_states:
            states.append(torch.stack([h[:, 0] for h in hidden_states(out)], 1).half().cpu())
        outs.append(logits.cpu())
        order.append(idx.cpu())
    order = torch.cat(order)

    def in_order(parts):
        x = torch.cat(parts)
        result = torch.empty_like(x)
        result[order] = x
        return result

    return (in_order(outs), in_order(states)) if cls_states else in_order(outs)


def hidden_states(out) -> tuple:
    """The model output's hidden states, or one clear error when the model did not return them."""
    states = getattr(out, "hidden_states", None)
    if states is None:
        raise KDLibError(f"the model returned no hidden states ({type(out).__name__}); intermediate-layer "
                         "distillation needs a model that accepts output_hidden_states=True")
    return states


@dataclass
class TrainResult:
    history: list
    best: dict
    best_dev_logits: torch.Tensor | None = None
    best_state: dict | None = field(default=None, repr=False)
    wall_time_s: float = 0.0
    best_summary: dict | None = None


def train(model, train_enc: Encoded, dev_enc: Encoded, task: str, objective: Objective, args: TrainArgs,
          teacher_cache: dict | None = None, state_dir: str | Path | None = None, keep_best: bool = False,
          pad_id: int = 0, progress: bool | None = None, desc: str = "train",
          dev_teacher_cls: torch.Tensor | None = None) -> TrainResult:
    """Train ``model`` on ``train_enc`` with ``objective``; evaluate on ``dev_enc``; return the history.

    ``teacher_cache`` maps an output name ("logits", ...) to a tensor with one row per training example.
    ``state_dir``, if given, holds ``last.pt`` after each epoch so that a killed run resumes.
    ``dev_teacher_cls`` (the teacher's dev-set [CLS] states) is passed to ``objective.summarize`` with the
    student's at each evaluation; the summary at the best evaluation is returned.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    if args.epochs <= 0:
        raise KDLibError(f"epochs must be > 0, got {args.epochs}")
    missing = [k for k in objective.teacher_outputs if not teacher_cache or k not in teacher_cache]
    if missing:
        raise KDLibError(f"objective {type(objective).__name__} needs teacher outputs {missing}; none cached")
    progress = progress_enabled() if progress is None else progress
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    set_seed(args.seed)
    train_dl = make_loader(train_enc, args.batch_size, True, args.seed, pad_id)
    dev_dl = make_loader(dev_enc, args.eval_batch_size, False, pad_id=pad_id)
    sampler = train_dl.batch_sampler
    optimizer = _optimizer(model, args)
    steps_per_epoch = len(train_dl)
    total_epochs = math.ceil(args.epochs)
    total_steps = max(1, int(round(args.epochs * steps_per_epoch)))
    if args.optimizer == "adadelta":  # AdaDelta adapts its own step sizes: no schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, dev_dl,
                                                                        scheduler)
    eval_every = max(1, steps_per_epoch // max(1, args.evals_per_epoch))
    history, best, best_logits, best_state, start_epoch, elapsed = [], None, None, None, 0, 0.0
    summarize = objective.summarizes_dev and dev_teacher_cls is not None
    best_summary = None

    state_path = Path(state_dir) / "last.pt" if state_dir else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        accelerator.unwrap_model(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        history, best, start_epoch, elapsed = saved["history"], saved["best"], saved["epoch"] + 1, saved["elapsed"]
        best_logits, best_state = saved.get("best_logits"), saved.get("best_state")
        best_summary = saved.get("best_summary")
        accelerator.print(f"[{desc}] resuming after epoch {start_epoch} from {state_path}")

    def evaluate(epoch_pos: float, step: int, train_loss: float):
        nonlocal best, best_logits, best_state, best_summary
        if summarize:
            logits, cls = predict(model, dev_dl, accelerator, cls_states=True, **objective.student_kwargs)
        else:
            logits = predict(model, dev_dl, accelerator, **objective.student_kwargs)
        scores = task_metrics(task, logits.numpy(), dev_enc.labels)
        point = {"epoch": round(epoch_pos, 4), "step": step, "train_loss": round(train_loss, 6), **scores}
        history.append(point)
        main = next(iter(scores))
        if best is None or scores[main] > best[main]:
            best, best_logits = dict(point), logits
            if summarize:
                best_summary = objective.summarize(cls.float(), dev_teacher_cls.float())
            if keep_best:
                best_state = {k: v.detach().cpu().clone()
                              for k, v in accelerator.unwrap_model(model).state_dict().items()}
        model.train()

    t0 = time.perf_counter()
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, total_epochs):
        objective.on_epoch_start(epoch, total_epochs)
        # the prepared loader re-sets its sampler's epoch from its own counter on every pass: set that
        getattr(train_dl, "set_epoch", sampler.set_epoch)(epoch)
        model.train()
        last_step = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        running, count = 0.0, 0
        bar = tqdm(total=last_step, desc=f"{desc} epoch {epoch + 1}/{total_epochs}", disable=not progress,
                   leave=False, mininterval=2.0)
        for i, batch in enumerate(train_dl):
            if i >= last_step:
                break
            idx = batch.pop("idx")
            for key in objective.teacher_outputs:
                batch[f"teacher_{key}"] = teacher_cache[key][idx.cpu()].to(accelerator.device).float()
            inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            with accelerator.autocast():
                out = model(**inputs, **objective.student_kwargs)
                loss = objective.loss(out, batch)
            accelerator.backward(loss)
            if args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            running += loss.item()
            count += 1
            bar.update(1)
            if count % 20 == 0:
                bar.set_postfix(loss=f"{running / count:.4f}")
            at_end = i + 1 == last_step
            if at_end or ((i + 1) % eval_every == 0 and (i + 1) // eval_every < args.evals_per_epoch):
                evaluate(epoch + (i + 1) / steps_per_epoch, global_step, running / max(count, 1))
        bar.close()
        if state_path is not None:
            atomic_torch_save({"model": accelerator.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch,
                        "history": history, "best": best, "best_logits": best_logits, "best_state": best_state,
                        "best_summary": best_summary,
                        "elapsed": elapsed + time.perf_counter() - t0}, state_path)
    wall = elapsed + time.perf_counter() - t0
    return TrainResult(history, best, best_logits, best_state, wall, best_summary)
