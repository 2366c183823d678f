"""Measurements of the registered claims (``claims.yaml``) from the simulation tables.

Inputs are the long tables of experiment.run_factor_grid / run_mixture_grid: one row per
(d, seed, n, method, m) with the excess risk (pretrained rows also carry the gate's quantities). Each
``evaluate_*`` function measures a claim with an interval, its gate and its control and hands them to
:meth:`shared.claims.Claim.evaluate`, which applies the one verdict rule.

A statistic that must hold for every ``d`` (or every cell) is reported as its worst case, with the interval
``[min over d of the lower ends, min over d of the upper ends]`` (``greater``; mirrored for ``less``): it
lies beyond the boundary only when every d's interval does, and falls short as soon as one d's interval
does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from shared.claims import Claim, Control, Gate
from shared.metrics import Measurement
from shared.stats import bootstrap_ci, paired_t_test, seed_measurement

from .experiment import LABELED_ONLY, PRETRAIN, SUPERVISED_LOGISTIC, SUPERVISED_RIDGE

SUBSPACE_SIN_MAX = 0.2  # factor gate: largest principal-angle sine between learned and true latent subspace
COMPONENT_ACC_SLACK = 0.05  # mixture gate: EM's held-out component accuracy within this of the Bayes assignment's
GMM_SMALL_N = 50  # the mixture claim is about scarce labels: n <= 50


def _pivot(df: pd.DataFrame, method: str, m: int | None = None) -> pd.DataFrame:
    """(seed x n) table of excess risks of one method (and one m)."""
    rows = df[(df["method"] == method) & ((df["m"] == m) if m is not None else True)]
    return rows.pivot_table(index="seed", columns="n", values="excess_risk")


def _largest_m(df: pd.DataFrame) -> int:
    return int(df.loc[df["method"] == PRETRAIN, "m"].max())


def _pretrained(df: pd.DataFrame, d: int) -> pd.DataFrame:
    sub = df[df["d"] == d]
    return _pivot(sub, PRETRAIN, _largest_m(sub))


def worst_over(parts: list[Measurement], direction: str, method: str, unit: str) -> Measurement:
    """Combine per-d (or per-cell) measurements of a claim that must hold for each of them."""
    if not parts:
        raise ValueError("nothing to combine")
    if any(p.ci_low is None or p.ci_high is None for p in parts):
        return Measurement(None, None, None, parts[0].n, method + " (an interval is missing)", unit=unit)
    pick = min if direction == "greater" else max
    return Measurement(value=float(pick(p.value for p in parts)), ci_low=float(pick(p.ci_low for p in parts)),
                       ci_high=float(pick(p.ci_high for p in parts)), n=min(p.n for p in parts),
                       method=method, unit=unit)


def hull(parts: list[Measurement], target: float, method: str, unit: str) -> Measurement:
    """For a ``within`` claim over several d: the value furthest from the target, the interval spanning
    every d's interval (inside the band only when every d's interval is)."""
    if any(p.ci_low is None or p.ci_high is None for p in parts):
        return Measurement(None, None, None, parts[0].n, method + " (an interval is missing)", unit=unit)
    far = max(parts, key=lambda p: abs(p.value - target))
    return Measurement(value=far.value, ci_low=min(p.ci_low for p in parts), ci_high=max(p.ci_high for p in parts),
                       n=min(p.n for p in parts), method=method, unit=unit)


# --- gates -------------------------------------------------------------------------------------------------

def subspace_gate(df: pd.DataFrame) -> Gate:
    """Pretraining recovered the latent subspace: at the largest m, sin of the largest principal angle
    between span(W) and span(B) is <= SUBSPACE_SIN_MAX for every (d, seed)."""
    rows = df[(df["method"] == PRETRAIN)]
    rows = pd.concat([g[g["m"] == g["m"].max()] for _, g in rows.groupby("d")])
    worst = float(rows.groupby(["d", "seed"])["subspace_sin"].first().max())
    return Gate(passed=worst <= SUBSPACE_SIN_MAX, value=worst,
                detail=f"largest sin(principal angle) between the learned and the true latent subspace at the "
                       f"largest m: {worst:.3g} (gate <= {SUBSPACE_SIN_MAX})")


def component_gate(mix: pd.DataFrame) -> Gate:
    """EM recovered the mixture: at the largest m, its held-out component accuracy is within
    COMPONENT_ACC_SLACK of the true model's Bayes assignment in every seed."""
    rows = mix[(mix["method"] == PRETRAIN) & (mix["m"] == _largest_m(mix))]
    per_seed = rows.groupby("seed")[["em_component_acc", "bayes_component_acc"]].first()
    gap = float((per_seed["bayes_component_acc"] - per_seed["em_component_acc"]).max())
    return Gate(passed=gap <= COMPONENT_ACC_SLACK, value=gap,
                detail=f"largest shortfall of EM's held-out component accuracy below the Bayes assignment's: "
                       f"{gap:.3g} (gate <= {COMPONENT_ACC_SLACK}); EM accuracy min "
                       f"{per_seed['em_component_acc'].min():.3f}, Bayes min {per_seed['bayes_component_acc'].min():.3f}")


# --- factor_advantage_at_2d ---------------------------------------------------------------------------------

def ratio_at_2d(df: pd.DataFrame, n_boot: int = 2000) -> tuple[Measurement, str]:
    """Per d: mean supervised-ridge / mean pretrained excess risk at n = 2d, percentile bootstrap over seeds;
    combined as the worst d."""
    parts, texts = [], []
    for d in sorted(df["d"].unique()):
        sup, pre = _pivot(df[df["d"] == d], SUPERVISED_RIDGE), _pretrained(df, d)
        if 2 * d not in pre.columns:
            raise ValueError(f"the n grid must contain n = 2d = {2 * d}")
        both = np.column_stack([sup[2 * d], pre[2 * d]])
        point, lo, hi = bootstrap_ci(both, statistic=lambda a: float(a[:, 0].mean() / a[:, 1].mean()),
                                     n_boot=n_boot)
        parts.append(Measurement(point, lo, hi, len(both), "bootstrap", unit="ratio"))
        texts.append(f"d={d}: {point:.2f} [{lo:.2f}, {hi:.2f}]")
    m = worst_over(parts, "greater", "per d, mean supervised-ridge / mean pretrained excess risk at n = 2d with "
                   "a percentile bootstrap over seeds; worst d (interval = [min lower, min upper] over d)", "ratio")
    return m, "; ".join(texts)


def evaluate_factor_advantage(claim: Claim, factor: pd.DataFrame, control: pd.DataFrame) -> Claim:
    m, text = ratio_at_2d(factor)
    cm, ctext = ratio_at_2d(control)
    table = advantage_table(factor, SUPERVISED_RIDGE)
    small = table[table["n"] <= 4 * table["d"]]
    cells = "; ".join(f"d={int(r.d)} n={int(r.n)}: {r.advantage:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                      for r in small.itertuples())
    detail = (f"ratio at n = 2d: {text}. Control (uninformative model): {ctext}. For reference, mean paired "
              f"advantage (supervised - pretrained excess risk) at every n <= 4d: {cells}")
    return claim.evaluate(m, gate=subspace_gate(factor),
                          control=Control(cm, detail=f"uninformative factor model (label outside span(B)): {ctext}"),
                          detail=detail)


# --- factor_rate_v2 -----------------------------------------------------------------------------------------

def loglog_slope(table: pd.DataFrame) -> float:
    """Least-squares slope of log(mean over rows) on log(column n)."""
    ns = np.asarray(table.columns, dtype=float)
    return float(np.polyfit(np.log(ns), np.log(table.mean(axis=0).to_numpy()), 1)[0])


def rate_slopes(df: pd.DataFrame, r: int, n_boot: int = 2000) -> tuple[Measurement, str]:
    parts, texts = [], []
    for d in sorted(df["d"].unique()):
        pre = _pretrained(df, d)
        pre = pre[[n for n in pre.columns if n >= 4 * r]]
        cols = list(pre.columns)
        point, lo, hi = bootstrap_ci(pre.to_numpy(), statistic=lambda a: loglog_slope(pd.DataFrame(a, columns=cols)),
                                     n_boot=n_boot)
        parts.append(Measurement(point, lo, hi, len(pre), "bootstrap", unit="slope"))
        texts.append(f"d={d}: {point:.3f} [{lo:.3f}, {hi:.3f}] over n in {cols}")
    m = hull(parts, -1.0, "per d, log-log slope of mean pretrained excess risk on n (n >= 4r, largest m), "
             "percentile bootstrap over seeds; value = the slope furthest from -1, interval = hull over d", "slope")
    return m, "; ".join(texts)


def evaluate_factor_rate(claim: Claim, factor: pd.DataFrame, control: pd.DataFrame, r: int) -> Claim:
    m, text = rate_slopes(factor, r)
    cm, ctext = rate_slopes(control, r)
    return claim.evaluate(m, gate=subspace_gate(factor),
                          control=Control(cm, detail=f"uninformative factor model: {ctext}"), detail=text)


# --- unlabeled_consistency (check) --------------------------------------------------------------------------

def within_seed_spearman(df: pd.DataFrame, d: int, n: int) -> list[float]:
    sub = df[(df["d"] == d) & (df["method"] == PRETRAIN) & (df["n"] == n)]
    return [float(st.spearmanr(g["m"], g["excess_risk"]).statistic) for _, g in sub.groupby("seed")]


def evaluate_unlabeled_consistency(claim: Claim, df: pd.DataFrame) -> Claim:
    parts, texts = [], []
    for d in sorted(df["d"].unique()):
        rhos = within_seed_spearman(df, d, 2 * d)
        p = seed_measurement(rhos, unit="Spearman rho", bounds=(-1.0, 1.0))
        parts.append(p)
        lo = "n/a" if p.ci_low is None else f"{p.ci_low:.3f}"
        hi = "n/a" if p.ci_high is None else f"{p.ci_high:.3f}"
        texts.append(f"d={d}: mean within-seed rho {p.value:.3f} [{lo}, {hi}] over {len(rhos)} seeds")
    m = worst_over(parts, "less", "per d, mean over seeds of the within-seed Spearman rho(m, pretrained excess "
                   "risk) at n = 2d, t interval clipped to [-1, 1]; worst d (interval = [max lower, max upper])",
                   "Spearman rho")
    return claim.evaluate(m, detail="; ".join(texts))


# --- mixture_advantage_v2 -----------------------------------------------------------------------------------

def advantage_table(df: pd.DataFrame, baseline: str, ns: list[int] | None = None) -> pd.DataFrame:
    """Per (d, n): mean of baseline - pretrained excess risk, its t interval and the one-sided p-value."""
    out = []
    for d in sorted(df["d"].unique()):
        pre = _pretrained(df, d)
        base = _pivot(df[df["d"] == d], baseline)
        for n in pre.columns:
            if ns is not None and n not in ns:
                continue
            pair = pd.concat([base[n], pre[n]], axis=1).dropna()
            if len(pair) < 2:
                continue
            res = paired_t_test(pair.iloc[:, 0], pair.iloc[:, 1], alternative="greater")  # two-sided t interval
            lo, hi = res.ci_low, res.ci_high
            out.append({"d": d, "n": n, "baseline": baseline, "baseline_mean": pair.iloc[:, 0].mean(),
                        "pretrained_mean": pair.iloc[:, 1].mean(), "advantage": res.mean_difference,
                        "ci_low": lo, "ci_high": hi, "p": res.pvalue, "seeds": len(pair)})
    return pd.DataFrame(out)


def mixture_advantage(mix: pd.DataFrame) -> tuple[Measurement, pd.DataFrame]:
    ns = sorted(n for n in mix["n"].unique() if n <= GMM_SMALL_N)
    tables = pd.concat([advantage_table(mix, b, ns) for b in (SUPERVISED_LOGISTIC, LABELED_ONLY)],
                       ignore_index=True)
    if tables.empty:
        raise ValueError(f"the mixture n grid has no n <= {GMM_SMALL_N} with two or more seeds")
    parts = [Measurement(r.advantage, r.ci_low, r.ci_high, int(r.seeds), "paired t", unit="excess error")
             for r in tables.itertuples()]
    m = worst_over(parts, "greater", f"per (n <= {GMM_SMALL_N}, labels-only baseline), mean paired advantage "
                   "(baseline - pretrained excess 0-1 error) with a two-sided 95% t interval over seeds; worst cell "
                   "(interval = [min lower, min upper] over cells)", "excess error")
    return m, tables


def evaluate_mixture_advantage(claim: Claim, mix: pd.DataFrame, control: pd.DataFrame) -> Claim:
    m, tables = mixture_advantage(mix)
    cm, ctables = mixture_advantage(control)
    detail = "; ".join(f"{r.baseline} n={int(r.n)}: {r.advantage:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]"
                       for r in tables.itertuples())
    cdetail = "; ".join(f"{r.baseline} n={int(r.n)}: {r.advantage:.4f}" for r in ctables.itertuples())
    return claim.evaluate(m, gate=component_gate(mix),
                          control=Control(cm, detail=f"uninformative mixture (label ignores the cluster): {cdetail}"),
                          detail=detail)
