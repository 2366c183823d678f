"""The LLM arm: SmolLM2 prompted with fresh Boolean functions (the paper's claim (c)), at reduced scale.

Prompt: the authors' ``basic`` prompt type (``src/eval_openai.py``): an instruction, then each labelled point
as a line ``Input: 0 1 1 0 1`` and a line ``Label: 1`` (-1 -> 0, +1 -> 1 for inputs and labels), as plain
text (no chat template: the authors prompted the Hugging Face models this way). They send one prompt per
query (the first ``t - 1`` labelled points, then the query's ``Input`` line and ``Label:``) and read the
greedy answer. A causal model's prediction of the label digit after ``Label: `` depends only on the text
before it, so one forward pass over the fully labelled prompt gives every query's prediction at once, from
exactly the text the per-query prompt would hold (:func:`label_logprobs`). The label is the more probable of
the two digit tokens; the authors instead parse free generation and count an unparseable answer as wrong.
The probability mass the model puts on the two digits (``label_mass``) shows how far it follows the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

# The authors' "basic" instruction (src/eval_openai.py, get_prompt): the experimental protocol, quoted.
INSTRUCTION = ("You are given some examples of inputs and their corresponding labels. You need to learn the "
               "underlying boolean function represented by these input-label examples. Predict the label "
               "(either 0 or 1) for the final input.\n")
DIGITS = ("0", "1")  # label -1 -> "0", +1 -> "1"


@dataclass(frozen=True)
class PromptText:
    text: str
    label_chars: tuple[int, ...]  # character offset of each label digit in ``text``, one per point


def _bits(v: np.ndarray) -> str:
    return " ".join("1" if x > 0 else "0" for x in v)


def prompt_text(xs: np.ndarray, ys: np.ndarray) -> PromptText:
    """The fully labelled prompt of one function: ``xs`` (N, n) and ``ys`` (N,) in {-1, +1}."""
    xs, ys = np.asarray(xs), np.asarray(ys)
    if xs.ndim != 2 or ys.shape != xs.shape[:1]:
        raise ValueError(f"expected xs (N, n) and ys (N,); got {xs.shape} and {ys.shape}")
    if not (np.isin(xs, (-1, 1)).all() and np.isin(ys, (-1, 1)).all()):
        raise ValueError("inputs and labels must be in {-1, +1}")
    parts, chars, length = [INSTRUCTION], [], len(INSTRUCTION)
    for x, y in zip(xs, ys):
        head = f"\nInput: {_bits(x)}\nLabel: "
        chars.append(length + len(head))
        piece = head + DIGITS[int(y > 0)]
        parts.append(piece)
        length += len(piece)
    return PromptText("".join(parts), tuple(chars))


def digit_token_ids(tokenizer) -> tuple[int, int]:
    """Token ids of "0" and "1"; each digit must be a single token."""
    ids = []
    for d in DIGITS:
        enc = tokenizer(d, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise ValueError(f"the tokenizer splits the label {d!r} into {len(enc)} tokens; the one-pass "
                             "read-out needs one token per label")
        ids.append(enc[0])
    return ids[0], ids[1]


def encode(tokenizer, prompt: PromptText) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and, per labelled point, the index of the token that *predicts* its label
    digit (the token just before the digit). Raises if a digit is not a token of its own."""
    enc = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start_to_token = {int(a): j for j, (a, b) in enumerate(offsets) if b == a + 1}
    zero, one = digit_token_ids(tokenizer)
    positions = []
    for c in prompt.label_chars:
        j = start_to_token.get(c)
        if j is None or ids[j] not in (zero, one) or j == 0:
            raise ValueError(f"the label digit at character {c} is not a token of its own; cannot read the "
                             "label predictions from one forward pass")
        positions.append(j - 1)
    return ids, positions


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: Sequence[PromptText], batch_size: int = 4,
                   device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(B, N) natural-log probabilities of the tokens "0" and "1" at each label of each prompt, given the
    text before it, from one forward pass per batch of prompts.

    Prompts are right-padded: under the causal mask a real token never attends to the padding after it, so
    the predictions do not depend on the batch (tested). Only the hidden states at the label positions go
    through the output head."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    encoded = [encode(tokenizer, p) for p in prompts]
    n_labels = {len(pos) for _, pos in encoded}
    if len(n_labels) > 1:
        raise ValueError(f"prompts have different numbers of labelled points: {sorted(n_labels)}")
    zero, one = digit_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else zero
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    model.eval()
    out0, out1 = [], []
    for s in range(0, len(encoded), batch_size):
        chunk = encoded[s:s + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (seq, _) in enumerate(chunk):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        rows = torch.tensor([i for i, (_, pos) in enumerate(chunk) for _ in pos])
        cols = torch.tensor([p for _, pos in chunk for p in pos])
        logp = torch.log_softmax(head(hidden[rows.to(device), cols.to(device)]).float(), dim=-1)
        logp = logp[:, [zero, one]].reshape(len(chunk), -1, 2).cpu().numpy()
        out0.append(logp[..., 0])
        out1.append(logp[..., 1])
    return np.concatenate(out0), np.concatenate(out1)
