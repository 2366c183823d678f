"""Aggregation over checkpoints and seeds, and the verdict rules of the pre-registered claims.

Inputs are the two tables that ``experiment.run_all`` returns:

- generation: one row per (seed, step) with ``gen_acc, gen_acc_all, gen_length, n_correct,
  length_diff_correct``;
- probes: one row per (seed, step, semantics, offset, target) with ``accuracy, majority``.

*Semantic content* of a checkpoint is the mean over the targets (facing direction, position) of the probe
accuracy, as the paper averages its probe tasks (Sec. 3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.metrics import Claim, Measurement
from shared.stats import seed_measurement

GENERATION_THRESHOLD = 0.5  # generation: mean final generative accuracy
STRONG_RHO = 0.7  # correlation: "strong"
MIN_GEN_RANGE = 0.05  # correlation: generative accuracy must vary at least this much over checkpoints


def semantic_content(probes: pd.DataFrame, semantics: str = "original", offset: int = 0,
                     column: str = "accuracy") -> pd.DataFrame:
    """(seed, step, value): mean over targets of ``column`` for one semantics and offset."""
    sel = probes[(probes["semantics"] == semantics) & (probes["offset"] == offset)]
    out = sel.groupby(["seed", "step"], sort=True)[column].mean().reset_index()
    return out.rename(columns={column: "value"})


def first_last_change(table: pd.DataFrame) -> pd.Series:
    """Per seed: value at the last step minus value at the first step (the first and last checkpoints with
    a measurement: a probe needs generated tokens at that offset)."""
    table = table.sort_values(["seed", "step"])
    g = table.groupby("seed")["value"]
    return g.last() - g.first()


def final_values(table: pd.DataFrame, column: str = "value") -> pd.Series:
    """Per seed: ``column`` at the last step."""
    return table.sort_values(["seed", "step"]).groupby("seed")[column].last()


def _measure(values, unit: str, method: str | None = None,
             bounds: tuple[float, float] | None = None) -> Measurement:
    vals = [float(v) for v in values if np.isfinite(v)]
    if not vals:
        return Measurement(None, None, None, 1, "no finite values", unit=unit)
    m = seed_measurement(vals, unit=unit, bounds=bounds)
    if method:
        m.method = f"{method}; {m.method}"
    return m


def _has_interval(m: Measurement) -> bool:
    return m.value is not None and m.ci_low is not None and m.ci_high is not None


def _fmt(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def decide_generation(claim: Claim, generation: pd.DataFrame) -> Claim:
    final = final_values(generation, "gen_acc")
    m = _measure(final.values, "accuracy", "final-checkpoint generative accuracy", (0.0, 1.0))
    verdict = "reproduced" if m.value is not None and m.value >= GENERATION_THRESHOLD else "inconclusive"
    all_final = final_values(generation, "gen_acc_all")
    detail = (f"per seed: {_fmt(final.values)} (threshold {GENERATION_THRESHOLD}); including held-out "
              f"examples: {_fmt(all_final.values)}")
    return claim.decide(m, verdict, detail)


def decide_emergence(claim: Claim, probes: pd.DataFrame) -> Claim:
    sc = semantic_content(probes, "original", 0)
    change = first_last_change(sc)
    m = _measure(change.values, "accuracy (last - first checkpoint)", "semantic content change, offset 0")
    if not _has_interval(m):
        verdict = "inconclusive"
    elif m.ci_low > 0:
        verdict = "reproduced"
    elif m.ci_high < 0 or m.value <= 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    first = sc.sort_values("step").groupby("seed")["value"].first()
    last = sc.sort_values("step").groupby("seed")["value"].last()
    detail = f"first checkpoint: {_fmt(first.values)}; last: {_fmt(last.values)} (per seed)"
    return claim.decide(m, verdict, detail)


def spearman_per_seed(generation: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """Per seed: Spearman rho over checkpoints between semantic content (original, offset 0) and
    generative accuracy, and the range of generative accuracy."""
    both = semantic_content(probes, "original", 0).merge(generation[["seed", "step", "gen_acc"]], on=["seed", "step"])
    rows = []
    for seed, g in both.groupby("seed"):
        ok = g["value"].notna()
        rho = st.spearmanr(g.loc[ok, "value"], g.loc[ok, "gen_acc"]).statistic if ok.sum() >= 3 else float("nan")
        rows.append({"seed": seed, "rho": float(rho), "gen_range": float(g["gen_acc"].max() - g["gen_acc"].min()),
                     "checkpoints": int(ok.sum())})
    return pd.DataFrame(rows)


def decide_correlation(claim: Claim, generation: pd.DataFrame, probes: pd.DataFrame) -> Claim:
    per_seed = spearman_per_seed(generation, probes)
    m = _measure(per_seed["rho"].values, "Spearman rho", "per-seed Spearman rho over checkpoints", (-1.0, 1.0))
    both = semantic_content(probes, "original", 0).merge(generation, on=["seed", "step"]).dropna(subset=["value"])
    pooled = st.spearmanr(both["value"], both["gen_acc"]) if len(both) >= 3 else None
    flat = bool((per_seed["gen_range"] < MIN_GEN_RANGE).any())
    if flat or per_seed["rho"].isna().any() or not _has_interval(m):
        verdict = "inconclusive"
    elif m.value >= STRONG_RHO and m.ci_low > 0:
        verdict = "reproduced"
    elif m.ci_high < STRONG_RHO:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"rho per seed: {_fmt(per_seed['rho'].values)}; generative-accuracy range per seed: "
              f"{_fmt(per_seed['gen_range'].values)}")
    if pooled is not None:
        detail += (f"; pooled over {len(both)} (seed, checkpoint) points: rho = {pooled.statistic:.3f}, "
                   f"p = {pooled.pvalue:.2g}")
    if flat:
        detail += f"; generative accuracy varies by < {MIN_GEN_RANGE} in some seed"
    return claim.decide(m, verdict, detail)


def decide_intervention(claim: Claim, probes: pd.DataFrame, alternative: str = "opposite") -> Claim:
    orig = final_values(semantic_content(probes, "original", 0))
    alt = final_values(semantic_content(probes, alternative, 0))
    gap = (orig - alt).dropna()
    m = _measure(gap.values, "accuracy (original - alternative)", f"final-checkpoint gap original - {alternative}")
    if not _has_interval(m):
        verdict = "inconclusive"
    elif m.ci_low > 0:
        verdict = "reproduced"
    elif m.ci_high <= 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = f"original: {_fmt(orig.values)}; {alternative}: {_fmt(alt.values)} (per seed, final checkpoint)"
    return claim.decide(m, verdict, detail)


def decide_future(claim: Claim, probes: pd.DataFrame, offsets: tuple[int, ...] = (1, 2)) -> Claim:
    measures, parts = {}, []
    for k in offsets:
        sc = semantic_content(probes, "original", k)
        if sc.empty:
            continue
        measures[k] = _measure(first_last_change(sc).values, "accuracy (last - first checkpoint)",
                               f"semantic content change, offset {k}")
        base = final_values(semantic_content(probes, "original", k, column="majority"))
        m = measures[k]
        ci = f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" if _has_interval(m) else "(no interval)"
        val = f"{m.value:.3f}" if m.value is not None else "n/a"
        parts.append(f"offset {k}: change {val} {ci}, final {_fmt(final_values(sc).values)} vs majority "
                     f"{_fmt(base.values)}")
    if len(measures) < len(offsets) or not all(_has_interval(m) for m in measures.values()):
        verdict = "inconclusive"
    elif all(m.ci_low > 0 for m in measures.values()):
        verdict = "reproduced"
    elif any(m.ci_high < 0 for m in measures.values()):
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    if measures:
        worst = min(measures.values(), key=lambda m: m.value if m.value is not None else np.inf)
    else:
        worst = Measurement(None, None, None, 1, "no future offsets measured", unit="accuracy")
    return claim.decide(worst, verdict, "; ".join(parts) + " (the measurement shown is the smaller change)")


def decide_shorter(claim: Claim, generation: pd.DataFrame) -> Claim:
    diff = final_values(generation, "length_diff_correct")
    m = _measure(diff.values, "tokens (generated - reference)", "final checkpoint, correctly solved specs")
    if not _has_interval(m):
        verdict = "inconclusive"
    elif m.ci_high < 0:
        verdict = "reproduced"
    elif m.ci_low > 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    n = final_values(generation, "n_correct")
    detail = f"per seed: {_fmt(diff.values)} over {', '.join(str(int(v)) for v in n.values)} correct programs"
    return claim.decide(m, verdict, detail)


def checkpoint_summary(generation: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, step): generative accuracy and semantic content per semantics and offset, with
    the majority baseline of the original semantics."""
    out = generation.copy()
    for (sem, k), _ in probes.groupby(["semantics", "offset"]):
        sc = semantic_content(probes, sem, k).rename(columns={"value": f"sc_{sem}_{k}"})
        out = out.merge(sc, on=["seed", "step"], how="left")
        if sem == "original":
            base = semantic_content(probes, sem, k, column="majority").rename(columns={"value": f"majority_{k}"})
            out = out.merge(base, on=["seed", "step"], how="left")
    return out
