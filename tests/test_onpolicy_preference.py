"""papers.onpolicy_preference: environment, preference pairs, losses, the stacked policy and verdict rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from papers.onpolicy_preference import bandit as B
from papers.onpolicy_preference.analysis import (Seeds, auc_table, final_table, measure_complementary,
                                                 measure_difference, measure_interaction, measure_mode_seeking,
                                                 training_gate)
from papers.onpolicy_preference.experiment import (BanditSetup, DataSpec, MethodSpec, StackedCategoricalPolicy,
                                                   make_setup, run_method)
from shared.claims import load_claims


# --- environment -----------------------------------------------------------------------------------------

def test_reference_policy_matches_the_squashed_cauchy():
    p = B.reference_policy()
    assert p.shape == (100,) and p.min() > 0 and p.sum() == pytest.approx(1.0)
    # bin 0 holds every x below atanh(-0.98): the Cauchy CDF there
    x = math.atanh(-0.98)
    assert p[0] == pytest.approx(0.5 + math.atan((x + 0.7) / 0.4) / math.pi, rel=1e-9)
    assert int(np.argmax(p[1:-1])) + 1 == 16  # interior mode near tanh(-0.7) = -0.60 -> bin 19.8, skewed left
    # agrees with the authors' construction: a histogram of tanh(Cauchy) samples
    rng = np.random.default_rng(0)
    samples = np.tanh(-0.7 + 0.4 * rng.standard_cauchy(400_000))
    hist, _ = np.histogram(samples, bins=100, range=(-1, 1))
    assert np.abs(hist / hist.sum() - p).max() < 0.002


def test_rewards_and_peak_regions():
    r1, r2 = B.reward_vector(B.REWARD_PEAKS["R1"]), B.reward_vector(B.REWARD_PEAKS["R2"])
    assert r1[70] == 1.0 and r2[20] == 1.0
    assert r1[60] == pytest.approx(math.exp(-1)) and r1[50] == pytest.approx(math.exp(-4))
    mask = B.peak_region(70.0)
    assert mask.sum() == 21 and mask[60] and mask[80] and not mask[59]
    p = B.reference_policy()
    assert p[B.peak_region(70.0)].sum() < 0.05 < 0.4 < p[B.peak_region(20.0)].sum()  # R1 misaligned, R2 aligned


def test_kl_regularised_target_is_tilted_reference():
    log_ref = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    r = torch.tensor([0.0, 1.0, 0.5])
    expected = torch.tensor([0.5, 0.3 * math.e ** 2, 0.2 * math.e])
    expected = expected / expected.sum()
    assert torch.allclose(B.kl_regularised_target(log_ref, r, 0.5).exp(), expected, atol=1e-6)


def test_sample_actions_frequencies():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    a = B.sample_actions(probs.log(), 20_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(a[0], minlength=3).float() / 20_000
    assert torch.allclose(freq, probs[0], atol=0.01)


# --- metrics and divergences -----------------------------------------------------------------------------

def test_divergences_and_metrics_hand_values():
    p = torch.tensor([[0.5, 0.5]]).log()
    q = torch.tensor([[0.9, 0.1]]).log()
    assert float(B.reverse_kl(q, p)) == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), rel=1e-5)
    assert float(B.forward_kl(q, p)) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5), rel=1e-5)
    assert float(B.reverse_kl(p, p)) == pytest.approx(0.0, abs=1e-7)
    assert float(B.entropy(p)) == pytest.approx(math.log(2))
    r = torch.tensor([1.0, 0.0])
    assert float(B.expected_reward(q, r)) == pytest.approx(0.9)
    assert float(B.region_mass(q, torch.tensor([0.0, 1.0]))) == pytest.approx(0.1)


# --- preference data and losses --------------------------------------------------------------------------

def test_preference_pairs_hand_case():
    rewards = torch.tensor([0.1, 0.5, 0.3])  # pairs (0,1), (0,2), (1,2)
    w, l, valid = B.preference_pairs(rewards, None)
    assert w.tolist() == [1, 2, 1] and l.tolist() == [0, 0, 2] and valid.all()
    _, _, valid = B.preference_pairs(rewards, 0.3)
    assert valid.tolist() == [True, False, False]
    w, l, _ = B.preference_pairs(torch.tensor([0.2, 0.2]), None)
    assert (w.item(), l.item()) == (1, 0)  # tie: the second sample wins (authors' rule)
    assert B.n_pairs(10) == 45


def _toy():
    logits = torch.tensor([[[0.3, -0.2, 0.1, 0.0]]], requires_grad=True)  # (S=1, n=1, A=4)
    log_ref = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    actions = torch.tensor([[[0, 2, 3]]])
    rewards = torch.tensor([[[0.0, 1.0, 0.5]]])
    return logits, log_ref, actions, rewards


def test_ipo_and_dpo_match_their_formulas():
    logits, log_ref, actions, rewards = _toy()
    logp = torch.log_softmax(logits, -1)
    ratio = (logp[0, 0] - log_ref)
    # pairs (0,2): 2 wins; (0,3): 3 wins; (2,3): 2 wins
    h = torch.stack([ratio[2] - ratio[0], ratio[3] - ratio[0], ratio[2] - ratio[3]])
    tau, beta = 0.05, 0.1
    assert torch.allclose(B.ipo_loss(logp, log_ref, actions, rewards, tau), ((h - 10.0) ** 2).mean())
    assert torch.allclose(B.dpo_loss(logp, log_ref, actions, rewards, beta),
                          -torch.nn.functional.logsigmoid(beta * h).mean())
    # the threshold keeps only pairs with a reward gap >= 0.6: (0,2) alone
    assert torch.allclose(B.ipo_loss(logp, log_ref, actions, rewards, tau, threshold=0.6), (h[0] - 10.0) ** 2)
    # no valid pair: zero loss, no division by zero
    assert B.ipo_loss(logp, log_ref, actions, rewards, tau, threshold=2.0).item() == 0.0


def test_negative_gradient_pushes_down_the_loser_and_sft_does_not():
    logits, log_ref, actions, rewards = _toy()
    logp = torch.log_softmax(logits, -1)
    ipo_grad, = torch.autograd.grad(B.ipo_loss(logp, log_ref, actions, rewards, 0.05), logp)
    assert ipo_grad[0, 0, 0] > 0  # descending the loss lowers log pi of action 0, the loser of every pair
    sft = B.best_of_n_sft_loss(logp, actions, rewards)
    assert torch.allclose(sft, -logp[0, 0, 2])  # best of the 3 samples is action 2
    sft_grad, = torch.autograd.grad(sft, logp)
    assert sft_grad[0, 0, 0] == 0 and sft_grad[0, 0, 3] == 0 and sft_grad[0, 0, 2] < 0


def test_reinforce_loss_and_running_normaliser():
    norm = B.RunningNormalizer(1)
    r = torch.tensor([[[1.0, 2.0, 3.0]]])
    norm.update(r)
    adv = norm.normalize(r)
    assert torch.allclose(adv, torch.tensor([[[-1.0, 0.0, 1.0]]]) * math.sqrt(1.5), atol=1e-6)
    logp = torch.log(torch.tensor([[[0.2, 0.3, 0.5]]]))
    actions = torch.tensor([[[0, 1, 2]]])
    expected = -(logp[0, 0] * adv[0, 0]).mean()
    assert torch.allclose(B.reinforce_loss(logp, actions, adv), expected)


# --- the stacked policy ----------------------------------------------------------------------------------

def _reference_actor(model: StackedCategoricalPolicy, m: int) -> nn.Sequential:
    """The authors' categorical actor as plain torch layers, with member m's weights."""
    net = nn.Sequential(nn.Linear(100, 50), nn.LayerNorm(50), nn.ReLU(), nn.Linear(50, 256), nn.ReLU(),
                        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 100))
    linears = [net[0], net[3], net[5], net[7]]
    with torch.no_grad():
        for lin, w, b in zip(linears, model.weights, model.biases):
            lin.weight.copy_(w[m].T)
            lin.bias.copy_(b[m, 0])
        net[1].weight.copy_(model.ln_weight[m, 0])
        net[1].bias.copy_(model.ln_bias[m, 0])
    return net


def test_stacked_policy_matches_plain_layers_and_members_are_independent():
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    model = StackedCategoricalPolicy(gens, gain=1.0)
    x = torch.rand(2, 5, 100, generator=torch.Generator().manual_seed(3))
    out = model(x)
    assert out.shape == (2, 5, 100) and torch.allclose(out.exp().sum(-1), torch.ones(2, 5))
    for m in range(2):
        ref = torch.log_softmax(_reference_actor(model, m)(x[m]), -1)
        assert torch.allclose(out[m], ref, atol=1e-5)
    # the authors' tiny initialisation (gain 1e-2) starts near the uniform policy
    small = StackedCategoricalPolicy(gens)
    assert torch.allclose(small(x).exp(), torch.full((2, 5, 100), 0.01), atol=1e-4)
    # member 0's loss has no gradient on member 1
    model(x)[0].sum().backward()
    assert all(p.grad[1].abs().sum() == 0 for p in model.parameters())
    picked = model.select([1, 1, 0])
    assert picked.members == 3 and torch.allclose(picked(x[[1, 1, 0]]), out[[1, 1, 0]].detach(), atol=1e-6)


@pytest.fixture
def one_thread():
    """Tiny matmuls: a second intra-op thread only spin-waits on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_a_stack_equals_training_each_member_alone(one_thread):
    def gens():
        return [torch.Generator().manual_seed(s) for s in (0, 1)]

    x = torch.rand(2, 4, 100, generator=torch.Generator().manual_seed(5))
    target = torch.log_softmax(torch.randn(2, 1, 100, generator=torch.Generator().manual_seed(6)), -1)

    def fit(model, xs, tg):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(5):
            loss = B.reverse_kl(model(xs), tg).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model(xs).detach()

    both = fit(StackedCategoricalPolicy(gens()), x, target)
    alone = fit(StackedCategoricalPolicy(gens()).select([1]), x[[1]], target[[1]])
    assert torch.allclose(both[1], alone[0], atol=1e-5)


# --- the reference arm: the on-policy schedule with pi_ref samples ------------------------------------------

def test_reference_arm_matches_on_policy_schedule_but_samples_pi_ref(one_thread):
    setup = make_setup(["R1"], [0], 10, 5)
    model = StackedCategoricalPolicy([torch.Generator().manual_seed(0)])
    data = DataSpec(n_onpolicy_states=2, steps_per_round=3, n_samples=4)
    with pytest.raises(ValueError):
        MethodSpec("x", "ipo", "online", 0.01)
    ref = MethodSpec("ipo_ref", "ipo", "reference", 0.01)
    onp = MethodSpec("ipo_on", "ipo", "on_policy", 0.01)
    off = MethodSpec("ipo", "ipo", "offline", 0.01)
    assert not ref.on_policy and not ref.fixed_dataset and off.fixed_dataset and onp.on_policy
    c_ref, _ = run_method(ref, data, setup, model, 6, 3, progress=False)
    c_on, _ = run_method(onp, data, setup, model, 6, 3, progress=False)
    c_off, _ = run_method(off, DataSpec(n_offline_states=10, n_samples=4), setup, model, 6, 3, progress=False)
    # the same reward queries at every step: 2 states x 4 samples per round of 3 steps
    assert c_ref["queries"].tolist() == c_on["queries"].tolist() == [0, 8, 16]
    assert c_off["queries"].tolist() == [40, 40, 40]


# --- measurements and verdicts on synthetic tables -----------------------------------------------------------

EVAL, CTRL = [0, 1, 2], [10, 11, 12]
PAIRING = Seeds(EVAL, CTRL)
REF = {"R1": 0.04, "R2": 0.38}


def _final(values: dict[tuple[str, str], list[float]], queries: dict[str, int] | None = None) -> pd.DataFrame:
    """One final-evaluation row per (method, reward, seed); the list holds evaluation then control seeds."""
    rows = []
    for (method, reward_fn), vals in values.items():
        for seed, v in zip(EVAL + CTRL, vals):
            rows.append({"method": method, "reward_fn": reward_fn, "seed": seed, "step": 10, "reward": v,
                         "queries": (queries or {}).get(method, 100)})
    return pd.DataFrame(rows)


def test_seeds_pairing_is_checked():
    with pytest.raises(ValueError):
        Seeds([0, 1], [10])
    with pytest.raises(ValueError):
        Seeds([0, 1], [1, 2])


def test_difference_reproduced_with_a_failing_aa_control():
    final = _final({("ipo_onpolicy", "R1"): [0.9, 0.8, 1.0],
                    ("ipo_ref", "R1"): [0.5, 0.4, 0.6, 0.5, 0.45, 0.55]})
    gate = training_gate(final, ["ipo_onpolicy", "ipo_ref"], ["R1"], PAIRING, REF, 1e-4, ["ipo_onpolicy", "ipo_ref"])
    assert gate.passed and gate.value == pytest.approx(0.4 - 0.04)
    m, g, ctl, _ = measure_difference(final, "ipo_onpolicy", "ipo_ref", PAIRING, "u", gate)
    # differences 0.4, 0.4, 0.4: zero spread -> interval [0.4, 0.4]
    assert (m.value, m.ci_low, m.ci_high) == pytest.approx((0.4, 0.4, 0.4))
    # A/A: control minus evaluation = 0.0, 0.05, -0.05 -> mean 0, t interval +-4.303 * 0.05 / sqrt(3)
    half = 4.302653 * 0.05 / math.sqrt(3)
    assert ctl.measured.value == pytest.approx(0.0, abs=1e-12)
    assert (ctl.measured.ci_low, ctl.measured.ci_high) == pytest.approx((-half, half), rel=1e-5)
    claim = load_claims("onpolicy_preference")["on_policy_sampling_ipo_matched"]
    claim.evaluate(m, gate=g, control=ctl)
    assert claim.verdict == "reproduced" and claim.control_meets is False


def test_difference_inconclusive_when_the_control_meets_the_criterion():
    # the "control" seeds of ipo_ref score 0.3 higher: an A/A difference that meets the criterion means the
    # criterion does not discriminate
    final = _final({("ipo_onpolicy", "R1"): [0.9, 0.8, 1.0],
                    ("ipo_ref", "R1"): [0.5, 0.4, 0.6, 0.8, 0.7, 0.9]})
    gate = training_gate(final, ["ipo_onpolicy", "ipo_ref"], ["R1"], PAIRING, REF, 1e-4)
    claim = load_claims("onpolicy_preference")["on_policy_sampling_ipo_matched"]
    m, g, ctl, _ = measure_difference(final, "ipo_onpolicy", "ipo_ref", PAIRING, "u", gate)
    claim.evaluate(m, gate=g, control=ctl)
    assert claim.control_meets is True and claim.verdict == "inconclusive"


def test_difference_not_reproduced_and_gate_failures():
    final = _final({("bon_onpolicy_lr01", "R1"): [0.50, 0.41, 0.61],
                    ("bon_ref", "R1"): [0.5, 0.4, 0.6, 0.5, 0.45, 0.55]},
                   queries={"bon_onpolicy_lr01": 100, "bon_ref": 100})
    arms = ["bon_onpolicy_lr01", "bon_ref"]
    claim = load_claims("onpolicy_preference")["on_policy_sampling_sft_matched"]
    gate = training_gate(final, arms, ["R1"], PAIRING, REF, 1e-4, arms)
    m, g, ctl, _ = measure_difference(final, "bon_onpolicy_lr01", "bon_ref", PAIRING, "u", gate)
    assert g.passed and m.ci_high < 0.05
    claim.evaluate(m, gate=g, control=ctl)
    # differences 0, 0.01, 0.01: the whole interval lies below the smallest effect 0.05
    assert claim.verdict == "not_reproduced"
    # gate failures: the pre-trained policy is not pi_ref; an arm did not learn; unequal reward queries
    assert not training_gate(final, arms, ["R1"], PAIRING, REF, 0.5, arms).passed
    assert not training_gate(final, arms, ["R1"], PAIRING, {"R1": 0.48}, 1e-4, arms).passed
    unequal = _final({("bon_onpolicy_lr01", "R1"): [0.9, 0.8, 1.0], ("bon_ref", "R1"): [0.5] * 6},
                     queries={"bon_onpolicy_lr01": 100, "bon_ref": 10})
    bad = training_gate(unequal, arms, ["R1"], PAIRING, REF, 1e-4, arms)
    assert not bad.passed and "NOT equal" in bad.detail
    m, g, ctl, _ = measure_difference(unequal, "bon_onpolicy_lr01", "bon_ref", PAIRING, "u", bad)
    claim.evaluate(m, gate=g, control=ctl)
    assert claim.verdict == "inconclusive" and claim.reason.startswith("gate failed")


def test_complementary_takes_the_per_seed_minimum():
    auc = _final({("ipo_onpolicy", "R1"): [0.80, 0.70, 0.90],
                  ("ipo_ref", "R1"): [0.50, 0.60, 0.55, 0.52, 0.58, 0.57],
                  ("bon_onpolicy_lr01", "R1"): [0.70, 0.65, 0.60]})
    gate = training_gate(auc, ["ipo_onpolicy", "ipo_ref", "bon_onpolicy_lr01"], ["R1"], PAIRING, REF, 1e-4)
    m, g, ctl, _ = measure_complementary(auc, "ipo_onpolicy", ["ipo_ref", "bon_onpolicy_lr01"], PAIRING, gate,
                                         control_arm="ipo_ref")
    # per seed min(0.30, 0.10) = 0.10, min(0.10, 0.05) = 0.05, min(0.35, 0.30) = 0.30
    assert m.value == pytest.approx((0.10 + 0.05 + 0.30) / 3)
    # control: ipo_ref on control seeds (0.52, 0.58, 0.57) in place of ipo_onpolicy:
    # min(0.02, -0.18) = -0.18, min(-0.02, -0.07) = -0.07, min(0.02, -0.03) = -0.03
    assert ctl.measured.value == pytest.approx((-0.18 - 0.07 - 0.03) / 3)
    claim = load_claims("onpolicy_preference")["complementary_matched"]
    claim.evaluate(m, gate=g, control=ctl)
    assert claim.verdict == "inconclusive"  # mean 0.15, interval [-0.18, 0.48] straddles 0.02


def test_interaction_and_its_control():
    final = _final({("ipo_onpolicy", "R1"): [0.99, 0.98, 1.0], ("ipo_onpolicy", "R2"): [1.0, 1.0, 1.0],
                    ("bon_ref", "R1"): [0.30, 0.35, 0.32, 0.31, 0.33, 0.34],
                    ("bon_ref", "R2"): [0.93, 0.94, 0.92, 0.92, 0.95, 0.93]})
    gate = training_gate(final, ["ipo_onpolicy", "bon_ref"], ["R1", "R2"], PAIRING, REF, 1e-4)
    assert gate.passed
    m, g, ctl, _ = measure_interaction(final, "ipo_onpolicy", "bon_ref", PAIRING, gate)
    # gaps R1: 0.69, 0.63, 0.68; R2: 0.07, 0.06, 0.08 -> interaction 0.62, 0.57, 0.60
    assert m.value == pytest.approx((0.62 + 0.57 + 0.60) / 3)
    # A/A gaps R1: 0.01, -0.02, 0.02; R2: -0.01, 0.01, 0.01 -> 0.02, -0.03, 0.01
    assert ctl.measured.value == pytest.approx(0.0, abs=1e-12)
    claim = load_claims("onpolicy_preference")["geometry_interaction_matched"]
    claim.evaluate(m, gate=g, control=ctl)
    assert claim.verdict == "reproduced"
    # R2 gate: an arm that does not beat pi_ref on R2 by 0.05 fails it
    assert not training_gate(final, ["ipo_onpolicy", "bon_ref"], ["R1", "R2"], PAIRING, {"R1": 0.04, "R2": 0.9},
                             1e-4).passed


def test_mode_seeking_measurement_gate_and_control():
    rows = []
    curves = {"reverse_kl": [0.2, 0.6, 0.9], "forward_kl": [0.2, 0.4, 0.8]}
    for objective, masses in curves.items():
        for seed in EVAL + CTRL:
            if objective == "reverse_kl" and seed in CTRL:
                continue
            for step, mass in enumerate(masses):
                rows.append({"objective": objective, "reward_fn": "R1", "seed": seed, "step": step,
                             "peak_mass": mass + 0.01 * (seed % 10) * (objective == "reverse_kl")})
    fit = pd.DataFrame(rows)
    m, g, ctl, _ = measure_mode_seeking(fit, PAIRING, target_mass=0.99)
    # AUC difference per seed: (0.2+0.6+0.9)/3 + 0.01 s - (0.2+0.4+0.8)/3 = 0.1 + 0.01 s, s = 0, 1, 2
    assert m.value == pytest.approx(0.11)
    assert g.passed and g.value == pytest.approx(0.6)
    assert ctl.measured.value == pytest.approx(0.0, abs=1e-12)
    claim = load_claims("onpolicy_preference")["mode_seeking_v2"]
    claim.evaluate(m, gate=g, control=ctl)
    assert claim.verdict == "reproduced"
    # a target without its mass on the peak fails the gate
    assert not measure_mode_seeking(fit, PAIRING, target_mass=0.5)[1].passed


def test_auc_and_final_tables():
    rows = [{"method": "a", "reward_fn": "R1", "seed": 0, "step": st, "reward": r} for st, r in ((0, 0.0), (10, 0.6))]
    curves = pd.DataFrame(rows)
    assert final_table(curves)["reward"].tolist() == [0.6]
    assert auc_table(curves)["reward"].tolist() == [pytest.approx(0.3)]


def test_registry_matches_the_notebook():
    claims = load_claims("onpolicy_preference")
    assert list(claims) == ["on_policy_sampling_sft_matched", "on_policy_sampling_ipo_matched",
                            "negative_gradient_ipo_same_lr", "negative_gradient_dpo_same_lr",
                            "complementary_matched", "geometry_interaction_matched", "mode_seeking_v2"]
    assert all(c.kind == "replication" and c.has_gate and c.has_control for c in claims.values())
