"""NTK-Attention (Liang et al., "Toward Infinite-Long Prefix in Transformer", arXiv 2406.14036).

Prefix attention (P-Tuning v2) lets every query attend to ``m`` learned prefix tokens besides the input:

    out(q) = (sum_x e^{s_x} v_x + sum_p e^{s_p} v_p) / (sum_x e^{s_x} + sum_p e^{s_p}),   s = q.k / sqrt(d)

NTK-Attention (the paper's Algorithm "NTK-Attention", Sec. 4; authors' code ``ntk_attn_demo.py``) replaces
the prefix sums by a kernel feature map phi(x) = ELU(x / d^{1/4}) + 1 and two trainable tensors per head,
Z in R^{d x d} (standing for sum_p phi(k_p) v_p^T) and k in R^d (standing for sum_p phi(k_p)):

    out(q) = (sum_x e^{s_x - M} v_x + phi(q)^T Z e^{-M}) / (sum_x e^{s_x - M} + phi(q)^T |k| e^{-M})

with M = max_x s_x subtracted in every term for stability and |k| keeping the denominator positive. Its
cost does not depend on the prefix length m. This module holds the formula, exact prefix attention for
reference, and the Part 1 experiment (the paper's Sec. 4.4 error experiment): fit (Z, k) to reproduce
softmax attention with an m-long prefix and measure the held-out error as m grows.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def phi(x: torch.Tensor) -> torch.Tensor:
    """The paper's feature map phi(x) = ELU(x / d^{1/4}) + 1 on the last axis (d = x.shape[-1]); > 0."""
    return F.elu(x / x.shape[-1] ** 0.25) + 1.0


def blind_phi(x: torch.Tensor) -> torch.Tensor:
    """The query-blind ablation of ``phi``: all ones, so phi(q)^T Z and phi(q)^T |k| do not depend on q."""
    return torch.ones_like(x)


def ntk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, Z: torch.Tensor, kvec: torch.Tensor,
                  mask: torch.Tensor | None = None, feature: FeatureMap = phi) -> torch.Tensor:
    """NTK-Attention output (Sec. 4, Algorithm NTK-Attention).

    q (B, H, Nq, d), k and v (B, H, Nk, d); Z (H, d, d), kvec (H, d) (one pair per head); ``mask`` an
    additive mask broadcastable to (B, H, Nq, Nk) (0 = keep, large negative = padding), applied to the
    softmax scores only, never to the NTK term. Computed in float32; returns (B, H, Nq, d).
    """
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    d = q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, H, Nq, Nk)
    if mask is not None:
        scores = scores + mask.float()
    M = scores.amax(-1, keepdim=True)  # (B, H, Nq, 1)
    E = torch.exp(scores - M)
    scale = torch.exp(-M)
    fq = feature(q)  # (B, H, Nq, d)
    num = E @ v + (fq @ Z.float()) * scale
    den = E.sum(-1, keepdim=True) + (fq @ kvec.abs().float().unsqueeze(-1)) * scale
    return (num / den).to(dtype)


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_prefix: torch.Tensor,
                     v_prefix: torch.Tensor) -> torch.Tensor:
    """Exact softmax attention of q (..., Nq, d) over [prefix; input] keys: k_prefix, v_prefix (..., m, d)
    broadcast against k, v (..., Nk, d). The target NTK-Attention approximates (Sec. 3, prefix attention)."""
    kk = torch.cat([k_prefix.expand(*k.shape[:-2], *k_prefix.shape[-2:]), k], dim=-2)
    vv = torch.cat([v_prefix.expand(*v.shape[:-2], *v_prefix.shape[-2:]), v], dim=-2)
    return torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ vv


def ntk_params_from_prefix(k_prefix: torch.Tensor, v_prefix: torch.Tensor,
                           feature: FeatureMap = phi) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors NTK-Attention stands for: Z = sum_p phi(k_p) v_p^T (..., d, d), k = sum_p phi(k_p) (..., d)."""
    fk = feature(k_prefix)
    return fk.transpose(-1, -2) @ v_prefix, fk.sum(-2)


# ---------------------------------------------------------------------------------------------------
# Part 1: the error experiment (Sec. 4.4; authors' ntk-attn-error/ntk_attn_error.py)
# ---------------------------------------------------------------------------------------------------

def synthetic_problem(d: int, m_max: int, seed: int) -> dict[str, torch.Tensor]:
    """One random attention head and its prefix: W_Q, W_K, W_V ~ N(0, 1/d) (so scores are O(1); the
    authors' N(0, 1) weights make softmax one-hot) and a prefix P ~ N(0, I) of m_max tokens; the prefix of
    length m is P[:m] (nested, so the trend over m is not confounded with a new prefix per m)."""
    g = torch.Generator().manual_seed(int(seed))
    W = torch.randn(3, d, d, generator=g) / math.sqrt(d)
    P = torch.randn(m_max, d, generator=g)
    return {"W_Q": W[0], "W_K": W[1], "W_V": W[2], "P": P}


def project(prob: dict[str, torch.Tensor], X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of tokens X (..., L, d) under the problem's weights."""
    return X @ prob["W_Q"], X @ prob["W_K"], X @ prob["W_V"]


class PrefixApprox(nn.Module):
    """Trainable (Z, k) of one head, parametrised as Z = m * Z_bar, k = m * k_bar: Z and k stand for sums
    over m prefix tokens, so their per-token means Z_bar, k_bar are O(1) for every m and one learning rate
    fits all m (a reparametrisation, not a change of the function class). Init: Z_bar = 0, k_bar = 1/d."""

    def __init__(self, d: int, m: int, feature: FeatureMap = phi):
        super().__init__()
        self.m = float(m)
        self.feature = feature
        self.Z_bar = nn.Parameter(torch.zeros(1, d, d))
        self.k_bar = nn.Parameter(torch.full((1, d), 1.0 / d))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ntk_attention(q, k, v, self.m * self.Z_bar, self.m * self.k_bar, feature=self.feature)


def draw_batch(prob: dict[str, torch.Tensor], m: int, batch: int, L: int, g: torch.Generator):
    """Fresh inputs X ~ N(0, I) (batch, 1, L, d), drawn on the CPU generator ``g`` and moved to the
    problem's device: their q, k, v and the exact prefix-attention target."""
    d = prob["P"].shape[1]
    X = torch.randn(batch, 1, L, d, generator=g).to(prob["P"].device)
    q, k, v = project(prob, X)
    _, kp, vp = project(prob, prob["P"][:m])
    with torch.no_grad():
        target = prefix_attention(q, k, v, kp, vp)
    return q, k, v, target


def relative_error(pred: torch.Tensor, target: torch.Tensor, no_prefix: torch.Tensor) -> float:
    """Mean squared error of ``pred`` divided by that of attention without the prefix (``no_prefix``):
    the fraction of the prefix's effect on the output that the approximation leaves unexplained."""
    return float(((pred - target) ** 2).mean() / ((no_prefix - target) ** 2).mean())


def fit_prefix_approx(prob: dict[str, torch.Tensor], m: int, steps: int, batch: int, L: int, lr: float,
                      seed: int, n_eval: int, feature: FeatureMap = phi, progress: bool = False,
                      device: str = "cpu") -> dict[str, float]:
    """Fit (Z, k) by Adam (shared.training.train, MSE on fresh inputs each step) to prefix attention with
    the first m prefix tokens; return the held-out relative errors of the fit, of its initialisation and
    of attention without the prefix (= 1 by definition), on ``n_eval`` fresh inputs from another stream."""
    from shared.training import TrainConfig, train

    d = prob["P"].shape[1]
    model = PrefixApprox(d, m, feature).to(device)
    prob = {key: t.to(device) for key, t in prob.items()}
    g_train = torch.Generator().manual_seed(10_000 + int(seed))

    def batch_fn(step: int):
        return draw_batch(prob, m, batch, L, g_train)

    def loss_fn(mod: nn.Module, b) -> torch.Tensor:
        q, k, v, target = b
        return F.mse_loss(mod(q, k, v), target)

    g_eval = torch.Generator().manual_seed(20_000 + int(seed))
    q, k, v, target = draw_batch(prob, m, n_eval, L, g_eval)
    with torch.no_grad():
        no_prefix = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
        init_err = relative_error(model(q, k, v), target, no_prefix)
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=0, schedule="cosine", grad_clip=None, log_every=steps,
                      desc=f"fit m={m}", progress=progress)
    hist = train(model, cfg, batch_fn, loss_fn, device)
    with torch.no_grad():
        err = relative_error(model(q, k, v), target, no_prefix)
        kp = project(prob, prob["P"][:m])[1]
        scores = torch.cat([q @ kp.transpose(-1, -2), q @ k.transpose(-1, -2)], -1) / math.sqrt(d)
        prefix_mass = float(torch.softmax(scores, dim=-1)[..., :m].sum(-1).mean())
    return {"rel_error": err, "rel_error_init": init_err, "final_train_loss": float(hist.last("loss")),
            "prefix_mass": prefix_mass}


def error_curve_job(seed: int, m_values: list[int], d: int, L: int, steps: int, batch: int, lr: float,
                    n_eval: int, arm: str, device: str = "cpu") -> list[dict]:
    """One seed's error curve over ``m_values`` for ``arm`` "ntk" (phi) or "blind" (query-blind ablation):
    rows (seed, arm, m, rel_error, ...). Module-level so shared.parallel.run_jobs can pickle it."""
    torch.manual_seed(seed)
    prob = synthetic_problem(d, max(m_values), seed)
    feature = phi if arm == "ntk" else blind_phi
    rows = []
    for m in m_values:
        r = fit_prefix_approx(prob, m, steps, batch, L, lr, seed, n_eval, feature=feature, device=device)
        rows.append({"seed": seed, "arm": arm, "m": m, **r})
    return rows


def log_slope(m: np.ndarray, err: np.ndarray) -> float:
    """OLS slope of ln(err) on log2(m): the change of the log relative error per doubling of m."""
    x, y = np.log2(np.asarray(m, float)), np.log(np.asarray(err, float))
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


# ---------------------------------------------------------------------------------------------------
# Part 2: NTK-Attention as a PEFT method inside a pretrained BERT (MiniLM)
# ---------------------------------------------------------------------------------------------------

def _wrapper_base():
    from shared.encoder import SelfAttentionWrapper

    return SelfAttentionWrapper


class NTKSelfAttention(_wrapper_base()):
    """One BERT layer's self-attention with NTK-Attention: the layer's own (frozen) q, k, v projections,
    plus a trainable Z (H, d, d) and k (H, d) per head (d^2 + d parameters per head, whatever the prefix
    length they stand for). Initialised N(0, 1e-4^2) as in the authors' ChatGLM code, so training starts
    at the pretrained function up to ~1e-4. The padding mask reaches the softmax scores only. No attention
    dropout (the authors' NTK-Attention has none)."""

    def __init__(self, layer: nn.Module, init_scale: float = 1e-4, generator: torch.Generator | None = None):
        super().__init__(layer)
        h, d = self.n_heads, self.head_dim
        self.Z = nn.Parameter(torch.randn(h, d, d, generator=generator) * init_scale)
        self.kvec = nn.Parameter(torch.randn(h, d, generator=generator) * init_scale)
        self.train(layer.training)

    def attend(self, q, k, v, mask):
        return ntk_attention(q, k, v, self.Z, self.kvec, mask=mask)


def ntk_param_count(n_layers: int, n_heads: int, head_dim: int) -> int:
    """Trainable parameters NTK-Attention adds: (d^2 + d) per head per layer (Sec. 4)."""
    return n_layers * n_heads * (head_dim * head_dim + head_dim)
