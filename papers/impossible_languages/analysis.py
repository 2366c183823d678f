"""Aggregation over seeds and the measurements behind the registered claims (``claims.yaml``; the
verdicts come from ``shared.claims``).

The input is the curve table of :func:`.experiment.run_grid`: one row per (language, seed, checkpoint step;
step 0 = the model as initialised) with ``log_ppl`` (ln geometric-mean perplexity, whole-sentence scoring)
and, for *Hop languages, ``marker_surprisal`` and ``surprisal_difference`` (bits). Every claim compares
languages at the final checkpoint, paired by seed (same initial weights and data order within a family),
with a Student t interval over seeds. Each ``measure_*`` function returns ``(Measurement, Gate, Control,
detail)`` for :meth:`shared.claims.Claim.evaluate`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from shared.claims import Control, Gate, evaluate_registered
from shared.metrics import Measurement
from shared.stats import t_interval

UNIGRAM_MARGIN = 0.1  # perplexity gates: ln ppl at least this far below the unigram model's, every seed
NOHOP_GATE_BITS = 1.0  # nohop_marker_learned_best_v2 gate: D(NoHop) above this in every seed
MARKER_GATE_BITS = 1.0  # hop_markers_learned_v2 gate: marker surprisal this far below its unigram surprisal

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


def initial_checkpoint(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows of step 0 (every model as initialised, before training): the random-init control."""
    return curves[curves["step"] == 0].reset_index(drop=True)


def weakest_gap(gaps: pd.DataFrame, boundary: float, what: str, unit: str) -> Measurement:
    """One measurement for "every gap lies above ``boundary``": the pair whose interval falls short by
    the most if any falls short (smallest upper end), else the pair with the smallest lower end. With that
    choice the shared rule gives: all beyond -> beyond; any short -> short; otherwise straddles."""
    if gaps.empty or gaps["ci_low"].isna().any():
        return Measurement(None, None, None, max(int(gaps["seeds"].min()) if len(gaps) else 1, 1),
                           f"{what}: no interval (a pair was not run or has one seed)", unit=unit)
    short = gaps[gaps["ci_high"] < boundary]
    row = short.loc[short["ci_high"].idxmin()] if len(short) else gaps.loc[gaps["ci_low"].idxmin()]
    n = int(row["seeds"])
    name = (f"{LANGUAGES[row['minuend']].name} - {LANGUAGES[row['subtrahend']].name}"
            if row["minuend"] != row["subtrahend"] else LANGUAGES[row["minuend"]].name)
    return Measurement(float(row["mean"]), float(row["ci_low"]), float(row["ci_high"]), n,
                       f"{what}, weakest pair ({name}), paired by seed, Student t interval over {n} seeds",
                       unit=unit)


def _describe(gaps: pd.DataFrame) -> str:
    return "; ".join(f"{LANGUAGES[r.minuend].name}"
                     + (f" - {LANGUAGES[r.subtrahend].name}" if r.minuend != r.subtrahend else "")
                     + f": {r.mean:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]" for r in gaps.itertuples())


def _pairs(final: pd.DataFrame, family: str, anchor: str, anchor_first: bool) -> list[tuple[str, str]]:
    languages = sorted(set(final["language"]), key=list(LANGUAGES).index)
    if anchor not in languages:
        return []
    others = [lang for lang in family_members(languages, family) if lang != anchor]
    return [(anchor, lang) if anchor_first else (lang, anchor) for lang in others]


def unigram_final(final: pd.DataFrame, unigram: dict[str, float]) -> pd.DataFrame:
    """The control arm: the unigram model's ln perplexity per language, repeated for every seed of the
    final table (it does not depend on the seed), as a table like ``final``."""
    rows = final[["language", "seed", "step"]].copy()
    rows["log_ppl"] = rows["language"].map(unigram)
    return rows


def unigram_gate(final: pd.DataFrame, unigram: dict[str, float], languages: Sequence[str]) -> Gate:
    """The models of ``languages`` learned more than token frequencies: in every seed their ln perplexity
    is at least UNIGRAM_MARGIN below the unigram model's on the same sentences."""
    sel = final[final["language"].isin(list(languages))]
    if sel.empty:
        return Gate(False, f"none of {', '.join(languages)} was run")
    margin = sel["language"].map(unigram).astype(float) - sel["log_ppl"].astype(float)
    worst = sel.loc[margin.idxmin()]
    low = float(margin.min())
    return Gate(bool(low >= UNIGRAM_MARGIN), f"smallest margin under the unigram model {low:.3f} ln "
                f"({LANGUAGES[worst['language']].name}, seed {int(worst['seed'])}; needs >= {UNIGRAM_MARGIN} "
                f"for {', '.join(LANGUAGES[k].name for k in languages)})", low)


def measure_perplexity_claim(final: pd.DataFrame, unigram: dict[str, float], family: str, anchor: str,
                             anchor_first: bool, boundary: float, gate_languages: Sequence[str]):
    """ln ppl gaps paired by seed: ``anchor - L`` (``anchor_first``) or ``L - anchor`` for every other
    language L of ``family``; the control is the same gaps of the unigram models; the gate asks the models
    of ``gate_languages`` to beat the unigram model."""
    pairs = _pairs(final, family, anchor, anchor_first)
    unit = "ln perplexity ratio"
    gaps = gap_table(final, pairs)
    control_gaps = gap_table(unigram_final(final, unigram), pairs)
    m = weakest_gap(gaps, boundary, "ln ppl gap, whole-sentence scoring", unit)
    c = weakest_gap(control_gaps, boundary, "unigram models", unit)
    detail = f"trained: {_describe(gaps)}; unigram control: {_describe(control_gaps)}"
    return m, unigram_gate(final, unigram, gate_languages), Control(c, "unigram model of each language's training "
                                                               "stream (sees no word order)"), detail


def measure_nohop_best(final: pd.DataFrame, initial: pd.DataFrame, boundary: float):
    """Surprisal difference D(NoHop) - D(L) for TokenHop and WordHop (bits); control: the same at step 0."""
    pairs = _pairs(final, "hop", "no_hop", anchor_first=True)
    gaps = gap_table(final, pairs, "surprisal_difference")
    init_gaps = gap_table(initial, pairs, "surprisal_difference")
    m = weakest_gap(gaps, boundary, "D(NoHop) - D(L)", "bits")
    c = weakest_gap(init_gaps, boundary, "models as initialised", "bits")
    d = final[final["language"] == "no_hop"]["surprisal_difference"]
    low = float(d.min()) if len(d) else float("nan")
    gate = Gate(bool(len(d) and low > NOHOP_GATE_BITS), f"D(NoHop) per seed "
                f"{', '.join(f'{v:.2f}' for v in d)} bits (needs > {NOHOP_GATE_BITS} in every seed)",
                None if np.isnan(low) else low)
    detail = f"final: {_describe(gaps)}; as initialised: {_describe(init_gaps)}"
    return m, gate, Control(c, "every *Hop model as initialised (step 0)"), detail


def _d_table(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for lang in ("no_hop", "token_hop", "word_hop"):
        if "surprisal_difference" not in table.columns:
            break
        d = table[table["language"] == lang]["surprisal_difference"].dropna()
        if d.empty:
            continue
        mean, lo, hi = t_interval(d.tolist())
        rows.append({"minuend": lang, "subtrahend": lang, "metric": "surprisal_difference", "seeds": len(d),
                     "mean": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["minuend", "subtrahend", "metric", "seeds", "mean", "ci_low", "ci_high"])


def measure_markers_learned(final: pd.DataFrame, initial: pd.DataFrame, marker_unigram_bits: dict[str, float],
                            boundary: float):
    """The surprisal difference D of every *Hop language (bits); gate: every model's marker surprisal is at
    least MARKER_GATE_BITS below the marker's unigram surprisal; control: D at step 0."""
    gaps, init_gaps = _d_table(final), _d_table(initial)
    m = weakest_gap(gaps, boundary, "surprisal difference D", "bits")
    c = weakest_gap(init_gaps, boundary, "models as initialised", "bits")
    hop = final[final["language"].isin(["no_hop", "token_hop", "word_hop"])]
    margin = hop["language"].map(marker_unigram_bits) - hop["marker_surprisal"]
    if margin.empty or margin.isna().all():
        gate = Gate(False, "no *Hop language was run")
    else:
        worst = hop.loc[margin.idxmin()]
        low = float(margin.min())
        per_lang = hop.assign(margin=margin).groupby("language")["margin"].min()
        gate = Gate(bool(low >= MARKER_GATE_BITS),
                    f"marker surprisal below its unigram surprisal by at least {low:.2f} bits "
                    f"({LANGUAGES[worst['language']].name}, seed {int(worst['seed'])}); smallest margin per "
                    f"language: " + ", ".join(f"{LANGUAGES[k].name} {v:.2f}" for k, v in per_lang.items())
                    + f" (needs >= {MARKER_GATE_BITS} bits in every model)", low)
    detail = f"final: {_describe(gaps)}; as initialised: {_describe(init_gaps)}"
    return m, gate, Control(c, "every *Hop model as initialised (step 0)"), detail


def evaluate_claims(claims: dict, curves: pd.DataFrame, unigram: dict[str, float],
                    marker_unigram_bits: dict[str, float]) -> dict:
    """Evaluate every registered claim (``load_claims("impossible_languages")``) in place."""
    final, initial = final_checkpoint(curves), initial_checkpoint(curves)
    shuffles = [k for k in LANGUAGES if LANGUAGES[k].family == "shuffle" and k in set(final["language"])]
    makers = {
        "shuffle_control_easiest_v2": lambda b: measure_perplexity_claim(
            final, unigram, "shuffle", "no_shuffle", False, b, ["no_shuffle"]),
        "nondeterministic_shuffle_hardest_v2": lambda b: measure_perplexity_claim(
            final, unigram, "shuffle", "nondeterministic_shuffle", True, b, shuffles),
        "reverse_control_easiest_v2": lambda b: measure_perplexity_claim(
            final, unigram, "reverse", "no_reverse", False, b, ["no_reverse"]),
        "nohop_marker_learned_best_v2": lambda b: measure_nohop_best(final, initial, b),
        "hop_markers_learned_v2": lambda b: measure_markers_learned(final, initial, marker_unigram_bits, b),
    }
    # each maker takes its claim's rule boundary; called only once every id is known to be registered
    return evaluate_registered(claims, {cid: (lambda make=make, cid=cid: make(claims[cid].rule.boundary))
                                        for cid, make in makers.items()})


def language_summary(final: pd.DataFrame) -> pd.DataFrame:
    """Per language: mean and t interval over seeds of the final perplexity (and *Hop surprisals)."""
    rows = []
    for lang in [lang for lang in LANGUAGES if lang in set(final["language"])]:
        g = final[final["language"] == lang]
        mean, lo, hi = t_interval(g["log_ppl"].tolist())
        row = {"language": lang, "name": LANGUAGES[lang].name, "family": LANGUAGES[lang].family,
               "seeds": len(g), "perplexity": float(np.exp(mean)), "ppl_ci_low": float(np.exp(lo)),
               "ppl_ci_high": float(np.exp(hi))}
        for col, name in (("log_ppl_no_end", "perplexity_end_unscored"),
                          ("log_ppl_first_unscored", "perplexity_first_and_end_unscored")):
            if col in g.columns:
                row[name] = float(np.exp(g[col].mean()))
        has_hop = "surprisal_difference" in g.columns and g["surprisal_difference"].notna().any()
        if has_hop:
            row["marker_surprisal"] = float(g["marker_surprisal"].mean())
            row["surprisal_difference"] = float(g["surprisal_difference"].mean())
        rows.append(row)
    return pd.DataFrame(rows)
