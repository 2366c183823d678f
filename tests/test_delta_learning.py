"""papers.delta_learning: logistic-regression geometry and losses, the LM-ladder task and DPO loss, verdict rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from papers.delta_learning import analysis as A
from papers.delta_learning import ladder as L
from papers.delta_learning import logistic as G
from shared.lm import continuation_logprobs


# --- logistic regression -------------------------------------------------------------------------------

def test_accuracy_is_one_minus_angle_over_pi():
    w = np.array([1.0, 0.0, 0.0])
    assert G.accuracy(3 * w, w) == pytest.approx(1.0)
    assert G.accuracy(-w, w) == pytest.approx(0.0)
    assert G.accuracy(np.array([0.0, 1.0, 0.0]), w) == pytest.approx(0.5)
    assert G.accuracy(np.array([1.0, 1.0, 0.0]), w) == pytest.approx(0.75)
    assert G.angle_for_accuracy(0.9) == pytest.approx(0.1 * math.pi)


def test_accuracy_formula_matches_monte_carlo():
    rng = np.random.default_rng(0)
    w, th = np.array([1.0, 0, 0, 0]), np.array([0.8, 0.5, -0.3, 0.1])
    x = rng.standard_normal((200_000, 4))
    assert np.mean(np.sign(x @ th) == np.sign(x @ w)) == pytest.approx(G.accuracy(th, w), abs=0.005)


@pytest.mark.parametrize("rho", [0.0, 0.5, 1.0])
def test_geometry_has_requested_accuracies_norms_and_shared_error(rho):
    g = G.make_geometry(20, 0.9, 0.8, 0.7, rho, 4.0, np.random.default_rng(1))
    models = [g.student, g.teacher_1, g.teacher_2]
    for th, acc in zip(models, [0.9, 0.8, 0.7]):
        assert G.accuracy(th, g.w_star) == pytest.approx(acc)
        assert np.linalg.norm(th) == pytest.approx(4.0)
    errs = []
    for th, acc in zip(models, [0.9, 0.8, 0.7]):
        a = G.angle_for_accuracy(acc)
        errs.append((th / 4.0 - math.cos(a) * g.w_star) / math.sin(a))
    for i in range(3):
        assert errs[i] @ g.w_star == pytest.approx(0.0, abs=1e-12)
        for j in range(i + 1, 3):
            assert errs[i] @ errs[j] == pytest.approx(rho, abs=1e-12)


def test_geometry_rejects_bad_input():
    with pytest.raises(ValueError, match="rho"):
        G.make_geometry(20, 0.9, 0.8, 0.7, 1.5, 4.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="d must be"):
        G.make_geometry(4, 0.9, 0.8, 0.7, 0.0, 4.0, np.random.default_rng(0))


def test_chosen_label_on_disagreement_follows_the_teachers_delta():
    """P(y_c=+1 | y_c != y_r, x) = s(z1) s(-z2) / (s(z1) s(-z2) + s(-z1) s(z2)) = sigma(z1 - z2)."""
    z1, z2 = np.array([-2.0, 0.3, 1.7, 4.0]), np.array([0.5, -1.1, 1.7, -3.0])
    s = G.sigmoid
    lhs = s(z1) * s(-z2) / (s(z1) * s(-z2) + s(-z1) * s(z2))
    np.testing.assert_allclose(lhs, s(z1 - z2), rtol=1e-12)


def _toy_data(n=4000, d=6, seed=0):
    g = G.make_geometry(d, 0.9, 0.75, 0.6, 0.3, 3.0, np.random.default_rng(seed))
    x, yc, yr = G.sample_pairs(g, n, np.random.default_rng(seed + 1))
    return g, x, yc, yr


def test_dpo_loss_is_log2_at_reference_and_ignores_ties():
    g, x, yc, yr = _toy_data()
    assert G.dpo_loss(g.student, g.student, x, yc, yr, 5.0) == pytest.approx(math.log(2))
    ties = yc == yr
    other = g.student + 0.3 * g.teacher_1
    # a tie's chosen and rejected log-ratios cancel: its loss stays log 2 for any theta
    assert G.dpo_loss(other, g.student, x[ties], yc[ties], yr[ties], 5.0) == pytest.approx(math.log(2))


def test_dpo_logit_is_beta_yc_times_update():
    g, x, yc, yr = _toy_data(n=50)
    keep = yc != yr
    delta = np.linspace(-0.2, 0.3, x.shape[1])
    loss = G.dpo_loss(g.student + delta, g.student, x[keep], yc[keep], yr[keep], 2.0)
    expected = np.mean(np.logaddexp(0.0, -2.0 * yc[keep] * (x[keep] @ delta)))
    assert loss == pytest.approx(expected, rel=1e-10)


def _numerical_grad(f, th, eps=1e-6):
    out = np.zeros_like(th)
    for i in range(th.size):
        e = np.zeros_like(th)
        e[i] = eps
        out[i] = (f(th + e) - f(th - e)) / (2 * eps)
    return out


def test_gradients_match_finite_differences():
    g, x, yc, yr = _toy_data(n=300)
    keep = yc != yr
    num = _numerical_grad(lambda t: G.dpo_loss(t, g.student, x[keep], yc[keep], yr[keep], 5.0), g.student)
    np.testing.assert_allclose(G.dpo_gradient(g.student, x, yc, yr, 5.0), num, atol=1e-6)
    th = g.student * 0.7
    num = _numerical_grad(lambda t: G.sft_loss(t, x, yc), th)
    np.testing.assert_allclose(G.sft_gradient(th, x, yc), num, atol=1e-6)


def test_logistic_fit_reaches_a_stationary_point():
    g, x, yc, _ = _toy_data(n=2000)
    w = G.logistic_fit(x, yc)
    np.testing.assert_allclose(G.sft_gradient(w, x, yc), 0.0, atol=1e-9)


def test_converged_dpo_adds_the_teachers_delta_and_sft_recovers_teacher_1():
    g, x, yc, yr = _toy_data(n=60_000, d=5, seed=3)
    update = G.dpo_converged(g.student, x, yc, yr, 5.0) - g.student
    delta = (g.teacher_1 - g.teacher_2) / 5.0
    assert G.cosine(update, delta) > 0.98
    assert np.linalg.norm(update) / np.linalg.norm(delta) == pytest.approx(1.0, abs=0.1)
    assert G.cosine(G.sft_converged(x, yc), g.teacher_1) > 0.99


def test_run_config_is_deterministic_and_shares_draws_across_teacher_2():
    a = G.run_config(10, 0.9, 0.8, 0.7, 0.5, 4.0, 5.0, 3000, 0.01, seed=7)
    b = G.run_config(10, 0.9, 0.8, 0.7, 0.5, 4.0, 5.0, 3000, 0.01, seed=7)
    c = G.run_config(10, 0.9, 0.8, 0.6, 0.5, 4.0, 5.0, 3000, 0.01, seed=7)
    assert a == b
    assert a["sft_converged_gain"] == c["sft_converged_gain"]  # SFT never sees teacher 2
    assert a["acc_student"] == pytest.approx(0.9) and c["acc_teacher_2"] == pytest.approx(0.6)


# --- LM ladder ------------------------------------------------------------------------------------------

def test_addition_encoding_hand_case():
    task = L.AdditionTask(3)
    a, b = torch.tensor([123, 5]), torch.tensor([989, 7])
    p = L.encode_prompts(task, a, b)
    d = L.DIGIT0
    assert p[0].tolist() == [L.BOS, 3 + d, 2 + d, 1 + d, L.PLUS, 9 + d, 8 + d, 9 + d, L.EQUALS]  # 123 -> 3 2 1
    assert p[1].tolist() == [L.BOS, 5 + d, d, d, L.PLUS, 7 + d, d, d, L.EQUALS]
    ans = L.encode_answers(task, a, b)
    assert ans[0].tolist() == [2 + d, 1 + d, 1 + d, 1 + d, L.EOS]  # 1112, least significant first
    assert ans[1].tolist() == [2 + d, 1 + d, d, d, L.EOS]  # 0012
    assert task.prompt_len == 9 and task.answer_len == 5 and task.seq_len == 14


def test_pad_exact_match_and_join():
    task = L.AdditionTask(1)
    answers = torch.tensor([[5 + 3, L.DIGIT0, L.EOS], [L.DIGIT0, L.DIGIT0 + 1, L.EOS]])
    responses = L.pad_responses([[8, 5, L.EOS], [5, 6], [8, 5, L.EOS, 9]], task.answer_len)
    assert responses.tolist() == [[8, 5, L.EOS], [5, 6, L.PAD], [8, 5, L.EOS]]
    assert L.exact_match(responses[:2], answers).tolist() == [True, False]
    prompts = torch.ones(2, 5, dtype=torch.long)
    ids, mask = L.join(prompts, responses[:2])
    assert ids.shape == (2, 8)
    assert mask.tolist() == [[False] * 5 + [True] * 3, [False] * 5 + [True, True, False]]


def test_mean_response_logprob_matches_shared_continuation_logprobs():
    torch.manual_seed(0)
    task = L.AdditionTask(2)
    model = L.build_model(task, L.ModelSpec(d_model=16, n_layers=1, n_heads=2)).eval()
    prompts = L.encode_prompts(task, torch.tensor([12, 99]), torch.tensor([34, 1]))
    responses = L.pad_responses([[6, 7, 8, L.EOS], [9, 9]], task.answer_len)
    ids, mask = L.join(prompts, responses)
    with torch.no_grad():
        ours = L.mean_response_logprob(model, ids, mask)
    ref = continuation_logprobs(model, prompts.tolist(), [[6, 7, 8, L.EOS], [9, 9]], pad_id=L.PAD, normalize=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_dpo_norm_loss_formula():
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    rc, rr = torch.tensor([-1.2, -2.0]), torch.tensor([-1.2, -1.2])
    loss, acc = L.dpo_norm_loss(pc, pr, rc, rr, beta=5.0)
    margins = 5.0 * torch.tensor([(0.2) - (-0.3), 0.0 - 0.2])
    assert loss.item() == pytest.approx(float(torch.nn.functional.softplus(-margins).mean()), rel=1e-6)
    assert acc.item() == 0.5
    same, _ = L.dpo_norm_loss(pc, pr, pc, pr, beta=5.0)
    assert same.item() == pytest.approx(math.log(2))


def test_select_checkpoints():
    curve = [(100, 0.0), (200, 0.2), (300, 0.45), (400, 0.6), (500, 0.9), (600, 0.95)]
    assert L.select_checkpoints(curve, (0.3, 0.55, 0.85)) == (2, 3, 4)
    assert L.select_checkpoints(curve, (0.3, 0.4, 0.99)) == (2, 3, 5)  # student falls back to the last
    with pytest.raises(ValueError, match="strong teacher"):
        L.select_checkpoints(curve, (0.3, 0.97, 0.99))


def test_pairs_distinct_mask():
    z = torch.zeros(3, 2, dtype=torch.long)
    pairs = L.PairData(z, torch.tensor([[5, 2], [6, 2], [7, 2]]), torch.tensor([[5, 2], [6, 0], [8, 2]]), z)
    assert pairs.distinct.tolist() == [False, True, True]


# --- verdict rules on synthetic tables --------------------------------------------------------------------

def _lr_table(gain_by_rho, column="dpo_step_gain", spread=0.001, seeds=4):
    rows = []
    for rho, gain in gain_by_rho.items():
        for gap, acc2 in ((0.1, 0.7), (0.2, 0.6)):
            for s in range(seeds):
                g = gain * (1 + gap) + spread * (s - seeds / 2)
                rows.append({"seed": s, "rho": rho, "acc_teacher_2_target": acc2, "delta_accuracy": gap,
                             column: g, "delta_cosine": 0.97 + 0.001 * s, "delta_norm_ratio": 1.0})
    return pd.DataFrame(rows)


def _claims():
    return {c.id: c for c in A.make_claims()}


def test_sign_verdicts_over_rho():
    up = A.decide_gain_by_rho(_claims()["lr_dpo_improves_student"], _lr_table({0.0: 0.01, 1.0: 0.02}),
                              "dpo_step_gain", "positive", 0.7)
    assert up.verdict == "reproduced" and "least favourable rho = 0" in up.measured.method
    mixed = A.decide_gain_by_rho(_claims()["lr_dpo_improves_student"], _lr_table({0.0: -0.01, 1.0: 0.02}),
                                 "dpo_step_gain", "positive", 0.7)
    assert mixed.verdict == "not_reproduced"
    noisy = A.decide_gain_by_rho(_claims()["lr_dpo_improves_student"],
                                 _lr_table({0.0: 0.0001, 1.0: 0.02}, spread=0.01), "dpo_step_gain", "positive", 0.7)
    assert noisy.verdict == "inconclusive"
    down = A.decide_gain_by_rho(_claims()["lr_sft_hurts"], _lr_table({0.0: -0.05}, column="sft_converged_gain"),
                                "sft_converged_gain", "negative", 0.7)
    assert down.verdict == "reproduced"


def test_delta_mechanism_and_gain_growth_rules():
    table = _lr_table({0.0: 0.01, 1.0: 0.02})
    assert A.decide_delta_mechanism(_claims()["lr_delta_mechanism"], table).verdict == "reproduced"
    bad = table.assign(delta_norm_ratio=2.0)
    assert A.decide_delta_mechanism(_claims()["lr_delta_mechanism"], bad).verdict == "not_reproduced"
    assert A.decide_gain_grows(_claims()["lr_gain_grows_with_delta"], table).verdict == "reproduced"
    shrinking = _lr_table({0.0: -0.01})  # gain * (1 + gap) falls with the gap when gain < 0
    assert A.decide_gain_grows(_claims()["lr_gain_grows_with_delta"], shrinking).verdict == "not_reproduced"


def _lm_table(dpo, sft, swap):
    rows = []
    for s in range(3):
        jitter = 0.002 * s
        for model, em in (("teacher_2", 0.3), ("teacher_1", 0.55), ("student", 0.85), ("dpo", 0.85 + dpo + jitter),
                          ("sft_chosen", 0.85 + sft - jitter), ("dpo_swapped", 0.85 + swap + jitter)):
            rows.append({"seed": s, "model": model, "exact_match": em})
    return pd.DataFrame(rows)


def test_lm_rules():
    c = _claims()
    good = _lm_table(0.05, -0.05, -0.1)
    assert A.decide_lm_sign(c["lm_dpo_improves_student"], good, "dpo", "positive").verdict == "reproduced"
    assert A.decide_lm_sign(c["lm_sft_hurts"], good, "sft_chosen", "negative").verdict == "reproduced"
    assert A.decide_lm_sign(c["lm_swap_reverses"], good, "dpo_swapped", "negative").verdict == "reproduced"
    assert A.decide_lm_dpo_beats_sft(c["lm_dpo_beats_sft"], good).verdict == "reproduced"
    bad = _lm_table(-0.05, 0.05, 0.1)
    assert A.decide_lm_sign(c["lm_dpo_improves_student"], bad, "dpo", "positive").verdict == "not_reproduced"
    assert A.decide_lm_dpo_beats_sft(c["lm_dpo_beats_sft"], bad).verdict == "not_reproduced"
    m = A.lm_change(good, "dpo")
    assert m.value == pytest.approx(0.05 + 0.002) and m.n == 3
