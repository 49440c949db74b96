"""Training objectives by name: what an experiment's ``method`` means.

Each objective wraps a loss from :mod:`kdlib.losses` for the training loop. New chapters add methods
by registering an :class:`~kdlib.train.Objective` subclass here; the loop stays the same.
"""
from __future__ import annotations

import inspect

from . import losses
from .errors import KDLibError, check_choice, choices
from .train import Objective


class FineTune(Objective):
    """Cross-entropy with the gold labels (MSE with the gold score for regression)."""

    def loss(self, out, batch):
        return losses.hard_loss(out.logits, batch["labels"])


class LabelSmoothing(Objective):
    """Cross-entropy against smoothed one-hot targets (Szegedy et al. 2016)."""

    def __init__(self, epsilon: float = 0.1):
        self.epsilon = losses.check_weight("epsilon", epsilon)

    def loss(self, out, batch):
        return losses.label_smoothing_ce(out.logits, batch["labels"], self.epsilon)


class HintonKD(Objective):
    """(1 − α)·CE + α·T²·KL(teacher_T ‖ student_T) (Hinton et al. 2015)."""

    teacher_outputs = ("logits",)

    def __init__(self, T: float = 2.0, alpha: float = 0.5):
        self.T = losses.check_temperature(T)
        self.alpha = losses.check_weight("alpha", alpha)

    def loss(self, out, batch):
        return losses.hinton_kd(out.logits, batch["teacher_logits"], batch["labels"], self.T, self.alpha)


class LogitMSE(Objective):
    """(1 − α)·CE + α·‖z_t − z_s‖² (Ba & Caruana 2014; Tang et al. 2019's BiLSTM_SOFT is α = 1)."""

    teacher_outputs = ("logits",)

    def __init__(self, alpha: float = 1.0):
        self.alpha = losses.check_weight("alpha", alpha)

    def loss(self, out, batch):
        soft = losses.logit_mse(out.logits, batch["teacher_logits"])
        if self.alpha == 1:
            return soft
        return (1 - self.alpha) * losses.hard_loss(out.logits, batch["labels"]) + self.alpha * soft


METHODS: dict[str, type] = {
    "finetune": FineTune,
    "label_smoothing": LabelSmoothing,
    "kd": HintonKD,
    "logit_mse": LogitMSE,
}


def method_params(method: str) -> list:
    check_choice("method", method, METHODS)
    params = inspect.signature(METHODS[method]).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def make_objective(method: str, hparams: dict | None = None) -> Objective:
    """Build the objective for ``method``; an unknown hyper-parameter is an error naming the valid ones."""
    valid = method_params(method)
    for key in hparams or {}:
        if key not in valid:
            raise KDLibError(f"unknown hyper-parameter {key!r} for method {method!r}; "
                             f"valid choices: {choices(valid) or 'none'}")
    return METHODS[method](**(hparams or {}))


def needs_teacher(method: str) -> bool:
    check_choice("method", method, METHODS)
    return bool(METHODS[method].teacher_outputs)
