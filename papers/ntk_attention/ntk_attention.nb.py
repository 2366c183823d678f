# %% [markdown]
# # Toward Infinite-Long Prefix in Transformer: replication
#
# Liang, Shi, Song, Yang (2024), [arXiv:2406.14036](https://arxiv.org/abs/2406.14036).
#
# **The paper.** Prefix learning (P-Tuning v2) prepends m trained key/value vectors to every attention
# layer. An NTK analysis argues that a longer prefix is more over-parameterised and fits better, and that
# the limit of an infinitely long prefix can be computed without the prefix: **NTK-Attention** replaces the
# prefix's softmax terms by a feature map phi(x) = ELU(x / d^{1/4}) + 1 and two trainable tensors per head,
# Z (d x d) and k (d), whose cost does not depend on m. The paper shows (Sec. 4.4, error experiment) that
# NTK-Attention approximates m-long prefix attention and (Sec. 5) that as a PEFT method it is superior or
# competitive to P-Tuning v2, LoRA and full fine-tuning.
#
# **This notebook** tests, at CPU scale: (Part 1) fit Z, k to reproduce one random attention head with an
# m-long prefix and measure whether the held-out error falls as m grows, against a query-blind ablation;
# (Part 2) NTK-Attention, P-Tuning v2 (parameter-matched) and a linear probe as PEFT of all-MiniLM-L6-v2 on
# SST-2 with identical data, steps, batch and learning rate. Claims, gates and controls are registered in
# `claims.yaml`, committed before the first `small` run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/ntk_attention (set by the runner)
progress: bool = True  # show progress lines (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (Part 1 heads and prefixes; Part 2 data subsets and inits) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
workers: int = 2  # parallel single-threaded worker processes (shared.parallel.run_jobs); 1 on a GPU | x >= 1
m_values: list[int] = [4, 32, 256, 2048]  # Part 1 prefix lengths m | len(x) >= 2 and len(set(x)) == len(x) and all(v >= 1 for v in x)
fit_d: int = 32  # Part 1 head dimension d | x >= 2
fit_L: int = 64  # Part 1 input length L (queries and non-prefix keys) | x >= 1
fit_steps: int = 300  # Part 1 Adam steps per fit (fresh inputs every step) | x >= 1
fit_batch: int = 8  # Part 1 input sequences per step | x >= 1
fit_lr: float = 0.01  # Part 1 learning rate (cosine to 10%) of the per-token means Z/m, k/m | x > 0
fit_n_eval: int = 64  # Part 1 held-out input sequences for the error | x >= 1
fit_gate_ratio: float = 0.5  # Part 1 gate: fitted error < this x its initial error at every (seed, m) | 0 < x <= 1
arms: list[str] = ["head", "prefix", "ntk", "ntk_frozen"]  # Part 2 arms (lora optional, descriptive) | all(a in ("head", "prefix", "ntk", "ntk_frozen", "lora") for a in x) and {"head", "prefix", "ntk", "ntk_frozen"} <= set(x)
n_train: int = 640  # Part 2 balanced SST-2 training sentences per seed | x >= 2 and x % 2 == 0
n_test: int = 500  # Part 2 balanced SST-2 test sentences (the same for every seed and arm) | x >= 2 and x % 2 == 0
steps: int = 100  # Part 2 training steps, every arm | x >= 1
batch: int = 16  # Part 2 batch size, every arm | x >= 1
lr: float = 0.01  # Part 2 learning rate, every arm (pilot on a validation split, seed 100) | x > 0
max_length: int = 32  # Part 2 word pieces per sentence incl. [CLS]/[SEP] | x >= 2
prefix_len: int = 16  # P-Tuning v2 prefix length (16: 73,728 parameters vs NTK-Attention's 76,032) | x >= 1
lora_r: int = 8  # LoRA rank (alpha = 2r) for the optional lora arm | x >= 1
prefix_gate_accuracy: float = 0.72  # gate of ntk_noninferior_to_ptuning: P-Tuning v2 accuracy in every seed | 0.5 <= x <= 1
head_gate_accuracy: float = 0.7  # gate of ntk_beats_linear_probe: head-only accuracy in every seed | 0.5 <= x <= 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.ntk_attention import TITLE, URL
from papers.ntk_attention.analysis import (error_slopes, measure_error_slope, measure_ntk_vs_head,
                                           measure_ntk_vs_prefix)
from papers.ntk_attention.method import error_curve_job, ntk_param_count
from papers.ntk_attention.sst2 import peft_job
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "ntk_attention")
dev = pick_device(device)
n_workers = 1 if dev != "cpu" else workers
print(f"profile={profile} device={dev} workers={n_workers} output={out}")


def report(label):
    def on_done(i, result, n_done):
        if progress:
            print(f"{label}: {n_done} jobs done", flush=True)
    return on_done

# %% [markdown]
# ## Part 1: how well does a fitted (Z, k) stand in for an m-long prefix?
# One attention head with random W_Q, W_K, W_V ~ N(0, 1/d) and a fixed random prefix of m tokens; inputs
# X ~ N(0, I) of length L, fresh every step. Target: softmax attention of the inputs' queries over
# [prefix; inputs]. NTK-Attention sees only the inputs plus (Z, k), fitted by Adam on the squared error.
# The error is the held-out MSE divided by that of attention without the prefix (the share of the prefix's
# effect left unexplained). Arm `blind` is the same model with phi(q) replaced by 1 (query-blind).

# %%
part1_jobs = [(s, m_values, fit_d, fit_L, fit_steps, fit_batch, fit_lr, fit_n_eval, arm, dev)
              for s in seeds for arm in ("ntk", "blind")]
curves = pd.DataFrame([row for rows in run_jobs(error_curve_job, part1_jobs, workers=n_workers,
                                                on_done=report("part 1"))
                       for row in rows])
curves.pivot_table(index="m", columns="arm", values=["rel_error", "rel_error_init", "prefix_mass"])

# %%
slopes = pd.DataFrame({"ntk": error_slopes(curves, "ntk"), "blind": error_slopes(curves, "blind")})
slopes

# %% [markdown]
# ## Part 2: NTK-Attention as PEFT of MiniLM on SST-2
# Every arm: all-MiniLM-L6-v2 + mean pooling + linear head, the same training subset per seed, the same
# test items, steps, batch, learning rate and schedule. `head` and `ntk_frozen` train only the head.

# %%
cost = {"prefix": 3.0, "ntk": 3.0, "lora": 3.0, "head": 1.0, "ntk_frozen": 1.0}
part2_jobs = [(arm, s, n_train, n_test, "test", steps, batch, lr, max_length, prefix_len, lora_r, dev)
              for s in seeds for arm in arms]
rows = run_jobs(peft_job, part2_jobs, workers=n_workers, cost=[cost[j[0]] for j in part2_jobs],
                on_done=report("part 2"))
runs = pd.DataFrame(rows)
print("seconds per training step (this machine, not stored):",
      runs.groupby("arm")["sec_per_step"].mean().round(3).to_dict())
accuracy = runs.drop(columns=["sec_per_step", "correct"])
accuracy.groupby("arm")[["accuracy", "n_trainable_encoder", "last_loss"]].agg(["mean", "min", "max"])

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("ntk_attention")
measured, gate, control = measure_error_slope(curves, fit_ratio=fit_gate_ratio)
claims["ntk_error_decreases_with_m"].evaluate(
    measured, gate=gate, control=control,
    detail="per-seed slopes of ln(error) per doubling of m: " + ", ".join(f"{x:.3f}" for x in slopes["ntk"]))
measured, gate, control = measure_ntk_vs_prefix(accuracy, prefix_gate_accuracy)
claims["ntk_noninferior_to_ptuning"].evaluate(
    measured, gate=gate, control=control,
    detail="mean accuracy NTK {:.3f}, P-Tuning v2 {:.3f}, head only {:.3f}".format(
        *[accuracy.loc[accuracy["arm"] == a, "accuracy"].mean() for a in ("ntk", "prefix", "head")]))
measured, gate, control = measure_ntk_vs_head(accuracy, head_gate_accuracy)
claims["ntk_beats_linear_probe"].evaluate(
    measured, gate=gate, control=control,
    detail="mean accuracy NTK {:.3f}, NTK frozen at init {:.3f}, head only {:.3f}".format(
        *[accuracy.loc[accuracy["arm"] == a, "accuracy"].mean() for a in ("ntk", "ntk_frozen", "head")]))
verdicts = pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "verdict": c.verdict, "reason": c.reason}
                         for c in claims.values()])
verdicts

# %% [markdown]
# ## Figures

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
sns.lineplot(data=curves, x="m", y="rel_error", hue="arm", style="arm", markers=True, errorbar=("ci", 95),
             seed=0, ax=axes[0])
axes[0].set(xscale="log", yscale="log", xlabel="prefix length m", ylabel="held-out MSE / MSE without prefix",
            title="Part 1: fit error of (Z, k) vs prefix length")
order = [a for a in ("head", "ntk_frozen", "prefix", "lora", "ntk") if a in set(accuracy["arm"])]
sns.barplot(data=accuracy, x="arm", y="accuracy", order=order, errorbar=("ci", 95), seed=0, ax=axes[1])
params = accuracy.groupby("arm")["n_trainable_encoder"].first()
for i, a in enumerate(order):
    axes[1].text(i, 0.52, f"{params[a]:,}\nenc. params", ha="center", fontsize=8)
axes[1].set(ylim=(0.5, 1.0), xlabel="", ylabel="SST-2 test accuracy", title="Part 2: PEFT of MiniLM")
fig.tight_layout()
savefig(fig, out / "ntk_attention.png")

# %% [markdown]
# ## Write the results

# %%
curves.to_csv(out / "error_curves.csv", index=False, float_format="%.6g")
accuracy.to_csv(out / "peft_accuracy.csv", index=False, float_format="%.6g")
mean_acc = accuracy.groupby("arm")["accuracy"].mean()
headline = {f"accuracy_{a}": float(v) for a, v in mean_acc.items()}
headline.update({f"rel_error_ntk_m{m}": float(v) for m, v in
                 curves[curves["arm"] == "ntk"].groupby("m")["rel_error"].mean().items()})
headline["ntk_params_minilm"] = ntk_param_count(6, 12, 32)
headline["prefix_params_minilm"] = int(accuracy.loc[accuracy["arm"] == "prefix", "n_trainable_encoder"].iloc[0])
write_metrics(out, slug="ntk_attention", title=TITLE, url=URL, profile=profile, device=dev, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "ntk_attention"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
