"""Each registered claim's statistic, gate and control, measured from the tables the notebook builds.

``arms``: one row per (seed, sigma, arm) with the held-out pairwise ``accuracy`` against the true utility
(:func:`papers.helpsteer2_preference.method.run_cell`). ``agreement``: one row per (seed, sigma) with the
annotators' weighted kappa before / after the agreement filter and after a random filter of the same size.
Every statistic is per seed, paired on the same held-out tasks, and aggregated over seeds with a Student t
interval (``shared.stats.seed_measurement``); claims are decided at one pre-registered noise level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

UNIT = "accuracy difference"


def accuracy_table(arms: pd.DataFrame, sigma: float) -> pd.DataFrame:
    """seeds x arms table of held-out accuracy at noise level ``sigma`` (rows sorted by seed)."""
    sub = arms[np.isclose(arms["sigma"], sigma)]
    if sub.empty:
        raise ValueError(f"no rows at sigma = {sigma}")
    return sub.pivot(index="seed", columns="arm", values="accuracy").sort_index()


def gap(acc: pd.DataFrame, arm: str, baseline: str | list[str]) -> np.ndarray:
    """Per seed: accuracy of ``arm`` minus accuracy of ``baseline`` (or the largest of several baselines
    in that seed, the best single-objective competitor)."""
    base = acc[baseline].max(axis=1) if isinstance(baseline, list) else acc[baseline]
    return (acc[arm] - base).to_numpy(dtype=float)


def learned_gate(acc: pd.DataFrame, arms_needed: list[str], level: float) -> Gate:
    """Passed when every listed arm reaches held-out accuracy >= ``level`` in every seed."""
    worst = float(acc[arms_needed].min().min())
    which = acc[arms_needed].min().idxmin()
    return Gate(passed=bool(worst >= level), value=worst,
                detail=f"lowest held-out accuracy {worst:.4f} ({which}) vs the required {level:g}")


def measure_gap_claim(arms: pd.DataFrame, sigma: float, arm: str, baseline: str | list[str], control_arm: str,
                      gate_arms: list[str], gate_level: float, control_detail: str
                      ) -> tuple[Measurement, Gate, Control]:
    """The generic "arm beats baseline" measurement: per-seed paired accuracy gap with a t interval over
    seeds, the learned-the-task gate and the same gap for ``control_arm`` (an arm without the ingredient)."""
    acc = accuracy_table(arms, sigma)
    measured = seed_measurement(gap(acc, arm, baseline), unit=UNIT)
    control = Control(seed_measurement(gap(acc, control_arm, baseline), unit=UNIT), detail=control_detail)
    return measured, learned_gate(acc, gate_arms, gate_level), control


def measure_scaled_bt_beats_bt(arms: pd.DataFrame, sigma: float, gate_level: float):
    """Scaled BT minus plain BT; control: Scaled BT whose magnitudes were permuted across training pairs."""
    return measure_gap_claim(arms, sigma, "scaled_bt", "bt", "control_scaled_bt_shuffled_magnitude",
                             ["bt", "scaled_bt"], gate_level,
                             "Scaled BT with preference magnitudes permuted across training pairs, minus BT")


def measure_scaled_bt_beats_margin_bt(arms: pd.DataFrame, sigma: float, gate_level: float):
    """Scaled BT minus Margin BT; control: magnitude-shuffled Scaled BT minus Margin BT."""
    return measure_gap_claim(arms, sigma, "scaled_bt", "margin_bt", "control_scaled_bt_shuffled_magnitude",
                             ["margin_bt", "scaled_bt"], gate_level,
                             "Scaled BT with preference magnitudes permuted across training pairs, minus Margin BT")


def measure_init_from_regression(arms: pd.DataFrame, sigma: float, gate_level: float):
    """Scaled BT initialised from the Regression RM minus the better of Regression and Scaled BT (per seed);
    control: the same two-stage arm initialised from a Regression RM trained on permuted ratings."""
    return measure_gap_claim(arms, sigma, "scaled_bt_init_reg", ["regression", "scaled_bt"],
                             "control_scaled_bt_init_shuffled_reg", ["regression", "scaled_bt", "scaled_bt_init_reg"],
                             gate_level, "Scaled BT initialised from a Regression RM fit to ratings permuted across "
                             "responses, minus the better of Regression and Scaled BT")


def measure_regression_vs_bt(arms: pd.DataFrame, sigma: float, gate_level: float):
    """Regression minus BT (a claim of agreement); control: Regression on permuted ratings minus BT."""
    return measure_gap_claim(arms, sigma, "regression", "bt", "control_regression_shuffled",
                             ["regression", "bt"], gate_level,
                             "Regression RM fit to ratings permuted across responses, minus BT")


def measure_filter_agreement(agreement: pd.DataFrame, sigma: float, min_kept: float
                             ) -> tuple[Measurement, Gate, Control]:
    """Weighted kappa after the agreement filter minus before (per seed); gate: the filter keeps at least
    ``min_kept`` of the tasks (it does not reach agreement by discarding almost everything); control: a
    random filter keeping the same number of tasks."""
    sub = agreement[np.isclose(agreement["sigma"], sigma)].sort_values("seed")
    if sub.empty:
        raise ValueError(f"no agreement rows at sigma = {sigma}")
    measured = seed_measurement((sub["kappa_filtered"] - sub["kappa_all"]).to_numpy(float), unit="kappa difference")
    kept = float(sub["kept_fraction"].min())
    gate = Gate(passed=bool(kept >= min_kept), value=kept,
                detail=f"smallest kept fraction {kept:.3f} vs the required {min_kept:g}")
    control = Control(seed_measurement((sub["kappa_random_filter"] - sub["kappa_all"]).to_numpy(float),
                                       unit="kappa difference"),
                      detail="a random filter keeping the same number of tasks")
    return measured, gate, control
