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


def test_orient_swaps_and_randomises_pairs():
    c, r = torch.tensor([[1, 1], [2, 2], [3, 3], [4, 4]]), torch.tensor([[5, 5], [6, 6], [7, 7], [8, 8]])
    assert L.orient(c, r, "paired", 0)[0].tolist() == c.tolist()
    sc, sr = L.orient(c, r, "swapped", 0)
    assert sc.tolist() == r.tolist() and sr.tolist() == c.tolist()
    rc, rr = L.orient(c, r, "random", 3)
    for i in range(4):  # each pair keeps its two responses, one on each side
        assert sorted([rc[i, 0].item(), rr[i, 0].item()]) == [c[i, 0].item(), r[i, 0].item()]
    assert torch.equal(L.orient(c, r, "random", 3)[0], rc)  # seeded
    with pytest.raises(ValueError, match="orientation"):
        L.orient(c, r, "sideways", 0)


def test_output_profile_hand_case():
    d = L.DIGIT0
    answers = torch.tensor([[2 + d, 1 + d, L.EOS], [9 + d, 0 + d, L.EOS], [5 + d, 5 + d, L.EOS]])  # 12, 9, 55
    responses = torch.tensor([[2 + d, 1 + d, L.EOS], [9 + d, 1 + d, L.EOS], [L.EOS, L.PAD, L.PAD]])  # 12, 19, bad
    p = L.output_profile(responses, answers)
    assert p["exact"] == pytest.approx(1 / 3) and p["above"] == pytest.approx(1 / 3)
    assert p["below"] == 0.0 and p["malformed"] == pytest.approx(1 / 3)
    assert p["digit0_diff"] == 0.0 and p["digit1_diff"] == pytest.approx(0.5)  # (0 + 1) / 2 well-formed


def test_gd_path_reaches_the_optimum_and_tracks_accuracy():
    g, x, yc, yr = _toy_data(n=3000, d=6, seed=2)
    opt = G.sft_converged(x, yc)
    p = G.gd_path(x, yc, 1.0, g.student, np.zeros(6), opt, g.w_star)
    assert p["reached_optimum"] and p["steps"] > 1
    assert p["accuracies"][0] == pytest.approx(G.accuracy(g.student, g.w_star))
    assert p["final_accuracy"] == pytest.approx(G.accuracy(opt, g.w_star), abs=2e-3)
    assert p["best_accuracy"] == pytest.approx(p["accuracies"].max()) and p["best_accuracy"] >= p["accuracies"][0]
    short = G.gd_path(x, yc, 1.0, g.student, np.zeros(6), opt, g.w_star, max_steps=2)
    assert not short["reached_optimum"] and short["steps"] == 2


def test_run_paths_shares_draws_and_control_has_equal_teachers():
    rows, curves = G.run_paths(8, 0.9, 0.8, 0.7, 0.5, 4.0, 5.0, 3000, seed=4)
    by = {r["arm"]: r for r in rows}
    assert set(by) == {"dpo", "sft", "dpo_equal_teachers"} == set(curves)
    assert by["dpo"]["acc_teacher_2"] == pytest.approx(0.7)
    assert by["dpo_equal_teachers"]["acc_teacher_2"] == pytest.approx(0.8)
    assert all(r["reached_optimum"] for r in rows)
    assert curves["sft"][0] == 0.0 and by["sft"]["best_gain"] >= 0.0


# --- measurements and verdicts on synthetic tables (hand-checked) ---------------------------------------

from shared.claims import load_claims  # noqa: E402
from shared.metrics import Measurement  # noqa: E402


def _claims():
    return load_claims("delta_learning")


def test_every_regime_combines_intervals():
    ms = {0: Measurement(0.02, 0.01, 0.03, 5, ""), 1: Measurement(0.05, -0.01, 0.11, 5, "")}
    g = A.every_regime(ms, "greater", "u")
    assert (g.value, g.ci_low, g.ci_high) == (0.02, -0.01, 0.03)
    l_ = A.every_regime(ms, "less", "u")
    assert (l_.value, l_.ci_low, l_.ci_high) == (0.05, 0.01, 0.11)
    w = A.every_regime(ms, "within", "u")
    assert (w.value, w.ci_low, w.ci_high) == (0.05, -0.01, 0.11)
    none = A.every_regime({0: Measurement(0.1, None, None, 1, "")}, "greater", "u")
    assert none.ci_low is None


def _lr_table(gain_by_rho, spread=0.001, seeds=4):
    rows = []
    for rho, gain in gain_by_rho.items():
        for gap, acc2 in ((0.1, 0.7), (0.2, 0.6)):
            for s in range(seeds):
                g = gain * (1 + gap) + spread * (s - seeds / 2)
                rows.append({"seed": s, "rho": rho, "acc_teacher_2_target": acc2, "delta_accuracy": gap,
                             "dpo_step_gain": g, "acc_student": 0.9, "acc_teacher_1": 0.8,
                             "sft_converged_gain": -0.1 + 0.001 * (s - 1.5),
                             "delta_cosine": 0.97 + 0.001 * s, "delta_norm_ratio": 1.0})
    return pd.DataFrame(rows)


def test_lr_checks_pass_and_fail_by_hand():
    c = _claims()
    ok = _lr_table({0.0: 0.01, 1.0: 0.02})
    m, gate, ctrl, _ = A.measure_first_step(ok, 0.7)
    # rho = 0: values 0.011 + 0.001 * (-2, -1, 0, 1) -> mean 0.0105
    assert m.value == pytest.approx(0.0105) and gate is None and ctrl is None
    assert c["lr_first_step_gain_positive"].evaluate(m).verdict == "passed"
    m, *_ = A.measure_first_step(_lr_table({0.0: -0.01, 1.0: 0.02}), 0.7)
    assert c["lr_first_step_gain_positive"].evaluate(m).verdict == "failed"
    m, *_ = A.measure_update_cosine(ok)
    assert m.value == pytest.approx(0.9715) and c["lr_converged_update_along_delta"].evaluate(m).verdict == "passed"
    m, *_ = A.measure_sft_to_teacher(ok, 0.7)
    assert abs(m.value) < 1e-12 and c["lr_sft_converges_to_teacher_1"].evaluate(m).verdict == "passed"
    m, *_ = A.measure_sft_to_teacher(ok.assign(sft_converged_gain=-0.05), 0.7)
    assert c["lr_sft_converges_to_teacher_1"].evaluate(m).verdict == "failed"
    m, *_ = A.measure_gain_growth(ok)  # rho = 0: paired difference 0.01 * 0.1 = 0.001 in every seed
    assert m.value == pytest.approx(0.001) and c["lr_first_step_gain_grows_with_gap"].evaluate(m).verdict == "passed"
    m, *_ = A.measure_gain_growth(_lr_table({0.0: -0.01}))
    assert c["lr_first_step_gain_grows_with_gap"].evaluate(m).verdict == "failed"


def _paths(dpo_best, sft_best, ctrl_best, dpo_final=0.02, ctrl_final=0.0, reached=True, seeds=4):
    rows = []
    for rho in (0.0, 1.0):
        for s in range(seeds):
            j = 0.001 * (s - 1.5)
            for arm, best, final in (("dpo", dpo_best, dpo_final), ("sft", sft_best, -0.1),
                                     ("dpo_equal_teachers", ctrl_best, ctrl_final)):
                rows.append({"seed": s, "rho": rho, "arm": arm, "best_gain": best + j, "final_gain": final + j,
                             "reached_optimum": reached, "steps": 100})
    return pd.DataFrame(rows)


def test_lr_path_replications_reproduced_not_reproduced_gate_and_control():
    c = _claims()
    m, gate, ctrl, _ = A.measure_early_stopped(_paths(0.03, 0.0, 0.0))
    assert m.value == pytest.approx(0.03) and m.ci_low == pytest.approx(0.03) and gate.passed
    assert ctrl.measured.value == pytest.approx(0.0)
    assert c["lr_dpo_beats_sft_early_stopped"].evaluate(m, gate=gate, control=ctrl).verdict == "reproduced"
    m, gate, ctrl, _ = A.measure_early_stopped(_paths(0.0, 0.01, 0.0))  # SFT better early
    assert c["lr_dpo_beats_sft_early_stopped"].evaluate(m, gate=gate, control=ctrl).verdict == "not_reproduced"
    m, gate, ctrl, _ = A.measure_early_stopped(_paths(0.03, 0.0, 0.03))  # the equal-teacher control gains too
    v = c["lr_dpo_beats_sft_early_stopped"].evaluate(m, gate=gate, control=ctrl)
    assert v.verdict == "inconclusive" and "does not discriminate" in v.reason
    m, gate, ctrl, _ = A.measure_converged(_paths(0.03, 0.0, 0.0, reached=False))
    assert not gate.passed
    v = c["lr_dpo_converged_improves_student"].evaluate(m, gate=gate, control=ctrl)
    assert v.verdict == "inconclusive" and v.reason.startswith("gate failed")
    m, gate, ctrl, _ = A.measure_converged(_paths(0.03, 0.0, 0.0, dpo_final=-0.02))
    assert c["lr_dpo_converged_improves_student"].evaluate(m, gate=gate, control=ctrl).verdict == "not_reproduced"


def _lm(arms, student=0.85, teachers=(0.3, 0.55), seeds=3, distinct=1000):
    rows, facts = [], []
    for s in range(seeds):
        j = 0.002 * s
        base = {"teacher_2": teachers[0], "teacher_1": teachers[1], "student": student}
        for model, em in {**base, **{k: student + v + j for k, v in arms.items()}}.items():
            rows.append({"seed": s, "model": model, "exact_match": em})
        facts.append({"seed": s, "distinct_pairs": distinct})
    return pd.DataFrame(rows), pd.DataFrame(facts)


# randomly oriented pairs hurt as much as SFT here, so "DPO beats SFT" is not also met by the no-delta control
GOOD = {"dpo": 0.05, "dpo_swapped": -0.1, "dpo_random": -0.06, "dpo_rerun": 0.05, "sft_chosen": -0.05, "sft_self": 0.0}


def test_lm_claims_by_hand():
    c = _claims()
    lm, facts = _lm(GOOD)
    claims = A.evaluate_all({k: v for k, v in c.items() if k.startswith("lm_")}, None, None, lm, facts, 0.7)
    assert {k: v.verdict for k, v in claims.items()} == {
        "lm_dpo_selected_improves_student": "reproduced", "lm_sft_selected_hurts": "reproduced",
        "lm_dpo_beats_sft_selected": "reproduced", "lm_dpo_above_swapped": "reproduced"}
    # dpo - student = 0.05 + 0.002 s -> mean 0.052; dpo - dpo_swapped = 0.15 exactly in every seed
    assert claims["lm_dpo_selected_improves_student"].measured.value == pytest.approx(0.052)
    assert claims["lm_dpo_above_swapped"].measured.ci_low == pytest.approx(0.15)
    assert claims["lm_dpo_above_swapped"].control.measured.value == pytest.approx(0.0)
    bad = {**GOOD, "dpo": -0.3, "sft_chosen": -0.1}
    lm, facts = _lm(bad)
    v = A.evaluate_all({"lm_dpo_selected_improves_student": c["lm_dpo_selected_improves_student"]}, None, None, lm,
                       facts, 0.7)
    assert v["lm_dpo_selected_improves_student"].verdict == "not_reproduced"
    # DPO on randomly oriented pairs that merely does not hurt also "beats" a harmful SFT: no discrimination
    lm, facts = _lm({**GOOD, "dpo_random": 0.0})
    v = A.evaluate_all({"lm_dpo_beats_sft_selected": _claims()["lm_dpo_beats_sft_selected"]}, None, None, lm, facts,
                       0.7)["lm_dpo_beats_sft_selected"]
    assert v.verdict == "inconclusive" and v.control_meets
    # a control that gains as much as DPO: the criterion does not discriminate
    lm, facts = _lm({**GOOD, "dpo_random": 0.05})
    v = A.evaluate_all({"lm_dpo_selected_improves_student": _claims()["lm_dpo_selected_improves_student"]}, None,
                       None, lm, facts, 0.7)["lm_dpo_selected_improves_student"]
    assert v.verdict == "inconclusive" and v.control_meets
    # gate: a ladder whose student is weaker than teacher 1, or too few distinct pairs
    for kwargs in ({"teachers": (0.3, 0.9)}, {"distinct": 50}, {"student": 0.7, "teachers": (0.2, 0.4)}):
        lm, facts = _lm(GOOD, **kwargs)
        v = A.evaluate_all({"lm_sft_selected_hurts": _claims()["lm_sft_selected_hurts"]}, None, None, lm, facts,
                           0.7)["lm_sft_selected_hurts"]
        assert v.verdict == "inconclusive" and v.reason.startswith("gate failed")


# --- Exp C: bold sections ------------------------------------------------------------------------------------

from papers.delta_learning import bold as B  # noqa: E402
from shared.claims import load_claims  # noqa: E402


def test_count_sections_on_hand_written_strings():
    assert B.count_sections("") == 0
    assert B.count_sections("**Intro**\nText.\n\n**Body**\nMore text.") == 2
    assert B.count_sections("## **Title**\nx\n**Why it matters:**\ny\n  **Indented**  ") == 3
    # inline bold, a bold lead-in followed by text, an unclosed span and a list item are not headers
    assert B.count_sections("This is **important** here.\n**Note:** read this.\n**Open\n- **Item**: text") == 0
    assert B.count_sections("**Tips**\n**More tips**\n****") == 2


def test_plain_text_strips_markdown():
    assert B.plain_text("# Title\n- **one** item\n2. two  items\n__x__") == "Title one item two items x"
    assert B.plain_text("**Header**\nText here.\n## **Another:**\nMore.") == "Text here. More."


TEXT = ("Tea is a drink made from leaves. It is popular around the world. Green tea is not fermented. "
        "Black tea is fully oxidised. Many people drink it every day.")


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_reformat_has_exactly_k_headers_and_keeps_the_content(k):
    out = B.reformat(TEXT, k)
    assert B.count_sections(out) == k
    assert B.body_text(out) == B.plain_text(TEXT)
    # reformatting already-formatted text gives the same content and the new number of headers
    again = B.reformat(out, 2)
    assert B.count_sections(again) == 2 and B.body_text(again) == B.plain_text(TEXT)


def test_reformat_groups_sentences_and_titles():
    out = B.reformat(TEXT, 2)  # 5 sentences -> groups of 2 (round(2.5) = 2) and 3
    assert out.split("\n\n")[0] == "**Tea is a drink**\nTea is a drink made from leaves. It is popular around the world."
    assert B.reformat(TEXT, 3, generic_headers=True).startswith("**Part 1**\n")
    assert B.count_sections(B.reformat(TEXT, 3, generic_headers=True)) == 3


def test_reformat_falls_back_to_words_and_refuses_too_short_text():
    units, sentences = B.split_units("one two three four", 3)
    assert not sentences and units == ["one", "two", "three", "four"]
    assert B.count_sections(B.reformat("one two three four", 3)) == 3
    with pytest.raises(ValueError):
        B.reformat("one two", 3)


def test_template_bank_is_deterministic_and_disjoint():
    train, held = B.template_bank()
    assert (train, held) == B.template_bank()
    assert len(train) == 16 * 48 * 5 and len(held) == 16 * 12 * 5
    assert len(set(train)) == len(train) and not set(train) & set(held)
    held_subjects = [s for i, s in enumerate(B.SUBJECTS) if i % B.HELDOUT_EVERY == B.HELDOUT_EVERY - 1]
    assert len(held_subjects) == 12
    # no held-out subject occurs in any training prompt
    assert not any(s in p for s in held_subjects for p in train)


def test_make_pairs_and_orientations():
    pairs, facts = B.make_pairs(["p1", "p2", "p3"], [TEXT, "too short", "One. Two three. Four five six."])
    assert pairs.prompts == ["p1", "p3"] and facts["usable"] == 2 and facts["sentence_split"] == 1.0
    c, r = pairs.oriented("dpo_3v2")
    assert [B.count_sections(t) for t in c + r] == [3, 3, 2, 2]
    c, r = pairs.oriented("dpo_2v3")
    assert [B.count_sections(t) for t in c + r] == [2, 2, 3, 3]
    c, r = pairs.oriented("dpo_3v3")
    assert [B.count_sections(t) for t in c + r] == [3, 3, 3, 3] and c != r
    assert [B.body_text(t) for t in c] == [B.body_text(t) for t in r]
    with pytest.raises(ValueError):
        pairs.oriented("sft_3")


def test_encode_masks_exactly_the_response_and_eos():
    tok = B.TinyChatTokenizer()
    ids, mask = B.encode(tok, ["Explain tea.", "Explain chess. Keep it simple."], ["tea is good .", "chess"])
    for row, m, resp in zip(ids, mask, ["tea is good .", "chess"]):
        r_ids = tok(resp)["input_ids"] + [tok.eos_token_id]
        assert row[m].tolist() == r_ids
        assert m.sum() == len(r_ids)


@pytest.fixture
def one_thread():
    """One torch thread (on a busy 2-core machine two threads make a tiny model 50x slower); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bold_arm_end_to_end_on_a_tiny_llama(one_thread):
    model, tok = B.tiny_model_and_tokenizer(0)
    rows, grid, facts, samples = B.run_bold(model, tok, [0], n_pool=4, n_train=4, n_select=2, n_eval=3,
                                            gen_tokens=12, eval_tokens=16, lrs=[1e-2], beta=5.0, batch_size=2,
                                            device="cpu", gen_batch=8)
    t = pd.DataFrame(rows)
    assert set(t["arm"]) == {"base", *B.ARMS} and t["sections"].notna().all()
    assert facts["pool_usable"] == 4 and facts["eval_pairs"] == 3
    assert t.set_index("arm").loc["dpo_3v2", "pair_accuracy"] >= 0.0
    # SFT at a large rate raises the log-probability of the held-out 3-section responses
    assert t.set_index("arm").loc["sft_3", "logp_shift_three"] > 0
    assert len(grid) == 2


def _bold_table(sections: dict, pair_acc=0.95, sft_shift=0.1, seeds=(0, 1, 2)):
    rows = []
    for i, s in enumerate(seeds):
        for arm, vals in sections.items():
            rows.append({"seed": s, "arm": arm, "sections": vals[i], "pair_accuracy": pair_acc,
                         "logp_shift_three": sft_shift if arm == "sft_3" else 0.01, "lr": 1e-5})
    return pd.DataFrame(rows)


BOLD_FACTS = {"pool_responses": 100, "pool_usable": 100, "pool_sentence_split": 0.95}
SECTIONS = {"base": [1.0, 1.0, 1.0], "dpo_3v2": [4.0, 4.5, 5.0], "dpo_2v3": [0.2, 0.3, 0.1],
            "dpo_3v3": [1.2, 1.0, 1.1], "dpo_3v2_rerun": [4.1, 4.4, 5.0], "sft_3": [2.9, 3.0, 3.1]}


def test_measure_bold_extrapolation_hand_values():
    m, gate, control, _ = A.measure_bold_extrapolation(_bold_table(SECTIONS), BOLD_FACTS, True)
    assert m.value == pytest.approx(1.5) and m.n == 3
    # t interval: mean 1.5, sd 0.5, t(0.975, 2) = 4.303 -> half width 4.303 * 0.5 / sqrt(3) = 1.242
    assert m.ci_low == pytest.approx(1.5 - 1.2421, abs=1e-3)
    assert gate.passed and control.measured.value == pytest.approx(-1.9)
    claim = load_claims("delta_learning")["bold_dpo_extrapolates"]
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "reproduced"  # interval [0.258, 2.742] lies above 0.25; control -1.9 does not
    # one seed lower and the interval straddles 0.25
    m, gate, control, _ = A.measure_bold_extrapolation(_bold_table(dict(SECTIONS, dpo_3v2=[3.5, 4.5, 5.0])),
                                                       BOLD_FACTS, True)
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "inconclusive" and m.ci_low < 0.25 < m.ci_high


def test_measure_bold_reproduced_and_not_reproduced():
    claims = load_claims("delta_learning")
    tight = dict(SECTIONS, dpo_3v2=[4.9, 5.0, 5.1], dpo_3v2_rerun=[5.0, 5.0, 5.0])
    m, gate, control, _ = A.measure_bold_extrapolation(_bold_table(tight), BOLD_FACTS, True)
    claims["bold_dpo_extrapolates"].evaluate(m, gate=gate, control=control)
    assert claims["bold_dpo_extrapolates"].verdict == "reproduced"
    m, gate, control, _ = A.measure_bold_reversal(_bold_table(tight), BOLD_FACTS, True)
    assert m.value == pytest.approx(0.2 - 5.0) and control.measured.value == pytest.approx(0.0)
    claims["bold_reversed_pairs_below_original"].evaluate(m, gate=gate, control=control)
    assert claims["bold_reversed_pairs_below_original"].verdict == "reproduced"
    flat = dict(SECTIONS, dpo_3v2=[2.9, 3.0, 3.1], sft_3=[2.9, 3.0, 3.1])
    m, gate, control, _ = A.measure_bold_dpo_vs_sft(_bold_table(flat), BOLD_FACTS, True)
    claims["bold_dpo_above_sft"].evaluate(m, gate=gate, control=control)
    assert m.value == pytest.approx(0.0) and claims["bold_dpo_above_sft"].verdict == "not_reproduced"


def test_measure_bold_control_that_passes_blocks_reproduction():
    # DPO(3 = 3) also writes more than 3 sections: the criterion does not discriminate
    both = dict(SECTIONS, dpo_3v2=[4.9, 5.0, 5.1], dpo_3v3=[4.9, 5.0, 5.1])
    m, gate, control, _ = A.measure_bold_extrapolation(_bold_table(both), BOLD_FACTS, True)
    claim = load_claims("delta_learning")["bold_dpo_extrapolates"]
    claim.evaluate(m, gate=gate, control=control)
    assert gate.passed and claim.verdict == "inconclusive" and "discriminate" in claim.reason


def test_measure_bold_failed_gates():
    tight = dict(SECTIONS, dpo_3v2=[4.9, 5.0, 5.1])
    # the DPO arm did not learn its preference on held-out pairs
    _, gate, _, _ = A.measure_bold_extrapolation(_bold_table(tight, pair_acc=0.6), BOLD_FACTS, True)
    assert not gate.passed and gate.value == pytest.approx(0.6)
    # the starting model's responses could not be cut at sentences
    _, gate, _, _ = A.measure_bold_extrapolation(_bold_table(tight), dict(BOLD_FACTS, pool_sentence_split=0.5), True)
    assert not gate.passed
    # SFT did not fit its data
    _, gate, _, _ = A.measure_bold_dpo_vs_sft(_bold_table(tight, sft_shift=-0.01), BOLD_FACTS, True)
    assert not gate.passed
    # the arm is off (the `small` profile): missing measurement, failed gate, inconclusive
    m, gate, control, _ = A.measure_bold_reversal(pd.DataFrame(), None, False)
    assert m.value is None and not gate.passed and "full" in gate.detail
    claim = load_claims("delta_learning")["bold_reversed_pairs_below_original"]
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "inconclusive"


def test_bold_arm_without_usable_pairs_is_a_failed_gate_not_a_crash():
    t = _bold_table(SECTIONS)
    t.loc[t["arm"] == "dpo_2v3", "sections"] = float("nan")  # what run_bold records when no pair was usable
    m, gate, control, detail = A.measure_bold_extrapolation(t, BOLD_FACTS, True)
    assert m.value is None and not gate.passed and "no section count" in detail
