"""Comparing several methods over several tasks, as Demšar (2006) recommends for classifiers over data sets.

A score table has one row per task and one column per method (higher is better). The methods are ranked
within each task (rank 1 the best, ties sharing the mean of their ranks); the **Friedman test** asks whether the
average ranks differ more than chance allows, and the **Nemenyi critical difference** says how far apart two
average ranks must be for the pair to differ at level α. Pairwise comparisons against one control method
(e.g. KD) use Welch's t-test over seeds per task with **Holm's** step-down correction for the number of
comparisons.

Golden values: Demšar's worked example (four methods on fourteen data sets with average ranks 3.143, 2.000,
2.893, 1.964: χ²_F = 9.28, F_F = 3.69, CD = 1.25 at α = 0.05), his Table 5 of q_α, and scipy's Friedman test.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import KDLibError

ALPHAS = (0.05, 0.10)


def _table(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 2:
        raise KDLibError(f"a score table needs at least 2 tasks (rows) and 2 methods (columns); got shape {s.shape}")
    if not np.isfinite(s).all():
        raise KDLibError("the score table has a missing or infinite score; every method needs a score on every task")
    return s


def ranks(scores) -> np.ndarray:
    """Each method's rank within each task (rows), 1 for the highest score, ties sharing their mean rank."""
    from scipy.stats import rankdata

    return np.vstack([rankdata(-row, method="average") for row in _table(scores)])


def average_ranks(scores) -> np.ndarray:
    return ranks(scores).mean(axis=0)


def friedman(scores) -> dict:
    """Friedman's test on a (tasks × methods) score table: the statistic χ²_F (k − 1 degrees of freedom), Iman
    and Davenport's F_F (k − 1 and (k − 1)(N − 1) degrees of freedom, less conservative), and both p-values."""
    from scipy.stats import chi2, f

    s = _table(scores)
    return friedman_from_ranks(average_ranks(s), s.shape[0])


def friedman_from_ranks(avg_ranks, n: int) -> dict:
    """:func:`friedman` from the methods' average ranks over ``n`` tasks (all the test needs)."""
    from scipy.stats import chi2, f

    r = np.asarray(avg_ranks, dtype=float)
    k = r.size
    chi = 12 * n / (k * (k + 1)) * (np.sum(r ** 2) - k * (k + 1) ** 2 / 4)
    ff = (n - 1) * chi / (n * (k - 1) - chi) if n * (k - 1) - chi > 0 else math.inf
    return {"tasks": n, "methods": k, "average_ranks": r.tolist(), "chi2": float(chi),
            "p_chi2": float(chi2.sf(chi, k - 1)), "F": float(ff),
            "p_F": 0.0 if math.isinf(ff) else float(f.sf(ff, k - 1, (k - 1) * (n - 1)))}


def q_alpha(k: int, alpha: float = 0.05) -> float:
    """The two-tailed Nemenyi critical value for ``k`` methods: the studentized range's upper α quantile with
    infinite degrees of freedom, divided by √2 (Demšar's Table 5)."""
    from scipy.stats import studentized_range

    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise KDLibError(f"the number of methods must be an integer >= 2, got {k!r}")
    if alpha not in ALPHAS:
        raise KDLibError(f"alpha {alpha!r} is not tabulated here; valid choices: {', '.join(map(str, ALPHAS))}")
    return float(studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks for ``k`` methods over ``n`` tasks."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise KDLibError(f"the number of tasks must be an integer >= 2, got {n!r}")
    return q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (the same order as given): the i-th smallest of m is multiplied by
    m − i + 1, then made non-decreasing, and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise KDLibError(f"p-values must be a non-empty list of numbers in [0, 1]; got {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def plot_critical_difference(names, avg_ranks, cd: float, ax=None, title: str = ""):
    """Demšar's critical-difference diagram: methods on an axis of average rank (best on the left), the CD as a
    bar, and a thick line joining each maximal group of methods whose ranks are within CD of each other."""
    import matplotlib.pyplot as plt

    r = np.asarray(avg_ranks, dtype=float)
    k = len(r)
    if len(names) != k:
        raise KDLibError(f"{len(names)} names for {k} average ranks")
    order = np.argsort(r)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * k))
    half = math.ceil(k / 2)
    ax.set_xlim(0.7, k + 0.3)
    ax.set_ylim(-(half + 1), 2.4)
    ax.axis("off")
    ax.hlines(1, 1, k, color="black", lw=1)
    for t in range(1, k + 1):
        ax.vlines(t, 1, 1.25, color="black", lw=1)
        ax.text(t, 1.4, str(t), ha="center", va="bottom", fontsize=8)
    shown = min(cd, k - 1)  # a CD wider than the axis is drawn to its end and says so
    ax.hlines(2, 1, 1 + shown, color="black", lw=1.5)
    ax.text(1 + shown / 2, 2.05, f"CD = {cd:.2f}" + (" (wider than the axis)" if cd > k - 1 else ""), ha="center",
            va="bottom", fontsize=8)
    for i, j in enumerate(order):  # the better half labelled on the left, the rest on the right
        y = -(i + 1) if i < half else -(k - i)
        x_text = 0.8 if i < half else k + 0.2
        ax.plot([r[j], r[j], x_text], [1, y, y], color="grey", lw=0.8)
        ax.text(x_text, y, f"{names[j]} ({r[j]:.2f})", ha="right" if i < half else "left", va="center", fontsize=8)
    groups, level = [], 0  # maximal cliques of consecutive methods within cd
    for a in range(k):
        b = a
        while b + 1 < k and r[order[b + 1]] - r[order[a]] <= cd:
            b += 1
        if b > a and not any(g[0] <= a and b <= g[1] for g in groups):
            groups.append((a, b))
    for a, b in groups:
        level += 1
        y = 1 - 0.35 * level
        ax.hlines(y, r[order[a]] - 0.03, r[order[b]] + 0.03, color="black", lw=3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
