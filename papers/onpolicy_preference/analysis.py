"""Aggregation of the training curves and the verdict rules of the pre-registered claims.

Input tables (long form, one row per member and evaluation), as written by :mod:`.experiment`:

- ``curves``: ``method, reward_fn, seed, step, reward, peak_mass, entropy, kl_to_ref, queries``;
- ``mode_fit``: ``objective, reward_fn, seed, step, reward, peak_mass, entropy, kl_to_ref, kl_to_target``.

Every comparison is paired over seeds (a seed fixes the contexts, the pre-trained policy and the offline
data, shared by all methods and by both rewards) and tested with a one-sided paired t test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import paired_t_test, seed_measurement

from .experiment import ALPHA

NOT_ALIGNED, ALIGNED = "R1", "R2"


def final_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every (method, reward, seed)."""
    last = curves.groupby(["method", "reward_fn", "seed"])["step"].transform("max")
    return curves[curves["step"] == last].reset_index(drop=True)


def auc_table(curves: pd.DataFrame, value: str = "reward", by: str = "method") -> pd.DataFrame:
    """Area under the curve: the mean of ``value`` over all evaluations (step 0 included) per run."""
    return curves.groupby([by, "reward_fn", "seed"], as_index=False)[value].mean()


def summary(table: pd.DataFrame, value: str, by: str = "method") -> pd.DataFrame:
    """Mean and t interval over seeds of ``value`` per (``by``, reward)."""
    rows = []
    for (name, reward_fn), g in table.groupby([by, "reward_fn"], sort=True):
        m = seed_measurement(g[value].tolist())
        rows.append({by: name, "reward_fn": reward_fn, "seeds": len(g), value: m.value,
                     "ci_low": m.ci_low, "ci_high": m.ci_high})
    return pd.DataFrame(rows)


def per_seed(table: pd.DataFrame, name: str, reward_fn: str, value: str, by: str = "method") -> pd.Series:
    """``value`` of one run per seed, indexed by seed."""
    g = table[(table[by] == name) & (table["reward_fn"] == reward_fn)]
    if g.empty:
        raise KeyError(f"no rows for {by}={name!r}, reward_fn={reward_fn!r}")
    return g.set_index("seed")[value].sort_index()


@dataclass
class Comparison:
    label: str
    a: pd.Series  # per-seed values of the arm claimed to be larger
    b: pd.Series  # per-seed values of the other arm, same seeds


def _compare(c: Comparison) -> dict:
    seeds = c.a.index.intersection(c.b.index)
    a, b = c.a.loc[seeds].to_numpy(float), c.b.loc[seeds].to_numpy(float)
    out = {"label": c.label, "n": len(seeds), "mean_difference": float(np.mean(a - b)) if len(seeds) else np.nan}
    if len(seeds) < 2:
        out.update(p_greater=np.nan, p_less=np.nan, ci_low=None, ci_high=None, outcome="too few seeds")
        return out
    greater, less = paired_t_test(a, b, "greater"), paired_t_test(a, b, "less")
    outcome = "greater" if greater.pvalue < ALPHA else ("less" if less.pvalue < ALPHA else "no difference")
    out.update(p_greater=greater.pvalue, p_less=less.pvalue, ci_low=greater.ci_low, ci_high=greater.ci_high,
               outcome=outcome)
    return out


def decide_all_greater(claim: Claim, comparisons: list[Comparison], unit: str) -> Claim:
    """Reproduced if every comparison is significantly > 0 (one-sided paired t, p < ALPHA); not_reproduced if
    any is significantly < 0; otherwise inconclusive. The measurement is the comparison with the smallest mean
    difference, with its 95% t interval over seeds."""
    results = [_compare(c) for c in comparisons]
    outcomes = [r["outcome"] for r in results]
    if all(o == "greater" for o in outcomes):
        verdict = "reproduced"
    elif any(o == "less" for o in outcomes):
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    worst = min(results, key=lambda r: r["mean_difference"] if np.isfinite(r["mean_difference"]) else -np.inf)
    measured = Measurement(value=worst["mean_difference"], ci_low=worst["ci_low"], ci_high=worst["ci_high"],
                           n=max(1, worst["n"]), method=f"{worst['label']}: mean paired difference over seeds, "
                                                        "Student t interval", unit=unit)
    detail = "; ".join(f"{r['label']}: {r['mean_difference']:+.4f} (p> = {r['p_greater']:.3g}, "
                       f"p< = {r['p_less']:.3g}, n = {r['n']}, {r['outcome']})" for r in results)
    return claim.decide(measured, verdict, detail)


def decide_on_policy_sampling(claim: Claim, final: pd.DataFrame) -> Claim:
    r = NOT_ALIGNED
    return decide_all_greater(claim, [
        Comparison("on-policy best-of-N - Pref-FT (R1)", per_seed(final, "bon_onpolicy", r, "reward"),
                   per_seed(final, "pref_ft", r, "reward")),
        Comparison("on-policy IPO - offline IPO (R1)", per_seed(final, "ipo_onpolicy", r, "reward"),
                   per_seed(final, "ipo", r, "reward")),
    ], unit="final expected reward difference")


def decide_negative_gradient(claim: Claim, final: pd.DataFrame) -> Claim:
    r = NOT_ALIGNED
    return decide_all_greater(claim, [
        Comparison("offline IPO - Pref-FT (R1)", per_seed(final, "ipo", r, "reward"),
                   per_seed(final, "pref_ft", r, "reward")),
        Comparison("offline DPO - Pref-FT (R1)", per_seed(final, "dpo", r, "reward"),
                   per_seed(final, "pref_ft", r, "reward")),
    ], unit="final expected reward difference")


def decide_complementary(claim: Claim, auc: pd.DataFrame) -> Claim:
    r = NOT_ALIGNED
    return decide_all_greater(claim, [
        Comparison("on-policy IPO - offline IPO (R1, AUC)", per_seed(auc, "ipo_onpolicy", r, "reward"),
                   per_seed(auc, "ipo", r, "reward")),
        Comparison("on-policy IPO - on-policy best-of-N (R1, AUC)", per_seed(auc, "ipo_onpolicy", r, "reward"),
                   per_seed(auc, "bon_onpolicy", r, "reward")),
    ], unit="mean reward over training, difference")


def geometry_gaps(final: pd.DataFrame, method: str = "ipo_onpolicy", baseline: str = "pref_ft") -> pd.DataFrame:
    """Per seed and reward: final reward of ``method`` minus that of ``baseline``."""
    rows = []
    for reward_fn in (NOT_ALIGNED, ALIGNED):
        gap = per_seed(final, method, reward_fn, "reward") - per_seed(final, baseline, reward_fn, "reward")
        rows += [{"reward_fn": reward_fn, "seed": int(s), "gap": float(v)} for s, v in gap.items()]
    return pd.DataFrame(rows)


def decide_geometry_interaction(claim: Claim, final: pd.DataFrame) -> Claim:
    gaps = geometry_gaps(final)
    g1 = gaps[gaps["reward_fn"] == NOT_ALIGNED].set_index("seed")["gap"]
    g2 = gaps[gaps["reward_fn"] == ALIGNED].set_index("seed")["gap"]
    return decide_all_greater(claim, [Comparison("gap(R1) - gap(R2)", g1, g2)],
                              unit="difference of (on-policy IPO - Pref-FT) final reward gaps")


def decide_mode_seeking(claim: Claim, mode_fit: pd.DataFrame) -> Claim:
    auc = auc_table(mode_fit, value="peak_mass", by="objective")
    r = NOT_ALIGNED
    return decide_all_greater(claim, [
        Comparison("reverse KL - forward KL (R1, mean peak mass)", per_seed(auc, "reverse_kl", r, "peak_mass", "objective"),
                   per_seed(auc, "forward_kl", r, "peak_mass", "objective")),
    ], unit="mean peak-region mass over the fit, difference")
