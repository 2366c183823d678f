"""Boolean function classes, their prompt samplers and the classical in-context learners
(Bhattamishra et al., ICLR 2024, Sec. 2-4; samplers follow the authors' ``src/bool_tasks.py``).

A prompt is ``(x_1, y_1, ..., x_N, y_N)`` with ``x_t in {-1, +1}^n`` and ``y_t = f(x_t) in {-1, +1}`` for one
function ``f`` drawn from the class; a learner predicts ``y_t`` from ``x_1, y_1, ..., x_{t-1}, y_{t-1}, x_t``.
All samplers are vectorised numpy, deterministic given a ``numpy.random.Generator``.

Classes (the authors' exact rules, re-implemented):

- ``conjunction``: ``w in {0, +1, -1}^n`` i.i.d. with P = (0.7, 0.15, 0.15) (the authors' LLM evaluation,
  ``src/bool_tasks_openai.py``, uses P = (0.5, 0.25, 0.25) for n <= 7: ``literal_probs``); ``k_w = ||w||_1 - 1``;
  ``y = sign(<x, w> - k_w)`` (+1 iff every literal of ``w`` holds). Inputs are uniform, except that each
  point independently with probability 0.3 is overwritten on ``supp(w)`` to satisfy the conjunction, so
  that labels are not almost all negative.
- ``sparse_parity``: a uniformly random set ``S`` of ``k = 2`` distinct coordinates;
  ``y = +1`` iff an odd number of ``x_i, i in S`` equal +1. Inputs uniform.
- ``teach_conjunction``: monotone conjunction, ``w in {0, 1}^n`` with P(1) = 0.3, ``k_w = ||w||_1 - 1``;
  each point with probability 0.4 is forced positive; then the first ``|w| + 1`` points are replaced by
  the teaching sequence: ``x = 2w - 1`` (positive), followed, for each relevant coordinate ``i`` in
  increasing order, by the same point with ``x_i = -1`` (negative). These ``|w| + 1`` examples identify
  ``w`` uniquely within monotone conjunctions (Sec. 4).
- ``mono_conjunction``: the control for the teaching experiment (our addition): exactly the
  ``teach_conjunction`` prompts without the teaching prefix (same functions, same input distribution).
- ``sparse_conjunction`` (our addition, the gate of the sparse-parity claim): the AND of a uniformly random
  set ``S`` of 2 coordinates (the same 28 supports as ``sparse_parity`` at n = 8, drawn the same way), so a
  class of the same size; each point with probability 0.3 is forced to satisfy it (the conjunction rule),
  which balances the labels (P(y = +1) = 0.3 + 0.7 / 4).
- ``literal`` (our addition, the gate of the LLM claim): a single literal, ``y = x_i`` or ``y = -x_i`` for a
  uniformly random coordinate and sign (2n functions); inputs uniform, labels balanced. The easiest
  non-constant class: a learner that learns anything in context learns this.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

TASKS = ("conjunction", "sparse_parity", "teach_conjunction", "mono_conjunction", "sparse_conjunction", "literal")
MONOTONE_TASKS = ("teach_conjunction", "mono_conjunction")
SPARSE_PARITY_K = 2
CONJUNCTION_LITERAL_PROBS = (0.7, 0.15, 0.15)  # P(w_i = 0), P(w_i = +1), P(w_i = -1)
LLM_LITERAL_PROBS = (0.5, 0.25, 0.25)  # the authors' conjunction sampler for the LLM prompts (n <= 7)


@dataclass
class Prompts:
    xs: np.ndarray  # (B, N, n) float32 in {-1, +1}
    ys: np.ndarray  # (B, N) float32 in {-1, +1}
    w: np.ndarray  # (B, n) float32: conjunction weights in {0, +-1}, or the parity's indicator of S
    teach_len: np.ndarray  # (B,) int: length of the teaching prefix (0 when there is none)


def conjunction_labels(xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sign(<x, w> - (||w||_1 - 1))``; never zero because ``<x, w> - ||w||_1`` is even."""
    kw = np.abs(w).sum(-1) - 1  # (B,)
    return np.sign(np.einsum("btn,bn->bt", xs, w) - kw[:, None]).astype(np.float32)


def parity_labels(xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """+1 iff the number of coordinates in S (``w_i = 1``) with ``x_i = +1`` is odd, else -1."""
    ones = np.einsum("btn,bn->bt", (xs + 1) / 2, w).round().astype(np.int64)
    return ((ones % 2) * 2 - 1).astype(np.float32)


def _uniform_inputs(rng: np.random.Generator, b: int, n_points: int, n_dims: int) -> np.ndarray:
    return (rng.integers(0, 2, size=(b, n_points, n_dims)) * 2 - 1).astype(np.float32)


def _force_satisfying(rng: np.random.Generator, xs: np.ndarray, w: np.ndarray, p: float) -> np.ndarray:
    """With probability ``p`` per point, set the literals of ``w`` true (x_i = w_i on supp(w))."""
    force = rng.random(xs.shape[:2]) < p  # (B, N)
    relevant = force[:, :, None] & (w[:, None, :] != 0)  # (B, N, n)
    return np.where(relevant, w[:, None, :], xs).astype(np.float32)


def teaching_sequence(w: np.ndarray) -> np.ndarray:
    """The teaching sequence of a monotone conjunction ``w in {0, 1}^n``: (|w| + 1, n) points.

    Row 0 is ``2w - 1`` (every relevant variable on, every other off: positive); row j >= 1 is row 0 with
    the j-th relevant variable switched off (negative)."""
    base = 2 * w - 1
    rel = np.flatnonzero(w)
    seq = np.repeat(base[None, :], len(rel) + 1, axis=0)
    seq[np.arange(1, len(rel) + 1), rel] = -1
    return seq.astype(np.float32)


def sample_prompts(task: str, batch: int, n_points: int, n_dims: int, rng: np.random.Generator,
                   literal_probs: tuple[float, float, float] = CONJUNCTION_LITERAL_PROBS) -> Prompts:
    """Draw ``batch`` prompts of ``n_points`` labelled points from a fresh function each.

    ``literal_probs`` (conjunction only): P(w_i = 0), P(w_i = +1), P(w_i = -1)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if task != "conjunction" and tuple(literal_probs) != CONJUNCTION_LITERAL_PROBS:
        raise ValueError(f"literal_probs applies to conjunction prompts only, not {task!r}")
    if len(literal_probs) != 3 or min(literal_probs) < 0 or abs(sum(literal_probs) - 1) > 1e-9:
        raise ValueError(f"literal_probs must be 3 probabilities summing to 1; got {literal_probs}")
    teach_len = np.zeros(batch, dtype=np.int64)
    if task == "conjunction":
        w = rng.choice(np.array([0.0, 1.0, -1.0], dtype=np.float32), size=(batch, n_dims), p=list(literal_probs))
        xs = _force_satisfying(rng, _uniform_inputs(rng, batch, n_points, n_dims), w, 0.3)
        return Prompts(xs, conjunction_labels(xs, w), w, teach_len)
    if task in ("sparse_parity", "sparse_conjunction"):
        if n_dims < SPARSE_PARITY_K:
            raise ValueError(f"{task} needs n_dims >= {SPARSE_PARITY_K}")
        # k distinct coordinates per prompt: the first k of a random permutation
        idx = np.argsort(rng.random((batch, n_dims)), axis=1)[:, :SPARSE_PARITY_K]
        w = np.zeros((batch, n_dims), dtype=np.float32)
        np.put_along_axis(w, idx, 1.0, axis=1)
        xs = _uniform_inputs(rng, batch, n_points, n_dims)
        if task == "sparse_parity":
            return Prompts(xs, parity_labels(xs, w), w, teach_len)
        xs = _force_satisfying(rng, xs, w, 0.3)
        return Prompts(xs, conjunction_labels(xs, w), w, teach_len)
    if task == "literal":
        w = np.zeros((batch, n_dims), dtype=np.float32)
        w[np.arange(batch), rng.integers(0, n_dims, size=batch)] = rng.choice(np.array([1.0, -1.0], np.float32),
                                                                              size=batch)
        xs = _uniform_inputs(rng, batch, n_points, n_dims)
        return Prompts(xs, conjunction_labels(xs, w), w, teach_len)
    # monotone conjunctions, with (teach_conjunction) or without (mono_conjunction) the teaching prefix
    if n_points < n_dims + 2:
        raise ValueError(f"{task} needs n_points >= n_dims + 2 (a teaching sequence and one query after it)")
    w = (rng.random((batch, n_dims)) < 0.3).astype(np.float32)
    xs = _force_satisfying(rng, _uniform_inputs(rng, batch, n_points, n_dims), w, 0.4)
    if task == "teach_conjunction":
        for b in range(batch):
            seq = teaching_sequence(w[b])
            xs[b, : len(seq)] = seq
            teach_len[b] = len(seq)
    return Prompts(xs, conjunction_labels(xs, w), w, teach_len)


def first_query_after_teaching(w: np.ndarray) -> np.ndarray:
    """(B,) 0-based index of the first query after the teaching sequence of monotone ``w``: the sequence
    occupies indices 0..|w|, so this is |w| + 1."""
    return (w != 0).sum(-1).astype(np.int64) + 1


# --- classical learners: (B, N, n), (B, N) -> (B, N) predictions in {-1, +1} ------------------------------
# Every learner predicts y_t from the t earlier labelled points only; with no information it predicts -1.

def elimination_predictions(xs: np.ndarray, ys: np.ndarray, monotone: bool = False) -> np.ndarray:
    """The elimination algorithm (Valiant 1984), the paper's optimal PAC learner for conjunctions.

    Start from the conjunction of all 2n literals (x_i and not-x_i; only the n positive ones when
    ``monotone``); predict +1 iff every remaining literal holds on x_t; after a positive example drop
    every literal it falsifies. Negative examples are ignored. Its hypothesis is always the most
    specific conjunction consistent with the data, so it only errs on positives."""
    B, N, n = xs.shape
    pos = np.ones((B, n), dtype=bool)  # literal x_i still in the hypothesis
    neg = np.full((B, n), not monotone)  # literal not-x_i still in the hypothesis
    preds = np.empty((B, N), dtype=np.float32)
    for t in range(N):
        x = xs[:, t]
        holds = np.all((~pos | (x > 0)) & (~neg | (x < 0)), axis=1)
        preds[:, t] = np.where(holds, 1.0, -1.0)
        positive = ys[:, t] > 0
        pos &= ~positive[:, None] | (x > 0)
        neg &= ~positive[:, None] | (x < 0)
    return preds


def gf2_elimination_predictions(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Gaussian elimination over GF(2): the paper's learner for parities (O(n) examples).

    With b = (x + 1)/2 and c = (y + 1)/2, a parity on S satisfies <b, 1_S> = c (mod 2). The learner keeps
    a reduced basis of the bits seen so far with their label bits; if b_t is in their span its label is
    determined (the XOR of the labels of the combination), otherwise the examples do not determine it and
    it predicts -1 (both labels are consistent with some parity then)."""
    B, N, n = xs.shape
    if n > 62:
        raise ValueError("gf2 elimination packs inputs into 64-bit integers: n_dims <= 62")
    weights = 1 << np.arange(n, dtype=np.int64)
    codes = ((xs > 0).astype(np.int64) * weights).sum(-1)  # (B, N) bit masks
    labels = (ys > 0).astype(np.int64)
    preds = np.empty((B, N), dtype=np.float32)
    for b in range(B):
        basis: dict[int, tuple[int, int]] = {}  # leading bit -> (vector, label bit)
        for t in range(N):
            v, lab = int(codes[b, t]), 0
            while v:
                top = v.bit_length() - 1
                if top not in basis:
                    break
                bv, bl = basis[top]
                v, lab = v ^ bv, lab ^ bl
            preds[b, t] = (2.0 * lab - 1.0) if v == 0 else -1.0
            if v:
                basis[v.bit_length() - 1] = (v, lab ^ int(labels[b, t]))
    return preds


def sparse_parity_bayes_predictions(xs: np.ndarray, ys: np.ndarray, k: int = SPARSE_PARITY_K) -> np.ndarray:
    """The Bayes-optimal learner for k-sparse parities under the uniform prior on S: majority vote of
    the parities on every k-subset consistent with the examples so far (ties -> -1). Not in the paper;
    shows how few examples the class needs when the learner knows it is k-sparse (~log2 C(n, k))."""
    B, N, n = xs.shape
    subsets = np.array(list(combinations(range(n), k)))  # (C, k)
    on = (xs > 0)[:, :, subsets].sum(-1)  # (B, N, C) how many of S are +1
    cand = np.where(on % 2 == 1, 1.0, -1.0)  # (B, N, C) each candidate's label
    agree = cand == ys[:, :, None]
    # consistent before t: all agreements at positions < t
    consistent = np.concatenate([np.ones((B, 1, len(subsets)), bool),
                                 np.cumprod(agree, axis=1)[:, :-1].astype(bool)], axis=1)
    vote = (cand * consistent).sum(-1)
    return np.where(vote > 0, 1.0, -1.0).astype(np.float32)


def nearest_neighbour_predictions(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """1-nearest neighbour in Hamming distance over the earlier points (ties to the earliest)."""
    B, N, n = xs.shape
    sim = np.einsum("bsn,btn->bts", xs, xs)  # (B, N, N): n - 2 * Hamming distance
    earlier = np.tril(np.ones((N, N), dtype=bool), k=-1)
    sim = np.where(earlier[None], sim, -np.inf)
    nearest = sim.argmax(-1)  # first maximum = earliest tied neighbour
    preds = np.take_along_axis(ys, nearest, axis=1).astype(np.float32)
    preds[:, 0] = -1.0
    return preds


def null_predictions(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Always -1 (the authors' null classifier)."""
    return -np.ones(ys.shape, dtype=np.float32)


LEARNERS = {
    "elimination": lambda xs, ys: elimination_predictions(xs, ys, monotone=False),
    "elimination_monotone": lambda xs, ys: elimination_predictions(xs, ys, monotone=True),
    "gf2_elimination": gf2_elimination_predictions,
    "sparse_parity_bayes": sparse_parity_bayes_predictions,
    "nearest_neighbour": nearest_neighbour_predictions,
    "null": null_predictions,
}

# The reference ("optimal") learner of each class, as in the paper, and the baselines run on every task.
OPTIMAL_LEARNER = {
    "conjunction": "elimination",
    "sparse_parity": "gf2_elimination",
    "teach_conjunction": "elimination_monotone",
    "mono_conjunction": "elimination_monotone",
    "sparse_conjunction": "elimination_monotone",
    "literal": "elimination",
}
EXTRA_LEARNERS = {"sparse_parity": ["sparse_parity_bayes"]}


def learners_for(task: str) -> list[str]:
    return [OPTIMAL_LEARNER[task], *EXTRA_LEARNERS.get(task, []), "nearest_neighbour", "null"]


def accuracy_by_position(preds: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(N,) fraction of prompts whose label at each position is predicted correctly (sign accuracy)."""
    return (np.sign(preds) == ys).mean(axis=0)


def examples_to_reach(curve: np.ndarray, threshold: float) -> int:
    """Number of labelled points up to and including the first query from which the accuracy curve stays
    >= ``threshold`` to the end of the prompt (1-based); ``len(curve) + 1`` if it never settles there."""
    below = np.flatnonzero(np.asarray(curve) < threshold)
    if below.size == 0:
        return 1
    last = int(below[-1])
    return last + 2 if last + 1 < len(curve) else len(curve) + 1
