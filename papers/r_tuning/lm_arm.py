"""The pretrained-LM arm: R-Tuning vs vanilla tuning of SmolLM2-135M-Instruct on EREN/CounterFact facts.

Pipeline (paper Sec. 3 and the authors' scripts; see :mod:`papers.r_tuning.refusal`):

1. knowledge split: the untuned model answers every training question greedily; certain = gold in answer;
2. vanilla and R-Tuning data from the same training questions;
3. LoRA tuning of the top ``n_top`` transformer blocks on each data set (one model per method and seed);
4. evaluation on ID and OOD test questions: greedy answer, answer confidence, certainty, AP.

CPU budget device (said in the README): the blocks below the tuned ones are frozen, so their output on a
training sequence never changes. It is computed once (``shared.topblocks.cache_block_inputs``) and the tuned
blocks are trained as a ``transformers`` model of ``n_top`` layers fed those hidden states as
``inputs_embeds`` (``shared.topblocks.build_top_model``; it shares its modules with the full model, so the
trained adapters are the full model's too). This is exactly the computation of the full model (tested), at ``n_top / 30`` of the cost.
With ``n_top`` equal to the model's depth it is ordinary LoRA on every block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.lm import greedy_generate, length_batches, pad_left
from shared.topblocks import LoraSpec, cache_block_inputs, collate, train_top_lora

from .refusal import CERTAINTY_SUFFIX, SURE, UNSURE, certainty, geometric_mean_confidence, qa_prompt

# Three demonstrations (not in the data set) so that the instruction-tuned model answers the plain
# "Question: ... Answer:" prompt with a short answer before any tuning (zero-shot it mostly returns an
# empty line or "A:"). Used only for the knowledge split and the untuned baseline.
FEW_SHOT = ("Question: What is the capital of Japan? Answer: Tokyo.\n"
            "Question: Which company developed the iPhone? Answer: Apple.\n"
            "Question: What language is spoken in Brazil? Answer: Portuguese.\n")


def few_shot_prompt(question: str) -> str:
    return FEW_SHOT + qa_prompt(question)


def stop_ids(tokenizer) -> list[int]:
    """Tokens that end an answer: any token containing '.' (the authors stop at '.') and the special
    tokens. Line breaks do not stop it: an answer may start with one, as with the authors' base models."""
    stops = {i for t, i in tokenizer.get_vocab().items() if "." in t}
    stops |= set(tokenizer.all_special_ids)
    return sorted(stops)


def _encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def generate_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                     device: str) -> tuple[list[list[int]], list[str]]:
    """Greedy answers: token ids up to (not including) the first stop token, and their text."""
    stops = stop_ids(tokenizer)
    stop_set = set(stops)
    out = greedy_generate(model, _encode(tokenizer, prompts), max_new_tokens, tokenizer.pad_token_id,
                          eos_id=stops, batch_size=batch_size, device=device)
    ids = []
    for row in out:
        cut = next((j for j, t in enumerate(row) if t in stop_set), len(row))
        ids.append(row[:cut])
    return ids, [tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids]


@torch.no_grad()
def score_answers(model, tokenizer, prompts: Sequence[str], answer_ids: Sequence[Sequence[int]],
                  with_certainty: bool, batch_size: int, device: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Answer confidence (geometric mean of the answer tokens' probabilities) and, when
    ``with_certainty``, p(sure) / (p(sure) + p(unsure)) after ``{prompt} {answer}. Are you sure ...? I am``,
    both from one forward pass over ``prompt + answer (+ suffix)`` per question."""
    model.eval()
    p_ids = _encode(tokenizer, prompts)
    suffix, sure_id, unsure_id = [], [], []
    if with_certainty:
        suffix = _encode(tokenizer, [CERTAINTY_SUFFIX])[0]
        sure_id, unsure_id = _encode(tokenizer, [SURE])[0], _encode(tokenizer, [UNSURE])[0]
        if len(sure_id) != 1 or len(unsure_id) != 1:
            raise ValueError(f"the certainty words {SURE!r}, {UNSURE!r} must be single tokens in this tokenizer")
    seqs = [list(p) + list(a) + suffix for p, a in zip(p_ids, answer_ids)]
    conf = np.zeros(len(seqs))
    p_sure = np.zeros(len(seqs)) if with_certainty else None
    S = len(suffix)
    for batch in length_batches([len(s) for s in seqs], batch_size):
        ids, mask = pad_left([seqs[i] for i in batch], tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        keep = max(len(answer_ids[i]) for i in batch) + S + 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep,
                       use_cache=False).logits[:, -keep:].float()
        logp = F.log_softmax(logits, dim=-1)  # (B, keep, V); row -1 predicts the token after the sequence
        for row, i in enumerate(batch):
            A = len(answer_ids[i])
            if A:
                # answer token j sits at -(A + S) + j and is predicted by the logits one position earlier
                start = keep - (A + S) - 1
                lp = logp[row, start:start + A].gather(1, torch.tensor(answer_ids[i], device=device)[:, None])
                conf[i] = geometric_mean_confidence(lp.squeeze(1).tolist())
            if with_certainty:
                p_sure[i] = certainty(float(logp[row, -1, sure_id[0]]), float(logp[row, -1, unsure_id[0]]))
    return conf, p_sure


# --- per-token loss weights of the tuning examples ------------------------------------------------------

def example_weights(n_tokens: int, answer_start: int, answer_end: int, certainty_pos: int | None = None) -> list[float]:
    """Per-token loss weights of one example: the answer tokens ``[answer_start, answer_end)`` share weight 1
    (their mean cross-entropy), the certainty token (``sure``/``unsure``, R-Tuning only) has weight 1, every
    other token 0. So every example's answer and its certainty label count fully, whatever the length of the
    fixed certainty question between them (a token mean over the whole response would give the single
    certainty token ~1/20 of an example's weight)."""
    if not 0 < answer_start < answer_end <= n_tokens:
        raise ValueError(f"answer span [{answer_start}, {answer_end}) outside a sequence of {n_tokens} tokens")
    w = [0.0] * n_tokens
    for t in range(answer_start, answer_end):
        w[t] = 1.0 / (answer_end - answer_start)
    if certainty_pos is not None:
        if not answer_end <= certainty_pos < n_tokens:
            raise ValueError(f"certainty token {certainty_pos} not after the answer in {n_tokens} tokens")
        w[certainty_pos] = 1.0
    return w


# --- the whole arm ---------------------------------------------------------------------------------------

@dataclass
class LmArmResult:
    questions: "object"  # pandas DataFrame, one row per (seed, method, split, question)
    curves: "object"  # pandas DataFrame: seed, method, step, loss
    train_probe: "object"  # pandas DataFrame: the knowledge split of the training questions
    info: dict
    train_fit: "object" = None  # pandas DataFrame: seed, qid, certain, p_sure of each R-Tuning model on its training questions


def _restore(layers: nn.ModuleList, snapshot: dict[str, torch.Tensor]) -> None:
    layers.load_state_dict(snapshot)


def run_lm_arm(split, seeds: Sequence[int], spec: LoraSpec, probe_max_new_tokens: int, answer_max_new_tokens: int,
               gen_batch_size: int, probe_test: bool, device: str, progress: bool = True,
               model_path=None) -> LmArmResult:
    """The SmolLM2 arm on a :class:`~papers.r_tuning.facts.FactSplit`: knowledge split of the training
    questions, then for every seed one vanilla and one R-Tuning LoRA model, each evaluated on the ID and
    OOD test questions. All runs start from the same pretrained weights (restored between runs)."""
    import time

    import pandas as pd

    from shared.lm import load_smollm2

    from .refusal import label_certain, r_tuning_text, vanilla_text

    t0 = time.perf_counter()
    model, tok = load_smollm2(device, path=model_path)
    L = model.config.num_hidden_layers
    if not 1 <= spec.n_top <= L:
        raise ValueError(f"lora_layers must be in [1, {L}]; got {spec.n_top}")

    def log(msg: str) -> None:
        if progress:
            print(f"[lm arm {time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    # 1. knowledge split by the untuned model (few-shot prompt, greedy, gold in answer)
    train = split.train
    _, probe_out = generate_answers(model, tok, [few_shot_prompt(f.question) for f in train],
                                    probe_max_new_tokens, gen_batch_size, device)
    certain = label_certain([f.answer for f in train], probe_out)
    train_probe = pd.DataFrame({"question": [f.question for f in train], "gold": [f.answer for f in train],
                                "family": [f.family for f in train], "untuned_answer": probe_out,
                                "certain": certain})
    log(f"knowledge split: {int(certain.sum())}/{len(train)} training questions certain")
    base_correct = {}
    tests = {"id": split.test_id, "ood": split.test_ood}
    for name, facts in tests.items():
        if probe_test:
            _, out = generate_answers(model, tok, [few_shot_prompt(f.question) for f in facts],
                                      probe_max_new_tokens, gen_batch_size, device)
            base_correct[name] = label_certain([f.answer for f in facts], out).astype(float)
        else:
            base_correct[name] = np.full(len(facts), np.nan)
    if probe_test:
        log("untuned model probed on the test questions")

    # 2. the two data sets, tokenised; the response starts after "Answer:"
    rt_ids = _encode(tok, [r_tuning_text(f.question, f.answer, bool(c)) for f, c in zip(train, certain)])
    va_ids = _encode(tok, [vanilla_text(f.question, f.answer) for f in train])
    starts = [len(p) for p in _encode(tok, [qa_prompt(f.question) for f in train])]
    for i, (p_len, r, v) in enumerate(zip(starts, rt_ids, va_ids)):
        prompt_ids = _encode(tok, [qa_prompt(train[i].question)])[0]
        if r[:p_len] != prompt_ids or v[:p_len] != prompt_ids:
            raise ValueError(f"prompt of training question {i} does not tokenise as a prefix of its example")

    # 3. cached inputs of the first tuned block (vanilla examples are prefixes of R-Tuning's when the
    #    tokens agree; the others get their own pass)
    first = L - spec.n_top
    rt_hidden = cache_block_inputs(model, rt_ids, first, tok.pad_token_id, gen_batch_size, device)
    va_hidden: list = [None] * len(train)
    missing = []
    for i, (r, v) in enumerate(zip(rt_ids, va_ids)):
        if r[:len(v)] == v:
            va_hidden[i] = rt_hidden[i][:len(v)]
        else:
            missing.append(i)
    if missing:
        extra = cache_block_inputs(model, [va_ids[i] for i in missing], first, tok.pad_token_id,
                                   gen_batch_size, device)
        for i, h in zip(missing, extra):
            va_hidden[i] = h
    log(f"cached the inputs of block {first} for {len(train)} examples ({len(missing)} vanilla re-encoded)")

    # 4. loss weights: per example the mean over the answer tokens (" a.") + the certainty token
    sure_id, unsure_id = _encode(tok, [SURE])[0], _encode(tok, [UNSURE])[0]
    va_w, rt_w = [], []
    for i, (st, r, v) in enumerate(zip(starts, rt_ids, va_ids)):
        va_w.append(example_weights(len(v), st, len(v)))
        cpos = len(r) - 2  # "... I am sure." -> " sure" is the second-to-last token
        if [r[cpos]] not in (sure_id, unsure_id):
            raise ValueError(f"training example {i}: no certainty token before the final period")
        rt_w.append(example_weights(len(r), st, min(len(v), cpos), cpos))  # as many answer tokens as vanilla's
    train_prompts = [qa_prompt(f.question) for f in train]
    gold_ids = _encode(tok, [" " + f.answer for f in train])

    tuned = model.model.layers[first:]
    snapshot = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    rows, curves, fits = [], [], []
    data = {"vanilla": (va_hidden, va_ids, va_w), "r_tuning": (rt_hidden, rt_ids, rt_w)}
    for seed in seeds:
        for method in ("vanilla", "r_tuning"):
            _restore(tuned, snapshot)
            hidden, ids, w = data[method]
            hist = train_top_lora(model, hidden, ids, starts, spec, seed, device, f"{method} s{seed}", progress, w)
            curves += [{"seed": seed, "method": method, "step": r["step"], "loss": r["loss"]} for r in hist.records]
            if method == "r_tuning":  # did it fit its certainty labels? p(sure) on the training questions
                _, p_train = score_answers(model, tok, train_prompts, gold_ids, True, gen_batch_size, device)
                fits.append({"seed": seed, "method": method, "train_p_sure": p_train.tolist(),
                             "certain": certain.tolist()})
            for name, facts in tests.items():
                prompts = [qa_prompt(f.question) for f in facts]
                ans_ids, ans = generate_answers(model, tok, prompts, answer_max_new_tokens, gen_batch_size, device)
                conf, p_sure = score_answers(model, tok, prompts, ans_ids, method == "r_tuning",
                                             gen_batch_size, device)
                rows.append(pd.DataFrame({
                    "seed": seed, "method": method, "split": name, "qid": np.arange(len(facts)),
                    "question": [f.question for f in facts],
                    "gold": [f.answer for f in facts], "family": [f.family for f in facts], "answer": ans,
                    "correct": label_certain([f.answer for f in facts], ans), "confidence": conf,
                    "p_sure": p_sure if p_sure is not None else np.nan, "pretrained_correct": base_correct[name]}))
            log(f"seed {seed} {method}: final loss {hist.last('loss'):.3f}")
    _restore(tuned, snapshot)
    info = {"certain_fraction": float(certain.mean()), "n_train": len(train),
            "n_test_id": len(split.test_id), "n_test_ood": len(split.test_ood)}
    fit = pd.DataFrame([{"seed": f["seed"], "qid": i, "certain": c, "p_sure": p}
                        for f in fits for i, (c, p) in enumerate(zip(f["certain"], f["train_p_sure"]))])
    return LmArmResult(pd.concat(rows, ignore_index=True), pd.DataFrame(curves), train_probe, info, fit)
