"""LoRA on the top blocks of a pretrained LM, trained on a fixed set of prompts whose lower-block states are
cached (``shared.topblocks``), with the loss on the single answer token after each prompt.

The paper fine-tunes every layer (QLoRA); on a 2-core CPU this replication tunes only the last ``n_top``
blocks of SmolLM2 (a stated deviation): the blocks below never change, so the hidden states entering block
``L - n_top`` are computed once per training prompt (:func:`cache_prompts`) and every training step runs
only the top blocks (:func:`cached_answer_loss`). The loss is the cross-entropy of the answer token at the
last prompt position (CCS answers are single tokens; the answer start is pre-filled in the prompt), equal to
:func:`papers.context_knob.knob.answer_loss` of the full model.

General beyond this paper (a second paper with single-token answers could use it): a candidate for
``shared.topblocks`` next to r_tuning's response-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shared.lm import add_lora
from shared.topblocks import build_top_model, cache_block_inputs
from shared.training import TrainConfig, TrainHistory, train


@dataclass
class CachedPrompts:
    """Right-padded block inputs of N prompts: ``hidden`` (N, T, d) fp32, ``mask`` (N, T), ``last`` (N,)
    the index of each prompt's last token, ``target`` (N,) the answer token."""

    hidden: torch.Tensor
    mask: torch.Tensor
    last: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def batch(self, idx, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(idx, dtype=torch.long)
        width = int(self.last[idx].max()) + 1  # drop columns that are padding in every row of the batch
        return (self.hidden[idx, :width].to(device), self.mask[idx, :width].to(device), self.last[idx].to(device),
                self.target[idx].to(device))


def cache_prompts(model, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, n_top: int,
                  batch_size: int, device: str) -> CachedPrompts:
    """Hidden states entering block ``L - n_top`` for left-padded prompts ``ids``/``mask`` (N, T) (the
    PromptSet convention), stored right-padded with positions 0..T_i-1 (what the left-padded full model
    uses too: positions count real tokens only)."""
    L = model.config.num_hidden_layers
    seqs = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    hidden = cache_block_inputs(model, seqs, L - n_top, pad_id=0, batch_size=batch_size, device=device)
    width, d = max(len(s) for s in seqs), hidden[0].shape[1]
    H = torch.zeros(len(seqs), width, d)
    M = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, h in enumerate(hidden):
        H[i, :h.shape[0]] = h
        M[i, :h.shape[0]] = 1
    return CachedPrompts(H, M, torch.tensor([len(s) - 1 for s in seqs]), target.clone().long())


def cached_answer_loss(top, hidden: torch.Tensor, mask: torch.Tensor, last: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``target`` (B,) predicted at position ``last`` (B,) by the top-block model ``top``
    (:func:`shared.topblocks.build_top_model`) fed the cached block inputs ``hidden`` (B, T, d); the
    vocabulary projection is applied to the last positions only."""
    pos = torch.arange(hidden.shape[1], device=hidden.device).expand(hidden.shape[0], -1)
    hs = top.model(inputs_embeds=hidden.to(top.dtype), attention_mask=mask, position_ids=pos,
                   use_cache=False).last_hidden_state  # (B, T, d)
    logits = top.lm_head(hs[torch.arange(hs.shape[0], device=hs.device), last])  # (B, V)
    return F.cross_entropy(logits.float(), target)


def train_top_lora_answers(model, cached: CachedPrompts, n_top: int, r: int, alpha: float, lr: float, steps: int,
                           batch_size: int, seed: int, device: str, target_modules, weight_decay: float = 0.01,
                           progress: bool = False, desc: str = "top-block LoRA") -> TrainHistory:
    """LoRA (``target_modules`` of the last ``n_top`` blocks) trained for ``steps`` AdamW steps of
    ``batch_size`` cached prompts, in epochs of a permutation drawn from ``seed``; the adapters are then
    merged, so ``model`` (modified in place) is the fine-tuned model."""
    torch.manual_seed(seed)  # LoRA's A matrices
    top = build_top_model(model, n_top)
    lora = add_lora(top, r=r, alpha=alpha, dropout=0.0, target_modules=target_modules)
    gen = torch.Generator().manual_seed(seed)
    n_epochs = -(-steps * batch_size // len(cached))
    order = torch.cat([torch.randperm(len(cached), generator=gen) for _ in range(n_epochs)])

    def batch_fn(step: int):
        return cached.batch(order[step * batch_size:(step + 1) * batch_size], device)

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, warmup_steps=min(5, steps // 10),
                      log_every=max(1, steps // 20), desc=desc, progress=progress)
    history = train(lora, cfg, batch_fn, lambda _m, b: cached_answer_loss(top, *b), device)
    lora.merge_and_unload()  # the shared blocks now hold W + (alpha / r) B A
    model.eval()
    return history
