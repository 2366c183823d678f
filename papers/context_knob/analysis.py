"""Verdict rules of the pre-registered claims (``experiment.CLAIMS``), on the per-seed tables the notebook
builds from ``run_tiny_seed`` / ``run_smollm2_seed``:

- ``summary``: one row per (arm, seed) with ``ft_pair_accuracy``, ``test_iia``, ... (tiny arm);
- ``steering``: one row per (arm, model, direction, seed) with the steered ``pair_accuracy`` on test items;
- ``checkpoints``: one row per (seed, ft_step) with ``pair_accuracy`` and ``separation`` (tiny arm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.metrics import Claim, Measurement
from shared.stats import seed_measurement

FT_REPRODUCED, FT_NOT = 0.85, 0.70
IIA_REPRODUCED, IIA_NOT = 0.80, 0.50
STEER_MIN_DIFF = 0.30  # knob minus random steered pair accuracy
STEER_KNOB_REPRODUCED, STEER_KNOB_NOT = 0.80, 0.50  # steering the fine-tuned model itself
RHO_REPRODUCED, RHO_NOT = 0.70, 0.30
LM_FT_MIN = 0.70  # below this fine-tuned pair accuracy the SmolLM2 transfer test is underpowered


def _not_run(claim: Claim, why: str) -> Claim:
    return claim.decide(Measurement(None, None, None, 1, why, unit=""), "inconclusive", why)


def decide_threshold(claim: Claim, values: list[float], reproduced_at: float, not_reproduced_at: float,
                     unit: str, what: str) -> Claim:
    """Mean over seeds >= ``reproduced_at`` -> reproduced; <= ``not_reproduced_at`` -> not_reproduced."""
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return _not_run(claim, f"no finite {what} was measured")
    m = seed_measurement(values, unit=unit, bounds=(0.0, 1.0))  # accuracies
    if m.value >= reproduced_at:
        verdict = "reproduced"
    elif m.value <= not_reproduced_at:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"{what} per seed: {', '.join(f'{v:.3f}' for v in values)}; reproduced at >= {reproduced_at}, "
              f"not reproduced at <= {not_reproduced_at}")
    return claim.decide(m, verdict, detail)


def decide_ccs_finetuning(claim: Claim, summary: pd.DataFrame) -> Claim:
    return decide_threshold(claim, summary["ft_pair_accuracy"].tolist(), FT_REPRODUCED, FT_NOT,
                            "pair accuracy", "held-out pair accuracy of the fine-tuned model")


def decide_das(claim: Claim, summary: pd.DataFrame) -> Claim:
    if "test_iia" not in summary:
        return _not_run(claim, "DAS was not run (no item passed the correctness filter)")
    return decide_threshold(claim, summary["test_iia"].tolist(), IIA_REPRODUCED, IIA_NOT, "IIA",
                            "test interchange-intervention accuracy at the dev-chosen layer")


def steering_difference(steering: pd.DataFrame, arm: str, model: str) -> pd.DataFrame:
    """Per seed: steered pair accuracy of the knob direction, of the random control, and their difference."""
    sub = steering[(steering["arm"] == arm) & (steering["model"] == model)]
    wide = sub.pivot_table(index="seed", columns="direction", values="pair_accuracy")
    if "knob" not in wide or "random" not in wide:
        return pd.DataFrame(columns=["knob", "random", "difference"])
    wide = wide[["knob", "random"]].dropna()
    wide["difference"] = wide["knob"] - wide["random"]
    return wide


def decide_steering(claim: Claim, steering: pd.DataFrame, arm: str, model: str,
                    knob_reproduced_at: float | None = None, knob_not_at: float | None = None) -> Claim:
    """Knob minus random steered pair accuracy over seeds: mean >= 0.30 and t-interval above 0 ->
    reproduced; interval entirely below 0.30 -> not_reproduced; else inconclusive. With
    ``knob_reproduced_at`` the knob's own mean pair accuracy must also reach it, and a knob mean below
    ``knob_not_at`` is not_reproduced."""
    wide = steering_difference(steering, arm, model)
    if wide.empty:
        return _not_run(claim, f"no steering results for {arm} / {model} in this profile")
    m = seed_measurement(wide["difference"].tolist(), unit="pair accuracy (knob - random)")
    knob = float(wide["knob"].mean())
    lo = m.ci_low if m.ci_low is not None else m.value
    hi = m.ci_high if m.ci_high is not None else m.value
    strong = m.value >= STEER_MIN_DIFF and lo > 0
    if strong and (knob_reproduced_at is None or knob >= knob_reproduced_at):
        verdict = "reproduced"
    elif hi < STEER_MIN_DIFF or (knob_not_at is not None and knob < knob_not_at):
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"{model}: steered pair accuracy knob {knob:.3f} vs random {wide['random'].mean():.3f} "
              f"(per seed knob {', '.join(f'{v:.3f}' for v in wide['knob'])}; random "
              f"{', '.join(f'{v:.3f}' for v in wide['random'])}); difference threshold {STEER_MIN_DIFF}")
    if knob_reproduced_at is not None:
        detail += f"; knob pair accuracy needed >= {knob_reproduced_at} (not reproduced below {knob_not_at})"
    return claim.decide(m, verdict, detail)


def checkpoint_correlations(checkpoints: pd.DataFrame) -> pd.Series:
    """Spearman correlation of pair accuracy with separation across the checkpoints of each seed (NaN when
    either is constant)."""
    out = {}
    for seed, g in checkpoints.groupby("seed"):
        if g["pair_accuracy"].nunique() < 2 or g["separation"].nunique() < 2:
            out[seed] = float("nan")
        else:
            out[seed] = float(st.spearmanr(g["pair_accuracy"], g["separation"]).statistic)
    return pd.Series(out, name="spearman")


def decide_correlation(claim: Claim, checkpoints: pd.DataFrame) -> Claim:
    if checkpoints.empty:
        return _not_run(claim, "no checkpoint table (DAS did not run)")
    rho = checkpoint_correlations(checkpoints).dropna()
    if len(rho) < 2:
        return _not_run(claim, "fewer than two seeds with a defined correlation")
    m = seed_measurement(rho.tolist(), unit="Spearman rho", bounds=(-1.0, 1.0))
    lo = m.ci_low if m.ci_low is not None else m.value
    if m.value >= RHO_REPRODUCED and lo > 0:
        verdict = "reproduced"
    elif m.value <= RHO_NOT:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    per = ", ".join(f"{v:.3f}" for v in rho)
    detail = (f"Spearman(pair accuracy, d') over {checkpoints.groupby('seed').size().iloc[0]} models per seed "
              f"(pre-trained + fine-tuning checkpoints): {per}; reproduced at mean >= {RHO_REPRODUCED} with CI above 0")
    return claim.decide(m, verdict, detail)


def decide_smollm2_transfer(claim: Claim, steering_ft: pd.DataFrame, summary_lm: pd.DataFrame) -> Claim:
    if steering_ft is None or steering_ft.empty or "ft_pair_accuracy" not in summary_lm:
        return _not_run(claim, "not run in this profile: SmolLM2 fine-tuning is the GPU `full` profile")
    ft = float(summary_lm["ft_pair_accuracy"].mean())
    decided = decide_steering(claim, steering_ft, "smollm2", "instruct (DAS from fine-tuned)")
    if ft < LM_FT_MIN and decided.verdict != "inconclusive":
        decided.verdict = "inconclusive"
        decided.detail += f"; fine-tuned pair accuracy {ft:.3f} < {LM_FT_MIN}: underpowered, inconclusive"
    return decided


def steering_summary(steering: pd.DataFrame) -> pd.DataFrame:
    """Mean and t-interval over seeds of the steered pair accuracy per (arm, model, direction)."""
    rows = []
    for (arm, model, direction), g in steering.groupby(["arm", "model", "direction"], sort=False):
        m = seed_measurement(g["pair_accuracy"].tolist())
        rows.append({"arm": arm, "model": model, "direction": direction, "seeds": len(g),
                     "pair_accuracy": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                     "context_accuracy": g["context_accuracy"].mean(), "prior_accuracy": g["prior_accuracy"].mean(),
                     "layers": ",".join(str(v) for v in sorted(g["layer"].unique())),
                     "multipliers": ",".join(f"{v:g}" for v in sorted(g["multiplier"].unique()))})
    return pd.DataFrame(rows)
