"""papers.ignite: oracles, datasets, the stacked surrogate, the IGNITE loss and dual step, optimizers' helpers
and the verdict rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from papers.ignite.analysis import (constraint_check, degradation, improvement_gate, measure_equal_distance,
                                    measure_improvement, measure_unseen_sharpness, paired_differences,
                                    pair_summary, select_eps_fraction)
from papers.ignite.method import (Arm, IgniteState, SearchConfig, StackedMLP, SurrogateConfig, _aggregate,
                                  gradient_ascent, ignite_loss, member_generators, prepare_seeds, reinforce,
                                  standard_arms, surrogate_gradient_norm, to_designs, top_designs,
                                  train_surrogates, travelled)
from shared.claims import Gate, load_claims
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


def test_shifted_variant_draws_around_its_centre():
    spec = task_spec("ackley_s12")
    assert (spec.dim, spec.oracle_name, spec.center, spec.low, spec.high) == (12, "ackley", 2.5, -5.0, 5.0)
    d = make_dataset(spec, 2000, seed=1)
    x = torch.cat([d.x_offline, d.x_unseen])
    assert abs(x.mean().item() - 2.5) < 0.05 and abs(x.std().item() - 0.75) < 0.05
    assert torch.equal(oracle(spec, d.x_offline), ackley(d.x_offline))
    assert d.y_offline.max() <= d.y_unseen.min()
    assert task_spec("rosenbrock_s4").center == -1.0
    with pytest.raises(ValueError):
        task_spec("ackley_sx")


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
    x, saved = gradient_ascent(model, data, 2, 1, "grad", SearchConfig(n_candidates=4, steps=500, lr=0.1), (0, 3))
    designs = to_designs(data, x)
    x0 = top_designs(data, 4).unsqueeze(0).repeat(2, 1, 1, 1)
    assert torch.equal(saved[0], x0)
    # normalised steps: 3 iterations move a design by exactly 3 * 0.1 * sqrt(10) unless it reaches the bound
    # (the three designs that start below 0 in standardised units do not; the fourth does)
    moved = (saved[3] - x0).norm(dim=-1)
    away = x0[..., 0] < 0
    assert away.sum() >= 2 and torch.allclose(moved[away], torch.full_like(moved[away], 0.3 * math.sqrt(10)), atol=1e-5)
    assert (moved[~away] <= 0.3 * math.sqrt(10) + 1e-6).all()
    assert torch.allclose(travelled(saved[3], x0), moved.mean(-1))
    assert torch.allclose(designs[..., 0], torch.full_like(designs[..., 0], 5.12))  # pushed to the bound
    start = to_designs(data, top_designs(data, 4).unsqueeze(0))
    assert torch.allclose(designs[0, :, :, 1:], start[0, :, :, 1:], atol=1e-5)  # other coordinates untouched


def test_normalised_steps_equalise_distance_and_raw_steps_do_not():
    data = prepare_seeds(task_spec("rastrigin"), 40, [0])
    steep, flat = _linear_surrogate(10, 1), _linear_surrogate(10, 1)
    with torch.no_grad():
        flat.weights[1].mul_(0.1)  # the same surrogate, ten times flatter
    x0 = top_designs(data, 4).unsqueeze(0)
    cfg = SearchConfig(n_candidates=4, steps=2, lr=0.01)
    d = [travelled(gradient_ascent(m, data, 1, 1, "grad", cfg)[0], x0) for m in (steep, flat)]
    assert torch.allclose(d[0], d[1])
    raw = SearchConfig(n_candidates=4, steps=2, lr=0.01, normalized=False)
    r = [travelled(gradient_ascent(m, data, 1, 1, "grad", raw)[0], x0) for m in (steep, flat)]
    assert torch.allclose(r[1], 0.1 * r[0], rtol=1e-4)


def test_arms_share_or_differ_in_initialisation_and_batches():
    data = prepare_seeds(task_spec("rastrigin"), 64, [0, 1])
    cfg = SurrogateConfig(hidden=8, n_layers=1, ensemble=2, epochs=1, batch_size=8)
    arms = [Arm("vanilla"), Arm("vanilla_copy"), Arm("vanilla_aa", None, init_salt=4, batch_salt=5)]
    model, state, _ = train_surrogates(data, arms, cfg, 1.0, "cpu", False, "t")
    w = model.weights[0]  # members: arm-major, then seed, then ensemble member (4 per arm)
    assert torch.equal(w[:4], w[4:8])  # same salts: identical training, identical weights
    assert not torch.equal(w[:4], w[8:])  # the A/A arm: another initialisation and minibatches
    assert not state.active.any()
    ignite_arms = standard_arms(0.25)
    assert [a.name for a in ignite_arms] == ["vanilla", "ignite", "vanilla_aa"]
    _, state, _ = train_surrogates(data, ignite_arms, cfg, 2.0, "cpu", False, "t")
    assert state.active.tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert state.eps[4:8].tolist() == [0.5] * 4


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


# --- measurements and verdicts on synthetic tables ---------------------------------------------------------

def _scores(diff_by_pair, seeds=(0, 1, 2), noise=0.0, aa=0.0, distance=1.0):
    rng = np.random.default_rng(0)
    rows = []
    for (task, opt), d in diff_by_pair.items():
        for s in seeds:
            base = 0.5 + 0.01 * s
            rows.append({"task": task, "seed": s, "optimizer": opt, "arm": "vanilla", "p100": base, "p50": base,
                         "distance": 2.0})
            v = base + d + noise * rng.normal()
            rows.append({"task": task, "seed": s, "optimizer": opt, "arm": "ignite", "p100": v, "p50": v,
                         "distance": 2.0 * distance})
            w = base + aa + 0.01 * (s - 1)
            rows.append({"task": task, "seed": s, "optimizer": opt, "arm": "vanilla_aa", "p100": w, "p50": w,
                         "distance": 2.0})
    return pd.DataFrame(rows)


def _claim(cid):
    return load_claims("ignite")[cid]


PASSED = Gate(passed=True, detail="test", value=1.0)


def test_paired_differences_and_summary():
    df = _scores({("a", "grad"): 0.1, ("b", "grad"): -0.2})
    wide = paired_differences(df, "p100")
    assert np.allclose(wide["diff"], [0.1] * 3 + [-0.2] * 3)
    s = pair_summary(df, "p100")
    assert s["diff"].round(6).tolist() == [0.1, -0.2] and s["seeds"].tolist() == [3, 3]


def test_improvement_measurement_and_verdicts():
    pairs = [(t, o) for t in "ab" for o in ("grad", "ens_min")]
    m, g, ctl, _ = measure_improvement(_scores({p: 0.01 * (i + 1) for i, p in enumerate(pairs)}), "p100", PASSED)
    # every seed: mean of 0.01, 0.02, 0.03, 0.04 = 0.025, zero spread
    assert (m.value, m.ci_low, m.ci_high) == pytest.approx((0.025, 0.025, 0.025))
    # A/A: vanilla_aa - vanilla = 0.01 (s - 1): mean 0, t interval +-4.303 * 0.01 / sqrt(3)
    assert ctl.measured.value == pytest.approx(0.0, abs=1e-12)
    assert ctl.measured.ci_high == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    c = _claim("improves_100th_shifted").evaluate(m, gate=g, control=ctl)
    assert c.verdict == "reproduced"
    down = measure_improvement(_scores({p: -0.05 for p in pairs}), "p50", PASSED)
    assert _claim("improves_50th_shifted").evaluate(*down[:1], gate=down[1], control=down[2]).verdict == "not_reproduced"
    # the A/A arm is 0.05 ahead too: the criterion does not discriminate
    aa = measure_improvement(_scores({p: 0.05 for p in pairs}, aa=0.05), "p100", PASSED)
    c = _claim("improves_100th_shifted").evaluate(aa[0], gate=aa[1], control=aa[2])
    assert c.verdict == "inconclusive" and c.control_meets
    # a failed gate (nothing to prevent) makes it inconclusive whatever the interval
    failed = Gate(passed=False, detail="no over-optimisation", value=0.0)
    c = _claim("improves_100th_shifted").evaluate(m, gate=failed, control=ctl)
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")


def _trajectory(drops):
    """vanilla grad p50 rises to 1.0 at step 5, then ends at 1.0 - drop[task]; IGNITE flat at 0.8."""
    rows = []
    for task, drop in drops.items():
        for s in (0, 1):
            for step, v in ((0, 0.5), (5, 1.0), (10, 1.0 - drop)):
                rows.append({"task": task, "seed": s, "optimizer": "grad", "arm": "vanilla", "step": step,
                             "p50": v, "p100": v + 0.1})
                rows.append({"task": task, "seed": s, "optimizer": "grad", "arm": "ignite", "step": step,
                             "p50": 0.8, "p100": 0.9})
    return pd.DataFrame(rows)


def _sharp(ratio_by_task, seeds=(0, 1, 2), aa=1.0, eps=1.0):
    rows = []
    for task, r in ratio_by_task.items():
        for s in seeds:
            for k in range(2):
                base = 2.0 + s + k
                rows.append({"task": task, "seed": s, "member": k, "arm": "vanilla", "eps": 0.0, "offline": base,
                             "unseen": base})
                rows.append({"task": task, "seed": s, "member": k, "arm": "ignite", "eps": eps,
                             "offline": base * r, "unseen": base * r * (1 + 0.01 * s)})
                rows.append({"task": task, "seed": s, "member": k, "arm": "vanilla_aa", "eps": 0.0,
                             "offline": base * aa, "unseen": base * aa * (1 + 0.01 * (s - 1))})
    return pd.DataFrame(rows)


def test_degradation_and_the_gate():
    d = degradation(_trajectory({"a": 0.2, "b": 0.0}))
    assert d.set_index(["task", "seed"])["drop"].round(6).to_dict() == {("a", 0): 0.2, ("a", 1): 0.2,
                                                                       ("b", 0): 0.0, ("b", 1): 0.0}
    # sharpness: vanilla 2..4 (mean 3), IGNITE 0.25 x that (mean 0.75) with eps 1: binds and is met
    sharp = _sharp({"a": 0.25, "b": 0.25}, seeds=(0, 1))
    assert improvement_gate(_trajectory({"a": 0.2, "b": 0.1}), sharp).passed
    no_drop = improvement_gate(_trajectory({"a": 0.2, "b": 0.01}), sharp)  # task b does not degrade
    assert not no_drop.passed and no_drop.value == pytest.approx(0.01)
    unmet = _sharp({"a": 0.5, "b": 0.5}, seeds=(0, 1))  # IGNITE at 1.5 eps: the constraint is not met
    assert not improvement_gate(_trajectory({"a": 0.2, "b": 0.1}), unmet).passed
    t = constraint_check(sharp)
    assert t.set_index("task").loc["a", "ignite_over_eps"] == pytest.approx(0.75)


def test_unseen_sharpness_check():
    m, g, ctl, _ = measure_unseen_sharpness(_sharp({"a": 0.5, "b": 0.7}))
    assert g is None and m.ci_high < -0.1
    assert ctl.measured.value == pytest.approx(np.mean([np.log(1 + 0.01 * (s - 1)) for s in range(3)]), abs=1e-9)
    c = _claim("unseen_sharpness_check").evaluate(m, control=ctl)
    assert c.verdict == "passed"
    m, _, ctl, _ = measure_unseen_sharpness(_sharp({"a": 0.95, "b": 0.97}))
    assert _claim("unseen_sharpness_check").evaluate(m, control=ctl).verdict == "failed"
    # the A/A arm 30% flatter as well: the check cannot tell the constraint from noise
    m, _, ctl, _ = measure_unseen_sharpness(_sharp({"a": 0.5}, aa=0.7))
    assert _claim("unseen_sharpness_check").evaluate(m, control=ctl).verdict == "failed"


def test_equal_distance_check():
    pairs = {("a", "grad"): 0.0, ("a", "ens_mean"): 0.0}
    m, g, ctl, _ = measure_equal_distance(_scores(pairs, distance=1.0))
    assert g is None and ctl is None and (m.value, m.ci_low, m.ci_high) == pytest.approx((0.0, 0.0, 0.0))
    assert _claim("equal_distance_check").evaluate(m).verdict == "passed"
    m, _, _, _ = measure_equal_distance(_scores(pairs, distance=0.5))  # IGNITE's designs travel half as far
    assert m.value == pytest.approx(np.log(0.5))
    assert _claim("equal_distance_check").evaluate(m).verdict == "failed"


def test_select_eps_fraction():
    rows = []
    for s in (0, 1):
        for arm, v in (("vanilla", 0.5), ("ignite@0.1", 0.4), ("ignite@0.25", 0.6), ("ignite@0.5", 0.6)):
            rows.append({"task": "a", "seed": s, "optimizer": "grad", "arm": arm, "p100": v, "p50": v})
    frac, table = select_eps_fraction(pd.DataFrame(rows))
    assert frac == 0.5  # 0.25 and 0.5 tie at +0.1: the larger fraction (weaker penalty) wins
    assert table["mean_gain"].round(6).tolist() == [0.1, 0.1, -0.1]


def test_discrete_search_picks_the_rewarded_letter():
    """On sequences g(x) = onehot(x)[0] + 10 rewards letter 0 at position 0 and nothing else."""
    data = prepare_seeds(task_spec("tfbind"), 256, [0])
    model = _linear_surrogate(32, 2)
    cfg = SearchConfig(n_candidates=8, steps=100, lr=0.5, reinforce_lr=0.2)
    letters = to_designs(data, gradient_ascent(model, data, 2, 1, "grad", cfg)[0])  # (A, S, N, L)
    start = to_designs(data, top_designs(data, 8).unsqueeze(0))
    assert (letters[..., 0] == 0).all()
    assert torch.equal(letters[0, :, :, 1:], start[0, :, :, 1:])  # unrewarded positions keep their argmax
    sampled = to_designs(data, reinforce(model, data, 2, 1, cfg))
    assert (sampled[..., 0] == 0).float().mean() > 0.9
