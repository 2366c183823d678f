"""Aggregation of the training curves and the measurements behind the registered claims (``claims.yaml``).

Input tables (long form, one row per member and evaluation), as written by :mod:`.experiment`:

- ``curves``: ``method, reward_fn, seed, step, reward, peak_mass, entropy, kl_to_ref, queries``;
- ``mode_fit``: ``objective, reward_fn, seed, step, reward, peak_mass, entropy, kl_to_ref, kl_to_target``.

Every comparison is paired over seeds (a seed fixes the contexts, the pre-trained policy and the sampled
data, shared by all methods and by both rewards); the measurement is the mean paired difference with its
Student t interval over seeds. The falsification control of every comparison is an A/A comparison: the
baseline arm run again on *control seeds* (other contexts, initialisation and samples; control seed ``i``
paired with evaluation seed ``i``) against itself on the evaluation seeds, through the same statistic.

Each ``measure_*`` function returns ``(Measurement, Gate, Control, detail)`` for ``Claim.evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

NOT_ALIGNED, ALIGNED = "R1", "R2"

# Gate thresholds (registered in claims.yaml)
MIN_GAIN_OVER_REF = 0.05  # every arm of a comparison raises held-out reward over pi_ref by this, every seed
MAX_PRETRAIN_KL = 0.01  # the pre-trained policy is pi_ref: max KL(pi || pi_ref) over members, nats
MIN_FIT_TARGET_MASS = 0.9  # the mode-seeking target puts at least this mass on R1's peak region


def final_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every (method, reward, seed)."""
    key = "method" if "method" in curves.columns else "objective"
    last = curves.groupby([key, "reward_fn", "seed"])["step"].transform("max")
    return curves[curves["step"] == last].reset_index(drop=True)


def auc_table(curves: pd.DataFrame, value: str = "reward", by: str = "method") -> pd.DataFrame:
    """Area under the curve: the mean of ``value`` over all evaluations (step 0 included) per run."""
    return curves.groupby([by, "reward_fn", "seed"], as_index=False)[value].mean()


def summary(table: pd.DataFrame, value: str, by: str = "method") -> pd.DataFrame:
    """Mean and t interval over seeds of ``value`` per (``by``, reward)."""
    rows = []
    for (name, reward_fn), g in table.groupby([by, "reward_fn"], sort=True):
        m = seed_measurement(g[value].tolist())
        rows.append({by: name, "reward_fn": reward_fn, "seeds": len(g), value: m.value,
                     "ci_low": m.ci_low, "ci_high": m.ci_high})
    return pd.DataFrame(rows)


def per_seed(table: pd.DataFrame, name: str, reward_fn: str, value: str = "reward", by: str = "method",
             seeds: list[int] | None = None) -> pd.Series:
    """``value`` of one arm per seed, indexed by seed (restricted to ``seeds`` in that order if given)."""
    g = table[(table[by] == name) & (table["reward_fn"] == reward_fn)]
    if g.empty:
        raise KeyError(f"no rows for {by}={name!r}, reward_fn={reward_fn!r}")
    s = g.set_index("seed")[value].sort_index()
    if seeds is not None:
        missing = [x for x in seeds if x not in s.index]
        if missing:
            raise KeyError(f"{by}={name!r}, reward_fn={reward_fn!r} lacks seed(s) {missing}")
        s = s.loc[list(seeds)]
    return s


@dataclass(frozen=True)
class Seeds:
    """Evaluation seeds and the control seeds paired with them (same length, same order)."""

    eval: list[int]
    control: list[int]

    def __post_init__(self) -> None:
        if len(self.eval) != len(self.control):
            raise ValueError("control seeds must pair one-to-one with evaluation seeds")
        if set(self.eval) & set(self.control):
            raise ValueError("control seeds must differ from evaluation seeds")


def _ev(table: pd.DataFrame, name: str, reward_fn: str, seeds: Seeds, value: str = "reward",
        by: str = "method") -> np.ndarray:
    return per_seed(table, name, reward_fn, value, by, seeds.eval).to_numpy(float)


def _ctl(table: pd.DataFrame, name: str, reward_fn: str, seeds: Seeds, value: str = "reward",
         by: str = "method") -> np.ndarray:
    """The arm on the control seeds, in the order of the evaluation seeds they pair with."""
    return per_seed(table, name, reward_fn, value, by, seeds.control).to_numpy(float)


def diff_measurement(values: np.ndarray, label: str, unit: str) -> Measurement:
    m = seed_measurement([float(v) for v in values], unit=unit)
    m.method = f"{label}: mean paired difference over {len(values)} seeds, Student t interval"
    return m


def _fmt(m: Measurement) -> str:
    lo = "nan" if m.ci_low is None else f"{m.ci_low:+.4f}"
    hi = "nan" if m.ci_high is None else f"{m.ci_high:+.4f}"
    return f"{m.value:+.4f} [{lo}, {hi}]"


# --- gates -------------------------------------------------------------------------------------------------

def training_gate(final: pd.DataFrame, arms: list[str], reward_fns: list[str], seeds: Seeds,
                  ref_reward: dict[str, float], pretrain_kl: float, equal_queries: list[str] | None = None
                  ) -> Gate:
    """The experiment can compare these arms: the start is pi_ref (pre-training KL <= MAX_PRETRAIN_KL), every
    arm raised the held-out reward over pi_ref's by >= MIN_GAIN_OVER_REF in every evaluation seed and reward
    (it trained on its data), and the arms in ``equal_queries`` used the same number of reward queries."""
    gains = {(a, r): _ev(final, a, r, seeds) - ref_reward[r] for a in arms for r in reward_fns}
    worst_arm, worst = min(((k, float(v.min())) for k, v in gains.items()), key=lambda kv: kv[1])
    ok = pretrain_kl <= MAX_PRETRAIN_KL and worst >= MIN_GAIN_OVER_REF
    detail = (f"pre-training max KL(pi || pi_ref) = {pretrain_kl:.2e} (<= {MAX_PRETRAIN_KL:g}); smallest gain "
              f"over pi_ref {worst:+.4f} ({worst_arm[0]}, {worst_arm[1]}; needs >= {MIN_GAIN_OVER_REF:g})")
    if equal_queries:
        q = {a: sorted(set(final[(final["method"] == a) & final["seed"].isin(seeds.eval)]["queries"].astype(int)))
             for a in equal_queries}
        same = len({tuple(v) for v in q.values()}) == 1 and all(len(v) == 1 for v in q.values())
        ok = ok and same
        detail += "; reward queries " + ", ".join(f"{a} {v}" for a, v in q.items()) + (
            " (equal)" if same else " (NOT equal)")
    return Gate(passed=bool(ok), value=worst, detail=detail)


# --- comparisons ---------------------------------------------------------------------------------------------

def measure_difference(final: pd.DataFrame, arm: str, baseline: str, seeds: Seeds, unit: str,
                       gate: Gate, reward_fn: str = NOT_ALIGNED):
    """arm - baseline (paired over seeds) on ``final`` (a final-reward or AUC table); control: the baseline
    on the control seeds minus the baseline on the evaluation seeds (A/A)."""
    d = _ev(final, arm, reward_fn, seeds) - _ev(final, baseline, reward_fn, seeds)
    c = _ctl(final, baseline, reward_fn, seeds) - _ev(final, baseline, reward_fn, seeds)
    m = diff_measurement(d, f"{arm} - {baseline} ({reward_fn})", unit)
    cm = diff_measurement(c, f"A/A: {baseline} on control seeds - {baseline} ({reward_fn})", unit)
    detail = (f"{arm} - {baseline} ({reward_fn}): {_fmt(m)}; means {arm} "
              f"{_ev(final, arm, reward_fn, seeds).mean():.4f}, {baseline} "
              f"{_ev(final, baseline, reward_fn, seeds).mean():.4f}; A/A control {_fmt(cm)}")
    return m, gate, Control(cm, detail=f"{baseline} on control seeds {seeds.control} vs itself on the "
                                       f"evaluation seeds: {_fmt(cm)}"), detail


def measure_complementary(auc: pd.DataFrame, combined: str, singles: list[str], seeds: Seeds, gate: Gate,
                          control_arm: str, reward_fn: str = NOT_ALIGNED):
    """Per seed, min over the single-ingredient arms of (combined - single) AUC: the combination beats the
    better of the two in that seed. Control: the same statistic with ``control_arm`` (a single-ingredient
    arm) on the control seeds in place of the combined arm."""
    unit = "mean reward over training, difference"
    comb = _ev(auc, combined, reward_fn, seeds)
    ctl = _ctl(auc, control_arm, reward_fn, seeds)
    single = {s: _ev(auc, s, reward_fn, seeds) for s in singles}
    d = np.min([comb - v for v in single.values()], axis=0)
    c = np.min([ctl - v for v in single.values()], axis=0)
    m = diff_measurement(d, f"min over {singles} of {combined} - single ({reward_fn}, AUC)", unit)
    cm = diff_measurement(c, f"min over {singles} of {control_arm}[control seeds] - single", unit)
    parts = "; ".join(f"{combined} - {s}: {_fmt(diff_measurement(comb - v, s, unit))}" for s, v in single.items())
    detail = f"{parts}; per-seed minimum {_fmt(m)}; control {_fmt(cm)}"
    return m, gate, Control(cm, detail=f"{control_arm} on control seeds in place of {combined}: {_fmt(cm)}"), detail


def measure_interaction(final: pd.DataFrame, arm: str, baseline: str, seeds: Seeds, gate: Gate):
    """Per seed, gap(R1) - gap(R2) with gap = arm - baseline (final reward). Control: the same with the
    baseline on the control seeds in place of ``arm`` (A/A gaps)."""
    unit = "difference of final-reward gaps, R1 - R2"
    gap = {r: _ev(final, arm, r, seeds) - _ev(final, baseline, r, seeds) for r in (NOT_ALIGNED, ALIGNED)}
    cgap = {r: _ctl(final, baseline, r, seeds) - _ev(final, baseline, r, seeds) for r in (NOT_ALIGNED, ALIGNED)}
    m = diff_measurement(gap[NOT_ALIGNED] - gap[ALIGNED], f"gap(R1) - gap(R2), gap = {arm} - {baseline}", unit)
    cm = diff_measurement(cgap[NOT_ALIGNED] - cgap[ALIGNED], f"A/A gaps of {baseline}", unit)
    detail = (f"gap(R1) = {gap[NOT_ALIGNED].mean():+.4f}, gap(R2) = {gap[ALIGNED].mean():+.4f}; "
              f"interaction {_fmt(m)}; A/A control {_fmt(cm)}")
    return m, gate, Control(cm, detail=f"{baseline} on control seeds in place of {arm}: {_fmt(cm)}"), detail


def fit_gate(mode_fit: pd.DataFrame, seeds: Seeds, target_mass: float) -> Gate:
    """The fits can show relocation: the target puts >= MIN_FIT_TARGET_MASS on R1's peak region, and both
    fits raised the peak-region mass above its start in every evaluation seed (the optimiser moves mass)."""
    fin = final_table(mode_fit)
    start = mode_fit[mode_fit["step"] == 0]
    gains = []
    for obj in ("reverse_kl", "forward_kl"):
        gains.append(_ev(fin, obj, NOT_ALIGNED, seeds, "peak_mass", "objective")
                     - _ev(start, obj, NOT_ALIGNED, seeds, "peak_mass", "objective"))
    worst = float(np.min(gains))
    ok = target_mass >= MIN_FIT_TARGET_MASS and worst > 0
    return Gate(passed=bool(ok), value=worst,
                detail=f"target mass on R1's peak region {target_mass:.4f} (>= {MIN_FIT_TARGET_MASS:g}); smallest "
                       f"rise of peak mass over a fit {worst:+.4f} (> 0 needed)")


def measure_mode_seeking(mode_fit: pd.DataFrame, seeds: Seeds, target_mass: float):
    """Mean over the fit's evaluations of the peak-region mass: reverse KL - forward KL (R1). Control: the
    forward-KL fit from the control seeds' pre-trained policies minus the forward-KL fit (A/A)."""
    unit = "mean peak-region mass over the fit, difference"
    auc = auc_table(mode_fit, value="peak_mass", by="objective")
    rev = _ev(auc, "reverse_kl", NOT_ALIGNED, seeds, "peak_mass", "objective")
    fwd = _ev(auc, "forward_kl", NOT_ALIGNED, seeds, "peak_mass", "objective")
    fwd_c = _ctl(auc, "forward_kl", NOT_ALIGNED, seeds, "peak_mass", "objective")
    m = diff_measurement(rev - fwd, "reverse KL - forward KL (R1, mean peak mass)", unit)
    cm = diff_measurement(fwd_c - fwd, "A/A: forward KL on control seeds - forward KL", unit)
    detail = (f"mean peak mass over the fit: reverse {rev.mean():.4f}, forward {fwd.mean():.4f}; difference "
              f"{_fmt(m)}; A/A control {_fmt(cm)}")
    return m, fit_gate(mode_fit, seeds, target_mass), Control(cm, detail=f"forward KL on control seeds vs "
                                                                          f"forward KL: {_fmt(cm)}"), detail
