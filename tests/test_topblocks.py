"""shared.topblocks: the top blocks fed cached inputs compute exactly what the full model computes."""

import pytest
import torch
import torch.nn.functional as F

from shared import topblocks as T
from shared.lm import tiny_llama
from shared.topblocks import build_top_model, cache_block_inputs


def _tiny(layers=4):
    torch.manual_seed(0)
    return tiny_llama(40, 64, d_model=32, n_layers=layers, n_heads=4).eval()


@pytest.mark.parametrize("n_top", [1, 2, 4])
def test_top_model_on_cached_inputs_equals_full_model_logits(n_top):
    model = _tiny()
    seqs = [[3, 4, 5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15]]
    hidden = cache_block_inputs(model, seqs, first_tuned=4 - n_top, pad_id=0, batch_size=2, device="cpu")
    assert [tuple(h.shape) for h in hidden] == [(6, 32), (3, 32), (4, 32)]
    assert all(h.dtype == torch.float32 for h in hidden)
    top = build_top_model(model, n_top)
    assert top.model.layers[0] is model.model.layers[4 - n_top]  # the same module, not a copy
    assert top.lm_head is model.lm_head
    with torch.no_grad():
        for h, s in zip(hidden, seqs):
            pos = torch.arange(len(s))[None]
            got = top(inputs_embeds=h[None], position_ids=pos).logits[0]
            want = model(input_ids=torch.tensor([s])).logits[0]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cache_does_not_depend_on_batch_composition_and_removes_its_hook():
    model = _tiny()
    seqs = [[3, 4, 5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15]]
    alone = [cache_block_inputs(model, [s], 2, 0, 1, "cpu")[0] for s in seqs]
    together = cache_block_inputs(model, seqs, 2, 0, 3, "cpu")
    for a, b in zip(alone, together):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not model.model.layers[2]._forward_pre_hooks  # the capture hook is gone
    # the model still runs end to end afterwards
    assert model(input_ids=torch.tensor([seqs[0]])).logits.shape == (1, 6, 40)


def test_training_the_top_model_trains_the_full_model():
    model = _tiny()
    top = build_top_model(model, 1)
    w = model.model.layers[3].mlp.down_proj.weight
    before = w.detach().clone()
    h = cache_block_inputs(model, [[3, 4, 5]], 3, 0, 1, "cpu")[0]
    top(inputs_embeds=h[None]).logits.sum().backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    assert not torch.equal(model.model.layers[3].mlp.down_proj.weight, before)


@pytest.mark.parametrize("n_top", [0, 5])
def test_n_top_out_of_range_is_refused(n_top):
    with pytest.raises(ValueError, match="n_top must be in"):
        build_top_model(_tiny(), n_top)


def _tiny_r(vocab=40, layers=4):
    torch.manual_seed(0)
    return tiny_llama(vocab, 256, d_model=32, n_layers=layers, n_heads=4).eval()


def test_collated_cached_batch_gives_the_full_model_logits():
    model = _tiny_r()
    seqs = [[3, 4, 5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15]]
    hidden = T.cache_block_inputs(model, seqs, first_tuned=2, pad_id=0, batch_size=2, device="cpu")
    assert [h.shape for h in hidden] == [(6, 32), (3, 32), (4, 32)]
    top = T.build_top_model(model, 2)
    assert top.model.layers[0] is model.model.layers[2]  # shared, not copied
    batch = T.collate(hidden, seqs, [1, 1, 1], "cpu")
    pos = torch.arange(batch.ids.shape[1]).expand_as(batch.ids)
    with torch.no_grad():
        top_logits = top(inputs_embeds=batch.hidden, attention_mask=batch.mask, position_ids=pos).logits
        for r, s in enumerate(seqs):
            full = model(input_ids=torch.tensor([s])).logits[0]
            torch.testing.assert_close(top_logits[r, :len(s)], full, atol=1e-5, rtol=1e-5)



def test_response_loss_is_cross_entropy_of_the_response_tokens_only():
    model = _tiny_r()
    seqs = [[3, 4, 5, 6, 7], [8, 9, 10]]
    starts = [3, 1]
    hidden = T.cache_block_inputs(model, seqs, 2, 0, 4, "cpu")
    top = T.build_top_model(model, 2)
    with torch.no_grad():
        loss = T.response_loss(top, T.collate(hidden, seqs, starts, "cpu"))
        terms = []
        for s, st in zip(seqs, starts):
            lp = F.log_softmax(model(input_ids=torch.tensor([s])).logits[0], -1)
            terms += [-lp[t - 1, s[t]] for t in range(st, len(s))]
    assert float(loss) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="response start"):
        T.collate(hidden, seqs, [5, 1], "cpu")



def test_train_top_lora_changes_only_the_top_blocks():
    model = _tiny_r()
    seqs = [[3, 4, 5, 6, 7, 8], [9, 10, 11, 12], [12, 13, 14, 15]]
    hidden = T.cache_block_inputs(model, seqs, 2, 0, 4, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = T.train_top_lora(model, hidden, seqs, [2, 2, 2], T.LoraSpec(n_top=2, r=4, alpha=8, lr=1e-2, epochs=4,
                            batch_size=2), seed=0, device="cpu", desc="t", progress=False)
    assert len(hist.records) == 6 and hist.records[-1]["loss"] < hist.records[0]["loss"]
    after = model.state_dict()
    assert set(after) == set(before)  # adapters merged away
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.2.", "model.layers.3.")) for k in changed)
    assert not any("norm" in k for k in changed)
