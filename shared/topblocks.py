"""Train the top blocks of a pretrained causal LM on cached inputs (a CPU budget device).

When only the last ``n_top`` transformer blocks of a model are tuned (LoRA or otherwise) and the blocks
below them are frozen, the hidden states entering the first tuned block never change for a given token
sequence. :func:`cache_block_inputs` computes them once; :func:`build_top_model` makes a ``transformers``
model of the same class out of the last ``n_top`` blocks, final norm and head (the very same modules, so
whatever is trained in it is trained in the full model too), to be fed those states as ``inputs_embeds``.
With the same positions and mask, its logits equal the full model's, at about ``n_top / L`` of the cost
per training step.

Training: :func:`collate` right-pads cached examples into a :class:`CachedBatch`, :func:`response_loss` is the
next-token cross-entropy of the response tokens (token mean, or per-example weights), and
:func:`train_top_lora` runs LoRA on the top blocks over a fixed set of examples and merges it into the model.

Used by r_tuning's LM arm, eren's fine-tuning editor and context_knob's SmolLM2 LoRA arm. Works for decoder models whose blocks live
in ``model.model.layers`` (Llama-family: SmolLM2, ``shared.lm.tiny_llama``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.lm import add_lora, length_batches
from shared.training import TrainConfig, TrainHistory, train


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass at the first tuned block."""


@torch.no_grad()
def cache_block_inputs(model, sequences: Sequence[Sequence[int]], first_tuned: int, pad_id: int,
                       batch_size: int, device: str) -> list[torch.Tensor]:
    """The hidden states entering block ``first_tuned`` for each token sequence, as a (T_i, d) fp32 CPU
    tensor per sequence. Sequences are right-padded (positions 0..T_i-1 as when alone; causal attention
    never looks at the padding after them); the forward pass stops at that block."""
    model.eval()
    store: dict[str, torch.Tensor] = {}
    layer = model.model.layers[first_tuned]

    def hook(_module, args, kwargs):
        store["h"] = (args[0] if args else kwargs["hidden_states"]).detach()
        raise _Captured

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    out: list[torch.Tensor | None] = [None] * len(sequences)
    try:
        for batch in length_batches([len(s) for s in sequences], batch_size):
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, :len(sequences[i])] = torch.tensor(list(sequences[i]))
                mask[r, :len(sequences[i])] = 1
            try:
                model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            except _Captured:
                pass
            h = store.pop("h").float().cpu()
            for r, i in enumerate(batch):
                out[i] = h[r, :len(sequences[i])].clone()
    finally:
        handle.remove()
    return out  # type: ignore[return-value]


def build_top_model(model, n_top: int):
    """A causal LM of the same class made of ``model``'s last ``n_top`` blocks, final norm and head (the
    very same modules, not copies), to be called with ``inputs_embeds`` = the hidden states entering
    block ``L - n_top``; with the same positions and mask its logits equal the full model's."""
    L = model.config.num_hidden_layers
    if not 1 <= n_top <= L:
        raise ValueError(f"n_top must be in [1, {L}]; got {n_top}")
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = n_top
    cfg.use_cache = False  # the blocks keep their layer_idx (L - n_top ...), which a KV cache would index
    with torch.device("meta"):
        top = type(model)(cfg)
    top.model.layers = nn.ModuleList(list(model.model.layers[L - n_top:]))
    top.model.norm = model.model.norm
    top.model.rotary_emb = model.model.rotary_emb
    top.model.embed_tokens = model.model.embed_tokens
    top.lm_head = model.lm_head
    meta = [n for n, p in list(top.named_parameters()) + list(top.named_buffers()) if p.is_meta]
    if meta:
        raise RuntimeError(f"build_top_model left uninitialised tensors: {meta[:3]}")
    return top.eval()


# --- training the top blocks on cached examples ------------------------------------------------------

@dataclass
class CachedBatch:
    hidden: torch.Tensor  # (B, T, d) inputs of the first tuned block, zero-padded on the right
    ids: torch.Tensor  # (B, T) token ids
    mask: torch.Tensor  # (B, T) 1 for real tokens
    targets: torch.Tensor  # (B, T) 1 for the tokens the loss predicts (the response)
    weights: torch.Tensor | None = None  # (B, T) loss weight of predicting each token (None: token mean)


def collate(hidden: Sequence[torch.Tensor], ids: Sequence[Sequence[int]], response_start: Sequence[int],
            device: str, weights: Sequence[Sequence[float]] | None = None) -> CachedBatch:
    """Right-pad a batch; ``response_start[i]`` is the index of example i's first response token. With
    ``weights`` (per example, per token; e.g. r_tuning's ``example_weights``) the loss predicts the tokens of
    positive weight, weighted; without, every response token with equal weight."""
    width = max(h.shape[0] for h in hidden)
    d = hidden[0].shape[1]
    H = torch.zeros(len(hidden), width, d)
    I = torch.zeros(len(hidden), width, dtype=torch.long)
    M = torch.zeros(len(hidden), width, dtype=torch.long)
    R = torch.zeros(len(hidden), width, dtype=torch.long)
    for r, (h, s, start) in enumerate(zip(hidden, ids, response_start)):
        if not 1 <= start < len(s):
            raise ValueError(f"response start {start} outside a sequence of {len(s)} tokens")
        H[r, :h.shape[0]] = h
        I[r, :len(s)] = torch.tensor(list(s))
        M[r, :len(s)] = 1
        R[r, start:len(s)] = 1
    if weights is None:
        return CachedBatch(H.to(device), I.to(device), M.to(device), R.to(device))
    W = torch.zeros(len(hidden), width)
    for r, w in enumerate(weights):
        if len(w) != len(ids[r]):
            raise ValueError(f"example {r}: {len(w)} weights for {len(ids[r])} tokens")
        W[r, :len(w)] = torch.tensor(list(w), dtype=torch.float32)
    return CachedBatch(H.to(device), I.to(device), M.to(device), (W > 0).long().to(device), W.to(device))


def response_loss(top, batch: CachedBatch) -> torch.Tensor:
    """Next-token cross-entropy over the response tokens: with ``batch.weights``, per example the weighted
    sum (e.g. an answer mean plus a label token), averaged over the batch; without, the mean over every
    response token of the batch. The vocabulary projection is applied only where a response token is
    predicted (it costs as much as 8 of SmolLM2's blocks per position)."""
    pos = torch.arange(batch.ids.shape[1], device=batch.ids.device).expand_as(batch.ids)
    hs = top.model(inputs_embeds=batch.hidden, attention_mask=batch.mask, position_ids=pos,
                   use_cache=False).last_hidden_state  # (B, T, d)
    sel = batch.targets[:, 1:].bool()  # token t+1 is a target -> use the state at t
    logits = top.lm_head(hs[:, :-1][sel])  # (N, V)
    if batch.weights is None:
        return F.cross_entropy(logits.float(), batch.ids[:, 1:][sel])
    ce = F.cross_entropy(logits.float(), batch.ids[:, 1:][sel], reduction="none")
    return (ce * batch.weights[:, 1:][sel]).sum() / batch.ids.shape[0]  # per-example sum, batch mean


@dataclass
class LoraSpec:
    n_top: int = 8
    r: int = 16
    alpha: float = 32.0
    lr: float = 2e-4
    epochs: int = 2
    batch_size: int = 16
    warmup_steps: int = 2
    schedule: str = "cosine"  # learning-rate schedule after the warmup: "cosine" | "constant"


def train_top_lora(model, hidden: Sequence[torch.Tensor], ids: Sequence[Sequence[int]],
                   response_start: Sequence[int], spec: LoraSpec, seed: int, device: str, desc: str,
                   progress: bool, weights: Sequence[Sequence[float]] | None = None) -> TrainHistory:
    """LoRA on the top ``spec.n_top`` blocks of ``model`` (modified in place: the adapters are merged into
    its weights at the end), ``spec.epochs`` passes over the examples in an order drawn from ``seed``."""
    torch.manual_seed(seed)  # LoRA's A matrices
    top = build_top_model(model, spec.n_top)
    lora = add_lora(top, r=spec.r, alpha=spec.alpha, dropout=0.0)
    n = len(ids)
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(spec.epochs)]).tolist()
    steps = -(-len(order) // spec.batch_size)

    def batch_fn(step: int) -> CachedBatch:
        idx = order[step * spec.batch_size:(step + 1) * spec.batch_size]
        return collate([hidden[i] for i in idx], [ids[i] for i in idx], [response_start[i] for i in idx], device,
                       None if weights is None else [weights[i] for i in idx])

    cfg = TrainConfig(steps=steps, lr=spec.lr, warmup_steps=min(spec.warmup_steps, steps - 1), weight_decay=0.0,
                      betas=(0.9, 0.999), schedule=spec.schedule, log_every=1, desc=desc, progress=progress)
    history = train(lora, cfg, batch_fn, lambda _peft, b: response_loss(top, b), device)
    lora.merge_and_unload()  # the shared blocks now hold W + (alpha/r) B A
    model.eval()
    return history
