"""Training throughput of the shared transformer + training loop against a minimal nanoGPT-style loop.

Both train the same architecture (pre-LN GPT: token + learned position embeddings, fused QKV, SDPA causal
attention, GELU MLP, final LayerNorm, untied head) on the same pre-generated token batches, with AdamW (fused on
CUDA), bf16 autocast on CUDA and gradient clipping at 1.0. The minimal loop is written here from scratch in the
nanoGPT style (no schedule, no logging, no progress bar). Runs alternate A, B, A, B ... and the report gives
each side's median tokens/s and the median of the per-pair ratios.

    python benchmarks/transformer_throughput.py                 # CPU-sized defaults
    python benchmarks/transformer_throughput.py --device cuda --batch 64 --seq 256 --d-model 384 --layers 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.device import autocast_dtype, pick_device, use_fused_adam
from shared.training import TrainConfig, train
from shared.transformer import Transformer, TransformerConfig


class MinimalGPT(nn.Module):
    """The reference: the same computation as shared.transformer.Transformer(causal, learned positions)."""

    def __init__(self, vocab: int, seq: int, d: int, layers: int, heads: int):
        super().__init__()
        self.heads = heads
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(ln1=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d), proj=nn.Linear(d, d),
                               ln2=nn.LayerNorm(d), fc=nn.Linear(d, 4 * d), out=nn.Linear(4 * d, d)))
            for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).split(x.shape[-1], dim=2)
            q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + b["proj"](y)
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x))))
        return self.head(self.ln_f(x))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_minimal(model: nn.Module, batches: list[torch.Tensor], lr: float, device: str) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=use_fused_adam(device) or None)
    amp = autocast_dtype(device)
    model.train()
    _sync(device)
    start = time.perf_counter()
    for x in batches:
        with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start


def run_shared(model: Transformer, batches: list[torch.Tensor], lr: float, device: str) -> float:
    def loss_fn(m, x):
        logits = m(x[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    cfg = TrainConfig(steps=len(batches), lr=lr, schedule="constant", grad_clip=1.0, progress=False,
                      log_every=max(1, len(batches) // 2))
    _sync(device)
    start = time.perf_counter()
    train(model, cfg, lambda step: batches[step], loss_fn, device)
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = pick_device(args.device)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=gen).to(device)
               for _ in range(args.steps)]
    cfg = TransformerConfig(vocab_size=args.vocab, max_len=args.seq, d_model=args.d_model, n_layers=args.layers,
                            n_heads=args.heads, causal=True)
    tokens = args.steps * args.batch * args.seq
    shared_tps, minimal_tps, ratios = [], [], []
    for rep in range(args.repeats + 1):  # the first pair is a warm-up
        torch.manual_seed(rep)
        a = tokens / run_shared(Transformer(cfg).to(device), batches, 1e-3, device)
        torch.manual_seed(rep)
        b = tokens / run_minimal(MinimalGPT(args.vocab, args.seq, args.d_model, args.layers, args.heads).to(device),
                                 batches, 1e-3, device)
        if rep:
            shared_tps.append(a)
            minimal_tps.append(b)
            ratios.append(a / b)
    report = {
        "device": device, "batch": args.batch, "seq": args.seq, "d_model": args.d_model, "layers": args.layers,
        "steps": args.steps, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "shared_tokens_per_s": round(statistics.median(shared_tps)),
        "minimal_tokens_per_s": round(statistics.median(minimal_tps)),
        "ratio_shared_over_minimal": round(statistics.median(ratios), 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
