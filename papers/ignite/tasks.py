"""Synthetic offline-optimization tasks with exact oracles (stand-ins for Design-Bench, Trabucco et al. 2022).

Design-Bench's protocol, which the paper follows (Sec. 5): an offline dataset of designs and scores from
which the best designs have been removed; an optimizer proposes 128 designs; the oracle scores them and
the score is normalized as ``(y - y_min) / (y_max - y_min)`` with ``y_min, y_max`` over the *full*
(unfiltered) dataset, so a normalized score above 1 beats every design the task creator had. The 100th
and 50th percentiles of the 128 normalized scores are reported.

Here the oracles are known functions (maximization, so classical minimization benchmarks are negated):

- ``ackley``     -Ackley on [-5, 5]^d,
- ``rosenbrock`` -Rosenbrock on [-2, 2]^d,
- ``rastrigin``  -Rastrigin on [-5.12, 5.12]^d,
- ``tfbind``     a TF-Bind-8-like discrete landscape: sequences of length 8 over 4 letters, score =
  position weight matrix + sparse pairwise epistasis, fixed by ``LANDSCAPE_SEED``; all 4^8 = 65,536
  sequences can be enumerated, so ``y_min``/``y_max`` are exact (as for TF-Bind-8 in Design-Bench).

A dataset for one evaluation seed: ``n_total`` designs drawn uniformly (continuous: in the box; discrete:
distinct sequences without replacement), scored by the oracle, and split at the median: the bottom half
is the offline dataset the surrogate sees, the top half is *unseen* (used only to measure sharpness on
unseen data, never for training or search).

*Shifted* variants (``<function>_s<dim>``, e.g. ``ackley_s20``): the designs are drawn from a narrow
Gaussian ``N(center, spread^2)`` per coordinate, clipped to the box, with the centre away from the optimum
(Design-Bench's data, too, come from a limited region of the design space). The box stays wide, so a
surrogate's extrapolation can lead an optimizer far outside the data, where it can over-optimise. Their
normalisation uses the same full-sample rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

TASKS = ("ackley", "rosenbrock", "rastrigin", "tfbind")
FUNCTIONS = ("ackley", "rosenbrock", "rastrigin")
# shifted-data centre and spread per function (original units; optimum at 0 for Ackley/Rastrigin, 1 for
# Rosenbrock), fixed before any run
SHIFT = {"ackley": (2.5, 0.75), "rastrigin": (2.5, 0.75), "rosenbrock": (-1.0, 0.4)}
LANDSCAPE_SEED = 20240926  # fixes the discrete landscape (the same for every evaluation seed)
TFBIND_LENGTH, TFBIND_LETTERS, TFBIND_PAIRS = 8, 4, 8


# --- oracles (x in original units, shape (..., d); returns (...,)) -----------------------------------

def ackley(x: torch.Tensor) -> torch.Tensor:
    """Negated Ackley function (a=20, b=0.2, c=2 pi); maximum 0 at the origin."""
    d = x.shape[-1]
    s1 = torch.sqrt((x**2).sum(-1) / d)
    s2 = torch.cos(2 * math.pi * x).sum(-1) / d
    return -(-20.0 * torch.exp(-0.2 * s1) - torch.exp(s2) + 20.0 + math.e)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """Negated Rosenbrock function sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2; maximum 0 at (1, ..., 1)."""
    return -(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1.0 - x[..., :-1]) ** 2).sum(-1)


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    """Negated Rastrigin function 10 d + sum_i x_i^2 - 10 cos(2 pi x_i); maximum 0 at the origin."""
    d = x.shape[-1]
    return -(10.0 * d + (x**2 - 10.0 * torch.cos(2 * math.pi * x)).sum(-1))


@dataclass(frozen=True)
class Landscape:
    """TF-Bind-8-like discrete landscape: f(s) = sum_i pwm[i, s_i] + sum_(i,j) J_ij[s_i, s_j]."""

    pwm: torch.Tensor  # (L, A)
    pairs: torch.Tensor  # (P, 2) position pairs i < j
    coupling: torch.Tensor  # (P, A, A)

    def __call__(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs: (..., L) integer letters -> (...,) scores."""
        pos = torch.arange(seqs.shape[-1])
        score = self.pwm[pos, seqs].sum(-1)
        si, sj = seqs[..., self.pairs[:, 0]], seqs[..., self.pairs[:, 1]]
        return score + self.coupling[torch.arange(len(self.pairs)), si, sj].sum(-1)


@lru_cache(maxsize=4)
def make_landscape(seed: int = LANDSCAPE_SEED, length: int = TFBIND_LENGTH, letters: int = TFBIND_LETTERS,
                   n_pairs: int = TFBIND_PAIRS) -> Landscape:
    g = torch.Generator().manual_seed(seed)
    pwm = torch.randn(length, letters, generator=g, dtype=torch.float64)
    all_pairs = torch.combinations(torch.arange(length), 2)
    pairs = all_pairs[torch.randperm(len(all_pairs), generator=g)[:n_pairs]]
    coupling = 0.75 * torch.randn(n_pairs, letters, letters, generator=g, dtype=torch.float64)
    return Landscape(pwm, pairs, coupling)


@lru_cache(maxsize=4)
def enumerate_sequences(length: int = TFBIND_LENGTH, letters: int = TFBIND_LETTERS) -> torch.Tensor:
    """All letters^length sequences, (letters^length, length), in lexicographic order (cached: do not
    modify the returned tensor)."""
    index = torch.arange(letters**length)
    place = letters ** torch.arange(length - 1, -1, -1)  # most significant position first
    return (index[:, None] // place) % letters


# --- task specification ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskSpec:
    name: str
    dim: int  # continuous: input dimension; discrete: sequence length
    low: float = 0.0
    high: float = 0.0
    letters: int = 0  # > 0 for the discrete task
    function: str = ""  # the oracle of a variant ("" = name)
    center: float | None = None  # shifted variants: the designs come from N(center, spread^2) per coordinate
    spread: float = 0.0

    @property
    def oracle_name(self) -> str:
        return self.function or self.name

    @property
    def discrete(self) -> bool:
        return self.letters > 0

    @property
    def input_dim(self) -> int:
        """Width of the surrogate's input: d, or L * A for one-hot sequences."""
        return self.dim * self.letters if self.discrete else self.dim


def task_spec(name: str, dim: int | None = None) -> TaskSpec:
    """The task by name; ``dim`` overrides the default dimension of a continuous task."""
    defaults = {"ackley": (20, -5.0, 5.0), "rosenbrock": (30, -2.0, 2.0), "rastrigin": (10, -5.12, 5.12)}
    if name == "tfbind":
        return TaskSpec("tfbind", TFBIND_LENGTH, letters=TFBIND_LETTERS)
    base, _, suffix = name.partition("_s")
    if base in FUNCTIONS and suffix.isdigit() and int(suffix) >= 2:
        _, lo, hi = defaults[base]
        center, spread = SHIFT[base]
        return TaskSpec(name, int(suffix), lo, hi, function=base, center=center, spread=spread)
    if name not in defaults:
        raise ValueError(f"unknown task {name!r}; choose from {TASKS}")
    d, lo, hi = defaults[name]
    return TaskSpec(name, dim or d, lo, hi)


def oracle(spec: TaskSpec, x: torch.Tensor) -> torch.Tensor:
    """Exact score of designs ``x`` (continuous: (..., d) float in original units, clipped to the box;
    discrete: (..., L) integer letters)."""
    if spec.discrete:
        return make_landscape()(x)
    x = x.to(torch.float64).clamp(spec.low, spec.high)
    return {"ackley": ackley, "rosenbrock": rosenbrock, "rastrigin": rastrigin}[spec.oracle_name](x)


def one_hot(seqs: torch.Tensor, letters: int) -> torch.Tensor:
    """(..., L) letters -> (..., L * A) float one-hot encoding (the surrogate's input)."""
    return torch.nn.functional.one_hot(seqs, letters).flatten(-2).to(torch.float32)


# --- datasets ----------------------------------------------------------------------------------------

@dataclass
class OfflineData:
    """One evaluation seed's data. Designs in original units (continuous) or letters (discrete).

    ``x_offline, y_offline``: the bottom half (what the surrogate and the optimizers see);
    ``x_unseen``: the top half (only for measuring sharpness on unseen inputs);
    ``y_min, y_max``: normalization constants of the full task (full sample or full enumeration).
    """

    x_offline: torch.Tensor
    y_offline: torch.Tensor
    x_unseen: torch.Tensor
    y_unseen: torch.Tensor
    y_min: float
    y_max: float


def make_dataset(spec: TaskSpec, n_total: int, seed: int) -> OfflineData:
    """Draw ``n_total`` designs, score them, keep the bottom half (ties broken by order) offline."""
    if n_total < 4 or n_total % 2:
        raise ValueError(f"n_total must be an even number >= 4; got {n_total}")
    g = torch.Generator().manual_seed(seed)
    if spec.discrete:
        space = spec.letters**spec.dim
        if n_total > space:
            raise ValueError(f"n_total={n_total} exceeds the {space} sequences of task {spec.name}")
        idx = torch.randperm(space, generator=g)[:n_total]
        x = enumerate_sequences(spec.dim, spec.letters)[idx]
        all_scores = oracle(spec, enumerate_sequences(spec.dim, spec.letters))
        y_min, y_max = float(all_scores.min()), float(all_scores.max())
    elif spec.center is not None:
        x = (spec.center + spec.spread * torch.randn(n_total, spec.dim, generator=g, dtype=torch.float64)
             ).clamp(spec.low, spec.high)
    else:
        x = spec.low + (spec.high - spec.low) * torch.rand(n_total, spec.dim, generator=g, dtype=torch.float64)
    y = oracle(spec, x)
    if not spec.discrete:
        y_min, y_max = float(y.min()), float(y.max())
    order = torch.argsort(y, stable=True)
    lo, hi = order[: n_total // 2], order[n_total // 2:]
    return OfflineData(x[lo], y[lo], x[hi], y[hi], y_min, y_max)


def normalized_score(y: torch.Tensor, data: OfflineData) -> torch.Tensor:
    """Design-Bench normalization ``(y - y_min) / (y_max - y_min)`` over the full task data."""
    return (y - data.y_min) / (data.y_max - data.y_min)
