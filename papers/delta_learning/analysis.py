"""Pre-registered claims and the rules that turn the per-seed tables into verdicts.

Inputs:
- logistic-regression table (``logistic.run_grid``): one row per (seed, rho, acc_teacher_2_target) with
  ``dpo_step_gain, sft_step_gain, dpo_converged_gain, sft_converged_gain, delta_cosine, delta_norm_ratio``;
- LM-ladder table (``ladder.run_seed`` rows): one row per (seed, model) with ``exact_match``, where model is
  ``teacher_2, teacher_1, student, dpo, dpo_swapped, sft_chosen``.

Every interval is a Student-t interval over seeds (``shared.stats``); a sign claim is *reproduced* when the
interval excludes zero on the paper's side, *not reproduced* when it excludes zero on the other side, and
*inconclusive* otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import paired_t_test, seed_measurement

# --- pre-registered claims (written before the first `small` run; see README.md) ----------------------

COSINE_FLOOR = 0.9  # the converged DPO update must point along the teachers' delta
NORM_RATIO = (0.8, 1.25)  # ... with about the predicted length ||theta_1 - theta_2|| / beta
ALPHA = 0.05

CLAIMS = {
    "lr_delta_mechanism": dict(
        statement="Logistic regression (Sec. 6): DPO on pairs from two weak teachers moves the student along "
                  "the teachers' delta; the converged update is (theta_1 - theta_2) / beta, whatever the "
                  "teachers' absolute quality.",
        criterion="For every (rho, teacher-2) configuration: lower t-bound over seeds of cos(update, theta_1 - "
                  "theta_2) >= 0.9 and mean norm ratio ||update|| beta / ||theta_1 - theta_2|| in [0.8, 1.25] "
                  "-> reproduced; any configuration whose upper cosine bound is < 0.9 or whose norm ratio is "
                  "outside -> not_reproduced; otherwise inconclusive.",
        paper_value="mechanism of Sec. 6 (the gap between weak teachers is the signal); closed form is ours",
    ),
    "lr_dpo_improves_student": dict(
        statement="Logistic regression (Sec. 6): the performance gap between two weak teachers provides a "
                  "signal that improves a stronger student: a DPO step on (teacher 1 > teacher 2) pairs "
                  "raises the accuracy of a student more accurate than both.",
        criterion="Student 0.90, teachers 0.80 / 0.70: for every shared-error fraction rho in the grid, the "
                  "t interval over seeds of the accuracy change after one DPO gradient step lies above 0 -> "
                  "reproduced; any rho with the interval below 0 -> not_reproduced; otherwise inconclusive.",
        paper_value="proved in logistic regression (Sec. 6); no number",
    ),
    "lr_sft_hurts": dict(
        statement="Logistic regression analogue of 'SFT on the weak chosen data hurts': fitting the student "
                  "to the chosen teacher's responses lowers its accuracy.",
        criterion="Student 0.90, teachers 0.80 / 0.70: for every rho, the t interval over seeds of the "
                  "accuracy change of the converged SFT student lies below 0 -> reproduced; any interval above "
                  "0 -> not_reproduced; otherwise inconclusive.",
        paper_value="SFT on weak chosen responses hurts (Sec. 3-4, LM experiments)",
    ),
    "lr_gain_grows_with_delta": dict(
        statement="The size of the quality delta matters: a larger gap between the two teachers gives a "
                  "larger DPO improvement (Sec. 5 model-ladder analysis).",
        criterion="Teacher 1 fixed at 0.80, teacher 2 in the grid: for every rho, the mean one-step DPO gain "
                  "increases monotonically with the gap, and the paired (same seed) difference gain(largest gap) "
                  "- gain(smallest gap) has its t interval above 0 -> reproduced; any rho with that interval "
                  "below 0 -> not_reproduced; otherwise inconclusive.",
        paper_value="gains grow with the chosen-rejected size gap in the Qwen-2.5 ladder (Sec. 5)",
    ),
    "lm_dpo_improves_student": dict(
        statement="Preference tuning a student on pairs from two weaker models (chosen = the stronger of the "
                  "two) improves it beyond its starting point and beyond both teachers.",
        criterion="LM ladder: t interval over seeds of exact_match(DPO) - exact_match(student) above 0 -> "
                  "reproduced; below 0 -> not_reproduced; otherwise inconclusive.",
        paper_value="Tulu-3-8B-SFT avg 57.2 -> 63.4 with Qwen-2.5-3B > 1.5B pairs (Table in Sec. 4)",
    ),
    "lm_sft_hurts": dict(
        statement="Supervised fine-tuning the student on the chosen (weak) responses hurts it.",
        criterion="LM ladder: t interval over seeds of exact_match(SFT on chosen) - exact_match(student) below "
                  "0 -> reproduced; above 0 -> not_reproduced; otherwise inconclusive.",
        paper_value="SFT on UltraFeedback-Weak chosen responses lowers Llama-3 benchmark averages (Sec. 3)",
    ),
    "lm_dpo_beats_sft": dict(
        statement="On the same weak data, preference tuning beats SFT on the chosen responses.",
        criterion="LM ladder: one-sided paired t test over seeds of exact_match(DPO) > exact_match(SFT), "
                  "p < 0.05 -> reproduced; mean difference <= 0 -> not_reproduced; otherwise inconclusive.",
        paper_value="DPO > SFT on the same weak pairs in every controlled experiment (Sec. 3)",
    ),
    "lm_swap_reverses": dict(
        statement="Reversing the pairs (weaker model's response chosen) reverses the direction of the change.",
        criterion="LM ladder: t interval over seeds of exact_match(DPO, swapped pairs) - exact_match(student) "
                  "below 0 -> reproduced; above 0 -> not_reproduced; otherwise inconclusive.",
        paper_value="chosen 2 > rejected 3 bold sections lowers the section count (Sec. 2)",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


def sign_verdict(m: Measurement, expected: str) -> str:
    """``expected`` is "positive" or "negative": which side of 0 the paper predicts."""
    if m.ci_low is None or m.ci_high is None:
        return "inconclusive"
    if expected == "positive":
        return "reproduced" if m.ci_low > 0 else "not_reproduced" if m.ci_high < 0 else "inconclusive"
    return "reproduced" if m.ci_high < 0 else "not_reproduced" if m.ci_low > 0 else "inconclusive"


def _combine(verdicts: list[str]) -> str:
    """All regimes must pass; one failing regime refutes; anything else is inconclusive."""
    if any(v == "not_reproduced" for v in verdicts):
        return "not_reproduced"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def _fmt(m: Measurement, digits: int = 4) -> str:
    if m.ci_low is None:
        return f"{m.value:.{digits}g}"
    return f"{m.value:.{digits}g} [{m.ci_low:.{digits}g}, {m.ci_high:.{digits}g}]"


# --- logistic regression ----------------------------------------------------------------------------

def primary(df: pd.DataFrame, acc_teacher_2: float) -> pd.DataFrame:
    return df[np.isclose(df["acc_teacher_2_target"], acc_teacher_2)]


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


def decide_gain_by_rho(claim: Claim, df: pd.DataFrame, column: str, expected: str, acc_teacher_2: float) -> Claim:
    """Sign claims on one gain column at the primary teacher pair, one verdict per rho, all must pass.
    The reported measurement is the rho whose interval is least favourable to the claim."""
    sub = primary(df, acc_teacher_2)
    if sub.empty:
        raise ValueError(f"no rows with teacher-2 accuracy {acc_teacher_2}")
    per_rho = {rho: seed_measurement(g[column].tolist(), unit="accuracy change")
               for rho, g in sub.groupby("rho", sort=True)}
    verdicts = {rho: sign_verdict(m, expected) for rho, m in per_rho.items()}
    worst_rho = (min if expected == "positive" else max)(
        per_rho, key=lambda r: per_rho[r].ci_low if expected == "positive" else per_rho[r].ci_high)
    m = per_rho[worst_rho]
    m.method = f"mean over {m.n} seeds, Student t interval (least favourable rho = {worst_rho:g})"
    detail = "; ".join(f"rho={rho:g}: {_fmt(per_rho[rho])} ({verdicts[rho]})" for rho in per_rho)
    return claim.decide(m, _combine(list(verdicts.values())), f"{column} by rho: {detail}")


def decide_delta_mechanism(claim: Claim, df: pd.DataFrame) -> Claim:
    parts, verdicts, worst = [], [], None
    for (rho, acc2), g in df.groupby(["rho", "acc_teacher_2_target"], sort=True):
        cos = seed_measurement(g["delta_cosine"].tolist(), unit="cosine")
        ratio = float(g["delta_norm_ratio"].mean())
        ratio_ok = NORM_RATIO[0] <= ratio <= NORM_RATIO[1]
        low = cos.ci_low if cos.ci_low is not None else cos.value
        high = cos.ci_high if cos.ci_high is not None else cos.value
        if low >= COSINE_FLOOR and ratio_ok:
            verdicts.append("reproduced")
        elif high < COSINE_FLOOR or not ratio_ok:
            verdicts.append("not_reproduced")
        else:
            verdicts.append("inconclusive")
        if worst is None or low < (worst.ci_low if worst.ci_low is not None else worst.value):
            worst = cos
        parts.append(f"rho={rho:g}, teacher 2 {acc2:g}: cos {cos.value:.4f}, norm ratio {ratio:.3f}")
    worst.method = f"mean over {worst.n} seeds, Student t interval (configuration with the lowest bound)"
    return claim.decide(worst, _combine(verdicts), "; ".join(parts))


def decide_gain_grows(claim: Claim, df: pd.DataFrame, column: str = "dpo_step_gain") -> Claim:
    parts, verdicts, worst = [], [], None
    for rho, g in df.groupby("rho", sort=True):
        means = g.groupby("delta_accuracy")[column].mean().sort_index()
        monotone = bool(np.all(np.diff(means.to_numpy()) > 0))
        small, large = means.index.min(), means.index.max()
        wide = g[np.isclose(g["delta_accuracy"], large)].set_index("seed")[column]
        narrow = g[np.isclose(g["delta_accuracy"], small)].set_index("seed")[column]
        diff = seed_measurement((wide - narrow.reindex(wide.index)).tolist(), unit="accuracy change")
        v = sign_verdict(diff, "positive")
        if v == "reproduced" and not monotone:
            v = "inconclusive"
        verdicts.append(v)
        if worst is None or (diff.ci_low if diff.ci_low is not None else diff.value) < (
                worst.ci_low if worst.ci_low is not None else worst.value):
            worst = diff
            worst.method = (f"paired over {diff.n} seeds, gain at gap {large:g} minus gap {small:g}, "
                            f"Student t interval (least favourable rho = {rho:g})")
        parts.append(f"rho={rho:g}: gain by gap " + ", ".join(f"{k:g}: {v_:.3g}" for k, v_ in means.items())
                     + f" (monotone: {monotone}; difference {_fmt(diff, 3)})")
    return claim.decide(worst, _combine(verdicts), "; ".join(parts))


# --- LM ladder --------------------------------------------------------------------------------------

def lm_wide(df: pd.DataFrame) -> pd.DataFrame:
    """seed x model table of exact match."""
    return df.pivot(index="seed", columns="model", values="exact_match").sort_index()


def lm_change(df: pd.DataFrame, arm: str) -> Measurement:
    wide = lm_wide(df)
    return seed_measurement((wide[arm] - wide["student"]).tolist(), unit="exact-match change")


def decide_lm_sign(claim: Claim, df: pd.DataFrame, arm: str, expected: str) -> Claim:
    wide = lm_wide(df)
    if arm not in wide or "student" not in wide:
        raise ValueError(f"the LM table needs the student and the {arm} arm")
    m = lm_change(df, arm)
    detail = (f"{arm} - student per seed: " + ", ".join(f"{d:+.4f}" for d in (wide[arm] - wide["student"]))
              + f"; student {wide['student'].mean():.4f}, teacher 1 {wide['teacher_1'].mean():.4f}, "
              f"teacher 2 {wide['teacher_2'].mean():.4f}, {arm} {wide[arm].mean():.4f} (means over seeds)")
    return claim.decide(m, sign_verdict(m, expected), detail)


def decide_lm_dpo_beats_sft(claim: Claim, df: pd.DataFrame) -> Claim:
    wide = lm_wide(df)
    if len(wide) < 2:
        d = float((wide["dpo"] - wide["sft_chosen"]).mean())
        m = Measurement(value=d, ci_low=None, ci_high=None, n=1, method="single seed, no test",
                        unit="exact-match difference")
        return claim.decide(m, "inconclusive", "one seed: no paired test")
    res = paired_t_test(wide["dpo"].tolist(), wide["sft_chosen"].tolist(), alternative="greater")
    m = Measurement(value=res.mean_difference, ci_low=res.ci_low, ci_high=res.ci_high, n=res.n,
                    method="paired over seeds, Student t interval; one-sided paired t test",
                    unit="exact-match difference")
    if res.pvalue < ALPHA:
        verdict = "reproduced"
    elif res.mean_difference <= 0:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    return claim.decide(m, verdict, f"DPO - SFT = {_fmt(m)}; one-sided paired t test p = {res.pvalue:.3g}")
