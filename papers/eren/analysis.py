"""Metrics (ES, BP, EQ), the paired bootstrap over edits, and the pre-registered claims with their verdict rules.

Input: the long results table of :func:`.experiment.run_seed`, one row per (question, method) with ``seed,
edit_id, kind ("scope" | "neighbor_subj" | "same_subj"), method, score`` where ``score`` is 1/0 edit success
for in-scope questions and 1/0 behaviour preservation for unrelated ones.

Metrics (authors' README, "Metrics"): ES = share of in-scope questions answered with the new fact; BP = share
of unrelated questions whose output is unchanged from the unedited model's; EQ = harmonic mean of ES and BP.
Pooled over all questions of all seeds (every edit counts with its questions, as the paper pools examples).

Uncertainty: a paired, seed-stratified bootstrap over *edits* (an edit with all its questions is the unit: its
questions share a note and are not independent): each replicate resamples, within every seed, that seed's
edits with replacement, and recomputes every method's pooled ES, BP and EQ on the same resampled edits, so a
difference between two methods is paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import seed_measurement

MARGIN = 0.05  # smallest advantage (in EQ / BP, 0-1 scale) that counts as the paper's "large margin" existing
ES_THRESHOLD = 0.5  # "highly controllable by contextual knowledge": most in-scope questions take the edit
LEVEL = 0.95

CLAIMS = {
    "eq_vs_one_step": dict(
        statement="EREN (retrieve notes, read them with a prompt that allows 'unanswerable', fall back to the "
                  "closed-book answer) reaches a higher edit quality EQ on CounterFact-Hard than one-step MRC "
                  "(always answer from the retrieved notes).",
        criterion="Delta = EQ(EREN) - EQ(one-step MRC), pooled over the in-scope and unrelated questions of 3 "
                  "seeds (disjoint edit sets), 95% paired seed-stratified bootstrap over edits. reproduced if the "
                  "CI lies above 0; not_reproduced if its upper end is below +0.05 (no advantage of even 5 EQ "
                  "points); otherwise inconclusive.",
        paper_value="EREN > one-step MRC on CFH QA with flan-t5-xl (the paper's ablation; Table 3 is an image "
                    "in the authors' README, numbers not transcribed here)",
    ),
    "eq_vs_ft": dict(
        statement="EREN reaches a higher edit quality EQ on CounterFact-Hard than editing by fine-tuning on the "
                  "edits.",
        criterion="Delta = EQ(EREN) - EQ(FT, LoRA on the seed's edits), same pooling, bootstrap and decision rule "
                  "as eq_vs_one_step.",
        paper_value="EREN outperforms FT (and SERAC, MEND, ROME) 'by a large margin' on CFH QA (Table 3)",
    ),
    "bp_same_subject": dict(
        statement="Two-step reading makes EREN robust to hard irrelevant questions: on questions about the same "
                  "subject as an edit (whose note the retriever returns) EREN keeps the unedited behaviour more "
                  "often than one-step MRC.",
        criterion="Delta = BP_same_subj(EREN) - BP_same_subj(one-step MRC), pooled over 3 seeds, 95% paired "
                  "bootstrap over edits; reproduced if the CI lies above 0; not_reproduced if its upper end is "
                  "below +0.05; otherwise inconclusive.",
        paper_value="EREN 'correctly responds to syntactically similar but semantically unrelated inputs'; "
                    "CFH's same-subject questions are its hard irrelevant set",
    ),
    "es_controllable": dict(
        statement="With the retrieved note in context, the instruction-tuned LM is controllable by contextual "
                  "knowledge: EREN answers in-scope questions (paraphrases of the edit) with the new fact.",
        criterion="ES(EREN), pooled over 3 seeds, 95% seed-stratified bootstrap over edits: reproduced if the CI "
                  "lies above 0.5 (most in-scope answers follow the edit); not_reproduced if it lies below 0.5; "
                  "otherwise inconclusive.",
        paper_value="high ES for EREN on CFH QA (Table 3; numbers not transcribed)",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


# --- metrics ----------------------------------------------------------------------------------------------

def edit_quality(es, bp):
    """EQ: the harmonic mean 2 ES BP / (ES + BP), 0 where both are 0 (works on arrays)."""
    es, bp = np.asarray(es, dtype=float), np.asarray(bp, dtype=float)
    total = es + bp
    with np.errstate(invalid="ignore", divide="ignore"):
        eq = np.where(total > 0, 2 * es * bp / np.where(total > 0, total, 1.0), 0.0)
    return eq if eq.ndim else float(eq)


GROUPS = {"es": ("scope",), "bp": ("neighbor_subj", "same_subj"), "bp_neighbor": ("neighbor_subj",),
          "bp_same": ("same_subj",)}


def per_edit_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, edit_id, method): hits and question counts of every metric group (``es_hits``, ``es_n``, ...)."""
    needed = {"seed", "edit_id", "kind", "method", "score"}
    if not needed <= set(results.columns):
        raise ValueError(f"results need columns {sorted(needed)}; missing {sorted(needed - set(results.columns))}")
    parts = []
    for name, kinds in GROUPS.items():
        sub = results[results["kind"].isin(kinds)]
        g = sub.groupby(["seed", "edit_id", "method"])["score"].agg(["sum", "count"])
        g.columns = [f"{name}_hits", f"{name}_n"]
        parts.append(g)
    return pd.concat(parts, axis=1).fillna(0.0).sort_index()


def _rates(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ES, BP, BP by kind and EQ from (possibly resampled) hit and count totals."""
    out = {}
    for name in GROUPS:
        n = counts[f"{name}_n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(n > 0, counts[f"{name}_hits"] / np.where(n > 0, n, 1.0), np.nan)
    out["eq"] = edit_quality(out["es"], out["bp"])
    return out


def method_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """Pooled ES, BP, BP by kind and EQ of every method (one row per method)."""
    counts = per_edit_counts(results).groupby("method").sum()
    rates = _rates({c: counts[c].to_numpy() for c in counts.columns})
    return pd.DataFrame({k: v for k, v in rates.items()}, index=counts.index).reset_index()


def per_seed_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """The same metrics per (seed, method)."""
    rows = []
    for seed, g in results.groupby("seed"):
        rows.append(method_metrics(g).assign(seed=seed))
    return pd.concat(rows, ignore_index=True)


def bootstrap_metrics(results: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Seed-stratified bootstrap over edits: ``{method: {metric: (n_boot,) array}}``; within a replicate every
    method is evaluated on the same resampled edits (paired)."""
    counts = per_edit_counts(results)
    wide = counts.unstack("method")  # rows: (seed, edit_id); columns: (metric column, method)
    if wide.isna().any().any():
        raise ValueError("every edit must have rows for every method")
    rng = np.random.default_rng(seed)
    totals = np.zeros((n_boot, wide.shape[1]))
    seeds = wide.index.get_level_values("seed").to_numpy()
    values = wide.to_numpy()
    for s in np.unique(seeds):
        rows = np.flatnonzero(seeds == s)
        draws = rng.integers(0, len(rows), size=(n_boot, len(rows)))
        weights = np.zeros((n_boot, len(rows)))
        np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)  # how often each edit was drawn
        totals += weights @ values[rows]
    out: dict[str, dict[str, np.ndarray]] = {}
    for method in wide.columns.get_level_values("method").unique():
        cols = {c: totals[:, wide.columns.get_loc((c, method))] for c in wide.columns.get_level_values(0).unique()}
        out[method] = _rates(cols)
    return out


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates, e.g. a resample without any question of a
    kind, are dropped)."""
    samples = samples[~np.isnan(samples)]
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


# --- verdict rules ----------------------------------------------------------------------------------------

def delta_verdict(lo: float, hi: float, margin: float = MARGIN) -> str:
    """Superiority claim on a difference with CI [lo, hi]: above 0 -> reproduced; upper end below ``margin``
    -> not_reproduced; else inconclusive."""
    if lo > 0:
        return "reproduced"
    if hi < margin:
        return "not_reproduced"
    return "inconclusive"


def threshold_verdict(lo: float, hi: float, threshold: float) -> str:
    """A level claim: CI above ``threshold`` -> reproduced; below -> not_reproduced; else inconclusive."""
    if lo > threshold:
        return "reproduced"
    if hi < threshold:
        return "not_reproduced"
    return "inconclusive"


def decide_delta(claim: Claim, results: pd.DataFrame, metric: str, method: str, baseline: str,
                 n_boot: int = 2000, seed: int = 0, margin: float = MARGIN) -> Claim:
    """Decide "``metric``(``method``) > ``metric``(``baseline``)" with the paired bootstrap over edits."""
    point = method_metrics(results).set_index("method")
    value = float(point.loc[method, metric] - point.loc[baseline, metric])
    boot = bootstrap_metrics(results, n_boot, seed)
    lo, hi = interval(boot[method][metric] - boot[baseline][metric])
    seeds = per_seed_metrics(results)
    diffs = (seeds[seeds["method"] == method].set_index("seed")[metric]
             - seeds[seeds["method"] == baseline].set_index("seed")[metric])
    per_seed = seed_measurement(diffs.tolist())
    n_edits = results.groupby("seed")["edit_id"].nunique().sum()
    measured = Measurement(value=value, ci_low=lo, ci_high=hi, n=int(n_edits), ci_level=LEVEL,
                           method=f"pooled over {results['seed'].nunique()} seeds; paired seed-stratified "
                                  f"bootstrap over edits ({n_boot} replicates)",
                           unit=f"{metric} difference")
    verdict = delta_verdict(lo, hi, margin)
    detail = (f"{metric}: {method} {point.loc[method, metric]:.3f} vs {baseline} {point.loc[baseline, metric]:.3f}; "
              f"per-seed differences {', '.join(f'{d:+.3f}' for d in diffs)} (t interval over seeds "
              f"[{_fmt(per_seed.ci_low)}, {_fmt(per_seed.ci_high)}]); margin {margin}")
    return claim.decide(measured, verdict, detail)


def decide_level(claim: Claim, results: pd.DataFrame, metric: str, method: str, threshold: float = ES_THRESHOLD,
                 n_boot: int = 2000, seed: int = 0) -> Claim:
    """Decide "``metric``(``method``) > ``threshold``" with the bootstrap over edits."""
    point = method_metrics(results).set_index("method")
    value = float(point.loc[method, metric])
    lo, hi = interval(bootstrap_metrics(results, n_boot, seed)[method][metric])
    per_seed = per_seed_metrics(results)
    vals = per_seed[per_seed["method"] == method].sort_values("seed")[metric]
    n_edits = results.groupby("seed")["edit_id"].nunique().sum()
    measured = Measurement(value=value, ci_low=lo, ci_high=hi, n=int(n_edits), ci_level=LEVEL,
                           method=f"pooled over {results['seed'].nunique()} seeds; seed-stratified bootstrap over "
                                  f"edits ({n_boot} replicates)", unit=metric)
    detail = (f"{metric}({method}) = {value:.3f}; per seed {', '.join(f'{v:.3f}' for v in vals)}; "
              f"threshold {threshold}; unedited {point.loc['unedited', metric]:.3f}"
              if "unedited" in point.index else f"{metric}({method}) = {value:.3f}; threshold {threshold}")
    return claim.decide(measured, threshold_verdict(lo, hi, threshold), detail)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"
