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
    import math

    if not (T > 0 and math.isfinite(T)):
        raise KDLibError(f"temperature T must be a finite number > 0, got {T}")
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


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    r"""How far the student's outputs are from the teacher's: :func:`kd_kl` (:math:`T^2\,\mathrm{KL}`) over
    classes, or, for one regression output (STS-B), the MSE of the two scores, where a softmax over one column
    would always be 1 and the KL always 0."""
    if student_logits.size(-1) == 1:
        return F.mse_loss(student_logits, teacher_logits)
    return kd_kl(student_logits, teacher_logits, T)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       T: float = 1.0) -> torch.Tensor:
    r""":math:`-\sum_i q^t_i \log q^s_i` with both distributions at temperature T, batch mean, no
    :math:`T^2` (TinyBERT's prediction loss). Equals ``kd_kl / T**2`` plus the teacher's entropy, which
    does not depend on the student.
    """
    T = check_temperature(T)
    p_t = F.softmax(teacher_logits / T, dim=-1)
    return -(p_t * F.log_softmax(student_logits / T, dim=-1)).sum(-1).mean()


#: The label of an example that has none (a rewrite in a transfer set): -100 for a class, NaN for a score.
UNLABELLED = -100
#: The dtype of a batch's labels when some of its rows carry none (:func:`kdlib.data.collate`): float64, NaN in those
#: rows. Decided when the batch is made, so a fully labelled batch takes the plain path, with no extra operator
#: and no data-dependent branch (seeds stacked under ``torch.vmap`` need none).
PARTLY_LABELLED = torch.float64


def _labelled_rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, target)`` of a :data:`PARTLY_LABELLED` batch: which rows have a label, and the labels with 0 in
    the others (a finite stand-in that :func:`_per_row` then leaves out)."""
    keep = ~torch.isnan(labels)
    return keep, torch.where(keep, labels, torch.zeros_like(labels))


def _per_row(errors: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``errors`` over the rows that ``keep``; 0 (on the graph) when no row does."""
    keep = keep.to(errors.dtype)
    return (errors * keep).sum() / keep.sum().clamp(min=1.0)


def hard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with gold labels, or MSE against the gold score when ``logits`` has one column.

    Labels of dtype :data:`PARTLY_LABELLED` mark rows without a label as NaN: the mean runs over the others, and a
    batch of none gives 0, so only the teacher's terms train on it."""
    if labels.dtype == PARTLY_LABELLED:
        keep, target = _labelled_rows(labels)
        target = target.float()
        if logits.size(-1) == 1:
            errors = (logits.squeeze(-1).float() - target).pow(2)
        else:
            errors = F.cross_entropy(logits.float(), target.long(), reduction="none")
        return _per_row(errors, keep)
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
    soft = kd_divergence(student_logits, teacher_logits, T)
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
    if labels.dtype == PARTLY_LABELLED:  # as in hard_loss
        keep, target = _labelled_rows(labels)
        errors = F.cross_entropy(logits.float(), target.long(), reduction="none", label_smoothing=epsilon)
        return _per_row(errors, keep)
    return F.cross_entropy(logits, labels, label_smoothing=epsilon)


def kd_scaling_conventions(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> dict:
    r"""The soft term of KD as common code bases compute it, on the same logits.

    Returns ``{name: (formula, value)}``. As read in each project's repository:
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


# ---------------------------------------------------------------------------------------------------
# Intermediate layers (chapters on Patient KD and ALP-KD). ``student`` and ``teacher`` hold one [CLS]
# vector per mapped layer: shape (batch, layers, hidden).
# ---------------------------------------------------------------------------------------------------
def check_nonnegative(name: str, value: float) -> float:
    if not value >= 0:
        raise KDLibError(f"{name} must be >= 0, got {value}")
    return float(value)


def pkd_patient(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    r"""Sun et al. 2019's patient term over the M mapped layers j,
    :math:`L_{PT} = \frac{1}{M}\sum_j \frac{1}{H}\lVert h_s^j/\lVert h_s^j\rVert_2 - h_t^{I(j)}/\lVert h_t^{I(j)}\rVert_2 \rVert_2^2`,
    batch mean. Inputs have shape (batch, mapped layers, H).

    Normalising makes the term blind to the states' scale. The paper writes a plain sum of squared
    distances; the official code takes ``F.mse_loss`` of the normalised states, a mean over the mapped
    layers *and* the H hidden units, and its β grid (10 … 1000) is on that scale. We follow the code, so a
    β here is the code's β: the term lies between 0 and 4/H whatever the number of mapped layers."""
    if student_cls.shape != teacher_cls.shape:
        raise KDLibError(f"student states {tuple(student_cls.shape)} and teacher states "
                         f"{tuple(teacher_cls.shape)} differ in shape; map the layers first")
    s = F.normalize(student_cls, dim=-1)
    t = F.normalize(teacher_cls, dim=-1)
    return (s - t).pow(2).mean(-1).mean(-1).mean()


def pkd(student_logits, teacher_logits, labels, student_cls, teacher_cls, T: float = 5.0, alpha: float = 0.5,
        beta: float = 100.0) -> torch.Tensor:
    r"""Patient KD: :math:`L = (1-\alpha)\,\mathrm{CE} + \alpha\,T^2\,\mathrm{KL} + \beta\,L_{PT}`."""
    beta = check_nonnegative("beta", beta)
    return hinton_kd(student_logits, teacher_logits, labels, T, alpha) + beta * pkd_patient(student_cls, teacher_cls)


def alp_weights(student_cls: torch.Tensor, teacher_cls: torch.Tensor, scaled: bool = True) -> torch.Tensor:
    r"""ALP-KD's attention of each student layer over *all* teacher layers,
    :math:`\alpha_{jk} = \mathrm{softmax}_k(h_s^j \cdot h_t^k / \sqrt{d})`, shape (batch, student layers,
    teacher layers); each row sums to one.

    ``scaled`` divides the dot product by :math:`\sqrt{d}` as in Transformer attention. Without it, [CLS]
    states with norms around 10–20 give dot products in the hundreds and a softmax that is one-hot from the
    first step, so every student layer would copy a single teacher layer."""
    scores = student_cls @ teacher_cls.transpose(-1, -2)
    if scaled:
        scores = scores / student_cls.size(-1) ** 0.5
    return F.softmax(scores, dim=-1)


def alp_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor, scaled: bool = True) -> torch.Tensor:
    r""":math:`L_{ALP} = \sum_j \mathrm{MSE}(h_s^j, c^j)` with :math:`c^j = \sum_k \alpha_{jk} h_t^k`;
    MSE is the mean over hidden units, the sum runs over student layers, batch mean. ``student_cls`` has
    the mapped student layers, ``teacher_cls`` all teacher layers; their hidden sizes must agree."""
    if student_cls.size(-1) != teacher_cls.size(-1):
        raise KDLibError(f"student hidden size {student_cls.size(-1)} differs from the teacher's "
                         f"{teacher_cls.size(-1)}; ALP needs a projection first")
    context = alp_weights(student_cls, teacher_cls, scaled) @ teacher_cls
    return (student_cls - context).pow(2).mean(-1).sum(-1).mean()


def alp_kd(student_logits, teacher_logits, labels, student_cls, teacher_cls, T: float = 1.0,
           beta: float = 1.0, eta: float = 1.0, lam: float = 1.0, scaled: bool = True) -> torch.Tensor:
    r"""ALP-KD: :math:`L = \beta\,\mathrm{CE} + \eta\,T^2\,\mathrm{KL} + \lambda\,L_{ALP}` (three free
    non-negative weights, as in the paper, rather than this book's α convention)."""
    for name, v in (("beta", beta), ("eta", eta), ("lam", lam)):
        check_nonnegative(name, v)
    soft = logit_mse(student_logits, teacher_logits) if student_logits.size(-1) == 1 else \
        kd_kl(student_logits, teacher_logits, T)
    return (beta * hard_loss(student_logits, labels) + eta * soft
            + lam * alp_loss(student_cls, teacher_cls, scaled))


# ---------------------------------------------------------------------------------------------------
# TinyBERT (Jiao et al. 2020, Findings of EMNLP): every mapped layer's hidden states (all tokens, through a
# trainable projection W from the student's width to the teacher's), its attention scores before the
# softmax, the embedding output, and the prediction layer. ``mask`` is the attention mask, (batch, seq),
# 1 for real tokens: padded positions are left out of every mean.
# ---------------------------------------------------------------------------------------------------
def tinybert_hidden(student_projected: torch.Tensor, teacher_hidden: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{MSE}(H_s W_h, H_t)` over the real tokens of one mapped layer: the mean over real tokens and
    hidden units of the squared difference. Inputs (batch, seq, teacher width); the student's states are
    already projected (``W_h`` belongs to the run, see the TinyBERT objective). The embedding loss
    :math:`L_{embd} = \mathrm{MSE}(E_s W_e, E_t)` is the same function on layer 0."""
    if student_projected.shape != teacher_hidden.shape:
        raise KDLibError(f"hidden states of shape {tuple(student_projected.shape)} and "
                         f"{tuple(teacher_hidden.shape)}: project the student's to the teacher's width first")
    real = mask.to(student_projected.dtype).unsqueeze(-1)  # (batch, seq, 1)
    sq = (student_projected - teacher_hidden).pow(2) * real
    return sq.sum() / (real.sum() * student_projected.size(-1)).clamp_min(1)


def tinybert_attention(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    r""":math:`\frac{1}{h}\sum_{heads}\mathrm{MSE}(A_s, A_t)` on the *unnormalised* attention scores
    :math:`QK^\top/\sqrt{d}` of one mapped layer, over the (query, key) pairs of real tokens only. Inputs
    (batch, heads, seq, seq); the student needs the teacher's number of heads."""
    if student_scores.shape != teacher_scores.shape:
        raise KDLibError(f"attention scores of shape {tuple(student_scores.shape)} and "
                         f"{tuple(teacher_scores.shape)}: the student needs the teacher's number of heads "
                         f"({teacher_scores.size(1)}) for the attention loss")
    m = mask.to(student_scores.dtype)
    pairs = (m.unsqueeze(-1) * m.unsqueeze(-2)).unsqueeze(1)  # (batch, 1, seq, seq): both tokens real
    sq = (student_scores - teacher_scores).pow(2) * pairs
    return sq.sum() / (pairs.sum() * student_scores.size(1)).clamp_min(1)


def tinybert_prediction(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    r"""TinyBERT's prediction loss, the soft cross-entropy :math:`-\sum_i q^t_i \log q^s_i` at temperature
    ``T`` (1 in the paper), batch mean (its code also averages over the classes, a factor 1/K; see
    :func:`kd_scaling_conventions`). For one regression output (STS-B) it is the MSE of the predictions."""
    if student_logits.size(-1) == 1:
        return F.mse_loss(student_logits, teacher_logits)
    return soft_cross_entropy(student_logits, teacher_logits, T)


# ---------------------------------------------------------------------------------------------------
# Annealing KD (Jafari et al. 2021, EACL): the student first matches a teacher brought down to its level,
# Φ(T)·z_t, with T lowered from τ_max (the gentlest target) to 1 (the teacher itself); then it trains on
# the labels. The paper writes the loss as a squared L2 norm; the official code takes nn.MSELoss (a mean
# over classes too), which differs by the number of classes, a factor the learning rate absorbs.
# ---------------------------------------------------------------------------------------------------
def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise KDLibError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def annealing_phi(T: int, tau_max: int) -> float:
    r""":math:`\Phi(T) = 1 - (T - 1)/\tau_{max}`, for integer :math:`1 \le T \le \tau_{max}`."""
    tau_max, T = _check_positive_int("tau_max", tau_max), _check_positive_int("T", T)
    if T > tau_max:
        raise KDLibError(f"T must be in 1..tau_max = {tau_max}, got {T}")
    return 1.0 - (T - 1) / tau_max


def annealing_schedule(step: int, total_steps: int, tau_max: int) -> int:
    """T at optimiser step ``step`` (0-based) of ``total_steps``: τ_max, τ_max − 1, ..., 1, each for an equal
    share of the steps (the paper gives each value k epochs; a shorter run keeps that shape in steps)."""
    tau_max = _check_positive_int("tau_max", tau_max)
    return tau_max - min(tau_max - 1, step * tau_max // max(total_steps, 1))


def annealing_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: int, tau_max: int) -> torch.Tensor:
    r"""Stage I of Annealing KD: :math:`\lVert z_s - \Phi(T)\,z_t \rVert_2^2`, summed over classes, batch mean."""
    return (student_logits - annealing_phi(T, tau_max) * teacher_logits).pow(2).sum(-1).mean()
