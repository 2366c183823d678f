# %% [markdown]
# # Attention Calibration for Disentangled Text-to-Image Personalization: replication in a toy world
#
# Zhang, Yang, Zhou, Wang (CVPR 2024), [arXiv:2403.18551](https://arxiv.org/abs/2403.18551).
#
# **The paper.** Personalising Stable Diffusion from ONE image that contains two concepts (Custom Diffusion
# style: tune the cross-attention keys/values and two new token embeddings) entangles the concepts: each new
# token's cross-attention spreads over both objects, and generating one concept alone leaks the other's
# appearance. DisenDiff adds attention-calibration losses: L_bind pulls each new modifier token's map onto its
# class token's map, L_s&s pushes the two class maps apart. It reports better CLIP image alignment per concept.
#
# **This notebook.** Stable Diffusion cannot be loaded offline, so a toy text-to-image world stands in: 16x16
# RGB images of coloured shapes with exact masks, captions `[BOS, shape, colour, and, shape, colour]`, and a
# ~84k-parameter text-conditioned denoiser (causal one-layer text encoder, three cross-attention blocks)
# pre-trained here from scratch. The COLOUR word plays the paper's class word (the pre-trained word whose map
# localises the object); the new token takes the shape word's (modifier) slot. The model is then personalised
# on one image of two novel objects (a known base colour textured with a novel colour) with the caption
# `<new1> colour1 and <new2> colour2`, by Custom Diffusion with and without the calibration losses (same data,
# steps, learning rate and trainable parameters), plus an A/A arm (Custom Diffusion under another tuning seed).
# The claims, gates and controls are registered in `claims.yaml`, committed before the first `small` run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner; this toy runs on CPU)
output_dir: str = ""  # where outputs go; empty = scratch/disendiff (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (pairs drawn, new-token init, tuning noise) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
pairs_per_seed: int = 2  # personalisation tasks (two-concept images) per seed | x >= 1
pretrain_seed: int = 0  # seed of the one toy foundation model shared by all personalisations | x >= 0
pretrain_steps: int = 600  # pre-training steps of the toy denoiser | x >= 1
pretrain_batch: int = 32  # pre-training batch size | x >= 2
pretrain_lr: float = 0.008  # pre-training peak learning rate (cosine) | x > 0
width: int = 16  # base channel width of the denoiser (multiple of 8) | x >= 8 and x % 8 == 0
tune_steps: int = 150  # personalisation steps, identical for every arm | x >= 1
tune_lr: float = 0.003  # personalisation learning rate (constant), identical for every arm | x > 0
alpha: float = 0.1  # weight of L_bind + L_s&s in the method arm | x >= 0
n_gen: int = 8  # generated images per concept for the leakage measure | x >= 1
gen_steps: int = 20  # DDIM steps of generation | x >= 2
min_class_iou: float = 0.3  # gate: held-out class-token mask IoU of the base model | 0 <= x <= 1
min_fit: float = 0.2  # gate: smallest per-seed relative drop of the target denoising loss | 0 <= x <= 1
min_concept_share: float = 0.2  # gate: smallest per-seed novel-colour share of generated foreground | 0 <= x <= 1
workers: int = 2  # parallel single-threaded worker processes for the personalisation jobs | x >= 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from papers.disendiff import TITLE, URL
from papers.disendiff.method import (ARMS, class_token_iou, eval_maps, measure_calibration_manipulation,
                                     measure_leakage_reduction, measure_mask_iou_gain, measure_overlap_reduction,
                                     normalise, personalise, pretrain, run_pair)
from papers.disendiff.world import POS_MOD, concept_pair
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.legends import place_legends
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "disendiff")
torch.set_num_threads(1)  # one thread: faster than two on a shared 2-core machine (pilot: ~3x)

# %% [markdown]
# ## 1. The toy foundation model
# One model, pre-trained on the generic world (solid colours, known shapes), plays the role of Stable
# Diffusion: every personalisation starts from it. Its class tokens must localise on held-out images (gate).

# %%
base, pre_curve = pretrain(pretrain_seed, pretrain_steps, pretrain_batch, pretrain_lr, width=width, progress=progress)
base_state = {k: v.clone() for k, v in base.state_dict().items()}
base_class_iou = class_token_iou(base, pretrain_seed)
print(f"final pre-training loss {pre_curve['loss'].iloc[-1]:.4f}; held-out class-token mask IoU {base_class_iou:.3f}")

# %% [markdown]
# ## 2. Personalisation: three arms per (seed, pair)

# %%
jobs = [(base_state, s, p, tune_steps, tune_lr, alpha, n_gen, gen_steps, width) for s in seeds
        for p in range(pairs_per_seed)]
done = run_jobs(run_pair, jobs, workers=workers,
                on_done=(lambda i, r, n: print(f"job {n}/{len(jobs)} done", flush=True)) if progress else None)
rows = pd.DataFrame([r for job in done for r in job])
rows.groupby("arm")[["mod_iou", "mod_iou_swap", "cls_iou", "overlap", "leakage", "concept_share", "cal_loss", "target_loss"]].mean()

# %% [markdown]
# ## 3. Verdicts

# %%
claims = load_claims("disendiff")
m, g, c = measure_mask_iou_gain(rows, base_class_iou, min_class_iou, min_fit)
claims["attention_mask_iou_gain"].evaluate(m, gate=g, control=c, detail=(
    f"new-token mask IoU: baseline {rows[rows.arm == 'baseline'].mod_iou.mean():.3f}, "
    f"method {rows[rows.arm == 'method'].mod_iou.mean():.3f}"))
m, g, c = measure_overlap_reduction(rows, base_class_iou, min_class_iou, min_fit)
claims["concept_overlap_reduction"].evaluate(m, gate=g, control=c, detail=(
    f"new-token map overlap: baseline {rows[rows.arm == 'baseline'].overlap.mean():.3f}, "
    f"method {rows[rows.arm == 'method'].overlap.mean():.3f}"))
m, g, c = measure_leakage_reduction(rows, min_concept_share)
claims["generation_leakage_reduction"].evaluate(m, gate=g, control=c, detail=(
    f"leakage: baseline {rows[rows.arm == 'baseline'].leakage.mean():.3f}, "
    f"method {rows[rows.arm == 'method'].leakage.mean():.3f}"))
m, _, c = measure_calibration_manipulation(rows)
claims["calibration_loss_manipulation"].evaluate(m, control=c, detail=(
    f"L_bind + L_s&s at eval: baseline {rows[rows.arm == 'baseline'].cal_loss.mean():.3f}, "
    f"method {rows[rows.arm == 'method'].cal_loss.mean():.3f}"))
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "low": c.measured.ci_low, "high": c.measured.ci_high,
               "verdict": c.verdict, "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## 4. Figures

# %%
long = rows.melt(id_vars=["seed", "pair", "arm"], value_vars=["mod_iou", "mod_iou_swap", "overlap", "leakage"],
                 var_name="metric", value_name="value")
per_seed = long.groupby(["seed", "arm", "metric"], as_index=False)["value"].mean()
fig, ax = plt.subplots(figsize=(8, 3.8))
metric_order = ["mod_iou", "mod_iou_swap", "overlap", "leakage"]
sns.barplot(data=per_seed, x="metric", y="value", order=metric_order, hue="arm", hue_order=list(ARMS), errorbar=None, ax=ax, alpha=0.6)
sns.stripplot(data=per_seed, x="metric", y="value", order=metric_order, hue="arm", hue_order=list(ARMS), dodge=True, ax=ax,
              legend=False, size=4, palette="dark:k")
ax.set_xticks(range(4), ["IoU, own mask\n(higher better)", "IoU, other mask\n(control)", "new-token overlap\n(lower better)",
                         "leakage\n(lower better)"], fontsize=8)
ax.set_ylabel("per-seed mean over pairs")
place_legends(fig)
savefig(fig, out / "metrics_by_arm.png")

# %%
# attention maps of the first pair of the first seed (re-tuned here in-process; identical to the job's models)
pair = concept_pair(np.random.default_rng(1000 * seeds[0]))
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
for r, (arm, cal) in enumerate((("baseline", False), ("method", True))):
    model, _ = personalise(base_state, pair, 1000 * seeds[0], cal, tune_steps, tune_lr, alpha, width=width)
    maps, _ = eval_maps(model, pair["x"].unsqueeze(0), pair["tokens"].view(1, -1), 1000 * seeds[0])
    mm = normalise(maps)[0]
    panels = [((pair["x"].permute(1, 2, 0) + 1) / 2, "image"), (pair["masks"][0] + 2 * pair["masks"][1], "masks"),
              (mm[POS_MOD[0]], "<new1> map"), (mm[POS_MOD[1]], "<new2> map")]
    for j, (img, title) in enumerate(panels):
        axes[r, j].imshow(img.numpy().clip(0, 1) if img.ndim == 3 else img.numpy())
        axes[r, j].set_title(f"{arm}: {title}", fontsize=8)
        axes[r, j].axis("off")
savefig(fig, out / "attention_maps.png")

# %%
rows.to_csv(out / "per_pair.csv", index=False)
pre_curve.to_csv(out / "pretrain_curve.csv", index=False)
write_metrics(out, slug="disendiff", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()),
              headline={"base_class_token_iou": base_class_iou,
                        **{f"{metric}_{arm}": float(rows[rows.arm == arm][metric].mean())
                           for metric in ("mod_iou", "mod_iou_swap", "overlap", "leakage", "concept_share", "cal_loss")
                           for arm in ARMS}},
              params=snapshot(globals(), "disendiff"))
