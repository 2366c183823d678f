"""papers.onpolicy_preference: environment, preference pairs, losses, the stacked policy and verdict rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from papers.onpolicy_preference import bandit as B
from papers.onpolicy_preference.analysis import (auc_table, decide_all_greater, decide_geometry_interaction,
                                                 decide_mode_seeking, decide_on_policy_sampling, final_table,
                                                 Comparison)
from papers.onpolicy_preference.experiment import StackedCategoricalPolicy, make_claims


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


# --- verdict rules ---------------------------------------------------------------------------------------

def _claim(cid):
    return next(c for c in make_claims() if c.id == cid)


def test_decide_all_greater_outcomes():
    seeds = [0, 1, 2, 3]
    big = pd.Series([0.9, 0.8, 0.95, 0.85], index=seeds)
    small = pd.Series([0.1, 0.2, 0.15, 0.1], index=seeds)
    noisy = pd.Series([0.95, 0.1, 0.9, 0.2], index=seeds)
    c = decide_all_greater(_claim("negative_gradient"), [Comparison("a", big, small)], "u")
    assert c.verdict == "reproduced" and c.measured.value == pytest.approx(0.7375)
    assert c.measured.ci_low < 0.7375 < c.measured.ci_high
    c = decide_all_greater(_claim("negative_gradient"), [Comparison("a", big, small), Comparison("b", small, big)], "u")
    assert c.verdict == "not_reproduced" and c.measured.value == pytest.approx(-0.7375)
    c = decide_all_greater(_claim("negative_gradient"), [Comparison("a", big, small), Comparison("b", noisy, big)], "u")
    assert c.verdict == "inconclusive"
    one = pd.Series([0.9], index=[0])
    c = decide_all_greater(_claim("negative_gradient"), [Comparison("a", one, one * 0.1)], "u")
    assert c.verdict == "inconclusive" and c.measured.n == 1


def _synthetic_curves(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = []
    for (method, reward_fn), per_seed in values.items():
        for seed, v in enumerate(per_seed):
            rows.append({"method": method, "reward_fn": reward_fn, "seed": seed, "step": 0, "reward": 0.0})
            rows.append({"method": method, "reward_fn": reward_fn, "seed": seed, "step": 10, "reward": v})
    return pd.DataFrame(rows)


def test_claim_rules_on_synthetic_tables():
    curves = _synthetic_curves({
        ("pref_ft", "R1"): [0.30, 0.35, 0.32], ("bon_onpolicy", "R1"): [0.99, 0.98, 0.99],
        ("ipo", "R1"): [0.70, 0.72, 0.75], ("ipo_onpolicy", "R1"): [0.90, 0.91, 0.93],
        ("pref_ft", "R2"): [0.92, 0.93, 0.94], ("ipo_onpolicy", "R2"): [0.99, 1.0, 0.99],
    })
    final = final_table(curves)
    assert set(final["step"]) == {10}
    assert decide_on_policy_sampling(_claim("on_policy_sampling"), final).verdict == "reproduced"
    assert decide_geometry_interaction(_claim("geometry_interaction"), final).verdict == "reproduced"
    auc = auc_table(curves)
    assert auc.set_index(["method", "reward_fn", "seed"]).loc[("ipo", "R1", 0), "reward"] == pytest.approx(0.35)
    # the same tables with the on-policy arms made worse flip the verdict
    worse = final.copy()
    worse.loc[worse["method"] == "ipo_onpolicy", "reward"] = [0.5, 0.52, 0.55, 0.99, 1.0, 0.99]
    assert decide_on_policy_sampling(_claim("on_policy_sampling"), worse).verdict == "not_reproduced"


def test_mode_seeking_rule():
    rows = []
    for objective, masses in (("reverse_kl", [0.2, 0.6, 0.9]), ("forward_kl", [0.2, 0.4, 0.8])):
        for seed in range(3):
            for step, m in enumerate(masses):
                rows.append({"objective": objective, "reward_fn": "R1", "seed": seed, "step": step,
                             "peak_mass": m + 0.01 * seed * (objective == "reverse_kl")})
    c = decide_mode_seeking(_claim("mode_seeking"), pd.DataFrame(rows))
    assert c.verdict == "reproduced" and c.measured.value == pytest.approx(0.1 + 0.01, abs=1e-9)
