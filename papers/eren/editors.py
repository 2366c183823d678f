"""The editors compared: unedited model, one-step MRC, EREN (two-step MRC), and fine-tuning (LoRA).

EREN (Sec. 3 of the paper; authors' ``src/model/eren.py``): every edit is stored as a plain-text *note*; for a
question, a retriever fetches the top-k notes from the whole note memory (MIPS over sentence embeddings) and
an instruction-tuned LM reads them with the FLAN SQuAD-v2 style prompt ``TEMPLATE_MRC``, which allows the
answer "unanswerable". When the reader says so, EREN falls back to the closed-book prompt ``TEMPLATE_QA``
(the unedited model's prompt), so that the model keeps its own behaviour on questions the notes do not
cover. A 135M chat reader rarely writes "unanswerable", so the decision also reads the reader's probabilities
(:func:`refusal_by_logprob`): it refuses when the complete reply "Unanswerable" is at least as probable as its
own greedy reply. One-step MRC (the paper's ablation/baseline) always answers from the notes with ``TEMPLATE_MRC_ONE_STEP``.
The fine-tuning editor trains on the edits as (question -> answer) examples and answers closed-book.

Templates are the authors' (``src/model/utils.py``), wrapped in SmolLM2's chat template with its default
system message (``shared.lm.chat_ids``). Decoding is greedy with at most ``max_new_tokens`` tokens (the
authors' ``max_length=20``).

Behaviour preservation asks whether an output is *unchanged* from the unedited model's output. Greedy decoding
from a prompt reproduces a token sequence y exactly iff, for every t, argmax p(. | prompt, y_<t) = y_t, so
:func:`greedy_reproduces` decides it with one teacher-forced forward pass instead of a generation
(exact, up to floating-point near-ties between cached and uncached attention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from shared.lm import chat_ids, embed, pad_left, stop_token_ids
from shared.prefixcache import continuation_logprobs_shared_prefix, greedy_generate_shared_prefix

from .data import make_context

# --- the authors' prompt templates (src/model/utils.py) ---------------------------------------------------
TEMPLATE_QA = "Please answer this question: {question}"
TEMPLATE_MRC = ('Read this and answer the question. If the question is unanswerable, say "unanswerable".'
                "\n\n{context}\n\n{question}")
TEMPLATE_MRC_ONE_STEP = "Read this and answer the question.\n\n{context}\n\n{question}"
REFUSAL = "unanswerable"
REFUSAL_REPLY = "Unanswerable"  # the refusal as a complete chat reply (log-probability decision)

METHODS = ("unedited", "one_step", "eren", "ft")


def qa_prompt(question: str) -> str:
    return TEMPLATE_QA.format(question=question)


def mrc_prompt(context: str, question: str, two_step: bool) -> str:
    return (TEMPLATE_MRC if two_step else TEMPLATE_MRC_ONE_STEP).format(context=context, question=question)


# --- answers ----------------------------------------------------------------------------------------------

def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def leaks(output: str, reference: str, note_answers: Sequence[str]) -> bool:
    """An edit leaks into an unrelated answer: one of the given new answers (the retrieved notes' and the
    question's own edit's) appears in the output (:func:`contains_answer`) but not in the unedited model's
    reference output. Answer-level behaviour preservation is "no leak"."""
    return any(a and contains_answer(output, a) and not contains_answer(reference, a) for a in note_answers)


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip() if text.strip() else ""


def contains_answer(output: str, target: str) -> bool:
    """Edit success of one output: the target appears in the output's first line as whole words,
    case-insensitively ("Alaska" in "South Boston is located in Alaska." but not "Iran" in "Iranian")."""
    target = _normalise(target)
    if not target:
        raise ValueError("empty target answer")
    pattern = r"(?<!\w)" + re.escape(target) + r"(?!\w)"
    return re.search(pattern, _normalise(first_line(output))) is not None


def is_refusal(output: str) -> bool:
    """EREN's first step declined to answer from the notes. The authors test ``output.strip().lower() ==
    "unanswerable"`` (flan-t5 answers with the bare word); a chat model wraps it in a sentence
    ('Unanswerable: the answer to ... is not available.'), so the word anywhere in the output counts."""
    return REFUSAL in output.lower()


# --- retrieval: the note memory -------------------------------------------------------------------------

@dataclass
class NoteMemory:
    """All stored notes and their unit-norm sentence embeddings (N, d); retrieval is maximum inner product
    (cosine) search, as the authors' ``MipsRetriever`` (with all-MiniLM-L6-v2 instead of Contriever)."""

    notes: list[str]
    embeddings: torch.Tensor  # (N, d), unit norm
    answers: list[str]  # each note's new answer ("" if unknown), to detect a note leaking into an answer

    @classmethod
    def build(cls, encoder, enc_tok, notes: list[str], answers: list[str] | None = None,
              batch_size: int = 64) -> "NoteMemory":
        if len(set(notes)) != len(notes):
            raise ValueError("notes in the memory must be distinct")
        answers = list(answers) if answers is not None else [""] * len(notes)
        if len(answers) != len(notes):
            raise ValueError(f"{len(notes)} notes but {len(answers)} answers")
        return cls(list(notes), embed(encoder, enc_tok, notes, batch_size=batch_size), answers)

    def retrieve(self, query_embeddings: torch.Tensor, k: int) -> np.ndarray:
        """(Q, k) indices of the top-k notes for each query, most similar first (ties: lower index first)."""
        if not 1 <= k <= len(self.notes):
            raise ValueError(f"k must be in [1, {len(self.notes)}]; got {k}")
        sims = (query_embeddings @ self.embeddings.T).numpy()  # (Q, N)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    def contexts(self, idx: np.ndarray) -> list[str]:
        return [make_context([self.notes[j] for j in row]) for row in idx]


# --- generation and the exact "greedy reproduces" test ---------------------------------------------------

def chat_prompt_ids(tok, users: Sequence[str]) -> list[list[int]]:
    return [chat_ids(tok, u) for u in users]


def generate_ids(model, tok, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int,
                 device: str) -> list[list[int]]:
    """Greedy continuations (token ids, ending with the stop token when one was produced). The chat template
    and instruction that every prompt starts with run once (``shared.prefixcache``)."""
    return greedy_generate_shared_prefix(model, prompt_ids, max_new_tokens, tok.pad_token_id,
                                         eos_id=stop_token_ids(tok), batch_size=batch_size, device=device)


def decode(tok, ids: Sequence[Sequence[int]]) -> list[str]:
    return [tok.decode(row, skip_special_tokens=True).strip() for row in ids]


@torch.no_grad()
def greedy_reproduces(model, prompt_ids: Sequence[Sequence[int]], target_ids: Sequence[Sequence[int]],
                      pad_id: int, batch_size: int = 16, device: str = "cpu") -> list[bool]:
    """For each (prompt, target): would greedy decoding from the prompt produce exactly ``target``?

    One teacher-forced forward pass over prompt + target: the answer is yes iff the argmax prediction at
    every target position equals the target token. A target that ends with a stop token (the reference
    output stopped there) must be matched up to and including it; a target without one (the reference hit
    the token limit) is matched on its length, as a generation with the same limit would be.
    """
    if len(prompt_ids) != len(target_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(target_ids)} targets")
    if any(len(t) == 0 for t in target_ids) or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("prompts and targets must be non-empty")
    model.eval()
    out = [False] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: -(len(prompt_ids[i]) + len(target_ids[i])))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, mask = pad_left([list(prompt_ids[i]) + list(target_ids[i]) for i in batch], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        keep = max(len(target_ids[i]) for i in batch) + 1
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                       logits_to_keep=keep).logits[:, -keep:-1]  # (B, keep-1, V): predicts the last keep-1 tokens
        pred = logits.argmax(-1)
        for row, i in enumerate(batch):
            n = len(target_ids[i])
            out[i] = bool((pred[row, pred.shape[1] - n:] == ids[row, ids.shape[1] - n:]).all())
    return out


def refusal_by_logprob(model, tok, prompt_ids: Sequence[Sequence[int]], reply_ids: Sequence[Sequence[int]],
                       batch_size: int = 16, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EREN's first step as the more probable of the two complete replies the reading prompt allows: the
    refusal "Unanswerable" (followed by the end-of-turn token) and the reader's own best answer, its greedy
    reply ``reply_ids`` as generated (ending with the end-of-turn token when one was produced). Refuses iff
    log p(refusal) >= log p(greedy reply). Returns (refused, log p refusal, log p reply)."""
    refusal = tok(REFUSAL_REPLY, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    lp_refuse = continuation_logprobs_shared_prefix(model, prompt_ids, [refusal] * len(prompt_ids), tok.pad_token_id,
                                                    batch_size, device).numpy().astype(np.float64)
    lp_reply = continuation_logprobs_shared_prefix(model, prompt_ids, reply_ids, tok.pad_token_id, batch_size,
                                                   device).numpy().astype(np.float64)
    return lp_refuse >= lp_reply, lp_refuse, lp_reply


# --- the fine-tuning editor (LoRA) ------------------------------------------------------------------------

def ft_examples(tok, questions: Sequence[str], answers: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) pairs: the closed-book chat prompt of each question and, as the assistant's
    reply, the answer followed by the end-of-turn token."""
    eos = tok.eos_token_id
    return [(chat_ids(tok, qa_prompt(q)), tok(a, add_special_tokens=False)["input_ids"] + [eos])
            for q, a in zip(questions, answers)]
