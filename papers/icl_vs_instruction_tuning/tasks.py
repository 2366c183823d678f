"""The synthetic task universe, its vocabulary and the three prompt formats (pretraining, instruction, ICL).

A *task* maps a length-``L`` sequence over ``n_symbols`` symbols to another length-``L`` sequence (a
token-sequence transformation: copy, reverse, sort, Caesar shift, lookup table, ...). The stand-in for the
paper's web-scale pretraining corpus is a stream of *episodes* (``x1 -> y1 ; x2 -> y2 ; ...``, all pairs
from one task) whose task is drawn from a per-model Zipf prior over the whole universe; a fraction of the
episodes carry the task's *name* token first (the analogue of text that names the task it demonstrates,
which is what makes a zero-shot instruction meaningful at all). Instruction tuning (the paper's FLAN-style
mixture, Sec. 3) uses a different, new format, ``INST name x -> y EOS`` (INST in place of BOS), on the training tasks only;
held-out tasks are never seen in that format.

Vocabulary (ids): PAD 0, BOS 1, ARROW 2, SEP 3, EOS 4, INST 5, then one name token per task, then the
symbols. Shapes: sequences are (B, T) long tensors; every prompt of one format has the same length, so
evaluation needs no padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

PAD, BOS, ARROW, SEP, EOS, INST = 0, 1, 2, 3, 4, 5
N_SPECIAL = 6


def _lookup_table(n_symbols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_symbols)


def task_functions(n_symbols: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The task universe: name -> f, with f mapping an (N, L) int array of symbols to (N, L).

    Every function is defined for any L >= 2 and keeps the length; all are deterministic.
    """
    V = n_symbols
    table_a, table_b = _lookup_table(V, 11), _lookup_table(V, 12)

    def rot(x, k):
        return np.roll(x, -k, axis=1)

    def swap_pairs(x):
        y = x.copy()
        n = (x.shape[1] // 2) * 2
        y[:, 0:n:2], y[:, 1:n:2] = x[:, 1:n:2], x[:, 0:n:2]
        return y

    def half_doubled(x, first):
        h = (x.shape[1] + 1) // 2
        part = x[:, :h] if first else x[:, x.shape[1] - h:]
        return np.concatenate([part, part], axis=1)[:, : x.shape[1]]

    def mirror(x):
        h = (x.shape[1] + 1) // 2
        return np.concatenate([x[:, :h], x[:, :h][:, ::-1]], axis=1)[:, : x.shape[1]]

    idx = lambda x: np.arange(x.shape[1])[None, :]  # noqa: E731
    return {
        "copy": lambda x: x.copy(),
        "reverse": lambda x: x[:, ::-1].copy(),
        "shift1": lambda x: (x + 1) % V,
        "shift3": lambda x: (x + 3) % V,
        "sort_asc": lambda x: np.sort(x, axis=1),
        "sort_desc": lambda x: np.sort(x, axis=1)[:, ::-1].copy(),
        "rotate_left": lambda x: rot(x, 1),
        "rotate_right": lambda x: rot(x, -1),
        "swap_pairs": swap_pairs,
        "negate": lambda x: (V - 1 - x),
        "repeat_first": lambda x: np.repeat(x[:, :1], x.shape[1], axis=1),
        "repeat_last": lambda x: np.repeat(x[:, -1:], x.shape[1], axis=1),
        "lookup_a": lambda x: table_a[x],
        "lookup_b": lambda x: table_b[x],
        "reverse_shift1": lambda x: (x[:, ::-1] + 1) % V,
        "min_repeat": lambda x: np.repeat(x.min(axis=1, keepdims=True), x.shape[1], axis=1),
        "max_repeat": lambda x: np.repeat(x.max(axis=1, keepdims=True), x.shape[1], axis=1),
        "first_half_twice": lambda x: half_doubled(x, True),
        "second_half_twice": lambda x: half_doubled(x, False),
        "mirror": mirror,
        "add_position": lambda x: (x + idx(x)) % V,
        "cumsum": lambda x: np.cumsum(x, axis=1) % V,
        "diff": lambda x: np.concatenate([x[:, :1], (x[:, 1:] - x[:, :-1]) % V], axis=1),
        "lookup_a_reverse": lambda x: table_a[x[:, ::-1]],
    }


@dataclass(frozen=True)
class Universe:
    """The task universe, its split and its vocabulary.

    ``it_tasks``: the instruction-tuning (training) tasks; ``heldout_tasks``: never instruction-tuned,
    evaluated zero-shot after tuning. The split is fixed by ``split_seed`` (the same for every model).
    """

    n_symbols: int = 12
    seq_len: int = 4
    n_tasks: int = 24
    n_it_tasks: int = 12
    split_seed: int = 0

    @property
    def names(self) -> list[str]:
        names = list(task_functions(self.n_symbols))
        if not 2 <= self.n_tasks <= len(names):
            raise ValueError(f"n_tasks must be in [2, {len(names)}]; got {self.n_tasks}")
        return names[: self.n_tasks]

    @property
    def it_tasks(self) -> list[str]:
        order = np.random.default_rng(self.split_seed).permutation(self.n_tasks)
        return [self.names[i] for i in sorted(order[: self.n_it_tasks])]

    @property
    def heldout_tasks(self) -> list[str]:
        it = set(self.it_tasks)
        return [n for n in self.names if n not in it]

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_tasks + self.n_symbols

    def name_id(self, task: str) -> int:
        return N_SPECIAL + self.names.index(task)

    @property
    def symbol_offset(self) -> int:
        return N_SPECIAL + self.n_tasks

    def apply(self, task: str, x: np.ndarray) -> np.ndarray:
        return task_functions(self.n_symbols)[task](x)


def zipf_prior(n_tasks: int, exponent: float, seed: int) -> np.ndarray:
    """Pretraining task frequencies of one model: p(rank r) ~ r^-exponent, ranks assigned to the tasks by a
    random permutation drawn from ``seed`` (each independently pretrained model has its own mixture)."""
    w = np.arange(1, n_tasks + 1, dtype=float) ** -exponent
    p = np.empty(n_tasks)
    p[np.random.default_rng(seed).permutation(n_tasks)] = w / w.sum()
    return p


def _pairs(u: Universe, task_ids: np.ndarray, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs x (B, n_pairs, L) and the task outputs y (B, n_pairs, L), as symbol indices."""
    B = len(task_ids)
    x = rng.integers(0, u.n_symbols, size=(B, n_pairs, u.seq_len))
    y = np.empty_like(x)
    fns = task_functions(u.n_symbols)
    for t in np.unique(task_ids):
        rows = task_ids == t
        y[rows] = fns[u.names[t]](x[rows].reshape(-1, u.seq_len)).reshape(-1, n_pairs, u.seq_len)
    return x, y


def _pair_block(u: Universe, x: np.ndarray, y: np.ndarray, final_sep: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``x ARROW y SEP`` per pair, concatenated: (B, n_pairs * (2L + 2)) and the mask of y tokens."""
    B, P, L = x.shape
    off = u.symbol_offset
    block = np.concatenate([x + off, np.full((B, P, 1), ARROW), y + off, np.full((B, P, 1), SEP)], axis=2)
    is_y = np.zeros_like(block, dtype=bool)
    is_y[:, :, L + 1: 2 * L + 1] = True
    block, is_y = block.reshape(B, -1), is_y.reshape(B, -1)
    if not final_sep:
        block, is_y = block[:, :-1], is_y[:, :-1]
    return block, is_y


def pretraining_batch(u: Universe, prior: np.ndarray, batch_size: int, n_pairs: int, named_fraction: float,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pretraining episodes ``BOS [name] x1 ARROW y1 SEP ... xP ARROW yP``.

    Returns input_ids (B, T), attention_mask (B, T) and loss_mask (B, T) marking the output tokens y (the
    loss is on the tokens that carry the task; the random inputs are unpredictable by construction).
    Unnamed episodes are right-padded by one token so that every row has the same length T = 2 + P(2L+2) - 1.
    """
    task_ids = rng.choice(len(prior), size=batch_size, p=prior)
    named = rng.random(batch_size) < named_fraction
    x, y = _pairs(u, task_ids, n_pairs, rng)
    block, is_y = _pair_block(u, x, y, final_sep=False)
    B, W = block.shape
    ids = np.full((B, W + 2), PAD)
    loss = np.zeros((B, W + 2), dtype=bool)
    att = np.zeros((B, W + 2), dtype=np.int64)
    ids[:, 0] = BOS
    ids[named, 1] = N_SPECIAL + task_ids[named]
    ids[named, 2:] = block[named]
    loss[named, 2:] = is_y[named]
    att[named] = 1
    ids[~named, 1:W + 1] = block[~named]
    loss[~named, 1:W + 1] = is_y[~named]
    att[~named, : W + 1] = 1
    return torch.from_numpy(ids), torch.from_numpy(att), torch.from_numpy(loss)


def instruction_batch(u: Universe, tasks: list[str], batch_size: int,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Instruction-tuning examples ``INST name x ARROW y EOS`` (tasks uniform over ``tasks``). INST takes the
    place of BOS, so the name and the input sit at the positions they have in a named pretraining episode
    (the models have learned absolute positions; a shifted layout would confound format with position).

    Returns input_ids (B, 2L + 4) and loss_mask (B, 2L + 4) marking y and EOS (the response)."""
    task_ids = np.array([u.names.index(t) for t in tasks])[rng.integers(0, len(tasks), size=batch_size)]
    ids, loss = instruction_prompts(u, task_ids, rng)
    return torch.from_numpy(ids), torch.from_numpy(loss)


def instruction_prompts(u: Universe, task_ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pairs(u, task_ids, 1, rng)
    off, L, B = u.symbol_offset, u.seq_len, len(task_ids)
    ids = np.concatenate([np.full((B, 1), INST), (N_SPECIAL + task_ids)[:, None],
                          x[:, 0] + off, np.full((B, 1), ARROW), y[:, 0] + off, np.full((B, 1), EOS)], axis=1)
    loss = np.zeros_like(ids, dtype=bool)
    loss[:, 3 + L:] = True
    return ids, loss


@dataclass
class EvalSet:
    """Prompts and gold answers of one (task, format): input_ids (N, T) end with ``ARROW`` followed by the
    L gold output tokens, so exact match under greedy decoding is read off one teacher-forced pass."""

    input_ids: torch.Tensor
    n_answer: int


def eval_set(u: Universe, task: str, fmt: str, n: int, k_shots: int, seed: int) -> EvalSet:
    """``n`` prompts of ``task`` in format ``fmt``:

    - ``icl``: ``BOS x1 ARROW y1 SEP ... xk ARROW yk SEP xq ARROW yq`` (the paper's base model with gold
      in-context examples, no task name);
    - ``instruction``: ``INST name xq ARROW yq`` (zero-shot, the instruction-tuned format; FLAN Direct);
    - ``named``: ``BOS name xq ARROW yq`` (zero-shot in the pretraining format, a reference).

    The query inputs depend only on (task, seed, n), not on the format, so the conditions see the same
    queries; demonstrations are fresh random inputs.
    """
    t = u.names.index(task)
    rng_q = np.random.default_rng([seed, t, 1])
    xq = rng_q.integers(0, u.n_symbols, size=(n, 1, u.seq_len))
    yq = u.apply(task, xq[:, 0])[:, None]
    off = u.symbol_offset
    query = np.concatenate([xq[:, 0] + off, np.full((n, 1), ARROW), yq[:, 0] + off], axis=1)
    if fmt == "icl":
        rng_d = np.random.default_rng([seed, t, 2])
        xd, yd = _pairs(u, np.full(n, t), k_shots, rng_d)
        block, _ = _pair_block(u, xd, yd, final_sep=True)
        ids = np.concatenate([np.full((n, 1), BOS), block, query], axis=1)
    elif fmt == "instruction":
        ids = np.concatenate([np.full((n, 1), INST), np.full((n, 1), N_SPECIAL + t), query], axis=1)
    elif fmt == "named":
        ids = np.concatenate([np.full((n, 1), BOS), np.full((n, 1), N_SPECIAL + t), query], axis=1)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return EvalSet(torch.from_numpy(ids.astype(np.int64)), u.seq_len)
