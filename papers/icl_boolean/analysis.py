"""Aggregation of accuracy curves and the verdict rules of the pre-registered claims.

Input: a long table with one row per ``family, task, seed, learner, position`` and its ``accuracy`` (the
fraction of evaluation prompts whose label at that position was predicted correctly). ``learner`` is the
trained network's family ("transformer", "lstm") or a classical learner evaluated on the same prompts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import bootstrap_ci, paired_t_test, seed_measurement

from .task import OPTIMAL_LEARNER, examples_to_reach

FINAL_POSITIONS = 5  # "final accuracy" = mean over the last 5 query positions
# conjunction_matches_optimal
CONJ_FINAL, CONJ_GAP = 0.95, -0.03
CONJ_FINAL_FAIL, CONJ_GAP_FAIL = 0.90, -0.06
# sparse_parity_fails
PARITY_CHANCE_MAX, PARITY_SOLVER_MIN, PARITY_LEARNED = 0.60, 0.95, 0.75
# teaching_sequence_helps
TEACH_LEVEL, TEACH_RATIO, TEACH_RATIO_FAIL = 0.90, 2.0, 1.5
TEACH_POST, TEACH_POST_FAIL = 0.95, 0.80
# lstm_worse_than_transformer
LSTM_MARGIN, ALPHA = 0.01, 0.05
# llm_competes_with_nearest_neighbour: non-inferiority margin of the LLM against 1-NN
LLM_MARGIN = -0.05
LLM_LEARNERS = ("smollm2", "nearest_neighbour", "elimination", "null")


def curve(df: pd.DataFrame, family: str, task: str, seed: int, learner: str) -> np.ndarray:
    """(N,) accuracy by position of one learner in one arm and seed."""
    sel = df[(df["family"] == family) & (df["task"] == task) & (df["seed"] == seed) & (df["learner"] == learner)]
    if sel.empty:
        raise KeyError(f"no curve for {family}/{task}/seed {seed}/{learner}")
    return sel.sort_values("position")["accuracy"].to_numpy()


def final_accuracy(c: np.ndarray) -> float:
    return float(np.mean(c[-FINAL_POSITIONS:]))


def seeds_of(df: pd.DataFrame, family: str, task: str) -> list[int]:
    return sorted(int(s) for s in df[(df["family"] == family) & (df["task"] == task)]["seed"].unique())


def summary(df: pd.DataFrame, level: float = TEACH_LEVEL) -> pd.DataFrame:
    """Per arm and learner: mean over seeds of the accuracy averaged over positions, of the final
    accuracy, and of k90 (examples until the curve stays >= ``level``)."""
    rows = []
    for (family, task, learner), g in df.groupby(["family", "task", "learner"], sort=True):
        per_seed = [g[g["seed"] == s].sort_values("position")["accuracy"].to_numpy() for s in sorted(g["seed"].unique())]
        rows.append({"family": family, "task": task, "learner": learner, "seeds": len(per_seed),
                     "mean_accuracy": float(np.mean([c.mean() for c in per_seed])),
                     "final_accuracy": float(np.mean([final_accuracy(c) for c in per_seed])),
                     "k90": float(np.mean([examples_to_reach(c, level) for c in per_seed]))})
    return pd.DataFrame(rows)


def decide_conjunction(claim: Claim, df: pd.DataFrame, family: str = "transformer",
                       task: str = "conjunction") -> Claim:
    seeds = seeds_of(df, family, task)
    optimal = OPTIMAL_LEARNER[task]
    finals = [final_accuracy(curve(df, family, task, s, family)) for s in seeds]
    gaps = [float(curve(df, family, task, s, family).mean() - curve(df, family, task, s, optimal).mean())
            for s in seeds]
    m = seed_measurement(finals, unit="accuracy (mean of last 5 positions)")
    mean_gap = float(np.mean(gaps))
    if min(finals) < CONJ_FINAL_FAIL or mean_gap < CONJ_GAP_FAIL:
        verdict = "not_reproduced"
    elif min(finals) >= CONJ_FINAL and mean_gap >= CONJ_GAP:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    g = seed_measurement(gaps)
    gap_ci = "" if g.ci_low is None else f" [{g.ci_low:.4f}, {g.ci_high:.4f}]"
    detail = (f"{family} final accuracy per seed {', '.join(f'{v:.4f}' for v in finals)} (threshold "
              f"{CONJ_FINAL}); {family} - {optimal} accuracy averaged over positions: mean {mean_gap:+.4f}{gap_ci} "
              f"(threshold {CONJ_GAP:+.2f})")
    return claim.decide(m, verdict, detail)


def decide_sparse_parity(claim: Claim, df: pd.DataFrame, family: str = "transformer",
                         task: str = "sparse_parity") -> Claim:
    seeds = seeds_of(df, family, task)
    solver = OPTIMAL_LEARNER[task]
    finals = [final_accuracy(curve(df, family, task, s, family)) for s in seeds]
    solver_finals = [final_accuracy(curve(df, family, task, s, solver)) for s in seeds]
    m = seed_measurement(finals, unit="accuracy (mean of last 5 positions)")
    if m.value >= PARITY_LEARNED:
        verdict = "not_reproduced"
    elif max(finals) <= PARITY_CHANCE_MAX and min(solver_finals) >= PARITY_SOLVER_MIN:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"{family} final accuracy per seed {', '.join(f'{v:.4f}' for v in finals)} (chance-level "
              f"threshold {PARITY_CHANCE_MAX}); {solver} final accuracy on the same prompts "
              f"{', '.join(f'{v:.4f}' for v in solver_finals)} (needs >= {PARITY_SOLVER_MIN})")
    return claim.decide(m, verdict, detail)


def decide_teaching(claim: Claim, df: pd.DataFrame, post_teach: pd.DataFrame, family: str = "transformer",
                    teach_task: str = "teach_conjunction", control_task: str = "mono_conjunction") -> Claim:
    """``post_teach``: rows (family, task, seed, learner, accuracy) at the first query after the teaching
    sequence (teach prompts) or at the same index (control prompts)."""
    seeds = sorted(set(seeds_of(df, family, teach_task)) & set(seeds_of(df, family, control_task)))
    if not seeds:
        raise KeyError(f"no seed has both {teach_task} and {control_task} for {family}")
    k_teach = [examples_to_reach(curve(df, family, teach_task, s, family), TEACH_LEVEL) for s in seeds]
    k_ctrl = [examples_to_reach(curve(df, family, control_task, s, family), TEACH_LEVEL) for s in seeds]
    ratios = [c / t for c, t in zip(k_ctrl, k_teach)]

    def at_anchor(task: str) -> list[float]:
        sel = post_teach[(post_teach["family"] == family) & (post_teach["task"] == task)
                         & (post_teach["learner"] == family)].set_index("seed")["accuracy"]
        return [float(sel.loc[s]) for s in seeds]

    post, post_ctrl = at_anchor(teach_task), at_anchor(control_task)
    m = seed_measurement(ratios, unit="k90 ratio (no teaching / teaching)")
    if m.value < TEACH_RATIO_FAIL or float(np.mean(post)) < TEACH_POST_FAIL:
        verdict = "not_reproduced"
    elif min(ratios) >= TEACH_RATIO and min(post) >= TEACH_POST:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    n_points = int(df["position"].max())
    detail = (f"k90 with teaching {k_teach}, without {k_ctrl} (N = {n_points}; N + 1 = never settles at "
              f"{TEACH_LEVEL}); ratios {', '.join(f'{r:.2f}' for r in ratios)} (threshold {TEACH_RATIO} in every "
              f"seed); accuracy at the first query after the teaching sequence {', '.join(f'{v:.4f}' for v in post)} "
              f"(threshold {TEACH_POST}) vs the control model at the same index "
              f"{', '.join(f'{v:.4f}' for v in post_ctrl)}")
    return claim.decide(m, verdict, detail)


def decide_lstm(claim: Claim, df: pd.DataFrame, task: str = "conjunction") -> Claim:
    seeds = sorted(set(seeds_of(df, "transformer", task)) & set(seeds_of(df, "lstm", task)))
    if not seeds:
        raise KeyError(f"no seed has both a transformer and an lstm on {task}")
    t_acc = [float(curve(df, "transformer", task, s, "transformer").mean()) for s in seeds]
    l_acc = [float(curve(df, "lstm", task, s, "lstm").mean()) for s in seeds]
    diffs = [a - b for a, b in zip(t_acc, l_acc)]
    mean = float(np.mean(diffs))
    if len(seeds) < 2:
        m = seed_measurement(diffs, unit="accuracy difference (transformer - lstm)")
        verdict = "not_reproduced" if mean <= 0 else "inconclusive"
        return claim.decide(m, verdict, f"one seed only: difference {mean:+.4f}; no test possible")
    test = paired_t_test(t_acc, l_acc, alternative="greater")
    m = Measurement(value=mean, ci_low=test.ci_low, ci_high=test.ci_high, n=len(seeds),
                    method=f"paired over {len(seeds)} seeds, Student t interval", unit="accuracy difference "
                    "(transformer - lstm, averaged over positions)")
    if mean <= 0:
        verdict = "not_reproduced"
    elif mean > LSTM_MARGIN and test.pvalue < ALPHA:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"mean accuracy over positions: transformer {', '.join(f'{v:.4f}' for v in t_acc)}, lstm "
              f"{', '.join(f'{v:.4f}' for v in l_acc)}; one-sided paired t test p = {test.pvalue:.3g} "
              f"(needs difference > {LSTM_MARGIN} and p < {ALPHA})")
    return claim.decide(m, verdict, detail)


# --- the LLM arm -----------------------------------------------------------------------------------------
# Input: the table of ``experiment.run_llm_arm``, one row per (seed, function, position) with ``label`` and
# ``pred_<learner>`` columns. Position 1 (no examples yet) is left out of every accuracy below.

def llm_function_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, function): each learner's accuracy over query positions 2..N."""
    queries = table[table["position"] >= 2]
    correct = pd.DataFrame({name: queries[f"pred_{name}"] == queries["label"] for name in LLM_LEARNERS})
    correct[["seed", "function"]] = queries[["seed", "function"]]
    return correct.groupby(["seed", "function"], sort=True)[list(LLM_LEARNERS)].mean().reset_index()


def llm_label_mass(table: pd.DataFrame) -> float:
    """Mean probability the LLM puts on the two label digits (1 = it always answers in the format)."""
    return float(np.mean(np.exp(table["logp0"]) + np.exp(table["logp1"])))


def decide_llm(claim: Claim, table: pd.DataFrame | None) -> Claim:
    if table is None or table.empty:
        m = Measurement(None, None, None, 1, "not run", unit="accuracy difference (SmolLM2 - 1-NN)")
        return claim.decide(m, "inconclusive", "the LLM arm was not run (llm_functions = 0)")
    acc = llm_function_accuracy(table)
    d = (acc["smollm2"] - acc["nearest_neighbour"]).to_numpy()
    value, lo, hi = bootstrap_ci(d)
    seeds = sorted(int(s) for s in acc["seed"].unique())
    m = Measurement(value=value, ci_low=lo, ci_high=hi, n=len(d),
                    method=f"percentile bootstrap over {len(d)} functions ({len(seeds)} seeds), 10000 resamples",
                    unit="accuracy difference (SmolLM2 - 1-NN), query positions 2..N")
    if len(d) < 2:
        verdict = "inconclusive"
    elif lo > LLM_MARGIN:
        verdict = "reproduced"
    elif hi < LLM_MARGIN:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    per_seed = acc.assign(d=d).groupby("seed")["d"].mean()
    means = acc[list(LLM_LEARNERS)].mean()
    detail = (f"mean accuracy over positions 2..N: " + ", ".join(f"{k} {means[k]:.4f}" for k in LLM_LEARNERS)
              + f"; mean difference per seed {', '.join(f'{v:+.4f}' for v in per_seed)}; mean probability on the "
              f"two label digits {llm_label_mass(table):.3f}; SmolLM2 answers 1 on "
              f"{float(np.mean(table['pred_smollm2'] > 0)):.3f} of queries, labels are 1 on "
              f"{float(np.mean(table['label'] > 0)):.3f} (margin {LLM_MARGIN:+.2f})")
    return claim.decide(m, verdict, detail)
