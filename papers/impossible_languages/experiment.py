"""Training and evaluation of one GPT-2 per (language, seed), and the pre-registered claims.

The paper (Sec. 3-4) trains GPT-2 small from scratch on each impossible language (3,000 steps of 512 x 1,024
tokens, learning rate warmed up to 6e-4), evaluates the geometric-mean perplexity of 10K held-out sentences
of the same language at checkpoints through training (Experiment 1), and for the *Hop languages the
surprisal of the agreement marker (Experiment 2). Here: a tiny ``transformers`` GPT-2
(:func:`shared.lm.tiny_gpt2`), trained with :func:`shared.training.train` on blocks of the language's
sentence stream, evaluated with :mod:`shared.lm`.

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
from shared.metrics import Claim
from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, train

from .corpus import LanguageData
from .perturbations import LANGUAGES

# --- pre-registered claims (written before the first `small` run; see README.md) ----------------------------

CLAIMS = {
    "shuffle_control_easiest": dict(
        statement="A GPT-2 trained on English (NoShuffle) reaches lower held-out perplexity than one trained on "
                  "each impossible *Shuffle language (Experiment 1, Fig. 2 left).",
        criterion="Final checkpoint, per seed: gap = ln(geometric-mean perplexity of the impossible language) - "
                  "ln(that of NoShuffle), each on its own language's held-out sentences; 95% Student t interval "
                  "over seeds. Reproduced if for every impossible *Shuffle language in the profile the interval "
                  "lies above 0; not_reproduced if for any of them it lies below 0; otherwise inconclusive. "
                  "Reported value: the smallest mean gap.",
        paper_value="NoShuffle has the lowest perplexity of the *Shuffle languages at every checkpoint (Fig. 2)",
    ),
    "nondeterministic_shuffle_hardest": dict(
        statement="NondeterministicShuffle (a fresh random word order per sentence) is the hardest *Shuffle "
                  "language: its perplexity is above that of every other *Shuffle language (Fig. 2 left, the "
                  "'inherently impossible' end of the continuum).",
        criterion="Final checkpoint, per seed: gap = ln ppl(NondeterministicShuffle) - ln ppl(L) for every other "
                  "*Shuffle language L in the profile (NoShuffle included); 95% t interval over seeds. "
                  "Reproduced if every interval lies above 0; not_reproduced if any lies below 0; otherwise "
                  "inconclusive. Reported value: the smallest mean gap.",
        paper_value="NondeterministicShuffle has the highest perplexity throughout training (Fig. 2)",
    ),
    "reverse_control_easiest": dict(
        statement="NoReverse (English with a marker token at a random position) reaches lower held-out "
                  "perplexity than PartialReverse and FullReverse (Experiment 1, Fig. 2 middle).",
        criterion="Final checkpoint, per seed: gap = ln ppl(L) - ln ppl(NoReverse) for L in {PartialReverse, "
                  "FullReverse} present in the profile; 95% t interval over seeds. Reproduced if every interval "
                  "lies above 0; not_reproduced if any lies below 0; otherwise inconclusive.",
        paper_value="NoReverse has the lowest perplexity of the *Reverse languages (Fig. 2)",
    ),
    "nohop_marker_learned_best": dict(
        statement="The agreement marker placed right after the verb (NoHop) is predicted better than the "
                  "count-based placements 4 tokens (TokenHop) or 4 words (WordHop) later (Experiment 2, Fig. 3): "
                  "a larger surprisal difference between the ungrammatical (marker removed) and grammatical "
                  "continuation at the marker position.",
        criterion="Final checkpoint, per seed: surprisal difference D = mean over affected held-out sentences of "
                  "[-log2 p(next token without the marker) + log2 p(marker)] at the first marker; gap = "
                  "D(NoHop) - D(L) for L in {TokenHop, WordHop}; 95% t interval over seeds. Reproduced if both "
                  "intervals lie above 0; not_reproduced if either lies below 0; otherwise inconclusive.",
        paper_value="NoHop has the largest surprisal difference (and lowest marker surprisal) throughout "
                    "training; TokenHop and WordHop lower (Fig. 3)",
    ),
    "hop_markers_learned": dict(
        statement="All three *Hop models learn to expect the marker where their rule places it, the count-based "
                  "ones included (Fig. 3: positive surprisal differences for TokenHop and WordHop).",
        criterion="Final checkpoint: the surprisal difference D (bits) of each *Hop language, 95% t interval over "
                  "seeds. Reproduced if every language's interval lies above 0; not_reproduced if any lies "
                  "below 0; otherwise inconclusive. Reported value: the smallest mean D.",
        paper_value="surprisal differences well above 0 for NoHop, TokenHop and WordHop by the end of training "
                    "(Fig. 3)",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


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
                 device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Per-sentence mean next-token negative log-likelihood (nats), two ways. Each sentence is scored as
    ``<eos> + sentence``; the first array averages over every token of the sentence (the first predicted
    from the separator it follows in training: our statistic), the second over every token but the first
    (the authors' convention: GPT-2 without a BOS leaves the first token unscored). Shapes (n_sentences,)."""
    model.eval()
    every, after_first = np.empty(len(sentences)), np.empty(len(sentences))
    for idx in _length_batches(sentences, batch_size):
        ids, mask = pad_left([[eos] + list(sentences[i]) for i in idx], eos)
        lp = token_logprobs(model, ids.to(device), mask.to(device)).double()  # (B, T-1): log p(x_{t+1} | x_<=t)
        valid = (mask[:, 1:] & mask[:, :-1]).to(lp.device).bool()
        first = valid & ~torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)  # first scored token
        nll = -(lp * valid).sum(1)
        n = valid.sum(1)
        every[idx] = (nll / n).cpu().numpy()
        after_first[idx] = ((nll + (lp * first).sum(1)) / (n - 1).clamp(min=1)).cpu().numpy()
    return every, after_first


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
    """The statistics recorded at each checkpoint: ln geometric-mean perplexity (``log_ppl``; and
    ``log_ppl_first_unscored``, the authors' scoring, as a sensitivity check) and, for a *Hop language,
    mean marker surprisal and mean surprisal difference (bits)."""
    every, after_first = sentence_nll(model, data.test, eos, device=device)
    out = {"log_ppl": log_geometric_mean_perplexity(every),
           "log_ppl_first_unscored": log_geometric_mean_perplexity(after_first)}
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
    """Train one GPT-2 on ``data`` and evaluate it every ``run.eval_every`` steps; returns (curve records,
    number of parameters). Each record: step, training loss, and the :func:`evaluate` statistics where
    evaluated."""
    seed_everything(seed)
    model = build_model(spec, vocab_size, eos).to(device)
    sampler = BlockSampler(stream_blocks(data.train_stream, spec.context), run.batch_size, seed)
    cfg = TrainConfig(steps=run.steps, lr=run.lr, warmup_steps=run.warmup_steps, weight_decay=run.weight_decay,
                      eval_every=run.eval_every, log_every=run.eval_every,
                      desc=f"{data.language} s{seed}", progress=progress)
    history = train(model, cfg, lambda step: sampler(step).to(device),
                    lambda m, batch: causal_lm_loss(m, batch, torch.ones_like(batch)), device,
                    eval_fn=lambda m: evaluate(m, data, eos, device))
    return history.records, num_parameters(model)


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
