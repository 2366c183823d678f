"""DisenDiff (Zhang et al., CVPR 2024) in the toy world of :mod:`papers.disendiff.world`.

* :func:`pretrain`: the "foundation model": DDPM epsilon-prediction on the generic world (with 10% caption
  dropout so classifier-free guidance works at generation).
* :func:`personalise`: Custom Diffusion (Kumari et al. 2023): only the cross-attention ``to_k``/``to_v`` and the
  two new token embeddings train, on ONE image with caption ``<new1> class1 and <new2> class2`` plus
  prior-preservation images of the generic world; ``calibrate=True`` adds DisenDiff's attention-calibration
  losses (Sec. 3.2, Eq. 5-8): L_bind = sum_k 1 - IoU(sg(class_k), modifier_k) and L_s&s = IoU(class_1, class_2),
  weighted by ``alpha``, with the gradient through the first (BOS) token's key/value stopped.
* metrics: soft IoU of each new token's cross-attention map with its object mask, overlap of the two new
  tokens' maps, and a generation-side leakage: prompted with ``<new_k> class_k`` alone, the share of the
  generated novel-coloured pixels that carry the OTHER concept's novel colour.
* ``measure_*``: the registry's statistics, gates and controls from the per-(seed, pair, arm) table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from papers.disendiff.world import (BOS, COLOURS, NEW1, NEW2, PAD, POS_CLS, POS_MOD, SEQ, TinyT2I, alpha_bar,
                                    concept_pair, generic_batch)
from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.seeding import seed_everything
from shared.stats import seed_measurement
from shared.training import TrainConfig, train

T_STEPS = 100
EVAL_T = (25, 50, 75)
ARMS = ("baseline", "method", "baseline_aa")


# ------------------------------------------------------------------------------------------ map processing
def gaussian_smooth(maps: torch.Tensor, k: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Depthwise Gaussian smoothing (kernel k, std sigma, reflect padding) of maps (..., H, W)."""
    ax = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kern = (g[:, None] * g[None, :]).view(1, 1, k, k)
    shape = maps.shape
    x = maps.reshape(-1, 1, shape[-2], shape[-1])
    x = F.pad(x, (k // 2,) * 4, mode="reflect")
    return F.conv2d(x, kern.to(x.dtype)).reshape(shape)


def normalise(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise each map (..., H, W) to [0, 1], then Gaussian-smooth it (k=3, sigma=0.5), as DisenDiff
    does before its IoU."""
    flat = maps.flatten(-2)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    flat = (flat - lo) / (hi - lo + eps)
    return gaussian_smooth(flat.view(maps.shape))


def soft_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Soft IoU over the last two dims: sum(a b) / sum(a + b - a b); equals the IoU for binary maps."""
    inter = (a * b).sum((-2, -1))
    return inter / ((a + b - a * b).sum((-2, -1)) + eps)


def calibration_losses(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DisenDiff's losses (Sec. 3.2) from token maps (B, L, H, W) of a two-concept caption
    [BOS, <new1>, class1, and, <new2>, class2]. Class maps are squared after normalisation (self-filter).
    L_bind = mean_k [1 - IoU(sg(class_k), modifier_k)]  (the modifier is pulled to its class, not vice versa);
    L_sup  = IoU(class_1, class_2)  (no stop-gradient: the two class maps are pushed apart)."""
    m = normalise(maps)
    cls = [m[:, p] ** 2 for p in POS_CLS]
    mod = [m[:, p] for p in POS_MOD]
    l_bind = torch.stack([1 - soft_iou(c.detach(), md) for c, md in zip(cls, mod)]).mean()
    l_sup = soft_iou(cls[0], cls[1]).mean()
    return l_bind, l_sup


def leakage(images: torch.Tensor, own: list, other: list, fg_threshold: float = 0.3,
            max_dist: float = 0.2) -> tuple[float, float, float]:
    """Generation-side leakage of images (n, 3, H, W) in [-1, 1] generated for one concept.

    Foreground pixels (max channel above ``fg_threshold`` in [0, 1] units) are assigned the nearest colour among
    the concept's own novel colour(s), the other concept's and the 7 pre-training colours, and count only when
    that colour is within ``max_dist`` (RGB distance in [0, 1] units; noise-like pixels stay unassigned).
    Returns (leakage = other / (own + other) among novel-coloured pixels, NaN when there are none;
    novel share = (own + other) / foreground; foreground share of all pixels)."""
    x = ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3)
    fg = x.max(1).values > fg_threshold
    pal = torch.tensor(list(own) + list(other) + list(COLOURS.values()), dtype=torch.float32)
    if fg.sum() == 0:
        return float("nan"), 0.0, 0.0
    dist, near = torch.cdist(x[fg], pal).min(1)
    close = dist <= max_dist
    n_own = int(((near < len(own)) & close).sum())
    n_other = int(((near >= len(own)) & (near < len(own) + len(other)) & close).sum())
    concept = n_own + n_other
    leak = n_other / concept if concept else float("nan")
    return leak, concept / int(fg.sum()), float(fg.float().mean())


# -------------------------------------------------------------------------------------------- diffusion
def diffusion_loss(model: TinyT2I, x0: torch.Tensor, tokens: torch.Tensor, ab: torch.Tensor,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image epsilon-prediction MSE (B,) at uniform random t, and the t used (Ho et al. 2020, Eq. 14)."""
    B = x0.shape[0]
    t = torch.randint(0, T_STEPS, (B,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = ab[t].view(B, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return ((model(xt, t, tokens) - eps) ** 2).mean((1, 2, 3)), t


def pretrain(seed: int, steps: int, batch: int, lr: float, width: int = 32, progress: bool = False,
             p_uncond: float = 0.1):
    """Train the toy foundation model on the generic world; returns (model, curve DataFrame)."""
    rng = seed_everything(seed)
    model = TinyT2I(width=width)
    ab = alpha_bar(T_STEPS)
    gen = torch.Generator().manual_seed(seed)

    def batch_fn(step):
        x, tok, _ = generic_batch(rng, batch)
        drop = torch.as_tensor(rng.random(batch) < p_uncond)
        tok[drop] = torch.tensor([BOS] + [PAD] * (SEQ - 1))
        return x, tok

    def loss_fn(m, b):
        return diffusion_loss(m, b[0], b[1], ab, gen)[0].mean()

    hist = train(model, TrainConfig(steps=steps, lr=lr, warmup_steps=min(50, steps // 10), log_every=50,
                                    desc="pretrain", progress=progress), batch_fn, loss_fn, "cpu")
    return model, hist.to_frame()


@torch.no_grad()
def eval_maps(model: TinyT2I, x0: torch.Tensor, tokens: torch.Tensor, seed: int, draws: int = 4):
    """Token maps (B, L, H, W) of images x0 (B, 3, H, W) averaged over t in EVAL_T and ``draws`` noise draws
    with a fixed generator, plus the mean epsilon MSE over the same (t, noise) set."""
    ab = alpha_bar(T_STEPS)
    gen = torch.Generator().manual_seed(seed)
    acc, losses = 0.0, []
    B = x0.shape[0]
    for t in EVAL_T:
        for _ in range(draws):
            eps = torch.randn(x0.shape, generator=gen)
            tt = torch.full((B,), t)
            xt = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * eps
            losses.append(((model(xt, tt, tokens) - eps) ** 2).mean().item())
            acc = acc + model.token_maps()
    return acc / (len(EVAL_T) * draws), float(np.mean(losses))


def class_token_iou(model: TinyT2I, seed: int, n: int = 64) -> float:
    """Gate statistic: mean soft IoU of the (normalised, squared) class-token maps with their object masks on
    ``n`` held-out two-object generic images."""
    rng = np.random.default_rng(10_000 + seed)
    x, tok, masks = generic_batch(rng, n, p_single=0.0)
    maps, _ = eval_maps(model, x, tok, seed)
    m = normalise(maps)
    ious = [soft_iou(m[:, p] ** 2, masks[:, k]) for k, p in enumerate(POS_CLS)]
    return float(torch.stack(ious).mean())


@torch.no_grad()
def generate(model: TinyT2I, tokens: torch.Tensor, n: int, seed: int, steps: int = 20, guidance: float = 3.0):
    """Deterministic DDIM sampling (eta = 0) with classifier-free guidance: n images (n, 3, H, W)."""
    ab = alpha_bar(T_STEPS)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, model.size, model.size, generator=gen)
    tok = tokens.view(1, -1).expand(n, -1)
    unc = torch.tensor([BOS] + [PAD] * (SEQ - 1)).view(1, -1).expand(n, -1)
    ts = torch.linspace(T_STEPS - 1, 0, steps).round().long()
    for i, t in enumerate(ts):
        tt = torch.full((n,), int(t))
        e = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([tok, unc]))
        eps = e[n:] + guidance * (e[:n] - e[n:])
        a = ab[t]
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


# ------------------------------------------------------------------------------------------ personalise
def personalise(base_state: dict, pair: dict, seed: int, calibrate: bool, steps: int, lr: float, alpha: float,
                n_target: int = 8, n_prior: int = 8, width: int = 32) -> tuple[TinyT2I, pd.DataFrame]:
    """Custom-Diffusion tuning of a copy of the base model on one two-concept image (random horizontal flips),
    plus prior preservation on generic images; with ``calibrate`` the DisenDiff losses are added. Both arms
    share every other setting (steps, lr, batch, data, trainable parameters)."""
    rng = seed_everything(seed)
    model = TinyT2I(width=width)
    model.load_state_dict(base_state)
    std = float(model.tok_emb.weight.detach().std())
    with torch.no_grad():  # new tokens start as random embeddings of the trained tokens' scale (rare-word init)
        model.new_emb.copy_(torch.randn(2, model.new_emb.shape[1], generator=torch.Generator().manual_seed(seed)) * std)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [model.new_emb]
    for a in model.attns:
        a.detach_bos = True
        params += [a.to_k.weight, a.to_v.weight]
    for p in params:
        p.requires_grad_(True)
    ab = alpha_bar(T_STEPS)
    gen = torch.Generator().manual_seed(seed + 1)

    def batch_fn(step):
        flip = torch.as_tensor(rng.random(n_target) < 0.5).view(-1, 1, 1, 1)
        xt = pair["x"].unsqueeze(0).expand(n_target, -1, -1, -1)
        xt = torch.where(flip, xt.flip(-1), xt)
        xp, tp, _ = generic_batch(rng, n_prior)
        return torch.cat([xt, xp]), torch.cat([pair["tokens"].view(1, -1).expand(n_target, -1), tp])

    def loss_fn(m, b):
        per, _ = diffusion_loss(m, b[0], b[1], ab, gen)
        l_target, l_prior = per[:n_target].mean(), per[n_target:].mean()
        l_bind, l_sup = calibration_losses(m.token_maps()[:n_target])
        loss = l_target + l_prior
        if calibrate:
            loss = loss + alpha * (l_bind + l_sup)
        return loss, {"target": float(l_target.detach()), "prior": float(l_prior.detach()),
                      "l_bind": float(l_bind.detach()), "l_sup": float(l_sup.detach())}

    hist = train(model, TrainConfig(steps=steps, lr=lr, schedule="constant", log_every=max(1, steps // 5),
                                    desc="personalise", progress=False), batch_fn, loss_fn, "cpu",
                 parameters=params)
    for a in model.attns:
        a.detach_bos = False
    return model, hist.to_frame()


def evaluate_arm(model: TinyT2I, pair: dict, seed: int, n_gen: int, gen_steps: int) -> dict:
    """Attention and generation metrics of one personalised model on its pair."""
    maps, target_loss = eval_maps(model, pair["x"].unsqueeze(0), pair["tokens"].view(1, -1), seed)
    m = normalise(maps)[0]
    mod_iou = [float(soft_iou(m[p], pair["masks"][k])) for k, p in enumerate(POS_MOD)]
    mod_iou_swap = [float(soft_iou(m[p], pair["masks"][1 - k])) for k, p in enumerate(POS_MOD)]  # the wrong object
    cls_iou = [float(soft_iou(m[p] ** 2, pair["masks"][k])) for k, p in enumerate(POS_CLS)]
    overlap = float(soft_iou(m[POS_MOD[0]], m[POS_MOD[1]]))
    l_bind, l_sup = calibration_losses(maps)
    leaks, shares, fgs = [], [], []
    for k, new in enumerate((NEW1, NEW2)):
        tok = torch.tensor([BOS, new, int(pair["tokens"][POS_CLS[k]]), PAD, PAD, PAD])
        imgs = generate(model, tok, n_gen, seed=seed * 7 + k, steps=gen_steps)
        lk, share, fg = leakage(imgs, pair["palettes"][k], pair["palettes"][1 - k])
        leaks.append(lk)
        shares.append(share)
        fgs.append(fg)
    return {"mod_iou": float(np.mean(mod_iou)), "mod_iou_swap": float(np.mean(mod_iou_swap)), "cls_iou": float(np.mean(cls_iou)), "overlap": overlap,
            "cal_loss": float(l_bind + l_sup), "l_bind": float(l_bind), "l_sup": float(l_sup),
            "target_loss": target_loss, "leakage": float(np.nanmean(leaks)) if not all(map(math.isnan, leaks)) else float("nan"),
            "concept_share": float(np.mean(shares)), "fg_share": float(np.mean(fgs))}


def run_pair(base_state: dict, seed: int, pair_index: int, steps: int, lr: float, alpha: float, n_gen: int,
             gen_steps: int, width: int) -> list[dict]:
    """One (seed, pair) job: draw the pair, measure the base model on it, then personalise three arms on it:
    baseline (Custom Diffusion), method (+ calibration losses) and baseline_aa (Custom Diffusion again under an
    independent tuning seed: the A/A control). Each arm row carries the pre-tuning target loss."""
    torch.set_num_threads(1)
    pair_seed = 1000 * seed + pair_index
    pair = concept_pair(np.random.default_rng(pair_seed))
    base = TinyT2I(width=width)
    base.load_state_dict(base_state)
    _, before = eval_maps(base, pair["x"].unsqueeze(0), pair["tokens"].view(1, -1), pair_seed)
    rows = []
    for arm, tune_seed, cal in (("baseline", pair_seed, False), ("method", pair_seed, True),
                                ("baseline_aa", pair_seed + 500, False)):
        model, _ = personalise(base_state, pair, tune_seed, cal, steps, lr, alpha, width=width)
        r = evaluate_arm(model, pair, pair_seed, n_gen, gen_steps)
        rows.append({"seed": seed, "pair": pair_index, "pair_name": pair["name"], "arm": arm,
                     "target_loss_before": before, **r})
    return rows


# -------------------------------------------------------------------------------------------- measures
def per_seed_difference(rows: pd.DataFrame, metric: str, arm_a: str, arm_b: str) -> pd.Series:
    """Per seed, the mean over pairs of (metric under arm_a - metric under arm_b), pairs matched."""
    wide = rows.pivot_table(index=["seed", "pair"], columns="arm", values=metric)
    return (wide[arm_a] - wide[arm_b]).groupby(level="seed").mean()


def fit_gate(rows: pd.DataFrame, base_class_iou: float, min_class_iou: float, min_fit: float) -> Gate:
    """The attention claims' gate: the base model's class tokens localise (held-out class-token mask IoU >=
    ``min_class_iou``: the premise of L_bind) and both compared arms fit the image (mean relative drop of the
    target denoising loss >= ``min_fit`` in every seed, for baseline and method)."""
    sub = rows[rows["arm"].isin(["baseline", "method"])]
    drop = (1 - sub["target_loss"] / sub["target_loss_before"]).groupby([sub["seed"], sub["arm"]]).mean()
    worst = float(drop.min())
    ok = base_class_iou >= min_class_iou and worst >= min_fit
    return Gate(passed=bool(ok), value=float(min(base_class_iou, worst)),
                detail=f"base class-token mask IoU {base_class_iou:.3f} (need >= {min_class_iou}); smallest per-seed "
                       f"relative target-loss drop {worst:.3f} (need >= {min_fit})")


def _measure_diff(rows, metric, unit, gate):
    diff = per_seed_difference(rows, metric, "method", "baseline")
    aa = per_seed_difference(rows, metric, "baseline_aa", "baseline")
    control = Control(seed_measurement(aa.tolist(), unit=unit),
                      detail=f"A/A: Custom Diffusion under an independent tuning seed minus Custom Diffusion, {metric}")
    return seed_measurement(diff.tolist(), unit=unit), gate, control


def measure_mask_iou_gain(rows: pd.DataFrame, base_class_iou: float, min_class_iou: float = 0.3,
                          min_fit: float = 0.2) -> tuple[Measurement, Gate, Control]:
    """Per seed mean over pairs of method - baseline new-token mask IoU with the token's OWN object mask.
    Control (mask-blind): the same difference scored against the OTHER object's mask, where a real binding
    effect is absent by design; a method that merely sharpens or enlarges the new-token maps on any object
    raises it too, and then the criterion does not discriminate."""
    diff = per_seed_difference(rows, "mod_iou", "method", "baseline")
    swap = per_seed_difference(rows, "mod_iou_swap", "method", "baseline")
    control = Control(seed_measurement(swap.tolist(), unit="IoU difference"),
                      detail="method - baseline new-token IoU with the other object's mask (swapped masks)")
    return (seed_measurement(diff.tolist(), unit="IoU difference"), fit_gate(rows, base_class_iou, min_class_iou, min_fit),
            control)


def measure_overlap_reduction(rows: pd.DataFrame, base_class_iou: float, min_class_iou: float = 0.3,
                              min_fit: float = 0.2) -> tuple[Measurement, Gate, Control]:
    """Per seed mean over pairs of method - baseline overlap IoU of the two new tokens' maps; A/A control."""
    return _measure_diff(rows, "overlap", "IoU difference", fit_gate(rows, base_class_iou, min_class_iou, min_fit))


def measure_leakage_reduction(rows: pd.DataFrame, min_concept_share: float = 0.2) -> tuple[Measurement, Gate, Control]:
    """Per seed mean over pairs of method - baseline generation leakage; the gate asks that personalisation
    shows in generation at all: in both arms and every seed the two concepts' novel colours make up >=
    ``min_concept_share`` of the generated foreground (a faithful rendering of a half-novel texture gives ~0.5,
    a model that never learned the novel colour ~0) and leakage is defined for every row."""
    sub = rows[rows["arm"].isin(["baseline", "method"])]
    share = float(sub.groupby(["seed", "arm"])["concept_share"].mean().min())
    defined = bool(rows["leakage"].notna().all())
    gate = Gate(passed=bool(share >= min_concept_share and defined), value=share,
                detail=f"smallest per-seed concept-colour share of the generated foreground {share:.3f} "
                       f"(need >= {min_concept_share}); leakage defined in every row: {defined}")
    if not defined:
        rows = rows.assign(leakage=rows["leakage"].fillna(0.5))
    return _measure_diff(rows, "leakage", "leakage difference", gate)


def measure_calibration_manipulation(rows: pd.DataFrame) -> tuple[Measurement, Gate | None, Control]:
    """Manipulation check: the calibration objective L_bind + L_s&s (evaluated at fixed t and noise) is lower
    after tuning with it than after tuning without it; A/A control."""
    diff = per_seed_difference(rows, "cal_loss", "method", "baseline")
    aa = per_seed_difference(rows, "cal_loss", "baseline_aa", "baseline")
    return (seed_measurement(diff.tolist(), unit="loss difference"), None,
            Control(seed_measurement(aa.tolist(), unit="loss difference"), detail="A/A Custom Diffusion, cal_loss"))
