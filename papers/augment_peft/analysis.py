"""The claims' statistics, gates and controls, measured on the per-(seed, arm) results table.

The table has one row per seed and arm with at least the columns ``seed``, ``arm``, ``acc_clean`` (accuracy
on the clean test sample), ``acc_heavy`` (on its heavily EDA-altered copy) and ``sil_aug`` (cosine
silhouette of the pooled sentence embeddings of the EDA-augmented test sentences by class). Arms:
``prefix`` (P-tuning v2), ``prefix_scl`` (P-tuning v2 + supervised contrastive loss), ``ft`` (full
fine-tuning) and ``prefix_b`` (P-tuning v2 again under another model seed: the A/A control arm).

Every statistic is a paired difference between two arms of the same seed (same training sample, same
augmentations, same test sentences), summarised by its mean over seeds with a Student t interval
(:func:`shared.stats.seed_measurement`). Every control is the same statistic with the comparison arm
replaced by ``prefix_b``, i.e. prefix tuning compared with itself under another model seed, where the
effect is absent by design.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

CONTROL_ARM = "prefix_b"


def arm_values(table: pd.DataFrame, arm: str, column: str) -> pd.Series:
    """``column`` of ``arm`` indexed by seed (sorted); an error if the arm has no rows or a seed twice."""
    rows = table[table["arm"] == arm]
    if rows.empty:
        raise ValueError(f"no rows for arm {arm!r}")
    if rows["seed"].duplicated().any():
        raise ValueError(f"arm {arm!r} has a seed twice")
    return rows.set_index("seed")[column].sort_index().astype(float)


def paired_difference(table: pd.DataFrame, column: str, arm_a: str, arm_b: str) -> np.ndarray:
    """Per seed, ``column`` of ``arm_a`` minus that of ``arm_b``, over the seeds both arms have."""
    a, b = arm_values(table, arm_a, column), arm_values(table, arm_b, column)
    seeds = a.index.intersection(b.index)
    if len(seeds) == 0:
        raise ValueError(f"arms {arm_a} and {arm_b} share no seed")
    return (a.loc[seeds] - b.loc[seeds]).to_numpy()


def accuracy_gate(table: pd.DataFrame, arms: tuple[str, ...], level: float) -> Gate:
    """Passed when every listed arm reaches ``level`` clean test accuracy in every seed."""
    worst = min(float(arm_values(table, a, "acc_clean").min()) for a in arms)
    per_arm = ", ".join(f"{a} {arm_values(table, a, 'acc_clean').min():.3f}" for a in arms)
    return Gate(passed=bool(worst >= level), value=worst,
                detail=f"lowest clean test accuracy over seeds: {per_arm} (gate >= {level:g})")


def _measure(diff: np.ndarray, control_diff: np.ndarray, unit: str, control_detail: str) -> tuple[Measurement, Control]:
    return (seed_measurement(diff.tolist(), unit=unit),
            Control(seed_measurement(control_diff.tolist(), unit=unit), detail=control_detail))


def measure_scl_gain(table: pd.DataFrame, gate_level: float) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``scl_improves_prefix_on_eda``: acc_clean(prefix_scl) - acc_clean(prefix) per seed; gate on
    both prefix arms; control acc_clean(prefix_b) - acc_clean(prefix)."""
    diff = paired_difference(table, "acc_clean", "prefix_scl", "prefix")
    ctrl = paired_difference(table, "acc_clean", CONTROL_ARM, "prefix")
    m, c = _measure(diff, ctrl, "accuracy difference", "A/A: prefix_b (prefix tuning, other model seed) minus prefix")
    detail = f"per-seed differences {np.round(diff, 4).tolist()}; A/A {np.round(ctrl, 4).tolist()}"
    return m, accuracy_gate(table, ("prefix", "prefix_scl"), gate_level), c, detail


def measure_separation_gap(table: pd.DataFrame, gate_level: float) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``prefix_separates_augmented_less_than_ft``: sil_aug(ft) - sil_aug(prefix) per seed; gate on
    ft and prefix; control sil_aug(prefix_b) - sil_aug(prefix)."""
    diff = paired_difference(table, "sil_aug", "ft", "prefix")
    ctrl = paired_difference(table, "sil_aug", CONTROL_ARM, "prefix")
    m, c = _measure(diff, ctrl, "silhouette difference", "A/A: prefix_b minus prefix")
    detail = f"per-seed differences {np.round(diff, 4).tolist()}; A/A {np.round(ctrl, 4).tolist()}"
    return m, accuracy_gate(table, ("ft", "prefix"), gate_level), c, detail


def heavy_drop(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``drop_heavy = acc_clean - acc_heavy`` (accuracy lost on heavily altered inputs)."""
    return table.assign(drop_heavy=table["acc_clean"] - table["acc_heavy"])


def measure_heavy_drop_gap(table: pd.DataFrame, gate_level: float) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``prefix_loses_more_on_heavy_eda``: drop_heavy(prefix) - drop_heavy(ft) per seed; gate on
    ft and prefix; control drop_heavy(prefix) - drop_heavy(prefix_b)."""
    t = heavy_drop(table)
    diff = paired_difference(t, "drop_heavy", "prefix", "ft")
    ctrl = paired_difference(t, "drop_heavy", "prefix", CONTROL_ARM)
    m, c = _measure(diff, ctrl, "accuracy difference", "A/A: prefix minus prefix_b")
    detail = f"per-seed differences {np.round(diff, 4).tolist()}; A/A {np.round(ctrl, 4).tolist()}"
    return m, accuracy_gate(table, ("ft", "prefix"), gate_level), c, detail


def measure_scl_separation(table: pd.DataFrame, gate_level: float) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``scl_raises_prefix_separation``: sil_aug(prefix_scl) - sil_aug(prefix) per seed; gate on both
    prefix arms; control sil_aug(prefix_b) - sil_aug(prefix)."""
    diff = paired_difference(table, "sil_aug", "prefix_scl", "prefix")
    ctrl = paired_difference(table, "sil_aug", CONTROL_ARM, "prefix")
    m, c = _measure(diff, ctrl, "silhouette difference", "A/A: prefix_b minus prefix")
    detail = f"per-seed differences {np.round(diff, 4).tolist()}; A/A {np.round(ctrl, 4).tolist()}"
    return m, accuracy_gate(table, ("prefix", "prefix_scl"), gate_level), c, detail
