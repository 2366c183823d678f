"""The claims' statistics, gates and controls (claims.yaml), from the tables the notebook builds.

- Part 1 table (one row per seed, arm, m): ``seed, arm ("ntk" | "blind"), m, rel_error, rel_error_init``.
- Part 2 table (one row per arm and seed): ``arm, seed, accuracy, diverged``.
Every statistic is a per-seed number summarised by a Student t interval over seeds (shared.stats).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from papers.ntk_attention.method import log_slope
from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement


def error_slopes(curves: pd.DataFrame, arm: str) -> pd.Series:
    """Per seed, the OLS slope of ln(relative error) on log2(m) for ``arm`` (index: seed)."""
    sub = curves[curves["arm"] == arm]
    if sub.empty:
        raise ValueError(f"no rows for arm {arm!r}")
    return sub.groupby("seed").apply(lambda g: log_slope(g["m"].to_numpy(), g["rel_error"].to_numpy()),
                                     include_groups=False)


def measure_error_slope(curves: pd.DataFrame, fit_ratio: float = 0.5) -> tuple[Measurement, Gate, Control]:
    """Claim ``ntk_error_decreases_with_m``: the mean over seeds of the slope of ln(relative error) per
    doubling of m for fitted NTK-Attention. Gate: at every (seed, m) the fit brought the error below
    ``fit_ratio`` times its value at initialisation (the optimiser fit the prefix). Control: the same slope
    for the query-blind ablation (phi(q) = 1), fitted the same way."""
    ntk = curves[curves["arm"] == "ntk"]
    ratio = (ntk["rel_error"] / ntk["rel_error_init"]).to_numpy()
    worst = float(np.nanmax(ratio)) if len(ratio) else float("nan")
    gate = Gate(passed=bool(len(ratio) and np.all(np.isfinite(ratio)) and worst < fit_ratio), value=worst,
                detail=f"largest fitted/initial error ratio over seeds and m: {worst:.3f} (must be < {fit_ratio:g})")
    slopes = error_slopes(curves, "ntk")
    blind = error_slopes(curves, "blind")
    control = Control(seed_measurement(blind.tolist(), unit="d ln(error) / d log2(m)"),
                      detail="query-blind ablation phi(q) = 1: per-seed slopes " + ", ".join(f"{s:.3f}" for s in blind))
    return seed_measurement(slopes.tolist(), unit="d ln(error) / d log2(m)"), gate, control


def _accuracy(table: pd.DataFrame, arm: str) -> pd.Series:
    sub = table[table["arm"] == arm].set_index("seed")["accuracy"].sort_index()
    if sub.empty:
        raise ValueError(f"no rows for arm {arm!r}")
    return sub


def _diverged(table: pd.DataFrame, arms: tuple[str, ...]) -> list[str]:
    sub = table[table["arm"].isin(arms)]
    return [f"{a} seed {s}" for a, s, dv in zip(sub["arm"], sub["seed"], sub["diverged"]) if bool(dv)]


def paired_differences(table: pd.DataFrame, arm: str, reference: str) -> pd.Series:
    """Per seed, accuracy(arm) - accuracy(reference) (seeds present in both)."""
    a, b = _accuracy(table, arm), _accuracy(table, reference)
    seeds = a.index.intersection(b.index)
    return (a.loc[seeds] - b.loc[seeds]).astype(float)


def measure_ntk_vs_prefix(table: pd.DataFrame, gate_accuracy: float) -> tuple[Measurement, Gate, Control]:
    """Claim ``ntk_noninferior_to_ptuning``: mean over seeds of accuracy(NTK) - accuracy(P-Tuning v2).
    Gate: P-Tuning v2, the reference, reaches ``gate_accuracy`` in every seed and neither arm diverged.
    Control: accuracy(head only) - accuracy(P-Tuning v2) (a method that adapts nothing in the encoder)."""
    ref = _accuracy(table, "prefix")
    bad = _diverged(table, ("prefix", "ntk"))
    low = float(ref.min())
    gate = Gate(passed=bool(low >= gate_accuracy and not bad), value=low,
                detail=f"lowest P-Tuning v2 accuracy {low:.3f} (must be >= {gate_accuracy:g})"
                       + (f"; diverged: {', '.join(bad)}" if bad else "; no run diverged"))
    diff = paired_differences(table, "ntk", "prefix")
    ctrl = paired_differences(table, "head", "prefix")
    control = Control(seed_measurement(ctrl.tolist(), unit="accuracy difference"),
                      detail="head only minus P-Tuning v2: " + ", ".join(f"{x:+.3f}" for x in ctrl))
    return seed_measurement(diff.tolist(), unit="accuracy difference"), gate, control


def measure_ntk_vs_head(table: pd.DataFrame, gate_accuracy: float) -> tuple[Measurement, Gate, Control]:
    """Claim ``ntk_beats_linear_probe``: mean over seeds of accuracy(NTK) - accuracy(head only).
    Gate: the head-only baseline reaches ``gate_accuracy`` in every seed (the pipeline and labels work) and
    no NTK run diverged. Control: accuracy(NTK with Z, k frozen at init) - accuracy(head only)."""
    base = _accuracy(table, "head")
    bad = _diverged(table, ("head", "ntk", "ntk_frozen"))
    low = float(base.min())
    gate = Gate(passed=bool(low >= gate_accuracy and not bad), value=low,
                detail=f"lowest head-only accuracy {low:.3f} (must be >= {gate_accuracy:g})"
                       + (f"; diverged: {', '.join(bad)}" if bad else "; no run diverged"))
    diff = paired_differences(table, "ntk", "head")
    ctrl = paired_differences(table, "ntk_frozen", "head")
    control = Control(seed_measurement(ctrl.tolist(), unit="accuracy difference"),
                      detail="NTK-Attention with Z, k frozen at init minus head only: "
                             + ", ".join(f"{x:+.3f}" for x in ctrl))
    return seed_measurement(diff.tolist(), unit="accuracy difference"), gate, control
