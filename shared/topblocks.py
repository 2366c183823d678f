"""Train the top blocks of a pretrained causal LM on cached inputs (a CPU budget device).

When only the last ``n_top`` transformer blocks of a model are tuned (LoRA or otherwise) and the blocks
below them are frozen, the hidden states entering the first tuned block never change for a given token
sequence. :func:`cache_block_inputs` computes them once; :func:`build_top_model` makes a ``transformers``
model of the same class out of the last ``n_top`` blocks, final norm and head (the very same modules, so
whatever is trained in it is trained in the full model too), to be fed those states as ``inputs_embeds``.
With the same positions and mask, its logits equal the full model's, at about ``n_top / L`` of the cost
per training step.

Used by r_tuning's LM arm and context_knob's SmolLM2 LoRA arm. Works for decoder models whose blocks live
in ``model.model.layers`` (Llama-family: SmolLM2, ``shared.lm.tiny_llama``).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn

from shared.lm import _length_batches


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
        for batch in _length_batches([len(s) for s in sequences], batch_size):
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
