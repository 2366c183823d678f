"""papers.context_knob: CCS data, the last-token runner, interventions, DAS, steering values and verdict rules."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from papers.context_knob.analysis import (evaluate_all, measure_ccs_finetuning, measure_das, measure_separation,
                                          measure_smollm2_transfer, measure_steering, pretrain_gate, spearman,
                                          steering_difference, within_step_correlation)
from papers.context_knob.cached_lora import cache_prompts, cached_answer_loss, train_top_lora_answers
from papers.context_knob.experiment import (DasSpec, TinySpec, das_data, fixed_training_items, run_tiny_all,
                                            split_indices)
from papers.context_knob.knob import answer_loss
from shared.topblocks import build_top_model
from papers.context_knob.knob import (LastTokenRunner, control_values, interchange_accuracy, last_token_hook,
                                      last_token_logits, mean_difference_direction, random_direction, separation,
                                      set_coordinate, steered_pair_correct, steering_values, train_das)
from papers.context_knob.task import (CONTEXT, NONE, PRETRAIN_MIXTURE, PRIOR, Items, PromptSet, TinyWorld,
                                      capital_user_message, das_source_index, encode_capitals, pad_left,
                                      pair_accuracy, sample_counterfactuals, sample_pretrain, same_first_token)
from shared.claims import load_claims
from shared.lm import tiny_llama


def claims():
    return load_claims("context_knob")


def judge(cid, measured):
    m, gate, control, detail = measured
    return claims()[cid].evaluate(m, gate=gate, control=control, detail=detail)


# --- CCS data ------------------------------------------------------------------------------------------------

def test_tiny_world_prompt_layout_and_targets():
    world = TinyWorld.make(n_entities=6, n_novel=2, n_values=5, seed=0)
    items = Items(np.array([3]), world.facts[[3]], np.array([(world.facts[3] + 1) % 5]))
    p = world.encode(items)  # prior then context intent, phrasing 0 ("use ...")
    words = [[world.vocab[t] for t in row] for row in p.ids.tolist()]
    v_ctx, v_prior = f"v{items.ctx[0]}", f"v{items.prior[0]}"
    assert words[0] == ["<bos>", "e3", "is", v_ctx, "query", "e3", "use", "prior"]
    assert words[1] == ["<bos>", "e3", "is", v_ctx, "query", "e3", "use", "context"]
    assert p.intent.tolist() == [PRIOR, CONTEXT] and p.item.tolist() == [0, 0]
    assert [world.vocab[t] for t in p.target().tolist()] == [v_prior, v_ctx]
    assert [world.vocab[t] for t in p.flipped_target().tolist()] == [v_ctx, v_prior]
    two = Items(np.array([3, 4]), world.facts[[3, 4]], (world.facts[[3, 4]] + 1) % 5)
    phr = [[world.vocab[t] for t in row[-2:]] for row in world.encode(two).ids.tolist()]
    assert phr == [["use", "prior"], ["use", "context"], ["ignore", "context"], ["ignore", "prior"]]
    none = world.encode(items, with_intent=False)
    assert [world.vocab[t] for t in none.ids[0, -2:].tolist()] == ["say", "answer"]
    assert none.intent.tolist() == [NONE]
    with pytest.raises(ValueError):
        none.target()


def test_pretraining_mixture_targets_follow_their_rule():
    world = TinyWorld.make(n_entities=20, n_novel=5, n_values=7, seed=1)
    seq, target, kind = sample_pretrain(world, 3000, np.random.default_rng(0))
    names = list(PRETRAIN_MIXTURE)
    w = world.vocab
    ent = seq[:, 5] - world.entity_token(0)
    for i in range(len(seq)):
        k, words = names[kind[i]], [w[t] for t in seq[i]]
        if k == "fact":
            assert words[1] == words[3] == "_" and words[-2:] == ["say", "answer"]
            assert target[i] == world.value_token(world.facts[ent[i]])
        elif k == "novel_copy":
            assert words[1].startswith("n") and target[i] == seq[i, 3]
        elif k == "trusted_conflict":
            assert words[-2:] == ["trust", "context"] and target[i] == seq[i, 3]
            assert seq[i, 3] != world.value_token(world.facts[ent[i]])
        elif k == "doubted_conflict":
            assert words[-2:] == ["doubt", "context"] and target[i] == world.value_token(world.facts[ent[i]])
        else:
            assert words[-2:] == ["say", "answer"]
            assert target[i] in (seq[i, 3], world.value_token(world.facts[ent[i]]))
    freq = np.bincount(kind, minlength=len(names)) / len(kind)
    assert freq == pytest.approx(list(PRETRAIN_MIXTURE.values()), abs=0.03)
    neutral = kind == names.index("neutral_conflict")
    assert np.mean(target[neutral] == seq[neutral, 3]) == pytest.approx(0.5, abs=0.1)


def test_items_reject_equal_answers_and_world_items_are_counterfactual():
    with pytest.raises(ValueError):
        Items(np.array([0]), np.array([2]), np.array([2]))
    world = TinyWorld.make(8, 2, 6, seed=3)
    it = world.items(np.array([0, 1, 2]), per_entity=5, rng=np.random.default_rng(0))
    assert len(it) == 15 and np.all(it.prior == world.facts[it.subject]) and np.all(it.ctx != it.prior)
    assert all(len(set(it.ctx[it.subject == e])) == 5 for e in (0, 1, 2))  # 5 distinct context answers


def test_pair_accuracy_needs_both_intents():
    intent = np.array([PRIOR, CONTEXT, PRIOR, CONTEXT, PRIOR, CONTEXT])
    item = np.array([0, 0, 1, 1, 2, 2])
    correct = np.array([True, True, True, False, False, False])
    assert pair_accuracy(correct, intent, item) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        pair_accuracy(np.array([True]), np.array([NONE]), np.array([0]))


def test_das_sources_follow_the_authors_rule():
    items = Items(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0]))
    item, intent = np.repeat(np.arange(4), 2), np.tile([PRIOR, CONTEXT], 4)
    src = das_source_index(items, item, intent, np.random.default_rng(0))
    s, t = item[src], item
    assert np.all(items.subject[s] != items.subject[t]) and np.all(items.ctx[s] != items.ctx[t])
    assert np.all(items.prior[s] != items.prior[t]) and np.all(intent[src] != intent)
    # a target with no valid source gets -1 (one item: no other subject), and draws nothing from the rng
    one = Items(np.array([0]), np.array([0]), np.array([1]))
    rng = np.random.default_rng(0)
    assert das_source_index(one, np.array([0, 0]), np.array([PRIOR, CONTEXT]), rng).tolist() == [-1, -1]
    assert rng.integers(10**9) == np.random.default_rng(0).integers(10**9)
    # items 0-2 pair among themselves; item 3 shares its prior answer with item 0 and its context answer with
    # items 2 and 4, so only item 1 can be its source; item 4 has item 0's subject, item 1's prior answer
    # and the context answer of items 2 and 3: no source
    mixed = Items(np.array([0, 1, 2, 3, 0]), np.array([0, 1, 2, 0, 1]), np.array([1, 2, 3, 3, 3]))
    item, intent = np.repeat(np.arange(5), 2), np.tile([PRIOR, CONTEXT], 5)
    src = das_source_index(mixed, item, intent, np.random.default_rng(1))
    assert src[8:].tolist() == [-1, -1] and item[src[6:8]].tolist() == [1, 1]
    assert np.all(src[:8] >= 0) and np.all(intent[src[:8]] != intent[:8])


def test_counterfactuals_avoid_the_prior_and_shared_first_tokens():
    forbidden = np.zeros((4, 4), dtype=bool)
    forbidden[0, 1] = True
    cf = sample_counterfactuals(np.zeros(200, dtype=int), 4, np.random.default_rng(0), forbidden)
    assert set(cf.tolist()) == {2, 3}


def test_split_indices_partition():
    tr, dv, te = split_indices(10, np.random.default_rng(0))
    assert (len(tr), len(dv), len(te)) == (5, 2, 3)  # round(2.5) = 2
    assert sorted(np.concatenate([tr, dv, te]).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        split_indices(2, np.random.default_rng(0))


class WordTokenizer:
    """A stand-in for SmolLM2's tokenizer: ChatML as text, GPT-2-like words with their leading space."""

    chat_template = "chatml"
    pad_token_id = 0

    def __init__(self):
        self.vocab = {"<pad>": 0}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        words = re.findall(r"<\|im_(?:start|end)\|>|\n| ?[^ \n<]+", text)
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab)) for w in words]}


def test_capital_prompts_use_the_authors_template():
    text = capital_user_message("France", "Madrid", PRIOR)
    assert text == ("Context: The capital of France is Madrid.\nInstruction: Ignore the context in answering "
                    "the query.\nQuery: What is the capital of France?")
    assert "Instruction" not in capital_user_message("France", "Madrid", NONE)
    tok = WordTokenizer()
    capitals = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Peru", "Paris")]
    assert same_first_token(tok, capitals)[0, 3] and not same_first_token(tok, capitals)[0, 1]
    p = encode_capitals(tok, Items(np.array([0, 2]), np.array([0, 2]), np.array([1, 0])), capitals=capitals)
    inv = {i: w for w, i in tok.vocab.items()}
    assert p.ids.shape[0] == 4 and p.mask[:, -1].all()
    words = [inv[i] for i in p.ids[0][p.mask[0].bool()].tolist()]
    assert words[-8:] == ["<|im_start|>", "assistant", "\n", "The", " capital", " of", " France", " is"]
    assert inv[p.ctx_token[0].item()] == " Madrid" and inv[p.prior_token[0].item()] == " Paris"
    assert inv[p.ctx_token[2].item()] == " Paris" and inv[p.prior_token[2].item()] == " Rome"


# --- the runner and the interventions ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_llama(40, 32, d_model=32, n_layers=3, n_heads=4).eval()


def _prompts():
    ids, mask = pad_left([[1, 5, 6, 7, 8], [1, 9, 10], [3, 4, 5, 6, 7, 8, 9], [2, 2, 11, 12]], 0)
    return PromptSet(ids, mask, torch.tensor([20, 21, 22, 23]), torch.tensor([24, 25, 26, 27]),
                     torch.tensor([CONTEXT, PRIOR, CONTEXT, PRIOR]), torch.tensor([0, 0, 1, 1]))


def test_set_coordinate_sets_only_the_coordinate():
    u = random_direction(8, 0)
    h = torch.randn(5, 8)
    out = set_coordinate(h, u, torch.full((5,), 2.5))
    assert torch.allclose(out @ u, torch.full((5,), 2.5), atol=1e-5)
    proj = lambda x: x - (x @ u)[:, None] * u  # noqa: E731
    assert torch.allclose(proj(out), proj(h), atol=1e-5)


def test_runner_matches_full_forward_passes_with_and_without_edits(tiny):
    p = _prompts()
    runner = LastTokenRunner(tiny, p, batch_size=3)
    with torch.no_grad():
        full = last_token_logits(tiny, p.ids, p.mask)
    assert torch.allclose(runner.logits(), full, atol=1e-5)
    assert torch.allclose(runner.logits(), full, atol=1e-5)  # the cache is restored after each pass
    u = random_direction(32, 1)
    edit = lambda h, rows: set_coordinate(h, u, torch.full((h.shape[0],), 4.0))  # noqa: E731
    with torch.no_grad(), last_token_hook(tiny, 1, edit, None):
        edited = last_token_logits(tiny, p.ids, p.mask)
    assert torch.allclose(runner.logits(1, edit), edited, atol=1e-5)
    assert not torch.allclose(edited, full, atol=1e-3)
    with torch.no_grad():
        hs = tiny(input_ids=p.ids, attention_mask=p.mask, position_ids=(p.mask.cumsum(-1) - 1).clamp(min=0),
                  output_hidden_states=True).hidden_states
    states = runner.states([0, 1])
    assert torch.allclose(states[:, 0], hs[1][:, -1], atol=1e-5) and torch.allclose(states[:, 1], hs[2][:, -1], atol=1e-5)


def test_interchange_with_own_coordinate_changes_nothing(tiny):
    p = _prompts()
    runner = LastTokenRunner(tiny, p, batch_size=2)
    own = runner.states([1])[:, 0]
    pred = runner.predictions()
    assert interchange_accuracy(runner, 1, random_direction(32, 2), own, pred) == 1.0


def test_das_trains_only_the_direction_and_learns_a_planted_variable(tiny):
    """Targets whose label is the prediction after moving the coordinate on a planted u* to a source value:
    DAS must reach a high interchange accuracy while the model stays untouched."""
    torch.manual_seed(0)
    n = 48
    ids = torch.randint(1, 40, (n, 6))
    p = PromptSet(ids, torch.ones_like(ids), torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long),
                  torch.tensor([CONTEXT, PRIOR] * (n // 2)), torch.arange(n).div(2, rounding_mode="floor"))
    runner = LastTokenRunner(tiny, p, batch_size=16)
    u_star = random_direction(32, 5)
    src_states = torch.randn(n, 32) * 0 + torch.where(torch.arange(n)[:, None] % 2 == 0, 8.0, -8.0) * u_star
    labels = runner.predictions(0, lambda h, rows: set_coordinate(h, u_star, src_states[rows] @ u_star))
    before = [q.clone() for q in tiny.parameters()]
    u, hist = train_das(runner, 0, src_states, labels, steps=120, lr=0.05, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.parameters()))
    assert all(q.requires_grad for q in tiny.parameters())  # flags restored
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-5)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]
    assert interchange_accuracy(runner, 0, u, src_states, labels) >= 0.9


def test_steering_values_and_separation_formulas():
    coords = torch.tensor([3.0, 5.0, -1.0, 1.0])
    intent = torch.tensor([CONTEXT, CONTEXT, PRIOR, PRIOR])
    v = steering_values(coords, intent)  # class means 4 and 0
    assert (v.mid, v.half) == (2.0, 2.0)
    assert (v.context_value(2.0), v.prior_value(2.0)) == (6.0, -2.0)
    c = control_values(torch.tensor([10.0, 12.0]), v)
    assert (c.mid, c.half) == (11.0, 2.0)
    # d' = (4 - 0) / sqrt((2 + 2) / 2)
    assert separation(coords, intent) == pytest.approx(4 / np.sqrt(2))
    states = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(mean_difference_direction(states, intent), torch.tensor([1.0, 0.0]))


def test_steered_pair_correct_requires_both_values_to_work(tiny):
    p = _prompts()
    runner = LastTokenRunner(tiny, p, batch_size=4)
    u = random_direction(32, 3)
    v = steering_values(torch.tensor([1.0, -1.0]), torch.tensor([CONTEXT, PRIOR]))
    both, ok_ctx, ok_prior = steered_pair_correct(runner, p, 1, u, v, 1.0)
    assert np.array_equal(both, ok_ctx & ok_prior)
    # with the answers set to what each steering value produces, every item is right
    pc = runner.predictions(1, lambda h, r: set_coordinate(h, u, torch.full((h.shape[0],), v.context_value(1.0))))
    pp = runner.predictions(1, lambda h, r: set_coordinate(h, u, torch.full((h.shape[0],), v.prior_value(1.0))))
    rigged = PromptSet(p.ids, p.mask, pc, pp, p.intent, p.item)
    assert steered_pair_correct(runner, rigged, 1, u, v, 1.0)[0].all()


def test_das_data_filters_to_items_right_under_both_intents(tiny):
    world = TinyWorld.make(8, 2, 5, seed=0)
    model = tiny_llama(world.vocab_size, 16, d_model=16, n_layers=2, n_heads=2).eval()
    items = world.items(np.arange(8), 4, np.random.default_rng(0))
    p = world.encode(items)
    runner = LastTokenRunner(model, p, 64)
    pred = runner.predictions()
    rigged = PromptSet(p.ids, p.mask, p.ctx_token.clone(), p.prior_token.clone(), p.intent, p.item)
    # make items 0-5 "correct" for this random model under both intents, the rest wrong
    for i in range(len(p)):
        if p.item[i] < 6:
            (rigged.ctx_token if p.intent[i] == CONTEXT else rigged.prior_token)[i] = pred[i]
    got = das_data(model, items, rigged, np.random.default_rng(0), 1000, [0, 1], 64, "cpu")
    assert got is not None
    _, targets, src, labels = got
    assert set(targets.item.tolist()) <= set(range(6)) and src.shape == (len(targets), 2, 16)


# --- verdict rules on synthetic tables ------------------------------------------------------------------------

def _steering(knob, random, random_b=None, model="fine-tuned", arm="tiny"):
    rows = []
    for s, (k, r) in enumerate(zip(knob, random)):
        rows += [{"arm": arm, "model": model, "direction": "knob", "seed": s, "pair_accuracy": k},
                 {"arm": arm, "model": model, "direction": "random", "seed": s, "pair_accuracy": r}]
        if random_b is not None:
            rows.append({"arm": arm, "model": model, "direction": "random_b", "seed": s, "pair_accuracy": random_b[s]})
    return pd.DataFrame(rows)


PRETRAIN_OK = pd.DataFrame({"fact": [0.95, 0.96, 0.94], "novel_copy": [0.97, 0.93, 0.95]})


def test_registry_matches_the_code():
    ids = list(claims())
    assert ids == ["ccs_finetuning_v2", "das_single_layer_v2", "steering_finetuned_v2", "steering_transfer_base_v2",
                   "separation_across_seeds", "smollm2_finetuned_transfer_v3"]
    assert all(c.kind == "replication" and c.has_gate and c.has_control for c in claims().values())


def test_ccs_finetuning_rule_gate_and_control():
    ok = pd.DataFrame({"ft_pair_accuracy": [0.9, 0.95, 1.0], "base_pair_accuracy": [0.1, 0.2, 0.15]})
    # mean 0.95, t interval 0.95 -+ 4.303 * 0.05 / sqrt(3) = [0.826, 1] (clipped): above 0.80
    c = judge("ccs_finetuning_v2", measure_ccs_finetuning(ok, PRETRAIN_OK))
    assert c.verdict == "reproduced" and c.measured.ci_low == pytest.approx(0.8258, abs=1e-3)
    low = ok.assign(ft_pair_accuracy=[0.5, 0.55, 0.6])  # upper end 0.55 + 0.124 = 0.674 < 0.80
    assert judge("ccs_finetuning_v2", measure_ccs_finetuning(low, PRETRAIN_OK)).verdict == "not_reproduced"
    bad_pretrain = PRETRAIN_OK.assign(fact=[0.5, 0.6, 0.5])
    c = judge("ccs_finetuning_v2", measure_ccs_finetuning(low, bad_pretrain))
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")
    control_passes = ok.assign(base_pair_accuracy=[0.9, 0.95, 1.0])  # the never-fine-tuned model does it too
    c = judge("ccs_finetuning_v2", measure_ccs_finetuning(control_passes, PRETRAIN_OK))
    assert c.verdict == "inconclusive" and c.control_meets
    assert not pretrain_gate(PRETRAIN_OK, (False, "DAS did not run")).passed


def test_das_rule_and_gate():
    summary = pd.DataFrame({"ft_pair_accuracy": [0.9, 1.0, 1.0], "test_iia": [0.9, 0.95, 1.0],
                            "test_iia_random": [0.0, 0.05, 0.0], "best_layer": [1, 1, 2]})
    assert judge("das_single_layer_v2", measure_das(summary)).verdict == "reproduced"
    weak_ft = summary.assign(ft_pair_accuracy=[0.9, 0.7, 1.0])  # one seed below 0.80: gate fails
    assert judge("das_single_layer_v2", measure_das(weak_ft)).reason.startswith("gate failed")
    no_das = summary.drop(columns=["test_iia", "test_iia_random", "best_layer"])
    assert judge("das_single_layer_v2", measure_das(no_das)).verdict == "inconclusive"


def test_steering_rule_and_aa_control():
    summary = pd.DataFrame({"ft_pair_accuracy": [0.9, 1.0, 1.0], "test_iia": [1.0, 1.0, 1.0]})
    from papers.context_knob.analysis import ft_gate
    # differences 0.7, 0.75, 0.65: mean 0.70, t interval [0.576, 0.824] above 0.30; A/A differences 0.05, 0, -0.1
    steer = _steering([0.9, 0.85, 0.95], [0.2, 0.1, 0.3], [0.25, 0.1, 0.2])
    c = judge("steering_finetuned_v2", measure_steering(steer, "tiny", "fine-tuned", ft_gate(summary)))
    assert c.verdict == "reproduced" and c.measured.ci_low == pytest.approx(0.5758, abs=1e-3)
    assert c.control.measured.value == pytest.approx(-0.05 / 3)
    # a second random direction that steers as well as the knob: the criterion does not discriminate
    aa = _steering([0.9, 0.85, 0.95], [0.2, 0.1, 0.3], [0.9, 0.9, 0.95])
    c = judge("steering_finetuned_v2", measure_steering(aa, "tiny", "fine-tuned", ft_gate(summary)))
    assert c.verdict == "inconclusive" and c.control_meets
    flat = _steering([0.1, 0.12, 0.08], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1])
    gate = pretrain_gate(PRETRAIN_OK)
    assert judge("steering_transfer_base_v2", measure_steering(flat, "tiny", "fine-tuned", gate)).verdict == "not_reproduced"
    noisy = _steering([0.9, 0.1, 0.6], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1])
    assert judge("steering_transfer_base_v2", measure_steering(noisy, "tiny", "fine-tuned", gate)).verdict == "inconclusive"
    d = steering_difference(_steering([0.5, 0.6], [0.1, 0.2]), "tiny", "fine-tuned")
    assert d["difference"].tolist() == pytest.approx([0.4, 0.4])
    c = judge("steering_transfer_base_v2", measure_steering(flat, "tiny", "base", gate))  # no such rows
    assert c.verdict == "inconclusive" and c.measured.ci_low is None


def _checkpoints(n_seeds, sep_of_seed, steps=(0, 50, 100)):
    rows = []
    for seed in range(n_seeds):
        for j, step in enumerate(steps):
            rows.append({"seed": seed, "ft_step": step, "pair_accuracy": 0.1 * seed + 0.2 * j,
                         "separation": sep_of_seed(seed) + j})
    return pd.DataFrame(rows)


def test_separation_across_seeds():
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0) and np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert within_step_correlation(np.array([[1, 1], [2, 1], [3, 1]]), np.array([[1, 5], [2, 6], [3, 7]])) == 1.0
    good = _checkpoints(8, lambda s: float(s))  # within every step, the better seed separates more
    m, gate, control, _ = measure_separation(good, n_boot=500)
    assert gate.passed and m.value == pytest.approx(1.0) and m.ci_low == pytest.approx(1.0)
    assert control.measured.ci_low < 0.3  # permuted d': no correlation by design
    assert judge("separation_across_seeds", (m, gate, control, "")).verdict == "reproduced"
    bad = _checkpoints(8, lambda s: -float(s))
    assert judge("separation_across_seeds", measure_separation(bad, n_boot=500)).verdict == "not_reproduced"
    few = _checkpoints(4, lambda s: float(s))  # fewer than 6 seeds: gate fails
    c = judge("separation_across_seeds", measure_separation(few, n_boot=200))
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")
    converged = good.assign(pair_accuracy=np.where(good["ft_step"] > 0, 1.0, good["pair_accuracy"]))
    assert not measure_separation(converged, n_boot=200)[1].passed  # only one step varies


def test_smollm2_transfer_needs_the_lora_arm():
    cid = "smollm2_finetuned_transfer_v3"
    c = judge(cid, measure_smollm2_transfer(pd.DataFrame(), pd.DataFrame(), "probe"))
    assert c.verdict == "inconclusive" and c.reason.startswith("gate failed")
    # knob 0.9, 0.9, 0.95 vs random 0.1, 0, 0.1: differences 0.8, 0.9, 0.85, mean 0.85, sd 0.05,
    # t interval 0.85 -+ 4.303 * 0.05 / sqrt(3) = [0.726, 0.974]: above 0.30
    steer = _steering([0.9, 0.9, 0.95], [0.1, 0.0, 0.1], [0.1, 0.05, 0.0],
                      model="instruct (DAS from fine-tuned)", arm="smollm2")
    good = pd.DataFrame({"ft_pair_accuracy": [0.9, 0.9, 0.9], "das_layer": [26, 26, 28]})
    ok = judge(cid, measure_smollm2_transfer(steer, good, "finetune"))
    assert ok.verdict == "reproduced" and ok.measured.ci_low == pytest.approx(0.7258, abs=1e-3)
    assert ok.control.measured.value == pytest.approx((0.0 + 0.05 - 0.1) / 3)  # A/A: random_b - random
    # failed gate: mean fine-tuned pair accuracy (0.4 + 0.5 + 0.4) / 3 = 0.433 < 0.70
    weak = judge(cid, measure_smollm2_transfer(steer, good.assign(ft_pair_accuracy=[0.4, 0.5, 0.4]), "finetune"))
    assert weak.verdict == "inconclusive" and weak.reason.startswith("gate failed")
    # failed gate: accuracy 0.8 on average (>= 0.70) but DAS did not run in one seed
    no_das = judge(cid, measure_smollm2_transfer(steer, good.assign(ft_pair_accuracy=[0.8, 0.8, 0.8],
                                                                     das_layer=[26, None, 28]), "finetune"))
    assert no_das.verdict == "inconclusive" and no_das.reason.startswith("gate failed")
    # a control that passes: the second random direction steers as well as the knob (A/A differences
    # 0.8, 0.9, 0.85 above 0.30 too): the criterion does not discriminate
    aa = _steering([0.9, 0.9, 0.95], [0.1, 0.0, 0.1], [0.9, 0.9, 0.95], model="instruct (DAS from fine-tuned)",
                   arm="smollm2")
    c = judge(cid, measure_smollm2_transfer(aa, good, "finetune"))
    assert c.verdict == "inconclusive" and c.control_meets
    # no transfer: knob as bad as random (differences 0, 0.05, -0.05 -> interval below 0.30)
    flat = _steering([0.1, 0.05, 0.05], [0.1, 0.0, 0.1], [0.1, 0.05, 0.0], model="instruct (DAS from fine-tuned)",
                     arm="smollm2")
    assert judge(cid, measure_smollm2_transfer(flat, good, "finetune")).verdict == "not_reproduced"


# --- the SmolLM2 LoRA arm's fixed training set and cached top blocks -----------------------------------------

def test_fixed_training_set_has_both_intents_and_only_training_items():
    tok = WordTokenizer()
    capitals = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Peru", "Lima"), ("Chad", "Paris"),
                ("Cuba", "Havana")]
    forbidden = same_first_token(tok, capitals)  # France and Chad share " Paris"
    train_subjects = np.array([0, 2, 3])  # dev/test subjects 1, 4, 5 must never appear
    items = fixed_training_items(train_subjects, 3, len(capitals), np.random.default_rng(0), forbidden)
    assert len(items) == 9 and sorted(set(items.subject.tolist())) == [0, 2, 3]
    assert np.bincount(items.subject, minlength=6).tolist() == [3, 0, 3, 3, 0, 0]  # 3 contexts per item
    assert (items.prior == items.subject).all() and (items.ctx != items.prior).all()
    assert not forbidden[items.prior, items.ctx].any()  # never a context with the prior's first token
    p = encode_capitals(tok, items, capitals=capitals)
    assert len(p) == 18 and p.intent.tolist() == [PRIOR, CONTEXT] * 9  # every prompt under both intents
    assert (p.target() == torch.where(p.intent == CONTEXT, p.ctx_token, p.prior_token)).all()
    again = fixed_training_items(train_subjects, 3, len(capitals), np.random.default_rng(0), forbidden)
    assert (again.ctx == items.ctx).all()  # fixed per seed


@pytest.mark.parametrize("n_top", [1, 2, 3])
def test_cached_top_block_answer_loss_equals_the_full_model(tiny, n_top):
    p = _prompts()  # left-padded, lengths 5, 3, 7, 4
    target = torch.tensor([20, 25, 22, 27])
    full = answer_loss(tiny, (p.ids, p.mask, target)).item()
    cached = cache_prompts(tiny, p.ids, p.mask, target, n_top, batch_size=3, device="cpu")
    assert cached.last.tolist() == [4, 2, 6, 3] and cached.hidden.shape[:2] == (4, 7)
    with torch.no_grad():
        loss = cached_answer_loss(build_top_model(tiny, n_top), *cached.batch([0, 1, 2, 3], "cpu")).item()
        part = cached_answer_loss(build_top_model(tiny, n_top), *cached.batch([1, 3], "cpu")).item()
    assert loss == pytest.approx(full, abs=1e-5)
    assert part == pytest.approx(answer_loss(tiny, (p.ids[[1, 3]], p.mask[[1, 3]], target[[1, 3]])).item(), abs=1e-5)


def test_top_lora_trains_only_the_top_blocks_and_fits_the_answers(tiny):
    import copy

    model = copy.deepcopy(tiny)
    p = _prompts()
    target = torch.tensor([20, 25, 22, 27])
    before = answer_loss(model, (p.ids, p.mask, target)).item()
    lower = {k: v.clone() for k, v in model.model.layers[0].state_dict().items()}
    top = {k: v.clone() for k, v in model.model.layers[2].state_dict().items()}
    cached = cache_prompts(model, p.ids, p.mask, target, 1, batch_size=4, device="cpu")
    train_top_lora_answers(model, cached, 1, r=4, alpha=8.0, lr=0.05, steps=30, batch_size=4, seed=0,
                           device="cpu", target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    after = answer_loss(model, (p.ids, p.mask, target)).item()
    assert after < before - 0.3  # merged into the full model's weights (3.79 -> 3.15 here)
    assert all(torch.equal(v, model.model.layers[0].state_dict()[k]) for k, v in lower.items())
    assert any(not torch.equal(v, model.model.layers[2].state_dict()[k]) for k, v in top.items())


def test_tiny_arm_does_not_depend_on_workers():
    spec = TinySpec(n_entities=8, n_novel=4, n_values=6, d_model=16, n_layers=1, n_heads=2, pretrain_steps=8,
                    pretrain_batch=16, pretrain_lr=0.003, ft_steps=4, ft_pairs=4, ft_lr=0.003, lora_r=2,
                    lora_alpha=4.0, ft_checkpoints=2, items_per_entity=2, das=DasSpec(steps=2, lr=0.03, max_targets=8),
                    multipliers=[1.0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers are single-threaded: compare like with like
    try:
        one = run_tiny_all(spec, [0, 1], "cpu", workers=1)
    finally:
        torch.set_num_threads(threads)
    two = run_tiny_all(spec, [0, 1], "cpu", workers=2)
    assert one.keys() == two.keys()
    for k in one:
        pd.testing.assert_frame_equal(pd.DataFrame(one[k]), pd.DataFrame(two[k]))
    assert [r["seed"] for r in one["summary"]] == [0, 1]


def test_evaluate_all_covers_the_registry():
    summary = pd.DataFrame({"seed": [0, 1, 2], "ft_pair_accuracy": [0.9, 1.0, 1.0], "base_pair_accuracy": [0.1, 0.2, 0.1],
                            "test_iia": [0.9, 0.95, 1.0], "test_iia_random": [0.0, 0.05, 0.0], "best_layer": [1, 1, 2]})
    steer = pd.concat([_steering([0.9, 0.85, 0.95], [0.2, 0.1, 0.3], [0.25, 0.1, 0.2]),
                       _steering([0.5, 0.4, 0.45], [0.2, 0.1, 0.3], [0.25, 0.1, 0.2], model="base")])
    tiny = {"summary": summary, "pretrain": PRETRAIN_OK, "steering": steer,
            "checkpoints": _checkpoints(3, lambda s: float(s))}
    out = evaluate_all(claims(), tiny, {"summary": pd.DataFrame(), "steering_ft": pd.DataFrame()}, "probe")
    assert all(c.verdict is not None for c in out.values())
    assert out["separation_across_seeds"].verdict == "inconclusive"  # 3 seeds < 6: gate
