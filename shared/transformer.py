"""A small configurable pre-LN transformer for synthetic tasks trained from scratch.

Why a custom module and not a ``transformers`` class: the synthetic-task papers need things the HF
classes do not expose cleanly - bidirectional attention in a decoder-shaped model, one-hot (fixed,
non-learned) positions, a read-out at arbitrary positions with no causal shift, continuous inputs fed
through a linear read-in, attention-only blocks. Language models trained on text use
``transformers`` configs instead (see ``shared.lm``), so their probing and generation helpers match
the pretrained model's.

Shapes: B = batch, T = sequence length, D = d_model, H = heads, V = vocabulary, O = outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TransformerConfig:
    vocab_size: int
    max_len: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 0  # 0 -> 4 * d_model
    dropout: float = 0.0
    causal: bool = True
    positions: str = "learned"  # "learned" | "onehot" | "none"
    mlp: bool = True  # False gives attention-only blocks
    n_out: int = 0  # 0 -> vocab_size (a per-position classifier over the vocabulary)
    bias: bool = True

    def __post_init__(self) -> None:
        if self.positions not in ("learned", "onehot", "none"):
            raise ValueError(f"positions must be learned, onehot or none; got {self.positions!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.positions == "onehot" and self.d_model <= self.max_len:
            raise ValueError("one-hot positions need d_model > max_len (they occupy max_len dimensions)")
        self.d_ff = self.d_ff or 4 * self.d_model
        self.n_out = self.n_out or self.vocab_size


@dataclass
class TransformerOutput:
    logits: torch.Tensor  # (B, T, O)
    hidden_states: list[torch.Tensor] = field(default_factory=list)  # n_layers + 1 tensors (B, T, D)


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                queries: slice | torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); with ``queries`` (positions along T) only those positions attend and the
        output is (B, P, D): keys and values still come from every position. ``mask`` must then already be
        restricted to the query rows (``Transformer`` does this)."""
        B, T, D = x.shape
        H = self.n_heads
        if queries is None:
            q, k, v = self.qkv(x).split(D, dim=2)
        else:  # the query projection only where it is read; same weights as the fused projection
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, queries], w[:D], None if b is None else b[:D])
            k, v = F.linear(x, w[D:], None if b is None else b[D:]).split(D, dim=2)
        # (B, T, D) -> (B, H, T, D/H)
        q, k, v = (t.reshape(B, t.shape[1], H, D // H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None and queries is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(y.transpose(1, 2).reshape(B, q.shape[2], D))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = SelfAttention(cfg)
        self.has_mlp = cfg.mlp
        if cfg.mlp:
            self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
            self.mlp = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias), nn.GELU(),
                nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias),
            )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                queries: slice | torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), or (B, P, D) at the positions ``queries`` only (see ``SelfAttention``)."""
        a = self.drop(self.attn(self.ln1(x), mask, causal, queries))
        x = (x if queries is None else x[:, queries]) + a
        if self.has_mlp:
            x = x + self.drop(self.mlp(self.ln2(x)))
        return x


class Transformer(nn.Module):
    """Token (or continuous) inputs -> per-position logits, with optional per-layer hidden states."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        tok_dim = cfg.d_model - cfg.max_len if cfg.positions == "onehot" else cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, tok_dim)
        if cfg.positions == "learned":
            self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        elif cfg.positions == "onehot":
            self.register_buffer("pos_onehot", torch.eye(cfg.max_len), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.head = nn.Linear(cfg.d_model, cfg.n_out, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token (or given) embeddings plus positions: (B, T) ids or (B, T, D_tok) -> (B, T, D)."""
        x = self.tok_emb(idx) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        if T > self.cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len {self.cfg.max_len}")
        if self.cfg.positions == "learned":
            x = x + self.pos_emb(torch.arange(T, device=x.device))
        elif self.cfg.positions == "onehot":
            x = torch.cat([x, self.pos_onehot[:T].to(x.dtype).expand(B, T, -1)], dim=-1)
        return self.drop(x)

    def _mask(self, T: int, key_padding_mask: torch.Tensor | None, device) -> torch.Tensor | None:
        """Boolean attention mask (True = may attend), or None to use SDPA's built-in causal path."""
        if key_padding_mask is None:
            return None
        keep = key_padding_mask[:, None, None, :].bool()  # (B, 1, 1, T)
        if self.cfg.causal:
            keep = keep & torch.ones(T, T, dtype=torch.bool, device=device).tril()
        # a fully masked query row (a padded query) would give NaN; let it see itself
        return keep | torch.eye(T, dtype=torch.bool, device=device)

    @staticmethod
    def _check_read_at(read_at: slice | torch.Tensor, T: int) -> None:
        if isinstance(read_at, slice):
            if not range(T)[read_at]:
                raise ValueError(f"read_at {read_at} selects nothing from a sequence of length {T}")
            return
        if not isinstance(read_at, torch.Tensor) or read_at.dtype != torch.long or read_at.dim() != 1:
            raise ValueError("read_at must be a slice or a 1-D tensor of int64 indices")
        if read_at.numel() == 0 or int(read_at.min()) < 0 or int(read_at.max()) >= T:
            raise ValueError(f"read_at must be non-empty indices in [0, {T}); got {read_at.tolist()}")

    def forward(
        self,
        idx: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        return_hidden: bool = False,
        read_at: slice | torch.Tensor | None = None,
    ) -> TransformerOutput:
        """``idx`` (B, T) token ids, or ``inputs_embeds`` (B, T, D_tok); ``key_padding_mask`` (B, T), True
        for real tokens. Returns logits (B, T, O) at every position and, if asked, the residual stream
        after the embedding and after each block.

        ``read_at`` (a slice or 1-D int64 indices along T) asks for the logits at those positions only,
        (B, P, O): the last block then computes its query projection, attention output, MLP and the head
        at those positions alone (every position still serves as a key and value), which saves about
        (1 - P/T) of the last block's work. The logits are those of the full forward at the same positions
        (equal up to float rounding). Not combined with ``return_hidden``, whose last entry would be partial."""
        x = self.embed(idx, inputs_embeds)
        T = x.shape[1]
        if read_at is not None:
            if return_hidden:
                raise ValueError("read_at cannot be combined with return_hidden")
            self._check_read_at(read_at, T)
        mask = self._mask(T, key_padding_mask, x.device)
        hidden = [x] if return_hidden else []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == last and read_at is not None:
                if mask is not None:
                    rows = mask[:, :, read_at]
                elif self.cfg.causal:
                    rows = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()[read_at]
                else:
                    rows = None
                x = block(x, rows, self.cfg.causal, read_at)
            else:
                x = block(x, mask, self.cfg.causal)
            if return_hidden:
                hidden.append(x)
        if read_at is not None and not self.blocks:
            x = x[:, read_at]
        return TransformerOutput(self.head(self.ln_f(x)), hidden)
