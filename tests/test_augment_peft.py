"""papers.augment_peft: EDA operations, data sampling, batching, the SCL objective, silhouette and every
measure_* function, against hand-computed cases."""

import numpy as np
import pandas as pd
import pytest
import torch

from papers.augment_peft.analysis import (measure_heavy_drop_gap, measure_scl_gain, measure_scl_separation,
                                          measure_separation_gap, paired_difference)
from papers.augment_peft.data import stratified_sample
from shared.textdata import read_labelled
from papers.augment_peft.eda import (STOP_WORDS, EmbeddingSynonyms, apply_operation, augment_corpus, eda,
                                     n_changed, random_deletion, random_insertion, random_swap,
                                     synonym_replacement, word_change_fraction)
from papers.augment_peft.method import class_silhouette, group_batches, model_seed, scl_objective, trim

SYN = {"movie": ["film"], "great": ["fine", "good"], "plot": ["story"]}.get


def syn(word):
    return SYN(word) or []


# --- EDA ------------------------------------------------------------------------------------------------

def test_n_changed_is_alpha_times_length_at_least_one():
    assert n_changed(10, 0.1) == 1
    assert n_changed(25, 0.1) == 2   # int(2.5)
    assert n_changed(3, 0.1) == 1    # max(1, 0)
    assert n_changed(10, 0.3) == 3


def test_synonym_replacement_replaces_only_words_with_synonyms():
    words = "the movie is great".split()
    rng = np.random.default_rng(0)
    out = synonym_replacement(words, 1, rng, syn)
    assert len(out) == 4 and out[0] == "the" and out[2] == "is"
    changed = [i for i in range(4) if out[i] != words[i]]
    assert len(changed) == 1 and (out[1] == "film" or out[3] in ("fine", "good"))
    both = synonym_replacement(words, 5, np.random.default_rng(0), syn)   # n > candidates: both replaced
    assert both[1] == "film" and both[3] in ("fine", "good")
    assert synonym_replacement("a b c".split(), 2, rng, syn) == ["a", "b", "c"]  # no synonyms at all


def test_random_insertion_inserts_n_synonyms():
    words = "the movie is great".split()
    out = random_insertion(words, 2, np.random.default_rng(1), syn)
    assert len(out) == 6
    extra = list(out)
    for w in words:
        extra.remove(w)   # the original words keep their relative order and all survive
    assert all(w in ("film", "fine", "good") for w in extra)
    assert random_insertion(["a", "b"], 3, np.random.default_rng(1), syn) == ["a", "b"]


def test_random_swap_keeps_the_multiset_and_swaps():
    words = list("abcdef")
    out = random_swap(words, 1, np.random.default_rng(3))
    assert sorted(out) == words and sum(o != w for o, w in zip(out, words)) == 2  # exactly two positions moved
    assert random_swap(["x"], 2, np.random.default_rng(0)) == ["x"]


def test_random_deletion_probability_and_keeps_one():
    rng = np.random.default_rng(0)
    kept = [len(random_deletion(list("abcdefghij"), 0.3, rng)) for _ in range(2000)]
    assert np.mean(kept) == pytest.approx(7.0, abs=0.1)          # 10 * (1 - 0.3)
    assert len(random_deletion(list("abc"), 1.0, rng)) == 1        # all deleted -> one kept
    assert random_deletion(["solo"], 0.9, rng) == ["solo"]


def test_eda_is_seeded_and_cycles_operations():
    s = "the movie is great but the plot is thin"
    a = eda(s, 0.1, 4, np.random.default_rng(7), syn)
    b = eda(s, 0.1, 4, np.random.default_rng(7), syn)
    assert a == b and len(a) == 4
    lengths = sorted(len(x.split()) for x in a)
    n = len(s.split())
    # one copy per operation: SR and RS keep the length, RI adds 1, RD removes some (or none)
    assert lengths.count(n) >= 2 and (n + 1) in lengths
    with pytest.raises(ValueError):
        apply_operation("xx", s.split(), 0.1, np.random.default_rng(0), syn)


def test_augment_corpus_layout():
    texts, labels, groups = augment_corpus(["The  movie", "great plot"], [1, 0], 0.1, 2, seed=0, synonyms=syn)
    assert len(texts) == 6 and texts[0] == "the movie" and texts[3] == "great plot"
    assert labels.tolist() == [1, 1, 1, 0, 0, 0] and groups.tolist() == [0, 0, 0, 1, 1, 1]


def test_word_change_fraction():
    assert word_change_fraction("a b c d", "a b c d") == 0.0
    assert word_change_fraction("a b c d", "d c b a") == 0.0      # a swap changes no word
    assert word_change_fraction("a b c d", "a b c") == pytest.approx(0.25)
    assert word_change_fraction("a b", "c d") == 1.0


def test_embedding_synonyms_nearest_whole_words():
    vocab = ["[PAD]", "good", "great", "goods", "the", "bad", "##ly", "film", "ok"]
    vec = np.array([[0, 0], [1, 0], [0.9, 0.1], [1, 0.01], [1, 0], [0.7, 0.7], [1, 0], [0, 1], [1, 0]], float)
    s = EmbeddingSynonyms(vocab, vec, k=2)
    # "goods" is a variant of "good" (prefix), "the" a stop word, "##ly" a word piece, "ok" too short
    assert s("good") == ["great", "bad"]
    assert s("film") == ["bad", "great"]
    assert s("unknown") == [] and s("the") == []
    assert "the" in STOP_WORDS


# --- data -----------------------------------------------------------------------------------------------

def test_read_labelled_and_stratified_sample(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("1\tgood  film \n0\tbad film\n\n1\tfine\n")
    texts, labels = read_labelled(p)
    assert texts == ["good film", "bad film", "fine"] and labels.tolist() == [1, 0, 1]
    y = np.array([0] * 10 + [1] * 5 + [2] * 2)
    idx = stratified_sample(y, 3, seed=0)
    assert np.bincount(y[idx]).tolist() == [3, 3, 2]            # class 2 has only 2 rows
    assert (np.sort(idx) == idx).all() and len(set(idx)) == len(idx)
    assert stratified_sample(y, 3, seed=0).tolist() == idx.tolist()
    assert stratified_sample(y, 3, seed=1).tolist() != idx.tolist()


# --- method helpers -------------------------------------------------------------------------------------

def test_group_batches_keep_copies_together_and_cover_each_epoch():
    groups = np.repeat(np.arange(6), 3)            # 6 originals x (1 + 2 copies)
    batches = group_batches(groups, 2, 6, seed=0)  # 3 steps = one epoch
    assert all(len(b) == 6 for b in batches)
    for b in batches:
        assert all((groups[b] == g).sum() == 3 for g in np.unique(groups[b]))  # all copies of a chosen original
    first_epoch = np.concatenate(batches[:3])
    assert sorted(first_epoch.tolist()) == list(range(18))
    uneven = group_batches(np.repeat(np.arange(5), 2), 2, 10, seed=1)   # epochs of 5 in batches of 2
    assert all(len(np.unique(np.repeat(np.arange(5), 2)[b])) == 2 for b in uneven)
    with pytest.raises(ValueError):
        group_batches(groups, 7, 1, seed=0)
    assert model_seed(2, "prefix") == 2001 and model_seed(2, "prefix_b") == 2004


def test_trim_drops_unused_padding():
    ids = torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]])
    mask = (ids > 0).long()
    t_ids, t_mask = trim(ids, mask)
    assert t_ids.tolist() == [[1, 2], [3, 0]] and t_mask.tolist() == [[1, 1], [1, 0]]


def test_scl_objective_adds_weighted_supcon():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, y)
    loss, parts = scl_objective(logits, torch.randn(2, 3), y, 0.0, 0.1)
    assert torch.isclose(loss, ce) and "scl" not in parts
    # two positives per class, orthogonal classes: SupCon by hand
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    lab = torch.tensor([0, 0, 1, 1])
    lg = torch.zeros(4, 2)
    loss, parts = scl_objective(lg, f, lab, 0.5, 0.5)
    # anchor 0: others have sims 1, 0, 0 -> logits 2, 0, 0; positive is the first
    scl_hand = -(2.0 - np.log(np.exp(2.0) + 2.0))
    assert parts["scl"] == pytest.approx(scl_hand, rel=1e-5)
    assert float(loss) == pytest.approx(np.log(2) + 0.5 * scl_hand, rel=1e-5)


def test_class_silhouette_hand_values():
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert class_silhouette(f, np.array([0, 0, 1, 1])) == pytest.approx(1.0)   # a = 0, b = 1
    # mixed labels: point 0's classmate is orthogonal (a = 1), the other class holds its twin and an
    # orthogonal point (b = 0.5): s = (b - a) / max(a, b) = -0.5, and likewise for every point
    assert class_silhouette(f, np.array([0, 1, 0, 1])) == pytest.approx(-0.5)


# --- measure_* ------------------------------------------------------------------------------------------

def _table(acc, sil, heavy, seeds=(0, 1, 2)):
    """acc/sil/heavy: {arm: [per-seed values]}."""
    rows = []
    for arm in acc:
        for i, s in enumerate(seeds):
            rows.append({"seed": s, "arm": arm, "acc_clean": acc[arm][i], "sil_aug": sil[arm][i],
                         "acc_heavy": heavy[arm][i]})
    return pd.DataFrame(rows)


GOOD = _table(acc={"prefix": [0.80, 0.82, 0.81], "prefix_scl": [0.85, 0.86, 0.86], "ft": [0.88, 0.87, 0.88],
                   "prefix_b": [0.81, 0.81, 0.80]},
              sil={"prefix": [0.10, 0.11, 0.12], "prefix_scl": [0.20, 0.22, 0.21], "ft": [0.30, 0.31, 0.33],
                   "prefix_b": [0.11, 0.10, 0.12]},
              heavy={"prefix": [0.60, 0.62, 0.61], "prefix_scl": [0.70, 0.70, 0.70], "ft": [0.80, 0.79, 0.80],
                     "prefix_b": [0.61, 0.61, 0.60]})


def test_paired_difference_aligns_seeds():
    t = GOOD.sample(frac=1.0, random_state=0)   # row order must not matter
    assert paired_difference(t, "acc_clean", "prefix_scl", "prefix") == pytest.approx([0.05, 0.04, 0.05])
    with pytest.raises(ValueError):
        paired_difference(t, "acc_clean", "lora", "prefix")


def test_measure_scl_gain_reproduces_and_control_fails():
    m, gate, control, _ = measure_scl_gain(GOOD, 0.65)
    assert m.value == pytest.approx(np.mean([0.05, 0.04, 0.05]))
    half = 4.302653 * np.std([0.05, 0.04, 0.05], ddof=1) / np.sqrt(3)   # t_{0.975, 2}
    assert m.ci_low == pytest.approx(m.value - half, rel=1e-4)
    assert gate.passed and gate.value == pytest.approx(0.80)
    assert control.measured.value == pytest.approx(np.mean([0.01, -0.01, -0.01]))
    from shared.claims import Rule, verdict_rule
    rule = Rule("greater", null_value=0.0, smallest_effect=0.01)
    assert verdict_rule("replication", rule, m, gate, control)[0] == "reproduced"


def test_measure_scl_gain_failed_gate_and_passing_control():
    low = GOOD.copy()
    low.loc[(low.arm == "prefix") & (low.seed == 1), "acc_clean"] = 0.55   # one prefix seed below the gate
    _, gate, _, _ = measure_scl_gain(low, 0.65)
    assert not gate.passed and gate.value == pytest.approx(0.55)
    # a control that passes: prefix_b as good as prefix_scl -> the criterion does not discriminate
    leaky = GOOD.copy()
    leaky.loc[leaky.arm == "prefix_b", "acc_clean"] = [0.85, 0.86, 0.86]
    m, gate, control, _ = measure_scl_gain(leaky, 0.65)
    from shared.claims import Rule, verdict_rule
    verdict, reason, meets = verdict_rule("replication", Rule("greater", null_value=0.0, smallest_effect=0.01),
                                          m, gate, control)
    assert meets and verdict == "inconclusive" and "control" in reason


def test_measure_separation_gap_and_scl_separation():
    m, gate, control, _ = measure_separation_gap(GOOD, 0.65)
    assert m.value == pytest.approx(np.mean([0.20, 0.20, 0.21]))
    assert gate.passed and control.measured.value == pytest.approx(np.mean([0.01, -0.01, 0.0]))
    m2, gate2, c2, _ = measure_scl_separation(GOOD, 0.65)
    assert m2.value == pytest.approx(0.10) and gate2.passed
    assert c2.measured.value == pytest.approx(control.measured.value)   # same A/A arm pair
    _, failed, _, _ = measure_separation_gap(GOOD, 0.9)
    assert not failed.passed and failed.value == pytest.approx(0.80)


def test_measure_heavy_drop_gap():
    m, gate, control, _ = measure_heavy_drop_gap(GOOD, 0.65)
    # drops: prefix [0.20, 0.20, 0.20], ft [0.08, 0.08, 0.08] -> 0.12 each seed, zero spread
    assert m.value == pytest.approx(0.12) and m.ci_low == pytest.approx(0.12)
    assert control.measured.value == pytest.approx(0.0)   # prefix_b drops 0.20 too
    assert gate.passed
