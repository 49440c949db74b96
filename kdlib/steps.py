"""What one training step does: the objective, the modules it trains and the players that optimise them.

The training loop (:mod:`kdlib.train`) knows no method. It asks the objective for a :class:`TrainingStep`,
which owns

* the *modules* it trains: the student, and whatever the objective adds (a projection from the student's
  width to the teacher's, an MLM generator), each built under the run's seed;
* its *players*: one or more optimisers, each with its parameters, its learning-rate schedule and its
  gradient clipping;
* ``step(batch)``: the forward passes, losses, backward passes and optimiser steps of one step — one
  loss for most methods, or alternating players (a generator that *ascends* the teacher–student
  divergence, a student that descends it).

Most methods are one loss: they subclass :class:`Objective` and override :meth:`Objective.loss`; the
default :class:`SingleLossStep` adapts them. The loop saves and restores every module, optimiser,
scheduler and RNG through ``accelerate``, so a killed run resumes to the same record.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import KDLibError


@dataclass
class OptimArgs:
    """How a player optimises: AdamW with linear warm-up and decay, or Tang et al.'s AdaDelta."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    optimizer: str = "adamw"  # "adadelta": rho 0.95, constant learning rate
    maximize: bool = False  # a player that ascends its loss (a generator)


def make_optimizer(named_params, args: OptimArgs, stacked: bool = False):
    """The player's optimiser; weight decay on matrices, none on biases and norms. ``stacked``: each tensor has a
    leading seed axis (:mod:`kdlib.stacked`), not counted when telling a matrix from a bias."""
    named_params = [(n, p) for n, p in named_params if p.requires_grad]
    if args.optimizer == "adadelta":
        return torch.optim.Adadelta([p for _, p in named_params], lr=args.lr, rho=0.95, maximize=args.maximize)

    def decays(n, p):
        return not (p.ndim - int(stacked) < 2 or "LayerNorm" in n or "norm" in n)

    decay = [p for n, p in named_params if decays(n, p)]
    no_decay = [p for n, p in named_params if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused AdamW is ~6x faster on CPU here (the 30k-row embedding table dominates the step)
        return torch.optim.AdamW(groups, lr=args.lr, fused=True, maximize=args.maximize)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch or device without fused kernels
        return torch.optim.AdamW(groups, lr=args.lr, maximize=args.maximize)


def make_scheduler(optimizer, args: OptimArgs, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    if args.optimizer == "adadelta":  # AdaDelta adapts its own step sizes: no schedule
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)


@dataclass
class Player:
    """One optimiser over some modules' parameters, with its schedule and clipping."""

    name: str
    modules: list  # names of the step's modules this player trains
    args: OptimArgs
    optimizer: object = None
    scheduler: object = None
    params: list = field(default_factory=list)


class Objective:
    """What a run minimises. Subclasses override :meth:`loss`; the base class is plain fine-tuning's shape.

    * ``student_kwargs``: keyword arguments for the student's forward pass (``output_hidden_states``...);
    * ``teacher_quantities``: what the loss reads from the teacher, by name (:data:`kdlib.teachers.QUANTITIES`);
      they arrive as ``batch["teacher_<name>"]``, cached or live as the runner decides;
    * :meth:`build_modules`: trainable modules of the run beside the student (projections...), built under
      the run's seed and reachable as ``self.modules[name]`` in :meth:`loss`;
    * :meth:`make_step`: a :class:`TrainingStep` of its own for methods that are not one loss."""

    student_kwargs: dict = {}
    teacher_quantities: tuple = ()
    #: True when the objective reads no labels (it may train on the label-free ``text`` task)
    label_free: bool = False
    #: True when the objective needs class labels (label smoothing): no regression task (STS-B)
    classification_only: bool = False
    #: True when :meth:`evaluate` scores the dev set itself (a masked LM), not the task's metrics on logits
    evaluates: bool = False
    #: True when the step runs the teacher itself on inputs of its making (MATE-KD's rewritten sentences):
    #: the runner then hands it the live teacher, ``step.teacher.live``, whatever is cached
    needs_live_teacher: bool = False
    #: the kept weights of runs named in the hyper-parameters (a generator's start), loaded by the runner
    #: before :meth:`build_modules`: hyper-parameter name → model
    from_runs: dict = {}
    #: True when :meth:`summarize` wants the student's and the teacher's [CLS] states on the dev set
    summarizes_dev: bool = False
    modules: nn.ModuleDict | None = None

    def loss(self, student_out, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def terms(self, student_out, batch) -> dict | None:
        """The loss's weighted terms by name, summing to it, for an objective that has several (TinyBERT's
        attention, hidden, embedding and prediction terms): each is recorded, so a chapter can plot it."""
        return None

    def forward(self, student, inputs: dict):
        """The student's forward pass for :meth:`loss` (an objective that reads more than the model returns,
        such as attention scores, overrides it)."""
        return student(**inputs, **self.student_kwargs)

    def build_modules(self, student, teacher_config=None) -> dict:
        """Trainable modules besides the student, name → module (none by default)."""
        return {}

    def use_tokenizer(self, tokenizer) -> None:
        """Called with the student's tokenizer before training (an objective that masks tokens needs its ids)."""

    def evaluate(self, student, loader, accelerator) -> dict:  # pragma: no cover - abstract
        """Dev metrics computed by the objective itself (only when ``evaluates``)."""
        raise NotImplementedError

    def make_step(self, student, args: OptimArgs) -> "TrainingStep":
        return SingleLossStep(self, student, args)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based)."""

    def on_step_start(self, step: int, total_steps: int) -> None:
        """Called before each optimiser step (0-based, counted over the whole run, resumed runs included)."""

    def summarize(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> dict:
        """What to record about the student's dev-set states at the kept evaluation (e.g. ALP's attention
        weights averaged over the dev set). Both have shape (examples, layers + 1, hidden)."""
        return {}

    def examples(self, step: "TrainingStep", dev_enc, tokenizer, seed: int) -> dict | None:
        """What to record about a few dev examples once training ends (MATE-KD: its generator's rewrites with
        both models' predictions), as JSON-ready data; ``None`` (the default) records nothing. ``seed`` fixes any
        sampling."""
        return None

    def teacher_floats(self, shapes: dict, student_depth: int) -> int:
        """How many cached teacher numbers one training example's loss reads (the cost column); ``shapes`` maps
        each cached quantity to its per-example shape (live quantities are computed per step, not stored)."""
        return sum(math.prod(shapes[k]) for k in self.teacher_quantities if k in shapes)


class TrainingStep:
    """Owns the modules a run trains and the players that optimise them; :meth:`step` does one step."""

    def __init__(self, objective: Objective, modules: dict, players: list):
        if "student" not in modules:
            raise KDLibError("a training step needs a 'student' module")
        unknown = [m for p in players for m in p.modules if m not in modules]
        if unknown:
            raise KDLibError(f"a player trains unknown module {unknown[0]!r}; valid choices: {', '.join(modules)}")
        self.objective, self.modules, self.players = objective, dict(modules), list(players)
        self.teacher = None  # the run's teacher source, set by the loop (live quantities)

    @property
    def student(self):
        return self.modules["student"]

    def configure(self, total_steps: int) -> None:
        """Build every player's optimiser and schedule (``total_steps`` optimiser steps each)."""
        for p in self.players:
            named = [(f"{m}.{n}", q) for m in p.modules for n, q in self.modules[m].named_parameters()]
            p.optimizer = make_optimizer(named, p.args)
            p.scheduler = make_scheduler(p.optimizer, p.args, total_steps)

    def prepare(self, accelerator) -> None:
        """Hand modules, optimisers and schedules to ``accelerate`` (devices, mixed precision, state saving);
        always in the same order, so that a saved state loads back."""
        names = list(self.modules)
        prepared = accelerator.prepare(*[self.modules[n] for n in names],
                                       *[p.optimizer for p in self.players], *[p.scheduler for p in self.players])
        k = len(names)
        self.modules = dict(zip(names, prepared[:k]))
        for i, p in enumerate(self.players):
            p.optimizer, p.scheduler = prepared[k + i], prepared[k + len(self.players) + i]
        if self.objective.modules is not None:
            self.objective.modules = nn.ModuleDict({n: self.modules[n] for n in names if n != "student"})
        for p in self.players:
            p.params = [q for m in p.modules for q in self.modules[m].parameters() if q.requires_grad]

    def train(self, mode: bool = True) -> None:
        for m in self.modules.values():
            m.train(mode)

    def update(self, player: Player, loss: torch.Tensor, accelerator) -> None:
        """Backward ``loss`` into ``player``'s parameters, clip, step its optimiser and schedule."""
        accelerator.backward(loss)
        if player.args.max_grad_norm:
            accelerator.clip_grad_norm_(player.params, player.args.max_grad_norm)
        player.optimizer.step()
        player.scheduler.step()
        for p in self.players:  # no gradient leaks into the next player's step
            p.optimizer.zero_grad(set_to_none=True)

    def step(self, batch: dict, accelerator) -> dict:  # pragma: no cover - abstract
        """One training step on ``batch``; returns the losses to show (floats), the first being the main one."""
        raise NotImplementedError


class SingleLossStep(TrainingStep):
    """One loss, one optimiser over the student and the objective's own modules."""

    def __init__(self, objective: Objective, student, args: OptimArgs):
        modules = {"student": student, **(dict(objective.modules) if objective.modules is not None else {})}
        super().__init__(objective, modules, [Player("student", list(modules), args)])

    def step(self, batch: dict, accelerator) -> dict:
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        with accelerator.autocast():
            out = self.objective.forward(self.student, inputs)
            terms = self.objective.terms(out, batch)
            loss = sum(terms.values()) if terms else self.objective.loss(out, batch)
        self.update(self.players[0], loss, accelerator)
        return {"loss": loss.item(), **{k: float(v.detach()) for k, v in (terms or {}).items()}}
