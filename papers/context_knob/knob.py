"""The knob: last-token interventions, rank-1 DAS, difference of means, steering, and CCS fine-tuning.

Everything works on any ``transformers`` decoder with ``model.model.layers`` (a tiny from-scratch Llama
and SmolLM2 alike, peft-wrapped too), through forward hooks on the decoder blocks: "layer L" is the
residual stream after block L (0-based), at the **last prompt token** only, as in the paper.

Because every intervention touches only the last position, the prompt prefix (all tokens but the last) is
run once and its KV cache reused: :class:`LastTokenRunner` then runs the last token as often as needed
(one token per pass), with or without gradients. On SmolLM2 this turns a 60-token forward into a 1-token
one for every steering value, layer and DAS step; the result is exact (the prefix cannot see the last
token under the causal mask).

Interventions (Sec. 5 of the paper; the authors' ``SteerHook`` and pyvene's
``LowRankRotatedSpaceIntervention`` with ``low_rank_dimension=1``), for a unit vector ``u``:

- set the coordinate: ``h' = h + (v - <h, u>) u`` (steering with value ``v``);
- interchange (DAS): ``v = <h_source, u>``, the coordinate of a source run with the opposite intent.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.training import TrainConfig, TrainHistory, train

from .task import CONTEXT, PRIOR, PromptSet

Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (h_last (B, d), rows (B,)) -> new h_last


def decoder_layers(model) -> nn.ModuleList:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.layers


def n_layers(model) -> int:
    return len(decoder_layers(model))


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _cache_kwarg(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


@contextlib.contextmanager
def last_token_hook(model, layer: int | None, edit: Edit | None, rows: torch.Tensor):
    """Within the block, the output of decoder block ``layer`` at the last position is replaced by
    ``edit(h_last, rows)``; ``edit=None`` changes nothing."""
    if edit is None or layer is None:
        yield
        return

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        new_last = edit(h[:, -1], rows).to(h.dtype)
        h = torch.cat([h[:, :-1], new_last[:, None]], dim=1)  # no in-place write: gradients flow to edit
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def set_coordinate(h: torch.Tensor, u: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``h + (value - <h, u>) u`` for unit ``u``: the coordinate along ``u`` becomes ``value``, the
    orthogonal complement is untouched. Shapes: h (B, d), u (d,), value (B,) or scalar."""
    return h + (value - h @ u)[:, None] * u[None, :]


def _detach_cache(cache) -> None:
    if hasattr(cache, "layers"):  # transformers >= 4.56: a list of per-layer caches
        for layer in cache.layers:
            if getattr(layer, "keys", None) is not None:
                layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
    else:  # older DynamicCache: parallel lists
        cache.key_cache = [k.detach() for k in cache.key_cache]
        cache.value_cache = [v.detach() for v in cache.value_cache]


@dataclass
class _Chunk:
    rows: torch.Tensor  # (B,) indices into the prompt set
    last: torch.Tensor  # (B, 1) the last prompt token
    mask: torch.Tensor  # (B, T) full attention mask
    pos: torch.Tensor  # (B, 1) position of the last token
    cache: object  # the prefix KV cache (transformers Cache)
    prefix_len: int


class LastTokenRunner:
    """Runs the last token of each prompt of ``prompts`` over a KV cache of its prefix, computed once.

    ``chunk_logits(c, ...)`` runs one fixed batch (chunk) of prompts, ``logits(...)`` all of them, and
    ``states(layers)`` records the last-token residual stream after the given blocks. Logits are fp32,
    (B, vocab).
    """

    def __init__(self, model, prompts: PromptSet, batch_size: int = 64, device: str = "cpu"):
        if prompts.ids.shape[1] < 2:
            raise ValueError("prompts need at least two tokens (a prefix and a last token)")
        self.model, self.device, self.n = model, device, len(prompts)
        self._cache_kw = _cache_kwarg(model)
        self.chunks: list[_Chunk] = []
        model.eval()
        with torch.no_grad():
            for start in range(0, self.n, batch_size):
                rows = torch.arange(start, min(start + batch_size, self.n))
                ids, mask = prompts.ids[rows].to(device), prompts.mask[rows].to(device)
                width = int(mask.sum(-1).max())  # drop columns that are padding in every row of the chunk
                ids, mask = ids[:, -width:], mask[:, -width:]
                pre_mask = mask[:, :-1]
                out = model(input_ids=ids[:, :-1], attention_mask=pre_mask, position_ids=_position_ids(pre_mask),
                            use_cache=True, logits_to_keep=1)
                cache = getattr(out, "cache", None)
                cache = cache if cache is not None else out.past_key_values
                self.chunks.append(_Chunk(rows.to(device), ids[:, -1:], mask, (mask.sum(-1) - 1)[:, None], cache,
                                          width - 1))

    def __len__(self) -> int:
        return len(self.chunks)

    def chunk_logits(self, c: int, layer: int | None = None, edit: Edit | None = None,
                     grad: bool = False) -> torch.Tensor:
        ch = self.chunks[c]
        with (torch.enable_grad() if grad else torch.no_grad()), last_token_hook(self.model, layer, edit, ch.rows):
            out = self.model(input_ids=ch.last, attention_mask=ch.mask, position_ids=ch.pos, use_cache=True,
                             logits_to_keep=1, **{self._cache_kw: ch.cache})
        extra = ch.cache.get_seq_length() - ch.prefix_len
        if extra > 0:
            ch.cache.crop(-extra)  # forget the last token again (a negative count removes tokens in every version)
        if grad:
            _detach_cache(ch.cache)  # the cropped tensors are views of the graph's concatenation
        return out.logits[:, -1].float()

    def logits(self, layer: int | None = None, edit: Edit | None = None) -> torch.Tensor:
        return torch.cat([self.chunk_logits(c, layer, edit) for c in range(len(self.chunks))])

    def predictions(self, layer: int | None = None, edit: Edit | None = None) -> torch.Tensor:
        return self.logits(layer, edit).argmax(-1).cpu()

    def states(self, layers: list[int]) -> torch.Tensor:
        """(N, len(layers), d) fp32 residual stream at the last token after each block in ``layers``."""
        blocks = decoder_layers(self.model)
        out = []
        for c in range(len(self.chunks)):
            rec: dict[int, torch.Tensor] = {}
            handles = [blocks[layer].register_forward_hook(
                lambda m, a, o, layer=layer: rec.__setitem__(layer, (o[0] if isinstance(o, tuple) else o)[:, -1]))
                for layer in layers]
            try:
                self.chunk_logits(c)
            finally:
                for h in handles:
                    h.remove()
            out.append(torch.stack([rec[layer].float() for layer in layers], dim=1))
        return torch.cat(out).cpu()


# --- evaluation --------------------------------------------------------------------------------------------

def correctness(pred: torch.Tensor, prompts: PromptSet) -> np.ndarray:
    """Whether the top token is the first token of the answer the prompt's intent asks for."""
    return (pred == prompts.target()).numpy()


# --- directions ----------------------------------------------------------------------------------------------

def mean_difference_direction(states: torch.Tensor, intent: torch.Tensor) -> torch.Tensor:
    """Unit vector along mean(h | use context) - mean(h | use prior); states (N, d)."""
    delta = states[intent == CONTEXT].mean(0) - states[intent == PRIOR].mean(0)
    norm = delta.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the two intents have identical mean states: no difference-of-means direction")
    return delta / norm


def random_direction(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g)
    return v / v.norm()


class RankOneSubspace(nn.Module):
    """A learnable 1-D subspace: ``u = w / |w|`` (an orthonormal rank-1 rotation, as in DAS)."""

    def __init__(self, d: int, seed: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, generator=torch.Generator().manual_seed(seed)))

    @property
    def u(self) -> torch.Tensor:
        return self.w / self.w.norm()


@contextlib.contextmanager
def frozen(model):
    """Temporarily stop gradients into the model's own parameters."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def train_das(runner: LastTokenRunner, layer: int, source_states: torch.Tensor, labels: torch.Tensor,
              steps: int, lr: float, seed: int, device: str = "cpu", progress: bool = False) -> tuple[torch.Tensor, TrainHistory]:
    """Distributed alignment search with a rank-1 subspace at ``layer`` (Sec. 5.2; the authors'
    ``das.py``): interchange the target's coordinate along ``u`` with the source's coordinate
    (``source_states`` (N, d): the source run's last-token state at ``layer``, one row per target) and
    minimise the cross-entropy of the target's answer under the *flipped* intent (``labels`` (N,)). The
    model is frozen; only ``u`` is trained (Adam, fixed batches = the runner's chunks, cycled).
    Returns the unit vector ``u`` (d,) and the loss curve."""
    sub = RankOneSubspace(source_states.shape[1], seed).to(device)
    src, labels = source_states.to(device), labels.to(device)

    def edit(h, rows):
        u = sub.u
        return set_coordinate(h, u, src[rows].to(h.dtype) @ u.to(h.dtype))

    def loss_fn(model, c):
        logits = runner.chunk_logits(c, layer, edit, grad=True)
        return F.cross_entropy(logits, labels[runner.chunks[c].rows])

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(20, steps // 10), schedule="constant",
                      grad_clip=None, log_every=max(1, steps // 10), desc=f"DAS layer {layer}", progress=progress)
    with frozen(runner.model):
        history = train(runner.model, cfg, lambda step: step % len(runner), loss_fn, device, parameters=[sub.w])
    return sub.u.detach().cpu(), history


def interchange_accuracy(runner: LastTokenRunner, layer: int, u: torch.Tensor, source_states: torch.Tensor,
                         labels: torch.Tensor) -> float:
    """Interchange-intervention accuracy: the top token after the interchange is the flipped answer."""
    dev = runner.device
    u_d, src = u.to(dev), source_states.to(dev)

    def edit(h, rows):
        return set_coordinate(h, u_d.to(h.dtype), (src[rows] @ u_d).to(h.dtype))

    pred = runner.predictions(layer, edit)
    return float((pred == labels).float().mean())


# --- steering --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SteeringValues:
    """The two steering values ``mid +/- k * half`` along a direction (the authors' ``prior_value`` /
    ``context_value``), from the coordinates of intent-bearing prompts: ``mid`` is their mean, ``half``
    half the distance between the class means (use context minus use prior)."""

    mid: float
    half: float

    def context_value(self, k: float) -> float:
        return self.mid + k * self.half

    def prior_value(self, k: float) -> float:
        return self.mid - k * self.half


def steering_values(coords: torch.Tensor, intent: torch.Tensor) -> SteeringValues:
    """``coords`` (N,) = <h, u> of prompts with intents."""
    c_ctx, c_prior = coords[intent == CONTEXT].mean(), coords[intent == PRIOR].mean()
    return SteeringValues(mid=float((c_ctx + c_prior) / 2), half=float((c_ctx - c_prior) / 2))


def control_values(coords: torch.Tensor, reference: SteeringValues) -> SteeringValues:
    """Values for a control direction: centred on its own mean coordinate, displaced as far as the
    reference direction's values (so both interventions move the state by the same amount)."""
    return SteeringValues(mid=float(coords.mean()), half=reference.half)


def steer_predictions(runner: LastTokenRunner, layer: int, u: torch.Tensor, value: float) -> torch.Tensor:
    u_d = u.to(runner.device)

    def edit(h, rows):
        return set_coordinate(h, u_d.to(h.dtype), torch.full((h.shape[0],), value, device=h.device, dtype=h.dtype))

    return runner.predictions(layer, edit)


def steered_pair_correct(runner: LastTokenRunner, prompts: PromptSet, layer: int, u: torch.Tensor,
                         values: SteeringValues, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On prompts *without* an instruction: (both right, context right, prior right) per item, where the
    context value must make the top token the context answer and the prior value the prior answer."""
    pred_ctx = steer_predictions(runner, layer, u, values.context_value(k))
    pred_prior = steer_predictions(runner, layer, u, values.prior_value(k))
    ok_ctx = (pred_ctx == prompts.ctx_token).numpy()
    ok_prior = (pred_prior == prompts.prior_token).numpy()
    return ok_ctx & ok_prior, ok_ctx, ok_prior


def select_steering(runner: LastTokenRunner, prompts: PromptSet, candidates: list[tuple[int, torch.Tensor, SteeringValues]],
                    multipliers: list[float]) -> tuple[int, float, float]:
    """The (candidate index, multiplier) with the highest steered pair accuracy on ``prompts`` (a dev set);
    ties go to the earlier candidate and the smaller multiplier. Returns (index, k, dev pair accuracy)."""
    best = (0, multipliers[0], -1.0)
    for i, (layer, u, values) in enumerate(candidates):
        for k in multipliers:
            acc = float(steered_pair_correct(runner, prompts, layer, u, values, k)[0].mean())
            if acc > best[2]:
                best = (i, k, acc)
    return best


def separation(coords: torch.Tensor, intent: torch.Tensor) -> float:
    """d' of the coordinates of use-context vs use-prior prompts: (mean_ctx - mean_prior) / pooled sd
    (signed: the direction is oriented so that the fine-tuned model's context mean is larger)."""
    a, b = coords[intent == CONTEXT].double(), coords[intent == PRIOR].double()
    pooled = torch.sqrt((a.var(unbiased=True) + b.var(unbiased=True)) / 2)
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0


# --- fine-tuning on the CCS task ---------------------------------------------------------------------------

def last_token_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, vocab) fp32 logits that predict the token after each (left-padded) prompt."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=_position_ids(mask), use_cache=False,
                logits_to_keep=1)
    return out.logits[:, -1].float()


def answer_loss(model, batch) -> torch.Tensor:
    """Cross-entropy of the answer token after the prompt (completion-only loss, single-token answers)."""
    ids, mask, target = batch
    return F.cross_entropy(last_token_logits(model, ids, mask), target)


def finetune_lora(model, batch_fn, steps: int, lr: float, lora_r: int, lora_alpha: float,
                  target_modules: list[str], device: str, weight_decay: float = 0.01, progress: bool = False,
                  eval_fn=None, eval_every: int = 0, desc: str = "CCS fine-tuning"):
    """LoRA fine-tuning on CCS prompts (the authors' ``main.py``: LoRA on the attention projections, AdamW,
    weight decay 0.01, completion-only loss), then merged into a plain model. ``model`` is modified in
    place (pass a copy to keep the original). Returns (merged model, loss curve)."""
    from shared.lm import add_lora

    peft_model = add_lora(model, r=lora_r, alpha=lora_alpha, dropout=0.0, target_modules=target_modules)
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, warmup_steps=min(5, steps // 10),
                      log_every=max(1, steps // 20), eval_every=eval_every, desc=desc, progress=progress)
    history = train(peft_model, cfg, batch_fn, answer_loss, device, eval_fn=eval_fn)
    return peft_model.merge_and_unload().eval(), history
