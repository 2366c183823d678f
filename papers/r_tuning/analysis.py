"""The per-seed metrics and the measurements behind the registered claims (``claims.yaml``).

Input: a per-question table (one row per arm run and test question) with columns ``seed, method
("vanilla" | "r_tuning"), split ("id" | "ood"), qid, correct (bool), confidence, p_sure`` (NaN for
vanilla), as written by :func:`papers.r_tuning.lm_arm.run_lm_arm` and
:func:`papers.r_tuning.synthetic.run_seed`. ``qid`` identifies a test question within its split: in the
SmolLM2 arm the test questions are the same for every seed (seeds change the LoRA initialisation and the
data order), in the synthetic arm every seed is a new world with its own questions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.claims import Claim, Control, Gate, evaluate_registered
from shared.metrics import Measurement
from shared.stats import seed_measurement

from .refusal import ranking_score

MIN_ANSWERED = 5  # gate of answered_accuracy_v2: willingly answered questions per split and seed
MIN_TRAIN_AUROC = 0.7  # gate: AUROC of p(sure) for the certain labels on the training questions, every seed
N_BOOT = 1000


# --- metrics ---------------------------------------------------------------------------------------------

def average_precision_fast(correct: np.ndarray, score: np.ndarray) -> float:
    """sklearn's ``average_precision_score`` in numpy (ties grouped into one threshold):
    AP = sum_k (R_k - R_{k-1}) P_k over the distinct scores in descending order; NaN without positives."""
    y = np.asarray(correct, dtype=float)
    s = np.asarray(score, dtype=float)
    P = y.sum()
    if P == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / P
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _score(g: pd.DataFrame, method: str, rt_score: str = "combined") -> np.ndarray:
    """The method's ranking score; with ``rt_score="confidence"`` R-Tuning is ranked by its answer
    confidence alone (the control: the certainty removed)."""
    if method == "r_tuning" and rt_score == "confidence":
        return g["confidence"].to_numpy(float)
    if rt_score not in ("combined", "confidence"):
        raise ValueError(f"rt_score must be 'combined' or 'confidence', got {rt_score!r}")
    return ranking_score(method, g["confidence"].to_numpy(float),
                         g["p_sure"].to_numpy(float) if method == "r_tuning" else None)


def per_seed_metrics(df: pd.DataFrame, rt_score: str = "combined") -> pd.DataFrame:
    """One row per (seed, split, method): AP (by the method's ranking score), accuracy, refusal rate
    (p(sure) <= 0.5), accuracy on the answered questions and how many were answered (R-Tuning only)."""
    rows = []
    for (seed, split, method), g in df.groupby(["seed", "split", "method"], sort=True):
        correct = g["correct"].to_numpy(bool)
        row = {"seed": seed, "split": split, "method": method, "n": len(g),
               "ap": average_precision_fast(correct, _score(g, method, rt_score)), "accuracy": float(correct.mean()),
               "refusal_rate": np.nan, "answered_accuracy": np.nan, "answered": np.nan}
        if method == "r_tuning":
            answered = g["p_sure"].to_numpy(float) > 0.5
            row.update(refusal_rate=float(1 - answered.mean()), answered=int(answered.sum()),
                       answered_accuracy=float(correct[answered].mean()) if answered.any() else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def ap_by_seed(df: pd.DataFrame, split: str, rt_score: str = "combined") -> pd.DataFrame:
    """Per seed (index) the AP of each method (columns ``vanilla``, ``r_tuning``) on ``split``."""
    m = per_seed_metrics(df[df["split"] == split], rt_score)
    wide = m.pivot(index="seed", columns="method", values="ap").sort_index()
    missing = {"vanilla", "r_tuning"} - set(wide.columns)
    if missing:
        raise ValueError(f"no {split} results for {sorted(missing)}")
    return wide[["vanilla", "r_tuning"]]


def bootstrap_delta_ap(df: pd.DataFrame, split: str, shared_questions: bool, n_boot: int = N_BOOT,
                       seed: int = 0, level: float = 0.95, rt_score: str = "combined") -> tuple[float, float, float]:
    """Seed-mean dAP with a percentile bootstrap CI over test questions. With ``shared_questions`` (the
    same questions in every seed) one resample of question ids is applied to all seeds; otherwise each
    seed's questions are resampled on their own. Resamples without a correct answer in some run are
    skipped (AP undefined)."""
    d = df[df["split"] == split]
    rng = np.random.default_rng(seed)
    runs = {}
    for (s, method), g in d.groupby(["seed", "method"], sort=True):
        g = g.sort_values("qid")
        runs[(s, method)] = (g["qid"].to_numpy(), g["correct"].to_numpy(bool), _score(g, method, rt_score))
    seeds = sorted({s for s, _ in runs})
    qids = {s: runs[(s, "vanilla")][0] for s in seeds}
    for s in seeds:
        if not np.array_equal(qids[s], runs[(s, "r_tuning")][0]):
            raise ValueError(f"seed {s}: the two methods were evaluated on different questions")
    if shared_questions and any(not np.array_equal(qids[s], qids[seeds[0]]) for s in seeds):
        raise ValueError("shared_questions: the seeds were evaluated on different questions")

    def delta(idx: dict) -> float:
        vals = []
        for s in seeds:
            _, cv, sv = runs[(s, "vanilla")]
            _, cr, sr = runs[(s, "r_tuning")]
            i = idx[s]
            vals.append(average_precision_fast(cr[i], sr[i]) - average_precision_fast(cv[i], sv[i]))
        return float(np.mean(vals))

    point = delta({s: np.arange(len(qids[s])) for s in seeds})
    boots = []
    for _ in range(n_boot):
        if shared_questions:
            i = rng.integers(0, len(qids[seeds[0]]), len(qids[seeds[0]]))
            idx = {s: i for s in seeds}
        else:
            idx = {s: rng.integers(0, len(qids[s]), len(qids[s])) for s in seeds}
        v = delta(idx)
        if np.isfinite(v):
            boots.append(v)
    if len(boots) < n_boot // 2:
        return point, float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def auroc(labels: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outranks a negative); NaN with one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(score, dtype=float)))


# --- measurements -----------------------------------------------------------------------------------------

def delta_ap_measurement(df: pd.DataFrame, split: str, shared_questions: bool, n_boot: int = N_BOOT,
                         rt_score: str = "combined") -> tuple[Measurement, str]:
    """Seed-mean dAP = AP(R-Tuning) - AP(vanilla) on ``split`` with a conservative interval: the union of
    the Student t interval over seeds and the 95% percentile bootstrap over test questions of the seed
    mean (the first ignores question sampling, the second seed variation). No interval if a run answered
    nothing right (AP undefined) or with fewer than 2 seeds."""
    aps = ap_by_seed(df, split, rt_score)
    delta = aps["r_tuning"] - aps["vanilla"]
    unit = "AP(R-Tuning) - AP(vanilla)"
    if delta.isna().any() or len(delta) < 2:
        why = "a run answered no test question correctly (AP undefined)" if delta.isna().any() else "< 2 seeds"
        value = float(delta.mean()) if delta.notna().any() else None
        return Measurement(value, None, None, max(1, len(delta)), f"no interval: {why}", unit=unit), why
    t = seed_measurement(delta.tolist(), unit=unit)
    point, lo, hi = bootstrap_delta_ap(df, split, shared_questions, n_boot, rt_score=rt_score)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return Measurement(float(delta.mean()), None, None, len(delta), "bootstrap failed", unit=unit), "bootstrap failed"
    m = Measurement(float(delta.mean()), min(t.ci_low, lo), max(t.ci_high, hi), len(delta),
                    f"mean over {len(delta)} seeds; union of the Student t interval over seeds and a "
                    f"{n_boot}-resample question bootstrap of the seed mean", unit=unit)
    detail = (f"{split.upper()}: per-seed dAP {', '.join(f'{v:+.4f}' for v in delta)}; t interval "
              f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}], question bootstrap [{lo:+.4f}, {hi:+.4f}]")
    return m, detail


def train_aurocs(fit: pd.DataFrame) -> dict:
    """Per seed, AUROC of the R-Tuning model's p(sure) for the certain label on its own training questions
    (gold answers). ``fit``: one row per (seed, training question) with ``certain`` and ``p_sure``."""
    return {s: auroc(g["certain"].astype(bool), g["p_sure"]) for s, g in fit.groupby("seed", sort=True)}


def train_fit_gate(aurocs: dict) -> Gate:
    """Did each R-Tuning model fit its certainty labels? The gate needs the training AUROC (per seed, see
    :func:`train_aurocs`) >= MIN_TRAIN_AUROC in every seed; an undefined AUROC (one class only) fails."""
    vals = np.array(list(aurocs.values()), dtype=float)
    ok = bool(len(vals) > 0 and np.all(np.isfinite(vals)) and np.all(vals >= MIN_TRAIN_AUROC))
    low = float(np.nanmin(vals)) if np.isfinite(vals).any() else float("nan")
    return Gate(passed=ok, value=low, detail=(f"AUROC of p(sure) for the certain labels on the training questions "
                                             f"by seed: {', '.join(f'{v:.3f}' for v in vals)} (needs >= "
                                             f"{MIN_TRAIN_AUROC} in every seed)"))


def measure_ap(df: pd.DataFrame, gate: Gate, split: str, shared_questions: bool, n_boot: int = N_BOOT):
    m, detail = delta_ap_measurement(df, split, shared_questions, n_boot, "combined")
    c, c_detail = delta_ap_measurement(df, split, shared_questions, n_boot, "confidence")
    return (m, gate,
            Control(c, "R-Tuning ranked by its answer confidence alone (certainty removed) vs vanilla"),
            f"{detail}; control (confidence only): {c_detail}")


def measure_answered_accuracy(df: pd.DataFrame, fit_gate: Gate, splits: tuple[str, ...] = ("id", "ood")):
    """Per split, d = accuracy of R-Tuning on its answered questions (p(sure) > 0.5) - vanilla's accuracy on
    all, t interval over seeds; both splits must hold (interval [lowest lower, lowest upper] bound). Control:
    R-Tuning's accuracy on all its answers - vanilla's (no selection by certainty). Gate: the training
    fit gate and >= MIN_ANSWERED answered questions of each split in every seed."""
    m_all = per_seed_metrics(df)
    per, per_c, parts, answered_ok = {}, {}, [], True
    for split in splits:
        m = m_all[m_all["split"] == split]
        r = m[m["method"] == "r_tuning"].set_index("seed").sort_index()
        v = m[m["method"] == "vanilla"].set_index("seed").sort_index()
        if (r["answered"] < MIN_ANSWERED).any():
            answered_ok = False
        per[split] = seed_measurement((r["answered_accuracy"] - v["accuracy"]).tolist(), unit="accuracy difference")
        per_c[split] = seed_measurement((r["accuracy"] - v["accuracy"]).tolist(), unit="accuracy difference")
        parts.append(f"{split.upper()}: R-Tuning answered {r['answered'].astype(int).tolist()} of {int(r['n'].iloc[0])} "
                     f"per seed, answered-accuracy {r['answered_accuracy'].mean():.3f}, all-answer accuracy "
                     f"{r['accuracy'].mean():.3f}; vanilla accuracy {v['accuracy'].mean():.3f}")
    gate = Gate(passed=fit_gate.passed and answered_ok, value=fit_gate.value,
                detail=fit_gate.detail + f"; R-Tuning answered >= {MIN_ANSWERED} questions of every split in every "
                                     f"seed: {answered_ok}")
    return _worst(per), gate, Control(_worst(per_c), "R-Tuning's accuracy on all its answers (no refusal) - "
                                                     "vanilla's"), "; ".join(parts)


def _worst(per: dict) -> Measurement:
    """"Holds on every split": value = smallest mean, interval [lowest lower bound, lowest upper bound];
    no interval if a split has none."""
    ms = list(per.values())
    unit = ms[0].unit
    value = min((m.value for m in ms if m.value is not None and np.isfinite(m.value)), default=None)
    if any(m.ci_low is None or m.ci_high is None or not np.isfinite(m.ci_low) for m in ms):
        return Measurement(value, None, None, min(m.n for m in ms), "a split has no interval", unit=unit)
    return Measurement(value, min(m.ci_low for m in ms), min(m.ci_high for m in ms), min(m.n for m in ms),
                       f"smallest per-split t interval over seeds ({', '.join(per)})", unit=unit)


def evaluate_all(claims: dict[str, Claim], lm_q: pd.DataFrame, lm_aurocs: dict, syn_q: pd.DataFrame,
                 syn_aurocs: dict, n_boot: int = N_BOOT) -> dict[str, Claim]:
    """Measure and evaluate every registered claim; ``*_aurocs``: per seed, the training AUROC of p(sure)
    for the certain labels (the gates)."""
    lm_gate, syn_gate = train_fit_gate(lm_aurocs), train_fit_gate(syn_aurocs)
    measures = {
        "ap_id_v2": lambda: measure_ap(lm_q, lm_gate, "id", True, n_boot),
        "ap_ood_v2": lambda: measure_ap(lm_q, lm_gate, "ood", True, n_boot),
        "answered_accuracy_v2": lambda: measure_answered_accuracy(lm_q, lm_gate),
        "synthetic_ap_id_v2": lambda: measure_ap(syn_q, syn_gate, "id", False, n_boot),
        "synthetic_ap_ood_v2": lambda: measure_ap(syn_q, syn_gate, "ood", False, n_boot),
    }
    return evaluate_registered(claims, measures)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of the per-seed metrics, per (split, method)."""
    m = per_seed_metrics(df)
    cols = ["ap", "accuracy", "refusal_rate", "answered_accuracy", "answered"]
    return m.groupby(["split", "method"], as_index=False)[cols].mean()
