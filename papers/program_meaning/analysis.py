"""Aggregation over checkpoints and seeds, and the measurements behind the registered claims
(``claims.yaml``; the verdicts come from ``shared.claims``).

Inputs are the tables that ``experiment.run_all`` returns:

- generation: one row per (seed, step) with ``gen_acc, gen_acc_all, gen_length, n_correct,
  length_diff_correct``;
- probes: one row per (seed, step, features, semantics, offset, target) with ``accuracy, majority,
  accuracy_differing, n_differing`` (``features``: "trained", and at the last checkpoint "init" and
  "init_other");
- baseline: one row per seed with the spec-blind program's ``gen_acc``, ``length_diff_correct``.

*Semantic content* of a checkpoint is the mean over the targets (facing direction, position) of the probe
accuracy, as the paper averages its probe tasks (Sec. 3). Each ``measure_*`` function returns
``(Measurement, Gate | None, Control | None, detail)`` for :meth:`shared.claims.Claim.evaluate`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.claims import Control, Gate, evaluate_registered
from shared.metrics import Measurement
from shared.stats import seed_measurement

GATE_GEN_ACC = 0.5  # the gate: final generative accuracy in every seed
MIN_DIFFERING = 50  # intervention_v2 gate: differing test states (direction) per seed
MIN_FUTURE_ROWS = 30  # future_states_v2 gate: test states at offset 2 per seed


def semantic_content(probes: pd.DataFrame, semantics: str = "original", offset: int = 0,
                     column: str = "accuracy", features: str = "trained") -> pd.DataFrame:
    """(seed, step, value): mean over targets of ``column`` for one semantics, offset and feature model."""
    sel = probes[(probes["semantics"] == semantics) & (probes["offset"] == offset)
                 & (probes["features"] == features)]
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


def _fmt_int(values) -> str:
    return ", ".join(str(int(v)) for v in values)


def generation_gate(generation: pd.DataFrame) -> Gate:
    """The LM learned the task: final generative accuracy >= GATE_GEN_ACC in every seed."""
    final = final_values(generation, "gen_acc")
    low = float(final.min())
    return Gate(passed=bool(low >= GATE_GEN_ACC), value=low,
                detail=f"final generative accuracy per seed {_fmt(final.values)} (needs >= {GATE_GEN_ACC} in every seed)")


def _and_gate(first: Gate, passed: bool, detail: str) -> Gate:
    return Gate(passed=bool(first.passed and passed), value=first.value, detail=f"{first.detail}; {detail}")


def measure_generation(generation: pd.DataFrame, baseline: pd.DataFrame):
    final = final_values(generation, "gen_acc")
    m = _measure(final.values, "accuracy", "final-checkpoint generative accuracy", (0.0, 1.0))
    blind = baseline.sort_values("seed")
    c = _measure(blind["gen_acc"].values, "accuracy", "spec-blind program's accuracy", (0.0, 1.0))
    all_final = final_values(generation, "gen_acc_all")
    detail = (f"per seed: {_fmt(final.values)}; including held-out examples: {_fmt(all_final.values)}; "
              f"spec-blind program per seed: {', '.join(blind['program'])} with {_fmt(blind['gen_acc'].values)}")
    return m, None, Control(c, "spec-blind program: " + ", ".join(blind["program"])), detail


def _trained_minus(probes: pd.DataFrame, offset: int, minuend: str, subtrahend: str) -> pd.Series:
    """Per seed, final checkpoint: semantic content (original) of ``minuend`` minus ``subtrahend`` features."""
    a = final_values(semantic_content(probes, "original", offset, features=minuend))
    b = final_values(semantic_content(probes, "original", offset, features=subtrahend))
    return (a - b).dropna()


def measure_emergence(generation: pd.DataFrame, probes: pd.DataFrame):
    diff = _trained_minus(probes, 0, "trained", "init")
    ctrl = _trained_minus(probes, 0, "init_other", "init")
    m = _measure(diff.values, "accuracy (trained - init)", "semantic content trained - init, offset 0")
    c = _measure(ctrl.values, "accuracy (trained - init)", "A/A: init_other - init, offset 0")
    trained = final_values(semantic_content(probes, "original", 0))
    init = final_values(semantic_content(probes, "original", 0, features="init"))
    base = final_values(semantic_content(probes, "original", 0, column="majority"))
    detail = (f"trained: {_fmt(trained.values)}; init: {_fmt(init.values)}; majority baseline: "
              f"{_fmt(base.values)}; A/A control per seed: {_fmt(ctrl.values)}")
    return m, generation_gate(generation), Control(c, "A/A: two untrained LMs (init_other - init)"), detail


def partial_spearman(a, b, step) -> float:
    """Spearman correlation of ``a`` and ``b`` with ``step`` partialled out: the Pearson correlation of
    the residuals of rank(a) and rank(b) after a least-squares line on rank(step)."""
    ra, rb, rs = (st.rankdata(np.asarray(v, float)) for v in (a, b, step))
    if len(ra) < 4:
        return float("nan")
    X = np.column_stack([np.ones_like(rs), rs])
    res = [r - X @ np.linalg.lstsq(X, r, rcond=None)[0] for r in (ra, rb)]
    if min(np.std(r) for r in res) < 1e-12:
        return float("nan")
    return float(np.corrcoef(res[0], res[1])[0, 1])


def partial_rho_table(generation: pd.DataFrame, probes: pd.DataFrame, shift: int = 0) -> pd.DataFrame:
    """Per seed i: partial Spearman (step partialled out) of generative accuracy of seed i and semantic
    content of seed ``seeds[(i + shift) % n]`` over the steps both have (``shift = 0``: the same run)."""
    sc = semantic_content(probes, "original", 0)
    seeds = sorted(generation["seed"].unique())
    rows = []
    for i, seed in enumerate(seeds):
        other = seeds[(i + shift) % len(seeds)]
        g = generation[generation["seed"] == seed][["step", "gen_acc"]]
        v = sc[sc["seed"] == other][["step", "value"]]
        both = g.merge(v, on="step").dropna().sort_values("step")
        rows.append({"seed": seed, "sc_seed": other, "partial_rho": partial_spearman(
            both["value"], both["gen_acc"], both["step"]), "checkpoints": len(both)})
    return pd.DataFrame(rows)


def measure_correlation(generation: pd.DataFrame, probes: pd.DataFrame):
    same = partial_rho_table(generation, probes, 0)
    mism = partial_rho_table(generation, probes, 1)
    # a seed without a partial rho (semantic content or accuracy monotone in the step: nothing is left
    # beyond the time trend) leaves the claim without an interval rather than being dropped
    m = _measure([] if same["partial_rho"].isna().any() else same["partial_rho"].values, "partial Spearman rho",
                 "per-seed partial Spearman rho (step partialled out)", (-1.0, 1.0))
    c = _measure(mism["partial_rho"].values, "partial Spearman rho", "mismatched runs (seed i vs seed i+1)",
                 (-1.0, 1.0)) if generation["seed"].nunique() > 1 else _measure([], "partial Spearman rho")
    raw = spearman_per_seed(generation, probes)
    detail = (f"partial rho per seed: {_fmt(same['partial_rho'].values)} over {_fmt_int(same['checkpoints'])} "
              f"checkpoints; mismatched-run control: {_fmt(mism['partial_rho'].values)}; raw Spearman rho per "
              f"seed (step not partialled out): {_fmt(raw['rho'].values)}")
    return m, generation_gate(generation), Control(c, "mismatched runs share only the training time"), detail


def _differing(probes: pd.DataFrame, features: str, alternative: str) -> pd.DataFrame:
    """Final checkpoint, offset 0: per seed, semantic content on the differing states of the original
    probe (``original_vs_<alt>`` rows) and of the alternative probe, and the differing direction states."""
    sel = probes[(probes["features"] == features) & (probes["offset"] == 0)]
    last = sel.groupby("seed")["step"].transform("max")
    sel = sel[sel["step"] == last]
    orig = sel[sel["semantics"] == f"original_vs_{alternative}"].groupby("seed")["accuracy_differing"].mean()
    alt = sel[sel["semantics"] == alternative].groupby("seed")["accuracy_differing"].mean()
    n_dir = sel[(sel["semantics"] == alternative) & (sel["target"] == "direction")].groupby("seed")["n_differing"].sum()
    return pd.DataFrame({"original": orig, "alternative": alt, "n_direction": n_dir})


def measure_intervention(generation: pd.DataFrame, probes: pd.DataFrame, alternative: str = "opposite"):
    t = _differing(probes, "trained", alternative)
    i = _differing(probes, "init", alternative)
    gap, gap_init = (t["original"] - t["alternative"]).dropna(), (i["original"] - i["alternative"]).dropna()
    m = _measure(gap.values, "accuracy (original - opposite, differing states)",
                 f"final-checkpoint gap original - {alternative} on differing states")
    c = _measure(gap_init.values, "accuracy (original - opposite, differing states)", "init-LM features")
    n_min = int(t["n_direction"].min()) if len(t) else 0
    gate = _and_gate(generation_gate(generation), n_min >= MIN_DIFFERING,
                     f"differing direction states per seed {_fmt_int(t['n_direction'])} (needs >= {MIN_DIFFERING})")
    detail = (f"trained LM, original: {_fmt(t['original'].values)}, {alternative}: {_fmt(t['alternative'].values)}; "
              f"init LM, original: {_fmt(i['original'].values)}, {alternative}: {_fmt(i['alternative'].values)} "
              f"(per seed, differing states only)")
    return m, gate, Control(c, "probes on the init LM's hidden states"), detail


def _weakest(measures: dict[int, Measurement]) -> tuple[int | None, Measurement]:
    ok = {k: m for k, m in measures.items() if _has_interval(m)}
    if len(ok) < len(measures) or not ok:
        missing = [k for k in measures if k not in ok]
        k = missing[0] if missing else None
        return k, measures.get(k, Measurement(None, None, None, 0, "no offset measured"))
    k = min(ok, key=lambda j: ok[j].ci_low)
    return k, ok[k]


def measure_future(generation: pd.DataFrame, probes: pd.DataFrame, offsets: tuple[int, ...] = (1, 2)):
    measures, controls, parts = {}, {}, []
    unit = "accuracy (trained - init)"
    for k in offsets:
        d = _trained_minus(probes, k, "trained", "init")
        c = _trained_minus(probes, k, "init_other", "init")
        measures[k] = _measure(d.values, unit, f"semantic content trained - init, offset {k}")
        controls[k] = _measure(c.values, unit, f"A/A init_other - init, offset {k}")
        parts.append(f"offset {k}: trained - init {_fmt(d.values)}, A/A {_fmt(c.values)}")
    k, m = _weakest(measures)
    kc, c = _weakest(controls)
    if m.method and k is not None:
        m.method = f"weakest offset ({k}); {m.method}"
    sel = probes[(probes["features"] == "trained") & (probes["offset"] == max(offsets))]
    last = sel.groupby("seed")["step"].transform("max")
    n_test = sel[sel["step"] == last].groupby("seed")["n_test"].max()
    n_min = int(n_test.min()) if len(n_test) else 0
    gate = _and_gate(generation_gate(generation), n_min >= MIN_FUTURE_ROWS,
                     f"test states at offset {max(offsets)} per seed {_fmt_int(n_test)} (needs >= {MIN_FUTURE_ROWS})")
    return m, gate, Control(c, f"A/A: two untrained LMs, weakest offset ({kc})"), "; ".join(parts)


def measure_shorter(generation: pd.DataFrame, baseline: pd.DataFrame):
    diff = final_values(generation, "length_diff_correct")
    m = _measure(diff.values, "tokens (generated - reference)", "final checkpoint, correctly solved specs")
    blind = baseline.sort_values("seed")
    c = _measure(blind["length_diff_correct"].values, "tokens (generated - reference)",
                 "spec-blind program, the specs it solves")
    n = final_values(generation, "n_correct")
    detail = (f"per seed: {_fmt(diff.values)} over {_fmt_int(n)} correct programs; spec-blind program: "
              f"{_fmt(blind['length_diff_correct'].values)} over {_fmt_int(blind['n_correct'])} specs")
    return m, generation_gate(generation), Control(c, "spec-blind program"), detail


def evaluate_claims(claims: dict, generation: pd.DataFrame, probes: pd.DataFrame, baseline: pd.DataFrame) -> dict:
    """Evaluate every registered claim (``shared.claims.load_claims("program_meaning")``) in place."""
    measures = {
        "generation_v2": measure_generation(generation, baseline),
        "semantic_emergence_v2": measure_emergence(generation, probes),
        "correlation_v2": measure_correlation(generation, probes),
        "intervention_v2": measure_intervention(generation, probes, "opposite"),
        "future_states_v2": measure_future(generation, probes),
        "shorter_programs_v2": measure_shorter(generation, baseline),
    }
    return evaluate_registered(claims, measures)


def spearman_per_seed(generation: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """Per seed: raw Spearman rho over checkpoints between semantic content (original, offset 0) and
    generative accuracy (descriptive: both trend with training time), and the range of generative accuracy."""
    both = semantic_content(probes, "original", 0).merge(generation[["seed", "step", "gen_acc"]], on=["seed", "step"])
    rows = []
    for seed, g in both.groupby("seed"):
        ok = g["value"].notna()
        rho = st.spearmanr(g.loc[ok, "value"], g.loc[ok, "gen_acc"]).statistic if ok.sum() >= 3 else float("nan")
        rows.append({"seed": seed, "rho": float(rho), "gen_range": float(g["gen_acc"].max() - g["gen_acc"].min()),
                     "checkpoints": int(ok.sum())})
    return pd.DataFrame(rows)


def checkpoint_summary(generation: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, step): generative accuracy and semantic content (trained LM) per semantics and
    offset, with the majority baseline of the original semantics, and at offset 0 the original and
    opposite probes on the states where the two semantics differ (``scdiff_*``)."""
    out = generation.copy()
    trained = probes[(probes["features"] == "trained") & ~probes["semantics"].str.startswith("original_vs_")]
    for (sem, k), _ in trained.groupby(["semantics", "offset"]):
        sc = semantic_content(probes, sem, k).rename(columns={"value": f"sc_{sem}_{k}"})
        out = out.merge(sc, on=["seed", "step"], how="left")
        if sem == "original":
            base = semantic_content(probes, sem, k, column="majority").rename(columns={"value": f"majority_{k}"})
            out = out.merge(base, on=["seed", "step"], how="left")
    for sem, name in (("original_vs_opposite", "scdiff_original_0"), ("opposite", "scdiff_opposite_0")):
        sc = semantic_content(probes, sem, 0, column="accuracy_differing").rename(columns={"value": name})
        out = out.merge(sc, on=["seed", "step"], how="left")
    return out
