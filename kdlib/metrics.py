"""GLUE metrics with scikit-learn and scipy (``evaluate`` fetches its scripts from the hub).

Scores are returned in percent, the way GLUE tables print them.
"""
from __future__ import annotations

import numpy as np

from .data import get_task
from .errors import check_choice


def _accuracy(pred, gold):
    from sklearn.metrics import accuracy_score
    return accuracy_score(gold, pred)


def _f1(pred, gold):
    from sklearn.metrics import f1_score
    return f1_score(gold, pred)


def _mcc(pred, gold):
    from sklearn.metrics import matthews_corrcoef
    return matthews_corrcoef(gold, pred)


def _pearson(pred, gold):
    from scipy.stats import pearsonr
    return float(pearsonr(pred, gold)[0]) if np.std(pred) > 0 else 0.0


def _spearman(pred, gold):
    from scipy.stats import spearmanr
    return float(spearmanr(pred, gold)[0]) if np.std(pred) > 0 else 0.0


METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearman": _spearman}


def metric(name: str, predictions, labels) -> float:
    """One metric in percent; ``predictions`` are class indices, or scores for regression."""
    check_choice("metric", name, METRICS)
    return 100.0 * float(METRICS[name](np.asarray(predictions), np.asarray(labels)))


def predictions_from_logits(logits) -> np.ndarray:
    logits = np.asarray(logits)
    return logits[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1)


def agreement(logits_a, logits_b) -> float:
    """How often two models' predicted classes agree on the same examples (percent)."""
    return 100.0 * float((predictions_from_logits(logits_a) == predictions_from_logits(logits_b)).mean())


def task_metrics(task: str, logits, labels) -> dict:
    """Every metric the task reports, computed from logits (or regression outputs)."""
    spec = get_task(task)
    pred = predictions_from_logits(logits)
    return {m: round(metric(m, pred, labels), 4) for m in spec.metrics}
