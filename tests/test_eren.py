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
from shared.lm import greedy_generate, tiny_llama

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


def test_collate_masks_only_the_answer_tokens():
    ids, mask, loss_mask = E.collate([([5, 6, 7], [8, 2]), ([5], [9, 9, 2])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 2], [0, 5, 9, 9, 2]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert loss_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]


# --- metrics and verdicts ---------------------------------------------------------------------------------

def test_edit_quality_is_the_harmonic_mean():
    assert A.edit_quality(1.0, 0.5) == pytest.approx(2 / 3)
    assert A.edit_quality(0.0, 0.0) == 0.0
    assert A.edit_quality(0.0, 1.0) == 0.0
    np.testing.assert_allclose(A.edit_quality([0.8, 0.2], [0.2, 0.2]), [0.32, 0.2])


def table(spec):
    """spec: {method: {(seed, edit): (scope scores, neighbour scores, same scores)}} -> long results table."""
    rows = []
    for method, edits in spec.items():
        for (seed, edit), parts in edits.items():
            for kind, scores in zip(("scope", "neighbor_subj", "same_subj"), parts):
                rows += [dict(seed=seed, edit_id=edit, kind=kind, method=method, score=s) for s in scores]
    return pd.DataFrame(rows)


def test_pooled_metrics_by_hand():
    res = table({"m": {(0, 1): ([1, 1], [1, 0], [0]), (1, 2): ([0], [1, 1], [1, 1])}})
    row = A.method_metrics(res).iloc[0]
    assert row["es"] == pytest.approx(2 / 3)  # 2 of 3 in-scope questions
    assert row["bp"] == pytest.approx(5 / 7)
    assert row["bp_neighbor"] == pytest.approx(3 / 4) and row["bp_same"] == pytest.approx(2 / 3)
    assert row["eq"] == pytest.approx(2 * (2 / 3) * (5 / 7) / (2 / 3 + 5 / 7))
    per_seed = A.per_seed_metrics(res).set_index("seed")
    assert per_seed.loc[0, "es"] == 1.0 and per_seed.loc[1, "bp"] == 1.0


def test_bootstrap_is_paired_and_degenerate_for_identical_edits():
    same = ([1, 0], [1, 1], [1, 0])
    spec = {"a": {(s, e): same for s in range(3) for e in range(5)},
            "b": {(s, e): ([0, 0], [1, 1], [1, 1]) for s in range(3) for e in range(5)}}
    boot = A.bootstrap_metrics(table(spec), n_boot=200, seed=0)
    assert np.allclose(boot["a"]["es"], 0.5) and np.allclose(boot["b"]["eq"], 0.0)
    assert np.allclose(boot["a"]["bp"], 0.75)


def test_interval_is_the_percentile_interval_without_nans():
    samples = np.concatenate([np.arange(101, dtype=float), [np.nan] * 7])
    assert A.interval(samples, level=0.9) == pytest.approx((5.0, 95.0))


def test_verdict_rules():
    assert A.delta_verdict(0.01, 0.3) == "reproduced"
    assert A.delta_verdict(-0.2, 0.04) == "not_reproduced"
    assert A.delta_verdict(-0.1, 0.2) == "inconclusive"
    assert A.threshold_verdict(0.6, 0.9, 0.5) == "reproduced"
    assert A.threshold_verdict(0.1, 0.4, 0.5) == "not_reproduced"
    assert A.threshold_verdict(0.4, 0.6, 0.5) == "inconclusive"


def synthetic(eren_bp, one_bp, n_edits=12, seed=0):
    """EREN and one-step with ES 1 on every edit and per-edit BP drawn with the given rates."""
    rng = np.random.default_rng(seed)
    spec = {"eren": {}, "one_step": {}, "ft": {}, "unedited": {}}
    for s in range(3):
        for e in range(n_edits):
            spec["eren"][(s, e)] = ([1], list(rng.random(2) < eren_bp), list(rng.random(2) < eren_bp))
            spec["one_step"][(s, e)] = ([1], list(rng.random(2) < one_bp), list(rng.random(2) < one_bp))
            spec["ft"][(s, e)] = ([0], [1, 1], [1, 1])
            spec["unedited"][(s, e)] = ([0], [1, 1], [1, 1])
    return table(spec).astype({"score": int})


def test_decide_delta_on_synthetic_tables():
    claim = A.make_claims()[0]
    assert A.decide_delta(claim, synthetic(0.9, 0.1), "eq", "eren", "one_step", n_boot=300).verdict == "reproduced"
    c = A.decide_delta(A.make_claims()[0], synthetic(0.0, 0.0), "eq", "eren", "one_step", n_boot=300)
    assert c.verdict == "not_reproduced" and c.measured.value == 0.0
    c = A.decide_delta(A.make_claims()[0], synthetic(0.1, 0.9), "bp_same", "eren", "one_step", n_boot=300)
    assert c.verdict == "not_reproduced" and c.measured.ci_high < 0
    c = A.decide_level(A.make_claims()[3], synthetic(0.5, 0.5), "es", "eren", n_boot=300)
    assert c.verdict == "reproduced" and c.measured.value == 1.0


def test_claims_are_declared_with_criteria():
    ids = [c.id for c in A.make_claims()]
    assert ids == ["eq_vs_one_step", "eq_vs_ft", "bp_same_subject", "es_controllable"]
    assert all(c.criterion and c.statement for c in A.make_claims())
