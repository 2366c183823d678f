"""Aggregation of per-arm results and the verdict rules of the pre-registered claims.

The input is a table with one row per trained model: ``architecture, attention ("causal" |
"bidirectional"), k, seed, correct, rows, visible_correct, visible_rows, invisible_correct,
invisible_rows`` (counts of right answers and of rows, over the evaluation set).
"""

from __future__ import annotations

import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import binomial_test, seed_measurement

from .task import accuracy_ceiling

CHANCE_TOLERANCE = 0.03  # impossibility: |invisible-row accuracy - 1/|V|| <= 3 pp per seed
SOLVED = 0.99  # constructions: mean per-row accuracy >= 0.99
CEILING_TOLERANCE = 0.05  # intermediate k: |accuracy - ceiling(k)| <= 5 pp
ALPHA = 0.01


def add_rates(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["accuracy"] = out["correct"] / out["rows"]
    out["visible_accuracy"] = out["visible_correct"] / out["visible_rows"].where(out["visible_rows"] > 0)
    out["invisible_accuracy"] = out["invisible_correct"] / out["invisible_rows"].where(out["invisible_rows"] > 0)
    return out


def arm_summary(df: pd.DataFrame, n: int, n_symbols: int) -> pd.DataFrame:
    """Mean and t interval over seeds of each arm's accuracy, with the analytic ceiling of that arm."""
    rows = []
    for (arch, attention, k), g in add_rates(df).groupby(["architecture", "attention", "k"], sort=True):
        m = seed_measurement(g["accuracy"].tolist())
        ceiling = 1.0 if attention == "bidirectional" else accuracy_ceiling(n, int(k), n_symbols)
        rows.append({"architecture": arch, "attention": attention, "k": int(k), "seeds": len(g),
                     "accuracy": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "ceiling": ceiling,
                     "invisible_accuracy": g["invisible_accuracy"].mean()})
    return pd.DataFrame(rows)


def _arm(df: pd.DataFrame, attention: str, k: int) -> pd.DataFrame:
    return add_rates(df[(df["attention"] == attention) & (df["k"] == k)])


def decide_impossibility(claim: Claim, df: pd.DataFrame, n_symbols: int) -> Claim:
    arm = _arm(df, "causal", 0)
    chance = 1.0 / n_symbols
    worst = float((arm["invisible_accuracy"] - chance).abs().max())
    successes, trials = int(arm["invisible_correct"].sum()), int(arm["invisible_rows"].sum())
    p, lo, hi = binomial_test(successes, trials, chance)
    per_seed_ok = worst <= CHANCE_TOLERANCE
    verdict = "reproduced" if per_seed_ok and p >= ALPHA else "not_reproduced"
    measured = Measurement(value=successes / trials, ci_low=lo, ci_high=hi, n=trials,
                           method="pooled invisible rows over seeds and architectures, Clopper-Pearson",
                           unit="accuracy")
    detail = (f"chance 1/{n_symbols} = {chance:.4f}; largest per-seed deviation {worst * 100:.2f} pp "
              f"(tolerance {CHANCE_TOLERANCE * 100:.0f} pp); binomial test p = {p:.3g} over {trials} rows "
              f"from {len(arm)} models")
    return claim.decide(measured, verdict, detail)


def decide_solved(claim: Claim, df: pd.DataFrame, attention: str, k: int) -> Claim:
    """Constructive claims: reproduced when every architecture's mean accuracy reaches SOLVED."""
    arm = _arm(df, attention, k)
    means = arm.groupby("architecture")["accuracy"].mean()
    worst_arch = means.idxmin()
    m = seed_measurement(arm[arm["architecture"] == worst_arch]["accuracy"].tolist(), unit="accuracy")
    verdict = "reproduced" if means.min() >= SOLVED else "inconclusive"
    detail = "; ".join(f"{a}: {v:.4f}" for a, v in means.items())
    detail = f"mean accuracy by architecture ({attention}, k={k}): {detail}; threshold {SOLVED}"
    return claim.decide(m, verdict, detail)


def decide_ceiling(claim: Claim, df: pd.DataFrame, n: int, n_symbols: int) -> Claim:
    causal = add_rates(df[(df["attention"] == "causal") & (df["k"] > 0) & (df["k"] < n)])
    if causal.empty:
        m = Measurement(None, None, None, 1, "no intermediate k in this profile", unit="pp")
        return claim.decide(m, "inconclusive", "no causal arm with 0 < k < n was run")
    worst = None
    parts = []
    for (arch, k), g in causal.groupby(["architecture", "k"], sort=True):
        ceiling = accuracy_ceiling(n, int(k), n_symbols)
        diffs = (g["accuracy"] - ceiling).tolist()
        m = seed_measurement(diffs, unit="accuracy - ceiling")
        parts.append(f"{arch} k={k}: {g['accuracy'].mean():.3f} vs {ceiling:.3f}")
        if worst is None or abs(m.value) > abs(worst.value):
            worst = m
    above = any(mean > 0 and abs(mean) > CEILING_TOLERANCE
                for mean in [g["accuracy"].mean() - accuracy_ceiling(n, int(k), n_symbols)
                             for (_, k), g in causal.groupby(["architecture", "k"])])
    if abs(worst.value) <= CEILING_TOLERANCE:
        verdict = "reproduced"
    elif above:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    worst.method = "largest |mean accuracy - ceiling| over k, t interval over seeds"
    return claim.decide(worst, verdict, "; ".join(parts) + f"; tolerance {CEILING_TOLERANCE * 100:.0f} pp")
