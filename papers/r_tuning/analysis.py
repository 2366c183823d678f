"""The pre-registered claims, the per-seed metrics and the verdict rules.

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

from shared.metrics import Claim, Measurement
from shared.stats import paired_t_test

from .refusal import ranking_score

ALPHA = 0.05  # one-sided paired t test over seeds
MIN_EFFECT = 0.02  # smallest AP gain of interest: a 95% CI entirely below +0.02 AP refutes "higher AP"
MIN_ANSWERED = 5  # fewer willingly answered questions than this in a seed: accuracy on them is not measured
N_BOOT = 1000

CLAIMS = {
    "ap_id": dict(
        statement="R-Tuning (refusal-aware 'I am sure/unsure' data labelled by the untuned model's own "
                  "correctness) ranks its answers better than vanilla tuning on the same questions: higher "
                  "average precision (AP) on in-domain held-out questions (SmolLM2-135M arm).",
        criterion="Per seed, dAP = AP(R-Tuning, score 0.5*conf + 0.5*p(sure)) - AP(vanilla, score conf) on the "
                  "ID test. Reproduced if mean dAP > 0 with a one-sided paired t test over seeds p < 0.05 AND "
                  "the 95% bootstrap CI over test questions (1000 resamples) of the seed-mean dAP has lower "
                  "bound > 0; not reproduced if that CI's upper bound is < +0.02 (any gain smaller than 2 AP "
                  "points); otherwise (or if a run answers nothing correctly) inconclusive.",
        paper_value="R-Tuning's AP above vanilla's on ParaRel ID for OpenLLaMA-3B, LLaMA-7B and LLaMA-13B "
                    "(paper Sec. 4, single-task results)",
    ),
    "ap_ood": dict(
        statement="The refusal skill transfers: R-Tuning's AP is also higher than vanilla's on questions of "
                  "relation families never seen in tuning (out-of-domain; SmolLM2-135M arm).",
        criterion="As ap_id, on the OOD test (held-out relation families).",
        paper_value="R-Tuning's AP above vanilla's on ParaRel OOD (held-out domains) for all three models "
                    "(paper Sec. 4); refusal is a 'meta-skill' that generalises (Sec. 5)",
    ),
    "answered_accuracy": dict(
        statement="R-Tuning answers the questions it is willing to answer (p(sure) > 0.5) more accurately "
                  "than vanilla tuning answers all questions (SmolLM2-135M arm).",
        criterion="Per seed and split, d = accuracy of R-Tuning on its answered questions - accuracy of "
                  "vanilla on all questions. Reproduced if on both ID and OOD mean d > 0 with a one-sided "
                  "paired t test over seeds p < 0.05; not reproduced if on either split mean d < 0 with "
                  "p < 0.05 (one-sided, less); inconclusive otherwise, or if R-Tuning answers fewer than 5 "
                  "questions of a split in any seed.",
        paper_value="accuracy on willingly answered questions above vanilla's accuracy on all questions "
                    "(paper Sec. 4, ParaRel and the other single-task data sets)",
    ),
    "synthetic_ap_id": dict(
        statement="Mechanism, fully controlled: a tiny GPT pretrained on a synthetic knowledge base of which "
                  "only a subset of facts appears, then R-Tuned, ranks its in-domain answers better (higher "
                  "AP) than the same model vanilla-tuned.",
        criterion="As ap_id, in the synthetic arm (every seed a new world, pretraining and tuning; the "
                  "bootstrap resamples each seed's test questions).",
        paper_value="(our controlled analogue of the paper's ID result; no paper number)",
    ),
    "synthetic_ap_ood": dict(
        statement="In the controlled arm, the AP gain also holds for relations that were pretrained but never "
                  "seen in tuning.",
        criterion="As synthetic_ap_id, on the held-out relations.",
        paper_value="(our controlled analogue of the paper's OOD result; no paper number)",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


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


def _score(g: pd.DataFrame, method: str) -> np.ndarray:
    return ranking_score(method, g["confidence"].to_numpy(float),
                         g["p_sure"].to_numpy(float) if method == "r_tuning" else None)


def per_seed_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, split, method): AP (by the method's ranking score), accuracy, refusal rate
    (p(sure) <= 0.5), accuracy on the answered questions and how many were answered (R-Tuning only)."""
    rows = []
    for (seed, split, method), g in df.groupby(["seed", "split", "method"], sort=True):
        correct = g["correct"].to_numpy(bool)
        row = {"seed": seed, "split": split, "method": method, "n": len(g),
               "ap": average_precision_fast(correct, _score(g, method)), "accuracy": float(correct.mean()),
               "refusal_rate": np.nan, "answered_accuracy": np.nan, "answered": np.nan}
        if method == "r_tuning":
            answered = g["p_sure"].to_numpy(float) > 0.5
            row.update(refusal_rate=float(1 - answered.mean()), answered=int(answered.sum()),
                       answered_accuracy=float(correct[answered].mean()) if answered.any() else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def ap_by_seed(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per seed (index) the AP of each method (columns ``vanilla``, ``r_tuning``) on ``split``."""
    m = per_seed_metrics(df[df["split"] == split])
    wide = m.pivot(index="seed", columns="method", values="ap").sort_index()
    missing = {"vanilla", "r_tuning"} - set(wide.columns)
    if missing:
        raise ValueError(f"no {split} results for {sorted(missing)}")
    return wide[["vanilla", "r_tuning"]]


def bootstrap_delta_ap(df: pd.DataFrame, split: str, shared_questions: bool, n_boot: int = N_BOOT,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Seed-mean dAP with a percentile bootstrap CI over test questions. With ``shared_questions`` (the
    same questions in every seed) one resample of question ids is applied to all seeds; otherwise each
    seed's questions are resampled on their own. Resamples without a correct answer in some run are
    skipped (AP undefined)."""
    d = df[df["split"] == split]
    rng = np.random.default_rng(seed)
    runs = {}
    for (s, method), g in d.groupby(["seed", "method"], sort=True):
        g = g.sort_values("qid")
        runs[(s, method)] = (g["qid"].to_numpy(), g["correct"].to_numpy(bool), _score(g, method))
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


# --- verdict rules ---------------------------------------------------------------------------------------

def decide_ap(claim: Claim, df: pd.DataFrame, split: str, shared_questions: bool, n_boot: int = N_BOOT) -> Claim:
    """dAP > 0: paired t over seeds and a bootstrap over questions must both exclude 0 (see CLAIMS)."""
    aps = ap_by_seed(df, split)
    delta = aps["r_tuning"] - aps["vanilla"]
    if delta.isna().any() or len(delta) < 2:
        m = Measurement(float(delta.mean()) if delta.notna().any() else None, None, None, max(1, len(delta)),
                        "mean over seeds", unit="AP difference")
        why = "a run answered no test question correctly (AP undefined)" if delta.isna().any() else "< 2 seeds"
        return claim.decide(m, "inconclusive", why)
    greater = paired_t_test(aps["r_tuning"].to_numpy(), aps["vanilla"].to_numpy(), "greater")
    point, lo, hi = bootstrap_delta_ap(df, split, shared_questions, n_boot)
    m = Measurement(float(delta.mean()), greater.ci_low, greater.ci_high, len(delta),
                    f"mean over {len(delta)} seeds, Student t interval", unit="AP(R-Tuning) - AP(vanilla)")
    if point > 0 and greater.pvalue < ALPHA and lo > 0:
        verdict = "reproduced"
    elif np.isfinite(hi) and hi < MIN_EFFECT:
        verdict = "not_reproduced"
    else:
        verdict = "inconclusive"
    detail = (f"{split.upper()}: per-seed dAP {', '.join(f'{v:+.4f}' for v in delta)}; one-sided paired t "
              f"p = {greater.pvalue:.3g}; question bootstrap 95% CI [{lo:+.4f}, {hi:+.4f}] "
              f"(smallest effect of interest +{MIN_EFFECT})")
    return claim.decide(m, verdict, detail)


def decide_answered_accuracy(claim: Claim, df: pd.DataFrame, splits: tuple[str, ...] = ("id", "ood")) -> Claim:
    """Accuracy of R-Tuning on its answered questions vs vanilla's accuracy on all, both splits (CLAIMS)."""
    m_all = per_seed_metrics(df)
    parts, outcomes, worst = [], [], None
    too_few = False
    for split in splits:
        m = m_all[m_all["split"] == split]
        r = m[m["method"] == "r_tuning"].set_index("seed").sort_index()
        v = m[m["method"] == "vanilla"].set_index("seed").sort_index()
        if len(r) < 2:
            too_few = True
            parts.append(f"{split.upper()}: fewer than 2 seeds")
            continue
        if (r["answered"] < MIN_ANSWERED).any():
            too_few = True
            parts.append(f"{split.upper()}: R-Tuning answered {r['answered'].astype(int).tolist()} questions "
                         f"per seed (needs >= {MIN_ANSWERED} in every seed)")
            continue
        d = r["answered_accuracy"] - v["accuracy"]
        greater = paired_t_test(r["answered_accuracy"].to_numpy(), v["accuracy"].to_numpy(), "greater")
        less = paired_t_test(r["answered_accuracy"].to_numpy(), v["accuracy"].to_numpy(), "less")
        outcomes.append("greater" if greater.pvalue < ALPHA else ("less" if less.pvalue < ALPHA else "none"))
        meas = Measurement(float(d.mean()), greater.ci_low, greater.ci_high, len(d),
                           f"{split.upper()}: mean over {len(d)} seeds, Student t interval",
                           unit="answered accuracy (R-Tuning) - accuracy (vanilla)")
        if worst is None or meas.value < worst.value:
            worst = meas
        parts.append(f"{split.upper()}: R-Tuning answered-accuracy {r['answered_accuracy'].mean():.3f} "
                     f"(answered {r['answered'].mean():.1f} of {r['n'].iloc[0]}) vs vanilla accuracy "
                     f"{v['accuracy'].mean():.3f}; d = {d.mean():+.3f}, p(greater) = {greater.pvalue:.3g}")
    if worst is None:
        worst = Measurement(None, None, None, 1, "not measured", unit="accuracy difference")
    if "less" in outcomes:
        verdict = "not_reproduced"
    elif not too_few and outcomes and all(o == "greater" for o in outcomes):
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    return claim.decide(worst, verdict, "; ".join(parts))


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of the per-seed metrics, per (split, method)."""
    m = per_seed_metrics(df)
    cols = ["ap", "accuracy", "refusal_rate", "answered_accuracy", "answered"]
    return m.groupby(["split", "method"], as_index=False)[cols].mean()
