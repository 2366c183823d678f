"""papers.deconfound_lm: templates, generator, ridge with LOO, cross-fitting, effects, best-of-N, claims."""

import numpy as np
import pandas as pd
import pytest

from papers.deconfound_lm.method import (ATTRIBUTES, Observations, World, attribute_effects,
                                         attribute_features, all_flip_pairs, best_of_n_utility,
                                         cross_fit_residuals, fit_deconfound, fit_naive, fit_with_c,
                                         flip_pairs, headline, lift_fraction, measure_naive_bias,
                                         measure_near_oracle, measure_observational_preference, measure_removal, measure_utility_gain,
                                         measure_with_c_equivalence, removal_statistic, ridge_loo, run_seed, sample_observations,
                                         sample_template_ids, sigmoid, template_table,
                                         observational_auc)
from shared.claims import Control, load_claims


@pytest.fixture(scope="module")
def templates():
    return template_table()


def test_headlines_by_hand():
    assert headline(0, 0, 0, 0, 0, subject=0) == "News about the local bakery"
    assert headline(1, 0, 1, 1, 0, subject=1, emo_variant=2) == "What is the amazing news about a star tennis player?"
    assert headline(0, 1, 0, 1, 1, subject=2, num_variant=1) == \
        "7 facts about the city marathon, according to readers and experts across the region this week"
    assert headline(1, 1, 1, 0, 0, subject=3) == "Do you know these 3 shocking facts about the housing market?"


def test_template_table_counts(templates):
    # per attribute configuration: 6 subjects x (3 if emotional) x (3 if number); sum = 6 * 4 * 4 * 8 = 768
    assert len(templates) == 768
    assert templates["text"].is_unique
    off, on = flip_pairs(templates, "sports")
    assert len(off) == 384 and set(off) | set(on) == set(range(768))
    off, on = flip_pairs(templates, "emotional")
    assert len(on) == 576 and len(set(off)) == 192  # each plain headline pairs with its 3 emotional variants
    t = templates.iloc[on]
    assert (t["emotional"] == 1).all() and (templates.iloc[off]["emotional"] == 0).all()
    # the pair differs only in the flipped attribute
    same = [c for c in ATTRIBUTES if c != "emotional"] + ["subject", "num_variant"]
    assert (templates.iloc[on][same].to_numpy() == templates.iloc[off][same].to_numpy()).all()


def test_true_utility_by_hand():
    w = World()
    a0 = np.zeros((1, 5))
    expected = 0.5 * sigmoid(-1.0) + 0.5 * sigmoid(0.5)  # 0.5 * 0.268941 + 0.5 * 0.622459
    assert w.true_utility(a0)[0] == pytest.approx(0.4457003, abs=1e-6)
    assert w.true_utility(a0)[0] == pytest.approx(expected)
    s = np.zeros((1, 5))
    s[0, 3] = 1
    assert w.true_utility(s)[0] == w.true_utility(a0)[0]  # sports has no causal effect


def test_confounded_sampler(templates):
    rng = np.random.default_rng(0)
    obs = sample_observations(World(), templates, 40000, 0.8, rng)
    s = templates["sports"].to_numpy()[obs.ids]
    assert s[obs.c == 1].mean() == pytest.approx(0.9, abs=0.01)
    assert s[obs.c == 0].mean() == pytest.approx(0.1, abs=0.01)
    q = templates["question"].to_numpy()[obs.ids]
    assert q[obs.c == 1].mean() == pytest.approx(q[obs.c == 0].mean(), abs=0.02)  # others independent of C
    assert obs.y[obs.c == 1].mean() > obs.y[obs.c == 0].mean() + 0.2  # gamma = 1.5 raises clicks
    ids = sample_template_ids(templates, 20000, np.random.default_rng(1))
    assert templates["emotional"].to_numpy()[ids].mean() == pytest.approx(0.5, abs=0.015)  # bits, not templates


def test_ridge_loo_matches_sklearn_and_brute_force():
    from sklearn.linear_model import Ridge, RidgeCV

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    y = X[:, 0] - 2 * X[:, 1] + rng.normal(size=60)
    fit = ridge_loo(X, y, alphas=(0.1, 1.0, 10.0))
    ref = RidgeCV(alphas=(0.1, 1.0, 10.0)).fit(X, y)
    assert fit.alpha == ref.alpha_
    np.testing.assert_allclose(fit.coef, ref.coef_, atol=1e-10)
    assert fit.intercept == pytest.approx(ref.intercept_, abs=1e-10)
    # brute-force leave-one-out error at alpha = 1
    errs = [(y[i] - Ridge(alpha=1.0).fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i:i + 1])[0]) ** 2
            for i in range(60)]
    assert fit.loo_mse[1] == pytest.approx(np.mean(errs), rel=1e-8)


def test_cross_fit_residuals_by_hand():
    # 8 rows, two folds from a permutation of (0, 1, 0, 1, ...); residuals use the other fold's group mean
    X = np.arange(1.0, 9.0)[:, None] ** 2
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    c = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    fold = np.random.default_rng(0).permutation(np.arange(8) % 2)
    Xr, yr = cross_fit_residuals(X, y, c, 2, np.random.default_rng(0))
    for i in range(8):
        src = (fold != fold[i]) & (c == c[i])
        if not src.any():  # level absent from the other fold: that fold's overall mean
            src = fold != fold[i]
        assert Xr[i, 0] == X[i, 0] - X[src, 0].mean()
        assert yr[i] == y[i] - y[src].mean()
    # a level missing from the other fold falls back to that fold's overall mean
    Xr, yr = cross_fit_residuals(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]), np.array([0, 1]), 2,
                                 np.random.default_rng(0))
    assert Xr[:, 0].tolist() == [-2.0, 2.0] and yr.tolist() == [-1.0, 1.0]


def test_effects_and_best_of_n_by_hand(templates):
    w = np.array([0.1, 0.2, 0.3, 0.4, -0.5])
    r = attribute_features(templates) @ w
    eff = attribute_effects(r, all_flip_pairs(templates))
    assert [eff[a] for a in ATTRIBUTES] == pytest.approx(w.tolist())
    rewards = np.array([0.0, 2.0, 1.0, 3.0])
    utility = np.array([0.1, 0.2, 0.3, 0.4])
    cands = np.array([[0, 1, 2], [2, 0, 3], [0, 0, 0]])
    # picks: 1 (reward 2), 3 (reward 3), 0 -> utilities 0.2, 0.4, 0.1
    assert best_of_n_utility(rewards, utility, cands) == pytest.approx(0.7 / 3)


def test_deconfounding_removes_bias_on_attribute_features(templates):
    """On the exact (attribute) representation: the naive reward credits sports, the residualised and the
    with-C rewards do not, and the oracle recovers the causal ranking."""
    F = attribute_features(templates)
    obs = sample_observations(World(), templates, 20000, 0.8, np.random.default_rng(3))
    s = ATTRIBUTES.index("sports")
    assert fit_naive(F, obs)[s] > 0.15
    assert abs(fit_deconfound(F, obs, 2, np.random.default_rng(0))[s]) < 0.03
    assert abs(fit_with_c(F, obs)[s]) < 0.03


def test_run_seed_rows(templates):
    F = attribute_features(templates)
    rows, eff = run_seed(7, F, templates, World(), [0.0, 0.8], 2000, 2, 300, 8)
    t = pd.DataFrame(rows)
    assert len(t) == 2 and len(eff) == 2 * 4 * 5
    assert t.loc[1, "obs_auc_naive"] > t.loc[1, "obs_auc_deconfound"]  # strength 0.8: naive exploits C
    assert (t["u_best"] >= t[["u_naive", "u_deconfound", "u_oracle", "u_with_c"]].max(axis=1) - 1e-12).all()
    assert t["true_spurious_effect"].abs().max() < 1e-12
    again, _ = run_seed(7, F, templates, World(), [0.0, 0.8], 2000, 2, 300, 8)
    assert again == rows  # deterministic


def _table(strength_rows):
    """Synthetic per-seed table: rows of (strength, eff_naive, eff_deconfound, u_naive, u_deconfound, u_oracle)."""
    out = []
    for seed, (st, en, ed, un, ud, uo) in enumerate(strength_rows):
        out.append({"seed": seed % 3, "strength": st, "eff_naive": en, "eff_deconfound": ed, "u_random": 0.6,
                    "u_naive": un, "u_deconfound": ud, "u_oracle": uo, "u_with_c": ud + 0.001 * (seed % 3 - 1)})
    return pd.DataFrame(out)


def test_removal_statistic_by_hand():
    assert removal_statistic([0.2, -0.2], [0.05, 0.2]).tolist() == pytest.approx([0.05, -0.1])


def test_measures_reproduced_case():
    t = _table([(0.6, 0.20, 0.01, 0.75, 0.78, 0.78), (0.6, 0.18, -0.01, 0.76, 0.781, 0.779),
                (0.6, 0.19, 0.00, 0.755, 0.779, 0.78),
                (0.0, 0.00, 0.00, 0.78, 0.78, 0.78), (0.0, 0.01, 0.01, 0.779, 0.779, 0.779),
                (0.0, -0.01, -0.01, 0.781, 0.781, 0.78)])
    claims = load_claims("deconfound_lm")
    m, ctrl = measure_naive_bias(t, 0.6)
    assert m.value == pytest.approx(0.19)
    assert claims["naive_reward_spurious_bias"].evaluate(m, control=ctrl).verdict == "passed"
    m, gate, ctrl = measure_removal(t, 0.6, 0.02)
    assert m.value == pytest.approx(np.mean([0.09, 0.08, 0.095])) and gate.passed and gate.value == pytest.approx(0.18)
    assert claims["deconfound_removes_spurious_effect"].evaluate(m, gate=gate, control=ctrl).verdict == "reproduced"
    m, gate, ctrl = measure_utility_gain(t, 0.6, 0.03)
    assert m.value == pytest.approx(np.mean([0.03, 0.021, 0.024]))
    assert gate.value == pytest.approx(0.179)
    c = claims["deconfound_true_utility_gain"].evaluate(m, gate=gate, control=ctrl)
    assert c.verdict == "reproduced" and c.control_meets is False
    m, gate, ctrl = measure_near_oracle(t, 0.6, 0.03)
    assert lift_fraction(t.iloc[:1], "naive")[0] == pytest.approx(0.15 / 0.18)
    assert claims["deconfound_near_oracle"].evaluate(m, gate=gate, control=ctrl).verdict == "reproduced"
    m, ctrl = measure_with_c_equivalence(t, 0.6)
    assert m.value == pytest.approx(0.0, abs=1e-12) and ctrl.measured.value == pytest.approx(-0.025)  # (-0.03 - 0.021 - 0.024) / 3
    c = claims["with_c_matches_deconfound"].evaluate(m, control=ctrl)
    assert c.verdict == "passed" and c.control_meets is False
    c = claims["with_c_matches_deconfound"].evaluate(ctrl.measured, control=Control(m))  # swapped: fails
    assert c.verdict == "failed"


def test_failed_gate_and_control_that_meets():
    # the oracle learns nothing (lift 0.01 < 0.03): inconclusive, never not_reproduced
    t = _table([(0.6, 0.2, 0.0, 0.60, 0.61, 0.61), (0.6, 0.2, 0.0, 0.60, 0.612, 0.61),
                (0.6, 0.2, 0.0, 0.60, 0.611, 0.61),
                (0.0, 0.0, 0.0, 0.60, 0.61, 0.61), (0.0, 0.0, 0.0, 0.60, 0.612, 0.61),
                (0.0, 0.0, 0.0, 0.60, 0.611, 0.61)])
    claims = load_claims("deconfound_lm")
    m, gate, ctrl = measure_utility_gain(t, 0.6, 0.03)
    assert not gate.passed
    c = claims["deconfound_true_utility_gain"].evaluate(m, gate=gate, control=ctrl)
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")
    # the gain is just as large at strength 0: the control meets the criterion -> does not discriminate
    t2 = t.assign(u_oracle=0.7)
    m, gate, ctrl = measure_utility_gain(t2, 0.6, 0.03)
    c = claims["deconfound_true_utility_gain"].evaluate(m, gate=gate, control=ctrl)
    assert gate.passed and c.control_meets and c.verdict == "inconclusive"
    # no bias to remove: the removal claim's gate fails
    t3 = t.assign(eff_naive=0.01)
    m, gate, ctrl = measure_removal(t3, 0.6, 0.02)
    assert not gate.passed


def test_not_reproduced_when_gain_is_negative():
    t = _table([(0.6, 0.2, 0.0, 0.78, 0.75, 0.78), (0.6, 0.2, 0.0, 0.78, 0.752, 0.78),
                (0.6, 0.2, 0.0, 0.78, 0.751, 0.78),
                (0.0, 0.0, 0.0, 0.78, 0.78, 0.78), (0.0, 0.0, 0.0, 0.78, 0.781, 0.78),
                (0.0, 0.0, 0.0, 0.78, 0.779, 0.78)])
    claims = load_claims("deconfound_lm")
    m, gate, ctrl = measure_utility_gain(t, 0.6, 0.03)
    assert claims["deconfound_true_utility_gain"].evaluate(m, gate=gate, control=ctrl).verdict == "not_reproduced"
    m, gate, ctrl = measure_near_oracle(t, 0.6, 0.03)
    assert claims["deconfound_near_oracle"].evaluate(m, gate=gate, control=ctrl).verdict == "not_reproduced"


def test_unused_observations_type():
    o = Observations(np.array([0]), np.array([1]), np.array([1.0]))
    assert o.ids.shape == o.c.shape == o.y.shape


def test_observational_auc_by_hand():
    obs = Observations(ids=np.array([0, 1, 2, 3]), c=np.zeros(4, int), y=np.array([0.0, 1.0, 0.0, 1.0]))
    # positives score 0.9, 0.4; negatives 0.1, 0.5 -> 3 of 4 positive-negative pairs ordered: AUC 0.75
    assert observational_auc(np.array([0.1, 0.9, 0.5, 0.4]), obs) == pytest.approx(0.75)


def test_measure_observational_preference():
    rows = []
    for seed in range(3):
        for st, an, ad in ((0.6, 0.67 + 0.01 * seed, 0.64), (0.0, 0.64, 0.64 - 0.001 * seed)):
            rows.append({"seed": seed, "strength": st, "obs_auc_naive": an, "obs_auc_deconfound": ad})
    t = pd.DataFrame(rows)
    claims = load_claims("deconfound_lm")
    m, gate, ctrl = measure_observational_preference(t, 0.6, 0.55)
    assert m.value == pytest.approx(0.04) and gate.passed and gate.value == pytest.approx(0.67)
    assert ctrl.measured.value == pytest.approx(0.001)
    c = claims["observational_validation_prefers_naive"].evaluate(m, gate=gate, control=ctrl)
    assert c.verdict == "reproduced" and c.control_meets is False
    m, gate, ctrl = measure_observational_preference(t, 0.6, 0.7)  # rewards that barely predict: gate fails
    assert not gate.passed
    assert claims["observational_validation_prefers_naive"].evaluate(m, gate=gate, control=ctrl).verdict == "inconclusive"
