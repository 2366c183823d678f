"""The claims' statistics, gates and controls, computed from the per-seed tables the notebook builds.

``rows``: one row per (seed, arm) with ``id_acc`` and ``ood_acc`` (arms: ``base`` = the saturated student,
then the continued-training arms of :data:`papers.stat.method.ARMS`). ``profile``: one row per (seed, skill)
with the Missing-Skill-Profile count ``missing``, its skill-shuffled version ``missing_shuffled`` and the base
student's held-out step error ``test_step_error``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement


def paired_differences(rows: pd.DataFrame, arm: str, ref: str, metric: str) -> pd.Series:
    """Per seed, ``metric`` of ``arm`` minus that of ``ref`` (same seed = same world, data and student)."""
    wide = rows.pivot(index="seed", columns="arm", values=metric)
    missing = [a for a in (arm, ref) if a not in wide.columns]
    if missing:
        raise KeyError(f"arms not in the table: {missing}")
    return (wide[arm] - wide[ref]).sort_index()


def saturation_gate(rows: pd.DataFrame, min_acc: float, max_acc: float, plateau_tol: float) -> Gate:
    """The experiment can test STAT only if, in every seed, the base student learned the task (held-out ID
    accuracy >= ``min_acc``; chance is 1/p), still has room to improve (<= ``max_acc``) and is saturated:
    continuing training on its own data for the arms' extra steps (``replay``) raises its ID accuracy by at
    most ``plateau_tol``."""
    wide = rows.pivot(index="seed", columns="arm", values="id_acc")
    base, gain = wide["base"], wide["replay"] - wide["base"]
    passed = bool((base >= min_acc).all() and (base <= max_acc).all() and (gain <= plateau_tol).all())
    return Gate(passed=passed, value=float(gain.max()),
                detail=(f"base ID accuracy {base.min():.3f}-{base.max():.3f} (needs {min_acc:g}-{max_acc:g}); "
                        f"largest replay gain {gain.max():+.4f} (needs <= {plateau_tol:g})"))


def measure_gain(rows: pd.DataFrame, arm: str, ref: str, metric: str, control_arm: str, control_ref: str,
                 min_acc: float, max_acc: float, plateau_tol: float,
                 control_detail: str) -> tuple[Measurement, Gate, Control]:
    """Mean over seeds of the paired accuracy difference ``arm - ref`` with a t interval (a paired t
    interval), the saturation gate, and the same statistic for ``control_arm - control_ref``."""
    d = paired_differences(rows, arm, ref, metric)
    c = paired_differences(rows, control_arm, control_ref, metric)
    gate = saturation_gate(rows, min_acc, max_acc, plateau_tol)
    control = Control(seed_measurement(c.tolist(), unit="accuracy difference"),
                      detail=f"{control_detail}: {control_arm} - {control_ref} = {c.mean():+.4f}")
    return seed_measurement(d.tolist(), unit="accuracy difference"), gate, control


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(st.spearmanr(x, y).statistic)


def measure_profile(profile: pd.DataFrame, n_failures: dict[int, int],
                    min_failures: int) -> tuple[Measurement, Gate, Control]:
    """Per seed, the Spearman correlation over skills between the Missing-Skill-Profile counts (validation
    failures) and the base student's held-out per-skill step error (test set); mean over seeds with a t
    interval. Gate: every seed's profile rests on >= ``min_failures`` failed validation problems. Control:
    the same correlation for the profile with its skill labels shuffled."""
    real, shuffled = [], []
    for _, g in profile.groupby("seed", sort=True):
        real.append(spearman(g["missing"], g["test_step_error"]))
        shuffled.append(spearman(g["missing_shuffled"], g["test_step_error"]))
    fewest = min(n_failures.values())
    gate = Gate(passed=bool(fewest >= min_failures), value=float(fewest),
                detail=f"fewest failed validation problems diagnosed in a seed: {fewest} (needs >= {min_failures})")
    control = Control(seed_measurement(shuffled, unit="Spearman rho", bounds=(-1, 1)),
                      detail=f"profile with shuffled skill labels: mean rho {np.mean(shuffled):+.3f}")
    return seed_measurement(real, unit="Spearman rho", bounds=(-1, 1)), gate, control


# The gate levels registered in claims.yaml (the notebook passes these; changing them needs a new claim id).
GATE_MIN_ACC = 0.5  # the base student learned the task (chance is 1/p)
GATE_MAX_ACC = 0.95  # ... and has room to improve
GATE_PLATEAU_TOL = 0.01  # replay (no new data, same extra steps) gain at most this: saturated
GATE_MIN_FAILURES = 100  # failed validation problems behind each seed's profile


def arm_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per arm, mean and range over seeds of the accuracy change vs the base student (ID and OOD)."""
    base = rows[rows["arm"] == "base"].set_index("seed")
    out = []
    for arm, g in rows[rows["arm"] != "base"].groupby("arm", sort=False):
        g = g.set_index("seed")
        for metric in ("id_acc", "ood_acc"):
            d = g[metric] - base.loc[g.index, metric]
            out.append({"arm": arm, "test": "ID (2-3 steps)" if metric == "id_acc" else "OOD (5 steps)",
                        "mean_gain": d.mean(), "min_gain": d.min(), "max_gain": d.max(), "mean_acc": g[metric].mean()})
    return pd.DataFrame(out)


def measure_vanilla_gain(rows: pd.DataFrame, min_acc: float, max_acc: float,
                         plateau_tol: float) -> tuple[Measurement, Gate]:
    """Mean over seeds of ``uniform - base`` ID accuracy (vanilla continued SFT on the original mixture) with
    a t interval, and the saturation gate. No control (see the registry)."""
    d = paired_differences(rows, "uniform", "base", "id_acc")
    return (seed_measurement(d.tolist(), unit="accuracy difference"),
            saturation_gate(rows, min_acc, max_acc, plateau_tol))
