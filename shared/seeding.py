"""Seeding and determinism: same seed, same machine, same profile -> same numbers."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and (if installed) torch; return a NumPy Generator for the caller's own draws.

    With ``deterministic`` torch is asked for deterministic kernels (a warning, not an error, where an op
    has none) and cuDNN autotuning is off. CPU runs are then bit-for-bit repeatable.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # papers without neural networks do not need torch
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def torch_generator(seed: int, device: str = "cpu"):
    """A torch.Generator seeded with ``seed`` on ``device`` (for data sampled directly on a GPU)."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
