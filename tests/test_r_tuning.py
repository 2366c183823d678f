"""papers.r_tuning: fact extraction and splits, R-Tuning data and metrics, the cached top-block LoRA, the
synthetic world, and the verdict rules on synthetic tables. Tiny random models only."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from papers.r_tuning import analysis as A
from papers.r_tuning import facts as Fa
from papers.r_tuning import lm_arm as L
from papers.r_tuning import refusal as R
from shared import topblocks as T
from papers.r_tuning import synthetic as S
from shared.lm import tiny_llama

# --- facts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question,family", [
    ("What is Danielle Darrieux's mother tongue?", "language"),
    ("What continent is the George V Coast on?", "continent"),
    ("What position does Pantelis Kafes play?", "sport_position"),
    ("What network did The Loner air on?", "tv_network"),
    ("Who developed the Ferrari F40?", "manufacturer"),
    ("Where did Pillsbury die?", "death_place"),
    ("Where is Majorette headquartered?", "headquarters"),
    ("Where is the Autonomous University of Madrid located?", "location"),
    ("Baghdad International Airport is named after who?", "other"),
])
def test_question_family(question, family):
    assert Fa.question_family(question) == family


def test_record_family_majority_and_tie_order():
    qs = ["What language does X speak?", "What language did Y speak?", "What country is Z a citizen of?"]
    assert Fa.record_family(qs) == "language"
    # one vote each: the family listed first in the rules wins (continent before location)
    assert Fa.record_family(["What continent is A on?", "Where is B located?"]) == "continent"
    assert Fa.record_family([]) == "other"


def _record(rid, edit_q, edit_a, neigh_q, neigh_a):
    return {"id": rid, "edit_scope": [[q, "WRONG"] for q in edit_q], "edit_scope_true_ans": edit_a,
            "unrelated": {"neighbor_subj": neigh_q, "same_subj": ["ignored"]},
            "unrelated_true_ans": {"neighbor_subj": neigh_a, "same_subj": ["x", "y"]}}


def test_record_facts_uses_true_answers_only():
    rec = _record(7, ["What language does A speak?"], ["French"], ["What language does B speak?"], ["French"])
    facts = Fa.record_facts(rec)
    assert [(f.question, f.answer, f.kind, f.record, f.family) for f in facts] == [
        ("What language does A speak?", "French", "edit_scope", 7, "language"),
        ("What language does B speak?", "French", "neighbor", 7, "language")]
    bad = _record(8, ["q1?", "q2?"], ["a"], [], [])
    with pytest.raises(ValueError, match="not aligned"):
        Fa.record_facts(bad)


def test_split_families_alternates_by_size():
    sizes = [("a", 9), ("b", 7), ("c", 5), ("d", 3), ("e", 1)]
    assert Fa.split_families(sizes) == (["a", "c", "e"], ["b", "d"])


def _toy_records():
    recs, rid = [], 0
    for fam_q, n in (("What language does S{} speak?", 12), ("Where did S{} die?", 8), ("What sport does S{} play?", 6)):
        for _ in range(n):
            qs = [fam_q.format(f"{rid}_{j}") for j in range(4)]
            recs.append(_record(rid, qs[:1], [f"obj{rid}"], qs[1:], [f"obj{rid}"] * 3))
            rid += 1
    return recs


def test_make_split_is_disjoint_by_record_and_deterministic():
    recs = _toy_records()
    assert Fa.families_by_size(recs) == [("language", 12), ("death_place", 8), ("sport", 6)]
    sp = Fa.make_split(recs, n_train=9, n_test_id=4, n_test_ood=3, train_per_record=2, seed=3)
    assert (len(sp.train), len(sp.test_id), len(sp.test_ood)) == (9, 4, 3)
    assert sp.id_families == ["language", "sport"] and sp.ood_families == ["death_place"]
    train_records = {f.record for f in sp.train}
    assert not train_records & {f.record for f in sp.test_id}
    assert all(f.family in sp.id_families for f in sp.train + sp.test_id)
    assert all(f.family == "death_place" for f in sp.test_ood)
    assert len({f.record for f in sp.test_id}) == 4  # one question per test record
    again = Fa.make_split(recs, 9, 4, 3, 2, seed=3)
    assert [f.question for f in again.train + again.test_id] == [f.question for f in sp.train + sp.test_id]
    with pytest.raises(ValueError, match="out-of-domain records"):
        Fa.make_split(recs, 9, 4, 9, 2, seed=3)


# --- R-Tuning data and metrics ----------------------------------------------------------------------------

def test_training_texts_match_the_authors_format():
    assert R.vanilla_text("Where is X?", "Paris") == "Question: Where is X? Answer: Paris."
    assert R.r_tuning_text("Where is X?", "Paris", False) == (
        "Question: Where is X? Answer: Paris. Are you sure you accurately answered the question based on "
        "your internal knowledge? I am unsure.")
    assert R.r_tuning_text("Where is X?", "Paris", True).endswith("I am sure.")
    assert R.CERTAINTY_SUFFIX == ". Are you sure you accurately answered the question based on your internal knowledge? I am"


def test_answer_matching_cuts_at_the_first_period_and_ignores_case():
    assert R.cut_answer(" Basketball. He plays") == "Basketball"
    assert R.answer_matches("basketball", " Basketball.")
    assert R.answer_matches("French", "\nFrench")
    assert not R.answer_matches("Paris", "London. Paris")
    assert not R.answer_matches("", "anything")
    np.testing.assert_array_equal(R.label_certain(["a", "b"], ["a b", "c"]), [True, False])


def test_confidence_and_certainty_formulas():
    assert R.geometric_mean_confidence([math.log(0.5), math.log(0.125)]) == pytest.approx(0.25)
    assert R.geometric_mean_confidence([]) == 0.0
    assert R.certainty(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    conf, ps = np.array([0.2, 0.8]), np.array([1.0, 0.0])
    np.testing.assert_allclose(R.ranking_score("vanilla", conf, None), conf)
    np.testing.assert_allclose(R.ranking_score("r_tuning", conf, ps), [0.6, 0.4])
    with pytest.raises(ValueError):
        R.ranking_score("r_tuning", conf, None)


def test_average_precision_hand_computed():
    # ranking by score: 1 (pos), 0 (neg), 1 (pos): precision at the positives 1 and 2/3 -> AP = (1 + 2/3) / 2
    assert R.average_precision([True, False, True], [0.9, 0.5, 0.1]) == pytest.approx(5 / 6)
    assert math.isnan(R.average_precision([False, False], [0.1, 0.2]))
    acc, n = R.answered_accuracy([True, False, True, False], [0.9, 0.8, 0.2, 0.6])
    assert (acc, n) == (pytest.approx(1 / 3), 3)


def test_fast_average_precision_matches_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(40) < 0.3
        s = np.round(rng.random(40), 1)  # many ties
        if y.any():
            assert A.average_precision_fast(y, s) == pytest.approx(average_precision_score(y, s))


# --- the LM arm machinery on a tiny random Llama -----------------------------------------------------------

class CharTokenizer:
    """One token per character (letters, space, '.', '?', ':') plus pad (0); enough for score/generate tests."""

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .?:"
    pad_token_id = 0
    all_special_ids = [0]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.chars.index(c) + 1 for c in text]}

    def get_vocab(self):
        return {c: i + 1 for i, c in enumerate(self.chars)} | {"<pad>": 0}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.chars[i - 1] for i in ids if i != 0)


def _tiny(vocab=40, layers=4):
    torch.manual_seed(0)
    return tiny_llama(vocab, 256, d_model=32, n_layers=layers, n_heads=4).eval()


def test_example_weights_hand_case():
    # tokens 0..7: prompt 0-2, answer 3-4, certainty question 5, certainty token 6, '.' 7
    w = L.example_weights(8, 3, 5, 6)
    assert w == [0, 0, 0, 0.5, 0.5, 0, 1.0, 0]
    assert L.example_weights(5, 3, 5) == [0, 0, 0, 0.5, 0.5]
    with pytest.raises(ValueError, match="answer span"):
        L.example_weights(5, 3, 7)
    with pytest.raises(ValueError, match="certainty token"):
        L.example_weights(8, 3, 5, 4)


def test_weighted_response_loss_is_answer_mean_plus_certainty_per_example():
    model = _tiny()
    seqs = [[3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13]]
    weights = [L.example_weights(7, 2, 4, 5), L.example_weights(4, 1, 4)]
    hidden = T.cache_block_inputs(model, seqs, 2, 0, 4, "cpu")
    top = T.build_top_model(model, 2)
    with torch.no_grad():
        loss = T.response_loss(top, T.collate(hidden, seqs, [2, 1], "cpu", weights))
        per = []
        for s, w in zip(seqs, weights):
            lp = F.log_softmax(model(input_ids=torch.tensor([s])).logits[0], -1)
            per.append(sum(-wt * lp[t - 1, s[t]] for t, wt in enumerate(w) if wt > 0))
    # example 1: (ce2 + ce3) / 2 + ce5; example 2: (ce1 + ce2 + ce3) / 3; batch mean
    assert float(loss) == pytest.approx(float(sum(per) / 2), rel=1e-5)
    with pytest.raises(ValueError, match="weights for"):
        T.collate(hidden, seqs, [2, 1], "cpu", [weights[0], weights[0]])


def test_score_answers_matches_a_direct_computation():
    tok = CharTokenizer()
    model = _tiny(vocab=len(tok.chars) + 1)
    # certainty tokens must be single tokens; the char tokenizer makes " sure" 5 tokens, so patch them
    prompts = ["q: ab?", "q: c?"]
    answers = [[5, 6], []]
    old = (R.SURE, R.UNSURE)
    L.SURE, L.UNSURE = "s", "u"
    try:
        conf, p_sure = L.score_answers(model, tok, prompts, answers, True, batch_size=2, device="cpu")
    finally:
        L.SURE, L.UNSURE = old
    suffix = tok(R.CERTAINTY_SUFFIX)["input_ids"]
    s_id, u_id = tok("s")["input_ids"][0], tok("u")["input_ids"][0]
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ids = tok(p)["input_ids"] + a + suffix
        with torch.no_grad():
            lp = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
        P = len(tok(p)["input_ids"])
        expected = math.exp(np.mean([float(lp[P - 1 + j, t]) for j, t in enumerate(a)])) if a else 0.0
        assert conf[i] == pytest.approx(expected, rel=1e-4)
        ps, pu = float(lp[-1, s_id].exp()), float(lp[-1, u_id].exp())
        assert p_sure[i] == pytest.approx(ps / (ps + pu), rel=1e-4)
    conf_v, none = L.score_answers(model, tok, prompts, answers, False, 2, "cpu")
    assert none is None and conf_v == pytest.approx(conf, rel=1e-4)


def test_generate_answers_stops_before_a_period_token():
    tok = CharTokenizer()
    assert L.stop_ids(tok) == sorted([0, tok(".")["input_ids"][0]])
    model = _tiny(vocab=len(tok.chars) + 1)
    ids, texts = L.generate_answers(model, tok, ["q: ab?", "q: cde?"], 6, 2, "cpu")
    dot = tok(".")["input_ids"][0]
    assert all(dot not in row and len(row) <= 6 for row in ids)
    assert texts == [tok.decode(r).strip() for r in ids]


# --- the synthetic world -----------------------------------------------------------------------------------

SMALL = S.WorldSpec(n_subjects=12, n_relations=4, n_id_relations=2, n_objects=5, n_train_subjects=8)


def test_world_is_deterministic_and_consistent():
    w1, w2 = S.make_world(SMALL, 3), S.make_world(SMALL, 3)
    assert np.array_equal(w1.obj, w2.obj) and np.array_equal(w1.known, w2.known)
    assert w1.obj.shape == (12, 4) and w1.obj.min() >= 0 and w1.obj.max() < 5
    assert np.all((w1.weight > 0) == w1.known) and w1.weight[w1.known].min() >= 1.0
    assert sorted(np.r_[w1.train_subjects, w1.test_subjects].tolist()) == list(range(12))
    np.testing.assert_allclose(S.zipf_prior(3, 1.0), np.array([1, 1 / 2, 1 / 3]) / (11 / 6))
    with pytest.raises(ValueError):
        S.make_world(S.WorldSpec(n_relations=3, n_id_relations=3), 0)


def test_token_layout_hand_checked():
    spec = SMALL  # specials 0-6, relations 7-10, subjects 11-22, objects 23-42 (5 per relation)
    assert spec.vocab_size == 7 + 4 + 12 + 20
    np.testing.assert_array_equal(S.qa_tokens(spec, [2], [1]), [[S.Q, 13, 8, S.A]])
    np.testing.assert_array_equal(S.qa_tokens(spec, [2], [1], [3]), [[S.Q, 13, 8, S.A, 23 + 5 + 3, S.DOT]])
    rt = S.r_tuning_tokens(spec, [2, 0], [1, 0], [3, 0], [True, False])
    np.testing.assert_array_equal(rt[:, 6:], [[S.CHECK, S.SURE], [S.CHECK, S.UNSURE]])


def test_tuning_and_test_facts_do_not_overlap():
    w = S.make_world(SMALL, 0)
    s_tr, r_tr = S.tuning_facts(w)
    assert len(s_tr) == 8 * 2 and set(r_tr) == {0, 1}
    s_id, r_id = S.test_facts(w, "id")
    s_ood, r_ood = S.test_facts(w, "ood")
    assert not set(s_tr) & set(s_id) and set(r_ood) == {2, 3} and len(s_ood) == 4 * 2


def test_synthetic_response_loss_and_certainty():
    model = S.tiny_gpt2(SMALL.vocab_size, 8, d_model=16, n_layers=1, n_heads=2).eval()
    tokens = torch.as_tensor(S.r_tuning_tokens(SMALL, [0, 1], [0, 1], [1, 2], [True, False]))
    with torch.no_grad():
        lp = F.log_softmax(model(input_ids=tokens).logits, -1)
        manual = -torch.stack([lp[b, t - 1, tokens[b, t]] for b in range(2) for t in range(4, 8)]).mean()
        assert float(S.response_loss(model, tokens)) == pytest.approx(float(manual), rel=1e-5)
        ce = lambda b, t: -lp[b, t - 1, tokens[b, t]]  # noqa: E731
        weighted = sum((ce(b, 4) + ce(b, 5)) / 2 + ce(b, 7) for b in range(2)) / 2
        assert float(S.weighted_response_loss(model, tokens)) == pytest.approx(float(weighted), rel=1e-5)
        vanilla = tokens[:, :6]
        lpv = F.log_softmax(model(input_ids=vanilla).logits, -1)
        wv = sum((-lpv[b, 3, vanilla[b, 4]] - lpv[b, 4, vanilla[b, 5]]) / 2 for b in range(2)) / 2
        assert float(S.weighted_response_loss(model, vanilla)) == pytest.approx(float(wv), rel=1e-5)
    k, conf = S.answer(model, SMALL, np.array([0, 1]), np.array([0, 1]), "cpu")
    assert k.shape == (2,) and np.all((conf > 0) & (conf <= 1))
    ps = S.certainty(model, SMALL, np.array([0, 1]), np.array([0, 1]), k, "cpu")
    assert np.all((ps > 0) & (ps < 1))


def test_run_seed_table_has_both_methods_and_splits():
    tiny = S.TinySpec(d_model=16, n_layers=1, n_heads=2, pretrain_steps=3, pretrain_batch=8, tune_epochs=1,
                      tune_batch=8)
    df, info = S.run_seed(SMALL, tiny, 0, "cpu")
    assert set(df["method"]) == {"vanilla", "r_tuning"} and set(df["split"]) == {"id", "ood"}
    assert len(df) == 2 * (4 * 2 + 4 * 2)
    assert df[df["method"] == "vanilla"]["p_sure"].isna().all()
    assert df[df["method"] == "r_tuning"]["p_sure"].between(0, 1).all()
    assert 0 <= info["certain_fraction"] <= 1
    assert "train_auroc_p_sure" in info


# --- verdict rules on synthetic tables ----------------------------------------------------------------------

def _table(seeds, n, acc, informative, rng, shared=True):
    """Per-question results: R-Tuning's p(sure) equals correctness when ``informative`` (else noise); both
    methods' confidences are noise, so R-Tuning's AP is higher only when its certainty is informative."""
    rows = []
    base = rng.random(n) < acc
    for s in seeds:
        correct = base if shared else rng.random(n) < acc
        for method in ("vanilla", "r_tuning"):
            conf = rng.random(n)
            ps = (np.where(correct, 0.9, 0.1) + rng.normal(0, 0.05, n)).clip(0, 1) if informative else rng.random(n)
            for split in ("id", "ood"):
                rows.append(pd.DataFrame({"seed": s, "method": method, "split": split, "qid": np.arange(n),
                                          "correct": correct, "confidence": conf,
                                          "p_sure": ps if method == "r_tuning" else np.nan}))
    return pd.concat(rows, ignore_index=True)


from shared.claims import Gate, load_claims  # noqa: E402

PASS = Gate(True, "fit", 0.9)


def _claim(cid="ap_id_v2"):
    return load_claims("r_tuning")[cid]


def _eval(cid, measured):
    m, gate, ctrl, detail = measured
    return _claim(cid).evaluate(m, gate=gate, control=ctrl, detail=detail)


def test_ap_reproduced_when_certainty_is_informative_and_control_is_not():
    df = _table([0, 1, 2], 200, 0.3, True, np.random.default_rng(0))
    c = _eval("ap_id_v2", A.measure_ap(df, PASS, "id", True, 200))
    assert c.verdict == "reproduced" and c.measured.value > 0.2
    assert not c.control_meets  # confidence alone is noise for both methods


def test_ap_not_reproduced_when_certainty_is_noise():
    df = _table([0, 1, 2, 3, 4], 2000, 0.3, False, np.random.default_rng(1), shared=False)
    c = _eval("ap_ood_v2", A.measure_ap(df, PASS, "ood", False, 200))
    assert c.verdict == "not_reproduced", c.measured


def test_ap_inconclusive_when_the_confidence_alone_does_it():
    """R-Tuning's answer confidence (not its certainty) separates right from wrong: the control meets the
    criterion too, so the AP gain cannot be credited to the sure/unsure signal."""
    df = _table([0, 1, 2], 200, 0.3, True, np.random.default_rng(6))
    rt = df["method"] == "r_tuning"
    df.loc[rt, "confidence"] = np.where(df.loc[rt, "correct"], 0.8, 0.2)
    c = _eval("ap_id_v2", A.measure_ap(df, PASS, "id", True, 200))
    assert c.verdict == "inconclusive" and c.control_meets


def test_ap_gate_and_missing_interval():
    df = _table([0, 1, 2], 200, 0.3, True, np.random.default_rng(0))
    gate = A.train_fit_gate({0: 0.9, 1: 0.6, 2: 0.95})
    assert not gate.passed and gate.value == pytest.approx(0.6)
    c = _eval("ap_id_v2", A.measure_ap(df, gate, "id", True, 100))
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")
    assert not A.train_fit_gate({0: float("nan"), 1: 0.9}).passed  # one class only: AUROC undefined
    assert A.train_fit_gate({0: 0.7, 1: 0.9}).passed
    df2 = _table([0, 1, 2], 50, 0.3, True, np.random.default_rng(2))
    df2.loc[(df2["seed"] == 1) & (df2["split"] == "id"), "correct"] = False
    c = _eval("ap_id_v2", A.measure_ap(df2, PASS, "id", True, 100))
    assert c.verdict == "inconclusive" and c.measured.ci_low is None


def test_train_aurocs_hand_case():
    fit = pd.DataFrame({"seed": [0] * 4 + [1] * 4, "certain": [True, True, False, False] * 2,
                        "p_sure": [0.9, 0.8, 0.1, 0.2, 0.1, 0.8, 0.9, 0.2]})
    a = A.train_aurocs(fit)
    # seed 1: certain p(sure) 0.1, 0.8 vs uncertain 0.9, 0.2: only 0.8 > 0.2 of the 4 pairs is ordered
    assert a[0] == 1.0 and a[1] == pytest.approx(0.25)


def test_delta_ap_interval_is_the_union_of_t_and_bootstrap():
    df = _table([0, 1, 2], 200, 0.3, True, np.random.default_rng(0))
    m, _ = A.delta_ap_measurement(df, "id", True, 200)
    aps = A.ap_by_seed(df, "id")
    d = (aps["r_tuning"] - aps["vanilla"]).tolist()
    from shared.stats import seed_measurement
    t = seed_measurement(d)
    _, lo, hi = A.bootstrap_delta_ap(df, "id", True, 200)
    assert m.ci_low == pytest.approx(min(t.ci_low, lo)) and m.ci_high == pytest.approx(max(t.ci_high, hi))


def test_bootstrap_requires_matching_questions():
    df = _table([0, 1], 30, 0.5, True, np.random.default_rng(4))
    df.loc[(df["seed"] == 1), "qid"] += 1
    with pytest.raises(ValueError, match="different questions"):
        A.bootstrap_delta_ap(df, "id", shared_questions=True, n_boot=10)


def test_answered_accuracy_reproduced_not_reproduced_and_gated():
    good = _table([0, 1, 2], 200, 0.3, True, np.random.default_rng(5))
    c = _eval("answered_accuracy_v2", A.measure_answered_accuracy(good, PASS))
    assert c.verdict == "reproduced" and c.control.measured.value == pytest.approx(0.0)
    # R-Tuning says "sure" exactly on the wrong answers: worse than vanilla
    bad = good.copy()
    rt = bad["method"] == "r_tuning"
    bad.loc[rt, "p_sure"] = np.where(bad.loc[rt, "correct"], 0.1, 0.9)
    assert _eval("answered_accuracy_v2", A.measure_answered_accuracy(bad, PASS)).verdict == "not_reproduced"
    shy = good.copy()
    shy.loc[shy["method"] == "r_tuning", "p_sure"] = 0.2  # answers nothing
    c = _eval("answered_accuracy_v2", A.measure_answered_accuracy(shy, PASS))
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")


def test_per_seed_metrics_values():
    df = pd.DataFrame({"seed": 0, "method": ["r_tuning"] * 4 + ["vanilla"] * 4, "split": "id",
                       "qid": list(range(4)) * 2, "correct": [True, False, True, False] * 2,
                       "confidence": [0.1, 0.2, 0.3, 0.4] * 2, "p_sure": [0.9, 0.8, 0.2, 0.1] + [np.nan] * 4})
    m = A.per_seed_metrics(df).set_index("method")
    assert m.loc["r_tuning", "refusal_rate"] == 0.5 and m.loc["r_tuning", "answered"] == 2
    assert m.loc["r_tuning", "answered_accuracy"] == 0.5 and m.loc["vanilla", "accuracy"] == 0.5
    # vanilla ranks by confidence: 0.4(F) 0.3(T) 0.2(F) 0.1(T) -> AP = (1/2 + 2/4) / 2
    assert m.loc["vanilla", "ap"] == pytest.approx(0.5)
    # R-Tuning: 0.5*conf + 0.5*p_sure = .5, .5, .25, .25 -> two tied groups: AP = 0.5 * 0.5 + 0.5 * 0.5
    assert m.loc["r_tuning", "ap"] == pytest.approx(0.5)
