"""One training loop for every paper that trains a torch model.

The paper supplies two functions: ``batch_fn(step) -> batch`` (already on the device) and
``loss_fn(model, batch) -> loss`` (or ``(loss, {name: value})`` for extra curves). The loop adds what every
run needs: AdamW with decoupled weight decay on matrices only, warmup + cosine schedule, gradient clipping,
bf16 autocast and the fused optimizer on a GPU, a tqdm progress bar, periodic evaluation and a curve table.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from shared.device import autocast_dtype, use_fused_adam


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" | "constant"
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    log_every: int = 25  # record (and NaN-check) the loss every this many steps; no device sync in between
    eval_every: int = 0  # call eval_fn every this many steps (0: only at the end)
    desc: str = "train"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant; got {self.schedule!r}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then constant or cosine to lr * min_lr_ratio."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(params: Iterable[nn.Parameter] | nn.Module, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW; weight decay on parameters with >= 2 dims (matrices, embeddings), none on biases and norms."""
    plist = list(params.parameters() if isinstance(params, nn.Module) else params)
    plist = [p for p in plist if p.requires_grad]
    decay = [p for p in plist if p.dim() >= 2]
    no_decay = [p for p in plist if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=use_fused_adam(device) or None)


@dataclass
class TrainHistory:
    records: list[dict[str, Any]]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.records)

    def last(self, key: str) -> Any:
        for rec in reversed(self.records):
            if key in rec:
                return rec[key]
        raise KeyError(key)


def train(
    model: nn.Module,
    cfg: TrainConfig,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    device: str,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    stop_fn: Callable[[dict[str, Any]], bool] | None = None,
) -> TrainHistory:
    """Train ``model`` for ``cfg.steps`` steps; return the curve table (one record per logged step).

    ``parameters`` optimises a different parameter set (e.g. the model plus an auxiliary head);
    by default all of ``model``'s. ``eval_fn`` runs in eval mode under ``torch.no_grad`` and its values
    are added to the record of that step. ``stop_fn`` sees each logged record and ends training early
    when it returns True (e.g. once a target accuracy is reached).
    """
    from tqdm import tqdm

    model.to(device)
    opt = make_optimizer(parameters if parameters is not None else model, cfg, device)
    amp = autocast_dtype(device)
    clip_params = [p for g in opt.param_groups for p in g["params"]]
    records: list[dict[str, Any]] = []
    bar = tqdm(total=cfg.steps, desc=cfg.desc, disable=not cfg.progress, file=sys.stderr,
               mininterval=2.0, leave=False, dynamic_ncols=False, ncols=100)
    for step in range(cfg.steps):
        model.train()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = batch_fn(step)
        with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
            out = loss_fn(model, batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(clip_params, cfg.grad_clip)
        opt.step()
        bar.update(1)
        last = step == cfg.steps - 1
        do_eval = eval_fn is not None and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0))
        if not ((step + 1) % cfg.log_every == 0 or last or do_eval):
            continue  # no host-device sync between log steps: the GPU keeps running ahead
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{cfg.desc}: loss became {value} at step {step}")
        rec: dict[str, Any] = {"step": step + 1, "loss": value, "lr": lr}
        rec.update({k: float(v) for k, v in extra.items()})
        if do_eval:
            model.eval()
            with torch.no_grad():
                rec.update({k: float(v) for k, v in eval_fn(model).items()})
        records.append(rec)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if stop_fn is not None and stop_fn(rec):
            break
    bar.close()
    model.eval()
    return TrainHistory(records)
