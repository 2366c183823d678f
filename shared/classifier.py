"""Supervised classification pieces for :func:`shared.training.train`: a seeded minibatch sampler over
in-memory tensors, the cross-entropy loss of a classifier on such a batch, and top-1 accuracy.

Two papers (unlearnable_bayes, stationary_representations) train small classifiers on arrays held in
memory; they share these instead of each writing its own sampler and loss.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def minibatch_sampler(tensors: Sequence[torch.Tensor], batch_size: int,
                      generator: torch.Generator) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """``batch_fn(step)`` for :func:`shared.training.train`: ``batch_size`` rows drawn uniformly with
    replacement (``torch.randint`` on ``generator``) and the same rows of every tensor. The draw depends
    only on the generator's state, not on ``step``."""
    if not tensors:
        raise ValueError("minibatch_sampler needs at least one tensor")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"tensors disagree on the number of rows: {[t.shape[0] for t in tensors]}")
    if n < 1 or batch_size < 1:
        raise ValueError(f"need rows and a positive batch size; got {n} rows, batch size {batch_size}")

    def batch_fn(step: int) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        return tuple(t[idx] for t in tensors)

    return batch_fn


def cross_entropy_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of ``model(x)`` against the labels ``y`` of a batch ``(x, y)``."""
    x, y = batch
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` (float32 inputs, integer labels)."""
    pred = model(torch.as_tensor(x, dtype=torch.float32)).argmax(1)
    return float((pred == torch.as_tensor(y).long()).double().mean())
