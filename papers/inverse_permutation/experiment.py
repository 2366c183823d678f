"""Models, training and evaluation for the inverse-permutation replication (the claims: ``claims.yaml``).

Two architectures:
- ``standard``: the shared pre-LN transformer (attention + MLP, learned positions) - stronger than the
  paper's model; the information-flow argument does not depend on the architecture.
- ``disentangled``: the paper's attention-only model (Sec. 2): h0 = [onehot(X), I_T],
  attn(h; A) = softmax(MASK(h A h^T)) h, h_{l+1} = [h_l, attn(h_l; A_{l+1})] (the residual stream is the
  concatenation of all blocks, so its width doubles each layer), plus a linear read-out of the symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, TrainHistory, train
from shared.transformer import Transformer, TransformerConfig

from .task import TaskSpec, accessible, sample_batch

# --- models ----------------------------------------------------------------------------------------------

class DisentangledAttentionOnly(nn.Module):
    """The paper's disentangled, attention-only transformer with one-hot tokens and positions.

    h0 = [onehot(x), I_T] (width d0 = vocab + T); for each layer l, h <- [h, softmax(MASK(h A_l h^T)) h];
    logits = h W at every position. Shapes: h (B, T, d0 * 2^l).
    """

    def __init__(self, vocab_size: int, max_len: int, n_layers: int, n_out: int, causal: bool):
        super().__init__()
        self.vocab_size, self.max_len, self.causal = vocab_size, max_len, causal
        d = vocab_size + max_len
        self.A = nn.ParameterList()
        for _ in range(n_layers):
            self.A.append(nn.Parameter(torch.randn(d, d) * 0.02))
            d *= 2
        self.readout = nn.Linear(d, n_out)
        self.register_buffer("eye", torch.eye(max_len), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        h = torch.cat([F.one_hot(idx, self.vocab_size).float(), self.eye[:T].expand(B, T, T)], dim=-1)
        mask = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril() if self.causal else None
        for A in self.A:
            scores = h @ A @ h.transpose(1, 2)  # (B, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            h = torch.cat([h, scores.softmax(dim=-1) @ h], dim=-1)
        return self.readout(h)


@dataclass(frozen=True)
class ModelSpec:
    architecture: str  # "standard" | "disentangled"
    n_layers: int
    d_model: int = 64
    n_heads: int = 4
    positions: str = "learned"  # standard architecture only


def build_model(model: ModelSpec, task: TaskSpec, causal: bool) -> nn.Module:
    if model.architecture == "standard":
        cfg = TransformerConfig(vocab_size=task.vocab_size, max_len=task.seq_len, d_model=model.d_model,
                                n_layers=model.n_layers, n_heads=model.n_heads, causal=causal,
                                positions=model.positions, n_out=task.n_symbols)
        return Transformer(cfg)
    if model.architecture == "disentangled":
        return DisentangledAttentionOnly(task.vocab_size, task.seq_len, model.n_layers, task.n_symbols, causal)
    raise ValueError(f"unknown architecture {model.architecture!r}")


def readout_logits(model: nn.Module, tokens: torch.Tensor, task: TaskSpec) -> torch.Tensor:
    """(B, n, V) logits at the last n positions."""
    out = model(tokens)
    logits = out.logits if hasattr(out, "logits") else out
    return logits[:, task.n + task.k:, :]


def loss_fn(model: nn.Module, batch, task: TaskSpec) -> torch.Tensor:
    logits = readout_logits(model, batch.tokens, task)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1))


# --- one arm: train, then evaluate on fresh data ---------------------------------------------------------

@dataclass
class ArmResult:
    correct: np.ndarray  # (n_eval, n) bool, per-row correctness on the evaluation set
    visible: np.ndarray  # (n_eval, n) bool, source visible under the causal mask (s(i) <= i + k)
    history: TrainHistory
    n_parameters: int


def run_arm(task: TaskSpec, model_spec: ModelSpec, causal: bool, seed: int, steps: int, batch_size: int,
            lr: float, n_eval: int, device: str, progress: bool = True) -> ArmResult:
    """Train one model on fresh batches for ``steps`` steps and evaluate it on ``n_eval`` held-out examples.

    Training batches come from a generator seeded by ``seed``; the evaluation set from ``10_000 + seed``
    so that it never overlaps the training stream's state.
    """
    seed_everything(seed)
    model = build_model(model_spec, task, causal).to(device)
    gen = torch_generator(seed, "cpu")
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10), weight_decay=0.0,
                      desc=f"{'causal' if causal else 'bidir'} k={task.k} {model_spec.architecture} s{seed}",
                      progress=progress, log_every=max(1, steps // 50))
    history = train(model, cfg, lambda step: sample_batch(task, batch_size, gen, device),
                    lambda m, b: loss_fn(m, b, task), device)
    correct, visible = evaluate(model, task, n_eval, 10_000 + seed, device)
    n_params = sum(p.numel() for p in model.parameters())
    return ArmResult(correct, visible, history, n_params)


@torch.no_grad()
def evaluate(model: nn.Module, task: TaskSpec, n_eval: int, seed: int, device: str,
             chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    gen = torch_generator(seed, "cpu")
    correct, visible = [], []
    for start in range(0, n_eval, chunk):
        b = sample_batch(task, min(chunk, n_eval - start), gen, device)
        pred = readout_logits(model, b.tokens, task).argmax(-1)
        correct.append((pred == b.targets).cpu().numpy())
        visible.append(accessible(b.source, task.k).cpu().numpy())
    return np.concatenate(correct), np.concatenate(visible)


# --- the whole grid --------------------------------------------------------------------------------------

def arm_list(scratch_tokens: list[int], architectures: list[str]) -> list[tuple[str, str, int]]:
    """(architecture, attention, k): one bidirectional k=0 arm, then a causal arm per k, per architecture."""
    arms = []
    for arch in architectures:
        arms.append((arch, "bidirectional", 0))
        arms += [(arch, "causal", int(k)) for k in scratch_tokens]
    return arms


def _grid_job(arch: str, attention: str, k: int, seed: int, n: int, n_symbols: int, depth: int, steps: int,
              batch_size: int, lr: float, n_eval: int, device: str, progress: bool):
    """One (arm, seed) of :func:`run_grid`: its results row and training-curve rows (module level, so
    ``shared.parallel.run_jobs`` can run it in a worker process)."""
    import time

    task = TaskSpec(n=n, n_symbols=n_symbols, k=k)
    start = time.perf_counter()
    res = run_arm(task, ModelSpec(arch, depth), attention == "causal", seed, steps, batch_size, lr, n_eval,
                  device, progress)
    vis = res.visible
    row = {
        "architecture": arch, "attention": attention, "k": k, "seed": seed,
        "correct": int(res.correct.sum()), "rows": int(res.correct.size),
        "visible_correct": int(res.correct[vis].sum()), "visible_rows": int(vis.sum()),
        "invisible_correct": int(res.correct[~vis].sum()), "invisible_rows": int((~vis).sum()),
        "parameters": res.n_parameters,
    }
    curve = [{"architecture": arch, "attention": attention, "k": k, "seed": seed, "step": rec["step"],
              "loss": rec["loss"]} for rec in res.history.records]
    return row, curve, time.perf_counter() - start


def run_grid(n: int, n_symbols: int, scratch_tokens: list[int], architectures: list[str], depth: int,
             seeds: list[int], steps: int, batch_size: int, lr: dict[str, float], n_eval: int, device: str,
             progress: bool = True, workers: int = 1):
    """Train and evaluate every (arm, seed); return (results table, training-curve table).

    With ``workers > 1`` (CPU only) the models train in parallel single-threaded processes; every model
    seeds itself, so the tables do not depend on ``workers`` (tested)."""
    import pandas as pd

    from shared.parallel import run_jobs

    arms = arm_list(scratch_tokens, architectures)
    workers = workers if device == "cpu" else 1
    jobs = [(arch, attention, k, seed, n, n_symbols, depth, steps, batch_size, lr[arch], n_eval, device,
             progress and workers <= 1)
            for arch, attention, k in arms for seed in seeds]

    def report(i, result, done):
        if progress:
            row, _, seconds = result
            print(f"[{done}/{len(jobs)}] {row['architecture']} {row['attention']} k={row['k']} seed={row['seed']}: "
                  f"accuracy {row['correct'] / row['rows']:.3f} ({seconds:.1f} s)", flush=True)

    # longer sequences (more scratch tokens) cost more per step: start them first
    results = run_jobs(_grid_job, jobs, workers, cost=[n + job[2] for job in jobs], on_done=report)
    rows = [r[0] for r in results]
    curves = [c for r in results for c in r[1]]
    return pd.DataFrame(rows), pd.DataFrame(curves)
