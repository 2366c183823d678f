import math

import pytest
import torch
import torch.nn.functional as F

from shared.seeding import seed_everything
from shared.training import TrainConfig, lr_at, make_optimizer, train
from shared.transformer import Transformer, TransformerConfig


def _model(**kw):
    seed_everything(0)
    cfg = TransformerConfig(vocab_size=11, max_len=12, d_model=32, n_layers=2, n_heads=4, **kw)
    return Transformer(cfg).eval()


def test_causal_outputs_ignore_future_tokens():
    model = _model(causal=True)
    x = torch.randint(0, 11, (3, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 11
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_bidirectional_outputs_see_the_future():
    model = _model(causal=False)
    x = torch.randint(0, 11, (3, 10))
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % 11
    with torch.no_grad():
        assert not torch.allclose(model(x).logits[:, 0], model(y).logits[:, 0])


@pytest.mark.parametrize("causal", [True, False])
def test_padding_mask_hides_padded_keys(causal):
    model = _model(causal=causal)
    x = torch.randint(0, 11, (2, 8))
    y = x.clone()
    y[:, 5:] = 0  # different "padding" content
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[:, 5:] = False
    with torch.no_grad():
        a = model(x, key_padding_mask=keep).logits
        b = model(y, key_padding_mask=keep).logits
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert torch.isfinite(a).all()


def test_onehot_positions_and_hidden_states():
    model = _model(positions="onehot", n_out=5)
    x = torch.randint(0, 11, (2, 7))
    out = model(x, return_hidden=True)
    assert out.logits.shape == (2, 7, 5)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 7, 32) for h in out.hidden_states)
    # the last 12 embedding dimensions are the one-hot position
    emb = out.hidden_states[0]
    assert torch.equal(emb[0, :, 20:], torch.eye(12)[:7])


def test_attention_only_and_inputs_embeds_and_limits():
    model = _model(mlp=False)
    assert not any("mlp" in name for name, _ in model.named_parameters())
    out = model(inputs_embeds=torch.randn(2, 5, 32))
    assert out.logits.shape == (2, 5, 11)
    with pytest.raises(ValueError, match="exceeds max_len"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(vocab_size=3, max_len=4, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="one-hot positions"):
        TransformerConfig(vocab_size=3, max_len=64, d_model=32, positions="onehot")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mlp", [True, False])
@pytest.mark.parametrize("read_at", [slice(0, None, 2), slice(3, 9), torch.tensor([9, 0, 4, 4])])
def test_read_at_gives_the_full_forwards_logits_there(causal, mlp, read_at):
    model = _model(causal=causal, mlp=mlp).double()  # float64: a real difference is not hidden by rounding
    x = torch.randint(0, 11, (3, 10))
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[1, 7:] = False  # one padded row
    for mask in (None, keep):
        full = model(x, key_padding_mask=mask).logits
        part = model(x, key_padding_mask=mask, read_at=read_at).logits
        assert part.shape == full[:, read_at].shape
        assert torch.allclose(part, full[:, read_at], rtol=0, atol=1e-12)


def test_read_at_gradients_match_the_full_forwards():
    x = torch.randint(0, 11, (4, 10))
    grads = []
    for read_at in (None, slice(1, None, 2)):
        model = _model(causal=True).double().train()
        logits = model(x, read_at=read_at).logits
        (logits if read_at is not None else logits[:, 1::2]).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    full, part = grads
    # the head, the last block and everything below it get the same gradients (the MLP of the last block
    # at the unread positions gets none in either case)
    assert full.keys() == part.keys()
    for name in full:
        assert torch.allclose(full[name], part[name], rtol=0, atol=1e-12), name


def test_read_at_skips_the_last_blocks_work_at_unread_positions():
    model = _model(causal=True)
    seen = []
    hook = model.blocks[-1].mlp.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    model(torch.randint(0, 11, (2, 10)), read_at=slice(0, None, 2))
    hook.remove()
    assert seen == [torch.Size([2, 5, 32])]


def test_read_at_rejects_bad_positions():
    model = _model()
    x = torch.randint(0, 11, (2, 6))
    with pytest.raises(ValueError, match="selects nothing"):
        model(x, read_at=slice(6, None))
    with pytest.raises(ValueError, match=r"indices in \[0, 6\)"):
        model(x, read_at=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="1-D tensor of int64"):
        model(x, read_at=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="return_hidden"):
        model(x, read_at=slice(0, 2), return_hidden=True)


def test_lr_schedule_values():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(50, TrainConfig(steps=100, lr=0.3, schedule="constant")) == 0.3


def test_optimizer_decays_matrices_only():
    model = _model()
    opt = make_optimizer(model, TrainConfig(steps=1, weight_decay=0.1), "cpu")
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name


def test_training_learns_copy_task_and_records_curves():
    """A 1-layer model must learn to copy its input token at each position."""
    seed_everything(0)
    model = Transformer(TransformerConfig(vocab_size=8, max_len=6, d_model=32, n_layers=1, n_heads=2))
    gen = torch.Generator().manual_seed(0)

    def batch(step):
        return torch.randint(0, 8, (32, 6), generator=gen)

    def loss(m, x):
        logits = m(x).logits
        return F.cross_entropy(logits.reshape(-1, 8), x.reshape(-1))

    evals = []

    def acc(m):
        x = batch(0)
        evals.append(1)
        return {"acc": (m(x).logits.argmax(-1) == x).float().mean()}

    hist = train(model, TrainConfig(steps=150, lr=3e-3, log_every=50, eval_every=75, progress=False),
                 batch, loss, "cpu", eval_fn=acc)
    frame = hist.to_frame()
    assert list(frame["step"]) == [50, 75, 100, 150]
    assert len(evals) == 2 and hist.last("acc") > 0.95
    assert frame["loss"].iloc[-1] < frame["loss"].iloc[0]


def test_training_is_deterministic_on_cpu():
    def run():
        seed_everything(3)
        model = Transformer(TransformerConfig(vocab_size=5, max_len=4, d_model=16, n_layers=1, n_heads=2))
        gen = torch.Generator().manual_seed(3)
        hist = train(model, TrainConfig(steps=20, progress=False, log_every=5),
                     lambda s: torch.randint(0, 5, (8, 4), generator=gen),
                     lambda m, x: F.cross_entropy(m(x).logits.reshape(-1, 5), x.reshape(-1)), "cpu")
        return [r["loss"] for r in hist.records]

    assert run() == run()


def test_nonfinite_loss_stops_training():
    model = _model()
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train(model, TrainConfig(steps=3, progress=False), lambda s: None,
              lambda m, b: m.head.weight.sum() * float("nan"), "cpu")


def test_benchmark_reference_model_computes_the_same_function():
    """benchmarks/transformer_throughput.py compares like with like: with the shared model's weights copied
    in, its minimal nanoGPT-style model gives the same logits."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "transformer_throughput.py"
    spec = importlib.util.spec_from_file_location("transformer_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seed_everything(0)
    cfg = TransformerConfig(vocab_size=13, max_len=9, d_model=16, n_layers=2, n_heads=2)
    shared_model, ref = Transformer(cfg).eval(), bench.MinimalGPT(13, 9, 16, 2, 2).eval()
    with torch.no_grad():
        ref.wte.weight.copy_(shared_model.tok_emb.weight)
        ref.wpe.weight.copy_(shared_model.pos_emb.weight)
        for rb, sb in zip(ref.blocks, shared_model.blocks):
            for dst, src in ((rb["ln1"], sb.ln1), (rb["qkv"], sb.attn.qkv), (rb["proj"], sb.attn.proj),
                             (rb["ln2"], sb.ln2), (rb["fc"], sb.mlp[0]), (rb["out"], sb.mlp[2])):
                dst.load_state_dict(src.state_dict())
        ref.ln_f.load_state_dict(shared_model.ln_f.state_dict())
        ref.head.weight.copy_(shared_model.head.weight)
    x = torch.randint(0, 13, (3, 9))
    with torch.no_grad():
        assert torch.allclose(shared_model(x).logits, ref(x), atol=1e-5)


def test_stop_fn_ends_training_early():
    model = _model()
    seen = []
    hist = train(model, TrainConfig(steps=50, log_every=5, progress=False), lambda s: torch.randint(0, 11, (4, 6)),
                 lambda m, x: F.cross_entropy(m(x).logits.reshape(-1, 11), x.reshape(-1)), "cpu",
                 stop_fn=lambda rec: seen.append(rec["step"]) or rec["step"] >= 15)
    assert [r["step"] for r in hist.records] == [5, 10, 15] and seen == [5, 10, 15]
