"""papers.connected_peft_ir: the retrieval task, the adapters (scattered and connected), the metrics and the
claims' measurements, against hand-computed cases on tiny random BERTs and synthetic tables."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from papers.connected_peft_ir.data import (Subject, build_corpus, sample_batch, split_subjects,
                                           subjects_from_rows)
from papers.connected_peft_ir.method import (Adapter, RetrievalEncoder, adapter_sites, build_model,
                                             measure_budget, measure_connected_vs_full,
                                             measure_connected_vs_scattered, measure_pet_below_full,
                                             mrr_at_k, ranks_of_relevant, recall_at_k, truncate_layers)
from shared.claims import load_claims


def _row(name, scope, same=(), neigh=()):
    return {"subject_name": name, "edit_scope": [[q, "x"] for q in scope],
            "unrelated": {"same_subj": list(same), "neighbor_subj": list(neigh)}}


# --- data ---------------------------------------------------------------------------------------------------

def test_subjects_from_rows_filters_and_builds():
    rows = [
        _row("A", ["a1?", "a2?", "a3?"], same=["a-other?", "a-other?", "a2?"], neigh=["b-rel?"]),
        _row("B", ["b1?", "b1?"], same=["x?"]),  # one distinct paraphrase: dropped
        _row("A", ["z1?", "z2?"], same=["y?"]),  # repeated name: dropped
        _row("C", ["c1?", "c2?"]),  # no negatives: dropped
        _row("D", ["d1?", "d2?", "d2?"], neigh=["n?"]),
    ]
    subs = subjects_from_rows(rows)
    assert [s.name for s in subs] == ["A", "D"]
    a, d = subs
    assert a.positive == "a1?" and a.queries == ["a2?", "a3?"]
    assert a.negatives == ["a-other?", "b-rel?"]  # deduplicated, paraphrase "a2?" removed
    assert d.queries == ["d2?"] and d.negatives == ["n?"]


def _subjects(n):
    return [Subject(f"s{i}", f"p{i}?", [f"q{i}a?", f"q{i}b?"], [f"n{i}x?", f"n{i}y?"]) for i in range(n)]


def test_split_is_disjoint_deterministic_and_checked():
    subs = _subjects(20)
    tr, va, te = split_subjects(subs, 4, 5, split_seed=3)
    assert (len(tr), len(va), len(te)) == (11, 4, 5)
    names = [s.name for s in tr + va + te]
    assert len(set(names)) == 20
    assert [s.name for s in split_subjects(subs, 4, 5, split_seed=3)[2]] == [s.name for s in te]
    assert len(split_subjects(subs, 4, 5, 3, n_train=2)[0]) == 2
    with pytest.raises(ValueError):
        split_subjects(subs, 10, 10, 0)


def test_build_corpus_indices_dedup_and_query_copies():
    s0 = Subject("s0", "p0?", ["q0?"], ["shared?", "q1?"])  # "q1?" is s1's query: dropped from the pool
    s1 = Subject("s1", "p1?", ["q1?", "q1b?"], ["shared?", "p0?"])  # "p0?" is s0's positive: kept once
    c = build_corpus([s0, s1])
    assert c.passages == ["p0?", "shared?", "p1?"]
    assert c.queries == ["q0?", "q1?", "q1b?"]
    assert c.relevant == [0, 2, 2]


def test_sample_batch_distinct_subjects_and_consistent_triples():
    subs = _subjects(10)
    q, p, n = sample_batch(subs, 6, np.random.default_rng(0))
    assert len(q) == len(p) == len(n) == 6 and len(set(p)) == 6
    for qi, pi, ni in zip(q, p, n):
        i = int(pi[1:-1])
        assert qi in subs[i].queries and ni in subs[i].negatives
    q2, p2, n2 = sample_batch(subs, 6, np.random.default_rng(0))
    assert (q, p, n) == (q2, p2, n2)
    with pytest.raises(ValueError):
        sample_batch(subs, 11, np.random.default_rng(0))


# --- metrics ------------------------------------------------------------------------------------------------

def test_ranks_mrr_recall_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5],   # relevant 0: rank 1
                           [0.9, 0.1, 0.5],   # relevant 2: rank 2
                           [0.3, 0.3, 0.1],   # relevant 1, tied with 0: counts against -> rank 2
                           [0.9, 0.8, 0.0]])  # relevant 2: rank 3
    ranks = ranks_of_relevant(scores, [0, 2, 1, 2])
    assert ranks.tolist() == [1, 2, 2, 3]
    assert mrr_at_k(ranks, 10) == pytest.approx((1 + 0.5 + 0.5 + 1 / 3) / 4)
    assert mrr_at_k(ranks, 2) == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)  # rank 3 > k scores 0
    assert recall_at_k(ranks, 2) == pytest.approx(0.75)


# --- adapters -----------------------------------------------------------------------------------------------

def _tiny_bert(seed=0, layers=2):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, attn_implementation="eager")
    return BertModel(cfg, add_pooling_layer=False).eval()


def _inputs():
    ids = torch.tensor([[1, 5, 7, 2, 0], [1, 9, 2, 0, 0]])
    return ids, (ids != 0).long()


def test_adapter_starts_at_identity_and_counts():
    a = Adapter(16, 4)
    assert torch.equal(a(torch.randn(2, 3, 16)), torch.zeros(2, 3, 16))
    ids, mask = _inputs()
    base = RetrievalEncoder(_tiny_bert())(ids, mask)
    for mode in ("scattered", "connected"):
        enc = RetrievalEncoder(_tiny_bert(), mode, adapter_size=4)
        assert torch.allclose(enc(ids, mask), base, atol=1e-6)  # zero Up: the pretrained function
        assert len(enc.adapters) == 4  # attention + FFN output in each of 2 layers
        trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
        assert trainable == 4 * (2 * 16 * 4 + 4 + 16)  # Down (16x4 + 4) and Up (4x16 + 16) per site
        assert not any(p.requires_grad for p in enc.bert.parameters())


def test_connected_adds_every_adapter_output_to_the_last_hidden_state():
    from shared.encoder import mean_pool

    ids, mask = _inputs()
    enc = RetrievalEncoder(_tiny_bert(), "connected", adapter_size=4)
    torch.manual_seed(1)
    for a in enc.adapters:
        torch.nn.init.normal_(a.down.weight, std=0.5)
        torch.nn.init.normal_(a.up.weight, std=0.5)
    recorded = []
    for a in enc.adapters:
        a.register_forward_hook(lambda _m, _i, out: recorded.append(out))
    connected = enc(ids, mask)
    n_connected = len(recorded)
    enc.mode = "scattered"
    recorded.clear()
    hidden = enc.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    scattered = enc(ids, mask)
    assert n_connected == 4 and len(recorded) == 8  # the bert call and the scattered forward
    expected = mean_pool(hidden + torch.stack(recorded[:4]).sum(0), mask)
    assert torch.allclose(connected, expected, atol=1e-5)
    assert not torch.allclose(connected, scattered, atol=1e-3)  # the pathway changes the function
    assert torch.allclose(scattered, mean_pool(hidden, mask), atol=1e-6)


def test_aside_pathway_gives_lowest_adapter_a_direct_gradient():
    """With the BERT blocks above it frozen, the scattered bottom adapter's Up gets its gradient only
    through them; the connected one also directly. Both must be non-zero, and differ."""
    ids, mask = _inputs()
    grads = {}
    for mode in ("scattered", "connected"):
        enc = RetrievalEncoder(_tiny_bert(), mode, adapter_size=4)
        enc(ids, mask).pow(2).sum().backward()
        grads[mode] = enc.adapters[0].up.weight.grad.clone()
    assert grads["scattered"].abs().sum() > 0 and grads["connected"].abs().sum() > 0
    assert not torch.allclose(grads["scattered"], grads["connected"])


def test_build_model_counts_and_truncation():
    bert = truncate_layers(_tiny_bert(layers=3), 2)
    assert len(bert.encoder.layer) == 2 and bert.config.num_hidden_layers == 2
    with pytest.raises(ValueError):
        truncate_layers(_tiny_bert(layers=2), 3)
    assert len(adapter_sites(bert)) == 4
    _, n = build_model("zero_shot", _tiny_bert())
    assert n == 0
    _, n = build_model("lora", _tiny_bert(), lora_r=2)
    assert n == 2 * 2 * (2 * 16 + 16 * 2)  # 2 layers x (query, value) x (A: 2x16 + B: 16x2)
    model, n = build_model("full", _tiny_bert())
    total_bert = sum(p.numel() for p in model.bert.parameters())
    assert n == total_bert - 50 * 16  # everything but the word-embedding table
    _, n = build_model("connected", _tiny_bert(), adapter_size=4)
    assert n == 4 * (2 * 16 * 4 + 4 + 16)
    with pytest.raises(ValueError):
        build_model("prefix", _tiny_bert())


# --- claims -------------------------------------------------------------------------------------------------

def _table(values: dict[str, list[float]], n_trainable=None) -> pd.DataFrame:
    rows = []
    for arm, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"arm": arm, "seed": seed, "mrr10": v, "n_trainable": (n_trainable or {}).get(arm, 0),
                         "n_total": 1000})
    return pd.DataFrame(rows)


GOOD = {"zero_shot": [0.80], "full": [0.90, 0.92, 0.91], "lora": [0.85, 0.86, 0.84],
        "adapter": [0.84, 0.85, 0.86], "adapter_aa": [0.845, 0.845, 0.855], "connected": [0.90, 0.92, 0.92]}


def test_measure_connected_vs_scattered_by_hand():
    m, gate, control, _ = measure_connected_vs_scattered(_table(GOOD), 0.80, 0.01)
    assert m.value == pytest.approx(0.19 / 3)  # differences 0.06, 0.07, 0.06
    half = 4.302653 * np.std([0.06, 0.07, 0.06], ddof=1) / np.sqrt(3)  # t(0.975, df=2)
    assert m.ci_low == pytest.approx(0.19 / 3 - half, abs=1e-6) and gate.passed
    assert gate.value == pytest.approx(0.10)  # min over seeds of max(connected, adapter) - zero-shot
    assert control.measured.value == pytest.approx((0.005 - 0.005 - 0.005) / 3)
    claim = load_claims("connected_peft_ir")["connected_beats_scattered"]
    claim.evaluate(m, gate=gate, control=control)
    assert claim.verdict == "reproduced"


def test_failed_gate_and_discriminating_control():
    flat = dict(GOOD, adapter=[0.80, 0.80, 0.80], connected=[0.805, 0.80, 0.80])
    m, gate, control, _ = measure_connected_vs_scattered(_table(flat), 0.80, 0.01)
    assert not gate.passed
    claims = load_claims("connected_peft_ir")
    claims["connected_beats_scattered"].evaluate(m, gate=gate, control=control)
    assert claims["connected_beats_scattered"].verdict == "inconclusive"
    # a control that meets the criterion (an A/A gap as large as the effect) blocks "reproduced"
    leaky = dict(GOOD, adapter_aa=[0.90, 0.91, 0.92])
    m, gate, control, _ = measure_connected_vs_scattered(_table(leaky), 0.80, 0.01)
    claims["connected_beats_scattered"].evaluate(m, gate=gate, control=control)
    assert claims["connected_beats_scattered"].verdict == "inconclusive"
    assert "control meets the criterion" in claims["connected_beats_scattered"].reason


def test_measure_pet_below_full_and_connected_vs_full_by_hand():
    m, gate, control, _ = measure_pet_below_full(_table(GOOD), 0.80, 0.02)
    assert m.value == pytest.approx(np.mean([0.90 - 0.85, 0.92 - 0.86, 0.91 - 0.86]))
    assert gate.passed and gate.value == pytest.approx(0.10)
    claims = load_claims("connected_peft_ir")
    claims["scattered_pet_below_full"].evaluate(m, gate=gate, control=control)
    assert claims["scattered_pet_below_full"].verdict == "reproduced"

    m, gate, control, _ = measure_connected_vs_full(_table(GOOD), 0.80, 0.02)
    assert m.value == pytest.approx(0.01 / 3)  # differences 0, 0, 0.01
    assert control.measured.value == pytest.approx(0.80 - 0.91)
    claims["connected_matches_full"].evaluate(m, gate=gate, control=control)
    assert claims["connected_matches_full"].verdict == "reproduced"
    # connected far below full: not reproduced; full that did not learn: gate fails
    low = dict(GOOD, connected=[0.84, 0.85, 0.85])
    m, gate, control, _ = measure_connected_vs_full(_table(low), 0.80, 0.02)
    claims["connected_matches_full"].evaluate(m, gate=gate, control=control)
    assert claims["connected_matches_full"].verdict == "not_reproduced"
    m, gate, control, _ = measure_connected_vs_full(_table(GOOD), 0.895, 0.02)
    assert not gate.passed


def test_measure_budget_by_hand():
    counts = {"lora": 5, "adapter": 7, "connected": 7, "full": 600}
    m, control, detail = measure_budget(_table(GOOD, counts))
    assert m.value == pytest.approx(0.7) and m.ci_low == m.ci_high == m.value
    assert control.measured.value == pytest.approx(60.0)
    claim = load_claims("connected_peft_ir")["pet_budget_below_1pct"]
    claim.evaluate(m, control=control)
    assert claim.verdict == "passed"
    m, control, _ = measure_budget(_table(GOOD, dict(counts, adapter=20)))
    claim.evaluate(m, control=control)
    assert claim.verdict == "failed"
