"""The toy text-to-image world and its tiny text-conditioned denoiser.

Stable Diffusion v1.5 cannot be loaded offline, so this replication builds a miniature stand-in:

* images: 16x16 RGB, black background, one or two shapes (circle / square / triangle) at random
  non-overlapping positions, with their exact binary masks;
* captions: ``[BOS, shape, colour, and, shape, colour]`` (or ``[BOS, shape, colour, PAD, PAD, PAD]``) over a
  15-word vocabulary whose last two entries are the new tokens ``<new1>``/``<new2>`` of personalisation. The
  COLOUR word plays the paper's *class* word (the pre-trained word whose cross-attention map localises the
  object: a pixel's colour is visible to the denoiser's queries, so colour words are what a tiny model learns to
  localise within a CPU budget; the earlier pilot with shape words as the class found no localisation at all,
  held-out IoU 0.11, chance level), and the new token replaces the shape word in the *modifier* slot, as
  ``<new1> cat`` does in the paper;
* novel concepts: two-colour textures (stripes or checks) of a pre-trained base colour (the class) and a novel
  colour never seen in pre-training (the instance appearance the new token must carry), on a random shape;
* :class:`TinyT2I`: a frozen-in-personalisation text encoder (token + position embedding, one causal
  self-attention layer, causal like CLIP's so a class word sees its modifier) and a small conv denoiser (DDPM
  epsilon prediction) with three cross-attention blocks (16x16, 8x8, 16x16) whose attention probabilities over
  the text tokens are the "cross-attention maps" of the paper (Sec. 3.1). A custom module because
  ``transformers`` has no conditional image denoiser; it mirrors the SD UNet's attn2 (query from pixels,
  key/value from text tokens, softmax over tokens).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE = 16
COLOURS = {  # the attribute words of pre-training (RGB in [0, 1])
    "red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.15, 0.25, 1.0), "yellow": (1.0, 1.0, 0.1),
    "cyan": (0.1, 1.0, 1.0), "magenta": (1.0, 0.1, 1.0), "white": (1.0, 1.0, 1.0),
}
SHAPES = ("circle", "square", "triangle")
NOVEL_COLOURS = {  # only ever seen in the single personalisation image
    "orange": (1.0, 0.55, 0.0), "purple": (0.5, 0.0, 0.8), "teal": (0.0, 0.5, 0.5), "pink": (1.0, 0.6, 0.75),
    "olive": (0.5, 0.5, 0.0), "navy": (0.0, 0.0, 0.45), "brown": (0.55, 0.27, 0.07), "grey": (0.5, 0.5, 0.5),
}
PATTERNS = ("hstripe", "vstripe", "checker")
PAD, BOS, AND = 0, 1, 2
COLOUR_ID = {c: 3 + i for i, c in enumerate(COLOURS)}
SHAPE_ID = {s: 3 + len(COLOURS) + i for i, s in enumerate(SHAPES)}
N_BASE = 3 + len(COLOURS) + len(SHAPES)  # 13 pre-trained words
NEW1, NEW2 = N_BASE, N_BASE + 1  # the two new tokens <new1>, <new2>
SEQ = 6
# token positions in a two-object caption [BOS, modifier1, class1, and, modifier2, class2]: the modifier is a
# shape word in pre-training and a new token in personalisation; the class is a colour word
POS_MOD = (1, 4)
POS_CLS = (2, 5)


def shape_masks(shape_idx: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Binary masks (n, size, size) of shapes (0 circle, 1 square, 2 triangle) centred at (cy, cx) in pixel
    coordinates; each fits a 7x7 box (circle radius 3.2, square side 6, triangle base 7 and height 7)."""
    scale = size / 16.0
    yy = torch.arange(size, dtype=torch.float32).view(1, size, 1) + 0.5
    xx = torch.arange(size, dtype=torch.float32).view(1, 1, size) + 0.5
    dy, dx = (yy - cy.view(-1, 1, 1)) / scale, (xx - cx.view(-1, 1, 1)) / scale
    circle = dy ** 2 + dx ** 2 <= 3.2 ** 2
    square = (dy.abs() <= 3.0) & (dx.abs() <= 3.0)
    triangle = (dy >= -3.5) & (dy <= 3.5) & (dx.abs() <= (dy + 3.5) / 2)
    s = shape_idx.view(-1, 1, 1)
    return torch.where(s == 0, circle, torch.where(s == 1, square, triangle)).float()


def place_two(rng: np.random.Generator, n: int, size: int = SIZE) -> np.ndarray:
    """Centres (n, 2 objects, (y, x)) of two non-overlapping 7x7 boxes inside the canvas."""
    lo, hi = 4.0 * size / 16, size - 4.0 * size / 16
    out = rng.uniform(lo, hi, size=(n, 2, 2))
    bad = np.abs(out[:, 0] - out[:, 1]).max(axis=1) < 7.6 * size / 16
    while bad.any():
        out[bad] = rng.uniform(lo, hi, size=(int(bad.sum()), 2, 2))
        bad = np.abs(out[:, 0] - out[:, 1]).max(axis=1) < 7.6 * size / 16
    return out


def texture(pattern: str, ca, cb, size: int = SIZE) -> torch.Tensor:
    """A (3, size, size) two-colour texture: horizontal stripes, vertical stripes or a checkerboard (period 2)."""
    yy = torch.arange(size).view(size, 1).expand(size, size)
    xx = torch.arange(size).view(1, size).expand(size, size)
    sel = {"hstripe": yy // 2 % 2, "vstripe": xx // 2 % 2, "checker": (yy // 2 + xx // 2) % 2}[pattern].bool()
    a, b = torch.tensor(ca).view(3, 1, 1), torch.tensor(cb).view(3, 1, 1)
    return torch.where(sel.unsqueeze(0), b, a)


def generic_batch(rng: np.random.Generator, n: int, p_single: float = 0.3, size: int = SIZE):
    """n images of the generic world: x (n, 3, H, W) in [-1, 1], tokens (n, 6), masks (n, 2, H, W)
    (the second mask is zero for a one-object image)."""
    pos = place_two(rng, n, size)
    shapes = np.stack([rng.permutation(len(SHAPES))[:2] for _ in range(n)])
    cols = rng.integers(0, len(COLOURS), size=(n, 2))
    single = rng.random(n) < p_single
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    masks = torch.stack([shape_masks(torch.as_tensor(shapes[:, k]), torch.as_tensor(pos[:, k, 0], dtype=torch.float32),
                                     torch.as_tensor(pos[:, k, 1], dtype=torch.float32), size) for k in range(2)], 1)
    masks[torch.as_tensor(single), 1] = 0.0
    img = torch.zeros(n, 3, size, size)
    for k in range(2):
        img = img + masks[:, k:k + 1] * palette[torch.as_tensor(cols[:, k])].view(n, 3, 1, 1)
    tok = np.full((n, SEQ), PAD, dtype=np.int64)
    tok[:, 0] = BOS
    colour_ids = np.array(list(COLOUR_ID.values()))
    shape_ids = np.array(list(SHAPE_ID.values()))
    tok[:, 1], tok[:, 2] = shape_ids[shapes[:, 0]], colour_ids[cols[:, 0]]
    two = ~single
    tok[two, 3], tok[two, 4], tok[two, 5] = AND, shape_ids[shapes[two, 1]], colour_ids[cols[two, 1]]
    return img * 2 - 1, torch.as_tensor(tok), masks


def concept_pair(rng: np.random.Generator, size: int = SIZE) -> dict:
    """One personalisation task: a single image with two novel objects, each a two-colour texture (stripes or
    checks) of a pre-trained base colour (its class word; the two differ) and a novel colour (the instance
    appearance; the two differ) on a random shape; its caption ``[BOS, <new1>, colour1, and, <new2>, colour2]``,
    the object masks and each concept's novel colour (``palettes[k]``, a one-colour list)."""
    names = list(NOVEL_COLOURS)
    base = rng.permutation(len(COLOURS))[:2]
    novel = rng.permutation(len(names))[:2]
    pats = rng.permutation(len(PATTERNS))[:2]
    shapes = rng.permutation(len(SHAPES))[:2]
    pos = place_two(rng, 1, size)[0]
    base_names = list(COLOURS)
    img = torch.zeros(3, size, size)
    masks = []
    for k in range(2):
        m = shape_masks(torch.tensor([shapes[k]]), torch.tensor([pos[k, 0]], dtype=torch.float32),
                        torch.tensor([pos[k, 1]], dtype=torch.float32), size)[0]
        tex = texture(PATTERNS[pats[k]], COLOURS[base_names[base[k]]], NOVEL_COLOURS[names[novel[k]]], size)
        img = img + m * tex
        masks.append(m)
    colour_ids = list(COLOUR_ID.values())
    tok = torch.tensor([BOS, NEW1, colour_ids[base[0]], AND, NEW2, colour_ids[base[1]]])
    palettes = [[NOVEL_COLOURS[names[novel[k]]]] for k in range(2)]
    return {"x": img * 2 - 1, "tokens": tok, "masks": torch.stack(masks), "shapes": [int(s) for s in shapes],
            "palettes": palettes,
            "name": "_".join(f"{base_names[base[k]]}-{names[novel[k]]}-{SHAPES[shapes[k]]}" for k in range(2))}


# ----------------------------------------------------------------------------------------------- diffusion
def alpha_bar(T: int) -> torch.Tensor:
    """Cosine noise schedule (Nichol & Dhariwal 2021): cumulative alpha_bar_t for t = 1..T, shape (T,)."""
    s = 0.008
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    ab = (f[1:] / f[0]).clamp(1e-4, 0.9999)
    return ab.float()


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float().view(-1, 1) * freqs.view(1, -1)
    return torch.cat([a.sin(), a.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class CrossAttention(nn.Module):
    """SD's attn2: queries from pixels, keys/values (``to_k``/``to_v``, the only denoiser weights Custom
    Diffusion tunes) from text tokens, softmax over tokens. ``probs`` (B, heads, HW, L) is kept for the maps."""

    def __init__(self, channels: int, ctx_dim: int, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.norm = nn.GroupNorm(8, channels)
        self.to_q = nn.Linear(channels, dim, bias=False)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, channels)
        self.probs: torch.Tensor | None = None
        self.detach_bos = False

    def forward(self, x, ctx, pad_mask):
        B, C, H, W = x.shape
        h, dh = self.heads, self.dim // self.heads
        q = self.to_q(self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, dim)
        k, v = self.to_k(ctx), self.to_v(ctx)  # (B, L, dim)
        if self.detach_bos:  # DisenDiff stops the gradient through the first token's key and value
            k = torch.cat([k[:, :1].detach(), k[:, 1:]], 1)
            v = torch.cat([v[:, :1].detach(), v[:, 1:]], 1)
        q = q.view(B, H * W, h, dh).transpose(1, 2)
        k = k.view(B, -1, h, dh).transpose(1, 2)
        v = v.view(B, -1, h, dh).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, h, HW, L)
        logits = logits.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        p = logits.softmax(-1)
        self.probs = p
        o = (p @ v).transpose(1, 2).reshape(B, H * W, self.dim)
        return x + self.to_out(o).transpose(1, 2).view(B, C, H, W)


class TinyT2I(nn.Module):
    """Text encoder + conv denoiser with cross-attention at 16x16, 8x8, 16x16 (84k parameters at width 16, 278k at 32)."""

    def __init__(self, width: int = 32, ctx_dim: int = 32, size: int = SIZE, text_encoder: str = "causal"):
        super().__init__()
        if text_encoder not in ("causal", "bidirectional", "none"):
            raise ValueError(f"text_encoder must be causal, bidirectional or none; got {text_encoder!r}")
        self.size, self.text_encoder = size, text_encoder
        self.tok_emb = nn.Embedding(N_BASE, ctx_dim)
        self.new_emb = nn.Parameter(torch.zeros(2, ctx_dim))  # <new1>, <new2>: set at personalisation
        self.pos_emb = nn.Parameter(torch.randn(SEQ, ctx_dim) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(ctx_dim, 2, 2 * ctx_dim, dropout=0.0, batch_first=True,
                                                  norm_first=True)
        self.ln = nn.LayerNorm(ctx_dim)
        tdim = 2 * width
        self.temb = nn.Sequential(nn.Linear(width, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.width = width
        self.conv_in = nn.Conv2d(3, width, 3, padding=1)
        self.r1 = ResBlock(width, width, tdim)
        self.a1 = CrossAttention(width, ctx_dim)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.r2 = ResBlock(2 * width, 2 * width, tdim)
        self.a2 = CrossAttention(2 * width, ctx_dim)
        self.r3 = ResBlock(2 * width, 2 * width, tdim)
        self.up = nn.Conv2d(2 * width, width, 3, padding=1)
        self.r4 = ResBlock(2 * width, width, tdim)
        self.a3 = CrossAttention(width, ctx_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, 3, 3, padding=1))

    @property
    def attns(self) -> list[CrossAttention]:
        return [self.a1, self.a2, self.a3]

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) -> contextual embeddings (B, L, ctx_dim) and the padding mask (B, L)."""
        table = torch.cat([self.tok_emb.weight, self.new_emb], 0)
        e = table[tokens] + self.pos_emb[: tokens.shape[1]]
        pad = tokens == PAD
        if self.text_encoder == "none":
            return self.ln(e), pad
        causal = None
        if self.text_encoder == "causal":  # CLIP's text encoder is causal: a class token sees its modifier
            L = tokens.shape[1]
            causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
        return self.ln(self.encoder(e, src_mask=causal, src_key_padding_mask=pad)), pad

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        ctx, pad = self.encode(tokens)
        temb = self.temb(timestep_embedding(t, self.width))
        h0 = self.r1(self.conv_in(x), temb)
        h0 = self.a1(h0, ctx, pad)
        h = self.r2(self.down(h0), temb)
        h = self.a2(h, ctx, pad)
        h = self.r3(h, temb)
        h = self.up(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.r4(torch.cat([h, h0], 1), temb)
        h = self.a3(h, ctx, pad)
        return self.out(h)

    def token_maps(self) -> torch.Tensor:
        """Cross-attention maps of the last forward pass, averaged over heads and the three layers at 16x16
        (the 8x8 layer upsampled bilinearly): (B, L, H, W)."""
        maps = []
        for a in self.attns:
            p = a.probs.mean(1)  # (B, HW, L)
            B, N, L = p.shape
            r = int(round(math.sqrt(N)))
            m = p.transpose(1, 2).reshape(B, L, r, r)
            if r != self.size:
                m = F.interpolate(m, size=(self.size, self.size), mode="bilinear", align_corners=False)
            maps.append(m)
        return torch.stack(maps).mean(0)
