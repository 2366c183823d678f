"""shared.encoder: attention wrappers against the original BERT and explicit formulas, PEFT parameter
counts against hand arithmetic, contrastive losses against hand-computed values."""

import math

import pytest
import torch
from transformers import BertConfig, BertModel

from shared.encoder import (PrefixSelfAttention, SelfAttentionWrapper, SentenceClassifier, configure_peft,
                            count_trainable, info_nce_loss, mean_pool, replace_self_attention,
                            supervised_contrastive_loss)

# a tiny BERT: 2 layers, d=16, 2 heads of 8, vocabulary 50
CFG = dict(vocab_size=50, hidden_size=16, num_attention_heads=2, num_hidden_layers=2, intermediate_size=32,
           max_position_embeddings=32, attn_implementation="eager")


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    return BertModel(BertConfig(**CFG)).eval()


def batch():
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 8, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return ids, mask


def test_mean_pool_hand_values():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))
    with pytest.raises(ValueError, match="disagree"):
        mean_pool(hidden, torch.tensor([[1, 1]]))


def test_base_wrapper_is_the_original_layer():
    bert = tiny_bert()
    ids, mask = batch()
    with torch.no_grad():
        before = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        replace_self_attention(bert, lambda _i, layer: SelfAttentionWrapper(layer))
        after = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    assert isinstance(bert.encoder.layer[1].attention.self, SelfAttentionWrapper)
    assert torch.allclose(before, after, atol=1e-6)


def test_prefix_attention_matches_explicit_softmax():
    bert = tiny_bert()
    layer = bert.encoder.layer[0].attention.self
    wrapped = PrefixSelfAttention(layer, prefix_len=3, init_std=0.5).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 4, 16)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., -1] = torch.finfo(torch.float32).min  # last token is padding
    with torch.no_grad():
        out, _ = wrapped(x, mask)
        for h in range(2):
            sl = slice(8 * h, 8 * h + 8)
            q, k, v = layer.query(x)[0, :, sl], layer.key(x)[0, :, sl], layer.value(x)[0, :, sl]
            keys = torch.cat([wrapped.prefix_key[h], k[:3]])  # the padded key is dropped
            values = torch.cat([wrapped.prefix_value[h], v[:3]])
            expected = torch.softmax(q @ keys.T / math.sqrt(8), dim=-1) @ values
            assert torch.allclose(out[0, :, sl], expected, atol=1e-5)


def test_prefix_output_does_not_depend_on_padding():
    bert = tiny_bert()
    configure_peft(bert, "prefix", prefix_len=4)
    ids, mask = batch()
    with torch.no_grad():
        padded = bert(input_ids=ids, attention_mask=mask).last_hidden_state[1, :3]
        alone = bert(input_ids=ids[1:, :3], attention_mask=mask[1:, :3]).last_hidden_state[0]
    assert torch.allclose(padded, alone, atol=1e-5)


@pytest.mark.parametrize("method", ["frozen", "full", "lora", "prefix", "bitfit"])
def test_configure_peft_counts(method):
    bert = tiny_bert()
    total = sum(p.numel() for p in bert.parameters())
    n_bias = sum(p.numel() for n, p in bert.named_parameters() if n.endswith(".bias"))
    expected = {
        "frozen": 0,
        "full": total,
        "lora": 2 * 2 * (16 * 4 + 4 * 16),  # layers x (query, value) x (A: r x in + B: out x r), r=4
        "prefix": 2 * 2 * (2 * 3 * 8),  # layers x (key, value) x heads x prefix_len x head_dim
        "bitfit": n_bias,
    }[method]
    assert configure_peft(bert, method, r=4, alpha=8, prefix_len=3) == expected == count_trainable(bert)


def test_lora_starts_at_the_pretrained_function_and_head_stays_trainable():
    bert = tiny_bert()
    ids, mask = batch()
    clf = SentenceClassifier(bert, n_classes=3)
    with torch.no_grad():
        before = clf.features(ids, mask)
    configure_peft(clf, "lora", r=2)
    with torch.no_grad():
        after = clf.features(ids, mask)
    assert torch.allclose(before, after, atol=1e-6)
    assert all(p.requires_grad for p in clf.head.parameters())
    assert clf(ids, mask).shape == (2, 3)


def test_configure_peft_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown PEFT method"):
        configure_peft(tiny_bert(), "adapters")


def test_info_nce_hand_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # query 0: sims (1, 1) -> -log(1/2); query 1: sims (0, 0) -> -log(1/2)
    assert info_nce_loss(q, p, temperature=1.0).item() == pytest.approx(math.log(2))
    # a hard negative orthogonal to query 0 and equal to query 1
    hn = torch.tensor([[0.0, 1.0]])
    l0 = -math.log(math.e / (math.e + math.e + 1))
    l1 = -math.log(1 / (1 + 1 + math.e))
    assert info_nce_loss(q, p, temperature=1.0, hard_negatives=hn).item() == pytest.approx((l0 + l1) / 2)


def test_supervised_contrastive_hand_value():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # anchors 0 and 1 each have one positive (sim 1) and one negative (sim 0); anchor 2 has no positive
    expected = -math.log(math.e / (math.e + 1))
    assert supervised_contrastive_loss(z, labels, temperature=1.0).item() == pytest.approx(expected)
    # scaling features changes nothing (they are normalised); no positives at all gives 0
    assert supervised_contrastive_loss(3 * z, labels, temperature=1.0).item() == pytest.approx(expected)
    assert supervised_contrastive_loss(z, torch.tensor([0, 1, 2])).item() == 0.0


def test_minilm_encoder_reproduces_the_sentence_embeddings():
    """load_encoder (eager attention, train-ready) + SentenceEncoder gives shared.lm.embed's vectors, and
    the base attention wrapper on the real model changes nothing."""
    from shared.encoder import SentenceEncoder, load_encoder, tokenize
    from shared.lm import embed, load_minilm

    texts = ["the film is a delight", "a dull, overlong mess of a movie that never ends"]
    reference = embed(*load_minilm(), texts)
    bert, tok = load_encoder()
    enc = SentenceEncoder(bert.eval(), normalize=True)
    with torch.no_grad():
        got = enc(**tokenize(tok, texts))
        replace_self_attention(bert, lambda _i, layer: SelfAttentionWrapper(layer))
        wrapped = enc(**tokenize(tok, texts))
    assert torch.allclose(got, reference, atol=1e-5)
    assert torch.allclose(wrapped, reference, atol=1e-5)
