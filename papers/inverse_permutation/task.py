"""The inverse-permutation task (Alur et al. 2025, Sec. 2) and its information ceiling.

Input X = [P; Y_P]: the permutation P as n index tokens, then the permuted string Y_P, then k content-free
scratch tokens "#". Token ``j`` of the first block is pi(j), meaning row j of P is the one-hot vector
e_{pi(j)}, so ``Y_P[j] = Y[pi(j)]``. The model must output the canonical string ``Y = P^{-1} Y_P``:
``Y[i] = Y_P[pi^{-1}(i)]``, read non-autoregressively at the LAST n positions of the sequence.

Why the causal mask makes this impossible (Theorem 1): output i is read at position n + k + i, which sees
only ``Y_P[0 .. i + k]``. Its source ``s(i) = pi^{-1}(i)`` is visible iff ``s(i) <= i + k``; otherwise Y[i]
is an i.i.d. symbol the model has never seen and no parameters do better than chance 1/|V|.

Vocabulary layout (V = ``n_symbols``): ids ``0..n-1`` index tokens, ``n..n+V-1`` symbols, ``n+V`` scratch.
Sequence length ``2n + k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TaskSpec:
    n: int  # string length (= permutation size)
    n_symbols: int  # alphabet size |V|
    k: int = 0  # number of scratch tokens appended after Y_P

    def __post_init__(self) -> None:
        if self.n < 2 or self.n_symbols < 2 or self.k < 0:
            raise ValueError(f"need n >= 2, n_symbols >= 2, k >= 0; got {self}")

    @property
    def vocab_size(self) -> int:
        return self.n + self.n_symbols + 1

    @property
    def scratch_id(self) -> int:
        return self.n + self.n_symbols

    @property
    def seq_len(self) -> int:
        return 2 * self.n + self.k

    def readout_positions(self) -> torch.Tensor:
        """Positions where the n outputs are read: the last n of the sequence."""
        return torch.arange(self.n + self.k, 2 * self.n + self.k)


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, 2n + k) input ids
    targets: torch.Tensor  # (B, n) symbol index in 0..V-1 of the canonical string Y
    source: torch.Tensor  # (B, n) s(i) = pi^{-1}(i): position in Y_P that holds Y[i]


def sample_batch(spec: TaskSpec, batch_size: int, generator: torch.Generator, device: str = "cpu") -> Batch:
    """Draw ``batch_size`` examples: uniform random permutations, i.i.d. uniform symbols."""
    n, V = spec.n, spec.n_symbols
    # argsort of uniform noise gives a uniform random permutation per row
    pi = torch.rand(batch_size, n, generator=generator, device=generator.device).argsort(dim=1)
    y = torch.randint(0, V, (batch_size, n), generator=generator, device=generator.device)
    y_p = torch.gather(y, 1, pi)  # Y_P[j] = Y[pi(j)]
    source = pi.argsort(dim=1)  # pi^{-1}
    parts = [pi, y_p + n]
    if spec.k:
        parts.append(torch.full((batch_size, spec.k), spec.scratch_id, dtype=pi.dtype, device=pi.device))
    tokens = torch.cat(parts, dim=1)
    return Batch(tokens.to(device), y.to(device), source.to(device))


def accessible(source: torch.Tensor, k: int) -> torch.Tensor:
    """(B, n) bool: output i can see its source under a causal mask, i.e. ``s(i) <= i + k``."""
    i = torch.arange(source.shape[1], device=source.device)
    return source <= i + k


def visible_fraction(n: int, k: int) -> float:
    """Exact expected fraction of outputs whose source is visible under a causal mask, for a uniform
    random permutation: ``c(k) = (1/n) * sum_i P(s(i) <= i + k) = (1/n^2) * sum_i min(i + k + 1, n)``.
    (s(i) is uniform on 0..n-1 for every i.)"""
    return sum(min(i + k + 1, n) for i in range(n)) / n**2


def accuracy_ceiling(n: int, k: int, n_symbols: int) -> float:
    """Best achievable expected per-row accuracy of a causal model with k scratch tokens: visible rows
    right, the rest guessed at chance ``1/|V|`` (an unseen symbol is independent of everything seen)."""
    c = visible_fraction(n, k)
    return c + (1.0 - c) / n_symbols


def visible_fraction_enumerated(n: int, k: int) -> float:
    """The same ceiling by brute-force enumeration of all n! permutations (a check on the formula)."""
    from itertools import permutations

    total = 0
    count = 0
    for pi in permutations(range(n)):
        inv = np.argsort(pi)
        total += sum(inv[i] <= i + k for i in range(n))
        count += n
    return total / count
