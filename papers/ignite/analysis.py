"""Aggregation of the IGNITE runs and the verdict rules of the pre-registered claims (``method.CLAIMS``).

Inputs:
- ``scores``: one row per (task, seed, optimizer, arm) with the normalized 100th and 50th percentile of the
  128 proposed designs (columns ``p100``, ``p50``); ``arm`` is "vanilla" or "ignite".
- ``sharpness``: one row per (task, seed, member, arm) with the surrogate gradient norm ||grad_w h(w)|| on
  the offline inputs (``offline``) and on the unseen top half (``unseen``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import seed_measurement, t_interval, wilcoxon_signed_rank

WIN_FRACTION = 0.6  # reproduced: IGNITE ahead in >= 60% of (task, optimizer) pairs ...
ALPHA = 0.05  # ... and one-sided Wilcoxon signed-rank over pairs p < 0.05
NO_MAJORITY = 0.5  # not reproduced: IGNITE ahead in <= 50% of pairs


def paired_differences(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(task, optimizer, seed) -> vanilla, ignite and diff = ignite - vanilla of ``metric``."""
    wide = scores.pivot_table(index=["task", "optimizer", "seed"], columns="arm", values=metric).reset_index()
    missing = {"vanilla", "ignite"} - set(wide.columns)
    if missing:
        raise ValueError(f"scores lack the arm(s) {sorted(missing)}")
    wide["diff"] = wide["ignite"] - wide["vanilla"]
    return wide


def pair_summary(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (task, optimizer): mean vanilla and IGNITE score over seeds, mean difference with a t interval."""
    rows = []
    for (task, opt), g in paired_differences(scores, metric).groupby(["task", "optimizer"], sort=True):
        mean, lo, hi = t_interval(g["diff"].tolist())
        rows.append({"task": task, "optimizer": opt, "seeds": len(g), "vanilla": g["vanilla"].mean(),
                     "ignite": g["ignite"].mean(), "diff": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def decide_improvement(claim: Claim, scores: pd.DataFrame, metric: str) -> Claim:
    """Win fraction over (task, optimizer) pairs + one-sided Wilcoxon over the pairs' mean differences."""
    pairs = pair_summary(scores, metric)
    diffs = pairs["diff"].to_numpy()
    wins = float((diffs > 0).mean())
    p = wilcoxon_signed_rank(diffs, alternative="greater") if len(diffs) > 1 else 1.0
    per_seed = paired_differences(scores, metric).groupby("seed")["diff"].mean()
    measured = seed_measurement(per_seed.tolist(), unit=f"normalized {metric} (IGNITE - vanilla)")
    measured.method = "mean over (task, optimizer) pairs of IGNITE - vanilla; t interval over seeds"
    if wins >= WIN_FRACTION and p < ALPHA:
        verdict = "reproduced"
    elif wins <= NO_MAJORITY:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    best = pairs.loc[pairs["diff"].idxmax()]
    worst = pairs.loc[pairs["diff"].idxmin()]
    detail = (f"IGNITE ahead in {int((diffs > 0).sum())}/{len(diffs)} pairs ({wins:.0%}; needs >= "
              f"{WIN_FRACTION:.0%}); one-sided Wilcoxon over pairs p = {p:.3g} (alpha {ALPHA}); largest gain "
              f"{best['diff']:+.4f} ({best['task']}/{best['optimizer']}), largest loss {worst['diff']:+.4f} "
              f"({worst['task']}/{worst['optimizer']})")
    return claim.decide(measured, verdict, detail)


def sharpness_log_ratios(sharpness: pd.DataFrame, column: str = "unseen") -> pd.DataFrame:
    """(task, seed, member) -> log(||grad h||_IGNITE / ||grad h||_vanilla) on ``column`` inputs."""
    wide = sharpness.pivot_table(index=["task", "seed", "member"], columns="arm", values=column).reset_index()
    wide["log_ratio"] = np.log(wide["ignite"] / wide["vanilla"])
    return wide


def decide_unseen_sharpness(claim: Claim, sharpness: pd.DataFrame) -> Claim:
    ratios = sharpness_log_ratios(sharpness, "unseen")
    per_seed = ratios.groupby("seed")["log_ratio"].mean()
    per_task = ratios.groupby("task")["log_ratio"].mean()
    m: Measurement = seed_measurement(per_seed.tolist(), unit="log ratio IGNITE / vanilla")
    m.method = "mean over tasks and ensemble members of the log ratio; t interval over seeds"
    if m.ci_high is not None and m.ci_high < 0 and (per_task < 0).all():
        verdict = "reproduced"
    elif m.ci_low is not None and m.ci_low > 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    parts = "; ".join(f"{t}: x{np.exp(v):.3f}" for t, v in per_task.items())
    detail = f"unseen-data sharpness IGNITE / vanilla (geometric mean) by task: {parts}"
    return claim.decide(m, verdict, detail)


def constraint_check(sharpness: pd.DataFrame, eps: dict[str, float]) -> pd.DataFrame:
    """Per task: eps and the mean final offline-data sharpness of each arm, as a ratio to eps (a
    manipulation check that the constraint is active and approximately met)."""
    rows = []
    for task, g in sharpness.groupby("task", sort=True):
        means = g.groupby("arm")["offline"].mean()
        rows.append({"task": task, "eps": eps[task], "vanilla_over_eps": means["vanilla"] / eps[task],
                     "ignite_over_eps": means["ignite"] / eps[task]})
    return pd.DataFrame(rows)
