"""Measurements of the registered checks (``claims.yaml``) from the tables the notebook builds.

- ``ratios``: one row per (seed, design, check) with ``group`` (the claim it belongs to) and ``ratio`` =
  observed error / floating-point bound (< 1: the identity holds to within rounding);
- ``trajectories``: gradient-descent errors at recorded steps, with ``floor_reached`` per (seed, design);
- ``variances``: Monte-Carlo and exact total variances per (seed, design, estimator).

Every statistic is a worst case over designs and checks; its interval is the range over seeds of the
per-seed worst case (a point estimate alone never decides a verdict). The verdict itself comes from
``shared.claims`` (:meth:`Claim.evaluate`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Claim, Control, Gate
from shared.metrics import Measurement

from .method import RIDGE_CONTROL

# registry id -> the ``group`` of the ratios table it is measured on
GROUP_OF = {
    "functoriality_worst_ratio": "functoriality",
    "variation_correspondence_worst_ratio": "variation_correspondence",
    "unit_counit_worst_ratio": "unit_counit",
    "limit_preservation_worst_ratio": "limit_preservation",
}


def worst_case_measurement(per_seed: pd.Series | list[float], worst: str, unit: str, what: str) -> Measurement:
    """The worst case over seeds with the range over seeds of the per-seed worst cases as its interval.

    ``worst`` is "max" (a ratio that must stay small) or "min" (a margin that must stay positive)."""
    values = np.asarray(list(per_seed), dtype=float)
    if values.size == 0:
        raise ValueError("no seeds to measure")
    if worst not in ("max", "min"):
        raise ValueError("worst must be max or min")
    value = float(values.max() if worst == "max" else values.min())
    return Measurement(value=value, ci_low=float(values.min()), ci_high=float(values.max()), n=int(values.size),
                       method=f"{'largest' if worst == 'max' else 'smallest'} over {values.size} seeds of the "
                              f"per-seed {what}; interval = range over seeds of the per-seed worst case",
                       unit=unit)


def per_seed_max(ratios: pd.DataFrame, group: str) -> pd.Series:
    sub = ratios[ratios["group"] == group]
    if sub.empty:
        raise ValueError(f"no checks of group {group!r} in the table")
    return sub.groupby("seed")["ratio"].max()


def _worst(ratios: pd.DataFrame, group: str) -> pd.Series:
    sub = ratios[ratios["group"] == group]
    return sub.loc[sub["ratio"].idxmax()]


def measure_bounded(ratios: pd.DataFrame, group: str) -> tuple[Measurement, str]:
    """Worst error / bound ratio of ``group`` (range over seeds of the per-seed worst) and the detail."""
    per_seed = per_seed_max(ratios, group)
    m = worst_case_measurement(per_seed, "max", "max error / floating-point bound",
                               "largest ratio over designs and checks")
    worst = _worst(ratios, group)
    n_checks = int((ratios["group"] == group).sum())
    by_check = ratios[ratios["group"] == group].groupby("check")["ratio"].max()
    parts = ", ".join(f"{k} {v:.2g}" for k, v in by_check.items())
    detail = (f"{n_checks} checked quantities; largest ratio {worst['ratio']:.3g} ({worst['check']} on "
              f"{worst['design']}, seed {int(worst['seed'])}); largest by check: {parts}")
    return m, detail


def evaluate_bounded(claim: Claim, ratios: pd.DataFrame) -> Claim:
    """An identity check without a gate or control (functoriality, variation correspondence, unit/counit)."""
    m, detail = measure_bounded(ratios, GROUP_OF[claim.id])
    return claim.evaluate(m, detail=detail)


def limits_gate(trajectories: pd.DataFrame) -> Gate:
    """Passed when every gradient-descent run reached its rounding floor."""
    runs = trajectories.groupby(["seed", "design"])["floor_reached"].first()
    reached = int(runs.sum())
    return Gate(passed=bool(len(runs) > 0 and reached == len(runs)), value=float(reached / max(len(runs), 1)),
                detail=f"{reached}/{len(runs)} gradient-descent runs reached their rounding floor")


def evaluate_limits(claim: Claim, ratios: pd.DataFrame, trajectories: pd.DataFrame) -> Claim:
    m, detail = measure_bounded(ratios, "limit_preservation")
    m.unit = "max error / (rate bound + floor)"
    final = trajectories.sort_values("step").groupby(["seed", "design"]).last()
    worst_final = float((final["param_error"] / final["floor"]).max())
    designs = ", ".join(sorted(trajectories["design"].unique()))
    detail = f"gradient descent on {designs}; {detail}; largest final ||a_T - G(y)|| / floor = {worst_final:.3g}"
    return claim.evaluate(m, gate=limits_gate(trajectories), detail=detail)


def variance_log_ratios(variances: pd.DataFrame, column: str = "mc_total_variance",
                        alternatives: list[str] | None = None) -> pd.DataFrame:
    """(seed, design, alternative) -> log(variance of the alternative / variance of OLS).

    ``alternatives`` default: every estimator except OLS and the biased control."""
    wide = variances.pivot_table(index=["seed", "design"], columns="estimator", values=column)
    alts = alternatives if alternatives is not None else [c for c in wide.columns if c not in ("ols", RIDGE_CONTROL)]
    out = np.log(wide[alts].div(wide["ols"], axis=0))
    return out.reset_index().melt(id_vars=["seed", "design"], var_name="alternative", value_name="log_ratio")


def measure_blue(variances: pd.DataFrame, alternatives: list[str] | None = None) -> Measurement:
    lr = variance_log_ratios(variances, alternatives=alternatives)
    per_seed = lr.groupby("seed")["log_ratio"].min()
    return worst_case_measurement(per_seed, "min", "min log(var alternative / var OLS)",
                                  "smallest log ratio over designs and alternatives")


def evaluate_blue(claim: Claim, variances: pd.DataFrame) -> Claim:
    m = measure_blue(variances)
    control = Control(measure_blue(variances, alternatives=[RIDGE_CONTROL]),
                      detail="ridge (lambda = sigma_min^2), a biased linear estimator, in place of the alternatives")
    lr = variance_log_ratios(variances)
    exact = variance_log_ratios(variances, "exact_total_variance")
    ridge = variance_log_ratios(variances, alternatives=[RIDGE_CONTROL])
    detail = (f"Monte-Carlo: OLS smallest in {int((lr['log_ratio'] > 0).sum())}/{len(lr)} (seed, design, "
              f"alternative) cases; exact traces: smallest log ratio {exact['log_ratio'].min():.3g}; control: "
              f"ridge below OLS in {int((ridge['log_ratio'] < 0).sum())}/{len(ridge)} (seed, design) cases")
    return claim.evaluate(m, control=control, detail=detail)
