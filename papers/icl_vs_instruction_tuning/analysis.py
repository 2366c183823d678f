"""Statistics and verdict measurements of the replication (the claims: claims.yaml).

The paper's headline (Sec. 5): across held-out tasks, the instruction-tuned model's zero-shot accuracy
(FLAN Direct) is rank-correlated with its base model's accuracy given gold in-context examples (Gold
Pipeline). Here: per model seed, Spearman's rho over the held-out tasks between the two accuracies; the
statistic is the mean over model seeds, its interval a two-level bootstrap (model seeds, then held-out
tasks, one task resample shared by every model in a replicate since tasks are the units the correlation
ranges over).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import bootstrap_ci

FORMAT_SLACK = 0.1  # tuning learned the instruction format: on the training tasks, tuned zero-shot accuracy
# (instruction format) >= base zero-shot accuracy in the pretraining format (name first) - FORMAT_SLACK
SPREAD_GATE = 0.1  # base ICL accuracy varies across held-out tasks (SD over tasks), in every model
INCAPABLE = 0.2  # "the base model cannot do the task in context": base ICL accuracy below this
MIN_INCAPABLE_PAIRS = 4


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between a[i] and b[i] for each row i of two (R, n) arrays (average ranks for ties).
    A row where either variable is constant has no rank correlation and gets 0 (no agreement)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    num = (ra * rb).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), 0.0)
    return rho


def mean_spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over models (rows) of Spearman's rho over tasks (columns); x, y are (S, T)."""
    return float(spearman_rows(x, y).mean())


def agreement_bootstrap(x: np.ndarray, y: np.ndarray, n_boot: int = 4000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Mean over models of per-model Spearman rho between x and y (both (S, T): models x tasks), with a
    percentile interval from resampling models and, independently, the task set (shared across the
    models of a replicate)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    S, T = x.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, S, size=(n_boot, S))
    ti = rng.integers(0, T, size=(n_boot, T))
    xs = x[si[:, :, None], ti[:, None, :]]  # (n_boot, S, T)
    ys = y[si[:, :, None], ti[:, None, :]]
    rho = spearman_rows(xs.reshape(-1, T), ys.reshape(-1, T)).reshape(n_boot, S).mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(rho, [alpha, 1 - alpha])
    return mean_spearman(x, y), float(lo), float(hi)


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) with no fixed point (a random order, each element sent to the next in it)."""
    if n < 2:
        raise ValueError("a derangement needs n >= 2")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=int)
    perm[order] = np.roll(order, -1)
    return perm


def accuracy_matrix(acc: pd.DataFrame, stage: str, fmt: str, split: str) -> pd.DataFrame:
    """(seeds x tasks) accuracy of one (stage, format) on the tasks of one split."""
    sub = acc[(acc["stage"] == stage) & (acc["format"] == fmt) & (acc["split"] == split)]
    return sub.pivot(index="seed", columns="task", values="accuracy").sort_index()


def permuted_pairing(icl: np.ndarray, seeds: list[int]) -> np.ndarray:
    """The control arm: each model's base-ICL accuracies with the task labels permuted across the held-out
    tasks by a derangement drawn from the model seed, so task t's tuned accuracy is paired with another
    task's base accuracy (agreement absent by design)."""
    return np.stack([row[derangement(len(row), 7_000 + s)] for row, s in zip(icl, seeds)])


def format_gate(acc: pd.DataFrame) -> tuple[bool, float, str]:
    """Instruction tuning learned its format, in every model: mean over the training tasks of the tuned
    model's zero-shot accuracy (instruction format, fresh inputs) minus the base model's zero-shot accuracy
    in the pretraining format (``named``: the name token first), >= -FORMAT_SLACK. Tuning need not teach a
    task the base model never learned; it must make the new format reach what pretraining put there."""
    tuned = accuracy_matrix(acc, "tuned", "instruction", "it").mean(axis=1)
    named = accuracy_matrix(acc, "base", "named", "it").mean(axis=1)
    diff = tuned - named
    ok = bool((diff >= -FORMAT_SLACK).all())
    return ok, float(diff.min()), (f"min over models of (tuned zero-shot - base named zero-shot) on training tasks "
                                   f"{diff.min():+.3f} (>= {-FORMAT_SLACK:+g}); tuned {tuned.min():.3f}-{tuned.max():.3f}")


def measure_agreement(acc: pd.DataFrame, n_boot: int = 4000,
                      smallest_effect: float = 0.3) -> tuple[Measurement, Gate, Control, str]:
    """it_icl_rank_agreement: statistic, gate and control.

    x = tuned model, instruction format (zero-shot) on held-out tasks; y = base model, icl format.
    Gate: ``format_gate`` and the SD over held-out tasks of base ICL accuracy >= SPREAD_GATE in every model.
    """
    x = accuracy_matrix(acc, "tuned", "instruction", "heldout")
    y = accuracy_matrix(acc, "base", "icl", "heldout")[x.columns]
    seeds = list(x.index)
    value, lo, hi = agreement_bootstrap(x.values, y.values, n_boot, seed=0)
    per_seed = spearman_rows(x.values, y.values)
    m = Measurement(value=value, ci_low=lo, ci_high=hi, n=len(seeds) * x.shape[1],
                    method=f"mean over {len(seeds)} models of Spearman rho over {x.shape[1]} held-out tasks; "
                           f"95% bootstrap over models and tasks ({n_boot} resamples)", unit="Spearman rho")
    yp = permuted_pairing(y.values, seeds)
    cv, clo, chi = agreement_bootstrap(x.values, yp, n_boot, seed=1)
    control = Control(Measurement(value=cv, ci_low=clo, ci_high=chi, n=m.n, method=m.method + ", labels permuted",
                                  unit="Spearman rho"),
                      detail="base-ICL accuracies paired with the tuned accuracy of another held-out task "
                             "(a derangement of task labels per model)")
    fmt_ok, fmt_value, fmt_detail = format_gate(acc)
    spread = y.std(axis=1, ddof=0)
    passed = bool(fmt_ok and (spread >= SPREAD_GATE).all())
    gate = Gate(passed=passed, value=fmt_value,
                detail=f"{fmt_detail}; min SD of base ICL accuracy over held-out tasks {spread.min():.3f} "
                       f"(>= {SPREAD_GATE})")
    detail = ("per-model rho " + ", ".join(f"s{s}: {r:.2f}" for s, r in zip(seeds, per_seed))
              + f" (spread over {len(seeds)} models)")
    return m, gate, control, detail


def incapable_gain(acc: pd.DataFrame, split: str, threshold: float = INCAPABLE) -> pd.DataFrame:
    """(model, task) pairs of ``split`` whose base ICL accuracy is below ``threshold``, with the tuned
    zero-shot accuracy and the gain (tuned zero-shot - base ICL)."""
    x = accuracy_matrix(acc, "tuned", "instruction", split).stack().rename("tuned_zero_shot")
    y = accuracy_matrix(acc, "base", "icl", split).stack().rename("base_icl")
    df = pd.concat([x, y], axis=1).reset_index()
    df = df[df["base_icl"] < threshold].copy()
    df["gain"] = df["tuned_zero_shot"] - df["base_icl"]
    return df


def _mean_gain(df: pd.DataFrame, seed: int, n_boot: int) -> Measurement:
    if len(df) < 2:
        return Measurement(value=float(df["gain"].mean()) if len(df) else float("nan"), ci_low=None, ci_high=None,
                           n=len(df), method="fewer than 2 pairs: no interval", unit="accuracy gain")
    v, lo, hi = bootstrap_ci(df["gain"].to_numpy(), n_boot=n_boot, seed=seed)
    return Measurement(value=v, ci_low=lo, ci_high=hi, n=len(df),
                       method=f"mean over {len(df)} (model, task) pairs, 95% percentile bootstrap over pairs",
                       unit="accuracy gain")


def measure_no_new_capability(acc: pd.DataFrame, n_boot: int = 4000) -> tuple[Measurement, Gate, Control, str]:
    """no_unlock_beyond_icl: on held-out (model, task) pairs the base model cannot do in context
    (ICL < INCAPABLE), the mean gain of the tuned model's zero-shot accuracy over base ICL. Control: the
    same statistic on the instruction-tuning *training* tasks the base model cannot do in context (tuned on
    the task itself, so the limit is absent by design). Gate: ``format_gate`` and there are
    >= MIN_INCAPABLE_PAIRS held-out pairs."""
    held = incapable_gain(acc, "heldout")
    train_pairs = incapable_gain(acc, "it")
    m = _mean_gain(held, 0, n_boot)
    control = Control(_mean_gain(train_pairs, 1, n_boot),
                      detail=f"instruction-tuning training tasks with base ICL < {INCAPABLE} ({len(train_pairs)} pairs)")
    fmt_ok, _, fmt_detail = format_gate(acc)
    passed = bool(fmt_ok and len(held) >= MIN_INCAPABLE_PAIRS)
    gate = Gate(passed=passed, value=float(len(held)),
                detail=f"{len(held)} held-out pairs with base ICL < {INCAPABLE} (>= {MIN_INCAPABLE_PAIRS}); {fmt_detail}")
    top = held.sort_values("gain", ascending=False).head(3)
    detail = (f"largest held-out gains: " + ", ".join(f"s{r.seed} {r.task} {r.gain:+.2f}" for r in top.itertuples())
              if len(top) else "no held-out pair below the threshold")
    return m, gate, control, detail
