"""Demšar (2006)'s statistics for several methods over several tasks, checked against his worked example and
his table of critical values."""
import numpy as np
import pytest

from kdlib import stats
from kdlib.errors import KDLibError

def test_friedman_on_demsars_worked_example_and_against_scipy():
    from scipy.stats import friedmanchisquare

    got = stats.friedman_from_ranks([3.143, 2.000, 2.893, 1.964], 14)  # Demšar 2006, section 3.2.2
    assert round(got["chi2"], 2) == 9.28 and round(got["F"], 2) == 3.69
    assert round(stats.critical_difference(4, 14), 2) == 1.25
    rng = np.random.default_rng(0)
    table = rng.normal(size=(6, 4)) + np.array([0.0, 0.5, 1.0, 1.5])  # no ties
    ours, theirs = stats.friedman(table), friedmanchisquare(*table.T)
    assert ours["chi2"] == pytest.approx(theirs.statistic) and ours["p_chi2"] == pytest.approx(theirs.pvalue)
    assert ours["average_ranks"] == pytest.approx(stats.ranks(table).mean(0).tolist())


def test_q_alpha_matches_demsars_table_5():
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    assert all(abs(stats.q_alpha(k) - q) <= 0.0015 for k, q in table.items())  # his table rounds a little
    assert round(stats.q_alpha(10, 0.10), 3) == 2.920


def test_ranks_share_ties_and_holm_steps_down():
    assert stats.ranks([[3, 1, 3], [1, 2, 3]]).tolist() == [[1.5, 3.0, 1.5], [3.0, 2.0, 1.0]]
    assert stats.holm([0.01, 0.04, 0.03, 0.005]).round(4).tolist() == [0.03, 0.06, 0.06, 0.02]
    assert stats.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_bad_statistics_input_is_one_line():
    with pytest.raises(KDLibError, match=r"at least 2 tasks \(rows\) and 2 methods \(columns\); got shape \(1, 3\)"):
        stats.friedman([[1, 2, 3]])
    with pytest.raises(KDLibError, match="missing or infinite score"):
        stats.friedman([[1, np.nan], [2, 3]])
    with pytest.raises(KDLibError, match="alpha 0.01 is not tabulated here; valid choices: 0.05, 0.1"):
        stats.q_alpha(4, 0.01)
    with pytest.raises(KDLibError, match="number of methods must be an integer >= 2, got 1"):
        stats.critical_difference(1, 5)
    with pytest.raises(KDLibError, match=r"p-values must be a non-empty list of numbers in \[0, 1\]"):
        stats.holm([0.2, 1.5])


def test_the_critical_difference_diagram_draws_its_groups():
    import matplotlib

    matplotlib.use("Agg")
    def groups(ranks, cd):
        ax = stats.plot_critical_difference(list("ABCD"), ranks, cd)
        return len([c for c in ax.collections if max(c.get_linewidths()) >= 3])

    assert groups([3.143, 2.0, 2.893, 1.964], 1.25) == 1  # Demšar's example: no pair differs at α = 0.05
    assert groups([1, 2, 3, 4], 1.5) == 3  # {1, 2}, {2, 3}, {3, 4}
    assert groups([1, 2, 3, 4], 0.5) == 0  # every pair differs
    with pytest.raises(KDLibError, match="3 names for 4 average ranks"):
        stats.plot_critical_difference(["A", "B", "C"], [1, 2, 3, 4], 1.0)
