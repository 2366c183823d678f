"""Aggregation of accuracy curves and the measurements behind the registered claims (``claims.yaml``).

Each ``measure_*`` function returns what :meth:`shared.claims.Claim.evaluate` needs: the statistic with its
interval, the gate's outcome, the control's measurement, and a detail line.

Input: a long table with one row per ``family, task, seed, learner, position`` and its ``accuracy`` (the
fraction of evaluation prompts whose label at that position was predicted correctly). ``learner`` is the
trained network's family ("transformer", "lstm") or a classical learner evaluated on the same prompts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import bootstrap_ci, seed_measurement

from .task import OPTIMAL_LEARNER, examples_to_reach

FINAL_POSITIONS = 5  # "final accuracy" = mean over the last 5 query positions
LEARNED = 0.90  # the gates: a trained model's final accuracy on held-out prompts, in every seed
TEACH_LEVEL = 0.90  # k90 (reported in the teaching claim's detail): examples until the curve stays >= 0.90
LLM_GATE, LLM_GATE_FROM = 0.75, 11  # the LLM gate: accuracy on single literals over positions 11..N
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


def _fmt(values) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _finals(df: pd.DataFrame, family: str, task: str, learner: str | None = None) -> list[float]:
    return [final_accuracy(curve(df, family, task, s, learner or family)) for s in seeds_of(df, family, task)]


def _learned_gate(parts: list[tuple[str, list[float]]]) -> Gate:
    """Passed when every listed model's final accuracy is >= LEARNED in every seed."""
    if any(not values for _, values in parts):
        missing = [name for name, values in parts if not values]
        return Gate(passed=False, value=None, detail=f"not run: {', '.join(missing)}")
    lowest = min(min(values) for _, values in parts)
    text = "; ".join(f"{name} final accuracy per seed {_fmt(values)}" for name, values in parts)
    return Gate(passed=bool(lowest >= LEARNED), value=float(lowest), detail=f"{text} (needs >= {LEARNED} in every seed)")


def measure_conjunction(df: pd.DataFrame, family: str = "transformer", task: str = "conjunction"):
    """conjunction_final_gap: per seed, final accuracy of the model minus the elimination learner's on the
    same prompts; gate: the model's final accuracy; control: 1-NN in place of the model."""
    seeds = seeds_of(df, family, task)
    optimal = OPTIMAL_LEARNER[task]
    model = _finals(df, family, task)
    opt = _finals(df, family, task, optimal)
    nn = _finals(df, family, task, "nearest_neighbour")
    gaps = [a - b for a, b in zip(model, opt)]
    m = seed_measurement(gaps, unit="accuracy difference")
    control = Control(seed_measurement([a - b for a, b in zip(nn, opt)], unit="accuracy difference"),
                      f"1-nearest neighbour final accuracy per seed {_fmt(nn)} on the same prompts")
    gate = _learned_gate([(family, model)])
    detail = (f"final accuracy (last {FINAL_POSITIONS} positions) per seed {seeds}: {family} {_fmt(model)}, "
              f"{optimal} {_fmt(opt)}, gap {', '.join(f'{g:+.4f}' for g in gaps)}")
    return m, gate, control, detail


def measure_sparse_parity(df: pd.DataFrame, family: str = "transformer", task: str = "sparse_parity",
                          gate_task: str = "sparse_conjunction"):
    """sparse_parity_near_chance_v2: the model's final accuracy on sparse parity; gate: the same model and
    budget on sparse_conjunction (the same supports); control: GF(2) elimination on the same prompts."""
    solver = OPTIMAL_LEARNER[task]
    model = _finals(df, family, task)
    solver_finals = _finals(df, family, task, solver)
    m = seed_measurement(model, unit="accuracy", bounds=(0.0, 1.0))
    control = Control(seed_measurement(solver_finals, unit="accuracy", bounds=(0.0, 1.0)),
                      f"{solver} final accuracy per seed {_fmt(solver_finals)} on the same prompts")
    gate_finals = _finals(df, family, gate_task) if seeds_of(df, family, gate_task) else []
    gate = _learned_gate([(f"{family} on {gate_task}", gate_finals)])
    first = [float(curve(df, family, task, s, family)[0]) for s in seeds_of(df, family, task)]
    detail = (f"{family} final accuracy per seed {_fmt(model)} (at the first query, before any example: "
              f"{_fmt(first)}); {solver} {_fmt(solver_finals)}")
    return m, gate, control, detail


def measure_teaching(df: pd.DataFrame, post_teach: pd.DataFrame, family: str = "transformer",
                     teach_task: str = "teach_conjunction", control_task: str = "mono_conjunction"):
    """teaching_post_prefix_gain: per seed, accuracy at the first query after the teaching sequence (teach
    prompts) minus the control model's at the same index (the same point); gate: both models' final
    accuracy; control: the constant -1 predictor in place of both models.

    ``post_teach``: rows (family, task, seed, learner, accuracy) at that index."""
    seeds = sorted(set(seeds_of(df, family, teach_task)) & set(seeds_of(df, family, control_task)))
    if not seeds:
        raise KeyError(f"no seed has both {teach_task} and {control_task} for {family}")

    def at_anchor(task: str, learner: str) -> list[float]:
        sel = post_teach[(post_teach["family"] == family) & (post_teach["task"] == task)
                         & (post_teach["learner"] == learner)].set_index("seed")["accuracy"]
        return [float(sel.loc[s]) for s in seeds]

    post, post_ctrl = at_anchor(teach_task, family), at_anchor(control_task, family)
    null, null_ctrl = at_anchor(teach_task, "null"), at_anchor(control_task, "null")
    m = seed_measurement([a - b for a, b in zip(post, post_ctrl)], unit="accuracy difference")
    control = Control(seed_measurement([a - b for a, b in zip(null, null_ctrl)], unit="accuracy difference"),
                      f"constant -1 predictor at the same index: {_fmt(null)} (teach) vs {_fmt(null_ctrl)} (control)")
    gate = _learned_gate([(f"{family} on {teach_task}", [final_accuracy(curve(df, family, teach_task, s, family))
                                                          for s in seeds]),
                          (f"{family} on {control_task}", [final_accuracy(curve(df, family, control_task, s, family))
                                                            for s in seeds])])
    k_teach = [examples_to_reach(curve(df, family, teach_task, s, family), TEACH_LEVEL) for s in seeds]
    k_ctrl = [examples_to_reach(curve(df, family, control_task, s, family), TEACH_LEVEL) for s in seeds]
    detail = (f"accuracy at the first query after the teaching sequence per seed {_fmt(post)} vs the control "
              f"model at the same index {_fmt(post_ctrl)}; examples until the curve stays >= {TEACH_LEVEL}: "
              f"{k_teach} with teaching, {k_ctrl} without (N + 1 = never)")
    return m, gate, control, detail


def measure_lstm(df: pd.DataFrame, task: str = "conjunction", replicate: str = "lstm_aa"):
    """lstm_below_transformer: per seed, Transformer minus LSTM accuracy averaged over positions (same
    prompts); gate: both final accuracies; control: A/A, the LSTM replicate minus the LSTM."""
    seeds = sorted(set(seeds_of(df, "transformer", task)) & set(seeds_of(df, "lstm", task)))
    if not seeds:
        raise KeyError(f"no seed has both a transformer and an lstm on {task}")
    t_acc = [float(curve(df, "transformer", task, s, "transformer").mean()) for s in seeds]
    l_acc = [float(curve(df, "lstm", task, s, "lstm").mean()) for s in seeds]
    m = seed_measurement([a - b for a, b in zip(t_acc, l_acc)], unit="accuracy difference")
    aa_seeds = [s for s in seeds if s in seeds_of(df, replicate, task)]
    aa_acc = [float(curve(df, replicate, task, s, replicate).mean()) for s in aa_seeds]
    aa = [a - float(curve(df, "lstm", task, s, "lstm").mean()) for a, s in zip(aa_acc, aa_seeds)]
    if aa:
        control = Control(seed_measurement(aa, unit="accuracy difference"),
                          f"A/A: LSTM under training seeds 1000 + s minus the LSTM of seed s: "
                          f"{', '.join(f'{v:+.4f}' for v in aa)}")
    else:
        control = Control(Measurement(None, None, None, 0, "A/A replicate not run", unit="accuracy difference"),
                          "A/A replicate not run")
    gate = _learned_gate([("transformer", [final_accuracy(curve(df, "transformer", task, s, "transformer"))
                                           for s in seeds]),
                          ("lstm", [final_accuracy(curve(df, "lstm", task, s, "lstm")) for s in seeds])])
    detail = (f"accuracy averaged over positions per seed {seeds}: transformer {_fmt(t_acc)}, lstm {_fmt(l_acc)}")
    return m, gate, control, detail


# --- the LLM arm -----------------------------------------------------------------------------------------
# Input: the table of ``experiment.run_llm_arm``, one row per (seed, function, position) with ``label`` and
# ``pred_<learner>`` columns. Position 1 (no examples yet) is left out of every accuracy below.

def llm_function_accuracy(table: pd.DataFrame, first: int = 2) -> pd.DataFrame:
    """One row per (task, seed, function): each learner's accuracy over query positions ``first``..N."""
    queries = table[table["position"] >= first]
    correct = pd.DataFrame({name: queries[f"pred_{name}"] == queries["label"] for name in LLM_LEARNERS})
    correct[["task", "seed", "function"]] = queries[["task", "seed", "function"]]
    return correct.groupby(["task", "seed", "function"], sort=True)[list(LLM_LEARNERS)].mean().reset_index()


def llm_label_mass(table: pd.DataFrame) -> float:
    """Mean probability the LLM puts on the two label digits (1 = it always answers in the format)."""
    return float(np.mean(np.exp(table["logp0"]) + np.exp(table["logp1"])))


def _bootstrap(d: np.ndarray, what: str, seeds: int) -> Measurement:
    if len(d) < 2:
        return Measurement(float(d.mean()) if len(d) else None, None, None, len(d), "fewer than 2 functions",
                           unit="accuracy difference")
    value, lo, hi = bootstrap_ci(d)
    return Measurement(value=value, ci_low=lo, ci_high=hi, n=len(d),
                       method=f"{what}: percentile bootstrap over {len(d)} functions ({seeds} seeds), 10000 resamples",
                       unit="accuracy difference")


def measure_llm(table: pd.DataFrame, task: str = "conjunction", gate_task: str = "literal"):
    """llm_competes_with_nearest_neighbour_v2: per conjunction function, SmolLM2 minus 1-NN accuracy over
    positions 2..N (bootstrap over functions); gate: SmolLM2 on single literals over positions
    LLM_GATE_FROM..N; control: the constant -1 predictor in place of SmolLM2."""
    acc = llm_function_accuracy(table)
    conj = acc[acc["task"] == task]
    if conj.empty:
        raise ValueError(f"the LLM table has no {task} prompts")
    n_seeds = conj["seed"].nunique()
    m = _bootstrap((conj["smollm2"] - conj["nearest_neighbour"]).to_numpy(), "SmolLM2 - 1-NN", n_seeds)
    control = Control(_bootstrap((conj["null"] - conj["nearest_neighbour"]).to_numpy(), "constant -1 - 1-NN",
                                 n_seeds), "the constant -1 predictor in place of SmolLM2, same prompts")
    late = llm_function_accuracy(table[table["task"] == gate_task], first=LLM_GATE_FROM)
    if late.empty:
        gate = Gate(passed=False, value=None, detail=f"no {gate_task} prompt has positions {LLM_GATE_FROM}..N")
    else:
        means = late[list(LLM_LEARNERS)].mean()
        gate = Gate(passed=bool(means["smollm2"] >= LLM_GATE), value=float(means["smollm2"]),
                    detail=(f"SmolLM2 accuracy on single literals over positions {LLM_GATE_FROM}..N: "
                            f"{means['smollm2']:.4f} over {len(late)} functions (needs >= {LLM_GATE}); "
                            f"1-NN {means['nearest_neighbour']:.4f}, elimination {means['elimination']:.4f}, "
                            f"constant -1 {means['null']:.4f}"))
    per_seed = conj.assign(d=conj["smollm2"] - conj["nearest_neighbour"]).groupby("seed")["d"].mean()
    means = conj[list(LLM_LEARNERS)].mean()
    sub = table[table["task"] == task]
    detail = (f"{task}, mean accuracy over positions 2..N: " + ", ".join(f"{k} {means[k]:.4f}" for k in LLM_LEARNERS)
              + f"; SmolLM2 - 1-NN per seed {', '.join(f'{v:+.4f}' for v in per_seed)}; mean probability on the "
              f"two label digits {llm_label_mass(sub):.3f}; SmolLM2 answers 1 on "
              f"{float(np.mean(sub['pred_smollm2'] > 0)):.3f} of queries, labels are 1 on "
              f"{float(np.mean(sub['label'] > 0)):.3f}")
    return m, gate, control, detail
