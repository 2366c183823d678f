# %% [markdown]
# # Stationary Representations: Optimally Approximating Compatibility and Implications for Improved Model Replacements: replication
#
# Biondi, Pernici, Ricci, Del Bimbo (CVPR 2024), [arXiv:2405.02581](https://arxiv.org/abs/2405.02581).
#
# **The paper.** Features learned with a *d-Simplex fixed classifier* (the K vertices of a regular simplex,
# frozen) are stationary: every model pulls the features of class k towards the same fixed vertex. The paper
# proves that such representations optimally approximate the two inequalities that define compatibility, so a
# newer model's query features can be searched against a gallery indexed by an older model, and uses this to
# replace a sequentially fine-tuned model by a better one pre-trained elsewhere (IAM-CL2R).
#
# **What this notebook tests.** A class-incremental sequence of T models, each trained *independently*
# from scratch (on more classes and more data than the one before), in three arms that differ only in the
# classifier: the shared d-Simplex, a d-Simplex whose class -> vertex map is drawn afresh for each model
# (control: fixed but not shared), and a learnable linear classifier (baseline: same data, steps, lr, weight
# decay and backbone initialisations). The compatibility matrix M[i, j] (model i's queries against model j's
# gallery) gives the authors' AC and AM. The claims, gates and controls are registered in `claims.yaml`,
# committed before the first `small` run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner; this paper trains tiny MLPs on the CPU)
output_dir: str = ""  # where outputs go; empty = scratch/stationary_representations (set by the runner)
progress: bool = True  # show progress lines (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (data, initialisations, batches) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
dataset: str = "synthetic"  # synthetic (class centres through a random frozen network) or digits (sklearn, 10 classes) | x in ("synthetic", "digits")
n_classes: int = 20  # classes of the synthetic data set (digits: 10) | x >= 2
n_train: int = 160  # training pool per class | x >= 1
n_query: int = 50  # held-out query images per class | x >= 1
n_gallery: int = 50  # held-out gallery images per class | x >= 1
dim: int = 64  # input dimension of the synthetic data | x >= 2
latent_dim: int = 16  # latent dimension of the synthetic class centres | x >= 1
noise: float = 1.0  # within-class noise of the synthetic data (sets the difficulty) | x > 0
initial_classes: int = 4  # classes of the first task | x >= 2
increment: int = 4  # classes added by each later task | x >= 1
n_tasks: int = 5  # models in the sequence | x >= 2
train_per_class: list[int] = [5, 10, 20, 40, 160]  # training samples per class of each task's model (newer models see more data) | len(x) == n_tasks and all(1 <= v <= n_train for v in x)
preallocated: int = 20  # K: preallocated classes = simplex vertices; features have K - 1 dimensions | x >= initial_classes + increment * (n_tasks - 1)
hidden: int = 128  # MLP hidden width | x >= 1
steps: int = 1000  # optimisation steps per model (every arm, every task) | x >= 1
batch_size: int = 128  # minibatch size | x >= 1
lr: float = 0.001  # AdamW learning rate (every arm; the authors' 1e-3) | 0 < x < 1
weight_decay: float = 0.0005  # AdamW weight decay on matrices (the authors' 5e-4) | x >= 0
workers: int = 2  # parallel single-threaded worker processes (one seed each) | x >= 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from papers.stationary_representations import TITLE, URL
from papers.stationary_representations.analysis import (matrix_frame, measure_ac, measure_class_means,
                                                         measure_gain, measure_simplex_vs_learned, per_seed_table)
from papers.stationary_representations.method import ARMS, run_seed
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
torch.set_num_threads(1)
out = resolve_output_dir(output_dir, "stationary_representations")
print(f"profile={profile} output={out}")

# %% [markdown]
# ## Train every arm's sequence of independently trained models, one seed per job

# %%
data_kw = dict(n_classes=n_classes, n_train=n_train, n_query=n_query, n_gallery=n_gallery, dim=dim,
               latent_dim=latent_dim, noise=noise)
if dataset == "digits":
    data_kw = dict(n_train=n_train, n_query=n_query, n_gallery=n_gallery)
jobs = [(s, dataset, data_kw, initial_classes, increment, n_tasks, train_per_class, preallocated, hidden, steps,
         batch_size, lr, weight_decay, list(ARMS)) for s in seeds]


def _done(i, res, n):
    if progress:
        print(f"seed {res['seed']} done ({n}/{len(jobs)})", flush=True)


results = run_jobs(run_seed, jobs, workers=min(workers, len(jobs)), on_done=_done)
table = per_seed_table(results)
table.groupby("arm")[["ac_seen", "ub_seen", "gain_seen", "cross_seen", "self_seen", "am_seen", "ac_all",
                      "am_all", "class_mean_cos", "mean_accuracy"]].mean()

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("stationary_representations")
m, gate, control, detail = measure_ac(table)
claims["simplex_ac_seen_classes"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_gain(table)
claims["simplex_compatibility_gain"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_simplex_vs_learned(table)
claims["simplex_vs_learned_cross_accuracy"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_class_means(table)
claims["class_mean_stationarity"].evaluate(m, gate=gate, control=control, detail=detail)
pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value, "verdict": c.verdict,
               "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## Figure: compatibility matrices (mean over seeds)
# Row i = query model, column j = gallery model; evaluation set of column j = held-out images of model j's
# classes. Compatibility asks each entry below the diagonal to beat the diagonal entry of its column.

# %%
mats = matrix_frame(results, "m_seen")
fig, axes = plt.subplots(1, len(ARMS), figsize=(4.2 * len(ARMS), 3.8))
for ax, arm in zip(axes, ARMS):
    piv = mats[mats["arm"] == arm].pivot_table(index="query_model", columns="gallery_model", values="accuracy")
    sns.heatmap(piv, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", cbar=False, ax=ax,
                annot_kws={"size": 8})
    ax.set(title=arm, xlabel="gallery model j", ylabel="query model i")
fig.tight_layout()
savefig(fig, out / "compatibility_matrices.png")

# %% [markdown]
# ## Figure: AC, compatibility gain and cross-model accuracy per arm (points = seeds)

# %%
long = table.melt(id_vars=["seed", "arm"], value_vars=["ac_seen", "gain_seen", "cross_seen", "ac_all"],
                  var_name="statistic", value_name="value")
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
for ax, stat in zip(axes, ["ac_seen", "gain_seen", "cross_seen", "ac_all"]):
    d = long[long["statistic"] == stat]
    sns.barplot(data=d, x="arm", y="value", errorbar=("ci", 95), seed=0, ax=ax, order=list(ARMS), alpha=0.6)
    sns.stripplot(data=d, x="arm", y="value", order=list(ARMS), color="k", size=4, jitter=False, ax=ax)
    ax.set(title=stat, xlabel="", ylabel="")
    ax.tick_params(axis="x", rotation=20)
axes[0].axhline(0.5, color="k", ls="--", lw=1)
axes[1].axhline(0.0, color="k", ls="--", lw=1)
fig.tight_layout()
savefig(fig, out / "compatibility_by_arm.png")

# %% [markdown]
# ## Write the results

# %%
table.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
mats.to_csv(out / "compatibility_matrices.csv", index=False, float_format="%.6g")
matrix_frame(results, "m_all").to_csv(out / "compatibility_matrices_all_classes.csv", index=False,
                                      float_format="%.6g")
models = pd.DataFrame([{"seed": r["seed"], "arm": arm, **row} for r in results for arm, a in r["arms"].items()
                       for row in a["models"]])
models.to_csv(out / "models.csv", index=False, float_format="%.6g")
means = table.groupby("arm").mean(numeric_only=True)
headline = {f"{arm}_{k}": float(means.loc[arm, k]) for arm in ARMS
            for k in ("ac_seen", "am_seen", "ac_all", "am_all", "cross_seen", "mean_accuracy")}
write_metrics(out, slug="stationary_representations", title=TITLE, url=URL, profile=profile, device="cpu",
              seeds=seeds, claims=list(claims.values()), headline=headline,
              params=snapshot(globals(), "stationary_representations"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
