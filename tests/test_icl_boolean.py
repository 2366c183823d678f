"""papers.icl_boolean: samplers, classical learners, models and verdict rules against hand-worked cases."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from papers.icl_boolean.analysis import (decide_conjunction, decide_lstm, decide_sparse_parity,
                                         decide_teaching, summary)
from papers.icl_boolean.experiment import ModelSpec, build_model, combine, icl_loss, make_claims
from papers.icl_boolean.task import (accuracy_by_position, conjunction_labels, elimination_predictions,
                                     examples_to_reach, first_query_after_teaching, gf2_elimination_predictions,
                                     nearest_neighbour_predictions, parity_labels, sample_prompts,
                                     sparse_parity_bayes_predictions, teaching_sequence)


def arr(*rows):
    """arr([..]) -> that array; arr([..], [..], ...) -> the rows stacked."""
    return np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float32)


# --- labels and samplers ------------------------------------------------------------------------------

def test_conjunction_labels_hand_cases():
    w = arr([1, -1, 0])[None]  # x_0 AND NOT x_1
    xs = arr([[1, -1, 1], [1, -1, -1], [1, 1, 1], [-1, -1, 1]])[None]
    assert conjunction_labels(xs, w).tolist() == [[1, 1, -1, -1]]
    assert conjunction_labels(xs, arr([0, 0, 0])[None]).tolist() == [[1, 1, 1, 1]]  # empty conjunction is true


def test_parity_labels_hand_cases():
    w = arr([1, 1, 0])[None]  # S = {0, 1}; +1 iff an odd number of x_0, x_1 are +1
    xs = arr([[1, -1, 1], [1, 1, 1], [-1, -1, 1], [-1, 1, -1]])[None]
    assert parity_labels(xs, w).tolist() == [[1, -1, -1, 1]]


def test_conjunction_sampler_matches_the_authors_rules():
    p = sample_prompts("conjunction", 4000, 10, 12, np.random.default_rng(0))
    assert p.xs.shape == (4000, 10, 12) and p.ys.shape == (4000, 10)
    assert set(np.unique(p.xs)) == {-1.0, 1.0} and set(np.unique(p.ys)) == {-1.0, 1.0}
    assert np.array_equal(p.ys, conjunction_labels(p.xs, p.w))
    frac = [(p.w == v).mean() for v in (0, 1, -1)]
    assert frac == pytest.approx([0.7, 0.15, 0.15], abs=0.01)
    # 30% forced-satisfying points plus the uniform ones that satisfy by chance
    expected = 0.3 + 0.7 * np.mean(0.5 ** np.abs(p.w).sum(1))
    assert (p.ys > 0).mean() == pytest.approx(expected, abs=0.01)


def test_sparse_parity_sampler():
    p = sample_prompts("sparse_parity", 500, 8, 10, np.random.default_rng(1))
    assert (p.w.sum(1) == 2).all()
    assert np.array_equal(p.ys, parity_labels(p.xs, p.w))
    assert (p.ys > 0).mean() == pytest.approx(0.5, abs=0.03)


def test_teaching_sequence_hand_case():
    seq = teaching_sequence(np.array([1, 0, 1], dtype=np.float32))
    assert seq.tolist() == [[1, -1, 1], [-1, -1, 1], [1, -1, -1]]
    assert teaching_sequence(np.zeros(3, dtype=np.float32)).tolist() == [[-1, -1, -1]]


def test_teach_prompts_are_control_prompts_plus_prefix():
    teach = sample_prompts("teach_conjunction", 200, 14, 8, np.random.default_rng(3))
    ctrl = sample_prompts("mono_conjunction", 200, 14, 8, np.random.default_rng(3))
    assert np.array_equal(teach.w, ctrl.w) and set(np.unique(teach.w)) <= {0.0, 1.0}
    assert np.array_equal(teach.teach_len, teach.w.sum(1) + 1) and (ctrl.teach_len == 0).all()
    for b in range(200):
        k = teach.teach_len[b]
        assert np.array_equal(teach.xs[b, :k], teaching_sequence(teach.w[b]))
        assert np.array_equal(teach.xs[b, k:], ctrl.xs[b, k:])
        assert teach.ys[b, 0] == 1 and (teach.ys[b, 1:k] == -1).all()
        assert first_query_after_teaching(teach.w)[b] == k  # first index past the prefix
    with pytest.raises(ValueError, match="n_points >= n_dims"):
        sample_prompts("teach_conjunction", 2, 9, 8, np.random.default_rng(0))  # no query after the prefix
    with pytest.raises(ValueError, match="n_points >= n_dims"):
        sample_prompts("teach_conjunction", 2, 5, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown task"):
        sample_prompts("dnf", 2, 5, 8, np.random.default_rng(0))


# --- classical learners ---------------------------------------------------------------------------------

def test_elimination_hand_case():
    # target: x_0 AND NOT x_1 over n = 3
    xs = arr([1, -1, 1], [1, -1, 1], [1, -1, -1], [1, 1, -1], [1, -1, -1])[None]
    ys = arr([1, 1, 1, -1, 1])[None]
    # t=0: all 2n literals, predicts -1; after (1,-1,1) the hypothesis is x0 & !x1 & x2;
    # t=2: (1,-1,-1) violates x2 -> -1 (wrong), then x2 is dropped; t=3 -> -1; t=4 -> +1
    assert elimination_predictions(xs, ys).tolist() == [[-1, 1, -1, -1, 1]]


def test_monotone_elimination_learns_from_the_teaching_sequence():
    p = sample_prompts("teach_conjunction", 300, 16, 8, np.random.default_rng(4))
    acc = accuracy_by_position(elimination_predictions(p.xs, p.ys, monotone=True), p.ys)
    assert acc[0] == 0.0 and (acc[1:] == 1.0).all()  # the first (positive) example identifies w


def test_gf2_elimination_hand_case():
    # parity on S = {0, 2}: b = (x+1)/2, label bit = b0 xor b2
    xs = arr([1, -1, -1], [1, -1, -1], [-1, 1, -1], [1, 1, -1], [-1, 1, 1])[None]
    ys = parity_labels(xs, arr([1, 0, 1])[None])
    pred = gf2_elimination_predictions(xs, ys)
    # t=0 unknown -> -1; t=1 repeats b=100 -> its label (+1); t=2 b=010 not in span -> -1;
    # t=3 b=110 = 100 + 010 -> label(100) xor label(010) = 1 xor 0 -> +1; t=4 b=011 not in span -> -1
    assert ys.tolist() == [[1, 1, -1, 1, 1]]
    assert pred.tolist() == [[-1, 1, -1, 1, -1]]


def test_gf2_elimination_is_exact_once_the_inputs_span_the_space():
    p = sample_prompts("sparse_parity", 200, 40, 6, np.random.default_rng(5))
    acc = accuracy_by_position(gf2_elimination_predictions(p.xs, p.ys), p.ys)
    # 30 uniform points span GF(2)^6 except with probability < 1e-7: every later label is determined
    assert acc[-10:].min() == 1.0
    assert acc[:3].mean() < 0.8  # with a handful of points most queries are still undetermined


def test_sparse_parity_bayes_votes_over_consistent_subsets():
    xs = arr([1, 1, -1], [1, -1, -1], [-1, 1, 1])[None]  # n = 3: subsets {01, 02, 12}
    ys = parity_labels(xs, arr([1, 1, 0])[None])  # S = {0, 1}: labels -1, +1, +1
    pred = sparse_parity_bayes_predictions(xs, ys)
    # t=0: candidates on x=(1,1,-1): {01}->-1, {02}->+1, {12}->+1: majority +1
    # t=1: consistent with y0=-1: only {01}; x=(1,-1,-1) -> +1;  t=2: {01} on (-1,1,1) -> +1
    assert pred.tolist() == [[1, 1, 1]]


def test_nearest_neighbour_hand_case():
    xs = arr([1, 1, 1], [-1, -1, -1], [1, 1, -1], [-1, 1, 1])[None]
    ys = arr([1, -1, -1, 1])[None]
    # t=1: only x0 -> +1; t=2: nearest is x0 (distance 1) -> +1; t=3: x0 at distance 1, x1 and x2 at 2 -> +1
    assert nearest_neighbour_predictions(xs, ys).tolist() == [[-1, 1, 1, 1]]
    tie = arr([1, 1], [-1, -1], [1, -1])[None]  # x2 is at distance 1 from both: earliest wins
    assert nearest_neighbour_predictions(tie, arr([1, -1, 1])[None])[0, 2] == 1


def test_examples_to_reach():
    assert examples_to_reach([0.5, 0.95, 0.8, 0.92, 0.99], 0.9) == 4
    assert examples_to_reach([0.95, 0.96], 0.9) == 1
    assert examples_to_reach([0.95, 0.5], 0.9) == 3


# --- models and loss ------------------------------------------------------------------------------------

def test_combine_interleaves_inputs_and_labels():
    xs = torch.arange(12, dtype=torch.float32).reshape(1, 2, 6)[:, :, :3].contiguous()
    ys = torch.tensor([[1.0, -1.0]])
    z = combine(xs, ys)
    assert z.shape == (1, 4, 3)
    assert z[0, 0].tolist() == xs[0, 0].tolist() and z[0, 2].tolist() == xs[0, 1].tolist()
    assert z[0, 1].tolist() == [1, 0, 0] and z[0, 3].tolist() == [-1, 0, 0]


@pytest.mark.parametrize("family", ["transformer", "lstm"])
def test_prediction_at_t_never_sees_label_t_or_later(family):
    torch.manual_seed(0)
    model = build_model(ModelSpec(family, 32, 2, 4), n_dims=5, n_points=6).eval()
    p = sample_prompts("conjunction", 8, 6, 5, np.random.default_rng(0))
    xs, ys = torch.from_numpy(p.xs), torch.from_numpy(p.ys)
    flipped = ys.clone()
    flipped[:, 3:] = -flipped[:, 3:]
    with torch.no_grad():
        a, b = model(xs, ys), model(xs, flipped)
    assert a.shape == (8, 6)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)  # label 3 sits after query 3
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_icl_loss_is_bce_on_zero_one_labels():
    torch.manual_seed(0)
    model = build_model(ModelSpec("transformer", 16, 1, 2), n_dims=4, n_points=3)
    xs = torch.tensor([[[1.0, -1, 1, 1], [-1, -1, 1, 1], [1, 1, 1, -1]]])
    ys = torch.tensor([[1.0, -1.0, 1.0]])
    logits = model(xs, ys)
    q = torch.sigmoid(logits)
    target = torch.tensor([[1.0, 0.0, 1.0]])
    manual = -(target * q.log() + (1 - target) * (1 - q).log()).mean()
    assert icl_loss(model, (xs, ys)).item() == pytest.approx(manual.item(), rel=1e-5)
    assert F.binary_cross_entropy_with_logits(logits, target).item() == pytest.approx(manual.item(), rel=1e-5)


# --- verdict rules on synthetic tables ------------------------------------------------------------------

def table(entries):
    """entries: (family, task, seed, learner, curve) -> long table."""
    rows = []
    for family, task, seed, learner, c in entries:
        rows += [{"family": family, "task": task, "seed": seed, "learner": learner, "position": t + 1,
                  "accuracy": a} for t, a in enumerate(c)]
    return pd.DataFrame(rows)


def claims():
    return {c.id: c for c in make_claims()}


def test_decide_conjunction():
    rise = np.linspace(0.6, 1.0, 20)
    good = table([("transformer", "conjunction", s, "transformer", np.minimum(rise + 0.01, 1.0)) for s in range(3)]
                 + [("transformer", "conjunction", s, "elimination", rise) for s in range(3)])
    assert decide_conjunction(claims()["conjunction_matches_optimal"], good).verdict == "reproduced"
    weak = good.copy()
    sel = (weak["learner"] == "transformer") & (weak["seed"] == 1) & (weak["position"] > 15)
    weak.loc[sel, "accuracy"] = 0.93
    assert decide_conjunction(claims()["conjunction_matches_optimal"], weak).verdict == "inconclusive"
    weak.loc[sel, "accuracy"] = 0.85
    assert decide_conjunction(claims()["conjunction_matches_optimal"], weak).verdict == "not_reproduced"


def test_decide_sparse_parity():
    solved = np.r_[np.full(10, 0.5), np.ones(10)]
    entries = [("transformer", "sparse_parity", s, "gf2_elimination", solved) for s in range(3)]
    chance = table(entries + [("transformer", "sparse_parity", s, "transformer", np.full(20, 0.52)) for s in range(3)])
    assert decide_sparse_parity(claims()["sparse_parity_fails"], chance).verdict == "reproduced"
    learned = table(entries + [("transformer", "sparse_parity", s, "transformer", np.full(20, 0.9)) for s in range(3)])
    assert decide_sparse_parity(claims()["sparse_parity_fails"], learned).verdict == "not_reproduced"
    partial = table(entries + [("transformer", "sparse_parity", s, "transformer", np.full(20, 0.65)) for s in range(3)])
    assert decide_sparse_parity(claims()["sparse_parity_fails"], partial).verdict == "inconclusive"


def post_table(teach, ctrl):
    return pd.DataFrame([{"family": "transformer", "task": task, "seed": s, "learner": "transformer",
                          "accuracy": acc} for task, accs in (("teach_conjunction", teach), ("mono_conjunction", ctrl))
                         for s, acc in enumerate(accs)])


def test_decide_teaching():
    fast = np.r_[0.5, np.ones(19)]  # k90 = 2
    slow = np.r_[np.linspace(0.5, 0.89, 9), np.full(11, 0.97)]  # k90 = 10
    claim = claims()["teaching_sequence_helps"]
    sharp = post_table([0.99, 0.97, 1.0], [0.7, 0.75, 0.72])

    def tab(ctrl):
        return table([("transformer", "teach_conjunction", s, "transformer", fast) for s in range(3)]
                     + [("transformer", "mono_conjunction", s, "transformer", ctrl) for s in range(3)])
    c = decide_teaching(claim, tab(slow), sharp)
    assert c.verdict == "reproduced" and c.measured.value == pytest.approx(5.0)
    assert decide_teaching(claims()["teaching_sequence_helps"], tab(fast), sharp).verdict == "not_reproduced"
    # a large ratio but a model that is not sharp right after the teaching sequence
    assert decide_teaching(claim, tab(slow), post_table([0.9, 0.97, 0.99], [0.7] * 3)).verdict == "inconclusive"
    assert decide_teaching(claim, tab(slow), post_table([0.7, 0.75, 0.8], [0.7] * 3)).verdict == "not_reproduced"
    medium = np.r_[0.5, 0.8, 0.85, np.ones(17)]  # k90 = 4 -> ratio 2
    mixed = table([("transformer", "teach_conjunction", s, "transformer", fast) for s in range(3)]
                  + [("transformer", "mono_conjunction", 0, "transformer", medium),
                     ("transformer", "mono_conjunction", 1, "transformer", fast),
                     ("transformer", "mono_conjunction", 2, "transformer", slow)])
    assert decide_teaching(claim, mixed, sharp).verdict == "inconclusive"  # ratios 2, 1, 5: mean 2.67


def test_decide_lstm():
    base = np.linspace(0.6, 1.0, 20)
    def tab(deltas):
        return table([("transformer", "conjunction", s, "transformer", base) for s in range(3)]
                     + [("lstm", "conjunction", s, "lstm", base - d) for s, d in enumerate(deltas)])
    assert decide_lstm(claims()["lstm_worse_than_transformer"], tab([0.05, 0.06, 0.07])).verdict == "reproduced"
    assert decide_lstm(claims()["lstm_worse_than_transformer"], tab([-0.02, 0.0, -0.01])).verdict == "not_reproduced"
    assert decide_lstm(claims()["lstm_worse_than_transformer"], tab([0.08, -0.05, 0.02])).verdict == "inconclusive"


def test_summary_averages_over_seeds():
    df = table([("transformer", "conjunction", 0, "transformer", np.full(10, 0.8)),
                ("transformer", "conjunction", 1, "transformer", np.full(10, 1.0))])
    s = summary(df)
    assert s.loc[0, "mean_accuracy"] == pytest.approx(0.9) and s.loc[0, "k90"] == pytest.approx(6.0)
