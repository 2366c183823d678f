"""Metrics (ES, BP, EQ and their answer-level versions), the paired bootstrap over edits, and the measurements of
the registered claims (``claims.yaml``; the verdicts come from the shared rule in ``shared.claims``).

Input: the long results table of :func:`.experiment.run_seed`, one row per (question, method) with ``seed,
edit_id, kind ("scope" | "neighbor_subj" | "same_subj"), method, score`` where ``score`` is 1/0 edit success
for in-scope questions and 1/0 behaviour preservation for unrelated ones.

Metrics (authors' README, "Metrics"): ES = share of in-scope questions answered with the new fact; BP = share
of unrelated questions whose output is unchanged from the unedited model's; EQ = harmonic mean of ES and BP.
Answer-level: BP_ans = share of unrelated questions into whose answer no edit's new answer leaked (present in
the output, absent from the unedited output); EQ_ans = harmonic mean of ES and BP_ans.
Pooled over all questions of all seeds (every edit counts with its questions, as the paper pools examples).

Uncertainty: a paired, seed-stratified bootstrap over *edits* (an edit with all its questions is the unit: its
questions share a note and are not independent): each replicate resamples, within every seed, that seed's
edits with replacement, and recomputes every method's pooled ES, BP and EQ on the same resampled edits, so a
difference between two methods is paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

LEVEL = 0.95
RECALL_GATE = 0.80  # the retriever returns the edit's own note for in-scope questions
READER_GATE = 0.50  # one-step MRC's ES: the note in context controls the reader
SAME_SUBJECT_RECALL_GATE = 0.50  # the edit's own note is retrieved for its same-subject questions (the hard case)
FT_FIT_GATE = 0.80  # the FT editor answers the question it was trained on with the new fact

# --- metrics ----------------------------------------------------------------------------------------------

def edit_quality(es, bp):
    """EQ: the harmonic mean 2 ES BP / (ES + BP), 0 where both are 0 (works on arrays)."""
    es, bp = np.asarray(es, dtype=float), np.asarray(bp, dtype=float)
    total = es + bp
    with np.errstate(invalid="ignore", divide="ignore"):
        eq = np.where(total > 0, 2 * es * bp / np.where(total > 0, total, 1.0), 0.0)
    return eq if eq.ndim else float(eq)


# metric -> (question kinds, score column)
UNRELATED = ("neighbor_subj", "same_subj")
GROUPS = {"es": (("scope",), "score"), "bp": (UNRELATED, "score"), "bp_neighbor": (("neighbor_subj",), "score"),
          "bp_same": (("same_subj",), "score"), "bp_ans": (UNRELATED, "score_ans"),
          "bp_ans_neighbor": (("neighbor_subj",), "score_ans"), "bp_ans_same": (("same_subj",), "score_ans"),
          "refusal_scope": (("scope",), "refused"), "refusal_unrelated": (UNRELATED, "refused")}


def per_edit_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, edit_id, method): hits and question counts of every metric group (``es_hits``, ``es_n``, ...)."""
    needed = {"seed", "edit_id", "kind", "method", "score", "score_ans", "refused"}
    if not needed <= set(results.columns):
        raise ValueError(f"results need columns {sorted(needed)}; missing {sorted(needed - set(results.columns))}")
    parts = []
    keys = results[["seed", "edit_id", "method"]].drop_duplicates().set_index(["seed", "edit_id", "method"]).index
    for name, (kinds, column) in GROUPS.items():
        sub = results[results["kind"].isin(kinds)]
        g = sub.groupby(["seed", "edit_id", "method"])[column].agg(["sum", "count"]).reindex(keys)
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
    out["eq_ans"] = edit_quality(out["es"], out["bp_ans"])
    out["refusal_gap"] = out["refusal_unrelated"] - out["refusal_scope"]
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


# --- measurements of the registered claims ----------------------------------------------------------------

def _pooled(results: pd.DataFrame, column: str, kinds, method: str) -> float:
    sub = results[(results["method"] == method) & results["kind"].isin(kinds)]
    return float(sub[column].mean()) if len(sub) else float("nan")


def gates(results: pd.DataFrame) -> dict[str, Gate]:
    """The gates of the registry, from the pooled results table."""
    recall = _pooled(results, "retrieved_gold", ("scope",), "eren")
    recall_same = _pooled(results, "retrieved_gold", ("same_subj",), "eren")
    es_one = _pooled(results, "score", ("scope",), "one_step")
    trained = results[(results["method"] == "ft") & (results["kind"] == "scope") & (results["ft_trained"] == 1)]
    ft_fit = float(trained["score"].mean()) if len(trained) else float("nan")
    reader = Gate(recall >= RECALL_GATE and es_one >= READER_GATE,
                  f"retrieval recall of the edit's note on in-scope questions {recall:.3f} (need >= {RECALL_GATE}); "
                  f"one-step MRC edit success {es_one:.3f} (need >= {READER_GATE})", min(recall, es_one))
    return {
        "reader": reader,
        "recall": Gate(recall >= RECALL_GATE, f"retrieval recall on in-scope questions {recall:.3f} "
                                              f"(need >= {RECALL_GATE})", recall),
        "same_subject": Gate(bool(reader.passed and recall_same >= SAME_SUBJECT_RECALL_GATE),
                             f"{reader.detail}; the edit's own note retrieved for {recall_same:.3f} of same-subject "
                             f"questions (need >= {SAME_SUBJECT_RECALL_GATE})", recall_same),
        "ft_fit": Gate(ft_fit >= FT_FIT_GATE, f"FT edit success on its trained questions {ft_fit:.3f} "
                                               f"(need >= {FT_FIT_GATE})", ft_fit),
    }


def delta(results: pd.DataFrame, boot: dict, metric: str, method: str, baseline: str) -> tuple[Measurement, str]:
    """``metric``(``method``) - ``metric``(``baseline``), pooled, with the paired bootstrap interval over edits,
    and a detail string with the pooled values and the per-seed differences."""
    point = method_metrics(results).set_index("method")
    value = float(point.loc[method, metric] - point.loc[baseline, metric])
    lo, hi = interval(boot[method][metric] - boot[baseline][metric])
    seeds = per_seed_metrics(results)
    diffs = (seeds[seeds["method"] == method].set_index("seed")[metric]
             - seeds[seeds["method"] == baseline].set_index("seed")[metric])
    per_seed = seed_measurement(diffs.tolist())
    n_edits = int(results.groupby("seed")["edit_id"].nunique().sum())
    n_boot = len(boot[method][metric])
    m = Measurement(value=value, ci_low=lo, ci_high=hi, n=n_edits, ci_level=LEVEL,
                    method=f"pooled over {results['seed'].nunique()} seeds; paired seed-stratified bootstrap over "
                           f"edits ({n_boot} replicates)", unit=f"{metric} difference")
    detail = (f"{metric}: {method} {point.loc[method, metric]:.3f} vs {baseline} {point.loc[baseline, metric]:.3f}; "
              f"per-seed differences {', '.join(f'{d:+.3f}' for d in diffs)} (t interval over seeds "
              f"[{_fmt(per_seed.ci_low)}, {_fmt(per_seed.ci_high)}])")
    return m, detail


def level(results: pd.DataFrame, boot: dict, metric: str, method: str) -> tuple[Measurement, str]:
    """``metric``(``method``), pooled, with the seed-stratified bootstrap interval over edits."""
    point = method_metrics(results).set_index("method")
    value = float(point.loc[method, metric])
    lo, hi = interval(boot[method][metric])
    per_seed = per_seed_metrics(results)
    vals = per_seed[per_seed["method"] == method].sort_values("seed")[metric]
    m = Measurement(value=value, ci_low=lo, ci_high=hi, n=int(results.groupby("seed")["edit_id"].nunique().sum()),
                    ci_level=LEVEL, method=f"pooled over {results['seed'].nunique()} seeds; seed-stratified bootstrap "
                                           f"over edits ({len(boot[method][metric])} replicates)", unit=metric)
    return m, f"{metric}({method}) = {value:.3f}; per seed {', '.join(f'{v:.3f}' for v in vals)}"


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Area under the ROC curve of ``scores`` for separating ``positive`` from the other items: the
    probability that a random positive scores above a random negative (ties count 1/2), each item counted
    ``weights`` times (a bootstrap resample). NaN without both classes."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
    w_pos, w_neg = w * positive, w * ~positive
    if w_pos.sum() == 0 or w_neg.sum() == 0:
        return float("nan")
    values, inverse = np.unique(scores, return_inverse=True)
    pos = np.bincount(inverse, weights=w_pos, minlength=len(values))
    neg = np.bincount(inverse, weights=w_neg, minlength=len(values))
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (w_pos.sum() * w_neg.sum()))


def refusal_auc(results: pd.DataFrame, n_boot: int = 2000, seed: int = 0, shuffle_labels: bool = False,
                ) -> tuple[Measurement, str]:
    """AUC of EREN's refusal margin log p("Unanswerable") - log p(greedy reply) for telling unrelated from
    in-scope questions, pooled, with the seed-stratified bootstrap over edits. ``shuffle_labels`` permutes the
    question kinds among each seed's questions (the control: no relation by design)."""
    rows = results[results["method"] == "eren"].reset_index(drop=True)
    margin = (rows["lp_refuse"] - rows["lp_reply"]).to_numpy()
    unrelated = (rows["kind"] != "scope").to_numpy()
    rng = np.random.default_rng(seed)
    if shuffle_labels:
        unrelated = unrelated.copy()
        for s in rows["seed"].unique():
            idx = np.flatnonzero(rows["seed"].to_numpy() == s)
            unrelated[idx] = rng.permutation(unrelated[idx])
    value = weighted_auc(margin, unrelated)
    edit_key = list(zip(rows["seed"], rows["edit_id"]))
    edits = sorted(set(edit_key))
    edit_index = np.array([edits.index(k) for k in edit_key])
    edit_seed = np.array([e[0] for e in edits])
    boots = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.zeros(len(edits))
        for s in np.unique(edit_seed):
            members = np.flatnonzero(edit_seed == s)
            np.add.at(counts, rng.choice(members, size=len(members)), 1.0)
        boots[b] = weighted_auc(margin, unrelated, counts[edit_index])
    lo, hi = interval(boots)
    m = Measurement(value=value, ci_low=lo, ci_high=hi, n=len(edits), ci_level=LEVEL,
                    method=f"pooled over {rows['seed'].nunique()} seeds; seed-stratified bootstrap over edits "
                           f"({n_boot} replicates)", unit="AUC")
    detail = (f"AUC {value:.3f} of the refusal margin (median {np.median(margin[unrelated]):.2f} on unrelated, "
              f"{np.median(margin[~unrelated]):.2f} on in-scope questions)")
    return m, detail


def evaluate_all(claims: dict, results: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """Evaluate every registered claim on the results table (returns ``claims``)."""
    boot = bootstrap_metrics(results, n_boot, seed)
    g = gates(results)
    permuted = "EREN with its refusal decisions permuted among each seed's questions"

    m, d = delta(results, boot, "eq_ans", "eren", "one_step")
    cm, cd = delta(results, boot, "eq_ans", "eren_permuted", "one_step")
    claims["eq_answer_vs_one_step"].evaluate(m, gate=g["reader"], control=Control(cm, f"{permuted}: {cd}"), detail=d)

    m, d = delta(results, boot, "eq_ans", "eren", "ft")
    claims["eq_answer_vs_ft_v2"].evaluate(m, gate=g["ft_fit"], detail=d)

    m, d = delta(results, boot, "bp_ans_same", "eren", "one_step")
    cm, cd = delta(results, boot, "bp_ans_same", "eren_permuted", "one_step")
    claims["bp_answer_same_subject"].evaluate(m, gate=g["same_subject"], control=Control(cm, f"{permuted}: {cd}"),
                                              detail=d)

    m, d = refusal_auc(results, n_boot, seed)
    cm, cd = refusal_auc(results, n_boot, seed, shuffle_labels=True)
    rates = method_metrics(results).set_index("method").loc["eren"]
    d += (f"; refusal rate (decision) on unrelated {rates['refusal_unrelated']:.3f}, on in-scope "
          f"{rates['refusal_scope']:.3f}")
    claims["refusal_selective"].evaluate(m, gate=g["recall"],
                                         control=Control(cm, f"question kinds shuffled within each seed: {cd}"),
                                         detail=d)

    m, d = level(results, boot, "es", "eren")
    cm, cd = level(results, boot, "es", "unedited")
    claims["es_controllable_v2"].evaluate(m, gate=g["recall"],
                                          control=Control(cm, f"the unedited model, closed-book: {cd}"), detail=d)
    return claims


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"
