"""papers.ignite: oracles, datasets, the stacked surrogate, the IGNITE loss and dual step, optimizers' helpers
and the verdict rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from papers.ignite.analysis import (constraint_check, decide_improvement, decide_unseen_sharpness,
                                    paired_differences, pair_summary)
from papers.ignite.method import (IgniteState, SearchConfig, StackedMLP, _aggregate, gradient_ascent,
                                  ignite_loss, make_claims, member_generators, prepare_seeds, reinforce,
                                  surrogate_gradient_norm, to_designs, top_designs)
from papers.ignite.tasks import (Landscape, ackley, enumerate_sequences, make_dataset, normalized_score,
                                 one_hot, oracle, rastrigin, rosenbrock, task_spec)


# --- oracles and data ------------------------------------------------------------------------------------

def test_oracles_at_known_points():
    z = torch.zeros(3, 5, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.allclose(ackley(z), zero, atol=1e-12)
    assert torch.allclose(rastrigin(z), zero, atol=1e-12)
    assert torch.allclose(rosenbrock(torch.ones(3, 4, dtype=torch.float64)), zero)
    # hand-computed: Rosenbrock(0, 0) = 100 * 0 + (1 - 0)^2 = 1; Rastrigin(1) = 10 + 1 - 10 cos(2 pi) = 1
    assert rosenbrock(torch.tensor([0.0, 0.0], dtype=torch.float64)).item() == pytest.approx(-1.0)
    assert rastrigin(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(-1.0)
    # Ackley(1, ..., 1) = -20 exp(-0.2) - exp(cos 2 pi) + 20 + e = 20 (1 - exp(-0.2))
    assert ackley(torch.ones(7, dtype=torch.float64)).item() == pytest.approx(-20 * (1 - math.exp(-0.2)))


def test_landscape_hand_example():
    pwm = torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, -1.0]], dtype=torch.float64)
    pairs = torch.tensor([[0, 2]])
    coupling = torch.tensor([[[0.5, 0.0], [0.0, 7.0]]], dtype=torch.float64)
    f = Landscape(pwm, pairs, coupling)
    # s = (1, 0, 1): pwm 2 + 3 - 1 = 4, coupling J[s0=1, s2=1] = 7;  s = (0, 1, 0): 1 + 5 + 0 + J[0, 0] = 6.5
    assert f(torch.tensor([[1, 0, 1], [0, 1, 0]])).tolist() == [11.0, 6.5]


def test_enumeration_and_one_hot():
    seqs = enumerate_sequences(3, 2)
    assert seqs.tolist() == [[a, b, c] for a in range(2) for b in range(2) for c in range(2)]
    assert one_hot(torch.tensor([[2, 0]]), 3).tolist() == [[0, 0, 1, 1, 0, 0]]


@pytest.mark.parametrize("name", ["rastrigin", "tfbind"])
def test_dataset_split_and_normalisation(name):
    spec = task_spec(name)
    d = make_dataset(spec, 400, seed=3)
    assert len(d.x_offline) == len(d.x_unseen) == 200
    assert d.y_offline.max() <= d.y_unseen.min()  # offline = bottom half
    assert torch.equal(oracle(spec, d.x_offline), d.y_offline)
    if spec.discrete:  # exact extremes from the full enumeration
        everything = oracle(spec, enumerate_sequences())
        assert d.y_min == everything.min().item() and d.y_max == everything.max().item()
        assert len({tuple(s) for s in torch.cat([d.x_offline, d.x_unseen]).tolist()}) == 400  # distinct
    else:
        assert d.y_min == min(d.y_offline.min().item(), d.y_unseen.min().item())
        assert d.x_offline.min() >= spec.low and d.x_offline.max() <= spec.high
    assert normalized_score(torch.tensor([d.y_min, d.y_max]), d).tolist() == [0.0, 1.0]
    again = make_dataset(spec, 400, seed=3)
    assert torch.equal(again.x_offline, d.x_offline)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        task_spec("sphere")
    with pytest.raises(ValueError, match="even"):
        make_dataset(task_spec("ackley"), 101, 0)


# --- the stacked surrogate -------------------------------------------------------------------------------

def _small_model(n_tiles=2, in_dim=3):
    return StackedMLP(in_dim, 5, 2, member_generators("t", [0, 1], 1, salt=1), n_tiles=n_tiles)


def test_stacked_mlp_equals_separate_mlps():
    model = _small_model()
    assert model.members == 4
    x = torch.randn(4, 6, 3)
    out = model(x)
    for m in range(4):
        h = x[m]
        for i, (w, b) in enumerate(zip(model.weights, model.biases)):
            h = h @ w[m] + b[m]
            if i < 2:
                h = torch.where(h > 0, h, 0.3 * h)
        assert torch.allclose(out[m], h.squeeze(-1), atol=1e-6)
    # tiling: member a * n_unique + u starts equal to member u (the two arms share initialisations)
    for w in model.weights:
        assert torch.equal(w[0], w[2]) and torch.equal(w[1], w[3]) and not torch.equal(w[0], w[1])


def test_initialisation_depends_only_on_own_seed():
    a = StackedMLP(3, 5, 1, member_generators("t", [7], 2, salt=1))
    b = StackedMLP(3, 5, 1, member_generators("t", [4, 7], 2, salt=1))
    assert torch.equal(a.weights[0], b.weights[0][2:])


def test_gradient_norm_matches_per_member_autograd():
    model = _small_model()
    x = torch.randn(4, 8, 3)
    norms = surrogate_gradient_norm(model, model(x))
    for m in range(4):
        h = model(x)[m].mean()
        grads = torch.autograd.grad(h, list(model.parameters()))
        expected = torch.sqrt(sum(g.pow(2).sum() for g in grads))  # only slice m is non-zero
        assert norms[m].item() == pytest.approx(expected.item(), rel=1e-5)


def test_ignite_loss_gradient_and_dual_step():
    model = _small_model()
    x, y = torch.randn(4, 8, 3), torch.randn(4, 8)
    eps = torch.tensor([1.0, 1.0, 0.05, 100.0])
    state = IgniteState(eps=eps, active=torch.tensor([False, False, True, True]), eta_lambda=0.5,
                        lam=torch.tensor([0.0, 0.0, 2.0, 0.1]))
    loss, extra = ignite_loss(model, (x, y), state)
    model.zero_grad()
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    # reference: each member's loss on its own, MSE + lambda * (||grad_w h|| / eps - 1)
    pred = model(x)
    mse = ((pred - y) ** 2).mean(-1)
    h = pred.mean(-1)
    for m, lam in enumerate([0.0, 0.0, 2.0, 0.1]):
        gh = torch.autograd.grad(h[m], list(model.parameters()), create_graph=True, retain_graph=True)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in gh))
        ref = torch.autograd.grad(mse[m] + lam * (norm / eps[m] - 1), list(model.parameters()), retain_graph=True)
        for g_all, g_ref in zip(got, ref):
            assert torch.allclose(g_all[m], g_ref[m], atol=1e-5)
        if m == 2:
            assert state.lam[2].item() == pytest.approx(max(0.0, 2.0 + 0.5 * (norm.item() / 0.05 - 1)), rel=1e-5)
        if m == 3:  # far inside the constraint: the multiplier is projected back to 0
            assert state.lam[3].item() == 0.0
    assert state.lam[:2].tolist() == [0.0, 0.0]  # vanilla members never get a multiplier
    assert set(extra) == {"mse", "sharpness_vanilla", "sharpness_ignite", "lambda"}


def test_members_do_not_interact():
    """Changing member 1's data leaves member 0's gradient unchanged (so stacked training = separate)."""
    model = _small_model()
    state = IgniteState(eps=torch.ones(4), active=torch.tensor([True, True, True, True]), eta_lambda=0.0,
                        lam=torch.ones(4))
    x, y = torch.randn(4, 8, 3), torch.randn(4, 8)
    grads = []
    for shift in (0.0, 5.0):
        x2 = x.clone()
        x2[1] += shift
        model.zero_grad()
        ignite_loss(model, (x2, y), state)[0].backward()
        grads.append([p.grad[0].clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


# --- optimizers' helpers ---------------------------------------------------------------------------------

def test_aggregate_and_top_designs():
    pred = torch.tensor([[[[1.0, 5.0], [3.0, 2.0]]]])  # (A=1, S=1, K=2, N=2)
    assert _aggregate(pred, "grad").tolist() == [[[1.0, 5.0]]]
    assert _aggregate(pred, "ens_mean").tolist() == [[[2.0, 3.5]]]
    assert _aggregate(pred, "ens_min").tolist() == [[[1.0, 2.0]]]
    data = prepare_seeds(task_spec("rastrigin"), 40, [0])
    top = top_designs(data, 3)
    best = torch.argsort(data.y[0], descending=True)[:3]
    assert torch.equal(top[0], data.x[0, best])


def _linear_surrogate(in_dim, n_tiles):
    """A StackedMLP that computes g(x) = x_0 + 10 exactly (the hidden unit stays in its linear range)."""
    model = StackedMLP(in_dim, 4, 1, member_generators("t", [0], 1, salt=1), n_tiles=n_tiles)
    with torch.no_grad():
        model.weights[0].zero_()
        model.weights[0][:, 0, 0] = 1.0
        model.biases[0].fill_(10.0)
        model.weights[1].zero_()
        model.weights[1][:, 0, 0] = 1.0
        model.biases[1].zero_()
    return model


def test_gradient_ascent_climbs_a_linear_surrogate_and_stays_in_the_box():
    data = prepare_seeds(task_spec("rastrigin"), 40, [0])
    model = _linear_surrogate(10, 2)
    x = gradient_ascent(model, data, 2, 1, "grad", SearchConfig(n_candidates=4, steps=500, lr=0.1))
    designs = to_designs(data, x)
    assert torch.allclose(designs[..., 0], torch.full_like(designs[..., 0], 5.12))  # pushed to the bound
    start = to_designs(data, top_designs(data, 4).unsqueeze(0))
    assert torch.allclose(designs[0, :, :, 1:], start[0, :, :, 1:], atol=1e-5)  # other coordinates untouched


def test_reinforce_moves_the_search_distribution_uphill():
    data = prepare_seeds(task_spec("rastrigin"), 64, [0])
    model = _linear_surrogate(10, 2)
    start = top_designs(data, 16)[0, :, 0].mean().item()
    x = reinforce(model, data, 2, 1, SearchConfig(n_candidates=16, steps=60, reinforce_lr=0.1))
    assert x.shape == (2, 1, 16, 10)
    assert torch.equal(x[0], x[1])  # identical surrogates and shared noise: identical proposals
    assert x[..., 0].mean().item() > start + 1.0  # the rewarded coordinate moved up
    hi = (5.12 - data.x_mean) / data.x_std  # box bound in standardised units, (S, 1, d)
    assert (x <= hi + 1e-6).all()


# --- verdict rules on synthetic tables -------------------------------------------------------------------

def _scores(diff_by_pair, seeds=(0, 1, 2), noise=0.0):
    rng = np.random.default_rng(0)
    rows = []
    for (task, opt), d in diff_by_pair.items():
        for s in seeds:
            base = 0.5 + 0.01 * s
            rows.append({"task": task, "seed": s, "optimizer": opt, "arm": "vanilla", "p100": base, "p50": base})
            v = base + d + noise * rng.normal()
            rows.append({"task": task, "seed": s, "optimizer": opt, "arm": "ignite", "p100": v, "p50": v})
    return pd.DataFrame(rows)


def _claim(cid):
    return {c.id: c for c in make_claims()}[cid]


def test_paired_differences_and_summary():
    df = _scores({("a", "grad"): 0.1, ("b", "grad"): -0.2})
    wide = paired_differences(df, "p100")
    assert np.allclose(wide["diff"], [0.1] * 3 + [-0.2] * 3)
    s = pair_summary(df, "p100")
    assert s["diff"].round(6).tolist() == [0.1, -0.2] and s["seeds"].tolist() == [3, 3]


def test_improvement_verdicts():
    pairs = [(t, o) for t in "abcd" for o in ("grad", "ens_min")]
    up = decide_improvement(_claim("improves_100th"), _scores({p: 0.01 * (i + 1) for i, p in enumerate(pairs)}), "p100")
    assert up.verdict == "reproduced" and up.measured.value == pytest.approx(0.045)
    down = decide_improvement(_claim("improves_100th"), _scores({p: -0.05 for p in pairs}), "p100")
    assert down.verdict == "not_reproduced"
    # 5 of 8 pairs ahead (62.5%) but the losses are large: no significant improvement -> inconclusive
    mixed = {p: (0.001 if i < 5 else -0.3) for i, p in enumerate(pairs)}
    assert decide_improvement(_claim("improves_50th"), _scores(mixed), "p50").verdict == "inconclusive"
    half = {p: (0.1 if i < 4 else -0.1) for i, p in enumerate(pairs)}
    assert decide_improvement(_claim("improves_50th"), _scores(half), "p50").verdict == "not_reproduced"


def _sharp(ratio_by_task, seeds=(0, 1, 2)):
    rows = []
    for task, r in ratio_by_task.items():
        for s in seeds:
            for k in range(2):
                base = 2.0 + s + k
                rows.append({"task": task, "seed": s, "member": k, "arm": "vanilla", "offline": base, "unseen": base})
                rows.append({"task": task, "seed": s, "member": k, "arm": "ignite", "offline": base * r,
                             "unseen": base * r * (1 + 0.01 * s)})
    return pd.DataFrame(rows)


def test_unseen_sharpness_verdicts():
    c = decide_unseen_sharpness(_claim("unseen_sharpness"), _sharp({"a": 0.5, "b": 0.7}))
    assert c.verdict == "reproduced" and c.measured.ci_high < 0
    assert decide_unseen_sharpness(_claim("unseen_sharpness"), _sharp({"a": 1.5, "b": 2.0})).verdict == "not_reproduced"
    # one task sharper: not every task below 1 -> not reproduced as stated, interval straddles or not -> inconclusive
    assert decide_unseen_sharpness(_claim("unseen_sharpness"), _sharp({"a": 0.5, "b": 1.2})).verdict == "inconclusive"
    single = decide_unseen_sharpness(_claim("unseen_sharpness"), _sharp({"a": 0.5}, seeds=(0,)))
    assert single.verdict == "inconclusive"  # one seed: no interval


def test_constraint_check():
    t = constraint_check(_sharp({"a": 0.5}), {"a": 2.0})
    assert t["ignite_over_eps"].item() == pytest.approx(0.5 * t["vanilla_over_eps"].item())


def test_discrete_search_picks_the_rewarded_letter():
    """On sequences g(x) = onehot(x)[0] + 10 rewards letter 0 at position 0 and nothing else."""
    data = prepare_seeds(task_spec("tfbind"), 256, [0])
    model = _linear_surrogate(32, 2)
    cfg = SearchConfig(n_candidates=8, steps=100, lr=0.5, reinforce_lr=0.2)
    letters = to_designs(data, gradient_ascent(model, data, 2, 1, "grad", cfg))  # (A, S, N, L)
    start = to_designs(data, top_designs(data, 8).unsqueeze(0))
    assert (letters[..., 0] == 0).all()
    assert torch.equal(letters[0, :, :, 1:], start[0, :, :, 1:])  # unrewarded positions keep their argmax
    sampled = to_designs(data, reinforce(model, data, 2, 1, cfg))
    assert (sampled[..., 0] == 0).float().mean() > 0.9
