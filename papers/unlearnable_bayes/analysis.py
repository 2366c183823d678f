"""The statistics behind the registered claims (``claims.yaml``), measured from the notebook's tables:

- ``acc``: one row per (seed, arch, setting, method, eps) with ``test_acc`` (clean test set);
- ``be``: one row per (seed, method, eps) with ``cover_hart_be``, ``kernel_be`` and ``linf`` of the
  protected half;
- ``gmm``: one row per (seed, separation) with ``exact_be``, ``cover_hart_be``, ``cover_hart_be_no_loo``.

Every statistic is one number per seed; its interval is the Student t interval over seeds
(``shared.stats.seed_measurement``). ``measure_*`` return (Measurement, Gate | None, Control).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

CLEAN_ONLY_GATE = 0.85  # every architecture must reach this clean test accuracy on the clean half alone
EM_ALONE_GATE = 0.02  # EM noise alone must cost at least this much accuracy (mean over seeds x architectures)
ESTIMATOR_GATE = 0.03  # the estimator's worst |error| on the known-BE mixtures, in every seed


def _close(a, b) -> np.ndarray:
    return np.isclose(np.asarray(a, dtype=float), float(b), atol=1e-9)


def mix_minus_clean_only(acc: pd.DataFrame, method: str, eps: float) -> pd.Series:
    """Per seed, the mean over architectures of acc(clean half + ``method`` half at ``eps``) minus
    acc(clean half alone) (same seed, architecture, init, steps, lr)."""
    base = acc[acc["setting"] == "clean_only"].set_index(["seed", "arch"])["test_acc"]
    sel = acc[(acc["setting"] == "mix") & (acc["method"] == method) & _close(acc["eps"], eps)]
    if sel.empty:
        raise ValueError(f"no mix arm for method {method!r} at eps {eps}")
    arm = sel.set_index(["seed", "arch"])["test_acc"]
    diff = (arm - base.reindex(arm.index)).dropna()
    return diff.groupby(level="seed").mean()


def only_gap(acc: pd.DataFrame, method: str, eps: float) -> pd.Series:
    """Per (seed, arch): acc(protected half alone, clean) minus acc(protected half alone, ``method``)."""
    only = acc[acc["setting"] == "only"]
    clean = only[only["method"] == "clean"].set_index(["seed", "arch"])["test_acc"]
    arm = only[(only["method"] == method) & _close(only["eps"], eps)].set_index(["seed", "arch"])["test_acc"]
    return (clean.reindex(arm.index) - arm).dropna()


def clean_only_gate(acc: pd.DataFrame, level: float = CLEAN_ONLY_GATE) -> Gate:
    base = acc[acc["setting"] == "clean_only"]
    worst = float(base["test_acc"].min())
    w = base.loc[base["test_acc"].idxmin()]
    return Gate(passed=bool(worst >= level), value=worst,
                detail=f"lowest clean-half-only test accuracy {worst:.3f} ({w['arch']}, seed {int(w['seed'])}) "
                       f"vs the required {level:g}")


def measure_beo_mix(acc: pd.DataFrame, eps: float) -> tuple[Measurement, Gate, Control]:
    """Claim ``beo_mix_lowers_accuracy``: BEO half in the mix vs clean half alone; control: random noise."""
    m = seed_measurement(mix_minus_clean_only(acc, "beo", eps).tolist(), unit="accuracy difference")
    ctrl = Control(seed_measurement(mix_minus_clean_only(acc, "random", eps).tolist(), unit="accuracy difference"),
                   detail=f"uniform random noise at the same eps = {eps:.4f} in place of BEO")
    return m, clean_only_gate(acc), ctrl


def measure_em_mix(acc: pd.DataFrame, eps: float, level: float = EM_ALONE_GATE) -> tuple[Measurement, Gate, Control]:
    """Claim ``em_mix_does_not_lower_accuracy``: EM half in the mix vs clean half alone. Gate: the EM noise
    works when it is all the data (mean accuracy cost >= ``level``) and the clean-only models learned.
    Control: the protected half with labels shifted by one (harmful by construction)."""
    m = seed_measurement(mix_minus_clean_only(acc, "em", eps).tolist(), unit="accuracy difference")
    gap = only_gap(acc, "em", eps)
    base = clean_only_gate(acc)
    em_gap = float(gap.mean()) if len(gap) else float("nan")
    passed = bool(base.passed and len(gap) > 0 and em_gap >= level)
    gate = Gate(passed=passed, value=em_gap,
                detail=f"EM noise alone costs {em_gap:.3f} test accuracy on average over seeds x architectures "
                       f"(required >= {level:g}); {base.detail}")
    ctrl = Control(seed_measurement(mix_minus_clean_only(acc, "shifted_labels", 0.0).tolist(),
                                    unit="accuracy difference"),
                   detail="protected half with labels (y + 1) mod 10 in place of the EM half")
    return m, gate, ctrl


def be_increase(be: pd.DataFrame, method: str, eps: float, column: str) -> pd.Series:
    """Per seed: ``column`` of the protected half perturbed by ``method`` at ``eps`` minus the clean half's."""
    clean = be[be["method"] == "clean"].set_index("seed")[column]
    arm = be[(be["method"] == method) & _close(be["eps"], eps)].set_index("seed")[column]
    if arm.empty:
        raise ValueError(f"no rows for method {method!r} at eps {eps}")
    return (arm - clean.reindex(arm.index)).dropna()


def estimator_errors(gmm: pd.DataFrame, column: str = "cover_hart_be") -> pd.Series:
    """Per seed, the largest |estimate - exact Bayes error| over the mixtures."""
    return (gmm[column] - gmm["exact_be"]).abs().groupby(gmm["seed"]).max()


def measure_estimator(gmm: pd.DataFrame) -> tuple[Measurement, Control]:
    """Check ``cover_hart_recovers_known_be``; control: the same estimator without leave-one-out."""
    m = seed_measurement(estimator_errors(gmm).tolist(), unit="absolute error")
    ctrl = Control(seed_measurement(estimator_errors(gmm, "cover_hart_be_no_loo").tolist(), unit="absolute error"),
                   detail="the same 1-NN estimator with each point counted as its own neighbour (no leave-one-out)")
    return m, ctrl


def estimator_gate(gmm: pd.DataFrame, level: float = ESTIMATOR_GATE) -> Gate:
    worst = float(estimator_errors(gmm).max())
    return Gate(passed=bool(worst <= level), value=worst,
                detail=f"largest |Cover-Hart - exact Bayes error| on the known-BE mixtures {worst:.4f} "
                       f"(required <= {level:g} in every seed)")


def measure_beo_be(be: pd.DataFrame, gmm: pd.DataFrame, eps: float) -> tuple[Measurement, Gate, Control]:
    """Claim ``beo_raises_estimated_be``: Cover-Hart Bayes error of the BEO half minus the clean half's;
    gate: the estimator passed its known-BE check in every seed; control: random noise."""
    m = seed_measurement(be_increase(be, "beo", eps, "cover_hart_be").tolist(), unit="Bayes error difference")
    ctrl = Control(seed_measurement(be_increase(be, "random", eps, "cover_hart_be").tolist(),
                                    unit="Bayes error difference"),
                   detail=f"uniform random noise at the same eps = {eps:.4f}")
    return m, estimator_gate(gmm), ctrl


def measure_objective(be: pd.DataFrame, eps: float) -> tuple[Measurement, Gate, Control]:
    """Check ``beo_objective_raised``: BEO's kernel objective after PGA minus before. Gate: every perturbed
    half lies inside its L_inf ball; control: random noise's change of the same objective."""
    m = seed_measurement(be_increase(be, "beo", eps, "kernel_be").tolist(), unit="kernel Bayes error difference")
    pert = be[be["method"] != "clean"]
    excess = float((pert["linf"] - pert["eps"]).max())
    gate = Gate(passed=bool(excess <= 1e-6), value=excess,
                detail=f"largest |delta|_inf - eps over every perturbed half: {excess:.2e}")
    ctrl = Control(seed_measurement(be_increase(be, "random", eps, "kernel_be").tolist(),
                                    unit="kernel Bayes error difference"),
                   detail=f"uniform random noise at the same eps = {eps:.4f}")
    return m, gate, ctrl


def per_arch_difference(acc: pd.DataFrame, method: str, eps: float) -> pd.Series:
    """Mean over seeds, per architecture, of acc(mix with ``method`` at ``eps``) - acc(clean half alone)."""
    base = acc[acc["setting"] == "clean_only"].set_index(["seed", "arch"])["test_acc"]
    sel = acc[(acc["setting"] == "mix") & (acc["method"] == method) & _close(acc["eps"], eps)]
    arm = sel.set_index(["seed", "arch"])["test_acc"]
    return (arm - base.reindex(arm.index)).dropna().groupby(level="arch").mean()
