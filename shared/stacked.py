"""Many independent small networks trained as one: parameters carry a leading member axis.

Simulation papers train the same small MLP for every (seed, arm) cell. Stacking the members and applying
them with batched matmuls turns hundreds of tiny training runs into one call of ``shared.training.train``
(the loss is the sum of the members' losses; Adam's update is per element, so each member evolves exactly
as it would alone, which the papers test). Each member is initialised from its own ``torch.Generator``, so
a member's initial weights do not depend on which other members share the stack.

Caveat: global gradient clipping couples the members (their norms are pooled); train stacks with
``grad_clip=None``.

Shapes: a stack of M members maps x (M, N, fan_in) -> (M, N, fan_out).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn


def stacked_uniform(shape: Sequence[int], generators: Sequence[torch.Generator], bound: float) -> torch.Tensor:
    """(M, *shape) tensor whose member m is U(-bound, bound) drawn from ``generators[m]``."""
    return torch.stack([(torch.rand(*shape, generator=g) * 2 - 1) * bound for g in generators])


class StackedLinear(nn.Module):
    """M independent affine maps ``x_m W_m + b_m``: weight (M, fan_in, fan_out), bias (M, 1, fan_out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        if weight.dim() != 3 or bias.shape != (weight.shape[0], 1, weight.shape[2]):
            raise ValueError(f"weight must be (M, fan_in, fan_out) and bias (M, 1, fan_out); got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    @classmethod
    def uniform(cls, fan_in: int, fan_out: int, generators: Sequence[torch.Generator], weight_bound: float,
                bias_bound: float | None = None, n_tiles: int = 1) -> "StackedLinear":
        """Weights U(-weight_bound, weight_bound) per member (then biases U(-bias_bound, bias_bound), or zeros
        when ``bias_bound`` is None), drawn member by member from its generator; the whole stack is repeated
        ``n_tiles`` times along the member axis (member ``t * len(generators) + u`` starts as member ``u``)."""
        w = stacked_uniform((fan_in, fan_out), generators, weight_bound)
        if bias_bound is None:
            b = torch.zeros(len(generators), 1, fan_out)
        else:
            b = stacked_uniform((1, fan_out), generators, bias_bound)
        return cls(w.repeat(n_tiles, 1, 1), b.repeat(n_tiles, 1, 1))

    @property
    def members(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class StackedLayers(nn.Module):
    """Base of a stacked network whose affine maps are ``self.layers`` (StackedLinear, in order): exposes
    their weights and biases (e.g. for per-member weight norms or decay) and the member count."""

    layers: nn.ModuleList

    @property
    def weights(self) -> list[nn.Parameter]:
        return [layer.weight for layer in self.layers]

    @property
    def biases(self) -> list[nn.Parameter]:
        return [layer.bias for layer in self.layers]

    @property
    def members(self) -> int:
        return self.layers[0].members


def select_members(module: nn.Module, index: Sequence[int]) -> nn.Module:
    """A copy of a stacked module whose member k is a copy of member ``index[k]`` (every parameter is
    indexed along its leading member axis)."""
    new = copy.deepcopy(module)
    idx = torch.as_tensor(list(index))
    with torch.no_grad():
        for p_new, p_old in zip(new.parameters(), module.parameters()):
            p_new.data = p_old.data[idx].clone()
    return new
