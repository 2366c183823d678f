"""Aggregation of the grid and the measurements of the registered claims (``claims.yaml``).

The input is the results table of :func:`experiment.run_grid`: one row per trained model with ``seed,
noise, condition ("baseline" | "he_reg" | "he_reg_sham"), ood_acc, id_acc, mod_he, mod_he_norm, seq_he,
seq_he_norm, ...`` and, for baselines, ``init_mod_he, init_mod_he_norm, ...`` (the HE of an untrained model
on the same inputs: the control of the HE-predicts-OOD and noise claims). Each ``evaluate_*`` function
measures a claim with an interval, its gate and its control and hands them to
:meth:`shared.claims.Claim.evaluate`, which applies the one verdict rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.claims import Claim, Control, Gate
from shared.metrics import Measurement
from shared.stats import paired_t_test, seed_measurement

GATE_ACC = 0.6  # every gated model's token accuracy on the clean real-SCAN fragment must reach this
GATE_COLUMN = "scan_fragment_acc"


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


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def bootstrap_r_over_seeds(df: pd.DataFrame, he_col: str, n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the Pearson r of the noise-level means when the seeds are resampled with
    replacement (each resample recomputes the means of both variables)."""
    base = df[df["condition"] == "baseline"]
    seeds = np.array(sorted(base["seed"].unique()))
    table = base.pivot_table(index="seed", columns="noise", values=["ood_acc", he_col])
    acc, he = table["ood_acc"].loc[seeds].to_numpy(), table[he_col].loc[seeds].to_numpy()
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(seeds), len(seeds))
        rs.append(_pearson(he[pick].mean(0), acc[pick].mean(0)))
    rs = np.asarray(rs)
    rs = rs[np.isfinite(rs)]
    if rs.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(rs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def measure_he_ood_r(df: pd.DataFrame, he_col: str) -> tuple[Measurement, str]:
    """Pearson r of OOD accuracy on ``he_col`` over the noise-level means of the baselines, with a
    percentile bootstrap over seeds; the detail gives the polynomial R^2 the paper reports."""
    points = noise_level_means(df, he_col)
    n_seeds = df[df["condition"] == "baseline"]["seed"].nunique()
    if len(points) < 3 or n_seeds < 2:
        return (Measurement(None, None, None, max(1, len(points)), "need >= 3 noise levels and >= 2 seeds",
                            unit="Pearson r"), f"{len(points)} noise level(s), {n_seeds} seed(s)")
    x, y = points[he_col].to_numpy(), points["ood_acc"].to_numpy()
    r = _pearson(x, y)
    lo, hi = bootstrap_r_over_seeds(df, he_col)
    m = Measurement(value=r, ci_low=None if np.isnan(lo) else lo, ci_high=None if np.isnan(hi) else hi,
                    n=n_seeds, method=f"Pearson r over {len(points)} noise-level means of {n_seeds} seeds; "
                                      "95% percentile bootstrap over seeds", unit="Pearson r")
    r2 = {d: polynomial_r2(x, y, d) for d in (1, 2, 3)}
    detail = f"{he_col}: r = {r:.3f}; R^2 linear {r2[1]:.3f}, quadratic {r2[2]:.3f}, cubic {r2[3]:.3f}"
    return m, detail


def id_gate(df: pd.DataFrame, conditions: tuple[str, ...], noise_levels=None) -> Gate:
    """Every model of ``conditions`` (at ``noise_levels``, default all) reaches GATE_ACC token accuracy on
    the noise-free real-SCAN commands of the shared fragment (2 clauses at most: the task's meaning, which
    noise does not change)."""
    sub = df[df["condition"].isin(conditions)]
    if noise_levels is not None:
        sub = sub[sub["noise"].isin(noise_levels)]
    if sub.empty or sub[GATE_COLUMN].isna().all():
        return Gate(passed=False, value=None, detail=f"no {'/'.join(conditions)} models with a {GATE_COLUMN}")
    worst = sub.loc[sub[GATE_COLUMN].idxmin()]
    base = f"; per-position majority baseline {sub['scan_majority_acc'].max():.3f}" if "scan_majority_acc" in sub else ""
    return Gate(passed=bool(sub[GATE_COLUMN].min() >= GATE_ACC and sub[GATE_COLUMN].notna().all()),
                value=float(worst[GATE_COLUMN]),
                detail=f"lowest token accuracy on the clean real-SCAN fragment of {len(sub)} {'/'.join(conditions)} "
                       f"models: {worst[GATE_COLUMN]:.3f} ({worst['condition']}, noise {int(worst['noise'])}, "
                       f"seed {int(worst['seed'])}); gate >= {GATE_ACC}{base}")


def evaluate_he_predicts_ood(claim: Claim, df: pd.DataFrame, he_col: str) -> Claim:
    """``he_col`` is mod_he or mod_he_norm; the control is the same statistic with the untrained model's HE
    (``init_<he_col>``) against the trained models' OOD accuracy."""
    m, detail = measure_he_ood_r(df, he_col)
    cm, cdetail = measure_he_ood_r(df, f"init_{he_col}")
    return claim.evaluate(m, gate=id_gate(df, ("baseline",)),
                          control=Control(cm, detail=f"HE of an untrained model on the same inputs: {cdetail}"),
                          detail=f"{detail}; control {cdetail}")


def per_seed_spearman(df: pd.DataFrame, he_col: str) -> list[float]:
    base = df[df["condition"] == "baseline"]
    return [float(st.spearmanr(g["noise"], g[he_col]).statistic) for _, g in base.groupby("seed", sort=True)
            if g["noise"].nunique() >= 3]


def measure_noise_he(df: pd.DataFrame, he_col: str) -> Measurement:
    rhos = per_seed_spearman(df, he_col)
    if not rhos:
        return Measurement(None, None, None, 1, "need >= 3 noise levels per seed", unit="Spearman rho")
    return seed_measurement(rhos, unit="Spearman rho", bounds=(-1.0, 1.0))


def evaluate_noise_raises_he(claim: Claim, df: pd.DataFrame, he_col: str = "mod_he") -> Claim:
    rhos = per_seed_spearman(df, he_col)
    init = per_seed_spearman(df, f"init_{he_col}")
    return claim.evaluate(measure_noise_he(df, he_col), gate=id_gate(df, ("baseline",)),
                          control=Control(measure_noise_he(df, f"init_{he_col}"),
                                          detail="HE of an untrained model on the same inputs: per-seed rho "
                                                 + ", ".join(f"{r:.2f}" for r in init)),
                          detail=f"per-seed Spearman rho(noise, {he_col}): " + ", ".join(f"{r:.2f}" for r in rhos)
                                 + "; untrained model: " + ", ".join(f"{r:.2f}" for r in init))


def paired_by_seed(df: pd.DataFrame, metric: str, arm: str = "he_reg") -> pd.DataFrame:
    """Per seed, the mean of ``metric`` over the noise levels that ``arm`` has, for the baseline and ``arm``."""
    levels = set(df[df["condition"] == arm]["noise"])
    both = df[df["noise"].isin(levels) & df["condition"].isin(["baseline", arm])]
    return both.pivot_table(index="seed", columns="condition", values=metric, aggfunc="mean").dropna()


def measure_reg_difference(df: pd.DataFrame, metric: str, arm: str = "he_reg") -> tuple[Measurement, str]:
    """Paired difference arm - baseline over seeds (per-seed means over the arm's noise levels), t interval."""
    wide = paired_by_seed(df, metric, arm) if arm in set(df["condition"]) else pd.DataFrame()
    if len(wide) == 0 or "baseline" not in wide or arm not in wide:
        return Measurement(None, None, None, 1, "no paired runs", unit=metric), "no seed has both conditions"
    diff = (wide[arm] - wide["baseline"]).to_numpy()
    m = seed_measurement(diff.tolist(), unit=f"{metric}: {arm} - baseline")
    m.method = f"paired difference, mean over {len(diff)} seeds of per-seed means over noise levels, t interval"
    text = (f"{arm}: baseline {wide['baseline'].mean():.4g}, {arm} {wide[arm].mean():.4g} "
            f"({100 * (wide[arm].mean() / wide['baseline'].mean() - 1):+.1f}%)")
    if len(diff) >= 2:
        text += f", paired t over seeds p = {paired_t_test(wide[arm], wide['baseline']).pvalue:.3g} (two-sided)"
    return m, text


def evaluate_he_reg(claim: Claim, df: pd.DataFrame, metric: str) -> Claim:
    """he_reg - baseline on ``metric``; control: the sham regulariser (weight 0) - baseline."""
    m, text = measure_reg_difference(df, metric, "he_reg")
    cm, ctext = measure_reg_difference(df, metric, "he_reg_sham")
    levels = sorted(set(df[df["condition"] == "he_reg"]["noise"]))
    gate = id_gate(df, ("baseline", "he_reg"), levels)
    return claim.evaluate(m, gate=gate, control=Control(cm, detail=f"sham regulariser (weight 0): {ctext}"),
                          detail=f"{text}; control {ctext}")


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and t interval over seeds per (condition, noise) of the main quantities."""
    rows = []
    cols = [c for c in ("ood_acc", "id_acc", "id_majority_acc", "scan_majority_acc", "mod_he", "mod_he_norm", "seq_he", "seq_he_norm", "init_mod_he",
                        "init_mod_he_norm", "scan_fragment_acc") if c in df]
    for (cond, noise), g in df.groupby(["condition", "noise"], sort=True):
        row = {"condition": cond, "noise": int(noise), "seeds": len(g),
               "train_examples": g["train_examples"].mean(), "mod_pairs": g["mod_pairs"].mean()}
        for col in cols:
            vals = g[col].dropna().tolist()
            if not vals:
                row[col] = row[f"{col}_lo"] = row[f"{col}_hi"] = float("nan")
                continue
            m = seed_measurement(vals)
            row[col] = m.value
            row[f"{col}_lo"], row[f"{col}_hi"] = m.ci_low, m.ci_high
        rows.append(row)
    return pd.DataFrame(rows)
