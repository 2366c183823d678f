"""Aggregation over seeds and the verdict rules of the pre-registered claims.

The input is the curve table of :func:`.experiment.run_grid`: one row per (language, seed, checkpoint step)
with ``log_ppl`` (ln geometric-mean perplexity) and, for *Hop languages, ``marker_surprisal`` and
``surprisal_difference`` (bits). Every claim compares languages at the final checkpoint, paired by seed
(same initial weights and data order within a family), with a Student t interval over seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from shared.metrics import Claim, Measurement
from shared.stats import t_interval

from .perturbations import CONTROLS, LANGUAGES, family_members


def final_checkpoint(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows of the last evaluated step of every (language, seed)."""
    last = curves.groupby(["language", "seed"])["step"].transform("max")
    return curves[curves["step"] == last].reset_index(drop=True)


def paired_gaps(final: pd.DataFrame, minuend: str, subtrahend: str, metric: str = "log_ppl") -> pd.Series:
    """Per seed: metric(minuend) - metric(subtrahend), over the seeds both languages have."""
    a = final[final["language"] == minuend].set_index("seed")[metric]
    b = final[final["language"] == subtrahend].set_index("seed")[metric]
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).sort_index()


def gap_table(final: pd.DataFrame, pairs: Sequence[tuple[str, str]], metric: str = "log_ppl") -> pd.DataFrame:
    """Mean and 95% t interval over seeds of each (minuend - subtrahend) gap."""
    rows = []
    for a, b in pairs:
        d = paired_gaps(final, a, b, metric)
        if d.empty:
            continue
        mean, lo, hi = t_interval(d.tolist())
        rows.append({"minuend": a, "subtrahend": b, "metric": metric, "seeds": len(d), "mean": mean,
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["minuend", "subtrahend", "metric", "seeds", "mean", "ci_low", "ci_high"])


def verdict_all_positive(gaps: pd.DataFrame) -> str:
    """reproduced if every interval lies above 0, not_reproduced if any lies below 0, else inconclusive.
    An interval that is undefined (one seed) counts as not excluding 0."""
    if gaps.empty:
        return "inconclusive"
    lo, hi = gaps["ci_low"].to_numpy(float), gaps["ci_high"].to_numpy(float)
    if np.any(hi < 0):
        return "not_reproduced"
    if np.all(lo > 0):
        return "reproduced"
    return "inconclusive"


def _decide_from_gaps(claim: Claim, gaps: pd.DataFrame, unit: str, what: str) -> Claim:
    if gaps.empty:
        m = Measurement(None, None, None, 1, "no pair of languages of this claim was run", unit=unit)
        return claim.decide(m, "inconclusive", f"{what}: not run in this profile")
    weakest = gaps.loc[gaps["mean"].idxmin()]
    ci_lo = None if np.isnan(weakest["ci_low"]) else float(weakest["ci_low"])
    ci_hi = None if np.isnan(weakest["ci_high"]) else float(weakest["ci_high"])
    n = int(weakest["seeds"])
    m = Measurement(float(weakest["mean"]), ci_lo, ci_hi, n,
                    f"smallest mean gap over the pairs ({weakest['minuend']} - {weakest['subtrahend']}), "
                    f"paired by seed, Student t interval over {n} seeds", unit=unit)
    parts = [f"{LANGUAGES[r.minuend].name} - {LANGUAGES[r.subtrahend].name}: {r.mean:+.4f} "
             f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]" for r in gaps.itertuples()]
    return claim.decide(m, verdict_all_positive(gaps), f"{what}; " + "; ".join(parts))


def decide_control_easiest(claim: Claim, final: pd.DataFrame, family: str) -> Claim:
    """Each impossible language of ``family`` minus the family's control, in ln perplexity."""
    control = CONTROLS[family]
    languages = sorted(set(final["language"]), key=list(LANGUAGES).index)
    others = [lang for lang in family_members(languages, family) if lang != control]
    gaps = gap_table(final, [(lang, control) for lang in others]) if control in languages else pd.DataFrame()
    return _decide_from_gaps(claim, gaps, "ln perplexity ratio",
                             f"ln ppl(L) - ln ppl({LANGUAGES[control].name}), final checkpoint")


def decide_hardest(claim: Claim, final: pd.DataFrame, hardest: str = "nondeterministic_shuffle") -> Claim:
    """``hardest`` minus every other language of its family, in ln perplexity."""
    family = LANGUAGES[hardest].family
    languages = sorted(set(final["language"]), key=list(LANGUAGES).index)
    others = [lang for lang in family_members(languages, family) if lang != hardest]
    gaps = gap_table(final, [(hardest, lang) for lang in others]) if hardest in languages else pd.DataFrame()
    return _decide_from_gaps(claim, gaps, "ln perplexity ratio",
                             f"ln ppl({LANGUAGES[hardest].name}) - ln ppl(L), final checkpoint")


def decide_nohop_best(claim: Claim, final: pd.DataFrame) -> Claim:
    """Surprisal difference of NoHop minus that of TokenHop and of WordHop (bits)."""
    languages = set(final["language"])
    others = [lang for lang in ("token_hop", "word_hop") if lang in languages]
    gaps = (gap_table(final, [("no_hop", lang) for lang in others], "surprisal_difference")
            if "no_hop" in languages else pd.DataFrame())
    return _decide_from_gaps(claim, gaps, "bits", "surprisal difference D(NoHop) - D(L), final checkpoint")


def decide_markers_learned(claim: Claim, final: pd.DataFrame) -> Claim:
    """The surprisal difference of each *Hop language against 0 (bits)."""
    rows = []
    for lang in ("no_hop", "token_hop", "word_hop"):
        if "surprisal_difference" not in final.columns:
            break
        d = final[final["language"] == lang]["surprisal_difference"].dropna()
        if d.empty:
            continue
        mean, lo, hi = t_interval(d.tolist())
        rows.append({"minuend": lang, "subtrahend": lang, "metric": "surprisal_difference", "seeds": len(d),
                     "mean": mean, "ci_low": lo, "ci_high": hi})
    gaps = pd.DataFrame(rows)
    if gaps.empty:
        return _decide_from_gaps(claim, gaps, "bits", "surprisal difference D")
    weakest = gaps.loc[gaps["mean"].idxmin()]
    n = int(weakest["seeds"])
    m = Measurement(float(weakest["mean"]), None if np.isnan(weakest["ci_low"]) else float(weakest["ci_low"]),
                    None if np.isnan(weakest["ci_high"]) else float(weakest["ci_high"]), n,
                    f"smallest mean surprisal difference ({LANGUAGES[weakest['minuend']].name}), Student t "
                    f"interval over {n} seeds", unit="bits")
    parts = [f"{LANGUAGES[r.minuend].name}: {r.mean:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
             for r in gaps.itertuples()]
    return claim.decide(m, verdict_all_positive(gaps), "surprisal difference D, final checkpoint; "
                        + "; ".join(parts))


def language_summary(final: pd.DataFrame) -> pd.DataFrame:
    """Per language: mean and t interval over seeds of the final perplexity (and *Hop surprisals)."""
    rows = []
    for lang in [lang for lang in LANGUAGES if lang in set(final["language"])]:
        g = final[final["language"] == lang]
        mean, lo, hi = t_interval(g["log_ppl"].tolist())
        row = {"language": lang, "name": LANGUAGES[lang].name, "family": LANGUAGES[lang].family,
               "seeds": len(g), "perplexity": float(np.exp(mean)), "ppl_ci_low": float(np.exp(lo)),
               "ppl_ci_high": float(np.exp(hi))}
        if "log_ppl_first_unscored" in g.columns:
            row["perplexity_first_unscored"] = float(np.exp(g["log_ppl_first_unscored"].mean()))
        has_hop = "surprisal_difference" in g.columns and g["surprisal_difference"].notna().any()
        if has_hop:
            row["marker_surprisal"] = float(g["marker_surprisal"].mean())
            row["surprisal_difference"] = float(g["surprisal_difference"].mean())
        rows.append(row)
    return pd.DataFrame(rows)
