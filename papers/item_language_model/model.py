"""ILM's item encoder (Q-Former), the MLP adaptor baseline, the frozen LM with soft item tokens, and the
phase-1 / phase-2 losses.

The Q-Former is a custom module (``transformers``' BLIP-2 Q-Former is tied to image features and a BERT
text tower; here its "image" is one CF vector split into ``n_kv`` key/value tokens, Sec. 3.1). The frozen
LM is a ``transformers`` causal LM (a tiny Llama pretrained here on the catalogue's item texts, or
SmolLM2-135M in ``full``); soft tokens enter it through ``inputs_embeds`` (Sec. 3.3, Fig. 2d), which
``shared.lm``'s id-based scoring cannot express.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class WordTokenizer:
    """Whitespace word tokenizer over a closed vocabulary (the tiny LM's); id 0 = <pad>, 1 = <bos>."""

    def __init__(self, words: list[str]):
        self.vocab = ["<pad>", "<bos>"] + sorted(set(words))
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id = 0, 1

    def encode(self, text: str) -> list[int]:
        return [self.index[w] for w in text.split()]


class HFTokenizer:
    """The same interface over a ``transformers`` tokenizer (SmolLM2 in ``full``)."""

    def __init__(self, tok):
        self.tok = tok
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else self.pad_id

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) ids right-padded and the (N, T) mask of real tokens. Right padding is harmless for a causal
    LM when the padded positions come last and are masked out of every loss and score."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.float32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1.0
    return ids, mask


def soft_prefix_logprobs(lm, soft: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | soft prefix, ids[:, :t]) for every t: (B, T).

    soft: (B, S, d_lm) soft tokens (S >= 1); ids: (B, T) token ids that follow them. The first id is
    predicted from the last soft token."""
    tok = lm.get_input_embeddings()(ids)                                   # (B, T, d_lm)
    x = torch.cat([soft.to(tok.dtype), tok], 1)                            # (B, S+T, d_lm)
    S, T = soft.shape[1], ids.shape[1]
    logits = lm(inputs_embeds=x, use_cache=False).logits[:, S - 1:S + T - 1].float()  # (B, T, V)
    return torch.gather(F.log_softmax(logits, -1), 2, ids[..., None]).squeeze(-1)


def masked_mean_nll(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the masked tokens (one weight per scored token)."""
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)


class QFormerLayer(nn.Module):
    """Pre-LN block: self-attention over the queries, cross-attention from queries to the item's CF
    key/value tokens, MLP (BLIP-2 Q-Former, query branch)."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        h = self.ln1(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        q = q + self.cross_attn(self.ln2(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.ln3(q))


class QFormer(nn.Module):
    """CF embedding (N, d_cf) -> query outputs (N, n_query, d_q); the CF vector is linearly split into
    ``n_kv`` key/value tokens so the cross-attention is not over a single token."""

    def __init__(self, d_cf: int, d_q: int, n_query: int, n_kv: int, n_layers: int, n_heads: int):
        super().__init__()
        self.n_kv, self.d_q = n_kv, d_q
        self.to_kv = nn.Linear(d_cf, n_kv * d_q)
        self.kv_pos = nn.Parameter(0.02 * torch.randn(n_kv, d_q))
        self.queries = nn.Parameter(0.02 * torch.randn(n_query, d_q))
        self.layers = nn.ModuleList(QFormerLayer(d_q, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_q)

    def forward(self, cf: torch.Tensor) -> torch.Tensor:
        kv = self.to_kv(cf).view(cf.shape[0], self.n_kv, self.d_q) + self.kv_pos
        q = self.queries.expand(cf.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, kv)
        return self.ln(q)


class ILMEncoder(nn.Module):
    """Q-Former + projection adaptor to the LM width (Fig. 2d), plus the phase-1 heads: item and text
    projections for item-text contrastive (learned temperature), and an item-item contrastive head."""

    def __init__(self, d_cf: int, d_q: int, n_query: int, n_kv: int, n_layers: int, n_heads: int,
                 d_lm: int, d_text: int, d_con: int = 64):
        super().__init__()
        self.qformer = QFormer(d_cf, d_q, n_query, n_kv, n_layers, n_heads)
        self.proj = nn.Linear(d_q, d_lm)
        self.item_head = nn.Linear(d_q, d_con)
        self.text_head = nn.Linear(d_text, d_con)
        self.ii_head = nn.Linear(d_q, d_con)
        self.log_temp = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(0.07)))))

    def soft_tokens(self, cf: torch.Tensor) -> torch.Tensor:
        """(N, d_cf) -> (N, n_query, d_lm)"""
        return self.proj(self.qformer(cf))


class MLPAdaptor(nn.Module):
    """CoLLM-style baseline: a 2-layer MLP from the same CF embedding to ``n_query`` soft tokens."""

    def __init__(self, d_cf: int, hidden: int, n_query: int, d_lm: int):
        super().__init__()
        self.n_query, self.d_lm = n_query, d_lm
        self.net = nn.Sequential(nn.Linear(d_cf, hidden), nn.GELU(), nn.Linear(hidden, n_query * d_lm))

    def soft_tokens(self, cf: torch.Tensor) -> torch.Tensor:
        return self.net(cf).view(cf.shape[0], self.n_query, self.d_lm)


def info_nce(sim: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a (B, B) similarity matrix whose diagonal holds the positives."""
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


def item_text_contrastive(enc: ILMEncoder, q: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
    """BLIP-2 ITC: similarity = max over query outputs of cos(item query, text), over a learned
    temperature; q (B, n_query, d_q), text_feat (B, d_text)."""
    z = F.normalize(enc.item_head(q), dim=-1)                      # (B, Q, C)
    t = F.normalize(enc.text_head(text_feat), dim=-1)              # (B, C)
    sim = torch.einsum("bqc,nc->bnq", z, t).amax(-1)               # (B, B)
    return info_nce(sim / enc.log_temp.exp().clamp(min=1e-3))


def item_item_contrastive(enc: ILMEncoder, qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """ILM's item-item contrastive loss (Sec. 3.2, Fig. 2b): co-consumed items are positives, the other
    items of the batch negatives; item representation = mean of the query outputs."""
    za = F.normalize(enc.ii_head(qa.mean(1)), dim=-1)
    zb = F.normalize(enc.ii_head(qb.mean(1)), dim=-1)
    return info_nce(za @ zb.T / enc.log_temp.exp().clamp(min=1e-3))


def text_retrieval_at_k(enc: ILMEncoder, cf: torch.Tensor, text_feat: torch.Tensor, k: int) -> float:
    """Text -> item retrieval over the whole catalogue with the ITC similarity: fraction of item texts whose
    own item is among the k most similar items (the language-alignment diagnostic); ties count
    against it, so a constant encoder retrieves nothing below k = n_items."""
    with torch.no_grad():
        z = F.normalize(enc.item_head(enc.qformer(cf)), dim=-1)
        t = F.normalize(enc.text_head(text_feat), dim=-1)
        sim = torch.einsum("bqc,nc->nbq", z, t).amax(-1)          # (texts, items)
        own = sim.diagonal()
        rank = (sim >= own[:, None]).sum(1)  # ties count against the own item (itself included once)
    return float((rank <= k).float().mean())
