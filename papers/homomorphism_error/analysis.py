"""Aggregation of the grid and the verdict rules of the pre-registered claims.

The input is the results table of :func:`experiment.run_grid`: one row per trained model with ``seed,
noise, condition ("baseline" | "he_reg"), ood_acc, mod_he, mod_he_norm, seq_he, seq_he_norm, ...``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.metrics import Claim, Measurement
from shared.stats import paired_t_test, seed_measurement

from .experiment import ALPHA, R2_FLOOR, R2_REPRODUCED


def polynomial_r2(x, y, degree: int) -> float:
    """R^2 of the least-squares polynomial fit of ``y`` on ``x`` (the authors fit degrees 1-3, Fig. 6)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size <= degree:
        return float("nan")
    coef = np.polyfit(x, y, degree)
    resid = y - np.polyval(coef, x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")


def noise_level_means(df: pd.DataFrame, he_col: str, condition: str = "baseline") -> pd.DataFrame:
    """One point per noise level: mean over seeds of OOD accuracy and of ``he_col`` (Fig. 6's points)."""
    base = df[df["condition"] == condition]
    return base.groupby("noise", sort=True)[["ood_acc", he_col]].mean().reset_index()


def bootstrap_r2_over_seeds(df: pd.DataFrame, he_col: str, n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the linear R^2 when the seeds are resampled with replacement (each
    resample recomputes the noise-level means and refits)."""
    base = df[df["condition"] == "baseline"]
    seeds = np.array(sorted(base["seed"].unique()))
    table = base.pivot_table(index="seed", columns="noise", values=["ood_acc", he_col])
    acc, he = table["ood_acc"].loc[seeds].to_numpy(), table[he_col].loc[seeds].to_numpy()
    rng = np.random.default_rng(seed)
    r2s = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(seeds), len(seeds))
        r2s.append(polynomial_r2(he[pick].mean(0), acc[pick].mean(0), 1))
    r2s = np.asarray(r2s)
    r2s = r2s[np.isfinite(r2s)]
    if r2s.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(r2s, [alpha, 1 - alpha])
    return float(lo), float(hi)


def decide_he_predicts_ood(claim: Claim, df: pd.DataFrame, he_col: str = "mod_he") -> Claim:
    points = noise_level_means(df, he_col)
    n_seeds = df[df["condition"] == "baseline"]["seed"].nunique()
    if len(points) < 3:
        m = Measurement(None, None, None, max(1, len(points)), "too few noise levels for a fit", unit="R^2")
        return claim.decide(m, "inconclusive", f"{len(points)} noise level(s): need >= 3")
    x, y = points[he_col].to_numpy(), points["ood_acc"].to_numpy()
    r, p_less = st.pearsonr(x, y, alternative="less")
    r2 = {d: polynomial_r2(x, y, d) for d in (1, 2, 3)}
    lo, hi = bootstrap_r2_over_seeds(df, he_col) if n_seeds > 1 else (float("nan"), float("nan"))
    m = Measurement(value=r2[1], ci_low=None if np.isnan(lo) else lo, ci_high=None if np.isnan(hi) else hi,
                    n=len(points), method=f"linear R^2 over {len(points)} noise-level means of {n_seeds} seeds; "
                                          "percentile bootstrap over seeds", unit="R^2")
    if r < 0 and p_less < ALPHA and r2[1] >= R2_REPRODUCED:
        verdict = "reproduced"
    elif r >= 0 or r2[1] < R2_FLOOR:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"{he_col}: Pearson r = {r:.3f} (one-sided p = {p_less:.3g}); R^2 linear {r2[1]:.3f}, "
              f"quadratic {r2[2]:.3f}, cubic {r2[3]:.3f}; thresholds R^2 >= {R2_REPRODUCED} (reproduced), "
              f"< {R2_FLOOR} (not reproduced)")
    return claim.decide(m, verdict, detail)


def decide_noise_raises_he(claim: Claim, df: pd.DataFrame, he_col: str = "mod_he") -> Claim:
    base = df[df["condition"] == "baseline"]
    rhos = []
    for _, g in base.groupby("seed", sort=True):
        if g["noise"].nunique() >= 3:
            rhos.append(float(st.spearmanr(g["noise"], g[he_col]).statistic))
    if not rhos:
        m = Measurement(None, None, None, 1, "too few noise levels", unit="Spearman rho")
        return claim.decide(m, "inconclusive", "need >= 3 noise levels per seed")
    m = seed_measurement(rhos, unit="Spearman rho", bounds=(-1.0, 1.0))
    if len(rhos) < 2:
        verdict = "inconclusive"
    elif m.ci_low > 0:
        verdict = "reproduced"
    elif m.value <= 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = f"per-seed Spearman rho(noise, {he_col}): " + ", ".join(f"{r:.2f}" for r in rhos)
    return claim.decide(m, verdict, detail)


def paired_by_seed(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per seed, the mean of ``metric`` over the noise levels that have both conditions, per condition."""
    reg_levels = set(df[df["condition"] == "he_reg"]["noise"])
    both = df[df["noise"].isin(reg_levels)]
    wide = both.pivot_table(index="seed", columns="condition", values=metric, aggfunc="mean")
    return wide.dropna()


def decide_he_reg(claim: Claim, df: pd.DataFrame, metric: str, direction: str) -> Claim:
    """``direction`` "lower" (HE) or "higher" (accuracy): the claimed sign of he_reg - baseline."""
    if direction not in ("lower", "higher"):
        raise ValueError("direction must be lower or higher")
    wide = paired_by_seed(df, metric) if "he_reg" in set(df["condition"]) else pd.DataFrame()
    if len(wide) == 0 or "baseline" not in wide:
        m = Measurement(None, None, None, 1, "no paired runs", unit=metric)
        return claim.decide(m, "inconclusive", "no seed has both conditions")
    diff = (wide["he_reg"] - wide["baseline"]).to_numpy()
    m = seed_measurement(diff.tolist(), unit=f"{metric}: he_reg - baseline")
    m.method = f"paired difference, mean over {len(diff)} seeds of per-seed means over noise levels, t interval"
    sign = -1 if direction == "lower" else 1
    if len(diff) < 2:
        verdict = "inconclusive"
    elif (m.ci_high < 0) if sign < 0 else (m.ci_low > 0):
        verdict = "reproduced"
    elif sign * m.value <= 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    parts = [f"baseline {wide['baseline'].mean():.4g}, he_reg {wide['he_reg'].mean():.4g} "
             f"({100 * (wide['he_reg'].mean() / wide['baseline'].mean() - 1):+.1f}%)"]
    if len(diff) >= 2:
        t = paired_t_test(wide["he_reg"], wide["baseline"])
        parts.append(f"paired t over seeds p = {t.pvalue:.3g} (two-sided)")
    cells = df.pivot_table(index=["seed", "noise"], columns="condition", values=metric).dropna()
    if len(cells) >= 2:
        tc = paired_t_test(cells["he_reg"], cells["baseline"])
        parts.append(f"over {len(cells)} (seed, noise) cells: mean diff {tc.mean_difference:.3g}, p = {tc.pvalue:.3g}")
    return claim.decide(m, verdict, "; ".join(parts))


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and t interval over seeds per (condition, noise) of the main quantities."""
    rows = []
    for (cond, noise), g in df.groupby(["condition", "noise"], sort=True):
        row = {"condition": cond, "noise": int(noise), "seeds": len(g),
               "train_examples": g["train_examples"].mean(), "mod_pairs": g["mod_pairs"].mean()}
        for col in ("ood_acc", "mod_he", "mod_he_norm", "seq_he", "seq_he_norm", "scan_fragment_acc"):
            m = seed_measurement(g[col].tolist())
            row[col] = m.value
            row[f"{col}_lo"], row[f"{col}_hi"] = m.ci_low, m.ci_high
        rows.append(row)
    return pd.DataFrame(rows)
