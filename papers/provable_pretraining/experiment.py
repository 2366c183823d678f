"""The simulation grids: every (dimension, seed, n, method, m) cell of both instantiations.

Within a seed the unlabeled and labeled samples are nested (the first m unlabeled and the first n labeled
draws), so comparisons across m and n at a fixed seed are paired. Seeds draw a fresh model instance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .factor_model import (PPCA, FactorModel, fit_ppca, make_factor_model, oracle_then_erm, ppca_from_moments,
                           pretrain_then_erm, subspace_sin, supervised_min_norm, supervised_ridge)
from .mixture_model import (PretrainedClassifier, component_accuracy, excess_error, fit_mixture,
                            make_mixture_model, supervised_logistic)

PRETRAIN = "pretrain (MLE + ERM)"
LABELED_ONLY = "same pipeline, labeled x only"
SUPERVISED_RIDGE = "supervised ridge (CV)"
SUPERVISED_OLS = "supervised min-norm OLS"
SUPERVISED_LOGISTIC = "supervised logistic"
ORACLE = "oracle representation"


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(list(keys))


def nested_ppca(model: FactorModel, m_values: list[int], rng: np.random.Generator, chunk: int = 20_000) -> dict[int, PPCA]:
    """PPCA fits on the first m of one stream of unlabeled samples, for every m in ``m_values``, computed
    from running sums so that memory stays O(d^2) whatever the largest m."""
    d, r = model.d, model.r
    targets = sorted(set(m_values))
    total = np.zeros(d)
    outer = np.zeros((d, d))
    seen = 0
    fits: dict[int, PPCA] = {}
    for m in targets:
        while seen < m:
            k = min(chunk, m - seen)
            x, _ = model.sample(k, rng)
            total += x.sum(axis=0)
            outer += x.T @ x
            seen += k
        mu = total / m
        cov = outer / m - np.outer(mu, mu)
        fits[m] = ppca_from_moments(mu, cov, r)
    return fits


def run_factor_grid(d_values: list[int], r: int, n_values: list[int], m_values: list[int], seeds: list[int],
                    informative: bool = True, sigma: float = 1.0, tau: float = 0.5) -> pd.DataFrame:
    """Exact excess risk of every method on every (d, seed, n[, m]) cell; one row per cell."""
    rows = []
    for d in d_values:
        for seed in seeds:
            model = make_factor_model(d, r, _rng(seed, d, informative, 0), sigma, tau, informative)
            ppcas = nested_ppca(model, m_values, _rng(seed, d, informative, 1))
            X, y = model.sample(max(n_values), _rng(seed, d, informative, 2))
            for n in n_values:
                Xn, yn = X[:n], y[:n]
                base = {"d": d, "seed": seed, "n": n}
                for method, fit in ((SUPERVISED_RIDGE, supervised_ridge), (SUPERVISED_OLS, supervised_min_norm)):
                    rows.append({**base, "method": method, "m": 0, "excess_risk": model.excess_risk(*fit(Xn, yn))})
                rows.append({**base, "method": ORACLE, "m": 0,
                             "excess_risk": model.excess_risk(*oracle_then_erm(Xn, yn, model))})
                rows.append({**base, "method": LABELED_ONLY, "m": 0,
                             "excess_risk": model.excess_risk(*pretrain_then_erm(Xn, yn, fit_ppca(Xn, r)))})
                for m, ppca in ppcas.items():
                    rows.append({**base, "method": PRETRAIN, "m": m,
                                 "excess_risk": model.excess_risk(*pretrain_then_erm(Xn, yn, ppca)),
                                 "subspace_sin": subspace_sin(ppca.W, model.B)})
    return pd.DataFrame(rows)


def run_mixture_grid(d: int, K: int, separation: float, n_values: list[int], m_values: list[int],
                     seeds: list[int], n_test: int, informative: bool = True) -> pd.DataFrame:
    """Excess 0-1 error of every method on every (seed, n[, m]) cell of the Gaussian-mixture task.

    Pretrained rows also carry the held-out component accuracy of the fitted mixture (best matching of its
    components to the true ones) and that of the true model's Bayes assignment (the gate's reference).
    ``informative=False``: the control task whose label ignores the cluster (same means)."""
    rows = []
    for seed in seeds:
        model = make_mixture_model(d, K, separation, _rng(seed, d, K, 0), informative)
        X_unlab, _ = model.sample(max(m_values), _rng(seed, d, K, 1))
        mixtures = {m: fit_mixture(X_unlab[:m], K, seed) for m in m_values}
        X, y = model.sample(max(n_values), _rng(seed, d, K, 2))
        x_test, y_test, k_test = model.sample_with_components(n_test, _rng(seed, d, K, 3))
        y_bayes = model.bayes_predict(x_test)
        bayes_error = float(np.mean(y_bayes != y_test))
        bayes_comp = component_accuracy(model.bayes_components(x_test), k_test, K)
        em_comp = {m: component_accuracy(mix.predict(x_test), k_test, K) for m, mix in mixtures.items()}
        for n in n_values:
            Xn, yn = X[:n], y[:n]
            base = {"d": d, "seed": seed, "n": n, "bayes_error": bayes_error}
            rows.append({**base, "method": SUPERVISED_LOGISTIC, "m": 0,
                         "excess_risk": excess_error(supervised_logistic(Xn, yn), x_test, y_bayes, y_test)})
            own = PretrainedClassifier(fit_mixture(Xn, K, seed), Xn, yn) if n >= K else None
            rows.append({**base, "method": LABELED_ONLY, "m": 0,
                         "excess_risk": excess_error(own, x_test, y_bayes, y_test) if own else np.nan})
            for m, mixture in mixtures.items():
                clf = PretrainedClassifier(mixture, Xn, yn)
                rows.append({**base, "method": PRETRAIN, "m": m,
                             "excess_risk": excess_error(clf, x_test, y_bayes, y_test),
                             "em_component_acc": em_comp[m], "bayes_component_acc": bayes_comp})
    return pd.DataFrame(rows)
