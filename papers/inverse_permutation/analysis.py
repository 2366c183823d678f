"""Aggregation of per-arm results and the measurements behind the registered claims (``claims.yaml``).

The input is a table with one row per trained model: ``architecture, attention ("causal" |
"bidirectional"), k, seed, correct, rows, visible_correct, visible_rows, invisible_correct,
invisible_rows`` (counts of right answers and of rows, over the evaluation set).
"""

from __future__ import annotations

import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import binomial_test, seed_measurement

from .task import accuracy_ceiling

# ceiling_curve_all_k's gate: accuracy on the rows a causal model can see, in every arm and seed
VISIBLE_GATE = 0.90


def add_rates(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["accuracy"] = out["correct"] / out["rows"]
    out["visible_accuracy"] = out["visible_correct"] / out["visible_rows"].where(out["visible_rows"] > 0)
    out["invisible_accuracy"] = out["invisible_correct"] / out["invisible_rows"].where(out["invisible_rows"] > 0)
    return out


def arm_summary(df: pd.DataFrame, n: int, n_symbols: int) -> pd.DataFrame:
    """Mean and t interval over seeds of each arm's accuracy, with the analytic ceiling of that arm."""
    rows = []
    for (arch, attention, k), g in add_rates(df).groupby(["architecture", "attention", "k"], sort=True):
        m = seed_measurement(g["accuracy"].tolist())
        ceiling = 1.0 if attention == "bidirectional" else accuracy_ceiling(n, int(k), n_symbols)
        rows.append({"architecture": arch, "attention": attention, "k": int(k), "seeds": len(g),
                     "accuracy": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "ceiling": ceiling,
                     "visible_accuracy": g["visible_accuracy"].mean(),
                     "invisible_accuracy": g["invisible_accuracy"].mean()})
    return pd.DataFrame(rows)


def _arm(df: pd.DataFrame, attention: str, k: int) -> pd.DataFrame:
    return add_rates(df[(df["attention"] == attention) & (df["k"] == k)])


def _chance_deviation(arm: pd.DataFrame, n_symbols: int, label: str) -> tuple[Measurement, str]:
    """Pooled accuracy on the invisible rows of one arm minus chance, with a Clopper-Pearson interval."""
    chance = 1.0 / n_symbols
    successes, trials = int(arm["invisible_correct"].sum()), int(arm["invisible_rows"].sum())
    if trials == 0:
        return Measurement(None, None, None, 0, "no invisible rows", unit="accuracy - chance"), f"{label}: none"
    p, lo, hi = binomial_test(successes, trials, chance)
    m = Measurement(value=successes / trials - chance, ci_low=lo - chance, ci_high=hi - chance, n=trials,
                    method=f"{label}: invisible rows pooled over {len(arm)} models, Clopper-Pearson",
                    unit="accuracy - chance")
    return m, f"{label}: {successes}/{trials} = {successes / trials:.4f} (binomial p = {p:.3g})"


def _reach(m: Measurement) -> float:
    return max(abs(m.ci_low), abs(m.ci_high))


def measure_invisible_rows(df: pd.DataFrame, n: int, n_symbols: int):
    """invisible_rows_at_chance: (measurement, control, detail). Every causal arm with k < n, per
    architecture; the statistic is the arm whose interval reaches farthest from 0."""
    causal = df[(df["attention"] == "causal") & (df["k"] < n)]
    if causal.empty:
        raise ValueError("no causal arm with k < n")
    worst, parts = None, []
    for (arch, k), g in causal.groupby(["architecture", "k"], sort=True):
        m, text = _chance_deviation(g, n_symbols, f"{arch} causal k={k}")
        parts.append(text)
        if m.ci_low is not None and (worst is None or _reach(m) > _reach(worst)):
            worst = m
    if worst is None:
        worst = Measurement(None, None, None, 0, "no invisible rows in any causal arm", unit="accuracy - chance")
    bidir = _arm(df, "bidirectional", 0)
    control, _ = _chance_deviation(bidir, n_symbols, "bidirectional k=0")
    detail = f"chance 1/{n_symbols} = {1 / n_symbols:.4f}; " + "; ".join(parts)
    ctrl_detail = ("bidirectional k=0 models on the rows with s(i) > i: accuracy - chance "
                   f"{control.value:+.4f}" if control.value is not None else "no bidirectional arm")
    return worst, Control(control, ctrl_detail), detail


def _lowest_architecture(arm: pd.DataFrame) -> tuple[Measurement, str]:
    means = arm.groupby("architecture")["accuracy"].mean()
    worst_arch = means.idxmin()
    m = seed_measurement(arm[arm["architecture"] == worst_arch]["accuracy"].tolist(), unit="accuracy",
                         bounds=(0.0, 1.0))
    return m, "; ".join(f"{a}: {v:.4f}" for a, v in means.items())


def measure_solved(df: pd.DataFrame, attention: str, k: int):
    """no_mask_solves / scratch_solves: (measurement, control, detail). The control is the causal k = 0
    arm of the same architectures, same statistic."""
    arm = _arm(df, attention, k)
    if arm.empty:
        raise ValueError(f"no {attention} k={k} arm")
    m, text = _lowest_architecture(arm)
    ctrl_arm = _arm(df, "causal", 0)
    ctrl_arm = ctrl_arm[ctrl_arm["architecture"].isin(arm["architecture"].unique())]
    ctrl, ctrl_text = _lowest_architecture(ctrl_arm)
    detail = f"mean accuracy by architecture ({attention}, k={k}): {text}"
    return m, Control(ctrl, f"causal k=0 models: {ctrl_text}"), detail


def ceiling_deviations(df: pd.DataFrame, n: int, n_symbols: int) -> pd.DataFrame:
    """One row per causal model: its accuracy, its ceiling and the deviation accuracy - ceiling."""
    causal = add_rates(df[df["attention"] == "causal"])
    ceiling = [accuracy_ceiling(n, int(k), n_symbols) for k in causal["k"]]
    return causal.assign(ceiling=ceiling, deviation=causal["accuracy"] - ceiling)


def _worst_over_seeds(per_seed_worst: pd.Series, what: str) -> Measurement:
    values = per_seed_worst.to_numpy(dtype=float)
    return Measurement(value=float(values.max()), ci_low=float(values.min()), ci_high=float(values.max()),
                       n=len(values), method=f"{what}; range over {len(values)} seeds of the per-seed worst case",
                       unit="accuracy - ceiling")


def measure_ceiling(df: pd.DataFrame, n: int, n_symbols: int):
    """ceiling_curve_all_k: (measurement, gate, control, detail)."""
    dev = ceiling_deviations(df, n, n_symbols)
    if dev.empty:
        raise ValueError("no causal arm")
    per_seed = dev.assign(abs_dev=dev["deviation"].abs()).groupby("seed")["abs_dev"].max()
    m = _worst_over_seeds(per_seed, "largest |accuracy - ceiling(k)| over the causal arms")
    visible = dev["visible_accuracy"]
    lowest = dev.loc[visible.idxmin()]
    gate = Gate(passed=bool(visible.min() >= VISIBLE_GATE), value=float(visible.min()),
                detail=(f"lowest accuracy on visible rows {visible.min():.4f} ({lowest['architecture']} k="
                        f"{int(lowest['k'])} seed {int(lowest['seed'])}); needs >= {VISIBLE_GATE} in every "
                        "causal arm and seed"))
    bidir = add_rates(df[(df["attention"] == "bidirectional") & (df["k"] == 0)])
    ceiling0 = accuracy_ceiling(n, 0, n_symbols)
    ctrl_seed = (bidir["accuracy"] - ceiling0).abs().groupby(bidir["seed"]).max()
    control = Control(_worst_over_seeds(ctrl_seed, "bidirectional k=0 |accuracy - ceiling(0)|"),
                      f"bidirectional k=0 models against the causal ceiling {ceiling0:.4f}")
    arms = dev.groupby(["architecture", "k"], sort=True).agg(accuracy=("accuracy", "mean"),
                                                            ceiling=("ceiling", "first"),
                                                            visible=("visible_accuracy", "mean"),
                                                            worst=("deviation", lambda d: d.abs().max()))
    detail = "; ".join(f"{a} k={k}: {r.accuracy:.4f} vs ceiling {r.ceiling:.4f} (visible rows {r.visible:.4f}, "
                       f"largest |deviation| over seeds {r.worst:.4f})" for (a, k), r in arms.iterrows())
    return m, gate, control, detail
