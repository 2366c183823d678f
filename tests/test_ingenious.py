"""papers.ingenious: facility location, greedy gains, Taylor softmax, partitioning, corpus, losses and the
measure_* functions against hand-computed cases (incl. a failed gate and a control that meets the criterion)."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.ingenious.method import (build_corpus, cosine_kernel, facility_location, greedy_gains,
                                     ingenious_select, measure_fl_beats_random, measure_fl_objective,
                                     measure_fl_retention, partition_sizes, retention, run_arm, taylor_softmax,
                                     unigram_loss)
from shared.claims import verdict_rule, Rule

SIM = np.array([[1.0, 0.5, 0.0],
                [0.5, 1.0, 0.0],
                [0.0, 0.0, 1.0]])


def test_facility_location_hand_values():
    assert facility_location(SIM, []) == 0.0
    assert facility_location(SIM, [0]) == pytest.approx(1.5)  # 1 + 0.5 + 0
    assert facility_location(SIM, [0, 2]) == pytest.approx(2.5)  # 1 + 0.5 + 1
    assert facility_location(SIM, [0, 1, 2]) == pytest.approx(3.0)


def test_greedy_gains_hand_values():
    # step 0: column sums 1.5, 1.5, 1 -> element 0 (tie to the lowest index), gain 1.5
    # step 1: gains of 1 and 2 over cover (1, .5, 0): 0.5 and 1 -> element 2, gain 1; step 2: element 1, 0.5
    order, gains = greedy_gains(SIM)
    assert order.tolist() == [0, 2, 1]
    assert gains.tolist() == pytest.approx([1.5, 0.5, 1.0])
    # the gains telescope to f(ground set)
    assert gains.sum() == pytest.approx(facility_location(SIM, [0, 1, 2]))


def test_taylor_softmax_hand_values():
    p = taylor_softmax(np.array([0.0, 1.0]))
    assert p.tolist() == pytest.approx([1 / 3.5, 2.5 / 3.5])
    assert taylor_softmax(np.array([-1.0, 0.0])).tolist() == pytest.approx([0.5 / 1.5, 1 / 1.5])


def test_partition_sizes_proportional_and_sum():
    # 10 items in 3 parts of sizes 4, 3, 3; k = 5: exact 2, 1.5, 1.5 -> 2, then one +1 to the first tie
    assert partition_sizes(10, 3, 5).tolist() == [2, 2, 1]
    assert partition_sizes(1000, 8, 250).sum() == 250


def test_cosine_kernel_clips_and_centres():
    f = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    k = cosine_kernel(f, center=False)
    assert np.allclose(k, np.eye(3))  # cos = -1 between rows 0 and 2 clipped to 0
    # a common offset makes uncentred cosines all ~1; centring removes it
    g = np.array([[10.0, 1.0], [10.0, -1.0]])
    assert cosine_kernel(g, center=False)[0, 1] > 0.95
    assert cosine_kernel(g, center=True)[0, 1] == pytest.approx(0.0)


def test_unigram_loss_hand_value():
    # train counts of symbols (0, 1) = (3, 1); add-one -> (4, 2)/6; test = [0, 1]
    v = unigram_loss(np.array([0, 0, 0, 1]), np.array([0, 1]), 2)
    assert v == pytest.approx(-(np.log(4 / 6) + np.log(2 / 6)) / 2)


def test_build_corpus_splits_without_leak():
    text = "".join(chr(97 + (i % 7)) for i in range(1000))
    c = build_corpus(text, window=10, n_pool=50, n_test=5, test_fraction=0.1)
    assert c.pool.shape == (50, 10) and c.test.shape == (5, 10)
    assert len(c.vocab) == 7
    with pytest.raises(ValueError):
        build_corpus(text, window=10, n_pool=91, n_test=5, test_fraction=0.1)  # only 90 train windows


def test_ingenious_select_size_and_objective():
    rng = np.random.default_rng(0)
    # one big cluster of 82 points and 6 small clusters of 3 in other directions: the greedy gains of the
    # first pick in each small cluster are large, so the Taylor-softmax sample covers them; a uniform random
    # 15 of 100 misses some
    centres = 5.0 * np.eye(7)
    feats = np.concatenate([centres[0] + rng.normal(0, 0.3, (82, 7))]
                           + [centres[c] + rng.normal(0, 0.3, (3, 7)) for c in range(1, 7)])
    gaps = []
    for s in range(5):
        subset, f_sel, f_rand = ingenious_select(feats, 15, 1, np.random.default_rng(s))
        assert len(subset) == 15 and len(np.unique(subset)) == 15
        gaps.append(f_sel - f_rand)
    assert min(gaps) > 0 and np.mean(gaps) > 1.0  # hand-run: 2.1, 0.2, 1.3, 4.0, 1.5


def test_retention_hand_value():
    # reference 3, full 1: an arm at 1.5 keeps (3 - 1.5) / (3 - 1) = 0.75
    assert retention([1.5], [1.0], 3.0).tolist() == pytest.approx([0.75])


def _table(full, random, random_b, fl, warm=None):
    rows = []
    for arm, vals in (("full", full), ("random", random), ("random_b", random_b), ("fl", fl)):
        for s, v in enumerate(vals):
            rows.append({"arm": arm, "seed": s, "heldout_loss": v,
                         "warm_heldout_loss": (warm[s] if warm is not None else 2.5)})
    return pd.DataFrame(rows)


def _rule(direction, null, effect):
    return Rule(direction=direction, null_value=null, smallest_effect=effect)


def test_measure_fl_beats_random_pass_gate_fail_and_control():
    t = _table(full=[1.80, 1.81, 1.79], random=[1.90, 1.91, 1.92], random_b=[1.905, 1.90, 1.925],
               fl=[1.85, 1.86, 1.86])
    m, gate, control, _ = measure_fl_beats_random(t, max_loss=2.0, min_room=0.05)
    assert m.value == pytest.approx(np.mean([0.05, 0.05, 0.06]))
    assert m.ci_low > 0
    assert gate.passed and gate.value == pytest.approx(np.mean([0.10, 0.10, 0.13]))
    assert control.measured.value == pytest.approx(np.mean([-0.005, 0.01, -0.005]))
    assert verdict_rule("replication", _rule("greater", 0.0, 0.0), m, gate, control)[0] == "reproduced"
    # failed gate: the full-data model did not learn
    _, gate2, _, _ = measure_fl_beats_random(t, max_loss=1.5, min_room=0.05)
    assert not gate2.passed and gate2.value == pytest.approx(np.mean([0.10, 0.10, 0.13]))
    # failed gate: no room (random already as good as full data)
    _, gate3, _, _ = measure_fl_beats_random(t, max_loss=2.0, min_room=0.2)
    assert not gate3.passed
    # a control that meets the criterion: random_b systematically worse -> does not discriminate
    t2 = _table(full=[1.80, 1.81, 1.79], random=[1.90, 1.91, 1.92], random_b=[1.85, 1.86, 1.86],
                fl=[1.85, 1.86, 1.86])
    m2, g2, c2, _ = measure_fl_beats_random(t2, max_loss=2.0, min_room=0.05)
    assert c2.measured.ci_low > 0
    verdict = verdict_rule("replication", _rule("greater", 0.0, 0.0), m2, g2, c2)[0]
    assert verdict == "inconclusive"


def test_measure_fl_retention_values():
    t = _table(full=[1.8, 1.8, 1.8], random=[1.9, 1.9, 1.9], random_b=[1.9, 1.9, 1.9],
               fl=[1.82, 1.83, 1.81], warm=[2.3, 2.4, 2.2])
    m, gate, control, _ = measure_fl_retention(t, reference=3.3, max_loss=2.0)
    # (3.3 - 1.82) / 1.5 = 0.98667, (3.3 - 1.83) / 1.5 = 0.98, (3.3 - 1.81) / 1.5 = 0.99333
    assert m.value == pytest.approx(0.98667, abs=1e-4)
    # warm start: (3.3 - 2.3) / 1.5, (3.3 - 2.4) / 1.5, (3.3 - 2.2) / 1.5 -> mean 2/3
    assert control.measured.value == pytest.approx(2 / 3, abs=1e-4)
    assert gate.passed
    _, gate2, _, _ = measure_fl_retention(t, reference=3.3, max_loss=1.7)
    assert not gate2.passed


def test_measure_fl_objective_values():
    sel = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "f_fl": [11.0, 12.0, 11.0, 11.0, 13.0, 12.0],
                        "f_random": [10.0] * 6, "f_random_a": [10.0, 10.1, 9.9, 10.0, 10.0, 10.0],
                        "f_random_b": [10.0] * 6})
    m, control, _ = measure_fl_objective(sel)
    # per seed mean gains 0.15, 0.10, 0.25
    assert m.value == pytest.approx(np.mean([0.15, 0.10, 0.25]))
    assert control.measured.value == pytest.approx(0.0, abs=1e-12)


def test_run_arm_few_steps_equal_budget():
    text = "".join(chr(97 + (i * 7 % 11)) for i in range(4000))
    c = build_corpus(text, window=16, n_pool=120, n_test=8)
    kw = dict(steps=6, warm_steps=2, reselect_every=2, subset_fraction=0.25, n_partitions=2, batch_size=4,
              lr=1e-3, d_model=16, n_layers=1, n_heads=2, eval_every=3)
    fl = run_arm(c, "fl", 0, **kw)
    rnd = run_arm(c, "random", 0, **kw)
    assert np.isfinite(fl["heldout_loss"]) and np.isfinite(rnd["warm_heldout_loss"])
    # same init and same warm-start batches: identical up to the first selection
    assert fl["warm_heldout_loss"] == rnd["warm_heldout_loss"]
    assert len(fl["selections"]) == 2  # re-selected at steps 2 and 4
    assert fl["curve"]["step"].max() == rnd["curve"]["step"].max() == 6
    with pytest.raises(ValueError):
        run_arm(c, "bogus", 0, **kw)
    assert torch.get_num_threads() >= 1
