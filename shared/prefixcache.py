"""Greedy decoding and teacher-forced scoring of prompts that share a long prefix, with the prefix run once.

Chat prompts of one experiment often share most of their tokens: the chat template's system message and
an instruction come before the part that varies (a question, a retrieved note). The prefix's KV cache is
computed once, copied to every row of a batch, and only the varying suffixes go through the model. Each row
is laid out as ``[prefix][padding][suffix]``: the padding sits between the prefix and the suffix, masked out
as keys, and positions count real tokens only, so every row sees exactly the positions and keys it would see
alone (:func:`shared.lm.greedy_generate` gives the same tokens, up to floating-point near-ties; tested).

On SmolLM2 chat prompts of 45-75 tokens, 29-59 of which are shared, this removes most of the prefill work of
:func:`shared.lm.greedy_generate` and :func:`shared.lm.continuation_logprobs`. Functions fall back to those two
when the prompts share fewer than ``min_prefix`` tokens.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F

from shared.lm import (_accepts, _cache_kwarg, _cache_of, continuation_logprobs, greedy_generate,
                       length_batches)


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix shared by every sequence (0 for an empty list)."""
    if not sequences:
        return 0
    n = min(len(s) for s in sequences)
    first = sequences[0]
    for j in range(n):
        t = first[j]
        if any(s[j] != t for s in sequences):
            return j
    return n


def _prefix_len(sequences: Sequence[Sequence[int]]) -> int:
    """The shared prefix, leaving at least one token of every sequence to run (it yields the next-token
    logits)."""
    return min(common_prefix_length(sequences), min(len(s) for s in sequences) - 1)


class _Prefix:
    """The KV cache of ``ids`` (batch 1), copied out to batches of rows that continue it."""

    def __init__(self, model, ids: Sequence[int], device: str):
        self.model, self.length, self.device = model, len(ids), device
        self.kw = _cache_kwarg(model)
        out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True)
        self.cache = _cache_of(out)

    def run(self, suffixes: Sequence[Sequence[int]], pad_id: int, keep: int):
        """Forward ``[prefix][pad][suffix_i]`` for each row over a copy of the prefix cache; returns (logits
        of the last ``keep`` positions, the cache, the full attention mask, the suffix positions)."""
        B, width = len(suffixes), max(len(s) for s in suffixes)
        ids = torch.full((B, width), pad_id, dtype=torch.long)
        mask = torch.zeros((B, self.length + width), dtype=torch.long)
        mask[:, :self.length] = 1
        for r, s in enumerate(suffixes):
            ids[r, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[r, self.length + width - len(s):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, self.length:]
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(B)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=keep, **{self.kw: cache})
        return out.logits, _cache_of(out), mask, positions


def _supported(model) -> bool:
    return _accepts(model, "logits_to_keep") and _accepts(model, "position_ids")


@torch.no_grad()
def greedy_generate_shared_prefix(model, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                                  eos_id: int | Sequence[int] | None = None, batch_size: int = 32,
                                  device: str = "cpu", min_prefix: int = 8) -> list[list[int]]:
    """:func:`shared.lm.greedy_generate` (same arguments, same result) with the prompts' common prefix run
    once, and a row leaving its batch (and the batch's KV cache) as soon as it has produced a stop token.
    Prompts sharing fewer than ``min_prefix`` tokens go to :func:`shared.lm.greedy_generate`."""
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt: give at least one token (e.g. a BOS token)")
    P = _prefix_len(prompt_ids) if prompt_ids else 0
    if P < min_prefix or not _supported(model):
        return greedy_generate(model, prompt_ids, max_new_tokens, pad_id, eos_id, batch_size, device)
    model.eval()
    stop = set() if eos_id is None else ({eos_id} if isinstance(eos_id, int) else set(eos_id))
    prefix = _Prefix(model, prompt_ids[0][:P], device)
    suffixes = [list(p[P:]) for p in prompt_ids]
    results: list[list[int]] = [[] for _ in prompt_ids]
    for batch in length_batches([len(s) for s in suffixes], batch_size):
        logits, past, mask, positions = prefix.run([suffixes[i] for i in batch], pad_id, keep=1)
        rows = list(batch)  # the prompts still generating, in the order of the cache's rows
        next_tok = logits[:, -1].argmax(-1)
        positions = positions[:, -1]
        for _ in range(max_new_tokens):
            toks = next_tok.tolist()
            for i, t in zip(rows, toks):
                results[i].append(t)
            alive = [r for r, t in enumerate(toks) if t not in stop]
            if not alive or len(results[rows[0]]) == max_new_tokens:
                break
            if len(alive) < len(rows):  # drop the finished rows from the batch and its cache
                keep = torch.tensor(alive, device=device)
                past.batch_select_indices(keep)
                rows, mask, positions, next_tok = ([rows[r] for r in alive], mask[keep], positions[keep],
                                                   next_tok[keep])
            mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], dim=1)
            positions = positions + 1
            out = model(input_ids=next_tok[:, None], attention_mask=mask, position_ids=positions[:, None],
                        use_cache=True, logits_to_keep=1, **{prefix.kw: past})
            past = _cache_of(out)
            next_tok = out.logits[:, -1].argmax(-1)
    return results


@torch.no_grad()
def continuation_logprobs_shared_prefix(model, prompt_ids: Sequence[Sequence[int]],
                                        continuation_ids: Sequence[Sequence[int]], pad_id: int,
                                        batch_size: int = 32, device: str = "cpu", normalize: bool = False,
                                        min_prefix: int = 8) -> torch.Tensor:
    """:func:`shared.lm.continuation_logprobs` (log p(continuation | prompt), summed or averaged over the
    continuation's tokens) with the prompts' common prefix run once."""
    if len(prompt_ids) != len(continuation_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(continuation_ids)} continuations")
    if any(len(c) == 0 for c in continuation_ids):
        raise ValueError("empty continuation")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt: nothing predicts the first continuation token (prepend a BOS token)")
    P = _prefix_len(prompt_ids) if prompt_ids else 0
    if P < min_prefix or not _supported(model):
        return continuation_logprobs(model, prompt_ids, continuation_ids, pad_id, batch_size, device, normalize)
    model.eval()
    prefix = _Prefix(model, prompt_ids[0][:P], device)
    suffixes = [list(p[P:]) + list(c) for p, c in zip(prompt_ids, continuation_ids)]
    out = torch.zeros(len(prompt_ids), dtype=torch.float32)
    for batch in length_batches([len(s) for s in suffixes], batch_size):
        keep = max(len(continuation_ids[i]) for i in batch) + 1  # the logits that predict the last keep-1 tokens
        logits, _, _, _ = prefix.run([suffixes[i] for i in batch], pad_id, keep=keep)
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, keep-1, V)
        for row, i in enumerate(batch):
            cont = torch.tensor(list(continuation_ids[i]), device=device)
            vals = logp[row, logp.shape[1] - len(cont):].gather(-1, cont[:, None]).squeeze(-1)
            out[i] = (vals.mean() if normalize else vals.sum()).cpu()
    return out
