"""Causal language models with ``transformers``: tiny ones trained from scratch and the offline pretrained one.

Language models use ``transformers`` classes (Llama, GPT-2) even when they are tiny and trained from
scratch, so scoring, generation, probing and steering work the same on a 1M-parameter model and on the
pretrained SmolLM2. Everything here takes explicit ``input_ids``/``attention_mask`` tensors or a tokenizer,
and batches with padding; results do not depend on the batch composition (tested).

Conventions: log-probabilities are natural-log nats; ``token_logprobs(...)[:, t]`` is
``log p(x_{t+1} | x_{<=t})``; prompts for generation and scoring are left-padded.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


# --- tiny models from scratch ----------------------------------------------------------------------------

def tiny_llama(vocab_size: int, max_len: int, d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
               d_ff: int | None = None, pad_token_id: int = 0, bos_token_id: int | None = None,
               eos_token_id: int | None = None, tie_embeddings: bool = True):
    """A freshly initialised ``LlamaForCausalLM`` (RoPE, RMSNorm, SwiGLU) of the given size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff or 4 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=max_len, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id, tie_word_embeddings=tie_embeddings, attention_dropout=0.0,
    )
    return LlamaForCausalLM(cfg)


def tiny_gpt2(vocab_size: int, max_len: int, d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
              pad_token_id: int = 0, bos_token_id: int | None = None, eos_token_id: int | None = None):
    """A freshly initialised ``GPT2LMHeadModel`` (learned absolute positions, GELU MLP), no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab_size, n_positions=max_len, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=pad_token_id,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id,
    )
    return GPT2LMHeadModel(cfg)


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- likelihoods -----------------------------------------------------------------------------------------

def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 at the first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return model(input_ids=input_ids).logits
    return model(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=_position_ids(attention_mask)).logits


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T-1): ``out[:, t] = log p(input_ids[:, t+1] | input_ids[:, :t+1])``."""
    logits = _logits(model, input_ids, attention_mask)[:, :-1].float()
    return torch.gather(F.log_softmax(logits, dim=-1), 2, input_ids[:, 1:, None]).squeeze(-1)


def causal_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens selected by ``loss_mask`` (B, T), which marks
    the tokens to predict (default: every real token after the first). Padding never counts."""
    logits = _logits(model, input_ids, attention_mask)[:, :-1]
    targets = input_ids[:, 1:]
    mask = torch.ones_like(targets, dtype=torch.bool)
    if attention_mask is not None:
        mask &= attention_mask[:, 1:].bool()
    if loss_mask is not None:
        mask &= loss_mask[:, 1:].bool()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    mask = mask.reshape(-1).float()
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


@torch.no_grad()
def total_nll(model, batches, device: str = "cpu") -> tuple[float, int]:
    """Sum of next-token NLL (nats) and number of predicted tokens over ``batches`` of
    ``(input_ids, attention_mask)``; perplexity is ``exp(nll / tokens)``."""
    model.eval()
    nll, count = 0.0, 0
    for input_ids, attention_mask in batches:
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        lp = token_logprobs(model, input_ids, attention_mask)
        mask = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
        nll -= float(lp[mask].sum())
        count += int(mask.sum())
    return nll, count


# --- tokenised batches -----------------------------------------------------------------------------------

def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def continuation_logprobs(model, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
                          pad_id: int, batch_size: int = 32, device: str = "cpu",
                          normalize: bool = False) -> torch.Tensor:
    """log p(continuation | prompt) for each pair (summed over the continuation's tokens, or averaged when
    ``normalize``), batched with left padding. Returns a float tensor of length N."""
    model.eval()
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        prompts = prompt_ids[start:start + batch_size]
        conts = continuation_ids[start:start + batch_size]
        ids, mask = pad_left([list(p) + list(c) for p, c in zip(prompts, conts)], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        lp = token_logprobs(model, ids, mask)  # (B, T-1)
        width = ids.shape[1]
        for row, cont in enumerate(conts):
            n = len(cont)
            if n == 0:
                raise ValueError("empty continuation")
            vals = lp[row, width - 1 - n:]  # predictions of the last n tokens
            out.append(vals.mean() if normalize else vals.sum())
    return torch.stack(out).float().cpu()


def score_candidates(model, tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                     batch_size: int = 32, device: str = "cpu", normalize: bool = False) -> list[list[float]]:
    """For each prompt, log p(candidate | prompt) of each of its candidate strings (tokenised after the
    prompt, without special tokens), e.g. ``score_candidates(m, tok, ["The capital of France is"],
    [[" Paris", " London"]])``."""
    p_ids, c_ids, shape = [], [], []
    for prompt, cands in zip(prompts, candidates):
        enc = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        shape.append(len(cands))
        for cand in cands:
            p_ids.append(enc)
            c_ids.append(tokenizer(cand, add_special_tokens=False)["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    flat = continuation_logprobs(model, p_ids, c_ids, pad, batch_size, device, normalize).tolist()
    out, i = [], 0
    for n in shape:
        out.append(flat[i:i + n])
        i += n
    return out


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x takes the KV cache as ``cache``; earlier releases as ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def greedy_generate(model, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                    eos_id: int | None = None, batch_size: int = 32, device: str = "cpu") -> list[list[int]]:
    """Greedy continuation token ids of each prompt (without the prompt, cut after ``eos_id``).

    Implemented with an explicit KV-cached loop over left-padded batches, so it works for any causal LM
    in ``transformers`` and gives the same tokens whatever the batch composition.
    """
    model.eval()
    results: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = pad_left(prompt_ids[start:start + batch_size], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        B = ids.shape[0]
        cache_kw = _cache_kwarg(model)
        out = model(input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask), use_cache=True)
        past = _cache_of(out)
        next_tok = out.logits[:, -1].argmax(-1)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        generated = []
        positions = _position_ids(mask)[:, -1]
        for _ in range(max_new_tokens):
            tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
            generated.append(tok)
            if eos_id is not None:
                done |= tok == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], dim=1)
            positions = positions + 1
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=positions[:, None],
                        use_cache=True, **{cache_kw: past})
            past = _cache_of(out)
            next_tok = out.logits[:, -1].argmax(-1)
        gen = torch.stack(generated, dim=1).cpu().tolist() if generated else [[] for _ in range(B)]
        for row in gen:
            if eos_id is not None and eos_id in row:
                row = row[: row.index(eos_id) + 1]
            results.append(row)
    return results
