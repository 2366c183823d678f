"""Measurements of the registered claims (``claims.yaml``), on the per-seed tables the notebook builds from
``run_tiny_seed`` / ``run_smollm2_seed``. Each ``measure_*`` returns (Measurement, Gate, Control, detail);
:func:`evaluate_all` hands them to the registry's claims, whose shared rule decides the verdicts.

- ``summary``: one row per seed with ``ft_pair_accuracy``, ``base_pair_accuracy``, ``test_iia``,
  ``test_iia_random``, ... (tiny arm);
- ``pretrain``: one row per seed with the pre-trained model's accuracy per pre-training task;
- ``steering``: one row per (arm, model, direction, seed) with the steered ``pair_accuracy`` on test items
  (directions ``knob``, ``random`` and ``random_b``, the second random direction of the A/A control);
- ``checkpoints``: one row per (seed, ft_step) with ``pair_accuracy`` and ``separation`` (tiny arm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.claims import Control, Gate, evaluate_registered
from shared.metrics import Measurement
from shared.stats import seed_measurement

FT_GATE = 0.80  # fine-tuned pair accuracy every seed must reach for DAS / steering claims
PRETRAIN_GATE = 0.90  # pre-trained fact recall and context copying (means over seeds)
LM_FT_GATE = 0.70  # SmolLM2 fine-tuned pair accuracy (mean over seeds)
MIN_SEEDS_CORRELATION = 6
N_BOOT = 10_000

Measured = tuple[Measurement, Gate, Control, str]


def missing(why: str, unit: str = "") -> Measurement:
    """A measurement that could not be made (the rule makes its claim inconclusive)."""
    return Measurement(None, None, None, 1, why, unit=unit)


def _acc(values, unit: str) -> Measurement:
    values = [float(v) for v in values if np.isfinite(v)]
    if not values:
        return missing("no finite value", unit)
    return seed_measurement(values, unit=unit, bounds=(0.0, 1.0))


def _per_seed(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def pretrain_gate(pretrain: pd.DataFrame, extra: tuple[bool, str] | None = None) -> Gate:
    fact, copy = float(pretrain["fact"].mean()), float(pretrain["novel_copy"].mean())
    ok = fact >= PRETRAIN_GATE and copy >= PRETRAIN_GATE
    detail = f"pre-trained fact recall {fact:.3f}, novel-context copying {copy:.3f} (need >= {PRETRAIN_GATE})"
    if extra is not None:
        ok, detail = ok and extra[0], detail + "; " + extra[1]
    return Gate(ok, detail, min(fact, copy))


def ft_gate(summary: pd.DataFrame) -> Gate:
    ran = "test_iia" in summary and summary["test_iia"].notna().all()
    low = float(summary["ft_pair_accuracy"].min())
    return Gate(bool(ran and low >= FT_GATE),
                f"DAS ran in {int(summary['test_iia'].notna().sum()) if 'test_iia' in summary else 0} of "
                f"{len(summary)} seeds; lowest fine-tuned pair accuracy {low:.3f} (need >= {FT_GATE} in every seed)",
                low)


def measure_ccs_finetuning(summary: pd.DataFrame, pretrain: pd.DataFrame) -> Measured:
    ft, base = summary["ft_pair_accuracy"].tolist(), summary["base_pair_accuracy"].tolist()
    detail = f"fine-tuned pair accuracy per seed {_per_seed(ft)}; pre-trained (control) {_per_seed(base)}"
    return (_acc(ft, "pair accuracy"), pretrain_gate(pretrain),
            Control(_acc(base, "pair accuracy"), "the pre-trained model, never fine-tuned on CCS"), detail)


def measure_das(summary: pd.DataFrame) -> Measured:
    if "test_iia" not in summary:
        m = missing("DAS did not run (no item passed the correctness filter)", "IIA")
        return m, ft_gate(summary), Control(m, "random direction"), "DAS did not run"
    iia, rnd = summary["test_iia"].tolist(), summary["test_iia_random"].tolist()
    detail = (f"test IIA at the dev-chosen layer per seed {_per_seed(iia)} (layers "
              f"{', '.join(str(int(v)) for v in summary['best_layer'])}); random direction {_per_seed(rnd)}")
    return (_acc(iia, "IIA"), ft_gate(summary),
            Control(_acc(rnd, "IIA"), "a random unit direction at the same layer"), detail)


def steering_difference(steering: pd.DataFrame, arm: str, model: str, direction: str = "knob",
                        baseline: str = "random") -> pd.DataFrame:
    """Per seed: steered pair accuracy of ``direction``, of ``baseline``, and their difference."""
    sub = steering[(steering["arm"] == arm) & (steering["model"] == model)]
    wide = sub.pivot_table(index="seed", columns="direction", values="pair_accuracy")
    if direction not in wide or baseline not in wide:
        return pd.DataFrame(columns=[direction, baseline, "difference"])
    wide = wide[[direction, baseline]].dropna()
    wide["difference"] = wide[direction] - wide[baseline]
    return wide


def _difference(wide: pd.DataFrame) -> Measurement:
    unit = "pair accuracy (knob - random)"
    if wide.empty:
        return missing("no steering results", unit)
    return seed_measurement(wide["difference"].tolist(), unit=unit, bounds=(-1.0, 1.0))


def measure_steering(steering: pd.DataFrame, arm: str, model: str, gate: Gate) -> Measured:
    """Knob minus random steered pair accuracy over seeds; control: random_b minus random (A/A)."""
    wide = steering_difference(steering, arm, model)
    aa = steering_difference(steering, arm, model, "random_b", "random")
    if wide.empty:
        detail = f"no steering results for {arm} / {model}"
    else:
        detail = (f"{model}: steered pair accuracy knob {wide['knob'].mean():.3f} vs random "
                  f"{wide['random'].mean():.3f} (per seed knob {_per_seed(wide['knob'])}; random "
                  f"{_per_seed(wide['random'])})")
        if not aa.empty:
            detail += f"; second random direction {_per_seed(aa['random_b'])}"
    return _difference(wide), gate, Control(_difference(aa), "A/A: second random direction minus the first"), detail


def spearman(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan")
    return float(st.spearmanr(x, y).statistic)


def within_step_correlation(acc: np.ndarray, sep: np.ndarray) -> float:
    """Mean over steps (columns) of the Spearman correlation over seeds (rows); steps where either variable
    is constant across the seeds are skipped (NaN if none is left)."""
    rhos = [spearman(acc[:, j], sep[:, j]) for j in range(acc.shape[1])]
    rhos = [r for r in rhos if np.isfinite(r)]
    return float(np.mean(rhos)) if rhos else float("nan")


def _bootstrap_rows(acc: np.ndarray, sep: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = acc.shape[0]
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        boots.append(within_step_correlation(acc[idx], sep[idx]))
    boots = np.array(boots)
    boots = boots[np.isfinite(boots)]
    if boots.size < n_boot // 2:  # most resamples undefined: no honest interval
        return float("nan"), float("nan")
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(lo), float(hi)


def _correlation_measurement(acc: np.ndarray, sep: np.ndarray, n_boot: int, seed: int, what: str) -> Measurement:
    value = within_step_correlation(acc, sep)
    if not np.isfinite(value):
        return missing("the correlation is undefined at every step", "Spearman rho")
    lo, hi = _bootstrap_rows(acc, sep, n_boot, seed)
    ok = np.isfinite(lo) and np.isfinite(hi)
    return Measurement(value, lo if ok else None, hi if ok else None, acc.shape[0],
                       f"{what}; percentile bootstrap over seeds ({n_boot} resamples)", unit="Spearman rho")


def measure_separation(checkpoints: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> Measured:
    """Across-seed (across-model) correlation of pair accuracy with d' at each checkpoint step, averaged over
    steps; control: d' permuted among the seeds within each step."""
    if checkpoints.empty:
        m = missing("no checkpoint table (DAS did not run)", "Spearman rho")
        return m, Gate(False, "no checkpoints"), Control(m, "permuted d'"), "no checkpoints"
    acc = checkpoints.pivot_table(index="seed", columns="ft_step", values="pair_accuracy").dropna(axis=1)
    sep = checkpoints.pivot_table(index="seed", columns="ft_step", values="separation").loc[acc.index, acc.columns]
    a, s = acc.to_numpy(), sep.to_numpy()
    varying = [int(c) for j, c in enumerate(acc.columns)
               if np.unique(a[:, j]).size > 1 and np.unique(s[:, j]).size > 1]
    gate = Gate(len(varying) >= 2 and a.shape[0] >= MIN_SEEDS_CORRELATION,
                f"{a.shape[0]} seeds; steps where pair accuracy and d' both vary across seeds: "
                f"{', '.join(map(str, varying)) or 'none'} (need >= 2 steps and >= {MIN_SEEDS_CORRELATION} seeds)",
                float(len(varying)))
    rng = np.random.default_rng(seed + 1)
    s_perm = np.column_stack([rng.permutation(s[:, j]) for j in range(s.shape[1])]) if s.size else s
    measured = _correlation_measurement(a, s, n_boot, seed, "mean over steps of the Spearman correlation over seeds")
    control = _correlation_measurement(a, s_perm, n_boot, seed, "same, d' permuted among seeds within each step")
    rhos = {int(c): spearman(a[:, j], s[:, j]) for j, c in enumerate(acc.columns)}
    detail = ("within-step Spearman over seeds: "
              + ", ".join(f"step {k}: {v:.3f}" for k, v in rhos.items() if np.isfinite(v))
              + f"; control (permuted d') {_fmt(control.value)}")
    return measured, gate, Control(control, "d' permuted among seeds within each step"), detail


def measure_smollm2_transfer(steering_ft: pd.DataFrame, summary_lm: pd.DataFrame, lm_arm: str) -> Measured:
    """smollm2_finetuned_transfer_v3: DAS (from the fine-tuned SmolLM2) minus random steered pair accuracy
    of the non-fine-tuned model, over lm_seeds. Gate: the LoRA arm ran, the fine-tuned model's held-out pair
    accuracy with the intent is >= LM_FT_GATE on average and DAS ran in every seed. Control: A/A, the
    second random direction minus the first on the non-fine-tuned model."""
    unit = "pair accuracy (knob - random)"
    aa_name = "A/A: second random direction minus the first"
    ran = (lm_arm == "finetune" and summary_lm is not None and "ft_pair_accuracy" in summary_lm)
    if not ran:
        why = f"the SmolLM2 LoRA arm did not run (lm_arm = {lm_arm})"
        m = missing(why, unit)
        return m, Gate(False, why), Control(m, aa_name), why
    ft = float(summary_lm["ft_pair_accuracy"].mean())
    n_das = int(summary_lm["das_layer"].notna().sum()) if "das_layer" in summary_lm else 0
    gate = Gate(bool(ft >= LM_FT_GATE and n_das == len(summary_lm)),
                f"fine-tuned SmolLM2 held-out pair accuracy {ft:.3f} on average (need >= {LM_FT_GATE}; per seed "
                f"{_per_seed(summary_lm['ft_pair_accuracy'])}); DAS ran in {n_das} of {len(summary_lm)} seeds "
                f"(need all)", ft)
    if steering_ft is None or steering_ft.empty:
        m = missing("DAS ran in no seed: no steering results", unit)
        return m, gate, Control(m, aa_name), gate.detail
    return measure_steering(steering_ft, "smollm2", "instruct (DAS from fine-tuned)", gate)


def _das_ran(summary: pd.DataFrame) -> tuple[bool, str]:
    ran = bool("test_iia" in summary and summary["test_iia"].notna().all())
    return ran, f"DAS ran in every seed: {'yes' if ran else 'no'}"


def evaluate_all(claims: dict, tiny: dict[str, pd.DataFrame], lm: dict[str, pd.DataFrame], lm_arm: str) -> dict:
    """Evaluate every registered claim from the notebook's tables (returns ``claims``)."""
    summary, pretrain, steering = tiny["summary"], tiny["pretrain"], tiny["steering"]
    results = {
        "ccs_finetuning_v2": measure_ccs_finetuning(summary, pretrain),
        "das_single_layer_v2": measure_das(summary),
        "steering_finetuned_v2": measure_steering(steering, "tiny", "fine-tuned", ft_gate(summary)),
        "steering_transfer_base_v2": measure_steering(
            steering, "tiny", "base",
            pretrain_gate(pretrain, _das_ran(summary))),
        "separation_across_seeds": measure_separation(tiny["checkpoints"]),
        "smollm2_finetuned_transfer_v3": measure_smollm2_transfer(lm.get("steering_ft"), lm["summary"], lm_arm),
    }
    return evaluate_registered(claims, results)


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


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"
