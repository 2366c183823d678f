"""One seed of the CounterFact-Hard evaluation: every editor answers the seed's questions.

A seed is a disjoint block of edits (``data.edit_block``) with their in-scope and unrelated questions. The note
memory holds the notes of *all* edits (1,024 in ``small``), as in the paper's scalability setting, so the
retriever must find the right note among many; the fine-tuning editor is trained on the seed's edits only.

Every editor's answer to every question is generated (the answer-level measure of behaviour preservation
needs the text); EREN's refusal decision adds one teacher-forced scoring pass (``editors.refusal_by_logprob``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.lm import embed
from shared.topblocks import LoraSpec, cache_block_inputs, train_top_lora

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
    ft_top_blocks: int = 8  # LoRA on the top blocks only (the ones below are frozen and cached)


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
    """The fine-tuning editor: a copy of ``base`` with LoRA on its top ``ft_top_blocks`` blocks, trained on
    (question -> answer) examples for ``ft_epochs`` epochs (constant learning rate) and merged. The blocks
    below are frozen, so their outputs on the examples are computed once (``shared.topblocks``). Returns
    the plain model and the training curve."""
    model = copy.deepcopy(base)
    examples = E.ft_examples(tok, questions, answers)
    seqs = [p + a for p, a in examples]
    n_top = min(s.ft_top_blocks, model.config.num_hidden_layers)
    hidden = cache_block_inputs(model, seqs, model.config.num_hidden_layers - n_top, tok.pad_token_id,
                                s.batch_size, device)
    spec = LoraSpec(n_top=n_top, r=s.lora_r, alpha=s.lora_alpha, lr=s.ft_lr, epochs=s.ft_epochs,
                    batch_size=s.ft_batch_size, warmup_steps=0, schedule="constant")
    history = train_top_lora(model, hidden, seqs, [len(p) for p, _ in examples], spec, seed, device,
                             f"FT (LoRA, top {n_top} blocks) seed {seed}", progress)
    return model.eval(), history.to_frame()


def run_seed(model, tok, encoder, enc_tok, memory: E.NoteMemory, questions: pd.DataFrame,
             ft_answers: dict[int, tuple[str, str]], edit_answers: dict[int, str], s: Settings, seed: int,
             device: str, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Evaluate the editors on one seed's questions.

    ``ft_answers`` maps each edit id to the (question, answer) example the fine-tuning editor learns;
    ``edit_answers`` maps each edit id to its new answer (a leak candidate for its own unrelated questions).
    Methods: ``unedited``, ``one_step``, ``eren``, ``ft`` and ``eren_permuted`` (EREN with its refusal
    decisions permuted among the seed's questions: the same refusal rate, blind to the question; the
    falsification control). Returns (one row per question x method, the FT training curve, timings in s).
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
    note_answers = [[memory.answers[j] for j in row] for row in top]
    # answers whose appearance in an unrelated answer counts as a leak: the retrieved notes' and the own edit's
    candidates = [list(dict.fromkeys([a for a in na if a] + [edit_answers[int(e)]]))
                  for na, e in zip(note_answers, q["edit_id"])]
    tick("retrieval", t0)

    # unedited model: closed-book answers to every question (the reference for behaviour preservation)
    t0 = time.perf_counter()
    qa_ids = E.chat_prompt_ids(tok, [E.qa_prompt(x) for x in q["question"]])
    ref_ids = E.generate_ids(model, tok, qa_ids, mnt, bs, device)
    ref_text = E.decode(tok, ref_ids)
    tick("unedited", t0)

    # one-step MRC: always answer from the retrieved notes
    t0 = time.perf_counter()
    one_ids = E.chat_prompt_ids(tok, [E.mrc_prompt(c, x, two_step=False) for c, x in zip(contexts, q["question"])])
    gen = E.generate_ids(model, tok, one_ids, mnt, bs, device)
    one_text = E.decode(tok, gen)
    one_same = [a == b for a, b in zip(gen, ref_ids)]
    tick("one_step", t0)

    # EREN: two-step MRC. Refusal = the complete reply "Unanswerable" is at least as probable as the reader's
    # greedy reply, or that reply says "unanswerable"; a refusal falls back to the closed-book answer
    t0 = time.perf_counter()
    two_ids = E.chat_prompt_ids(tok, [E.mrc_prompt(c, x, two_step=True) for c, x in zip(contexts, q["question"])])
    step1_ids = E.generate_ids(model, tok, two_ids, mnt, bs, device)
    step1_text = E.decode(tok, step1_ids)
    refused_text = np.array([E.is_refusal(t) for t in step1_text])
    refused_lp, lp_refuse, lp_reply = E.refusal_by_logprob(model, tok, two_ids, step1_ids, bs, device)
    refused = refused_lp | refused_text
    tick("eren", t0)

    def fallback(flags):
        return ([r if f else t for r, t, f in zip(ref_text, step1_text, flags)],
                [bool(f) or a == b for f, a, b in zip(flags, step1_ids, ref_ids)])

    eren_text, eren_same = fallback(refused)
    permuted = np.random.default_rng([seed, 7]).permutation(refused)
    perm_text, perm_same = fallback(permuted)

    # fine-tuning editor (LoRA on the seed's edits), answering closed-book every question
    t0 = time.perf_counter()
    edits = sorted(q["edit_id"].unique())
    ft_model, curve = train_ft_editor(model, tok, [ft_answers[e][0] for e in edits],
                                      [ft_answers[e][1] for e in edits], s, seed, device, progress)
    timings["ft_train"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    gen = E.generate_ids(ft_model, tok, qa_ids, mnt, bs, device)
    ft_text = E.decode(tok, gen)
    ft_same = [a == b for a, b in zip(gen, ref_ids)]
    del ft_model
    tick("ft_eval", t1)
    timings["ft"] = time.perf_counter() - t0

    rows = []
    outputs = {"unedited": (ref_text, [True] * n, [False] * n), "one_step": (one_text, one_same, [False] * n),
               "eren": (eren_text, eren_same, refused), "ft": (ft_text, ft_same, [False] * n),
               "eren_permuted": (perm_text, perm_same, permuted)}
    for i, r in q.iterrows():
        for method, (texts, unchanged, refusals) in outputs.items():
            if r["kind"] == "scope":
                score = score_ans = E.contains_answer(texts[i], r["target"])
                leak = False
            else:
                score = bool(unchanged[i])  # exact: output identical to the unedited output
                leak = method != "unedited" and E.leaks(texts[i], ref_text[i], candidates[i])
                score_ans = not leak  # answer-level: no edit's answer leaked into the output
            rows.append(dict(seed=seed, edit_id=r["edit_id"], kind=r["kind"], question=r["question"],
                             target=r["target"], method=method, score=int(score), score_ans=int(score_ans),
                             leak=int(leak), output=texts[i], refused=int(refusals[i]),
                             refused_text=int(refused_text[i]) if method == "eren" else 0,
                             lp_refuse=float(lp_refuse[i]), lp_reply=float(lp_reply[i]),
                             retrieved_gold=int(retrieved_gold[i]), context=contexts[i],
                             leak_candidates="|".join(candidates[i]),
                             step1_output=step1_text[i] if method in ("eren", "eren_permuted") else "",
                             ft_trained=int(r["question"] == ft_answers[r["edit_id"]][0])))
    return pd.DataFrame(rows), curve.assign(seed=seed), timings
