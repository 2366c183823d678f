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


# --- the LLM arm -------------------------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from papers.icl_boolean.analysis import LLM_LEARNERS, decide_llm, llm_function_accuracy, llm_label_mass  # noqa: E402
from papers.icl_boolean.experiment import LLM_BASELINES, LLM_PROMPT_SEED, run_llm_arm  # noqa: E402
from papers.icl_boolean.llm import INSTRUCTION, encode, label_logprobs, prompt_text  # noqa: E402
from papers.icl_boolean.task import CONJUNCTION_LITERAL_PROBS, LEARNERS, LLM_LITERAL_PROBS  # noqa: E402

SMOLLM2_DIR = Path(__file__).resolve().parents[1] / "data" / "smollm2"


def test_conjunction_literal_probs_default_is_the_training_distribution_and_llm_one_is_denser():
    a = sample_prompts("conjunction", 50, 6, 5, np.random.default_rng(3))
    b = sample_prompts("conjunction", 50, 6, 5, np.random.default_rng(3), literal_probs=CONJUNCTION_LITERAL_PROBS)
    assert np.array_equal(a.xs, b.xs) and np.array_equal(a.w, b.w)
    dense = sample_prompts("conjunction", 4000, 2, 5, np.random.default_rng(4), literal_probs=LLM_LITERAL_PROBS)
    counts = np.abs(dense.w).sum(1)
    assert abs(counts.mean() - 2.5) < 0.1  # E|w| = 5 x 0.5
    assert abs((dense.w == 1).mean() - 0.25) < 0.02 and abs((dense.w == -1).mean() - 0.25) < 0.02
    assert np.array_equal(dense.ys, conjunction_labels(dense.xs, dense.w))
    with pytest.raises(ValueError, match="conjunction prompts only"):
        sample_prompts("sparse_parity", 2, 6, 5, np.random.default_rng(0), literal_probs=LLM_LITERAL_PROBS)
    with pytest.raises(ValueError, match="summing to 1"):
        sample_prompts("conjunction", 2, 6, 5, np.random.default_rng(0), literal_probs=(0.5, 0.5, 0.5))


def test_prompt_text_is_the_authors_basic_format():
    p = prompt_text(arr([1, -1, 1], [-1, -1, 1]), arr(1, -1))
    assert p.text == INSTRUCTION + "\nInput: 1 0 1\nLabel: 1\nInput: 0 0 1\nLabel: 0"
    assert [p.text[c] for c in p.label_chars] == ["1", "0"]
    assert p.text[:p.label_chars[1]].endswith("Input: 0 0 1\nLabel: ")
    with pytest.raises(ValueError, match="must be in"):
        prompt_text(arr([1, 0, 1], [1, 1, 1]), arr(1, 1))
    with pytest.raises(ValueError, match="expected xs"):
        prompt_text(arr([1, -1, 1]), arr(1, -1))


class CharTokenizer:
    """One token per character (id = code point), with offsets; ``merge`` glues these strings into one token."""

    pad_token_id = 0

    def __init__(self, merge=()):
        self.merge = tuple(merge)

    def _pieces(self, text):
        i = 0
        while i < len(text):
            m = next((m for m in self.merge if text.startswith(m, i)), None)
            piece = m or text[i]
            yield i, piece
            i += len(piece)

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        pieces = list(self._pieces(text))
        out = {"input_ids": [sum(ord(ch) for ch in p) % 250 + 1 for _, p in pieces]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + len(p)) for i, p in pieces]
        return out


def test_encode_points_at_the_token_before_each_label_digit():
    tok = CharTokenizer()
    p = prompt_text(arr([1, -1], [-1, -1], [1, 1]), arr(1, -1, 1))
    ids, pos = encode(tok, p)
    assert pos == [c - 1 for c in p.label_chars]  # one char per token: the token before the digit
    assert [ids[j + 1] for j in pos] == [ord("1") + 1, ord("0") + 1, ord("1") + 1]
    with pytest.raises(ValueError, match="not a token of its own"):
        encode(CharTokenizer(merge=["0\n"]), p)  # the digit of label 2 merges with the newline after it


def one_prompt(n_points, n_dims, rng):
    q = sample_prompts("conjunction", 1, n_points, n_dims, rng)
    return prompt_text(q.xs[0], q.ys[0])


def test_encode_with_the_smollm2_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR)
    p = one_prompt(12, 5, np.random.default_rng(0))
    ids, pos = encode(tok, p)
    assert len(pos) == 12
    for j, c in zip(pos, p.label_chars):
        assert tok.decode([ids[j + 1]]) == p.text[c]  # the next token is the label digit
        assert tok.decode(ids[:j + 1]) == p.text[:c]  # everything before it is the per-query prompt


def _tiny_lm(vocab):
    from shared.lm import tiny_llama

    torch.manual_seed(0)
    return tiny_llama(vocab_size=vocab, max_len=512, d_model=32, n_layers=2, n_heads=2).eval()


def test_label_logprobs_match_per_query_prompts_and_do_not_depend_on_the_batch():
    tok = CharTokenizer()
    model = _tiny_lm(256)
    rng = np.random.default_rng(1)
    prompts = [one_prompt(4, n, rng) for n in (3, 5, 4)]  # different lengths: padding is exercised
    lp0, lp1 = label_logprobs(model, tok, prompts, batch_size=3)
    s0, s1 = label_logprobs(model, tok, prompts, batch_size=1)
    assert lp0.shape == (3, 4)
    assert np.allclose(lp0, s0, atol=1e-5) and np.allclose(lp1, s1, atol=1e-5)
    zero, one = tok("0")["input_ids"][0], tok("1")["input_ids"][0]
    for b, p in enumerate(prompts):
        for t, c in enumerate(p.label_chars):  # the per-query prompt of the authors: the text before the digit
            ids = tok(p.text[:c])["input_ids"]
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
            assert lp0[b, t] == pytest.approx(float(logp[zero]), abs=1e-5)
            assert lp1[b, t] == pytest.approx(float(logp[one]), abs=1e-5)
    with pytest.raises(ValueError, match="different numbers of labelled points"):
        label_logprobs(model, tok, [prompts[0], prompt_text(arr([1, 1], [1, -1]), arr(1, -1))])


def test_run_llm_arm_scores_the_same_prompts_as_the_baselines():
    tok = CharTokenizer()
    table = run_llm_arm(_tiny_lm(256), tok, seeds=[0, 2], n_dims=4, n_points=6, functions=3, batch_size=2,
                        progress=False)
    assert len(table) == 2 * 3 * 6
    assert list(table.columns[:4]) == ["seed", "function", "position", "label"]
    for seed in (0, 2):
        p = sample_prompts("conjunction", 3, 6, 4, np.random.default_rng(LLM_PROMPT_SEED + seed),
                           literal_probs=LLM_LITERAL_PROBS)
        rows = table[table["seed"] == seed]
        assert np.array_equal(rows["label"].to_numpy(), p.ys.reshape(-1))
        for name in LLM_BASELINES:
            assert np.array_equal(rows[f"pred_{name}"].to_numpy(), LEARNERS[name](p.xs, p.ys).reshape(-1))
    assert np.array_equal(table["pred_smollm2"] > 0, table["logp1"] > table["logp0"])
    with pytest.raises(ValueError, match="functions must be >= 1"):
        run_llm_arm(_tiny_lm(256), tok, [0], 4, 6, 0)


def llm_table(smollm2_correct, nn_correct):
    """(functions, positions) 0/1 arrays of correctness -> an arm table (labels all +1)."""
    smollm2_correct, nn_correct = np.asarray(smollm2_correct), np.asarray(nn_correct)
    F_, N = smollm2_correct.shape
    rows = []
    for f in range(F_):
        for t in range(N):
            rows.append({"seed": f % 2, "function": f, "position": t + 1, "label": 1.0,
                         "pred_smollm2": 1.0 if smollm2_correct[f, t] else -1.0,
                         "pred_nearest_neighbour": 1.0 if nn_correct[f, t] else -1.0,
                         "pred_elimination": 1.0, "pred_null": -1.0,
                         "logp0": np.log(0.2), "logp1": np.log(0.7)})
    return pd.DataFrame(rows)


def test_llm_function_accuracy_leaves_out_the_first_position():
    t = llm_table([[0, 1, 1, 0]], [[1, 1, 0, 0]])
    acc = llm_function_accuracy(t)
    assert acc.loc[0, "smollm2"] == pytest.approx(2 / 3) and acc.loc[0, "nearest_neighbour"] == pytest.approx(1 / 3)
    assert acc.loc[0, "elimination"] == 1.0 and acc.loc[0, "null"] == 0.0
    assert llm_label_mass(t) == pytest.approx(0.9)
    assert list(acc.columns) == ["seed", "function", *LLM_LEARNERS]


def test_decide_llm():
    rng = np.random.default_rng(0)
    c = lambda: claims()["llm_competes_with_nearest_neighbour"]  # noqa: E731
    same = rng.random((40, 11)) < 0.7
    assert decide_llm(c(), llm_table(same, same)).verdict == "reproduced"  # d = 0 for every function
    worse = decide_llm(c(), llm_table(np.zeros((40, 11)), np.ones((40, 11))))
    assert worse.verdict == "not_reproduced" and worse.measured.value == pytest.approx(-1.0)
    assert worse.measured.n == 40
    # half the functions far better, half far worse: mean 0 but an interval wider than the margin
    mixed = np.vstack([np.ones((3, 11)), np.zeros((3, 11))])
    assert decide_llm(c(), llm_table(mixed, 1 - mixed)).verdict == "inconclusive"
    # positions 2..25 (24 queries); nearest neighbour always right. SmolLM2 wrong on 1 of them for every
    # function: 4.2 points worse with no spread, inside the 5-point margin; wrong on 2: 8.3 points, outside
    nn = np.ones((10, 25))
    one_miss = np.tile(np.r_[0, 0, np.ones(23)], (10, 1))
    assert decide_llm(c(), llm_table(one_miss, nn)).measured.value == pytest.approx(-1 / 24)
    assert decide_llm(c(), llm_table(one_miss, nn)).verdict == "reproduced"
    two_misses = np.tile(np.r_[0, 0, 0, np.ones(22)], (10, 1))
    assert decide_llm(c(), llm_table(two_misses, nn)).verdict == "not_reproduced"
    not_run = decide_llm(c(), None)
    assert not_run.verdict == "inconclusive" and not_run.measured.value is None
