"""papers.unlearnable_bayes: data, estimators, perturbations, models and the claims' measurements against
hand-checked cases."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from papers.unlearnable_bayes.analysis import (measure_beo_be, measure_beo_mix, measure_em_mix, measure_estimator,
                                               measure_objective, mix_minus_clean_only)
from papers.unlearnable_bayes.experiment import arms
from papers.unlearnable_bayes.method import (Split, beo_perturb, cover_hart_bayes_error, cover_hart_from_error,
                                             digits_split, em_perturb, gaussian_mixture_bayes_error,
                                             kernel_log_posterior, kernel_posterior_bayes_error, make_gmm,
                                             make_model, median_nn_distance, one_nn_error, project,
                                             random_perturb, train_and_test)
from shared.claims import load_claims

torch.set_num_threads(1)  # tiny models: one thread is faster than two contended ones


# ---------------------------------------------------------------- data
def test_digits_split_is_deterministic_stratified_and_disjoint():
    a, b = digits_split(0), digits_split(0)
    assert np.array_equal(a.x_protect, b.x_protect) and np.array_equal(a.y_test, b.y_test)
    assert len(a.y_clean) + len(a.y_protect) + len(a.y_test) == 1797
    assert abs(len(a.y_clean) - len(a.y_protect)) <= 1
    assert a.x_clean.min() >= 0 and a.x_clean.max() <= 1 and a.x_clean.shape[1] == 64
    assert set(np.bincount(a.y_protect)) <= set(range(60, 67))  # ~ 629 / 10 per class
    assert not np.array_equal(digits_split(1).y_test, a.y_test)


def test_two_class_1d_mixture_bayes_error_matches_closed_form():
    # N(-1, 1) vs N(+1, 1), equal priors: Bayes error = Phi(-1)
    be = gaussian_mixture_bayes_error(np.array([[-1.0], [1.0]]), 1.0, np.random.default_rng(0), 400_000)
    assert be == pytest.approx(norm.cdf(-1.0), abs=0.003)
    # identical classes: Bayes error = 1 - 1/K
    assert gaussian_mixture_bayes_error(np.zeros((4, 2)), 1.0, np.random.default_rng(0), 10_000) == pytest.approx(0.75)


def test_make_gmm_shapes_and_separation_order():
    x, y, be1 = make_gmm(200, 10, 9, 64, 1.0, 0.3, seed=1, n_mc=20_000)
    assert x.shape == (200, 64) and y.shape == (200,) and y.max() < 10
    _, _, be3 = make_gmm(200, 10, 9, 64, 3.0, 0.3, seed=1, n_mc=20_000)
    assert 0 <= be3 < be1 < 0.9


# ---------------------------------------------------------------- estimators
def test_one_nn_error_hand_example():
    x = np.array([[0.0], [0.1], [1.0], [1.1], [0.5]])
    y = np.array([0, 0, 1, 1, 1])
    # LOO neighbours: 0 -> 0.1 (ok), 0.1 -> 0 (ok), 1.0 -> 1.1 (ok), 1.1 -> 1.0 (ok),
    # 0.5 -> 0.1 (d 0.4 < 0.5 to 1.0): class 0 for a class-1 point -> one error in five
    assert one_nn_error(x, y) == pytest.approx(1 / 5)
    assert one_nn_error(x, y, leave_one_out=False) == 0.0


def test_cover_hart_inversion_hand_values():
    assert cover_hart_from_error(0.0, 10) == 0.0
    # K = 2: R* = (1 - sqrt(1 - 2 R)) / 2; R = 0.32 -> (1 - 0.6) / 2 = 0.2
    assert cover_hart_from_error(0.32, 2) == pytest.approx(0.2)
    # at chance the bound is chance
    assert cover_hart_from_error(0.9, 10) == pytest.approx(0.9)
    assert cover_hart_from_error(0.95, 10) == pytest.approx(0.9)  # clipped
    # the bound is below the 1-NN error and above half of it
    for r in (0.01, 0.1, 0.3):
        assert r / 2 <= cover_hart_from_error(r, 10) <= r


def test_cover_hart_estimate_close_to_known_bayes_error():
    x, y, be = make_gmm(629, 10, 9, 64, 2.0, 0.3, seed=3, n_mc=50_000)
    assert cover_hart_bayes_error(x, y) == pytest.approx(be, abs=0.03)
    assert cover_hart_bayes_error(x, y, leave_one_out=False) == 0.0


def test_kernel_posterior_hand_example():
    # three points on a line, sigma = 1: LOO posterior of point 0 uses points 1 (class 0, d=1) and 2 (class 1, d=2)
    x = torch.tensor([[0.0], [1.0], [2.0]])
    y = torch.tensor([0, 0, 1])
    p = kernel_log_posterior(x, y, 2, 1.0).exp()
    w1, w2 = math.exp(-0.5), math.exp(-2.0)
    assert p[0, 0].item() == pytest.approx(w1 / (w1 + w2), rel=1e-5)
    assert torch.allclose(p.sum(1), torch.ones(3))
    be = kernel_posterior_bayes_error(x, y, 2, 1.0).item()
    assert be == pytest.approx(float(np.mean(1 - p.max(1).values.numpy())), rel=1e-6)


def test_median_nn_distance():
    assert median_nn_distance(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(1.0)  # 1, 1, 2


# ---------------------------------------------------------------- perturbations
def test_project_and_random_noise_stay_in_ball_and_range():
    x0 = torch.tensor([[0.0, 0.5, 1.0]])
    assert torch.allclose(project(x0, torch.tensor([[-1.0, 0.9, 2.0]]), 0.1), torch.tensor([[0.0, 0.6, 1.0]]))
    x = digits_split(0).x_protect[:50]
    xr = random_perturb(x, 0.1, seed=0)
    assert np.abs(xr - x).max() <= 0.1 + 1e-6 and xr.min() >= 0 and xr.max() <= 1
    assert np.array_equal(xr, random_perturb(x, 0.1, seed=0))


def test_beo_raises_its_objective_within_budget():
    s = digits_split(0)
    x, y = s.x_protect[:150], s.y_protect[:150]
    xb, trace = beo_perturb(x, y, 0.1, steps=10, sigma=median_nn_distance(x))
    assert np.abs(xb - x).max() <= 0.1 + 1e-6 and xb.min() >= 0 and xb.max() <= 1
    assert trace[-1] > trace[0] + 0.01


def test_em_noise_lowers_surrogate_loss_within_budget():
    s = digits_split(0)
    x, y = s.x_protect[:100], s.y_protect[:100]
    xe, acc = em_perturb(x, y, 0.1, seed=0, rounds=2, train_steps=5, pgd_steps=3)
    assert np.abs(xe - x).max() <= 0.1 + 1e-6 and 0 <= acc <= 1


# ---------------------------------------------------------------- models and arms
@pytest.mark.parametrize("arch", ["logreg", "mlp", "cnn"])
def test_models_map_to_ten_logits_and_train(arch):
    assert make_model(arch, 0)(torch.zeros(3, 64)).shape == (3, 10)
    s = digits_split(0)
    r = train_and_test(arch, s.x_clean, s.y_clean, s.x_test, s.y_test, seed=0, steps=30, lr=3e-3, batch_size=64)
    assert r["test_acc"] > 0.3 and r["n_train"] == len(s.y_clean)
    r2 = train_and_test(arch, s.x_clean, s.y_clean, s.x_test, s.y_test, seed=0, steps=30, lr=3e-3, batch_size=64)
    assert r == r2


def test_make_model_rejects_unknown():
    with pytest.raises(ValueError):
        make_model("resnet", 0)


def test_arms_keep_true_labels_and_shift_only_the_control():
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    y = np.array([0, 1, 2, 9])
    split = Split(x[:2], y[:2], x[2:], y[2:], x, y)
    pert = {(m, 0.1): x[2:] + 0.01 for m in ("random", "em", "beo")}
    out = {(s, m, e): (xx, yy) for s, m, e, xx, yy in arms(split, pert, [0.1], 0.1)}
    assert np.array_equal(out[("mix", "beo", 0.1)][1], y)  # true labels
    assert np.array_equal(out[("mix", "shifted_labels", 0.0)][1], [0, 1, 3, 0])
    assert len(out[("clean_only", "none", 0.0)][1]) == 2 and len(out[("only", "em", 0.1)][1]) == 2


# ---------------------------------------------------------------- measurements and verdicts
def _acc_table(beo_diff, random_diff, em_diff, shift_diff, clean_only=0.95, em_alone_cost=0.05, eps=0.1):
    rows = []
    for seed in range(3):
        for arch in ("logreg", "mlp"):
            jitter = 0.002 * seed
            rows += [{"seed": seed, "arch": arch, "setting": "clean_only", "method": "none", "eps": 0.0, "test_acc": clean_only},
                     {"seed": seed, "arch": arch, "setting": "mix", "method": "beo", "eps": eps, "test_acc": clean_only + beo_diff + jitter},
                     {"seed": seed, "arch": arch, "setting": "mix", "method": "random", "eps": eps, "test_acc": clean_only + random_diff + jitter},
                     {"seed": seed, "arch": arch, "setting": "mix", "method": "em", "eps": eps, "test_acc": clean_only + em_diff + jitter},
                     {"seed": seed, "arch": arch, "setting": "mix", "method": "shifted_labels", "eps": 0.0, "test_acc": clean_only + shift_diff + jitter},
                     {"seed": seed, "arch": arch, "setting": "only", "method": "clean", "eps": 0.0, "test_acc": 0.94},
                     {"seed": seed, "arch": arch, "setting": "only", "method": "em", "eps": eps, "test_acc": 0.94 - em_alone_cost}]
    return pd.DataFrame(rows)


def test_mix_minus_clean_only_hand_values():
    acc = _acc_table(-0.10, 0.01, 0.0, -0.4)
    d = mix_minus_clean_only(acc, "beo", 0.1)
    assert d.tolist() == pytest.approx([-0.10, -0.098, -0.096])


def test_beo_mix_reproduced_when_beo_hurts_and_random_does_not():
    claims = load_claims("unlearnable_bayes")
    m, g, c = measure_beo_mix(_acc_table(-0.10, 0.01, 0.0, -0.4), 0.1)
    assert g.passed and m.value == pytest.approx(-0.098)
    assert claims["beo_mix_lowers_accuracy"].evaluate(m, gate=g, control=c).verdict == "reproduced"
    # BEO helps like extra data: not reproduced
    m, g, c = measure_beo_mix(_acc_table(0.01, 0.01, 0.0, -0.4), 0.1)
    assert claims["beo_mix_lowers_accuracy"].evaluate(m, gate=g, control=c).verdict == "not_reproduced"
    # the control hurts too: the criterion does not discriminate
    m, g, c = measure_beo_mix(_acc_table(-0.10, -0.10, 0.0, -0.4), 0.1)
    assert claims["beo_mix_lowers_accuracy"].evaluate(m, gate=g, control=c).verdict == "inconclusive"


def test_failed_gate_makes_beo_mix_inconclusive():
    m, g, c = measure_beo_mix(_acc_table(-0.10, 0.01, 0.0, -0.4, clean_only=0.5), 0.1)
    assert not g.passed
    claim = load_claims("unlearnable_bayes")["beo_mix_lowers_accuracy"].evaluate(m, gate=g, control=c)
    assert claim.verdict == "inconclusive" and "gate failed" in claim.reason


def test_em_mix_verdicts_gate_and_control():
    claims = load_claims("unlearnable_bayes")
    m, g, c = measure_em_mix(_acc_table(-0.1, 0.0, 0.01, -0.4), 0.1)
    assert g.passed and g.value == pytest.approx(0.05)
    assert claims["em_mix_does_not_lower_accuracy"].evaluate(m, gate=g, control=c).verdict == "reproduced"
    m, g, c = measure_em_mix(_acc_table(-0.1, 0.0, -0.05, -0.4), 0.1)
    assert claims["em_mix_does_not_lower_accuracy"].evaluate(m, gate=g, control=c).verdict == "not_reproduced"
    # EM noise useless even alone: gate fails
    m, g, c = measure_em_mix(_acc_table(-0.1, 0.0, 0.01, -0.4, em_alone_cost=0.0), 0.1)
    assert not g.passed
    assert claims["em_mix_does_not_lower_accuracy"].evaluate(m, gate=g, control=c).verdict == "inconclusive"
    # the shifted-label control harmless too: does not discriminate
    m, g, c = measure_em_mix(_acc_table(-0.1, 0.0, 0.01, 0.01), 0.1)
    assert claims["em_mix_does_not_lower_accuracy"].evaluate(m, gate=g, control=c).verdict == "inconclusive"


def _be_table(beo_ch, random_ch, beo_kernel=0.8, random_kernel=0.6, linf_excess=0.0):
    rows = []
    for seed in range(3):
        j = 0.001 * seed
        rows += [{"seed": seed, "method": "clean", "eps": 0.0, "cover_hart_be": 0.01, "kernel_be": 0.6, "linf": 0.0},
                 {"seed": seed, "method": "beo", "eps": 0.1, "cover_hart_be": beo_ch + j, "kernel_be": beo_kernel + j, "linf": 0.1 + linf_excess},
                 {"seed": seed, "method": "random", "eps": 0.1, "cover_hart_be": random_ch + j, "kernel_be": random_kernel + j, "linf": 0.1}]
    return pd.DataFrame(rows)


def _gmm_table(err, no_loo_err=-0.1):
    return pd.DataFrame([{"seed": s, "separation": sep, "exact_be": 0.1, "cover_hart_be": 0.1 + err + 0.001 * s,
                          "cover_hart_be_no_loo": 0.1 + no_loo_err} for s in range(3) for sep in (1.5, 2.0)])


def test_estimator_check_passes_and_no_loo_control_fails():
    claim = load_claims("unlearnable_bayes")["cover_hart_recovers_known_be"]
    m, c = measure_estimator(_gmm_table(0.005))
    assert m.value == pytest.approx(0.006)
    assert claim.evaluate(m, control=c).verdict == "passed" and claim.control_meets is False
    m, c = measure_estimator(_gmm_table(0.08))
    assert claim.evaluate(m, control=c).verdict == "failed"


def test_beo_be_claim_verdicts():
    claim = load_claims("unlearnable_bayes")["beo_raises_estimated_be"]
    m, g, c = measure_beo_be(_be_table(0.05, 0.01), _gmm_table(0.005), 0.1)
    assert g.passed and m.value == pytest.approx(0.041)
    assert claim.evaluate(m, gate=g, control=c).verdict == "reproduced"
    m, g, c = measure_beo_be(_be_table(0.011, 0.01), _gmm_table(0.005), 0.1)
    assert claim.evaluate(m, gate=g, control=c).verdict == "not_reproduced"
    m, g, c = measure_beo_be(_be_table(0.05, 0.01), _gmm_table(0.08), 0.1)  # estimator failed its check
    assert not g.passed and claim.evaluate(m, gate=g, control=c).verdict == "inconclusive"


def test_objective_check_gate_on_budget():
    claim = load_claims("unlearnable_bayes")["beo_objective_raised"]
    m, g, c = measure_objective(_be_table(0.05, 0.01), 0.1)
    assert g.passed and claim.evaluate(m, gate=g, control=c).verdict == "passed"
    m, g, c = measure_objective(_be_table(0.05, 0.01, linf_excess=0.01), 0.1)
    assert not g.passed and claim.evaluate(m, gate=g, control=c).verdict == "failed"
    m, g, c = measure_objective(_be_table(0.05, 0.01, random_kernel=0.8), 0.1)  # random raises it too
    assert claim.evaluate(m, gate=g, control=c).verdict == "failed"
