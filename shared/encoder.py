"""Fine-tuning a pretrained sentence encoder (all-MiniLM-L6-v2) with parameter-efficient methods.

Several papers tune the same 6-layer BERT (d=384, 12 heads of 32) as a classifier or a bi-encoder and
compare ways of tuning it: only a head, the whole model, LoRA, deep prefixes (P-tuning v2), BitFit, or an
attention variant of their own. This module holds what they share so that no paper re-implements it:

- :func:`load_encoder` (the fetched checkpoint, eager attention, train-ready), :func:`tokenize`,
  :func:`mean_pool`, :class:`SentenceEncoder` and :class:`SentenceClassifier`;
- :func:`configure_peft`: freezes the encoder and makes one method's parameters trainable, returning
  their count (the number a "matched parameter budget" is stated in);
- :class:`SelfAttentionWrapper` and :func:`replace_self_attention`: the hook for a custom attention. The
  wrapper recomputes BERT's self-attention from the layer's own ``query``/``key``/``value`` projections
  (so LoRA on them still applies) and hands ``attend(q, k, v, mask)`` to a subclass; the base class is
  numerically the original layer (tested). :class:`PrefixSelfAttention` (P-tuning v2) is one subclass;
- :func:`info_nce_loss` (in-batch negatives, optional hard negatives) and
  :func:`supervised_contrastive_loss` (Khosla et al. 2020, the "L_out" form).

Training goes through ``shared.training.train``, which optimises only parameters that require gradients.
Padding is on the right (BERT's absolute positions start at [CLS]); the additive padding mask of eager
attention reaches :meth:`SelfAttentionWrapper.attend` as ``(B, 1, T_q, T_k)`` with 0 for real keys and a very
negative number for padding, or ``None`` when nothing is padded.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PEFT_METHODS",
    "PrefixSelfAttention",
    "SelfAttentionWrapper",
    "SentenceClassifier",
    "SentenceEncoder",
    "configure_peft",
    "count_trainable",
    "info_nce_loss",
    "load_encoder",
    "mean_pool",
    "replace_self_attention",
    "supervised_contrastive_loss",
    "tokenize",
]

PEFT_METHODS = ("frozen", "full", "lora", "prefix", "bitfit")


# --- model ------------------------------------------------------------------------------------------------

def load_encoder(device: str = "cpu", path=None):
    """``(bert, tokenizer)``: all-MiniLM-L6-v2 from ``data/minilm`` (stage ``data_minilm``) in fp32 with
    eager attention (so attention wrappers see an additive mask), in train mode with every parameter
    trainable; :func:`configure_peft` then decides what trains."""
    from shared.lm import load_minilm

    bert, tokenizer = load_minilm(device=device, path=path)
    bert.set_attn_implementation("eager")
    for p in bert.parameters():
        p.requires_grad_(True)
    return bert.train(), tokenizer


def tokenize(tokenizer, texts: Sequence[str], max_length: int = 64, device: str = "cpu") -> dict:
    """Right-padded ``input_ids`` and ``attention_mask`` of ``texts`` truncated to ``max_length`` word
    pieces ([CLS] and [SEP] included)."""
    if isinstance(texts, str):
        raise TypeError("tokenize() takes a sequence of texts, not one string")
    if not texts:
        raise ValueError("tokenize() got no texts")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]); got {max_length}")
    enc = tokenizer(list(texts), padding=True, padding_side="right", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, d) over the positions where ``attention_mask`` (B, T) is 1."""
    if hidden.shape[:2] != attention_mask.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         f"disagree on (batch, length)")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """A BERT followed by mean pooling (the sentence-transformers recipe of MiniLM); ``normalize`` makes
    the output unit-norm, so a dot product is a cosine similarity."""

    def __init__(self, bert: nn.Module, normalize: bool = False):
        super().__init__()
        self.bert = bert
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden.float(), attention_mask)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class SentenceClassifier(nn.Module):
    """:class:`SentenceEncoder` + a linear head: ``forward`` gives logits (B, n_classes), ``features``
    the pooled sentence vectors the head reads."""

    def __init__(self, bert: nn.Module, n_classes: int):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs n_classes >= 2; got {n_classes}")
        self.encoder = SentenceEncoder(bert)
        self.head = nn.Linear(bert.config.hidden_size, n_classes)

    @property
    def bert(self) -> nn.Module:
        return self.encoder.bert

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))


def count_trainable(module: nn.Module) -> int:
    """Number of parameters of ``module`` that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- custom self-attention --------------------------------------------------------------------------------

class SelfAttentionWrapper(nn.Module):
    """BERT self-attention recomputed from the wrapped layer's projections; override :meth:`attend`.

    ``attend(q, k, v, mask)`` gets per-head tensors (B, H, T, d_head) (queries not yet scaled) and the
    additive mask (B, 1, T, T) or ``None``, and returns (B, H, T, d_head). The base implementation is
    softmax attention with the layer's dropout, i.e. the original layer.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.query, self.key, self.value = layer.query, layer.key, layer.value
        self.n_heads = layer.num_attention_heads
        self.head_dim = layer.attention_head_size
        self.scaling = self.head_dim ** -0.5
        self.dropout = layer.dropout
        self.train(layer.training)  # a new module defaults to train mode; keep the wrapped layer's mode

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if kwargs.get("encoder_hidden_states") is not None or kwargs.get("cache") is not None:
            raise NotImplementedError("SelfAttentionWrapper handles encoder self-attention only")
        q = self._heads(self.query(hidden_states))
        k = self._heads(self.key(hidden_states))
        v = self._heads(self.value(hidden_states))
        out = self.attend(q, k, v, attention_mask)  # (B, H, T, d_head)
        b, _, t, _ = out.shape
        return out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim), None

    def scores(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Scaled dot-product scores (B, H, T_q, T_k) with the additive mask applied."""
        s = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
        return s if mask is None else s + mask

    def attend(self, q, k, v, mask):
        probs = F.dropout(torch.softmax(self.scores(q, k, mask), dim=-1), p=self.dropout.p,
                          training=self.training)
        return torch.matmul(probs, v)


class PrefixSelfAttention(SelfAttentionWrapper):
    """P-tuning v2 (Liu et al. 2022) in one layer: ``prefix_len`` learned key and value vectors per head are
    prepended to the keys and values, visible to every query and never masked.

    They are initialised N(0, ``init_std``) (small: near-zero keys give the prefix uniform-ish weight and
    near-zero values, so training starts close to, not exactly at, the pretrained function; an exact start
    is impossible for a prefix, whose keys always take some attention mass).
    """

    def __init__(self, layer: nn.Module, prefix_len: int, init_std: float = 0.02):
        super().__init__(layer)
        if prefix_len < 1:
            raise ValueError(f"prefix_len must be >= 1; got {prefix_len}")
        shape = (self.n_heads, prefix_len, self.head_dim)
        self.prefix_key = nn.Parameter(torch.randn(shape) * init_std)
        self.prefix_value = nn.Parameter(torch.randn(shape) * init_std)
        self.train(layer.training)

    def attend(self, q, k, v, mask):
        b = q.shape[0]
        pk = self.prefix_key.unsqueeze(0).expand(b, -1, -1, -1).to(k.dtype)
        pv = self.prefix_value.unsqueeze(0).expand(b, -1, -1, -1).to(v.dtype)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        if mask is not None:  # the prefix columns are always visible
            mask = F.pad(mask, (self.prefix_key.shape[1], 0), value=0.0)
        return super().attend(q, k, v, mask)


def _layers(bert: nn.Module):
    encoder = getattr(bert, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise TypeError(f"expected a BERT-style model with .encoder.layer; got {type(bert).__name__}")
    return layers


def replace_self_attention(bert: nn.Module, factory: Callable[[int, nn.Module], nn.Module]) -> None:
    """Replace every layer's self-attention module by ``factory(layer_index, original_module)`` (in place).
    The model must use eager attention (:func:`load_encoder` sets it) so the mask is additive."""
    if getattr(bert.config, "_attn_implementation", "eager") != "eager":
        raise ValueError("replace_self_attention needs eager attention: call bert.set_attn_implementation('eager')")
    for i, layer in enumerate(_layers(bert)):
        layer.attention.self = factory(i, layer.attention.self)


# --- parameter-efficient set-ups --------------------------------------------------------------------------

def configure_peft(model: nn.Module, method: str, *, r: int = 8, alpha: float = 16, prefix_len: int = 10,
                   lora_targets: Sequence[str] = ("query", "value")) -> int:
    """Make ``method``'s parameters of ``model``'s BERT trainable and freeze the rest of the BERT; return
    the number of trainable BERT parameters (anything outside the BERT, such as a classifier head, keeps
    its own ``requires_grad``).

    - ``frozen``: nothing in the encoder trains (a linear probe when a head is on top);
    - ``full``: every encoder parameter trains;
    - ``lora``: peft LoRA of rank ``r`` (scale ``alpha / r``) on ``lora_targets``; B starts at zero, so the
      model starts as the pretrained one;
    - ``prefix``: :class:`PrefixSelfAttention` with ``prefix_len`` prefixes in every layer;
    - ``bitfit``: the encoder's bias vectors only (Ben Zaken et al. 2022).
    """
    if method not in PEFT_METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; expected one of {PEFT_METHODS}")
    bert = model.bert if hasattr(model, "bert") else model
    _layers(bert)  # type check before modifying anything
    for p in bert.parameters():
        p.requires_grad_(method == "full")
    if method == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1; got {r}")
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                           target_modules=list(lora_targets), bias="none"), bert)
        for name, p in bert.named_parameters():
            p.requires_grad_("lora_" in name)
    elif method == "prefix":
        replace_self_attention(bert, lambda _i, layer: PrefixSelfAttention(layer, prefix_len))
    elif method == "bitfit":
        for name, p in bert.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
    return count_trainable(bert)


# --- contrastive losses -----------------------------------------------------------------------------------

def info_nce_loss(queries: torch.Tensor, passages: torch.Tensor, temperature: float = 0.05,
                  hard_negatives: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    """InfoNCE with in-batch negatives: query i's positive is passage i, every other passage (and every
    row of ``hard_negatives``, shared by the batch) is a negative; mean over queries of
    ``-log softmax(sim / temperature)[i, i]`` with cosine similarity when ``normalize``."""
    if queries.shape != passages.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and passages {tuple(passages.shape)} must match")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    keys = passages if hard_negatives is None else torch.cat([passages, hard_negatives], dim=0)
    if normalize:
        queries, keys = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    logits = queries @ keys.T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def supervised_contrastive_loss(features: torch.Tensor, labels: torch.Tensor,
                                temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2, "L_out") on L2-normalised ``features``:
    for each anchor i with at least one other sample of its label, minus the mean over those positives p of
    ``log(exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t))``; averaged over such anchors (0 if none)."""
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, d) and labels (N,); got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    n = features.shape[0]
    z = F.normalize(features, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -math.inf)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    n_pos = positives.sum(1)
    anchors = n_pos > 0
    if not anchors.any():
        return features.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / n_pos[anchors])
    return per_anchor.mean()
