import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from kdlib import KDLibError
from kdlib.metrics import metric, task_metrics

GOLD = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
PRED = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]


def test_hand_computed():
    # 7 of 10 right; tp 4, fp 1, fn 2 → F1 = 8/11; MCC = (4·3 − 1·2)/sqrt(5·6·4·5) = 10/sqrt(600)
    assert metric("accuracy", PRED, GOLD) == pytest.approx(70.0)
    assert metric("f1", PRED, GOLD) == pytest.approx(800 / 11)
    assert metric("mcc", PRED, GOLD) == pytest.approx(100 * 10 / np.sqrt(600))


def test_against_sklearn_and_scipy():
    rng = np.random.RandomState(0)
    g, p = rng.randint(0, 2, 200), rng.randint(0, 2, 200)
    assert metric("accuracy", p, g) == pytest.approx(100 * accuracy_score(g, p))
    assert metric("f1", p, g) == pytest.approx(100 * f1_score(g, p))
    assert metric("mcc", p, g) == pytest.approx(100 * matthews_corrcoef(g, p))
    x, y = rng.rand(50), rng.rand(50)
    assert metric("pearson", x, y) == pytest.approx(100 * pearsonr(x, y)[0])
    assert metric("spearman", x, y) == pytest.approx(100 * spearmanr(x, y)[0])


def test_task_metrics_from_logits():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert task_metrics("sst2", logits, [0, 1, 1]) == {"accuracy": pytest.approx(66.6667, abs=1e-3)}
    assert set(task_metrics("mrpc", logits, [0, 1, 1])) == {"f1", "accuracy"}
    assert set(task_metrics("stsb", np.array([[1.0], [2.0], [3.5]]), [1.1, 2.2, 3.0])) == {"pearson", "spearman"}


def test_unknown_metric():
    with pytest.raises(KDLibError, match="unknown metric 'bleu'; valid choices: accuracy, f1, mcc"):
        metric("bleu", [1], [1])
