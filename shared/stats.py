"""Statistics for verdicts: confidence intervals over seeds, bootstrap, paired and binomial tests.

Conventions: every interval is two-sided at ``level`` (default 0.95) and returned as a
:class:`shared.metrics.Measurement` or a ``(low, high)`` tuple; every resampling takes an explicit seed so
results are deterministic.

Which interval for what:
- a handful of seeds (3-10): :func:`t_interval` (Student t). A percentile bootstrap over 3 values can only
  return values between the extremes of the sample and is far too narrow; the t interval is honest about
  how little three numbers say.
- many exchangeable units (test prompts, questions): :func:`bootstrap_ci`.
- seeds x items: :func:`hierarchical_bootstrap_ci` resamples seeds, then items within each seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st

from shared.metrics import Measurement


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of ``values``; (mean, low, high).

    With one value the interval is undefined and returned as (mean, nan, nan).
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, float("nan"), float("nan")
    sem = float(x.std(ddof=1) / np.sqrt(x.size))
    if sem == 0.0:
        return mean, mean, mean
    half = float(_st.t.ppf(0.5 + level / 2, df=x.size - 1)) * sem
    return mean, mean - half, mean + half


def seed_measurement(values: Sequence[float], unit: str = "", level: float = 0.95,
                     bounds: tuple[float, float] | None = None) -> Measurement:
    """A :class:`Measurement` of the mean over seeds with a t interval.

    ``bounds``: the range the quantity lives in (e.g. (-1, 1) for a correlation, (0, 1) for an accuracy).
    A t interval ignores it and can reach past it with few seeds; the interval is then intersected with
    ``bounds`` and the method says so.
    """
    mean, lo, hi = t_interval(values, level)
    n = len(values)
    method = f"mean over {n} seeds, Student t interval" if n > 1 else "single seed, no interval"
    if bounds is not None and not np.isnan(lo):
        clipped_lo, clipped_hi = max(lo, bounds[0]), min(hi, bounds[1])
        if (clipped_lo, clipped_hi) != (lo, hi):
            method += f", clipped to the range [{bounds[0]:g}, {bounds[1]:g}]"
        lo, hi = clipped_lo, clipped_hi
    return Measurement(
        value=mean,
        ci_low=None if np.isnan(lo) else lo,
        ci_high=None if np.isnan(hi) else hi,
        n=n,
        method=method,
        ci_level=level,
        unit=unit,
    )


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap: (statistic of the sample, low, high).

    ``values`` is resampled along its first axis: a 1-D array of units, or a 2-D array whose rows are the
    units (e.g. seeds x grid points, for a statistic such as a fitted slope of the row means).
    ``statistic`` maps the (resampled) array to a float; for 1-D data it is vectorised over resamples when
    it accepts ``axis``.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    idx = rng.integers(0, n, size=(n_boot, n))
    samples = x[idx]
    boots = None
    if x.ndim == 1:
        try:
            boots = np.asarray(statistic(samples, axis=1), dtype=float)
        except TypeError:
            boots = None
    if boots is None:
        boots = np.array([statistic(s) for s in samples], dtype=float)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(statistic(x)), float(lo), float(hi)


def hierarchical_bootstrap_ci(
    groups: Sequence[Sequence[float]], level: float = 0.95, n_boot: int = 2_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over groups (seeds) of the mean within each group, with a two-level bootstrap interval:
    resample groups with replacement, then items within each chosen group."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("hierarchical_bootstrap_ci needs non-empty groups")
    rng = np.random.default_rng(seed)
    point = float(np.mean([a.mean() for a in arrays]))
    boots = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(arrays), size=len(arrays))
        boots[b] = np.mean([arrays[g][rng.integers(0, arrays[g].size, arrays[g].size)].mean() for g in chosen])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


@dataclass(frozen=True)
class TestResult:
    statistic: float
    pvalue: float
    mean_difference: float
    ci_low: float
    ci_high: float
    n: int
    method: str


def paired_t_test(
    a: Sequence[float], b: Sequence[float], alternative: str = "two-sided", level: float = 0.95
) -> TestResult:
    """Paired t test of a - b (e.g. the same seeds under two methods), with a t interval on the mean
    difference. ``alternative`` is "two-sided", "greater" (a > b) or "less"."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size < 2:
        raise ValueError("paired_t_test needs two equal-length samples of at least 2")
    d = x - y
    mean, lo, hi = t_interval(d, level)
    if np.allclose(d, d[0]):
        # zero variance: the t statistic is undefined; the sign of the constant difference decides
        p = 0.0 if d[0] != 0 and (alternative == "two-sided" or (d[0] > 0) == (alternative == "greater")) else 1.0
        return TestResult(float("inf") * np.sign(d[0]) if d[0] else 0.0, p, mean, lo, hi, d.size, "paired t")
    res = _st.ttest_rel(x, y, alternative=alternative)
    return TestResult(float(res.statistic), float(res.pvalue), mean, lo, hi, d.size, "paired t")


def welch_t_test(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> TestResult:
    """Welch's unequal-variance t test of mean(a) - mean(b)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    res = _st.ttest_ind(x, y, equal_var=False, alternative=alternative)
    diff = float(x.mean() - y.mean())
    ci = res.confidence_interval(0.95)
    return TestResult(float(res.statistic), float(res.pvalue), diff, float(ci.low), float(ci.high),
                      x.size + y.size, "Welch t")


def binomial_test(successes: int, trials: int, p: float, alternative: str = "two-sided") -> tuple[float, float, float]:
    """Exact binomial test against success probability ``p``: (p-value, Clopper-Pearson low, high)."""
    res = _st.binomtest(int(successes), int(trials), p, alternative=alternative)
    ci = res.proportion_ci(confidence_level=0.95, method="exact")
    return float(res.pvalue), float(ci.low), float(ci.high)


def wilcoxon_signed_rank(differences: Sequence[float], alternative: str = "two-sided") -> float:
    """p-value of the Wilcoxon signed-rank test on paired differences."""
    d = np.asarray(differences, dtype=float)
    if np.all(d == 0):
        return 1.0
    return float(_st.wilcoxon(d, alternative=alternative).pvalue)
