"""papers.gauss_markov: the functors, the floating-point bounds (against exact rational arithmetic), the checks
and the verdict rules."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from papers.gauss_markov.analysis import (evaluate_blue, evaluate_bounded, evaluate_limits, variance_log_ratios,
                                          worst_case_measurement)
from papers.gauss_markov.method import (RIDGE_CONTROL, U, Design, GaussMarkovFunctor, LSBounds,
                                        check_functoriality, check_limits, check_unit_counit, forward_functor,
                                        gamma, gauss_markov_variances, gradient_descent, real_design,
                                        residual_error_bound, synthetic_design)
from shared.claims import load_claims


def test_gamma():
    assert U == 2.0**-53
    assert gamma(1) == pytest.approx(U / (1 - U), rel=1e-15)
    assert gamma(10) > 10 * U
    with pytest.raises(ValueError):
        gamma(2**53)


def test_gauss_markov_functor_hand_examples():
    # X = [1, 1]^T: X^+ = [1/2, 1/2], so G(y) is the mean
    G = GaussMarkovFunctor.of(np.array([[1.0], [1.0]]))
    assert G(np.array([1.0, 3.0])) == pytest.approx([2.0])
    # X = [I; 0]: X^+ y keeps the first m coordinates
    G = GaussMarkovFunctor.of(np.vstack([np.eye(2), np.zeros((1, 2))]))
    assert G(np.array([4.0, -1.0, 7.0])) == pytest.approx([4.0, -1.0])
    assert G.pinv() == pytest.approx(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    assert forward_functor(np.array([[1.0, 2.0]]), np.array([3.0, 4.0])) == pytest.approx([11.0])
    with pytest.raises(ValueError, match="rank deficient"):
        GaussMarkovFunctor.of(np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]))
    with pytest.raises(ValueError, match="at least as many rows"):
        GaussMarkovFunctor.of(np.ones((1, 2)))


def test_designs():
    d = real_design("diabetes")
    assert d.X.shape == (442, 11) and d.y.shape == (442,)
    assert np.linalg.norm(d.X[:, 0]) == pytest.approx(1.0)  # the intercept column, scaled to unit norm
    assert real_design("linnerud").X.shape == (20, 4)
    with pytest.raises(ValueError):
        real_design("boston")
    s = synthetic_design(50, 4, 1e3, np.random.default_rng(0))
    assert s.condition == pytest.approx(1e3, rel=1e-8)
    ones = np.ones(50)
    proj = s.X @ np.linalg.lstsq(s.X, ones, rcond=None)[0]
    assert proj == pytest.approx(ones)  # the constant vector lies in the column space (intercept)


def test_residual_bound_covers_exact_rational_error():
    """|fl(y - fl(Xa)) - (y - Xa)| <= gamma_{m+1}(|y| + |X||a|), with the exact value in rational arithmetic."""
    rng = np.random.default_rng(3)
    X, a, y = rng.standard_normal((6, 4)) * 1e3, rng.standard_normal(4), rng.standard_normal(6)
    computed = y - X @ a
    exact = [Fraction(y[i]) - sum(Fraction(X[i, j]) * Fraction(a[j]) for j in range(4)) for i in range(6)]
    err = np.array([abs(float(Fraction(computed[i]) - exact[i])) for i in range(6)])
    bound = residual_error_bound(X, a, y)
    assert np.all(err <= bound)
    assert np.all(bound < 1e-9 * (np.abs(y) + np.abs(X) @ np.abs(a)))  # and it is a tight, not vacuous, bound


def test_forward_error_bound_is_kappa_scaled():
    X = synthetic_design(40, 3, 1e4, np.random.default_rng(1)).X
    ls = LSBounds.of(X)
    assert ls.kappa == pytest.approx(1e4, rel=1e-8)
    a = np.ones(3)
    assert ls.forward_error(a, 0.0) == pytest.approx(ls.kappa * ls.backward / (1 - ls.kappa * ls.backward) * 2 * np.sqrt(3))
    assert LSBounds(1.0, 1e20, 1e-12).forward_error(a, 0.0) == float("inf")  # bound unavailable when kappa eps >= 1


@pytest.mark.parametrize("condition", [1.0, 1e7])
def test_checks_hold_within_bounds(condition):
    d = synthetic_design(30, 4, condition, np.random.default_rng(2))
    rng = np.random.default_rng(0)
    f = check_functoriality(d.X, d.y, 200, rng)
    u = check_unit_counit(d, 200, rng)
    for name, ratio in {**f, **u}.items():
        if name not in ("kappa", "normal_equations_relative", "ols_relative_difference"):
            assert 0.0 <= ratio <= 1.0, name
    assert u["normal_equations_relative"] < 100 * U * condition  # X^T r* ~ u kappa ||X|| ||y|| at worst
    # scikit-learn truncates singular values below 1e-6 sigma_max: compared only when it keeps full rank
    assert ("ols_equals_sklearn" in u) == (condition < 1e6)


def test_solve_checks_without_a_bound_are_not_scored():
    d = synthetic_design(200, 5, 1e12, np.random.default_rng(2))  # kappa eps ~ 2 > 1: no first-order bound
    u = check_unit_counit(d, 20, np.random.default_rng(0))
    assert "unit" not in u and "hom_correspondence" not in u and "ols_equals_sklearn" not in u
    assert 0 <= u["counit_normal_equations"] <= 1  # this bound has no kappa in it


def test_gradient_descent_hand_case():
    """X = 2 I: L = mu = 4, step 1/4, a_1 = a_0 + (1/4) 2 (y - 2 a_0) = y / 2, the exact solution."""
    X = 2 * np.eye(3)
    y = np.array([2.0, -4.0, 6.0])
    gd = gradient_descent(X, y, 3, np.zeros(3), np.array([0, 1, 3]))
    assert gd["a"][1] == pytest.approx([1.0, -2.0, 3.0])
    assert gd["r"][1] == pytest.approx(np.zeros(3))
    assert gd["rho"] == 0.0 and gd["L"] == pytest.approx(4.0)
    assert gd["correspondence"] <= 1.0


def test_limits_reached_on_a_well_conditioned_design():
    d = synthetic_design(40, 3, 3.0, np.random.default_rng(4))
    lim = check_limits(d, 600, 10, np.random.default_rng(0))
    assert lim["floor_reached"] and lim["param_rate"] <= 1 and lim["residual_rate"] <= 1
    assert lim["final_param_error"] <= lim["floor"]
    short = check_limits(d, 3, 3, np.random.default_rng(0))
    assert not short["floor_reached"]  # three steps at rate (1 - 1/9) cannot reach the floor


def test_variances_exact_and_unbiased():
    d = synthetic_design(60, 3, 10.0, np.random.default_rng(5))
    v = gauss_markov_variances(d, 4000, 0.5, np.random.default_rng(0))
    assert v["ols"]["exact_total_variance"] == pytest.approx(0.25 * np.trace(np.linalg.inv(d.X.T @ d.X)))
    for name, row in v.items():
        if name == RIDGE_CONTROL:  # the control: biased, and of smaller variance than OLS
            assert row["unbiased"] > 1e-3
            assert row["exact_total_variance"] < v["ols"]["exact_total_variance"]
            continue
        assert row["unbiased"] < 1e-10  # A X = I: linear unbiased
        assert row["exact_total_variance"] >= v["ols"]["exact_total_variance"] * (1 - 1e-12)
        assert row["mc_total_variance"] == pytest.approx(row["exact_total_variance"], rel=0.1)


# --- verdicts on synthetic tables (the shared rule, through the registry) ---------------------------------

def _claims():
    return load_claims("gauss_markov")


def test_registry_is_all_checks():
    claims = _claims()
    assert all(c.kind == "check" for c in claims.values())  # the paper makes no empirical prediction
    assert list(claims) == ["functoriality_worst_ratio", "variation_correspondence_worst_ratio",
                            "unit_counit_worst_ratio", "limit_preservation_worst_ratio",
                            "gauss_markov_blue_worst_case"]


def test_worst_case_measurement():
    m = worst_case_measurement([0.5, 0.3, 0.9], "max", "u", "largest ratio")
    assert (m.value, m.ci_low, m.ci_high, m.n) == (0.9, 0.3, 0.9, 3)
    m = worst_case_measurement([0.2, -0.1], "min", "u", "smallest log ratio")
    assert (m.value, m.ci_low, m.ci_high) == (-0.1, -0.1, 0.2)
    with pytest.raises(ValueError):
        worst_case_measurement([], "max", "u", "x")


def _ratios(values, group="functoriality"):
    return pd.DataFrame([{"seed": s, "design": "d", "kappa": 1.0, "group": group, "check": f"c{k}", "ratio": r}
                         for s, row in enumerate(values) for k, r in enumerate(row)])


def test_bounded_checks():
    ok = evaluate_bounded(_claims()["functoriality_worst_ratio"], _ratios([[0.1, 0.5], [0.2, 0.3], [0.4, 0.9]]))
    assert ok.verdict == "passed"
    assert (ok.measured.value, ok.measured.ci_low, ok.measured.ci_high) == (0.9, 0.3, 0.9)
    # one seed over its bound: the range [0.5, 1.5] straddles 1 -> failed (a check fails unless it passes)
    bad = evaluate_bounded(_claims()["functoriality_worst_ratio"], _ratios([[0.1, 0.5], [0.2, 1.5], [0.4, 0.9]]))
    assert bad.verdict == "failed" and "1.5" in bad.detail and "straddles" in bad.reason
    worse = evaluate_bounded(_claims()["functoriality_worst_ratio"], _ratios([[1.1], [2.0], [1.3]]))
    assert worse.verdict == "failed" and "short" in worse.reason
    with pytest.raises(ValueError):
        evaluate_bounded(_claims()["unit_counit_worst_ratio"], _ratios([[0.1]]))


def _traj(reached):
    return pd.DataFrame([{"seed": s, "design": "d", "step": t, "param_error": 1e-12, "floor": 1e-11,
                          "floor_reached": reached} for s in range(3) for t in (1, 10)])


def test_limits_gate():
    ratios = _ratios([[0.5], [0.9], [0.7]], group="limit_preservation")
    c = evaluate_limits(_claims()["limit_preservation_worst_ratio"], ratios, _traj(True))
    assert c.verdict == "passed" and c.gate.passed and c.measured.value == 0.9
    c = evaluate_limits(_claims()["limit_preservation_worst_ratio"], ratios, _traj(False))
    assert c.verdict == "failed" and not c.gate.passed and c.reason.startswith("gate failed")
    worse = _ratios([[0.5], [1.1], [0.7]], group="limit_preservation")
    assert evaluate_limits(_claims()["limit_preservation_worst_ratio"], worse, _traj(True)).verdict == "failed"


def _variances(factor, ridge=0.5):
    rows = []
    for s in range(4):
        for est, v in (("ols", 1.0), ("wls_random_weights", factor * (1 + 0.01 * s)), ("ls_half_rows", 2.0),
                       (RIDGE_CONTROL, ridge)):
            rows.append({"seed": s, "design": "d", "kappa": 1.0, "estimator": est, "mc_total_variance": v,
                         "exact_total_variance": v, "unbiased": 0.0})
    return pd.DataFrame(rows)


def test_blue_and_its_control():
    lr = variance_log_ratios(_variances(1.2))
    assert set(lr["alternative"]) == {"wls_random_weights", "ls_half_rows"}  # the control is not an alternative
    assert lr.loc[lr["alternative"] == "ls_half_rows", "log_ratio"].tolist() == pytest.approx([np.log(2.0)] * 4)
    c = evaluate_blue(_claims()["gauss_markov_blue_worst_case"], _variances(1.2))
    assert c.verdict == "passed" and c.measured.value == pytest.approx(np.log(1.2))
    assert c.control.measured.value == pytest.approx(np.log(0.5)) and c.control_meets is False
    assert evaluate_blue(_claims()["gauss_markov_blue_worst_case"], _variances(0.8)).verdict == "failed"
    # a control that meets the criterion (a "ridge" of larger variance) makes the check fail: no discrimination
    c = evaluate_blue(_claims()["gauss_markov_blue_worst_case"], _variances(1.2, ridge=1.5))
    assert c.verdict == "failed" and c.control_meets is True
