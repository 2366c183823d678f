"""Claim statistics, gates and controls from the per-user result table (docs/claims.md).

``results``: one row per (seed, arm, user) with ``hit`` (HR@k, 0/1) and ``ndcg`` (NDCG@k) of the held-out
last item among the candidates. ``per_seed``: one row per seed with the phase-1 text retrieval of each
arm (``retrieval_<arm>``), the number of items, and the frozen LM's text NLL before/after phase 2 and
that of the LM trained unfrozen (``nll_before``, ``nll_after``, ``nll_unfrozen``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement


def arm_means(results: pd.DataFrame) -> pd.DataFrame:
    """(seed, arm) -> mean hit and ndcg over the evaluation users."""
    return results.groupby(["seed", "arm"], as_index=False)[["hit", "ndcg"]].mean()


def seed_gaps(results: pd.DataFrame, arm: str, baseline: str, metric: str = "ndcg") -> np.ndarray:
    """Per seed (sorted): mean over users of ``metric`` of ``arm`` minus that of ``baseline`` (the same
    users and candidates, so the difference is paired)."""
    m = arm_means(results).pivot(index="seed", columns="arm", values=metric).sort_index()
    return (m[arm] - m[baseline]).to_numpy()


def measure_gap(results: pd.DataFrame, arm: str, baseline: str, control_arm: str, gate_hit: float,
                metric: str = "ndcg") -> tuple[Measurement, Gate, Control, str]:
    """The statistic of the arm-comparison claims: mean over seeds of the per-seed ``metric`` gap
    ``arm - baseline`` with a t interval. Gate: both arms learned the task, i.e. their HR@k on the
    held-out items is >= ``gate_hit`` in every seed (an untrained baseline would make any gap
    meaningless). Control: the same gap for ``control_arm - baseline``, where the effect is absent by
    design."""
    gaps = seed_gaps(results, arm, baseline, metric)
    ctrl = seed_gaps(results, control_arm, baseline, metric)
    hits = arm_means(results).pivot(index="seed", columns="arm", values="hit")
    worst = float(min(hits[arm].min(), hits[baseline].min()))
    gate = Gate(passed=bool(worst >= gate_hit), value=worst,
                detail=f"lowest per-seed HR of {arm} / {baseline}: {hits[arm].min():.3f} / "
                       f"{hits[baseline].min():.3f} (needs >= {gate_hit:g})")
    unit = f"{metric} difference"
    control = Control(seed_measurement(ctrl, unit=unit, bounds=(-1, 1)), detail=f"{control_arm} - {baseline}")
    detail = (f"per-seed {metric} gaps {arm} - {baseline}: " + ", ".join(f"{g:+.4f}" for g in gaps)
              + f"; control {control_arm} - {baseline}: " + ", ".join(f"{g:+.4f}" for g in ctrl))
    return seed_measurement(gaps, unit=unit, bounds=(-1, 1)), gate, control, detail


def measure_alignment(per_seed: pd.DataFrame, arm: str, control_arm: str, k: int) -> tuple[Measurement, Control, str]:
    """Phase-1 manipulation check: text -> item retrieval R@k of ``arm`` minus chance k / n_items, per seed,
    with a t interval; control: the same for ``control_arm`` (pretrained on shuffled item-text pairs)."""
    chance = k / per_seed["n_items"].to_numpy()
    own = per_seed[f"retrieval_{arm}"].to_numpy() - chance
    ctrl = per_seed[f"retrieval_{control_arm}"].to_numpy() - chance
    detail = (f"R@{k} {arm}: " + ", ".join(f"{v:.3f}" for v in per_seed[f"retrieval_{arm}"])
              + f"; {control_arm}: " + ", ".join(f"{v:.3f}" for v in per_seed[f"retrieval_{control_arm}"])
              + f"; chance {chance.mean():.3f}")
    return (seed_measurement(own, unit="R@k - chance", bounds=(-1, 1)),
            Control(seed_measurement(ctrl, unit="R@k - chance", bounds=(-1, 1)), detail=f"{control_arm}"),
            detail)


def measure_language_preserved(per_seed: pd.DataFrame) -> tuple[Measurement, Control, str]:
    """The frozen LM's per-token NLL on the item texts after all phase-2 training minus before, per seed
    (0 by construction when the LM is frozen); control: the same change for the LM trained unfrozen."""
    change = (per_seed["nll_after"] - per_seed["nll_before"]).to_numpy()
    ctrl = (per_seed["nll_unfrozen"] - per_seed["nll_before"]).to_numpy()
    detail = (f"NLL change frozen: " + ", ".join(f"{v:+.2e}" for v in change)
              + "; unfrozen: " + ", ".join(f"{v:+.3f}" for v in ctrl) + " nats/token")
    return (seed_measurement(change, unit="nats/token"),
            Control(seed_measurement(ctrl, unit="nats/token"), detail="LM trained with the MLP adaptor"), detail)
