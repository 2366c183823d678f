# %% [markdown]
# # Representational Homomorphism Predicts and Improves Compositional Generalization: replication
#
# An & Du (2026), [arXiv:2601.18858](https://arxiv.org/abs/2601.18858).
#
# **Homomorphism error (HE)** is the held-out error of a learned operator that maps the hidden states of
# the parts of an expression to the hidden state of the whole: *modifier HE* for `primitive modifier`
# (e.g. `walk twice`), *sequence HE* for consecutive segments joined by `then`. Small decoder-only
# transformers are trained on 2-clause SCAN-style commands with `k` random noise tokens inserted, and tested
# on 5-12 clauses without noise. The paper reports that (i) across noise levels modifier HE predicts OOD
# accuracy (R^2 = 0.73), (ii) noise raises HE, and (iii) adding an HE regulariser to training lowers
# modifier and sequence HE and raises OOD accuracy.
#
# The claims, their gates and controls are registered in `claims.yaml` and decided by the shared rule of
# `shared.claims`. This notebook trains one model per (seed, noise level, condition), measures OOD accuracy,
# held-out in-distribution accuracy (the gate) and HE, the HE of an untrained model on the same inputs (the
# control of the HE claims) and a sham-regulariser arm (the control of the regulariser claims). The real SCAN data (Lake & Baroni 2018) checks the generator's semantics
# and gives an in-distribution check of the same models on real commands.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/homomorphism_error (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (one model per seed, noise level and condition) | len(x) >= 1 and len(set(x)) == len(x)
noise_levels: list[int] = [0, 3, 6, 9, 12, 15]  # noise tokens inserted into each training input (baseline grid) | len(x) >= 1 and len(set(x)) == len(x) and all(0 <= n <= 30 for n in x)
reg_noise_levels: list[int] = [0, 6, 12]  # noise levels that also get an HE-regularised model | len(set(x)) == len(x) and set(x) <= set(noise_levels)
train_samples: int = 1000  # distinct 2-clause training examples per model (at most 144 exist without noise) | x >= 10
epochs: int = 15  # training epochs | x >= 1
batch_size: int = 32  # training batch size | x >= 1
lr: float = 0.001  # Adam learning rate | 0 < x < 1
beta2: float = 0.999  # Adam beta2 | 0 < x < 1
lambda_he: float = 0.2  # weight of the modifier-HE regulariser | x >= 0
he_layers: list[int] = [2, 4]  # 1-indexed blocks whose output the regulariser acts on | len(x) >= 1 and all(1 <= l <= n_layers for l in x)
he_batch_size: int = 64  # bigrams per step in the regulariser's separate forward pass | x >= 1
he_pool_max_pairs: int = 2048  # primitive-modifier bigrams cached for the regulariser | x >= 1
probe_epochs: int = 50  # epochs of the HE operators (linear, bilinear, MLP) | x >= 1
d_model: int = 128  # model width | x >= 8 and x % n_heads == 0
n_layers: int = 4  # transformer blocks | x >= 1
n_heads: int = 4  # attention heads | x >= 1
d_ff: int = 256  # MLP width | x >= 1
dropout: float = 0.1  # dropout | 0 <= x < 1
ood_clauses: list[int] = [5, 6, 7, 8, 9, 10, 11, 12]  # clause counts of the OOD test sets | len(x) >= 1 and all(3 <= n <= 20 for n in x)
ood_samples: int = 200  # test expressions per OOD clause count | x >= 1
ood_seed: int = 123  # seed of the fixed OOD test sets (shared by all models) | x >= 0
workers: int = 2  # cells trained in parallel, one single-threaded process each | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.homomorphism_error import TITLE, URL
from papers.homomorphism_error.analysis import (evaluate_he_predicts_ood, evaluate_he_reg, evaluate_noise_raises_he,
                                                noise_level_means, summary_table)
from papers.homomorphism_error.experiment import Settings, build_model, build_ood_sets, run_grid
from papers.homomorphism_error.task import (encode_set, generate_dataset, interpret, read_scan_lines,
                                            scan_fragment)
from shared.claims import load_claims
from shared.data import require
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
if device == "cpu":
    torch.set_num_threads(1)  # tiny ops; parallelism comes from `workers` processes instead
out = resolve_output_dir(output_dir, "homomorphism_error")
settings = Settings(d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff, dropout=dropout,
                    train_samples=train_samples, epochs=epochs, batch_size=batch_size, lr=lr, beta2=beta2,
                    lambda_he=lambda_he, he_layers=tuple(he_layers), he_pool_max_pairs=he_pool_max_pairs,
                    he_batch_size=he_batch_size, probe_epochs=probe_epochs)
print(f"profile={profile} device={device} output={out}")
print(f"model parameters: {build_model(settings).net.num_parameters():,}")

# %% [markdown]
# ## The command language
# Two-clause training commands with `k` inserted noise tokens; the meaning ignores noise. Without noise only
# (4 primitives x 3 modifier choices)^2 = 144 distinct commands exist, so the noise-0 training set is much
# smaller than the others (as in the authors' generator).

# %%
examples = generate_dataset(2, 3, 3, seed=0) + generate_dataset(6, 0, 1, seed=0)
pd.DataFrame({"input": [" ".join(x) for x, _ in examples], "output": [" ".join(y) for _, y in examples]})

# %%
pd.DataFrame({"noise": noise_levels,
              "distinct training examples (seed 0)": [len(generate_dataset(2, n, train_samples, 0))
                                                      for n in noise_levels]})

# %% [markdown]
# ## Real SCAN: the fragment shared with the synthetic language
# SCAN commands that use only walk/jump/look, twice/thrice and `and` (= `then`) are commands of the synthetic
# language. Every such line in the fetched splits must mean the same thing under the synthetic generator's
# semantics; the same models are then scored on them (noise-free, at most 2 clauses: an in-distribution
# check on real data, not a length-generalisation test).

# %%
scan_files = ["simple_split/tasks_train_simple.txt", "simple_split/tasks_test_simple.txt",
              "length_split/tasks_train_length.txt", "length_split/tasks_test_length.txt",
              "add_prim_split/tasks_train_addprim_jump.txt", "add_prim_split/tasks_test_addprim_jump.txt"]
scan_rows, fragment = [], {}
for name in scan_files:
    lines = read_scan_lines(require("scan", *name.split("/")))
    frag = scan_fragment(lines)
    scan_rows.append({"file": name, "lines": len(lines), "in fragment": len(frag)})
    for x, y in frag:
        fragment.setdefault((tuple(x), tuple(y)), None)
scan_examples = [(list(x), list(y)) for x, y in fragment]
disagree = [(x, y) for x, y in scan_examples if interpret(x) != y]
if disagree:
    raise AssertionError(f"generator semantics disagree with SCAN on {len(disagree)} commands, e.g. {disagree[0]}")
scan_set = encode_set(scan_examples)
print(f"{len(scan_examples)} distinct SCAN commands in the shared fragment; all agree with the generator")
pd.DataFrame(scan_rows)

# %% [markdown]
# ## Train and evaluate every cell
# Baselines on every noise level; HE-regularised models (lambda = 0.2, layers 2 and 4) and sham-regularised
# controls (the same regulariser pass, weight 0) on `reg_noise_levels`. Each model: OOD token accuracy on
# 5-12 clauses (fixed test sets), held-out in-distribution accuracy (2 clauses, its training noise level),
# modifier and sequence HE of its last-layer states on its own training set, accuracy on the SCAN fragment;
# baselines also get the HE of an untrained model on the same inputs.

# %%
ood_sets = build_ood_sets(ood_clauses, ood_samples, ood_seed)
results, curves = run_grid(seeds, noise_levels, reg_noise_levels, settings, ood_sets, scan_set, device=device,
                           workers=workers, progress=progress)
summary = summary_table(results)
summary[["condition", "noise", "seeds", "train_examples", "mod_pairs", "ood_acc", "id_acc", "mod_he", "mod_he_norm",
         "init_mod_he", "seq_he", "seq_he_norm", "scan_fragment_acc"]]

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("homomorphism_error")
evaluate_he_predicts_ood(claims["he_predicts_ood_v2"], results, "mod_he")
evaluate_he_predicts_ood(claims["he_predicts_ood_normalised_v2"], results, "mod_he_norm")
evaluate_noise_raises_he(claims["noise_raises_he_v2"], results, "mod_he")
evaluate_he_reg(claims["he_reg_lowers_modifier_he_v2"], results, "mod_he")
evaluate_he_reg(claims["he_reg_lowers_sequence_he_v2"], results, "seq_he")
evaluate_he_reg(claims["he_reg_improves_ood_v2"], results, "ood_acc")
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "verdict": c.verdict,
               "control": None if c.control is None else c.control.measured.value, "reason": c.reason}
              for c in claims.values()])

# %% [markdown]
# ## Figure: OOD accuracy against modifier HE (paper Fig. 6), raw and variance-normalised
# Small points: one baseline model each; large points: noise-level means; line: linear fit of the means.
# Bottom row: the control, the HE of an untrained model on the same inputs against the same accuracies.

# %%
base = results[results["condition"] == "baseline"]
fig, axes = plt.subplots(2, 2, figsize=(11, 8))
for ax, col, label in [(axes[0, 0], "mod_he", "modifier HE (MSE)"),
                       (axes[0, 1], "mod_he_norm", "modifier HE / variance of composites"),
                       (axes[1, 0], "init_mod_he", "untrained model: modifier HE (MSE)"),
                       (axes[1, 1], "init_mod_he_norm", "untrained model: normalised modifier HE")]:
    means = noise_level_means(results, col)
    sns.scatterplot(data=base, x=col, y="ood_acc", hue="noise", palette="viridis", alpha=0.5, ax=ax, legend=False)
    sns.regplot(data=means, x=col, y="ood_acc", ci=None, scatter_kws={"s": 60, "color": "k"},
                line_kws={"color": "k", "lw": 1}, ax=ax)
    for r in means.itertuples():
        ax.annotate(f"k={r.noise}", (getattr(r, col), r.ood_acc), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.set(xlabel=label, ylabel="mean OOD token accuracy (5-12 clauses)")
for col, cid in [(0, "he_predicts_ood_v2"), (1, "he_predicts_ood_normalised_v2")]:
    c = claims[cid]
    r = "n/a" if c.measured.value is None else f"{c.measured.value:.2f}"
    rc = "n/a" if c.control is None or c.control.measured.value is None else f"{c.control.measured.value:.2f}"
    axes[0, col].set_title(f"{cid}\n{c.verdict}, Pearson r of the means = {r}", fontsize=10)
    axes[1, col].set_title(f"control (untrained model), r = {rc}", fontsize=10)
fig.tight_layout()
savefig(fig, out / "ood_vs_modifier_he.png")

# %% [markdown]
# ## Figure: noise and the HE regulariser
# Mean over seeds with 95% bootstrap intervals, by noise level and condition.

# %%
long = results.melt(id_vars=["seed", "noise", "condition"], value_vars=["ood_acc", "mod_he", "seq_he"],
                    var_name="quantity", value_name="value")
g = sns.catplot(data=long, x="noise", y="value", hue="condition", col="quantity", kind="point", sharey=False,
                errorbar=("ci", 95), seed=0, dodge=0.3, height=3.5, aspect=1.1)
for ax, title in zip(g.axes.flat, ["OOD token accuracy", "modifier HE", "sequence HE"]):
    ax.set_title(title)
savefig(g.figure, out / "noise_and_regulariser.png")

# %% [markdown]
# ## Write the results

# %%
results.to_csv(out / "per_model.csv", index=False, float_format="%.6g")
summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
curve_table = (curves.assign(run=curves["condition"] + "_noise" + curves["noise"].astype(str))
               .groupby(["run", "step"])["loss"].mean().unstack("run").reset_index())
curve_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")

pts = noise_level_means(results, "mod_he")
headline = {
    "baseline_ood_acc": base["ood_acc"].mean(),
    "baseline_mod_he": base["mod_he"].mean(),
    "baseline_seq_he": base["seq_he"].mean(),
    "baseline_mod_he_norm": base["mod_he_norm"].mean(),
    "pearson_r_ood_vs_mod_he": pts[["mod_he", "ood_acc"]].corr().iloc[0, 1] if len(pts) > 1 else None,
    "scan_fragment_commands": len(scan_examples),
    "scan_fragment_acc_baseline": base["scan_fragment_acc"].mean(),
}
headline["min_id_acc"] = results["id_acc"].min()
headline["pearson_r_ood_vs_untrained_mod_he"] = (noise_level_means(results, "init_mod_he")[["init_mod_he", "ood_acc"]]
                                                 .corr().iloc[0, 1] if len(pts) > 1 else None)
sham = results[results["condition"] == "he_reg_sham"]
if len(sham):
    headline.update({"he_reg_sham_ood_acc": sham["ood_acc"].mean(), "he_reg_sham_mod_he": sham["mod_he"].mean()})
reg = results[results["condition"] == "he_reg"]
if len(reg):
    headline.update({"he_reg_ood_acc": reg["ood_acc"].mean(), "he_reg_mod_he": reg["mod_he"].mean(),
                     "he_reg_seq_he": reg["seq_he"].mean(), "scan_fragment_acc_he_reg": reg["scan_fragment_acc"].mean()})
write_metrics(out, slug="homomorphism_error", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "homomorphism_error"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
