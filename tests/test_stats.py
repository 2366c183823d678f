import numpy as np
import pytest
from scipy import stats as st

from shared.stats import (binomial_test, bootstrap_ci, hierarchical_bootstrap_ci, paired_t_test,
                          seed_measurement, t_interval, welch_t_test, wilcoxon_signed_rank)


def test_t_interval_matches_hand_computation():
    # values 1, 2, 3: mean 2, sd 1, sem 1/sqrt(3); t(0.975, df=2) = 4.302652729911275
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / np.sqrt(3)
    assert mean == 2.0
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)


def test_t_interval_edge_cases():
    assert t_interval([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    mean, lo, hi = t_interval([4.0])
    assert mean == 4.0 and np.isnan(lo) and np.isnan(hi)
    m = seed_measurement([4.0])
    assert m.ci_low is None and m.n == 1 and "single seed" in m.method


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    x = np.arange(100, dtype=float)
    a = bootstrap_ci(x, seed=1)
    assert a == bootstrap_ci(x, seed=1)
    point, lo, hi = a
    assert point == 49.5 and lo < 49.5 < hi
    # the standard error of the mean of 0..99 is about 2.9; a 95% interval is about +-5.7
    assert 4.5 < (hi - lo) / 2 < 7.0
    # a statistic without an axis argument also works
    assert bootstrap_ci(x, statistic=lambda s: float(np.median(s)), n_boot=200)[0] == 49.5


def test_bootstrap_resamples_rows_of_a_matrix():
    # rows are units; the statistic is the slope of the column means over x = 0, 1, 2
    rows = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 2.0, 4.0], [2.0, 3.0, 4.0]])

    def slope(m):
        return float(np.polyfit([0, 1, 2], m.mean(axis=0), 1)[0])

    point, lo, hi = bootstrap_ci(rows, statistic=slope, n_boot=500)
    assert point == pytest.approx(1.25)
    assert 1.0 <= lo <= point <= hi <= 2.0  # every row has slope 1 or 2


def test_hierarchical_bootstrap_point_is_mean_of_group_means():
    point, lo, hi = hierarchical_bootstrap_ci([[0, 0, 1, 1], [1, 1, 1, 1], [0.5]], n_boot=500)
    assert point == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert lo <= point <= hi


def test_paired_t_test_matches_scipy_and_handles_constant_difference():
    a, b = [0.9, 0.8, 0.85, 0.95], [0.7, 0.75, 0.8, 0.7]
    res = paired_t_test(a, b, alternative="greater")
    ref = st.ttest_rel(a, b, alternative="greater")
    assert res.pvalue == pytest.approx(ref.pvalue) and res.mean_difference == pytest.approx(0.1375)
    const = paired_t_test([2, 3, 4], [1, 2, 3], alternative="greater")
    assert const.pvalue == 0.0 and const.mean_difference == 1.0
    assert paired_t_test([2, 3, 4], [1, 2, 3], alternative="less").pvalue == 1.0


def test_welch_and_wilcoxon():
    res = welch_t_test([1, 2, 3, 4], [5, 6, 7, 8])
    assert res.mean_difference == -4 and res.pvalue < 0.01 and res.ci_high < 0
    assert wilcoxon_signed_rank([0, 0, 0]) == 1.0
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5, 6, 7, 8], alternative="greater") == pytest.approx(1 / 256)


def test_binomial_test_against_known_values():
    p, lo, hi = binomial_test(5, 10, 0.5)
    assert p == 1.0 and lo < 0.5 < hi
    # 0 successes in 10 at p = 0.5: two-sided p = 2 * 0.5^10
    assert binomial_test(0, 10, 0.5)[0] == pytest.approx(2 / 1024)


def test_seed_measurement_clips_the_interval_to_the_quantity_range():
    # three per-seed correlations near 1: the t interval 0.9 +- t(0.975, 2) * 0.1 / sqrt(3) reaches past 1
    m = seed_measurement([0.8, 0.9, 1.0], unit="rho", bounds=(-1.0, 1.0))
    half = 4.302652729911275 * 0.1 / 3 ** 0.5
    assert m.value == pytest.approx(0.9) and m.ci_low == pytest.approx(0.9 - half) and m.ci_high == 1.0
    assert "clipped to the range [-1, 1]" in m.method
    free = seed_measurement([0.8, 0.9, 1.0])
    assert free.ci_high == pytest.approx(0.9 + half) and "clipped" not in free.method
    inside = seed_measurement([0.4, 0.5, 0.6], bounds=(0.0, 1.0))
    assert "clipped" not in inside.method and inside.ci_low > 0
