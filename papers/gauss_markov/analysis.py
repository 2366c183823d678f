"""Verdict rules of the pre-registered claims (``method.CLAIMS``) from the tables the notebook builds.

- ``ratios``: one row per (seed, design, check) with ``group`` (the claim it belongs to) and ``ratio`` =
  observed error / floating-point bound (<= 1: the identity holds to within rounding);
- ``trajectories``: gradient-descent errors at recorded steps, with ``floor_reached`` per (seed, design);
- ``variances``: Monte-Carlo and exact total variances per (seed, design, estimator).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.metrics import Claim
from shared.stats import seed_measurement


def _per_seed_max(ratios: pd.DataFrame, group: str) -> pd.Series:
    sub = ratios[ratios["group"] == group]
    if sub.empty:
        raise ValueError(f"no checks of group {group!r} in the table")
    return sub.groupby("seed")["ratio"].max()


def _worst(ratios: pd.DataFrame, group: str) -> pd.Series:
    sub = ratios[ratios["group"] == group]
    return sub.loc[sub["ratio"].idxmax()]


def decide_bounded(claim: Claim, ratios: pd.DataFrame, group: str) -> Claim:
    """Reproduced iff every error / bound ratio of the group is <= 1 (on every seed, design and check)."""
    per_seed = _per_seed_max(ratios, group)
    m = seed_measurement(per_seed.tolist(), unit="max error / floating-point bound")
    m.method = f"per seed, the largest ratio over designs and checks; mean over {len(per_seed)} seeds, t interval"
    worst = _worst(ratios, group)
    verdict = "reproduced" if float(per_seed.max()) <= 1.0 else "not_reproduced"
    n_checks = int((ratios["group"] == group).sum())
    by_check = ratios[ratios["group"] == group].groupby("check")["ratio"].max()
    parts = ", ".join(f"{k} {v:.2g}" for k, v in by_check.items())
    detail = (f"{n_checks} checked quantities; largest ratio {worst['ratio']:.3g} ({worst['check']} on "
              f"{worst['design']}, seed {int(worst['seed'])}); largest by check: {parts}")
    return claim.decide(m, verdict, detail)


def decide_limits(claim: Claim, ratios: pd.DataFrame, trajectories: pd.DataFrame) -> Claim:
    """As :func:`decide_bounded` for the rate bounds, and inconclusive when a run did not reach its floor."""
    per_seed = _per_seed_max(ratios, "limit_preservation")
    m = seed_measurement(per_seed.tolist(), unit="max error / (rate bound + floor)")
    m.method = f"per seed, the largest ratio over designs and steps; mean over {len(per_seed)} seeds, t interval"
    runs = trajectories.groupby(["seed", "design"])["floor_reached"].first()
    reached = int(runs.sum())
    if float(per_seed.max()) > 1.0:
        verdict = "not_reproduced"
    elif reached < len(runs):
        verdict = "inconclusive"
    else:
        verdict = "reproduced"
    final = trajectories.sort_values("step").groupby(["seed", "design"]).last()
    worst_final = float((final["param_error"] / final["floor"]).max())
    designs = ", ".join(sorted(trajectories["design"].unique()))
    detail = (f"gradient descent on {designs}; largest ratio {per_seed.max():.3g}; {reached}/{len(runs)} runs "
              f"reached the rounding floor; largest final ||a_T - G(y)|| / floor = {worst_final:.3g}")
    return claim.decide(m, verdict, detail)


def variance_log_ratios(variances: pd.DataFrame, column: str = "mc_total_variance") -> pd.DataFrame:
    """(seed, design, alternative) -> log(variance of the alternative / variance of OLS)."""
    wide = variances.pivot_table(index=["seed", "design"], columns="estimator", values=column)
    alts = [c for c in wide.columns if c != "ols"]
    out = np.log(wide[alts].div(wide["ols"], axis=0))
    return out.reset_index().melt(id_vars=["seed", "design"], var_name="alternative", value_name="log_ratio")


def decide_blue(claim: Claim, variances: pd.DataFrame) -> Claim:
    lr = variance_log_ratios(variances)
    per_seed = lr.groupby("seed")["log_ratio"].min()
    m = seed_measurement(per_seed.tolist(), unit="min log(var alternative / var OLS)")
    m.method = "per seed, the smallest log ratio over designs and alternatives; t interval over seeds"
    if m.ci_low is not None and m.ci_low > 0:
        verdict = "reproduced"
    elif m.ci_high is not None and m.ci_high < 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    exact = variance_log_ratios(variances, "exact_total_variance")
    detail = (f"Monte-Carlo: OLS smallest in {int((lr['log_ratio'] > 0).sum())}/{len(lr)} (seed, design, "
              f"alternative) cases; exact traces: smallest log ratio {exact['log_ratio'].min():.3g}")
    return claim.decide(m, verdict, detail)
