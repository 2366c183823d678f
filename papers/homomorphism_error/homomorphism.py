"""Homomorphism error (HE), An & Du (2026) Sec. 3, and the HE regulariser of their Sec. 5.

A model is an approximate homomorphism from the expression algebra to its hidden-state space when a
fixed operator maps the representations of the parts of an expression to the representation of the
whole. HE is the held-out error of such an operator, learned from (part, part, whole) triples:

- **modifier HE** (unary composition): triples (h_prim, h_mod, h_prim+mod) for every primitive token
  immediately followed by a modifier token;
- **sequence HE** (binary composition): triples (h_seg_i, h_seg_i+1, h_seg_i,i+1) for consecutive
  segments, a segment being a primitive token and every token up to the next primitive (tokens before
  the first primitive form a segment of their own).

As in the authors' code, the representation of a composite is the MEAN of its parts' states (modifier:
mean of the two token states; segment: mean of its token states; a pair of segments: mean of the two
segment vectors). The target is therefore an exact linear function of the inputs, and HE measures how
well a *gradient-trained* operator recovers it in a fixed budget: it depends on the geometry and scale
of the states and on how many triples there are to train on. :func:`normalised_he` divides HE by the
variance of the targets, a control for scale.

Operators (``he_metrics.py`` of the authors): linear on [a; b]; "bilinear" = linear on [a; b; a*b];
2-layer GELU MLP on [a; b] with max(4d, 128) hidden units. Each is trained with Adam (lr 1e-3, weight
decay 1e-6, batch 128, 50 epochs, batches in a fixed order) on the first 80% of the triples and
evaluated (MSE) on the last 20%; HE is the mean over the three operator kinds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.training import TrainConfig, train

OPERATOR_KINDS = ("linear", "bilinear", "mlp")


def representation(hidden: torch.Tensor) -> torch.Tensor:
    """The hidden state HE is measured on: the residual stream after a parameter-free LayerNorm.

    The authors' model is post-LN, so their per-layer states are LayerNorm outputs; the shared model is
    pre-LN and its residual stream has a scale that drifts in training. Normalising puts both on the same
    footing (zero mean, unit variance per vector) and keeps the regulariser from winning by rescaling.
    """
    return F.layer_norm(hidden, hidden.shape[-1:])


@dataclass
class Triples:
    """(N, D) parts a, b and composite c."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor

    def __len__(self) -> int:
        return self.a.shape[0]

    def split(self, train_fraction: float = 0.8) -> tuple["Triples", "Triples"]:
        """First ``train_fraction`` of the triples (in extraction order) to fit, the rest to evaluate."""
        k = int(len(self) * train_fraction)
        return (Triples(self.a[:k], self.b[:k], self.c[:k]), Triples(self.a[k:], self.b[k:], self.c[k:]))


def modifier_positions(ids: torch.Tensor, lengths: torch.Tensor, primitive_ids, modifier_ids
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of every primitive token at ``t`` whose next token ``t+1`` (inside the sequence) is
    a modifier; ordered by row, then position. ``ids`` (N, T), ``lengths`` (N,)."""
    is_prim = torch.isin(ids, torch.tensor(sorted(primitive_ids)))
    is_mod = torch.isin(ids, torch.tensor(sorted(modifier_ids)))
    inside = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    hit = is_prim[:, :-1] & is_mod[:, 1:] & inside[:, 1:]
    rows, pos = hit.nonzero(as_tuple=True)
    return rows, pos


def modifier_triples(states: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor, primitive_ids,
                     modifier_ids) -> Triples:
    """(h_prim, h_mod, mean of the two) for every primitive-modifier bigram. ``states`` (N, T, D)."""
    rows, pos = modifier_positions(ids, lengths, primitive_ids, modifier_ids)
    a, b = states[rows, pos], states[rows, pos + 1]
    return Triples(a, b, (a + b) / 2)


def segment_ids(ids: torch.Tensor, lengths: torch.Tensor, primitive_ids) -> torch.Tensor:
    """(N, T) index of the segment each token belongs to, -1 beyond the sequence. A segment starts at
    every primitive; tokens before the first primitive are segment 0 and the first primitive then starts
    segment 1, otherwise the first primitive is segment 0 (so indices are consecutive from 0)."""
    is_prim = torch.isin(ids, torch.tensor(sorted(primitive_ids))).long()
    seg = is_prim.cumsum(1)
    starts_with_prim = is_prim[:, :1].bool()
    seg = seg - starts_with_prim.long()  # first segment is 0 either way
    inside = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    return torch.where(inside, seg, torch.full_like(seg, -1))


def sequence_triples(states: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor, primitive_ids) -> Triples:
    """(e_i, e_i+1, (e_i + e_i+1)/2) for consecutive segments; e = mean of the segment's token states.
    Ordered by row, then segment."""
    N, T, D = states.shape
    seg = segment_ids(ids, lengths, primitive_ids)
    n_seg = seg.max(1).values + 1  # (N,)
    slots = T  # at most T segments per row
    flat = (torch.arange(N)[:, None] * slots + seg.clamp(min=0)).reshape(-1)
    valid = (seg >= 0).reshape(-1).to(states.dtype)
    sums = torch.zeros(N * slots, D, dtype=states.dtype).index_add_(0, flat, states.reshape(-1, D) * valid[:, None])
    counts = torch.zeros(N * slots, dtype=states.dtype).index_add_(0, flat, valid)
    means = sums / counts.clamp(min=1)[:, None]
    has_next = torch.arange(slots)[None, :] < (n_seg - 1)[:, None]  # (N, slots): segment k and k+1 exist
    rows, k = has_next.nonzero(as_tuple=True)
    a, b = means[rows * slots + k], means[rows * slots + k + 1]
    return Triples(a, b, (a + b) / 2)


# --- composition operators --------------------------------------------------------------------------------

class Operator(nn.Module):
    """One learned composition operator f(a, b) -> c of the given kind."""

    def __init__(self, kind: str, d: int):
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.net = nn.Linear(2 * d, d)
        elif kind == "bilinear":
            self.net = nn.Linear(3 * d, d)
        elif kind == "mlp":
            hidden = max(4 * d, 128)
            self.net = nn.Sequential(nn.Linear(2 * d, hidden), nn.GELU(), nn.Linear(hidden, d))
        else:
            raise ValueError(f"unknown operator kind {kind!r} (choose from {OPERATOR_KINDS})")

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b, a * b] if self.kind == "bilinear" else [a, b], dim=-1)
        return self.net(x)


class OperatorSet(nn.Module):
    """Several operators with independent parameters, trained together: the loss is the sum of their
    MSEs, and since Adam updates each parameter from its own gradient, this is the same as training each
    alone (no gradient clipping)."""

    def __init__(self, kinds, d: int):
        super().__init__()
        self.ops = nn.ModuleDict({k: Operator(k, d) for k in kinds})

    def losses(self, t: Triples) -> dict[str, torch.Tensor]:
        return {k: F.mse_loss(op(t.a, t.b), t.c) for k, op in self.ops.items()}


@dataclass
class HEResult:
    he: float  # mean over operator kinds of the held-out MSE
    per_operator: dict[str, float]
    target_variance: float  # mean per-dimension variance of the held-out composites
    n_triples: int

    @property
    def normalised(self) -> float:
        return normalised_he(self.he, self.target_variance)


def normalised_he(he: float, target_variance: float) -> float:
    """HE divided by the variance of what the operator predicts: 0 = perfect, 1 = no better than the
    mean composite. A control for the scale of the hidden states."""
    return he / target_variance if target_variance > 0 else float("nan")


def homomorphism_error(triples: Triples, seed: int, kinds=OPERATOR_KINDS, epochs: int = 50,
                       batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-6,
                       device: str = "cpu") -> HEResult:
    """Fit the operators on the first 80% of ``triples`` and return their held-out MSE (Sec. 3)."""
    triples = Triples(triples.a.to(device), triples.b.to(device), triples.c.to(device))
    fit, held = triples.split(0.8)
    if len(fit) == 0 or len(held) == 0:
        raise ValueError(f"need at least 2 triples to fit and evaluate an operator; got {len(triples)}")
    torch.manual_seed(seed)
    ops = OperatorSet(kinds, triples.a.shape[1])
    per_epoch = -(-len(fit) // batch_size)

    def batch_fn(step: int) -> Triples:
        i = (step % per_epoch) * batch_size
        return Triples(fit.a[i:i + batch_size], fit.b[i:i + batch_size], fit.c[i:i + batch_size])

    def loss_fn(model: OperatorSet, t: Triples) -> torch.Tensor:
        return sum(model.losses(t).values())

    cfg = TrainConfig(steps=epochs * per_epoch, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999),
                      schedule="constant", grad_clip=None, log_every=10**9, progress=False, desc="HE operators")
    train(ops, cfg, batch_fn, loss_fn, device)
    with torch.no_grad():
        per_op = {k: float(v) for k, v in ops.losses(held).items()}
    var = float(held.c.var(dim=0, unbiased=False).mean())
    return HEResult(sum(per_op.values()) / len(per_op), per_op, var, len(triples))


# --- the HE regulariser (Sec. 5) ---------------------------------------------------------------------------

class ModifierHERegularizer(nn.Module):
    """Per-modifier MLP g_m([h_prim; h_mod]) ~ (h_prim + h_mod)/2 at the chosen layers (authors' "strong"
    regulariser: ReLU MLP with 256 hidden units per modifier). Its parameters are trained jointly with the
    model; the gradient also reaches the model through the states and through the (undetached) target.
    Loss = mean over layers of the mean over modifiers present in the batch of the MSE."""

    def __init__(self, d_model: int, modifier_ids, hidden: int = 256):
        super().__init__()
        self.modifier_ids = tuple(int(m) for m in modifier_ids)
        self.ops = nn.ModuleDict({str(m): nn.Sequential(nn.Linear(2 * d_model, hidden), nn.ReLU(),
                                                        nn.Linear(hidden, d_model))
                                  for m in self.modifier_ids})

    def forward(self, layer_states: list[torch.Tensor], prim_pos: torch.Tensor, mod_pos: torch.Tensor,
                mod_id: torch.Tensor) -> torch.Tensor:
        """``layer_states``: (B, T, D) per regularised layer; positions and modifier ids (B,)."""
        rows = torch.arange(prim_pos.shape[0])
        per_layer = []
        for h in layer_states:
            pv, mv = h[rows, prim_pos], h[rows, mod_pos]  # (B, D)
            target = (pv + mv) / 2
            losses = [F.mse_loss(self.ops[str(m)](torch.cat([pv[mod_id == m], mv[mod_id == m]], -1)),
                                 target[mod_id == m])
                      for m in self.modifier_ids if bool((mod_id == m).any())]
            per_layer.append(torch.stack(losses).mean() if losses else h.new_zeros(()))
        return torch.stack(per_layer).mean()
