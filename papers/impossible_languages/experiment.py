"""Training and evaluation of one GPT-2 per (language, seed); the claims are registered in ``claims.yaml``.

The paper (Sec. 3-4) trains GPT-2 small from scratch on each impossible language (3,000 steps of 512 x 1,024
tokens, learning rate warmed up to 6e-4), evaluates the geometric-mean perplexity of 10K held-out sentences
of the same language at checkpoints through training (Experiment 1), and for the *Hop languages the
surprisal of the agreement marker (Experiment 2). Here: a tiny ``transformers`` GPT-2
(:func:`shared.lm.tiny_gpt2`), trained with :func:`shared.training.train` on blocks of the language's
sentence stream, evaluated with :mod:`shared.lm`.

**Scoring** (the statistic of record, ``log_ppl``): a held-out sentence ``x_1..x_n`` is scored as a whole,
``-(1/(n+1)) ln p(x_1..x_n <eos> | <eos>)``: the first token is predicted from the ``<eos>`` that precedes
every sentence in the training stream, and the closing ``<eos>`` is scored too. For an exact model this
does not depend on the reading direction (chain rule over the same n + 1 boundary-delimited tokens), so a
reversed or shuffled language is not favoured by where its boundaries fall. Two conventions are kept as
sensitivity statistics: ``log_ppl_no_end`` (closing ``<eos>`` unscored: the previous statistic of record)
and ``log_ppl_first_unscored`` (the authors' GPT-2 without BOS: first token and closing ``<eos>`` unscored).

**Controls**: a unigram model of each language's training stream (:func:`unigram_log_ppl`), which cannot
see word order, and every model as initialised (step 0, evaluated before training).

Every language of a family shares, for a given seed, the initial weights (the model is built right after
``seed_everything(seed)``) and the order of training blocks (drawn from ``torch_generator(seed)``; the
languages of a family have the same stream length), so the comparisons within a family are paired.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from shared.lm import continuation_logprobs, num_parameters, pad_left, tiny_gpt2, token_logprobs, causal_lm_loss
from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, train

from .corpus import LanguageData
from .perturbations import LANGUAGES

# --- model and data ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    d_model: int
    n_layers: int
    n_heads: int
    context: int  # tokens per training block = positions of the model


def build_model(spec: ModelSpec, vocab_size: int, eos: int):
    """A freshly initialised GPT-2 (``transformers.GPT2LMHeadModel``) of the given size; ``<eos>`` is the
    separator, BOS and padding token."""
    return tiny_gpt2(vocab_size, spec.context, d_model=spec.d_model, n_layers=spec.n_layers,
                     n_heads=spec.n_heads, pad_token_id=eos, bos_token_id=eos, eos_token_id=eos)


def stream_blocks(stream: np.ndarray, context: int) -> torch.Tensor:
    """Chunk the sentence stream into blocks of ``context`` tokens, dropping the last partial block (the
    authors' ``__chunk`` with 1,024 tokens). Shape (n_blocks, context)."""
    n = len(stream) // context
    if n < 1:
        raise ValueError(f"stream of {len(stream)} tokens is shorter than one block of {context}")
    return torch.from_numpy(stream[: n * context].reshape(n, context).copy())


class BlockSampler:
    """Batches of blocks in a random order that depends only on the seed and the number of blocks: each
    epoch is a fresh permutation from ``torch_generator(seed)``."""

    def __init__(self, blocks: torch.Tensor, batch_size: int, seed: int):
        self.blocks, self.batch_size = blocks, batch_size
        self.gen = torch_generator(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def __call__(self, step: int) -> torch.Tensor:
        idx = []
        while len(idx) < self.batch_size:
            if self.pos >= len(self.order):
                self.order = torch.randperm(len(self.blocks), generator=self.gen)
                self.pos = 0
            take = min(self.batch_size - len(idx), len(self.order) - self.pos)
            idx += self.order[self.pos:self.pos + take].tolist()
            self.pos += take
        return self.blocks[idx]


# --- evaluation ---------------------------------------------------------------------------------------------

def _length_batches(sequences: Sequence[Sequence[int]], batch_size: int):
    """Indices of ``sequences`` sorted by length, cut into batches (less padding, same results)."""
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def sentence_nll(model, sentences: Sequence[Sequence[int]], eos: int, batch_size: int = 256,
                 device: str = "cpu") -> dict[str, np.ndarray]:
    """Per-sentence mean next-token negative log-likelihood (nats) of ``<eos> + sentence + <eos>``, under
    three conventions (arrays of shape (n_sentences,)):

    - ``whole``: the n sentence tokens and the closing ``<eos>`` (n + 1 predictions, the first from the
      leading ``<eos>``): our statistic;
    - ``no_end``: the n sentence tokens, closing ``<eos>`` unscored;
    - ``first_unscored``: tokens 2..n (the authors' convention: GPT-2 without a BOS leaves the first token
      unscored, and no end token is scored)."""
    model.eval()
    out = {k: np.empty(len(sentences)) for k in ("whole", "no_end", "first_unscored")}
    for idx in _length_batches(sentences, batch_size):
        ids, mask = pad_left([[eos] + list(sentences[i]) + [eos] for i in idx], eos)
        lp = token_logprobs(model, ids.to(device), mask.to(device)).double()  # (B, T-1): log p(x_{t+1} | x_<=t)
        valid = (mask[:, 1:] & mask[:, :-1]).to(lp.device).bool()
        first = valid & ~torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)  # first scored token
        end = torch.zeros_like(valid)
        end[:, -1] = True  # left padding: the closing <eos> is the last position of every row
        nll = -(lp * valid).sum(1)
        n = valid.sum(1)  # n + 1 predictions per sentence
        nll_end = -(lp * end).sum(1)
        out["whole"][idx] = (nll / n).cpu().numpy()
        out["no_end"][idx] = ((nll - nll_end) / (n - 1).clamp(min=1)).cpu().numpy()
        out["first_unscored"][idx] = ((nll - nll_end + (lp * first).sum(1)) / (n - 2).clamp(min=1)).cpu().numpy()
    return out


def unigram_log_ppl(train_stream: np.ndarray, sentences: Sequence[Sequence[int]], eos: int,
                    vocab_size: int) -> float:
    """The control model that cannot see word order: token frequencies of the training stream (add-one
    smoothing over the vocabulary), scored with the same whole-sentence convention (n tokens + the closing
    ``<eos>``); ln geometric-mean perplexity over ``sentences``."""
    counts = np.bincount(np.asarray(train_stream, dtype=np.int64), minlength=vocab_size).astype(float) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.mean([-(logp[list(s)].sum() + logp[eos]) / (len(s) + 1) for s in sentences]))


def unigram_bits(train_stream: np.ndarray, token: int, vocab_size: int) -> float:
    """Surprisal (bits) of ``token`` under the unigram model of the training stream (add-one smoothing)."""
    counts = np.bincount(np.asarray(train_stream, dtype=np.int64), minlength=vocab_size).astype(float) + 1.0
    return float(-np.log2(counts[token] / counts.sum()))


def log_geometric_mean_perplexity(nll: np.ndarray) -> float:
    """ln of the geometric mean over sentences of per-sentence perplexity exp(mean token NLL): the
    paper's Fig. 2 statistic (``scipy.stats.gmean`` of per-sentence perplexities), on the log scale."""
    return float(np.mean(nll))


def first_marker_prefixes(sentences: Sequence[Sequence[int]], marker: int, eos: int):
    """For each sentence with a marker: the prefix ``<eos> + tokens before the first marker`` and the token
    that follows the marker (what comes next when the marker is removed). The paper's Experiment 2 pairs
    the marked sentence with the same sentence minus that marker; both share this prefix."""
    prefixes, following = [], []
    for s in sentences:
        s = list(s) + [eos]  # the authors append EOS, so a sentence-final marker is followed by it
        if marker not in s:
            continue
        k = s.index(marker)
        prefixes.append([eos] + s[:k])
        following.append(s[k + 1])
    return prefixes, following


@torch.no_grad()
def marker_surprisals(model, sentences: Sequence[Sequence[int]], marker: int, eos: int,
                      batch_size: int = 256, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(surprisal of the marker, surprisal of the next token with the marker removed), in bits, at the first
    marker of each sentence."""
    prefixes, following = first_marker_prefixes(sentences, marker, eos)
    lp_marker = continuation_logprobs(model, prefixes, [[marker]] * len(prefixes), eos, batch_size, device)
    lp_next = continuation_logprobs(model, prefixes, [[t] for t in following], eos, batch_size, device)
    to_bits = 1.0 / math.log(2.0)
    return (-lp_marker.double().numpy() * to_bits, -lp_next.double().numpy() * to_bits)


def evaluate(model, data: LanguageData, eos: int, device: str = "cpu") -> dict[str, float]:
    """The statistics recorded at each checkpoint: ln geometric-mean perplexity under the whole-sentence
    convention (``log_ppl``) and the two sensitivity conventions (``log_ppl_no_end``,
    ``log_ppl_first_unscored``) and, for a *Hop language, mean marker surprisal and mean surprisal
    difference (bits)."""
    nll = sentence_nll(model, data.test, eos, device=device)
    out = {"log_ppl": log_geometric_mean_perplexity(nll["whole"]),
           "log_ppl_no_end": log_geometric_mean_perplexity(nll["no_end"]),
           "log_ppl_first_unscored": log_geometric_mean_perplexity(nll["first_unscored"])}
    if data.marker is not None:
        s_marker, s_next = marker_surprisals(model, data.test, data.marker, eos, device=device)
        out["marker_surprisal"] = float(s_marker.mean())
        out["surprisal_difference"] = float((s_next - s_marker).mean())
    return out


# --- one model ----------------------------------------------------------------------------------------------

@dataclass
class RunSpec:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    eval_every: int


def train_language(data: LanguageData, spec: ModelSpec, run: RunSpec, vocab_size: int, eos: int, seed: int,
                   device: str, progress: bool = True):
    """Train one GPT-2 on ``data`` and evaluate it as initialised (step 0: the random-init control) and
    every ``run.eval_every`` steps; returns (curve records, number of parameters). Each record: step,
    training loss (not at step 0), and the :func:`evaluate` statistics where evaluated."""
    seed_everything(seed)
    model = build_model(spec, vocab_size, eos).to(device)
    init_record = {"step": 0, **evaluate(model, data, eos, device)}
    sampler = BlockSampler(stream_blocks(data.train_stream, spec.context), run.batch_size, seed)
    cfg = TrainConfig(steps=run.steps, lr=run.lr, warmup_steps=run.warmup_steps, weight_decay=run.weight_decay,
                      eval_every=run.eval_every, log_every=run.eval_every,
                      desc=f"{data.language} s{seed}", progress=progress)
    history = train(model, cfg, lambda step: sampler(step).to(device),
                    lambda m, batch: causal_lm_loss(m, batch, torch.ones_like(batch)), device,
                    eval_fn=lambda m: evaluate(m, data, eos, device))
    return [init_record] + list(history.records), num_parameters(model)


def run_grid(datasets: dict[str, LanguageData], spec: ModelSpec, run: RunSpec, vocab_size: int, eos: int,
             seeds: Sequence[int], device: str, progress: bool = True):
    """Train and evaluate every (language, seed); returns the curve table (one row per language, seed and
    checkpoint) and the number of parameters of one model."""
    import pandas as pd

    rows = []
    n_params = 0
    total, done = len(datasets) * len(seeds), 0
    for language, data in datasets.items():
        for seed in seeds:
            start = time.perf_counter()
            records, n_params = train_language(data, spec, run, vocab_size, eos, seed, device, progress)
            for rec in records:
                if "log_ppl" in rec:
                    rows.append({"language": language, "family": LANGUAGES[language].family, "seed": seed,
                                 **{k: v for k, v in rec.items() if k != "lr"}})
            done += 1
            if progress:
                final = rows[-1]
                print(f"[{done}/{total}] {language} seed={seed}: ppl {math.exp(final['log_ppl']):.2f} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
    return pd.DataFrame(rows), n_params
