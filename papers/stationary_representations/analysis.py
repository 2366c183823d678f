"""Per-seed tables from :func:`method.run_seed` and the measurements of the registered claims (claims.yaml).

``per_seed`` has one row per (seed, arm) with: ``ac_seen`` (AC, evaluation set of each pair = the old
model's classes), ``ub_seen`` (the AC the pair would reach with the new model's self-search, i.e. the new
model is better), ``gain_seen`` (mean over pairs of M[i, j] - M[j, j]), ``cross_seen`` (mean cross-model
accuracy), ``self_seen`` (mean diagonal), ``am_seen``, the same ``*_all`` on the authors' single all-class
set, ``class_mean_cos`` and ``min_accuracy`` / ``mean_accuracy`` (held-out classification accuracy of the
sequence's models on their own classes). Every interval is a Student t interval over seeds
(``shared.stats.seed_measurement``); paired differences are taken within a seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

from .method import (average_compatibility, average_multimodel_accuracy, class_mean_cosines,  # noqa: F401
                     mean_cross_accuracy, upper_bound_compatibility)

ACCURACY_GATE = 0.7  # every model's held-out accuracy on its own classes (chance <= 1/4)
UPPER_BOUND_GATE = 0.7  # mean over seeds of the upper-bound AC (new model better than old on old classes)
HANDICAP_GATE = -0.05  # learned minus simplex mean held-out accuracy, mean over seeds, must be >= this (4x below the
# smallest effect of interest 0.2 of the cross-accuracy difference, so it cannot account for it)


def compat_gain(m: np.ndarray) -> float:
    """Mean over pairs i > j of M[i, j] - M[j, j] (the compatibility criterion as a margin)."""
    t = m.shape[0]
    return float(np.mean([m[i, j] - m[j, j] for j in range(t) for i in range(j + 1, t)]))


def seed_row(seed: int, arm: str, res: dict) -> dict:
    acc = [r["test_accuracy"] for r in res["models"]]
    row = {"seed": seed, "arm": arm, "class_mean_cos": res["class_mean_cos"], "min_accuracy": float(min(acc)),
           "mean_accuracy": float(np.mean(acc))}
    for which in ("seen", "all"):
        m, u = res[f"m_{which}"], res[f"u_{which}"]
        row.update({f"ac_{which}": average_compatibility(m), f"ub_{which}": upper_bound_compatibility(m, u),
                    f"gain_{which}": compat_gain(m), f"cross_{which}": mean_cross_accuracy(m),
                    f"self_{which}": float(np.mean(np.diag(m))), f"am_{which}": average_multimodel_accuracy(m)})
    return row


def per_seed_table(results: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([seed_row(r["seed"], arm, a) for r in results for arm, a in r["arms"].items()])


def _arm(table: pd.DataFrame, arm: str, col: str) -> pd.Series:
    sub = table[table["arm"] == arm].set_index("seed")[col].sort_index()
    if sub.empty:
        raise ValueError(f"no rows for arm {arm!r}")
    return sub


def learned_gate(table: pd.DataFrame, arm: str = "simplex") -> Gate:
    """Every model of ``arm`` learned its classes (held-out accuracy >= ACCURACY_GATE in every seed), and the
    new models are better than the old ones (mean upper-bound AC >= UPPER_BOUND_GATE): without a better new
    model the empirical criterion cannot be met by any representation."""
    min_acc = float(_arm(table, arm, "min_accuracy").min())
    ub = float(_arm(table, arm, "ub_seen").mean())
    return Gate(passed=bool(min_acc >= ACCURACY_GATE and ub >= UPPER_BOUND_GATE), value=ub,
                detail=f"lowest held-out accuracy of any {arm} model {min_acc:.3f} (gate >= {ACCURACY_GATE}); "
                       f"mean upper-bound AC {ub:.3f} (gate >= {UPPER_BOUND_GATE})")


def measure_ac(table: pd.DataFrame, col: str = "ac_seen") -> tuple[Measurement, Gate, Control, str]:
    """simplex_ac_seen_classes: AC of the shared-simplex sequence; control: per-model permuted simplex."""
    s = _arm(table, "simplex", col)
    c = _arm(table, "permuted_simplex", col)
    m = seed_measurement(s.tolist(), unit="fraction of model pairs", bounds=(0.0, 1.0))
    control = Control(seed_measurement(c.tolist(), unit="fraction of model pairs", bounds=(0.0, 1.0)),
                      detail="each model's simplex with its own random class -> vertex map (no shared classifier)")
    learned = _arm(table, "learned", col)
    detail = (f"per-seed AC simplex {np.round(s.values, 3).tolist()}, permuted simplex "
              f"{np.round(c.values, 3).tolist()}, learned {np.round(learned.values, 3).tolist()}")
    return m, learned_gate(table), control, detail


def measure_gain(table: pd.DataFrame) -> tuple[Measurement, Gate, Control, str]:
    """simplex_compatibility_gain: mean over pairs of M[i, j] - M[j, j]; control: permuted simplex."""
    s = _arm(table, "simplex", "gain_seen")
    c = _arm(table, "permuted_simplex", "gain_seen")
    m = seed_measurement(s.tolist(), unit="accuracy difference")
    control = Control(seed_measurement(c.tolist(), unit="accuracy difference"),
                      detail="each model's simplex with its own random class -> vertex map")
    detail = (f"per-seed mean gain simplex {np.round(s.values, 4).tolist()}, permuted "
              f"{np.round(c.values, 4).tolist()}, learned {np.round(_arm(table, 'learned', 'gain_seen').values, 4).tolist()}")
    return m, learned_gate(table), control, detail


def measure_simplex_vs_learned(table: pd.DataFrame) -> tuple[Measurement, Gate, Control, str]:
    """simplex_vs_learned_cross_accuracy: per seed, simplex minus learned mean cross-model 1:N accuracy
    (paired within a seed); gate: the learned arm is not handicapped (its held-out accuracy is within
    HANDICAP_GATE of the simplex arm's); control: permuted simplex minus learned."""
    s = _arm(table, "simplex", "cross_seen")
    l = _arm(table, "learned", "cross_seen")
    p = _arm(table, "permuted_simplex", "cross_seen")
    diff = (s - l).tolist()
    m = seed_measurement(diff, unit="accuracy difference")
    control = Control(seed_measurement((p - l).tolist(), unit="accuracy difference"),
                      detail="permuted simplex minus learned (no shared classifier in either arm)")
    handicap = float((_arm(table, "learned", "mean_accuracy") - _arm(table, "simplex", "mean_accuracy")).mean())
    gate = Gate(passed=bool(handicap >= HANDICAP_GATE), value=handicap,
                detail=f"learned minus simplex mean held-out accuracy {handicap:+.4f} (gate >= {HANDICAP_GATE})")
    detail = (f"mean cross-model accuracy simplex {s.mean():.3f}, learned {l.mean():.3f}, permuted "
              f"{p.mean():.3f}")
    return m, gate, control, detail


def measure_class_means(table: pd.DataFrame) -> tuple[Measurement, Gate, Control, str]:
    """class_mean_stationarity: cosine of same-class mean features across models; control: permuted."""
    s = _arm(table, "simplex", "class_mean_cos")
    c = _arm(table, "permuted_simplex", "class_mean_cos")
    m = seed_measurement(s.tolist(), unit="cosine", bounds=(-1.0, 1.0))
    control = Control(seed_measurement(c.tolist(), unit="cosine", bounds=(-1.0, 1.0)),
                      detail="each model's simplex with its own random class -> vertex map")
    min_acc = float(_arm(table, "simplex", "min_accuracy").min())
    gate = Gate(passed=bool(min_acc >= ACCURACY_GATE), value=min_acc,
                detail=f"lowest held-out accuracy of any simplex model {min_acc:.3f} (gate >= {ACCURACY_GATE})")
    detail = (f"class-mean cosine simplex {s.mean():.3f}, permuted {c.mean():.3f}, learned "
              f"{_arm(table, 'learned', 'class_mean_cos').mean():.3f}")
    return m, gate, control, detail


def matrix_frame(results: list[dict], which: str = "m_seen") -> pd.DataFrame:
    """Long table (seed, arm, query_model i, gallery_model j, accuracy) of the compatibility matrices."""
    rows = []
    for r in results:
        for arm, a in r["arms"].items():
            m = a[which]
            for i in range(m.shape[0]):
                for j in range(i + 1):
                    rows.append({"seed": r["seed"], "arm": arm, "query_model": i, "gallery_model": j,
                                 "accuracy": float(m[i, j])})
    return pd.DataFrame(rows)
