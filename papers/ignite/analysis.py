"""Aggregation of the IGNITE runs and the measurements behind the registered claims (``claims.yaml``).

Inputs (one row per ...):
- ``scores``: (task, seed, optimizer, arm) with the normalized 100th and 50th percentile of the 128 proposed
  designs (``p100``, ``p50``) and the mean distance the proposals travelled from their start (``distance``);
  ``arm`` is "vanilla", "ignite" (same initialisation and minibatches as vanilla) or "vanilla_aa" (vanilla
  with another initialisation and minibatch order: the A/A control);
- ``trajectory``: the same at checkpoints along gradient ascent (``step``);
- ``sharpness``: (task, seed, member, arm) with the surrogate gradient norm ||grad_w h(w)|| on the offline
  inputs (``offline``) and on the unseen top half (``unseen``), and the arm's threshold ``eps`` (0 for
  vanilla arms).

Each ``measure_*`` returns ``(Measurement, Gate | None, Control | None, detail)`` for ``Claim.evaluate``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement, t_interval

# Gate thresholds (registered in claims.yaml)
MIN_DROP = 0.05  # vanilla `grad`: best checkpoint p50 minus final p50, mean over seeds, on every task
MIN_VANILLA_OVER_EPS = 1.25  # the constraint binds: vanilla's final offline sharpness >= 1.25 eps ...
MAX_IGNITE_OVER_EPS = 1.10  # ... and IGNITE's <= 1.1 eps (it is met), on every task
GRADIENT_OPTIMIZERS = ("grad", "ens_mean", "ens_min")


def paired_differences(scores: pd.DataFrame, metric: str, arm: str = "ignite",
                       baseline: str = "vanilla") -> pd.DataFrame:
    """(task, optimizer, seed) -> ``baseline``, ``arm`` and diff = arm - baseline of ``metric``."""
    wide = scores.pivot_table(index=["task", "optimizer", "seed"], columns="arm", values=metric).reset_index()
    missing = {arm, baseline} - set(wide.columns)
    if missing:
        raise ValueError(f"scores lack the arm(s) {sorted(missing)}")
    wide["diff"] = wide[arm] - wide[baseline]
    return wide


def pair_summary(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (task, optimizer): mean vanilla and IGNITE score over seeds, mean difference with a t interval."""
    rows = []
    for (task, opt), g in paired_differences(scores, metric).groupby(["task", "optimizer"], sort=True):
        mean, lo, hi = t_interval(g["diff"].tolist())
        rows.append({"task": task, "optimizer": opt, "seeds": len(g), "vanilla": g["vanilla"].mean(),
                     "ignite": g["ignite"].mean(), "diff": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def _fmt(m: Measurement) -> str:
    lo = "nan" if m.ci_low is None else f"{m.ci_low:+.4f}"
    hi = "nan" if m.ci_high is None else f"{m.ci_high:+.4f}"
    return f"{m.value:+.4f} [{lo}, {hi}]"


def _per_seed_measurement(per_seed: pd.Series, unit: str, method: str) -> Measurement:
    m = seed_measurement(per_seed.tolist(), unit=unit)
    m.method = f"{method}; Student t interval over {len(per_seed)} seeds"
    return m


# --- over-optimisation and the constraint: the gate of the improvement claims ---------------------------------

def degradation(trajectory: pd.DataFrame, arm: str = "vanilla", optimizer: str = "grad",
                metric: str = "p50") -> pd.DataFrame:
    """Per (task, seed): the best ``metric`` over the checkpoints of ``arm``'s ``optimizer`` run, the final
    one and drop = best - final (> 0: the optimizer over-optimised the surrogate)."""
    g = trajectory[(trajectory["arm"] == arm) & (trajectory["optimizer"] == optimizer)]
    last = g["step"].max()
    out = g.groupby(["task", "seed"]).agg(best=(metric, "max")).reset_index()
    final = g[g["step"] == last].set_index(["task", "seed"])[metric]
    out["final"] = final.loc[list(zip(out["task"], out["seed"]))].to_numpy()
    out["drop"] = out["best"] - out["final"]
    return out


def constraint_check(sharpness: pd.DataFrame) -> pd.DataFrame:
    """Per task: eps and the mean final offline-data sharpness of the vanilla and IGNITE arms, as ratios to
    eps (is the constraint active and approximately met?)."""
    rows = []
    for task, g in sharpness.groupby("task", sort=True):
        eps = float(g[g["arm"] == "ignite"]["eps"].mean())
        means = g.groupby("arm")["offline"].mean()
        rows.append({"task": task, "eps": eps, "vanilla_over_eps": means["vanilla"] / eps,
                     "ignite_over_eps": means["ignite"] / eps})
    return pd.DataFrame(rows)


def improvement_gate(trajectory: pd.DataFrame, sharpness: pd.DataFrame) -> Gate:
    """Passed when there is over-optimisation to prevent and the treatment was applied: vanilla gradient
    ascent degrades on every task (mean over seeds of the p50 drop from its best checkpoint to the end >=
    MIN_DROP) and the constraint binds on every task (vanilla >= MIN_VANILLA_OVER_EPS x eps, IGNITE <=
    MAX_IGNITE_OVER_EPS x eps, final offline sharpness)."""
    drops = degradation(trajectory).groupby("task")["drop"].mean()
    cons = constraint_check(sharpness).set_index("task")
    ok_drop = bool((drops >= MIN_DROP).all())
    ok_cons = bool((cons["vanilla_over_eps"] >= MIN_VANILLA_OVER_EPS).all()
                   and (cons["ignite_over_eps"] <= MAX_IGNITE_OVER_EPS).all())
    detail = ("vanilla grad p50 drop from its best checkpoint (mean over seeds, needs >= "
              f"{MIN_DROP:g} on every task): " + ", ".join(f"{t} {v:+.3f}" for t, v in drops.items())
              + "; sharpness / eps vanilla, IGNITE: "
              + ", ".join(f"{t} {r.vanilla_over_eps:.2f}, {r.ignite_over_eps:.2f}" for t, r in cons.iterrows()))
    return Gate(passed=ok_drop and ok_cons, value=float(drops.min()), detail=detail)


# --- the claims --------------------------------------------------------------------------------------------------

def measure_improvement(scores: pd.DataFrame, metric: str, gate: Gate):
    """Per seed, the mean over (task, optimizer) pairs of IGNITE - vanilla of ``metric``, t interval over
    seeds. Control: the same with the A/A arm vanilla_aa in place of IGNITE."""
    unit = f"normalized {metric} (IGNITE - vanilla)"
    d = paired_differences(scores, metric)
    c = paired_differences(scores, metric, arm="vanilla_aa")
    m = _per_seed_measurement(d.groupby("seed")["diff"].mean(), unit,
                              "mean over (task, optimizer) pairs of IGNITE - vanilla")
    cm = _per_seed_measurement(c.groupby("seed")["diff"].mean(), unit,
                               "mean over (task, optimizer) pairs of vanilla_aa - vanilla")
    pairs = pair_summary(scores, metric)
    best, worst = pairs.loc[pairs["diff"].idxmax()], pairs.loc[pairs["diff"].idxmin()]
    detail = (f"IGNITE - vanilla {_fmt(m)}; ahead in {int((pairs['diff'] > 0).sum())}/{len(pairs)} pairs; "
              f"largest gain {best['diff']:+.4f} ({best['task']}/{best['optimizer']}), largest loss "
              f"{worst['diff']:+.4f} ({worst['task']}/{worst['optimizer']}); A/A control {_fmt(cm)}")
    return m, gate, Control(cm, detail=f"vanilla_aa (other initialisation and minibatches) - vanilla: {_fmt(cm)}"), detail


def sharpness_log_ratios(sharpness: pd.DataFrame, column: str = "unseen", arm: str = "ignite") -> pd.DataFrame:
    """(task, seed, member) -> log(||grad h||_arm / ||grad h||_vanilla) on ``column`` inputs."""
    wide = sharpness.pivot_table(index=["task", "seed", "member"], columns="arm", values=column).reset_index()
    wide["log_ratio"] = np.log(wide[arm] / wide["vanilla"])
    return wide


def measure_unseen_sharpness(sharpness: pd.DataFrame):
    """Per seed, mean over tasks and ensemble members of log(IGNITE / vanilla) sharpness on the unseen top
    half. Control: vanilla_aa / vanilla."""
    unit = "log ratio IGNITE / vanilla"
    r = sharpness_log_ratios(sharpness, "unseen")
    c = sharpness_log_ratios(sharpness, "unseen", arm="vanilla_aa")
    m = _per_seed_measurement(r.groupby("seed")["log_ratio"].mean(), unit,
                              "mean over tasks and members of log(IGNITE / vanilla) unseen sharpness")
    cm = _per_seed_measurement(c.groupby("seed")["log_ratio"].mean(), unit,
                               "mean over tasks and members of log(vanilla_aa / vanilla)")
    per_task = r.groupby("task")["log_ratio"].mean()
    detail = ("unseen-data sharpness IGNITE / vanilla (geometric mean) by task: "
              + "; ".join(f"{t}: x{np.exp(v):.3f}" for t, v in per_task.items()) + f"; A/A control {_fmt(cm)}")
    return m, None, Control(cm, detail=f"vanilla_aa / vanilla: {_fmt(cm)}"), detail


def measure_equal_distance(scores: pd.DataFrame):
    """Per seed, mean over (task, gradient optimizer) of log(distance IGNITE / distance vanilla): the
    normalised step makes both travel alike (a manipulation check)."""
    g = scores[scores["optimizer"].isin(GRADIENT_OPTIMIZERS)]
    d = paired_differences(g.assign(log_distance=np.log(g["distance"])), "log_distance")
    m = _per_seed_measurement(d.groupby("seed")["diff"].mean(), "log ratio of distance travelled",
                              "mean over (task, gradient optimizer) of log(distance IGNITE / vanilla)")
    per_pair = d.groupby(["task", "optimizer"])["diff"].mean()
    mean_dist = g.groupby("arm")["distance"].mean()
    detail = (f"distance travelled (standardised units, mean over everything): vanilla {mean_dist.get('vanilla', np.nan):.3f}, "
              f"IGNITE {mean_dist.get('ignite', np.nan):.3f}; log ratio {_fmt(m)}; per pair range "
              f"[{per_pair.min():+.4f}, {per_pair.max():+.4f}]")
    return m, None, None, detail


# --- choosing the penalty strength on held-out tasks --------------------------------------------------------------

def select_eps_fraction(scores: pd.DataFrame, metric: str = "p100") -> tuple[float, pd.DataFrame]:
    """The IGNITE arm (``ignite@<fraction>``) with the largest mean over (task, optimizer, seed) of IGNITE -
    vanilla ``metric``; ties go to the larger fraction (the weaker penalty). Returns (fraction, table)."""
    rows = []
    for arm in sorted(a for a in scores["arm"].unique() if a.startswith("ignite@")):
        d = paired_differences(scores, metric, arm=arm)
        rows.append({"arm": arm, "eps_fraction": float(arm.split("@", 1)[1]), "mean_gain": float(d["diff"].mean()),
                     "pairs": len(d)})
    table = pd.DataFrame(rows).sort_values(["mean_gain", "eps_fraction"], ascending=False).reset_index(drop=True)
    return float(table.loc[0, "eps_fraction"]), table
