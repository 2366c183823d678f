"""papers.provable_pretraining: models, closed forms, estimators and verdict rules."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from papers.provable_pretraining.analysis import (evaluate_factor_advantage, evaluate_factor_rate,
                                                  evaluate_mixture_advantage, evaluate_unlabeled_consistency,
                                                  loglog_slope, worst_over)
from papers.provable_pretraining.experiment import (LABELED_ONLY, PRETRAIN, SUPERVISED_LOGISTIC, SUPERVISED_RIDGE,
                                                    nested_ppca, run_factor_grid)
from papers.provable_pretraining.factor_model import (PPCA, fit_ppca, make_factor_model, ols_with_intercept,
                                                      ppca_from_moments, pretrain_then_erm, subspace_sin,
                                                      supervised_ridge)
from papers.provable_pretraining.mixture_model import (ConstantClassifier, component_accuracy, excess_error,
                                                       make_mixture_model, supervised_logistic)
from shared.claims import load_claims
from shared.metrics import Measurement


def test_bayes_risk_closed_form_and_monte_carlo():
    model = make_factor_model(d=12, r=3, rng=np.random.default_rng(0), sigma=1.0, tau=0.5)
    # orthonormal B, |beta| = 1: Cov(z | x) = sigma^2 / (1 + sigma^2) I, so R* = tau^2 + 1/2
    assert model.bayes_risk() == pytest.approx(0.25 + 0.5)
    x, y = model.sample(200_000, np.random.default_rng(1))
    assert np.mean((y - x @ model.bayes_weights) ** 2) == pytest.approx(0.75, rel=0.01)
    a, c = model.bayes_weights + 0.1, 0.2
    mc = np.mean((y - x @ a - c) ** 2) - np.mean((y - x @ model.bayes_weights) ** 2)
    assert model.excess_risk(a, c) == pytest.approx(mc, rel=0.02)
    assert model.excess_risk(model.bayes_weights, 0.0) == 0.0


def test_uninformative_control_weights():
    model = make_factor_model(d=10, r=2, rng=np.random.default_rng(3), informative=False)
    assert np.allclose(model.B.T @ model.v, 0) and np.linalg.norm(model.v) == pytest.approx(1)
    # Cov(x, y) = Sigma_x v, so E[y | x] = v^T x and R* = tau^2
    assert np.allclose(model.bayes_weights, model.v)
    assert model.bayes_risk() == pytest.approx(0.25)


def test_ppca_closed_form_on_a_known_covariance():
    cov = np.diag([5.0, 3.0, 1.0, 1.0, 1.0])
    ppca = ppca_from_moments(np.zeros(5), cov, r=2)
    assert ppca.sigma2 == pytest.approx(1.0)
    # W = U_r (Lambda_r - sigma^2)^{1/2}: columns e_1 * 2 and e_2 * sqrt(2), up to sign
    assert np.allclose(np.abs(ppca.W), np.array([[2, 0], [0, np.sqrt(2)], [0, 0], [0, 0], [0, 0]]))
    # eigenvalues below sigma^2 are clipped, never NaN
    assert np.isfinite(ppca_from_moments(np.zeros(3), np.diag([1.0, 0.5, 2.0]), r=2).W).all()


def test_posterior_mean_map_for_orthonormal_loadings():
    B = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 2)))[0]
    A, b = PPCA(np.ones(6), B, 0.5).posterior_mean_map()
    assert np.allclose(A, B.T / 1.5) and np.allclose(b, -A @ np.ones(6))


def test_ppca_recovers_the_model_covariance_from_many_samples():
    model = make_factor_model(d=8, r=2, rng=np.random.default_rng(2))
    x, _ = model.sample(100_000, np.random.default_rng(5))
    fit = fit_ppca(x, 2)
    assert np.allclose(fit.W @ fit.W.T + fit.sigma2 * np.eye(8), model.cov_x, atol=0.03)
    with pytest.raises(ValueError, match="r < d"):
        fit_ppca(x[:, :2], 2)


def test_nested_ppca_equals_direct_fit_on_the_same_stream():
    model = make_factor_model(d=7, r=2, rng=np.random.default_rng(4))
    nested = nested_ppca(model, [30, 60], np.random.default_rng(9), chunk=1000)
    x, _ = model.sample(30, np.random.default_rng(9))
    direct = fit_ppca(x, 2)
    assert np.allclose(nested[30].mu, direct.mu) and np.isclose(nested[30].sigma2, direct.sigma2)
    assert np.allclose(nested[30].W @ nested[30].W.T, direct.W @ direct.W.T)


def test_ols_and_pretrained_predictor_recover_exact_linear_maps():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((20, 3))
    g, c = ols_with_intercept(F, F @ np.array([1.0, -2.0, 0.5]) + 3.0)
    assert np.allclose(g, [1, -2, 0.5]) and c == pytest.approx(3.0)
    model = make_factor_model(d=10, r=2, rng=rng, tau=1e-6)
    x, y = model.sample(5000, rng)
    truth = PPCA(np.zeros(10), model.B, model.sigma**2)
    a, c = pretrain_then_erm(x, y, truth)
    assert model.excess_risk(a, c) < 1e-3  # the true representation makes the Bayes predictor reachable
    a, c = supervised_ridge(x, y)
    assert model.excess_risk(a, c) < 1e-2


def test_mixture_posterior_matches_brute_force_and_bayes_has_no_excess():
    model = make_mixture_model(d=3, K=4, separation=3.0, rng=np.random.default_rng(0))
    x, y = model.sample(500, np.random.default_rng(1))
    dens = np.stack([multivariate_normal(m, np.eye(3)).pdf(x) for m in model.means], axis=1)
    brute = dens[:, :2].sum(1) / dens.sum(1)
    assert np.allclose(model.posterior_positive(x), brute)
    assert set(np.unique(y)) <= {0, 1} and model.positive.tolist() == [True, True, False, False]

    class Bayes:
        def predict(self, z):
            return model.bayes_predict(z)

    assert excess_error(Bayes(), x, model.bayes_predict(x), y) == 0.0
    with pytest.raises(ValueError, match="even"):
        make_mixture_model(3, 3, 1.0, np.random.default_rng(0))


def test_single_class_labels_fall_back_to_a_constant():
    clf = supervised_logistic(np.zeros((4, 2)), np.array([1, 1, 1, 1]))
    assert isinstance(clf, ConstantClassifier) and clf.predict(np.zeros((3, 2))).tolist() == [1, 1, 1]


def test_factor_grid_has_every_cell():
    df = run_factor_grid([8], 2, [6, 16], [20, 50], [0, 1])
    assert len(df) == 2 * 2 * (4 + 2)  # seeds x n x (4 baselines + 2 pretrain m)
    assert (df["excess_risk"] >= 0).all()
    pre = df[df["method"] == PRETRAIN]
    assert pre["subspace_sin"].between(0, 1).all() and df.loc[df["method"] != PRETRAIN, "subspace_sin"].isna().all()


def test_subspace_sin():
    B = np.eye(4)[:, :2]
    assert subspace_sin(B * 3.0, B) == pytest.approx(0.0)  # same span, any scale
    assert subspace_sin(np.eye(4)[:, 2:], B) == pytest.approx(1.0)  # orthogonal
    tilt = np.array([[1.0, 0], [0, np.cos(0.3)], [0, np.sin(0.3)], [0, 0]])
    assert subspace_sin(tilt, B) == pytest.approx(np.sin(0.3))
    assert subspace_sin(np.column_stack([B[:, 0], np.zeros(4)]), B) == 1.0  # a lost column = a missed direction


def test_uninformative_mixture_and_component_accuracy():
    model = make_mixture_model(d=6, K=4, separation=3.0, rng=np.random.default_rng(0), informative=False)
    assert np.allclose(model.means @ model.label_direction, 0) and np.linalg.norm(model.label_direction) == pytest.approx(1)
    x, y, k = model.sample_with_components(4000, np.random.default_rng(1))
    assert np.array_equal(y, model.bayes_predict(x))  # the label is a deterministic function of x
    # the label carries no information about the cluster
    assert all(abs(y[k == j].mean() - 0.5) < 0.08 for j in range(4))
    # the informative model draws the same means from the same seed
    same = make_mixture_model(d=6, K=4, separation=3.0, rng=np.random.default_rng(0))
    assert np.array_equal(same.means, model.means) and same.label_direction is None
    # sample() and sample_with_components() consume the generator identically
    x1, y1 = same.sample(10, np.random.default_rng(5))
    x2, y2, _ = same.sample_with_components(10, np.random.default_rng(5))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert component_accuracy(np.array([1, 1, 0, 2]), np.array([0, 0, 1, 2]), 3) == 1.0  # up to relabelling
    assert component_accuracy(np.array([0, 0, 0, 0]), np.array([0, 1, 0, 1]), 2) == 0.5


# --- verdicts on synthetic tables (the shared rule, through the registry) ---------------------------------

def _factor_table(pre_scale: float, sup_scale: float, d: int = 10, seeds=range(6), sin: float = 0.05):
    rows = []
    for s in seeds:
        jitter = 1 + 0.05 * np.sin(s)
        for n in (5, 10, 20, 40, 80):
            rows.append({"d": d, "seed": s, "n": n, "method": SUPERVISED_RIDGE, "m": 0,
                         "excess_risk": sup_scale * d / n * jitter})
            for m, extra in ((100, 0.2), (1000, 0.02)):
                rows.append({"d": d, "seed": s, "n": n, "method": PRETRAIN, "m": m, "subspace_sin": sin,
                             "excess_risk": pre_scale / n * jitter + extra / (1 + s)})
    return pd.DataFrame(rows)


def _claims():
    return load_claims("provable_pretraining")


def test_registry_kinds():
    kinds = {cid: c.kind for cid, c in _claims().items()}
    assert kinds == {"factor_advantage_at_2d": "replication", "factor_rate_v2": "replication",
                     "unlabeled_consistency": "check", "mixture_advantage_v2": "replication"}


def test_worst_over():
    parts = [Measurement(5.0, 4.0, 6.0, 3, "x"), Measurement(3.5, 2.5, 4.5, 3, "x")]
    m = worst_over(parts, "greater", "m", "ratio")
    assert (m.value, m.ci_low, m.ci_high) == (3.5, 2.5, 4.5)
    m = worst_over(parts, "less", "m", "ratio")
    assert (m.value, m.ci_low, m.ci_high) == (5.0, 4.0, 6.0)
    assert worst_over([Measurement(1.0, None, None, 1, "x")], "greater", "m", "u").ci_low is None


def test_factor_advantage_gate_control_and_short():
    good = _factor_table(pre_scale=1.0, sup_scale=1.0)
    uninformative = _factor_table(pre_scale=50.0, sup_scale=1.0)
    c = evaluate_factor_advantage(_claims()["factor_advantage_at_2d"], good, uninformative)
    at = good[good["n"] == 20]
    sup = at.loc[at["method"] == SUPERVISED_RIDGE, "excess_risk"].mean()
    pre = at.loc[(at["method"] == PRETRAIN) & (at["m"] == 1000), "excess_risk"].mean()
    assert c.measured.value == pytest.approx(sup / pre)  # ratio of means at n = 2d = 20, about 8.6
    assert c.verdict == "reproduced" and c.gate.passed and c.control_meets is False
    # a control that meets the criterion too: the criterion does not discriminate
    c = evaluate_factor_advantage(_claims()["factor_advantage_at_2d"], good, good)
    assert c.verdict == "inconclusive" and c.control_meets is True
    # the representation was not recovered: gate failed -> inconclusive, never not_reproduced
    c = evaluate_factor_advantage(_claims()["factor_advantage_at_2d"], _factor_table(20.0, 1.0, sin=0.5),
                                  uninformative)
    assert c.verdict == "inconclusive" and not c.gate.passed
    c = evaluate_factor_advantage(_claims()["factor_advantage_at_2d"], _factor_table(20.0, 1.0), uninformative)
    assert c.verdict == "not_reproduced" and c.measured.ci_high < 3


def test_rate_and_slope():
    table = pd.DataFrame([[2.0, 1.0, 0.5], [2.0, 1.0, 0.5]], columns=[10, 20, 40])
    assert loglog_slope(table) == pytest.approx(-1.0)
    clean = _factor_table(1.0, 1.0)
    clean.loc[clean["method"] == PRETRAIN, "excess_risk"] = 1.0 / clean["n"]
    flat = _factor_table(1.0, 1.0)
    flat.loc[flat["method"] == PRETRAIN, "excess_risk"] = 1.0
    c = evaluate_factor_rate(_claims()["factor_rate_v2"], clean, flat, r=2)
    assert c.verdict == "reproduced" and c.measured.value == pytest.approx(-1.0)
    assert c.control.measured.value == pytest.approx(0.0) and c.control_meets is False
    # the m = 1000 floor flattens 1/n: slope about -0.8, its interval straddles the band's edge
    c = evaluate_factor_rate(_claims()["factor_rate_v2"], _factor_table(1.0, 1.0), flat, r=2)
    assert c.verdict == "inconclusive" and c.measured.ci_low < -0.8 < c.measured.ci_high
    assert evaluate_factor_rate(_claims()["factor_rate_v2"], flat, flat, r=2).verdict == "not_reproduced"


def test_unlabeled_consistency_check():
    c = evaluate_unlabeled_consistency(_claims()["unlabeled_consistency"], _factor_table(1.0, 1.0))
    assert c.verdict == "passed" and c.measured.value == pytest.approx(-1.0)  # risk falls with m in every seed
    rising = _factor_table(1.0, 1.0)
    rising.loc[(rising["method"] == PRETRAIN) & (rising["m"] == 1000), "excess_risk"] += 1.0
    assert evaluate_unlabeled_consistency(_claims()["unlabeled_consistency"], rising).verdict == "failed"


def _mixture(pretrained, em_acc=0.9):
    rows = []
    for s in range(5):
        for n in (10, 50, 200):
            rows += [{"d": 2, "seed": s, "n": n, "method": SUPERVISED_LOGISTIC, "m": 0, "excess_risk": 0.2 + 0.01 * s},
                     {"d": 2, "seed": s, "n": n, "method": LABELED_ONLY, "m": 0, "excess_risk": 0.1 + 0.02 * s},
                     {"d": 2, "seed": s, "n": n, "method": PRETRAIN, "m": 1000, "excess_risk": pretrained(s),
                      "em_component_acc": em_acc, "bayes_component_acc": 0.92}]
    return pd.DataFrame(rows)


def test_mixture_advantage():
    table = _mixture(lambda s: 0.01 * (s % 2))
    control = _mixture(lambda s: 0.5)
    c = evaluate_mixture_advantage(_claims()["mixture_advantage_v2"], table, control)
    # worst cell: labels-only pipeline, differences 0.10, 0.11, 0.14, 0.15, 0.18 (mean 0.136)
    diffs = np.array([0.10, 0.11, 0.14, 0.15, 0.18])
    half = 2.776445105 * diffs.std(ddof=1) / np.sqrt(5)
    assert c.measured.value == pytest.approx(0.136)
    assert c.measured.ci_low == pytest.approx(0.136 - half) and c.measured.ci_high == pytest.approx(0.136 + half)
    assert c.verdict == "reproduced" and c.gate.passed and c.control_meets is False
    assert evaluate_mixture_advantage(_claims()["mixture_advantage_v2"], control, control).verdict == "not_reproduced"
    gated = evaluate_mixture_advantage(_claims()["mixture_advantage_v2"], _mixture(lambda s: 0.0, em_acc=0.5), control)
    assert gated.verdict == "inconclusive" and not gated.gate.passed
    assert evaluate_mixture_advantage(_claims()["mixture_advantage_v2"], table, table).verdict == "inconclusive"
