"""Many seeds of one configuration trained as one stacked model.

A book's row is three or five seeds of one configuration: the same student shape, the same data, the same
loss. Trained one after another, each seed pays every operator call of every step. Stacked, the seeds' weights
become one set of tensors with a leading seed axis (``torch.func.stack_module_state``), and one call of the
student (``torch.func.functional_call`` under ``torch.func.vmap``) runs every seed on its own batch. A GPU step
of a small student is bound by operator calls, not arithmetic (see the cost appendix), so S stacked seeds cost
about the calls of one; a CPU step is bound by arithmetic, which stacking does not reduce (and padding each
seed's batch to the stack's longest adds): on a CPU a stack is slower than its lone runs (the cost appendix).

Each seed keeps what it would have alone:

* its initial weights, built under its own seed;
* its data order (its own length-bucketed batches; a step's batches are padded to their longest row, and
  seeds whose batches differ in size at a step, as a short last batch does, are run as separate groups);
* its gradient clipping (the norm over that seed's gradients only) and its optimiser state (AdamW is
  elementwise: one optimiser over stacked tensors updates each seed as its own would);
* its evaluations, its best (or last) state, its record.

Its dropout is its own too, but not the masks it would draw alone (``vmap`` draws one mask per seed from the
generator of the stack), so a stacked seed's record is not the lone run's: the stack is part of its config
(:attr:`kdlib.config.Experiment.stack`). With dropout off the two agree to float rounding (a test checks it).

Stacks take the methods that are one loss on a BERT student with a cached teacher (fine-tuning, Hinton KD,
PKD...); :func:`unstackable` says why any other cannot be stacked. A stacked run is not resumed mid-way.
Operators without a batching rule (``kl_div``, in Hinton KD's loss) run once per seed inside ``vmap``.
"""
from __future__ import annotations

import copy
import math
import time
import warnings

import torch
from torch import nn

from . import flops
from .data import Encoded, bucketed_batches, collate
from .errors import KDLibError
from .metrics import task_metrics
from .steps import Objective, OptimArgs, make_optimizer, make_scheduler
from .train import LossCurve, PeakMemory, TrainArgs, TrainResult, eval_points, make_accelerator, make_loader, \
    predict, progress_enabled

#: the inputs a BERT student reads; the other keys of a batch (labels, teacher quantities) go to the loss
INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def unstackable(objective: Objective, model) -> str | None:
    """Why ``objective`` on ``model`` cannot run stacked, or ``None`` when it can."""
    if not hasattr(getattr(model, "config", None), "num_attention_heads"):
        return f"the student ({type(model).__name__}) is not a BERT-style transformer"
    return _objective_reason(objective)


def _objective_reason(objective: Objective) -> str | None:
    if type(objective).make_step is not Objective.make_step or type(objective).forward is not Objective.forward:
        return f"method {type(objective).__name__} runs a step or a forward pass of its own"
    if objective.modules is not None or objective.evaluates or objective.needs_live_teacher:
        return f"method {type(objective).__name__} trains modules besides the student, or scores dev itself"
    from .teachers import split_quantities

    live = split_quantities(objective.teacher_quantities)[1]
    if live:
        return f"the teacher's {', '.join(live)} run live, in the loop"
    return None


def stackable_methods() -> list:
    """The methods whose objective (with its default settings) can be stacked."""
    from .methods import METHODS

    out = []
    for name, cls in METHODS.items():
        try:
            objective = cls()
        except (TypeError, KDLibError):  # a method without defaults for every setting
            continue
        if _objective_reason(objective) is None:
            out.append(name)
    return out


class StackedStudent(nn.Module):
    """``S`` students of one shape as one module: each weight is a tensor ``(S, *shape)``."""

    def __init__(self, models: list, student_kwargs: dict | None = None):
        super().__init__()
        from torch.func import stack_module_state

        self.size = len(models)
        base = copy.deepcopy(models[0]).to("meta")
        # eager attention: plain matmuls, which vmap batches (the fused kernels have no batching rule on a CPU)
        base.config._attn_implementation = "eager"
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.weights = nn.ParameterList([nn.Parameter(params[n].detach().clone()) for n in self.names])
        for i, (n, b) in enumerate(buffers.items()):
            self.register_buffer(f"buffer_{i}", b.clone())
        self.buffer_names = list(buffers)
        self.base = [base]  # a list: not a submodule (its meta tensors stay out of .to() and state_dict)
        self.student_kwargs = dict(student_kwargs or {})

    def train(self, mode: bool = True):
        super().train(mode)
        self.base[0].train(mode)
        return self

    def stacked(self, seeds=None) -> tuple:
        """``(params, buffers)`` by name, each ``(S, ...)``, or only the rows ``seeds`` (positions in the stack)."""
        params = dict(zip(self.names, self.weights))
        buffers = {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)}
        if seeds is not None and len(seeds) < self.size:
            rows = torch.tensor(seeds, device=self.weights[0].device)
            params = {n: p.index_select(0, rows) for n, p in params.items()}
            buffers = {n: b.index_select(0, rows) for n, b in buffers.items()}
        return params, buffers

    def one(self, params: dict, buffers: dict, inputs: dict):
        """One seed's forward pass (called under vmap): its weights, its inputs ``(B, L)``."""
        from torch.func import functional_call

        mask = inputs["attention_mask"]
        # the additive 4-d mask eager attention adds to its scores (0 to attend, the float minimum not to)
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        additive = additive.expand(-1, 1, mask.shape[1], -1)
        return functional_call(self.base[0], (params, buffers), (),
                               {**inputs, "attention_mask": additive, **self.student_kwargs})

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, **kwargs):
        """Every seed on the same inputs ``(B, L)`` (the dev set); outputs carry the seed axis *last*
        (logits ``(B, C, S)``), so that code reading a batch-first model (``predict``) reads all seeds at once."""
        from torch.func import vmap

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask if attention_mask is not None
                  else torch.ones_like(input_ids)}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        inputs = {k: v.expand(self.size, *v.shape) for k, v in inputs.items()}
        params, buffers = self.stacked()
        out = vmap(self.one, randomness="different")(params, buffers, inputs)
        return _SeedsLast(out)

    def state_of(self, position: int, template: dict) -> dict:
        """Seed ``position``'s weights as a state dict with ``template``'s keys (a lone model's state dict)."""
        own = {n: p[position] for n, p in zip(self.names, self.weights)}
        own.update({n: getattr(self, f"buffer_{i}")[position] for i, n in enumerate(self.buffer_names)})
        return {k: own[k].detach().cpu().clone() if k in own else v.clone() for k, v in template.items()}


class _SeedsLast:
    """A model output whose tensors have the seed axis moved from first to last."""

    def __init__(self, out):
        self.logits = torch.movedim(out.logits, 0, -1)
        states = getattr(out, "hidden_states", None)
        self.hidden_states = None if states is None else tuple(torch.movedim(h, 0, -1) for h in states)


def clip_per_seed(grads: list, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for each seed of stacked gradients ``(S, ...)``: each seed's gradients
    are scaled by ``max_norm / (its norm + 1e-6)`` when that is below 1."""
    if not grads:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads])  # (P, S)
    total = torch.linalg.vector_norm(norms, dim=0)  # (S,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.ndim - 1)))


def pad_to(t: torch.Tensor, width: int, value) -> torch.Tensor:
    """``t`` ``(B, L)`` padded on the right to ``(B, width)``."""
    return t if t.shape[1] == width else torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)


def stack_batches(batches: list, pad_id: int) -> dict:
    """One batch per seed (equal sizes) → one batch whose tensors are ``(S, B, ...)``, inputs padded to the
    longest row of any."""
    width = max(b["input_ids"].shape[1] for b in batches)
    out = {}
    for k in batches[0]:
        parts = [pad_to(b[k], width, pad_id if k == "input_ids" else 0) if k in INPUTS else b[k] for b in batches]
        out[k] = torch.stack(parts)
    return out


def train_stacked(objective: Objective, models: list, seeds: list, train_enc: Encoded, dev_enc: Encoded | None,
                  task: str, args: TrainArgs, optim: OptimArgs, teacher=None, keep_weights: bool = False,
                  pad_id: int = 0, progress: bool | None = None, desc: str = "stack",
                  dev_teacher_cls: torch.Tensor | None = None) -> list:
    """Train ``models`` (one per seed of ``seeds``, each built under its own seed) as one stack; returns one
    :class:`~kdlib.train.TrainResult` per seed, as :func:`kdlib.train.train` would for that seed alone
    (``args.seed`` is ignored: each seed's data order comes from its own seed). The stack's dropout draws
    from a generator seeded by the first seed."""
    from accelerate.utils import set_seed
    from torch.func import vmap
    from tqdm import tqdm

    from .config import seed_for

    reason = unstackable(objective, models[0])
    if reason:
        raise KDLibError(f"these runs cannot be stacked: {reason}; a stack takes a method that is one loss, on a "
                         f"BERT student, with a cached teacher; valid choices: {', '.join(stackable_methods())}")
    if len(models) != len(seeds) or len(models) < 2:
        raise KDLibError(f"a stack needs two or more models, one per seed; got {len(models)} for seeds {seeds}")
    evaluating = bool(args.evals_per_epoch) and dev_enc is not None
    if args.keep == "best" and not evaluating:
        raise KDLibError("keep='best' needs dev evaluations; set evals_per_epoch ≥ 1 or keep='last'")
    progress = progress_enabled() if progress is None else progress
    accelerator = make_accelerator()
    device = accelerator.device
    set_seed(seed_for(seeds[0], "stack"))
    S = len(seeds)
    stack = StackedStudent(models, objective.student_kwargs).to(device)
    templates = [m.state_dict() for m in models]
    lengths = [len(x) for x in train_enc.input_ids]
    steps_per_epoch = math.ceil(len(lengths) / args.batch_size)
    total_epochs = math.ceil(args.epochs)
    total_steps = max(1, int(round(args.epochs * steps_per_epoch)))
    # one optimiser over the stacked tensors, decay decided by each weight's own shape (without the seed axis)
    optimizer = make_optimizer(list(zip(stack.names, stack.weights)), optim, stacked=True)
    scheduler = make_scheduler(optimizer, optim, total_steps)
    if teacher is not None:
        teacher.to(device)
    dev_dl = make_loader(dev_enc, args.eval_batch_size, False, pad_id=pad_id) if evaluating else None

    def seed_loss(params, buffers, batch):
        out = stack.one(params, buffers, {k: batch[k] for k in INPUTS if k in batch})
        return objective.loss(out, batch)

    summarize = objective.summarizes_dev and dev_teacher_cls is not None
    per_seed_loss = vmap(seed_loss, randomness="different")
    # an operator without a batching rule (kl_div) runs once per seed inside vmap: right, and said once here
    warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented "
                            "the batching rule")
    states = [{"history": [], "best": None, "best_logits": None, "best_state": None, "best_summary": None,
               "losses": []} for _ in seeds]

    def evaluate(epoch_pos, gstep, train_losses, at_end):
        logits = cls = None
        if evaluating and summarize:  # (n, C, S) and (n, layers + 1, H, S)
            logits, got = predict(stack, dev_dl, device=device.type, quantities=("cls",), **objective.student_kwargs)
            cls = got["cls"]
        elif evaluating:
            logits = predict(stack, dev_dl, device=device.type, **objective.student_kwargs)
        for s, st in enumerate(states):
            point = {"epoch": round(epoch_pos, 4), "step": gstep, "train_loss": round(train_losses[s], 6)}
            own = None if logits is None else logits[..., s].contiguous()
            if own is not None:
                point.update(task_metrics(task, own.numpy(), dev_enc.labels))
            st["history"].append(point)
            main = next((k for k in point if k not in ("epoch", "step", "train_loss")), None)
            better = st["best"] is None or (main is not None and point[main] > st["best"][main])
            if (args.keep == "best" and better) or (args.keep == "last" and at_end):
                st["best"], st["best_logits"] = dict(point), own
                if summarize:
                    st["best_summary"] = objective.summarize(cls[..., s].float(), dev_teacher_cls.float())
                if keep_weights:
                    st["best_state"] = stack.state_of(s, templates[s])
        stack.train(True)

    with PeakMemory(device) as memory:
        t0 = time.perf_counter()
        global_step = 0
        for epoch in range(total_epochs):
            objective.on_epoch_start(epoch, total_epochs)
            stack.train(True)
            order = [bucketed_batches(lengths, args.batch_size, seed * 1000 + epoch) for seed in seeds]
            last_step = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            points = eval_points(steps_per_epoch, args.evals_per_epoch, last_step)
            running, curves = [0.0] * S, [LossCurve(total_steps, st["losses"]) for st in states]
            bar = tqdm(total=last_step, desc=f"{desc} epoch {epoch + 1}/{total_epochs}", disable=not progress,
                       leave=False, mininterval=2.0)
            for i in range(last_step):
                objective.on_step_start(global_step, total_steps)
                batches = []
                for s in range(S):
                    b = collate(train_enc, order[s][i], pad_id)
                    idx = b.pop("idx")
                    if teacher is not None:
                        teacher.fill(b, idx, "cpu")
                    batches.append(b)
                groups = {}  # seeds whose batches have one size run together
                for s, b in enumerate(batches):
                    groups.setdefault(len(b["input_ids"]), []).append(s)
                losses = torch.zeros(S)
                with flops.counting("train", sum(flops.tokens_of(b) for b in batches)):
                    total = 0.0
                    with accelerator.autocast():
                        for members in groups.values():
                            batch = {k: v.to(device) for k, v in stack_batches([batches[s] for s in members],
                                                                                 pad_id).items()}
                            params, buffers = stack.stacked(members)
                            got = per_seed_loss(params, buffers, batch)
                            total = total + got.sum()
                            losses[members] = got.detach().float().cpu()
                    total.backward()
                    if optim.max_grad_norm:
                        clip_per_seed([w.grad for w in stack.weights if w.grad is not None], optim.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                global_step += 1
                for s in range(S):
                    running[s] += float(losses[s])
                    curves[s].add(global_step, {"loss": float(losses[s])})
                bar.update(1)
                if i in points:
                    final = i + 1 == last_step and epoch == total_epochs - 1
                    if evaluating or final:
                        evaluate(epoch + (i + 1) / steps_per_epoch, global_step, [r / (i + 1) for r in running],
                                 final)
            bar.close()
        wall = time.perf_counter() - t0
    return [TrainResult(st["history"], st["best"], st["best_logits"], st["best_state"], wall, st["best_summary"],
                        st["losses"], memory.record()) for st in states]
