r"""Distillation losses: pure functions of logits, each beside its equation.

Conventions used everywhere in the book
---------------------------------------
* Logits have shape ``(batch, classes)``; for regression ``(batch, 1)``.
* Reduction: every loss is a **mean over the batch** of a per-example quantity summed over classes
  (``batchmean`` for KL). Nothing is averaged over classes.
* ``alpha`` is the weight of the **distillation** term and ``1 - alpha`` the weight of the hard-label
  cross-entropy, so ``alpha = 0`` is plain fine-tuning and ``alpha = 1`` pure distillation.
* Temperatures are positive; the soft term carries the factor :math:`T^2` (Hinton et al. 2015).

Other code bases scale the same loss differently (torchdistill: alpha on CE; PKD's code: KL averaged
over classes too; TextBrewer and TinyBERT: no :math:`T^2`) — chapter 1 tabulates the differences.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import KDLibError


def check_temperature(T: float) -> float:
    if not T > 0:
        raise KDLibError(f"temperature T must be > 0, got {T}")
    return float(T)


def check_weight(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise KDLibError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def soften(logits: torch.Tensor, T: float) -> torch.Tensor:
    r"""Temperature-scaled softmax :math:`q_i = \exp(z_i/T) / \sum_j \exp(z_j/T)`."""
    return F.softmax(logits / check_temperature(T), dim=-1)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    r"""Hinton's soft term, :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T))`,
    batch mean.

    The factor :math:`T^2` keeps the gradient's size independent of T: the gradient of the KL alone
    with respect to :math:`z_s` is :math:`(q_s - q_t)/T`, which shrinks as :math:`1/T^2` for large T.
    Zero exactly when the student's logits equal the teacher's (up to a constant shift).
    """
    T = check_temperature(T)
    log_p_s = F.log_softmax(student_logits / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * T * T


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       T: float = 1.0) -> torch.Tensor:
    r""":math:`-\sum_i q^t_i \log q^s_i` with both distributions at temperature T, batch mean, no
    :math:`T^2` (TinyBERT's prediction loss). Equals ``kd_kl / T**2`` plus the teacher's entropy, which
    does not depend on the student.
    """
    T = check_temperature(T)
    p_t = F.softmax(teacher_logits / T, dim=-1)
    return -(p_t * F.log_softmax(student_logits / T, dim=-1)).sum(-1).mean()


def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with gold labels, or MSE against the gold score when ``logits`` has one column."""
    if logits.size(-1) == 1:
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              T: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    r"""Hinton et al. 2015: :math:`L = (1-\alpha)\,\mathrm{CE}(y, \mathrm{softmax}(z_s))
    + \alpha\,T^2\,\mathrm{KL}(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T))`.

    For regression (one output column) the soft term is the MSE between the two scalar outputs.
    """
    alpha = check_weight("alpha", alpha)
    T = check_temperature(T)
    if student_logits.size(-1) == 1:
        soft = F.mse_loss(student_logits, teacher_logits)
    else:
        soft = kd_kl(student_logits, teacher_logits, T)
    hard = hard_loss(student_logits, labels) if alpha < 1 else student_logits.new_zeros(())
    return (1 - alpha) * hard + alpha * soft


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    r"""Ba & Caruana 2014 / Tang et al. 2019: :math:`\lVert z_t - z_s \rVert_2^2`, summed over classes,
    batch mean. Hinton's loss tends to it (up to a factor) as T grows, for zero-mean logits."""
    return (student_logits - teacher_logits).pow(2).sum(-1).mean()


def label_smoothing_ce(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    r"""Cross-entropy against :math:`q' = (1-\epsilon)\,\mathrm{onehot}(y) + \epsilon\,u`, u uniform.

    Yuan et al. (CVPR 2020) read KD as this with the uniform ``u`` replaced by the teacher's distribution.
    """
    epsilon = check_weight("epsilon", epsilon)
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)


def kd_scaling_conventions(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> dict:
    r"""The soft term of KD as common code bases compute it, on the same logits.

    Returns ``{name: (formula, value)}``. Read from the repositories (``shared/reference/papers.md`` §1):
    this book / Hinton and torchdistill's ``KDLoss`` take :math:`T^2` KL with batch-mean reduction (they
    differ only in which term α weights); Patient KD's code averages the KL over batch *and* classes;
    TextBrewer takes the soft cross-entropy without :math:`T^2`; TinyBERT the soft cross-entropy averaged
    over batch and classes, without :math:`T^2`.
    """
    T = check_temperature(T)
    k = student_logits.size(-1)
    kl = kd_kl(student_logits, teacher_logits, T) / (T * T)
    soft_ce = soft_cross_entropy(student_logits, teacher_logits, T)
    return {
        "this book, Hinton et al.": ("T²·KL, batch mean", kl * T * T),
        "torchdistill KDLoss": ("T²·KL, batch mean (α weights the CE)", kl * T * T),
        "Patient KD code": ("T²·KL, mean over batch·classes", kl * T * T / k),
        "TextBrewer": ("−Σ p_t log p_s, batch mean, no T²", soft_ce),
        "TinyBERT": ("−Σ p_t log p_s, mean over batch·classes, no T²", soft_ce / k),
    }
