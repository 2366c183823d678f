"""DeconfoundLM (Loghmani 2025, arXiv 2506.00152) at toy scale: a synthetic observational headline corpus
with a known confounder, reward models fit on frozen sentence embeddings, and best-of-N alignment scored on
the exact interventional outcome.

Our reading of the paper (its tables were not readable offline; see the README): observational outcomes
Y (clicks) depend on the text x and on a context C (posting slot / audience) that also shifts which texts are
written, so a reward r(x) ~ E[Y | x] fit on observational data absorbs C's effect into the text attributes
that co-vary with C. DeconfoundLM partials the known confounder out before fitting the reward, here by the
cross-fitted residual-on-residual (Robinson / double-ML partially linear) regression

    Y - E[Y | C]  ~  theta . (phi(x) - E[phi(x) | C])          (nuisances fit on the other folds)

with phi the MiniLM sentence embedding, and r(x) = theta . phi(x). The "policy" is best-of-N selection from a
template sampler (the reduced stand-in for RL / DPO fine-tuning); its value is the true interventional
outcome E_C[P(Y = 1 | do(x), C)], computed exactly from the generator.

Everything here is numpy / scikit-learn; the notebook only calls these functions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

# --- the headline templates ------------------------------------------------------------------------------

ATTRIBUTES = ("question", "number", "emotional", "sports", "long")  # the binary text attributes a
SPURIOUS = "sports"  # the attribute the confounder drives; its causal effect is 0
SPORTS_SUBJECTS = ("the local football team", "a star tennis player", "the city marathon",
                   "the basketball league", "a young swimmer", "the cycling race")
OTHER_SUBJECTS = ("the local bakery", "a new phone app", "the city library",
                  "the housing market", "a young chef", "the electric car maker")
EMOTIONAL_WORDS = ("shocking", "heartbreaking", "amazing")
NUMBERS = (3, 7, 10)
LONG_SUFFIX = ", according to readers and experts across the region this week"
ARMS = ("naive", "with_c", "deconfound", "oracle")  # the reward models


def headline(question: int, number: int, emotional: int, sports: int, long: int, subject: int,
             emo_variant: int = 0, num_variant: int = 0) -> str:
    """One templated headline. The attributes are binary; ``subject`` indexes the topic's subject list
    (index-matched across topics so a topic flip changes only the subject); the variants pick the emotional
    word and the number when those attributes are on."""
    subj = (SPORTS_SUBJECTS if sports else OTHER_SUBJECTS)[subject]
    adj = f"{EMOTIONAL_WORDS[emo_variant]} " if emotional else ""
    if number:
        core = f"{NUMBERS[num_variant]} {adj}facts about {subj}"
        text = f"Do you know these {core}" if question else core[0].upper() + core[1:]
    else:
        text = f"What is the {adj}news about {subj}" if question else f"{adj}news about {subj}"
        text = text[0].upper() + text[1:]
    if long:
        text += LONG_SUFFIX
    return text + ("?" if question else "")


def template_table() -> pd.DataFrame:
    """Every distinct headline: one row per (attributes, subject, variants), with its text. Variants exist
    only where the attribute is on (768 headlines)."""
    rows = []
    for bits in itertools.product((0, 1), repeat=len(ATTRIBUTES)):
        a = dict(zip(ATTRIBUTES, bits))
        for subject in range(len(SPORTS_SUBJECTS)):
            for ev in range(len(EMOTIONAL_WORDS) if a["emotional"] else 1):
                for nv in range(len(NUMBERS) if a["number"] else 1):
                    rows.append({**a, "subject": subject, "emo_variant": ev, "num_variant": nv,
                                 "text": headline(**a, subject=subject, emo_variant=ev, num_variant=nv)})
    return pd.DataFrame(rows)


def flip_pairs(templates: pd.DataFrame, attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (off, on) of headlines identical except for ``attribute`` (for emotional / number, the
    'on' side takes every variant, so one 'off' headline pairs with each of them)."""
    keys = [c for c in list(ATTRIBUTES) + ["subject", "emo_variant", "num_variant"] if c != attribute]
    if attribute == "emotional":
        keys.remove("emo_variant")
    if attribute == "number":
        keys.remove("num_variant")
    t = templates.reset_index(drop=True).assign(_i=np.arange(len(templates)))
    off = t[t[attribute] == 0][keys + ["_i"]]
    on = t[t[attribute] == 1][keys + ["_i"]]
    m = on.merge(off, on=keys, suffixes=("_on", "_off"))
    return m["_i_off"].to_numpy(), m["_i_on"].to_numpy()


# --- the data-generating process -------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """The structural model. C ~ Bernoulli(p_c); the spurious attribute s ~ Bernoulli(0.5 + strength (C - 1/2))
    (``strength`` = P(s=1 | C=1) - P(s=1 | C=0) in [0, 1]); the other attributes ~ Bernoulli(0.5) independent
    of C; variants uniform; Y ~ Bernoulli(sigmoid(b0 + beta . a + gamma C)) with beta_sports = 0."""

    b0: float = -1.0
    beta: tuple[float, ...] = (0.5, 0.8, 0.6, 0.0, -0.4)  # in ATTRIBUTES order
    gamma: float = 1.5
    p_c: float = 0.5

    def logit(self, a: np.ndarray, c: np.ndarray | float) -> np.ndarray:
        return self.b0 + a @ np.asarray(self.beta, float) + self.gamma * c

    def true_utility(self, a: np.ndarray) -> np.ndarray:
        """E_C[P(Y = 1 | do(x), C)] for attribute rows a (n, 5): C keeps its marginal, the text is set."""
        return ((1 - self.p_c) * sigmoid(self.logit(a, 0.0)) + self.p_c * sigmoid(self.logit(a, 1.0)))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sample_template_ids(templates: pd.DataFrame, n: int, rng: np.random.Generator,
                        c: np.ndarray | None = None, strength: float = 0.0) -> np.ndarray:
    """Headline ids drawn from the template sampler: attributes ~ Bernoulli(0.5), except the spurious one,
    which follows P(s = 1 | C) = 0.5 + strength (C - 1/2) when ``c`` is given; then a subject and variants
    uniformly. Returns (n,) row indices of ``templates``."""
    a = rng.integers(0, 2, size=(n, len(ATTRIBUTES)))
    if c is not None:
        p_s = 0.5 + strength * (np.asarray(c) - 0.5)
        a[:, ATTRIBUTES.index(SPURIOUS)] = (rng.random(n) < p_s).astype(int)
    subject = rng.integers(0, len(SPORTS_SUBJECTS), n)
    ev = np.where(a[:, 2] == 1, rng.integers(0, len(EMOTIONAL_WORDS), n), 0)
    nv = np.where(a[:, 1] == 1, rng.integers(0, len(NUMBERS), n), 0)
    key_cols = list(ATTRIBUTES) + ["subject", "emo_variant", "num_variant"]
    lookup = {tuple(r): i for i, r in enumerate(templates[key_cols].to_numpy().tolist())}
    keys = np.column_stack([a, subject, ev, nv]).tolist()
    return np.array([lookup[tuple(k)] for k in keys], dtype=int)


@dataclass
class Observations:
    """One data set: headline ids (n,), confounder C (n,), outcome Y (n,)."""

    ids: np.ndarray
    c: np.ndarray
    y: np.ndarray


def sample_observations(world: World, templates: pd.DataFrame, n: int, strength: float,
                        rng: np.random.Generator) -> Observations:
    """n observational rows: C, then the headline given C (confounded at ``strength``), then Y given
    (headline, C). ``strength = 0`` is the randomised (A/B) design: the text is independent of C."""
    c = (rng.random(n) < world.p_c).astype(int)
    ids = sample_template_ids(templates, n, rng, c=c, strength=strength)
    a = templates[list(ATTRIBUTES)].to_numpy()[ids]
    y = (rng.random(n) < sigmoid(world.logit(a, c))).astype(float)
    return Observations(ids, c, y)


# --- reward models ---------------------------------------------------------------------------------------

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


@dataclass
class RidgeFit:
    """A ridge fit with an unpenalised intercept: y ~ intercept + X @ coef."""

    coef: np.ndarray
    intercept: float
    alpha: float
    loo_mse: np.ndarray  # (len(alphas),) leave-one-out mean squared error per penalty


def ridge_loo(X: np.ndarray, y: np.ndarray, alphas=RIDGE_ALPHAS) -> RidgeFit:
    """Ridge regression with the penalty chosen by exact leave-one-out error on the arm's own target (never on
    the evaluation criterion). With Xc = X - mean and Xc^T Xc = V diag(e) V^T, Z = Xc V, the hat matrix is
    11^T/n + Z diag(1/(e+a)) Z^T, so the LOO residual is r_i / (1 - h_ii) (Hastie, Tibshirani & Friedman, ESL
    eq. 7.52 for linear smoothers). One eigendecomposition of the (d, d) Gram matrix serves every penalty
    (faster than an SVD of the (n, d) design on this CPU); scikit-learn's RidgeCV gives the same fit."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n = len(y)
    xm, ym = X.mean(0), y.mean()
    Xc, yc = X - xm, y - ym
    e, V = np.linalg.eigh(Xc.T @ Xc)
    e = np.clip(e, 0.0, None)
    Z = Xc @ V  # (n, d)
    zty = Z.T @ yc
    Z2 = Z**2
    loo = np.empty(len(alphas))
    for k, a in enumerate(alphas):
        w = 1.0 / (e + a)
        resid = yc - Z @ (w * zty)
        h = Z2 @ w + 1.0 / n
        loo[k] = float(np.mean((resid / (1.0 - h)) ** 2))
    best = int(np.argmin(loo))
    a = alphas[best]
    coef = V @ (zty / (e + a))
    return RidgeFit(coef, float(ym - xm @ coef), float(a), loo)


def _ridge(X: np.ndarray, y: np.ndarray) -> RidgeFit:
    return ridge_loo(X, y)


def fit_naive(features: np.ndarray, obs: Observations) -> np.ndarray:
    """r(x) ~ E[Y | x]: ridge of Y on phi(x) (linear probability model). Returns theta (d,)."""
    return _ridge(features[obs.ids], obs.y).coef


def fit_with_c(features: np.ndarray, obs: Observations) -> np.ndarray:
    """'Naively add the confounder as an input': ridge of Y on [phi(x), C]; at use time C is fixed at its
    mean, which for a linear model shifts every reward by the same constant, so only theta_x is returned."""
    X = np.column_stack([features[obs.ids], obs.c])
    return _ridge(X, obs.y).coef[:-1]


def cross_fit_residuals(X: np.ndarray, y: np.ndarray, c: np.ndarray, n_folds: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Residuals X - E[X | C] and y - E[y | C] with the conditional means (group means over C's levels, the
    saturated regression on a discrete C) fit on the other folds (cross-fitting). A level absent from the
    other folds falls back to their overall mean."""
    n = len(y)
    fold = rng.permutation(np.arange(n) % n_folds)
    Xr, yr = np.empty_like(X, dtype=float), np.empty(n, dtype=float)
    for k in range(n_folds):
        tr, te = fold != k, fold == k
        for level in np.unique(c[te]):
            src = tr & (c == level)
            if not src.any():
                src = tr
            sel = te & (c == level)
            Xr[sel] = X[sel] - X[src].mean(0)
            yr[sel] = y[sel] - y[src].mean()
    return Xr, yr


def fit_deconfound(features: np.ndarray, obs: Observations, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """DeconfoundLM's reward (our reading: partial the known confounder out of both the outcome and the text
    representation, cross-fitted, then regress residual on residual). Returns theta (d,)."""
    Xr, yr = cross_fit_residuals(features[obs.ids], obs.y, obs.c, n_folds, rng)
    return _ridge(Xr, yr).coef


# --- evaluation ------------------------------------------------------------------------------------------

def all_flip_pairs(templates: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {attr: flip_pairs(templates, attr) for attr in ATTRIBUTES}


def attribute_effects(rewards: np.ndarray, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Per attribute, the mean reward change when only that attribute is flipped on (counterfactual probe
    over every matched headline pair, ``pairs`` from :func:`all_flip_pairs`). ``rewards``: (n_templates,)."""
    return {attr: float(np.mean(rewards[on] - rewards[off])) for attr, (off, on) in pairs.items()}


def best_of_n_utility(rewards: np.ndarray, utility: np.ndarray, candidates: np.ndarray) -> float:
    """Mean true utility of the reward's pick in each candidate set; candidates (M, N) headline ids.
    Ties (equal rewards) go to the first candidate."""
    pick = candidates[np.arange(len(candidates)), np.argmax(rewards[candidates], axis=1)]
    return float(utility[pick].mean())


@dataclass
class CellResult:
    """One (seed, strength) cell: per arm the spurious effect, all attribute effects and best-of-N utility."""

    seed: int
    strength: float
    effects: dict[str, dict[str, float]] = field(default_factory=dict)
    utility: dict[str, float] = field(default_factory=dict)


def run_seed(seed: int, features: np.ndarray, templates: pd.DataFrame, world: World, strengths: list[float],
             n_obs: int, n_folds: int, n_sets: int, n_candidates: int) -> tuple[list[dict], list[dict]]:
    """All arms at every confounding strength for one seed. The oracle (ridge on a randomised data set of
    the same size) and the candidate sets are shared across strengths, so arms and strengths are paired.
    Returns (utility/effect rows, attribute-effect rows)."""
    rng = np.random.default_rng([seed, 0])
    a_all = templates[list(ATTRIBUTES)].to_numpy()
    utility = world.true_utility(a_all)  # (n_templates,)
    candidates = sample_template_ids(templates, n_sets * n_candidates, rng).reshape(n_sets, n_candidates)
    randomised = sample_observations(world, templates, n_obs, 0.0, np.random.default_rng([seed, 1]))
    oracle = fit_naive(features, randomised)
    pairs = all_flip_pairs(templates)
    true_eff = attribute_effects(utility, pairs)
    rows, eff_rows = [], []
    u_random = float(utility[candidates].mean())
    u_best = float(utility[candidates].max(1).mean())
    for j, strength in enumerate(strengths):
        obs = sample_observations(world, templates, n_obs, strength, np.random.default_rng([seed, 2, j]))
        thetas = {"naive": fit_naive(features, obs), "with_c": fit_with_c(features, obs),
                  "deconfound": fit_deconfound(features, obs, n_folds, np.random.default_rng([seed, 3, j])),
                  "oracle": oracle}
        held_out = sample_observations(world, templates, n_obs, strength, np.random.default_rng([seed, 4, j]))
        row = {"seed": seed, "strength": strength, "u_random": u_random, "u_best": u_best,
               "true_spurious_effect": true_eff[SPURIOUS]}
        for arm, theta in thetas.items():
            r = features @ theta
            eff = attribute_effects(r, pairs)
            row[f"u_{arm}"] = best_of_n_utility(r, utility, candidates)
            row[f"eff_{arm}"] = eff[SPURIOUS]
            row[f"rank_corr_{arm}"] = spearman(r, utility)
            row[f"obs_auc_{arm}"] = observational_auc(r, held_out)
            for attr in ATTRIBUTES:
                eff_rows.append({"seed": seed, "strength": strength, "arm": arm, "attribute": attr,
                                 "estimated": eff[attr], "true": true_eff[attr]})
        rows.append(row)
    return rows, eff_rows


def observational_auc(rewards: np.ndarray, obs: Observations) -> float:
    """The validation a practitioner without an experiment would run: ROC AUC of the reward for the observed
    clicks on a held-out observational data set (same confounding as the training data)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(obs.y, rewards[obs.ids]))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def attribute_features(templates: pd.DataFrame) -> np.ndarray:
    """A spec-aware stand-in for the embeddings (tests, quick pilots): the five attribute bits."""
    return templates[list(ATTRIBUTES)].to_numpy().astype(float)


# --- claims: measurements, gates and controls ------------------------------------------------------------

def _at(table: pd.DataFrame, strength: float) -> pd.DataFrame:
    t = table[np.isclose(table["strength"], strength)].sort_values("seed")
    if t.empty:
        raise ValueError(f"no rows at strength {strength}")
    return t


def measure_naive_bias(table: pd.DataFrame, strength: float) -> tuple[Measurement, Control]:
    """Manipulation check: the naive reward's spurious-attribute effect at ``strength`` (t interval over
    seeds); control: the same at strength 0."""
    m = seed_measurement(_at(table, strength)["eff_naive"].tolist(), unit="probability")
    ctrl = seed_measurement(_at(table, 0.0)["eff_naive"].tolist(), unit="probability")
    return m, Control(ctrl, detail="naive reward's spurious effect at confounding strength 0")


def removal_statistic(eff_naive, eff_deconf) -> np.ndarray:
    """0.5 |naive spurious effect| - |deconfounded spurious effect|: > 0 iff the deconfounded reward keeps
    less than half the naive reward's weight on the spurious attribute."""
    return 0.5 * np.abs(np.asarray(eff_naive, float)) - np.abs(np.asarray(eff_deconf, float))


def measure_removal(table: pd.DataFrame, strength: float, min_bias: float) -> tuple[Measurement, Gate, Control]:
    """The removal statistic at ``strength`` over seeds; gate: the naive reward's |spurious effect| is at least
    ``min_bias`` in every seed (there is a bias to remove); control: the statistic at strength 0."""
    t, t0 = _at(table, strength), _at(table, 0.0)
    m = seed_measurement(removal_statistic(t["eff_naive"], t["eff_deconfound"]).tolist(), unit="probability")
    worst = float(np.abs(t["eff_naive"]).min())
    gate = Gate(passed=bool(worst >= min_bias), value=worst,
                detail=f"smallest |naive spurious effect| over seeds {worst:.4f} (needs >= {min_bias:g})")
    ctrl = seed_measurement(removal_statistic(t0["eff_naive"], t0["eff_deconfound"]).tolist(), unit="probability")
    return m, gate, Control(ctrl, detail="same statistic at confounding strength 0 (nothing to remove)")


def oracle_gate(t: pd.DataFrame, min_lift: float) -> Gate:
    """The data can teach the causal effects at all: the oracle reward's best-of-N utility beats random
    selection by at least ``min_lift`` in every seed."""
    lift = float((t["u_oracle"] - t["u_random"]).min())
    return Gate(passed=bool(lift >= min_lift), value=lift,
                detail=f"smallest oracle lift over random selection {lift:.4f} (needs >= {min_lift:g})")


def measure_utility_gain(table: pd.DataFrame, strength: float, min_lift: float) -> tuple[Measurement, Gate, Control]:
    """True-utility gain of best-of-N under the deconfounded reward over the naive one, paired by seed (same
    candidate sets), t interval over seeds; control: the same gain at strength 0."""
    t, t0 = _at(table, strength), _at(table, 0.0)
    m = seed_measurement((t["u_deconfound"] - t["u_naive"]).tolist(), unit="probability")
    ctrl = seed_measurement((t0["u_deconfound"] - t0["u_naive"]).tolist(), unit="probability")
    return m, oracle_gate(t, min_lift), Control(ctrl, detail="same paired gain at confounding strength 0")


def lift_fraction(t: pd.DataFrame, arm: str) -> np.ndarray:
    """(U_arm - U_random) / (U_oracle - U_random) per row: the share of the oracle's lift the arm gets."""
    lift = (t["u_oracle"] - t["u_random"]).to_numpy()
    return (t[f"u_{arm}"] - t["u_random"]).to_numpy() / np.maximum(lift, 1e-9)  # the gate catches lift ~ 0


def measure_near_oracle(table: pd.DataFrame, strength: float, min_lift: float) -> tuple[Measurement, Gate, Control]:
    """Share of the oracle's lift over random selection that the deconfounded reward reaches at ``strength``;
    control: the naive reward's share at the same strength."""
    t = _at(table, strength)
    m = seed_measurement(lift_fraction(t, "deconfound").tolist(), unit="fraction of oracle lift")
    ctrl = seed_measurement(lift_fraction(t, "naive").tolist(), unit="fraction of oracle lift")
    return m, oracle_gate(t, min_lift), Control(ctrl, detail="naive reward's share at the same strength")


def measure_with_c_equivalence(table: pd.DataFrame, strength: float) -> tuple[Measurement, Control]:
    """Paired true-utility difference U_with_c - U_deconfound at ``strength`` over seeds. For a linear reward
    the coefficient on phi(x) in a regression on [phi(x), C] equals the residual-on-residual coefficient
    (Frisch-Waugh-Lovell), up to the ridge penalty and cross-fitting; control: the naive arm in place of the
    with-C arm, U_naive - U_deconfound, which must fall outside the band."""
    t = _at(table, strength)
    m = seed_measurement((t["u_with_c"] - t["u_deconfound"]).tolist(), unit="probability")
    ctrl = seed_measurement((t["u_naive"] - t["u_deconfound"]).tolist(), unit="probability")
    return m, Control(ctrl, detail="naive reward in place of the with-C reward")


def measure_observational_preference(table: pd.DataFrame, strength: float,
                                     min_auc: float) -> tuple[Measurement, Gate, Control]:
    """Held-out observational AUC of the naive reward minus that of the DeconfoundLM reward at ``strength``
    (paired by seed); gate: the naive reward's held-out AUC is >= ``min_auc`` in every seed (the rewards
    predict clicks at all); control: the same difference at strength 0."""
    t, t0 = _at(table, strength), _at(table, 0.0)
    m = seed_measurement((t["obs_auc_naive"] - t["obs_auc_deconfound"]).tolist(), unit="AUC")
    worst = float(t["obs_auc_naive"].min())
    gate = Gate(passed=bool(worst >= min_auc), value=worst,
                detail=f"smallest held-out observational AUC of the naive reward {worst:.4f} (needs >= {min_auc:g})")
    ctrl = seed_measurement((t0["obs_auc_naive"] - t0["obs_auc_deconfound"]).tolist(), unit="AUC")
    return m, gate, Control(ctrl, detail="same AUC difference at confounding strength 0")
