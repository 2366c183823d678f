"""papers.eren: CFH handling, prompts, answer checks, retrieval, the exact greedy-reproduction test, the FT data,
metrics and verdict rules. Tiny random models and a byte-level tokenizer only (no pretrained weights)."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.eren import analysis as A
from papers.eren import editors as E
from papers.eren.data import (build_questions, edit_block, eligible_edits, make_context, note_of)
from papers.eren.experiment import memory_records
from shared.claims import load_claims
from shared.lm import continuation_logprobs, greedy_generate, tiny_llama

# --- data -------------------------------------------------------------------------------------------------


def record(i, scope=(("Q1?", "A"),), neighbor=("N1?", "N2?"), same=("S1?", "S1?", "S2?", "S3?")):
    return {"id": i, "edit_statement": f"Subject {i} speaks English.", "subject_name": f"Subject {i}",
            "edit_scope": [list(p) for p in scope],
            "unrelated": {"neighbor_subj": list(neighbor), "same_subj": list(same)}}


def test_notes_and_context_follow_the_authors_format():
    assert note_of("Danielle Darrieux's mother tongue is English.") == "Danielle Darrieux's mother tongue is English"
    assert note_of("No period") == "No period"
    assert make_context(["A is B", "C is D"]) == "A is B.\nC is D."
    with pytest.raises(ValueError):
        make_context([])


def test_eligible_edits_need_all_three_question_kinds():
    recs = [record(0), record(1, scope=()), record(2, same=()), record(3)]
    assert eligible_edits(recs) == [0, 3]


def test_edit_blocks_are_disjoint_and_bounded():
    blocks = [set(edit_block(100, s, 10).tolist()) for s in range(10)]
    assert all(len(b) == 10 for b in blocks)
    assert set().union(*blocks) == set(range(100))  # 10 disjoint blocks cover the permutation
    assert np.array_equal(edit_block(100, 3, 10), edit_block(100, 3, 10))
    with pytest.raises(ValueError, match="eligible"):
        edit_block(100, 10, 10)


def test_build_questions_counts_targets_and_dedupes():
    recs = [record(0, scope=(("Q1?", "A"), ("Q2?", "A"), ("Q3?", "A"))), record(1)]
    q = build_questions(recs, [0, 1], n_scope=2, n_neighbor=1, n_same=5, seed=0)
    by = q.groupby(["edit_id", "kind"]).size()
    assert by[(0, "scope")] == 2 and by[(1, "scope")] == 1
    assert by[(0, "neighbor_subj")] == 1
    assert by[(0, "same_subj")] == 3  # S1 listed twice: 3 distinct questions
    assert set(q[q.kind == "scope"]["target"]) == {"A"} and set(q[q.kind != "scope"]["target"]) == {""}
    assert q[q.kind == "scope"]["question"].tolist()[:2] == ["Q1?", "Q2?"]  # the first ones, in order
    assert (q["note"] == q["edit_id"].map(lambda i: f"Subject {i} speaks English")).all()


def test_memory_holds_the_evaluated_edits_and_fills_up():
    idx = memory_records(50, [3, 7], 10)
    assert len(idx) == 10 and {3, 7} <= set(idx) and idx == sorted(idx)
    assert memory_records(50, [3, 7], 50) == list(range(50))
    with pytest.raises(ValueError):
        memory_records(50, [1, 2, 3], 2)


# --- prompts and answers ----------------------------------------------------------------------------------

def test_templates_are_the_authors():
    assert E.qa_prompt("Q?") == "Please answer this question: Q?"
    assert E.mrc_prompt("N.", "Q?", two_step=True) == (
        'Read this and answer the question. If the question is unanswerable, say "unanswerable".\n\nN.\n\nQ?')
    assert E.mrc_prompt("N.", "Q?", two_step=False) == "Read this and answer the question.\n\nN.\n\nQ?"


def test_contains_answer_whole_words_first_line_case_insensitive():
    assert E.contains_answer("South Boston is located in Alaska.", "Alaska")
    assert E.contains_answer("the answer is BRITISH   broadcasting", "British Broadcasting")
    assert not E.contains_answer("He is Iranian.", "Iran")
    assert not E.contains_answer("Paris\nLondon", "London")  # only the first line counts
    assert E.contains_answer("It is Apple Inc. now", "Apple Inc.")
    with pytest.raises(ValueError):
        E.contains_answer("x", " ")


def test_refusal_and_leak_detection():
    assert E.is_refusal("Unanswerable: the answer is not available.")
    assert E.is_refusal('The answer to this question is "unanswerable"')
    assert not E.is_refusal("It is answerable.")
    assert E.leaks("Underdog is written in Finnish.", "Underdog is written in Spanish.", ["Finnish"])
    assert not E.leaks("Written in Spanish.", "Written in Spanish.", ["Spanish"])  # the unedited answer had it
    assert not E.leaks("Written in Spanish.", "x", ["", "English"])


def test_retrieval_is_maximum_inner_product_with_stable_ties():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
    mem = E.NoteMemory(["a", "b", "c", "d"], emb, ["", "", "", ""])
    top = mem.retrieve(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), k=3)
    assert top.tolist() == [[0, 3, 2], [1, 2, 0]]  # tie between notes 0 and 3: lower index first
    assert mem.contexts(top[:, :2]) == ["a.\nd.", "b.\nc."]
    with pytest.raises(ValueError):
        mem.retrieve(torch.zeros(1, 2), k=5)


# --- the exact greedy-reproduction test -------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return tiny_llama(vocab_size=40, max_len=64, d_model=32, n_layers=2, n_heads=4, pad_token_id=0).eval()


def test_greedy_reproduces_agrees_with_generation(lm):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 40, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (12,), generator=g)]
    stop = [1, 2]
    outs = greedy_generate(lm, prompts, max_new_tokens=6, pad_id=0, eos_id=stop, batch_size=5)
    assert E.greedy_reproduces(lm, prompts, outs, pad_id=0, batch_size=4) == [True] * len(prompts)
    # a wrong token anywhere makes it false; so does a target of another prompt
    wrong = [o[:-1] + [(o[-1] + 1) % 40 or 3] for o in outs]
    assert E.greedy_reproduces(lm, prompts, wrong, pad_id=0, batch_size=4) == [False] * len(prompts)
    shifted = outs[1:] + outs[:1]
    expected = [a == b for a, b in zip(shifted, outs)]
    assert E.greedy_reproduces(lm, prompts, shifted, pad_id=0, batch_size=3) == expected
    # a prefix of the greedy output (as when the reference hit the token limit) is reproduced
    assert E.greedy_reproduces(lm, prompts, [o[:2] for o in outs], pad_id=0) == [True] * len(prompts)


def test_greedy_reproduces_rejects_bad_input(lm):
    with pytest.raises(ValueError):
        E.greedy_reproduces(lm, [[3, 4]], [[]], pad_id=0)
    with pytest.raises(ValueError):
        E.greedy_reproduces(lm, [[3, 4]], [[5], [6]], pad_id=0)


# --- metrics and verdicts ---------------------------------------------------------------------------------

def test_edit_quality_is_the_harmonic_mean():
    assert A.edit_quality(1.0, 0.5) == pytest.approx(2 / 3)
    assert A.edit_quality(0.0, 0.0) == 0.0
    assert A.edit_quality(0.0, 1.0) == 0.0
    np.testing.assert_allclose(A.edit_quality([0.8, 0.2], [0.2, 0.2]), [0.32, 0.2])


def table(spec, margin=None, gold=1):
    """spec: {method: {(seed, edit): (scope scores, neighbour scores, same scores)}} -> long results table.
    The scores are both the exact and the answer-level ones; the first in-scope question of an edit is the FT
    editor's trained one; ``margin(kind)`` gives EREN's refusal margin; ``gold`` the retrieval of the own note."""
    rows = []
    for method, edits in spec.items():
        for (seed, edit), parts in edits.items():
            for kind, scores in zip(("scope", "neighbor_subj", "same_subj"), parts):
                for j, sc in enumerate(scores):
                    lp = 0.0 if margin is None else margin(kind)
                    rows.append(dict(seed=seed, edit_id=edit, kind=kind, method=method, score=int(sc),
                                     score_ans=int(sc), refused=0, retrieved_gold=gold,
                                     ft_trained=int(kind == "scope" and j == 0), lp_refuse=lp, lp_reply=0.0))
    return pd.DataFrame(rows)


def test_pooled_metrics_by_hand():
    res = table({"m": {(0, 1): ([1, 1], [1, 0], [0]), (1, 2): ([0], [1, 1], [1, 1])}})
    res.loc[res["kind"] == "same_subj", "score_ans"] = 1  # answer-level: nothing leaked on same-subject questions
    res.loc[res["kind"] == "scope", "refused"] = [1, 0, 0]
    row = A.method_metrics(res).iloc[0]
    assert row["es"] == pytest.approx(2 / 3)  # 2 of 3 in-scope questions
    assert row["bp"] == pytest.approx(5 / 7)
    assert row["bp_neighbor"] == pytest.approx(3 / 4) and row["bp_same"] == pytest.approx(2 / 3)
    assert row["eq"] == pytest.approx(2 * (2 / 3) * (5 / 7) / (2 / 3 + 5 / 7))
    assert row["bp_ans"] == pytest.approx(6 / 7) and row["bp_ans_same"] == 1.0
    assert row["eq_ans"] == pytest.approx(2 * (2 / 3) * (6 / 7) / (2 / 3 + 6 / 7))
    assert row["refusal_scope"] == pytest.approx(1 / 3) and row["refusal_gap"] == pytest.approx(-1 / 3)
    per_seed = A.per_seed_metrics(res).set_index("seed")
    assert per_seed.loc[0, "es"] == 1.0 and per_seed.loc[1, "bp"] == 1.0


def test_bootstrap_is_paired_and_degenerate_for_identical_edits():
    same = ([1, 0], [1, 1], [1, 0])
    spec = {"a": {(s, e): same for s in range(3) for e in range(5)},
            "b": {(s, e): ([0, 0], [1, 1], [1, 1]) for s in range(3) for e in range(5)}}
    boot = A.bootstrap_metrics(table(spec), n_boot=200, seed=0)
    assert np.allclose(boot["a"]["es"], 0.5) and np.allclose(boot["b"]["eq"], 0.0)
    assert np.allclose(boot["a"]["bp"], 0.75) and np.allclose(boot["a"]["eq_ans"], 0.6)


def test_interval_is_the_percentile_interval_without_nans():
    samples = np.concatenate([np.arange(101, dtype=float), [np.nan] * 7])
    assert A.interval(samples, level=0.9) == pytest.approx((5.0, 95.0))


def test_weighted_auc_by_hand():
    assert A.weighted_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert A.weighted_auc([1, 2, 3, 4], [1, 0, 1, 0]) == pytest.approx(0.25)  # only 3 > 2 of the 4 pairs
    assert A.weighted_auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5  # ties count 1/2
    assert A.weighted_auc([1, 2, 3], [0, 1, 1], [2, 1, 0]) == 1.0  # the item with weight 0 is left out
    assert np.isnan(A.weighted_auc([1, 2], [1, 1]))


def synthetic(eren_bp, one_bp, perm_bp=None, n_edits=12, seed=0, gold=1, ft_fit=1):
    """Every editor on 3 seeds x n_edits edits; per-edit unrelated scores drawn with the given rates. EREN and
    one-step have ES 1; FT answers its trained question (``ft_fit``) and leaks into every unrelated answer;
    EREN's refusal margin is +1 on unrelated and -1 on in-scope questions."""
    rng = np.random.default_rng(seed)
    perm_bp = one_bp if perm_bp is None else perm_bp
    spec = {m: {} for m in ("unedited", "one_step", "eren", "ft", "eren_permuted")}
    for s in range(3):
        for e in range(n_edits):
            for m, rate in (("eren", eren_bp), ("one_step", one_bp), ("eren_permuted", perm_bp)):
                spec[m][(s, e)] = ([1, 1], list(rng.random(1) < rate), list(rng.random(1) < rate))
            spec["ft"][(s, e)] = ([ft_fit, 0], [0], [0])
            spec["unedited"][(s, e)] = ([0, 0], [1], [1])
    return table(spec, margin=lambda kind: -1.0 if kind == "scope" else 1.0, gold=gold)


def verdicts(results):
    return {cid: c for cid, c in A.evaluate_all(load_claims("eren"), results, n_boot=300).items()}


def test_registry_claims_on_a_table_where_eren_works():
    c = verdicts(synthetic(0.9, 0.1))
    # EQ_ans: EREN 2 * 0.9 / 1.9 = 0.947 vs one-step ~ 0.18: far above +0.05
    assert c["eq_answer_vs_one_step"].verdict == "reproduced"
    assert not c["eq_answer_vs_one_step"].control_meets  # permuted refusals: no advantage
    assert c["eq_answer_vs_ft_v2"].verdict == "reproduced" and c["eq_answer_vs_ft_v2"].gate.passed
    assert c["bp_answer_same_subject"].verdict == "reproduced"
    assert c["refusal_selective"].verdict == "reproduced" and c["refusal_selective"].measured.value == 1.0
    assert c["refusal_selective"].control.measured.ci_low < 0.6  # shuffled kinds: AUC near 0.5
    assert c["es_controllable_v2"].verdict == "reproduced" and c["es_controllable_v2"].control.measured.value == 0.0


def test_registry_claims_not_reproduced_gate_and_control():
    same = verdicts(synthetic(0.3, 0.3, seed=1))
    c = same["eq_answer_vs_one_step"]  # identical rates: the interval of the difference excludes +0.05
    assert c.verdict in ("not_reproduced", "inconclusive") and c.measured.ci_low < 0.05
    flat = synthetic(0.0, 0.0)  # nothing preserved anywhere: every difference is exactly 0
    assert verdicts(flat)["eq_answer_vs_one_step"].verdict == "not_reproduced"
    # the permuted-refusal control does as well as EREN: the criterion does not discriminate
    c = verdicts(synthetic(0.9, 0.1, perm_bp=0.9))["eq_answer_vs_one_step"]
    assert c.verdict == "inconclusive" and c.control_meets
    # the retriever misses the edit's note: every gate on retrieval fails
    c = verdicts(synthetic(0.9, 0.1, gold=0))
    assert all(c[k].verdict == "inconclusive" and c[k].reason.startswith("gate failed")
               for k in ("eq_answer_vs_one_step", "bp_answer_same_subject", "refusal_selective", "es_controllable_v2"))
    # an FT baseline that did not learn its edits: inconclusive, not a win for EREN
    c = verdicts(synthetic(0.9, 0.1, ft_fit=0))["eq_answer_vs_ft_v2"]
    assert c.verdict == "inconclusive" and not c.gate.passed


def test_refusal_by_logprob_is_the_more_probable_reply(lm):
    class Tok:
        eos_token_id, pad_token_id = 2, 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5, 6]}

    shared = [3, 4, 7, 9, 13, 14, 15, 16, 17, 18]  # a common prefix long enough to be run once
    for prompts in ([[3, 4, 7], [8, 9]], [shared + [7], shared + [8, 9]]):
        replies = [[10, 2], [11, 12, 2]]
        refused, lp_ref, lp_rep = E.refusal_by_logprob(lm, Tok(), prompts, replies, batch_size=1)
        full = [float(continuation_logprobs(lm, [p], [r], pad_id=0)[0]) for p, r in zip(prompts, replies)]
        np.testing.assert_allclose(lp_rep, full, rtol=1e-5)
        np.testing.assert_allclose(lp_ref, continuation_logprobs(lm, prompts, [[5, 6, 2]] * 2, pad_id=0).numpy(),
                                   rtol=1e-5)
        assert refused.tolist() == (lp_ref >= lp_rep).tolist()


def test_reply_logprob_matches_a_manual_forward(lm):
    class Tok:
        eos_token_id, pad_token_id = 2, 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5, 6]}

    prompt, reply = [3, 4, 7, 9, 13, 14, 15, 16, 17, 18, 19], [10, 11, 2]
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([prompt + reply])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    manual = sum(float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(reply))
    # batched with a longer neighbour that shares the prompt's first ten tokens gives the same value
    _, _, got = E.refusal_by_logprob(lm, Tok(), [prompt, prompt[:10] + [5] * 9], [reply, [6, 2]], batch_size=2)
    assert got[0] == pytest.approx(manual, abs=1e-4)
