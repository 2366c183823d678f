"""papers.stationary_representations: the d-Simplex, data, metrics (hand-checked) and measure_* functions."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.stationary_representations.analysis import (compat_gain, measure_ac, measure_class_means,
                                                        measure_gain, measure_simplex_vs_learned)
from papers.stationary_representations.method import (FeatureNet, average_compatibility,
                                                      average_multimodel_accuracy, class_mean_cosines,
                                                      classifier_for, compatibility_matrix, compatible_pairs,
                                                      dsimplex, make_digits, make_synthetic, mean_cross_accuracy,
                                                      task_classes, top1_retrieval, train_feature_model,
                                                      training_subset, upper_bound_compatibility)
from shared.claims import load_claims


@pytest.mark.parametrize("k", [2, 3, 5, 20])
def test_dsimplex_is_regular_and_centred(k):
    w = dsimplex(k).double()
    assert w.shape == (k, k - 1)
    g = w @ w.T
    assert torch.allclose(torch.diag(g), torch.ones(k, dtype=torch.float64), atol=1e-6)
    off = g[~torch.eye(k, dtype=bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (k - 1)), atol=1e-6)
    assert torch.allclose(w.sum(0), torch.zeros(k - 1, dtype=torch.float64), atol=1e-6)


def test_dsimplex_k2_is_antipodal():
    w = dsimplex(2)
    assert w.shape == (2, 1) and float(w[0, 0]) == pytest.approx(-float(w[1, 0]), abs=1e-6)


def test_classifiers_shared_permuted_learned():
    rng = np.random.default_rng(0)
    assert torch.equal(classifier_for("simplex", 6, rng), dsimplex(6))
    p = classifier_for("permuted_simplex", 6, np.random.default_rng(3))
    assert not torch.equal(p, dsimplex(6))
    # same rows, other order
    assert torch.allclose(p.sum(0), dsimplex(6).sum(0), atol=1e-6)
    assert classifier_for("learned", 6, rng) is None
    with pytest.raises(ValueError):
        classifier_for("other", 6, rng)


def test_fixed_classifier_is_frozen_and_unchanged_by_training():
    split = make_synthetic(4, 20, 5, 5, 8, 4, 0.5, seed=0)
    x, y = training_subset(split, 4, 20)
    model, loss = train_feature_model(x, y, "simplex", 5, 16, 5, 16, 1e-2, 0.0, seed=1)
    assert not model.fc.weight.requires_grad
    assert torch.equal(model.fc.weight.detach(), dsimplex(5))
    learned, _ = train_feature_model(x, y, "learned", 5, 16, 5, 16, 1e-2, 0.0, seed=1)
    assert learned.fc.weight.requires_grad and np.isfinite(loss)
    # same backbone initialisation in both arms before training (seeded identically)
    torch.manual_seed(7)
    a = FeatureNet(8, 16, 5, None)
    torch.manual_seed(7)
    b = FeatureNet(8, 16, 5, dsimplex(5))
    assert torch.equal(a.backbone[0].weight, b.backbone[0].weight)


def test_synthetic_and_digits_splits():
    s = make_synthetic(5, 10, 3, 4, 12, 3, 1.0, seed=2)
    assert s.x_train.shape == (50, 12) and s.x_query.shape == (15, 12) and s.x_gallery.shape == (20, 12)
    assert np.bincount(s.y_train).tolist() == [10] * 5 and s.n_classes == 5
    assert np.allclose(s.x_train.mean(0), 0, atol=1e-5)
    s2 = make_synthetic(5, 10, 3, 4, 12, 3, 1.0, seed=2)
    assert np.array_equal(s.x_query, s2.x_query)
    d = make_digits(20, 5, 5, seed=0)
    assert d.n_classes == 10 and d.x_train.shape == (200, 64) and d.x_train.max() <= 1.0
    x, y = training_subset(d, 3, 7)
    assert np.bincount(y).tolist() == [7, 7, 7]
    assert task_classes(4, 2, 4) == [4, 6, 8, 10]


def test_top1_retrieval_hand_example():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    yq = np.array([0, 1, 1])
    g = np.array([[0.9, 0.1], [0.1, 0.9]])
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    yg = np.array([0, 1])
    assert top1_retrieval(q, yq, g, yg) == pytest.approx(2 / 3)


def test_ac_am_hand_example():
    # 3 models; pairs (1,0): .8 > .7 yes; (2,0): .7 > .7 no (tie); (2,1): .9 > .85 yes -> AC = 2/3
    m = np.array([[0.7, np.nan, np.nan], [0.8, 0.85, np.nan], [0.7, 0.9, 0.95]])
    assert average_compatibility(m) == pytest.approx(2 / 3)
    assert compatible_pairs(m).sum() == 2
    assert average_multimodel_accuracy(m) == pytest.approx((0.7 + 0.8 + 0.85 + 0.7 + 0.9 + 0.95) / 6)
    assert mean_cross_accuracy(m) == pytest.approx((0.8 + 0.7 + 0.9) / 3)
    assert compat_gain(m) == pytest.approx(((0.8 - 0.7) + (0.7 - 0.7) + (0.9 - 0.85)) / 3)
    u = np.array([[0.7, np.nan, np.nan], [0.75, 0.85, np.nan], [0.9, 0.85, 0.95]])
    assert upper_bound_compatibility(m, u) == pytest.approx(2 / 3)  # (1,0): .75 > .7; (2,0): .9 > .7; (2,1): .85 tie
    with pytest.raises(ValueError):
        average_compatibility(np.array([[0.5]]))


def test_compatibility_matrix_identical_and_unrelated_models():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    centres = np.eye(4)
    f = centres[y] + 0.05 * rng.normal(size=(40, 4))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    rot = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    m, u = compatibility_matrix([f, f], [f, f], y, y, eval_classes=[2, 4])
    assert m[1, 0] == m[0, 0] == 1.0 and np.isnan(m[0, 1])  # same features: perfect, a tie
    assert average_compatibility(m) == 0.0  # a tie is not compatible
    frot = f @ rot[:, [1, 2, 3, 0]].T @ rot.T  # a different space
    m2, _ = compatibility_matrix([f, frot], [f, frot], y, y)
    assert m2[1, 0] < 0.9
    assert class_mean_cosines([f, f], y, [4, 4]) == pytest.approx(1.0)


def _table(ac_s, ac_p, ac_l, gain_s=0.02, acc_s=0.9, acc_l=0.9, ub=1.0, cross_l=0.15):
    rows = []
    for seed, (a, b, c) in enumerate(zip(ac_s, ac_p, ac_l)):
        for arm, ac, gain, cross, acc, cos in (("simplex", a, gain_s + 0.01 * seed, 0.9 + 0.01 * seed, acc_s, 0.8),
                                               ("permuted_simplex", b, -0.7, 0.1 + 0.01 * seed, acc_s, 0.0 + 0.01 * seed),
                                               ("learned", c, -0.7, cross_l + 0.01 * seed, acc_l, 0.01 * seed)):
            rows.append({"seed": seed, "arm": arm, "ac_seen": ac, "ub_seen": ub, "gain_seen": gain,
                         "cross_seen": cross, "class_mean_cos": cos + 0.01 * seed, "min_accuracy": acc,
                         "mean_accuracy": acc})
    return pd.DataFrame(rows)


def test_measure_ac_reproduced_and_control_fails():
    t = _table([0.9, 1.0, 0.9], [0.0, 0.1, 0.0], [0.0, 0.0, 0.0])
    m, gate, control, _ = measure_ac(t)
    assert m.value == pytest.approx(0.9333333)
    assert gate.passed and control.measured.value == pytest.approx(1 / 30)
    claim = load_claims("stationary_representations")["simplex_ac_seen_classes"]
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "reproduced"


def test_measure_ac_failed_gate_and_passing_control():
    t = _table([0.9, 1.0, 0.9], [0.9, 1.0, 0.9], [0.0, 0.0, 0.0], ub=0.5)
    m, gate, control, _ = measure_ac(t)
    assert not gate.passed
    claims = load_claims("stationary_representations")
    claims["simplex_ac_seen_classes"].evaluate(m, gate=gate, control=control)
    assert claims["simplex_ac_seen_classes"].verdict == "inconclusive"
    t2 = _table([0.9, 1.0, 0.9], [0.9, 1.0, 0.9], [0.0, 0.0, 0.0])
    m, gate, control, _ = measure_ac(t2)
    assert gate.passed
    claims["simplex_ac_seen_classes"].evaluate(m, gate=gate, control=control)
    assert claims["simplex_ac_seen_classes"].verdict == "inconclusive"  # the control meets the criterion
    assert "discriminate" in claims["simplex_ac_seen_classes"].reason


def test_measure_ac_not_reproduced():
    t = _table([0.1, 0.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    m, gate, control, _ = measure_ac(t)
    claim = load_claims("stationary_representations")["simplex_ac_seen_classes"]
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "not_reproduced"


def test_measure_gain_and_class_means():
    t = _table([1, 1, 1], [0, 0, 0], [0, 0, 0], gain_s=0.02)
    m, gate, control, _ = measure_gain(t)
    assert m.value == pytest.approx(0.03) and control.measured.value == pytest.approx(-0.7)
    m, gate, control, _ = measure_class_means(t)
    assert m.value == pytest.approx(0.81) and gate.passed
    t_bad = _table([1, 1, 1], [0, 0, 0], [0, 0, 0], acc_s=0.5)
    assert not measure_class_means(t_bad)[1].passed


def test_measure_simplex_vs_learned_gate_against_handicap():
    t = _table([1, 1, 1], [0, 0, 0], [0, 0, 0])
    m, gate, control, _ = measure_simplex_vs_learned(t)
    assert m.value == pytest.approx(0.75) and gate.passed
    assert control.measured.value == pytest.approx(-0.05)
    claim = load_claims("stationary_representations")["simplex_vs_learned_cross_accuracy"]
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "reproduced"
    handicapped = _table([1, 1, 1], [0, 0, 0], [0, 0, 0], acc_l=0.8)
    m, gate, control, _ = measure_simplex_vs_learned(handicapped)
    assert not gate.passed and gate.value == pytest.approx(-0.1)
