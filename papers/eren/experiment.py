"""One seed of the CounterFact-Hard evaluation: every editor answers the seed's questions.

A seed is a disjoint block of edits (``data.edit_block``) with their in-scope and unrelated questions. The note
memory holds the notes of *all* edits (1,024 in ``small``), as in the paper's scalability setting, so the
retriever must find the right note among many; the fine-tuning editor is trained on the seed's edits only.

Cost control (the CPU bottleneck is greedy generation): an editor's output is generated where its text is
needed (every question for the unedited model, one-step MRC and EREN's first step; in-scope questions for
fine-tuning). The unrelated questions of the fine-tuning editor only need "is the output unchanged?", which the
exact teacher-forced test ``editors.greedy_reproduces`` decides with one forward pass instead of a generation.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.lm import add_lora, causal_lm_loss, embed
from shared.seeding import seed_everything
from shared.training import TrainConfig, train

from . import editors as E
from .data import note_of


@dataclass(frozen=True)
class Settings:
    top_k: int = 1  # notes retrieved per question
    max_new_tokens: int = 20  # greedy decoding limit (authors' max_length=20)
    batch_size: int = 16  # generation / scoring batch
    lora_r: int = 8
    lora_alpha: float = 16.0
    ft_lr: float = 1e-3
    ft_epochs: int = 5
    ft_batch_size: int = 8


def memory_records(n_records: int, evaluated: list[int], memory_size: int, seed: int = 0) -> list[int]:
    """Indices of the edits whose notes are in memory: every evaluated edit, filled up to ``memory_size`` with
    other edits (a fixed random choice), in record order. ``memory_size = n_records`` is the full memory."""
    if memory_size > n_records:
        raise ValueError(f"memory_size {memory_size} exceeds the {n_records} edits")
    chosen = set(evaluated)
    if len(chosen) > memory_size:
        raise ValueError(f"memory_size {memory_size} is smaller than the {len(chosen)} evaluated edits")
    others = [i for i in range(n_records) if i not in chosen]
    fill = np.random.default_rng(seed).permutation(others)[:memory_size - len(chosen)]
    return sorted(chosen | {int(i) for i in fill})


def build_memory(encoder, enc_tok, records: list[dict], indices: list[int]) -> E.NoteMemory:
    """The note memory of the given edits: each edit's note and its new answer."""
    notes = [note_of(records[i]["edit_statement"]) for i in indices]
    answers = [records[i]["edit_scope"][0][1] if records[i]["edit_scope"] else "" for i in indices]
    return E.NoteMemory.build(encoder, enc_tok, notes, answers)


def train_ft_editor(base, tok, questions: list[str], answers: list[str], s: Settings, seed: int, device: str,
                    progress: bool):
    """The fine-tuning editor: a LoRA copy of ``base`` trained on (question -> answer) examples for
    ``ft_epochs`` epochs, then merged (returns a plain model and the training curve)."""
    seed_everything(seed)
    model = add_lora(copy.deepcopy(base), r=s.lora_r, alpha=s.lora_alpha, dropout=0.0)
    examples = E.ft_examples(tok, questions, answers)
    steps_per_epoch = -(-len(examples) // s.ft_batch_size)
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def batch_fn(step: int):
        nonlocal order
        if step % steps_per_epoch == 0:
            order = list(rng.permutation(len(examples)))
        j = step % steps_per_epoch
        chosen = [examples[i] for i in order[j * s.ft_batch_size:(j + 1) * s.ft_batch_size]]
        return tuple(t.to(device) for t in E.collate(chosen, tok.pad_token_id))

    def loss_fn(m, batch):
        ids, mask, loss_mask = batch
        return causal_lm_loss(m, ids, mask, loss_mask)

    cfg = TrainConfig(steps=s.ft_epochs * steps_per_epoch, lr=s.ft_lr, schedule="constant", grad_clip=1.0,
                      log_every=1, desc=f"FT (LoRA) seed {seed}", progress=progress)
    history = train(model, cfg, batch_fn, loss_fn, device)
    merged = model.merge_and_unload().eval()
    return merged, history.to_frame()


def run_seed(model, tok, encoder, enc_tok, memory: E.NoteMemory, questions: pd.DataFrame,
             ft_answers: dict[int, tuple[str, str]], s: Settings, seed: int, device: str,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Evaluate the four editors on one seed's questions.

    ``ft_answers`` maps each edit id to the (question, answer) example the fine-tuning editor learns.
    Returns (one row per question x method, the FT training curve, timings in seconds).
    """
    timings: dict[str, float] = {}
    q = questions.reset_index(drop=True)
    scope = (q["kind"] == "scope").to_numpy()
    n = len(q)
    bs, mnt = s.batch_size, s.max_new_tokens

    def tick(name: str, start: float) -> None:
        timings[name] = time.perf_counter() - start
        if progress:
            print(f"  seed {seed}: {name} {timings[name]:.1f} s", flush=True)

    # retrieval over the whole memory
    t0 = time.perf_counter()
    top = memory.retrieve(embed(encoder, enc_tok, q["question"].tolist()), s.top_k)
    contexts = memory.contexts(top)
    gold = np.array([memory.notes.index(note) if note in memory.notes else -1 for note in q["note"]])
    retrieved_gold = (top == gold[:, None]).any(axis=1)
    tick("retrieval", t0)

    # unedited model: closed-book answers to every question (the reference for behaviour preservation)
    t0 = time.perf_counter()
    qa_ids = E.chat_prompt_ids(tok, [E.qa_prompt(x) for x in q["question"]])
    ref_ids = E.generate_ids(model, tok, qa_ids, mnt, bs, device)
    ref_text = E.decode(tok, ref_ids)
    tick("unedited", t0)

    # one-step MRC: always answer from the retrieved notes (generated for every question, so that its answers
    # to unrelated questions can be compared with EREN's for note leakage)
    t0 = time.perf_counter()
    one_ids = E.chat_prompt_ids(tok, [E.mrc_prompt(c, x, two_step=False) for c, x in zip(contexts, q["question"])])
    gen = E.generate_ids(model, tok, one_ids, mnt, bs, device)
    one_text = E.decode(tok, gen)
    one_same = [a == b for a, b in zip(gen, ref_ids)]
    tick("one_step", t0)

    # EREN: two-step MRC; "unanswerable" falls back to the closed-book answer (= the unedited output)
    t0 = time.perf_counter()
    two_ids = E.chat_prompt_ids(tok, [E.mrc_prompt(c, x, two_step=True) for c, x in zip(contexts, q["question"])])
    step1_ids = E.generate_ids(model, tok, two_ids, mnt, bs, device)
    step1_text = E.decode(tok, step1_ids)
    refused = [E.is_refusal(t) for t in step1_text]
    eren_text = [r if f else t for r, t, f in zip(ref_text, step1_text, refused)]
    eren_same = [f or a == b for f, a, b in zip(refused, step1_ids, ref_ids)]
    tick("eren", t0)

    # fine-tuning editor (LoRA on the seed's edits), answering closed-book; its answers to unrelated questions
    # are only compared with the unedited ones, so the exact teacher-forced test replaces generation there
    t0 = time.perf_counter()
    idx_s, idx_u = np.flatnonzero(scope), np.flatnonzero(~scope)
    edits = sorted(q["edit_id"].unique())
    ft_model, curve = train_ft_editor(model, tok, [ft_answers[e][0] for e in edits],
                                      [ft_answers[e][1] for e in edits], s, seed, device, progress)
    timings["ft_train"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    ft_text = [""] * n
    ft_same = [False] * n
    gen = E.generate_ids(ft_model, tok, [qa_ids[i] for i in idx_s], mnt, bs, device)
    for i, g, t in zip(idx_s, gen, E.decode(tok, gen)):
        ft_text[i], ft_same[i] = t, g == ref_ids[i]
    same = E.greedy_reproduces(ft_model, [qa_ids[i] for i in idx_u], [ref_ids[i] for i in idx_u],
                               tok.pad_token_id, bs, device)
    for i, v in zip(idx_u, same):
        ft_same[i] = v
    del ft_model
    tick("ft_eval", t1)
    timings["ft"] = time.perf_counter() - t0

    note_answers = [[memory.answers[j] for j in row] for row in top]
    rows = []
    outputs = {"unedited": (ref_text, [True] * n), "one_step": (one_text, one_same),
               "eren": (eren_text, eren_same), "ft": (ft_text, ft_same)}
    for i, r in q.iterrows():
        for method, (texts, unchanged) in outputs.items():
            if r["kind"] == "scope":
                score = E.contains_answer(texts[i], r["target"])
            else:
                score = bool(unchanged[i])  # behaviour preserved: output identical to the unedited output
            rows.append(dict(seed=seed, edit_id=r["edit_id"], kind=r["kind"], question=r["question"],
                             target=r["target"], method=method, score=int(score), output=texts[i],
                             refused=int(refused[i]) if method == "eren" else 0,
                             retrieved_gold=int(retrieved_gold[i]), context=contexts[i],
                             step1_output=step1_text[i] if method == "eren" else "",
                             ft_trained=int(r["question"] == ft_answers[r["edit_id"]][0]),
                             leak=int(method in ("one_step", "eren") and r["kind"] != "scope"
                                      and E.leaks(texts[i], ref_text[i], note_answers[i]))))
    return pd.DataFrame(rows), curve.assign(seed=seed), timings
