"""Measurements behind the registered claims (``claims.yaml``) and the call that evaluates them.

Inputs:
- logistic-regression table (``logistic.run_grid``): one row per (seed, rho, acc_teacher_2_target) with
  ``acc_student, acc_teacher_1, dpo_step_gain, sft_converged_gain, delta_cosine, ...``;
- logistic-regression paths (``logistic.run_paths``): one row per (seed, rho, arm) with ``best_gain,
  final_gain, reached_optimum``, arm = ``dpo``, ``sft`` or ``dpo_equal_teachers`` (the control);
- LM-ladder table (``ladder.run_seed`` rows): one row per (seed, model) with ``exact_match`` on the
  evaluation problems, model in ``teacher_2, teacher_1, student, dpo, dpo_swapped, dpo_random, dpo_rerun,
  sft_chosen, sft_self`` (and the grid points);
- LM pair facts: one row per seed with ``distinct_pairs``.

Every interval is a Student-t interval over seeds (``shared.stats.seed_measurement``). A claim that must
hold *in every regime* (every shared-error fraction rho, or every teacher configuration) is measured by
:func:`every_regime`: for ``greater`` the value is the smallest per-regime mean and the interval
[smallest per-regime lower bound, smallest per-regime upper bound], so the shared rule says "beyond" only
if every regime's interval is beyond the boundary and "short" as soon as one regime's interval is short.
The verdict itself comes only from ``shared.claims`` (``Claim.evaluate``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Claim, Control, Gate, evaluate_registered
from shared.metrics import Measurement
from shared.stats import seed_measurement

LM_MIN_STUDENT = 0.8  # gate: the student's held-out exact match in every seed
LM_MIN_DISTINCT_PAIRS = 200  # gate: distinct preference pairs per seed


def every_regime(per_regime: dict, direction: str, unit: str, what: str = "rho") -> Measurement:
    """Combine per-regime t intervals into one interval for "holds in every regime" (see module doc).

    ``direction``: ``greater`` (worst = lowest), ``less`` (worst = highest) or ``within`` (the union of
    the intervals; the value is the mean farthest from the others' centre is not needed: the value is the
    per-regime mean with the largest absolute value)."""
    if not per_regime:
        raise ValueError("no regimes")
    ms = list(per_regime.values())
    if any(m.ci_low is None or m.ci_high is None for m in ms):
        value = min(m.value for m in ms) if direction == "greater" else max(m.value for m in ms)
        return Measurement(value, None, None, min(m.n for m in ms), "a regime has no interval", unit=unit)
    n = min(m.n for m in ms)
    if direction == "greater":
        value, lo, hi = min(m.value for m in ms), min(m.ci_low for m in ms), min(m.ci_high for m in ms)
        how = "smallest"
    elif direction == "less":
        value, lo, hi = max(m.value for m in ms), max(m.ci_low for m in ms), max(m.ci_high for m in ms)
        how = "largest"
    elif direction == "within":
        value = max((m.value for m in ms), key=abs)
        lo, hi = min(m.ci_low for m in ms), max(m.ci_high for m in ms)
        how = "union of"
    else:
        raise ValueError(f"unknown direction {direction!r}")
    method = (f"{how} per-{what} t interval{'s' if how == 'union of' else ''} over {n} seeds "
              f"({len(ms)} {what} values; interval = [{'lowest' if direction != 'less' else 'highest'} lower "
              f"bound, {'lowest' if direction == 'greater' else 'highest'} upper bound])")
    return Measurement(value, lo, hi, n, method, unit=unit)


def _fmt(m: Measurement, digits: int = 4) -> str:
    if m.ci_low is None:
        return f"{m.value:.{digits}g}"
    return f"{m.value:.{digits}g} [{m.ci_low:.{digits}g}, {m.ci_high:.{digits}g}]"


def _per(df: pd.DataFrame, by: str | list[str], values, unit: str) -> dict:
    """``values(group) -> per-seed list``; one seed_measurement per group."""
    return {k: seed_measurement(values(g), unit=unit) for k, g in df.groupby(by, sort=True)}


# --- logistic regression: checks ------------------------------------------------------------------------

def primary(df: pd.DataFrame, acc_teacher_2: float) -> pd.DataFrame:
    sub = df[np.isclose(df["acc_teacher_2_target"], acc_teacher_2)]
    if sub.empty:
        raise ValueError(f"no rows with teacher-2 accuracy {acc_teacher_2}")
    return sub


def lr_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and t interval over seeds of every gain, per (rho, teacher-2 accuracy)."""
    rows = []
    for (rho, acc2), g in df.groupby(["rho", "acc_teacher_2_target"], sort=True):
        row = {"rho": rho, "acc_teacher_2": acc2, "delta_accuracy": float(g["delta_accuracy"].iloc[0]),
               "seeds": len(g)}
        for col in ("dpo_step_gain", "sft_step_gain", "dpo_converged_gain", "sft_converged_gain",
                    "delta_cosine", "delta_norm_ratio"):
            m = seed_measurement(g[col].tolist())
            row.update({col: m.value, f"{col}_low": m.ci_low, f"{col}_high": m.ci_high})
        rows.append(row)
    return pd.DataFrame(rows)


def measure_first_step(df: pd.DataFrame, acc_teacher_2: float):
    per = _per(primary(df, acc_teacher_2), "rho", lambda g: g["dpo_step_gain"].tolist(), "accuracy change")
    m = every_regime(per, "greater", "accuracy change")
    return m, None, None, "one DPO step, by rho: " + "; ".join(f"{r:g}: {_fmt(v)}" for r, v in per.items())


def measure_update_cosine(df: pd.DataFrame):
    per = _per(df, ["rho", "acc_teacher_2_target"], lambda g: g["delta_cosine"].tolist(), "cosine")
    m = every_regime(per, "greater", "cosine", what="configuration")
    ratios = df.groupby(["rho", "acc_teacher_2_target"])["delta_norm_ratio"].mean()
    detail = "; ".join(f"rho={r:g}, teacher 2 {a:g}: cos {_fmt(per[(r, a)])}, norm ratio {ratios[(r, a)]:.3f}"
                       for r, a in per)
    return m, None, None, detail


def measure_sft_to_teacher(df: pd.DataFrame, acc_teacher_2: float):
    sub = primary(df, acc_teacher_2)
    per = _per(sub, "rho", lambda g: (g["acc_student"] + g["sft_converged_gain"] - g["acc_teacher_1"]).tolist(),
               "accuracy difference")
    m = every_regime(per, "within", "accuracy difference")
    return m, None, None, ("accuracy of the converged SFT student minus teacher 1's, by rho: "
                           + "; ".join(f"{r:g}: {_fmt(v)}" for r, v in per.items()))


def measure_gain_growth(df: pd.DataFrame, column: str = "dpo_step_gain"):
    per, parts = {}, []
    for rho, g in df.groupby("rho", sort=True):
        means = g.groupby("delta_accuracy")[column].mean().sort_index()
        small, large = means.index.min(), means.index.max()
        wide = g[np.isclose(g["delta_accuracy"], large)].set_index("seed")[column]
        narrow = g[np.isclose(g["delta_accuracy"], small)].set_index("seed")[column]
        per[rho] = seed_measurement((wide - narrow.reindex(wide.index)).tolist(), unit="accuracy change")
        parts.append(f"rho={rho:g}: one-step gain by gap " + ", ".join(f"{k:g}: {v:.3g}" for k, v in means.items())
                     + f" (gap {large:g} minus gap {small:g}: {_fmt(per[rho], 3)})")
    return every_regime(per, "greater", "accuracy change"), None, None, "; ".join(parts)


# --- logistic regression: the training paths (replications) ---------------------------------------------

def paths_wide(paths: pd.DataFrame, column: str) -> pd.DataFrame:
    """(seed, rho) x arm table of ``column``."""
    return paths.pivot_table(index=["rho", "seed"], columns="arm", values=column).sort_index()


def _path_gate(paths: pd.DataFrame) -> Gate:
    ok = paths["reached_optimum"].astype(bool)
    return Gate(passed=bool(ok.all()), value=float(ok.mean()),
                detail=f"{int(ok.sum())}/{len(ok)} gradient-descent paths reached their optimum "
                       f"(largest number of steps {int(paths['steps'].max())})")


def measure_early_stopped(paths: pd.DataFrame):
    w = paths_wide(paths, "best_gain")
    diff = (w["dpo"] - w["sft"]).reset_index()
    ctrl = (w["dpo_equal_teachers"] - w["sft"]).reset_index()
    per = _per(diff, "rho", lambda g: g[0].tolist(), "accuracy difference")
    per_c = _per(ctrl, "rho", lambda g: g[0].tolist(), "accuracy difference")
    means = w.groupby(level="rho").mean()
    detail = "; ".join(f"rho={r:g}: best DPO gain {means.loc[r, 'dpo']:.4f}, best SFT gain {means.loc[r, 'sft']:.4f}, "
                       f"DPO - SFT {_fmt(per[r])}; control (equal teachers) DPO {means.loc[r, 'dpo_equal_teachers']:.4f}"
                       for r in per)
    return (every_regime(per, "greater", "accuracy difference"), _path_gate(paths),
            Control(every_regime(per_c, "greater", "accuracy difference"),
                    "DPO on pairs from two teachers of equal accuracy (zero delta) minus SFT, best points"), detail)


def measure_converged(paths: pd.DataFrame):
    w = paths_wide(paths, "final_gain").reset_index()
    per = _per(w, "rho", lambda g: g["dpo"].tolist(), "accuracy change")
    per_c = _per(w, "rho", lambda g: g["dpo_equal_teachers"].tolist(), "accuracy change")
    detail = "; ".join(f"rho={r:g}: converged DPO {_fmt(per[r])}, converged SFT {w[w['rho'] == r]['sft'].mean():.4f}, "
                       f"control {_fmt(per_c[r])}" for r in per)
    return (every_regime(per, "greater", "accuracy change"), _path_gate(paths),
            Control(every_regime(per_c, "greater", "accuracy change"),
                    "converged DPO on pairs from two teachers of equal accuracy (zero delta)"), detail)


# --- LM ladder ----------------------------------------------------------------------------------------------

def lm_wide(df: pd.DataFrame) -> pd.DataFrame:
    """seed x model table of held-out exact match."""
    return df.pivot(index="seed", columns="model", values="exact_match").sort_index()


def lm_gate(df: pd.DataFrame, facts: pd.DataFrame) -> Gate:
    """The ladder exists in every seed: teacher 2 < teacher 1 < student on the evaluation problems, the
    student at least LM_MIN_STUDENT, and at least LM_MIN_DISTINCT_PAIRS distinct pairs to tune on."""
    w = lm_wide(df)
    ordered = (w["teacher_2"] < w["teacher_1"]) & (w["teacher_1"] < w["student"])
    strong = w["student"] >= LM_MIN_STUDENT
    pairs = facts.set_index("seed")["distinct_pairs"].reindex(w.index) >= LM_MIN_DISTINCT_PAIRS
    ok = ordered & strong & pairs
    return Gate(passed=bool(ok.all()), value=float(w["student"].min()),
                detail=(f"ladder ordered in {int(ordered.sum())}/{len(w)} seeds, student >= {LM_MIN_STUDENT} in "
                        f"{int(strong.sum())}/{len(w)} (lowest {w['student'].min():.3f}), >= {LM_MIN_DISTINCT_PAIRS} "
                        f"distinct pairs in {int(pairs.sum())}/{len(w)} (fewest "
                        f"{int(facts['distinct_pairs'].min())})"))


def lm_difference(df: pd.DataFrame, a: str, b: str, unit: str = "exact-match difference") -> Measurement:
    w = lm_wide(df)
    for arm in (a, b):
        if arm not in w:
            raise ValueError(f"the LM table has no {arm!r} rows")
    m = seed_measurement((w[a] - w[b]).tolist(), unit=unit)
    m.method += f" of {a} - {b} per seed"
    return m


def measure_lm(df: pd.DataFrame, facts: pd.DataFrame, a: str, b: str, ctrl_a: str, ctrl_b: str, ctrl_what: str):
    w = lm_wide(df)
    m, c = lm_difference(df, a, b), lm_difference(df, ctrl_a, ctrl_b)
    detail = (f"{a} - {b} per seed: " + ", ".join(f"{d:+.4f}" for d in (w[a] - w[b]))
              + f"; control {ctrl_a} - {ctrl_b}: {_fmt(c)}; means: "
              + ", ".join(f"{k} {w[k].mean():.4f}" for k in dict.fromkeys([a, b, ctrl_a, ctrl_b])))
    return m, lm_gate(df, facts), Control(c, ctrl_what), detail


# --- Exp C: bold sections (SmolLM2, GPU `full` profile) -------------------------------------------------------

BOLD_TRAIN_MAX = 3  # the most sections of any training response
BOLD_PAIR_GATE = 0.8  # gate: held-out implicit-reward pair accuracy of the DPO arm, every seed
BOLD_MIN_USABLE = 0.9  # gate: share of the starting model's pool responses that could be rewritten
BOLD_MIN_SENTENCE_SPLIT = 0.8  # gate: share of those cut at sentence boundaries (>= 3 sentences)
BOLD_UNIT = "bold section headers per answer"


def missing(why: str, unit: str = BOLD_UNIT) -> Measurement:
    """A measurement that could not be made (the rule makes its claim inconclusive)."""
    return Measurement(None, None, None, 1, why, unit=unit)


def bold_wide(table: pd.DataFrame, column: str = "sections") -> pd.DataFrame:
    """seed x arm table of ``column`` (arms ``base, dpo_3v2, dpo_2v3, dpo_3v3, dpo_3v2_rerun, sft_3``)."""
    return table.pivot(index="seed", columns="arm", values=column).sort_index()


def bold_ran(table: pd.DataFrame | None, bold_arm: bool) -> tuple[bool, str]:
    """Whether Exp C ran: the arm is on and every arm has a finite section count in every seed."""
    if not bold_arm:
        return False, "the bold-section arm did not run (bold_arm = false; it is the GPU `full` profile)"
    if table is None or table.empty:
        return False, "the bold-section arm produced no rows"
    w = bold_wide(table)
    need = ["base", "dpo_3v2", "dpo_2v3", "dpo_3v3", "dpo_3v2_rerun", "sft_3"]
    if any(a not in w for a in need) or not np.isfinite(w[need].to_numpy(dtype=float)).all():
        return False, "an arm of the bold-section experiment has no section count (no usable training pairs?)"
    return True, "ran"


def bold_gate(table: pd.DataFrame, facts: dict, dpo_arm: str | None = None, sft: bool = False) -> Gate:
    """The experiment could test the claim: the starting model's responses could be rewritten (>=
    BOLD_MIN_USABLE usable, >= BOLD_MIN_SENTENCE_SPLIT of them cut at sentence boundaries); the DPO arm
    learned its preference (held-out pair accuracy >= BOLD_PAIR_GATE in every seed); with ``sft``, the SFT
    arm fit its data (the held-out 3-section responses' mean log-probability rose in every seed)."""
    usable = facts["pool_usable"] / max(1, facts["pool_responses"])
    split = facts["pool_sentence_split"]
    ok = usable >= BOLD_MIN_USABLE and split >= BOLD_MIN_SENTENCE_SPLIT
    parts = [f"usable responses {usable:.3f} (need >= {BOLD_MIN_USABLE}), cut at sentences {split:.3f} "
             f"(need >= {BOLD_MIN_SENTENCE_SPLIT})"]
    value = float("nan")
    if dpo_arm is not None:
        acc = bold_wide(table, "pair_accuracy")[dpo_arm]
        value = float(acc.min())
        ok = ok and bool((acc >= BOLD_PAIR_GATE).all())
        parts.append(f"{dpo_arm} held-out pair accuracy per seed " + ", ".join(f"{a:.3f}" for a in acc)
                     + f" (need >= {BOLD_PAIR_GATE} in every seed)")
    if sft:
        shift = bold_wide(table, "logp_shift_three")["sft_3"]
        ok = ok and bool((shift > 0).all())
        parts.append("sft_3 held-out 3-section log-probability change per seed "
                     + ", ".join(f"{d:+.3f}" for d in shift) + " (need > 0)")
    return Gate(passed=bool(ok), detail="; ".join(parts), value=value)


def _bold(table, facts, bold_arm, a, b, ctrl_a, ctrl_b, ctrl_what, gate_kwargs):
    """Per seed ``a - b`` (``b`` an arm or a number) with its control ``ctrl_a - ctrl_b``."""
    ran, why = bold_ran(table, bold_arm)
    if not ran:
        m = missing(why)
        return m, Gate(False, why), Control(missing(why), ctrl_what), why
    w = bold_wide(table)
    sub = lambda x, y: w[x] - (w[y] if isinstance(y, str) else float(y))  # noqa: E731
    d, c = sub(a, b), sub(ctrl_a, ctrl_b)
    m, mc = seed_measurement(d.tolist(), unit=BOLD_UNIT), seed_measurement(c.tolist(), unit=BOLD_UNIT)
    m.method += f" of {a} - {b} per seed"
    mc.method += f" of {ctrl_a} - {ctrl_b} per seed"
    detail = (f"{a} - {b} per seed: " + ", ".join(f"{v:+.3f}" for v in d) + f"; control {ctrl_a} - {ctrl_b}: "
              f"{_fmt(mc)}; mean sections: " + ", ".join(f"{k} {w[k].mean():.3f}" for k in w.columns))
    return m, bold_gate(table, facts, **gate_kwargs), Control(mc, ctrl_what), detail


def measure_bold_extrapolation(table, facts, bold_arm: bool):
    """DPO(3 > 2) sections minus 3 (the most in any training response); control DPO(3 = 3) minus 3."""
    return _bold(table, facts, bold_arm, "dpo_3v2", BOLD_TRAIN_MAX, "dpo_3v3", BOLD_TRAIN_MAX,
                 "DPO on 3 = 3 pairs (same sections; content headers over generic ones) minus 3",
                 {"dpo_arm": "dpo_3v2"})


def measure_bold_reversal(table, facts, bold_arm: bool):
    """DPO(2 > 3) sections minus DPO(3 > 2)'s (the starting model writes almost no bold header lines, so
    'below the starting model' has no room); control A/A: DPO(3 > 2) in another data order minus DPO(3 > 2)."""
    return _bold(table, facts, bold_arm, "dpo_2v3", "dpo_3v2", "dpo_3v2_rerun", "dpo_3v2",
                 "A/A: DPO(3 > 2) with another data order minus DPO(3 > 2)", {"dpo_arm": "dpo_2v3"})


def measure_bold_dpo_vs_sft(table, facts, bold_arm: bool):
    """DPO(3 > 2) sections minus SFT-on-3-sections'; control DPO(3 = 3) minus SFT."""
    return _bold(table, facts, bold_arm, "dpo_3v2", "sft_3", "dpo_3v3", "sft_3",
                 "DPO on 3 = 3 pairs minus SFT on the 3-section responses", {"dpo_arm": "dpo_3v2", "sft": True})


# --- everything ---------------------------------------------------------------------------------------------

def evaluate_all(claims: dict[str, Claim], lr: pd.DataFrame, paths: pd.DataFrame, lm: pd.DataFrame,
                 facts: pd.DataFrame, primary_teacher_2: float, bold: pd.DataFrame | None = None,
                 bold_facts: dict | None = None, bold_arm: bool = False) -> dict[str, Claim]:
    """Measure and evaluate every registered claim (the registry's order). ``bold``: Exp C's rows (one per
    (seed, arm)) and ``bold_facts`` (``bold.run_bold``); absent when the arm is off (``bold_arm`` false)."""
    measures = {
        "lr_first_step_gain_positive": lambda: measure_first_step(lr, primary_teacher_2),
        "lr_converged_update_along_delta": lambda: measure_update_cosine(lr),
        "lr_sft_converges_to_teacher_1": lambda: measure_sft_to_teacher(lr, primary_teacher_2),
        "lr_first_step_gain_grows_with_gap": lambda: measure_gain_growth(lr),
        "lr_dpo_beats_sft_early_stopped": lambda: measure_early_stopped(paths),
        "lr_dpo_converged_improves_student": lambda: measure_converged(paths),
        "lm_dpo_selected_improves_student": lambda: measure_lm(
            lm, facts, "dpo", "student", "dpo_random", "student",
            "DPO at the same settings on randomly oriented pairs (no delta) minus the student"),
        "lm_sft_selected_hurts": lambda: measure_lm(
            lm, facts, "sft_chosen", "student", "sft_self", "student",
            "SFT at the same learning rate on the student's own answers (no weak data) minus the student"),
        "lm_dpo_beats_sft_selected": lambda: measure_lm(
            lm, facts, "dpo", "sft_chosen", "dpo_random", "sft_chosen",
            "DPO on randomly oriented pairs (no delta) minus SFT on the chosen answers"),
        "lm_dpo_above_swapped": lambda: measure_lm(
            lm, facts, "dpo", "dpo_swapped", "dpo", "dpo_rerun",
            "A/A: DPO minus DPO at the same settings with another data order"),
        "bold_dpo_extrapolates": lambda: measure_bold_extrapolation(bold, bold_facts, bold_arm),
        "bold_reversed_pairs_below_original": lambda: measure_bold_reversal(bold, bold_facts, bold_arm),
        "bold_dpo_above_sft": lambda: measure_bold_dpo_vs_sft(bold, bold_facts, bold_arm),
    }
    return evaluate_registered(claims, measures)
