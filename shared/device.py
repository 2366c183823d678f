"""Device selection (cuda > mps > cpu) and the matching precision and optimizer settings."""

from __future__ import annotations

import re

_VALID = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def pick_device(preference: str = "auto") -> str:
    """Return the device to use: ``preference`` if it names one that exists, the best available for "auto".

    A named device that is not available is an error, not a silent fallback, so a run asked to use a GPU
    never quietly takes hours on a CPU.
    """
    import torch

    if not _VALID.match(preference):
        raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N; got {preference!r}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} requested but CUDA is not available")
        index = int(preference.split(":")[1]) if ":" in preference else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"device {preference!r} requested but only {torch.cuda.device_count()} GPUs exist")
    if preference == "mps" and not has_mps:
        raise RuntimeError("device 'mps' requested but MPS is not available")
    return preference


def describe(device: str) -> str:
    """A short human description: the GPU name on CUDA, else the device string."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def autocast_dtype(device: str):
    """bf16 autocast on a GPU that supports it; None (full fp32) elsewhere.

    On CPU, bf16 autocast is slower than fp32 for these small models and changes results, so it is off.
    """
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def use_fused_adam(device: str) -> bool:
    return device.startswith("cuda")
