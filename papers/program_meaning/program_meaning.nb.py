# %% [markdown]
# # Emergent Representations of Program Semantics in Language Models Trained on Programs: replication
#
# Jin & Rinard, ICML 2024 ([arXiv:2305.11169](https://arxiv.org/abs/2305.11169); v1 title *Evidence of
# Meaning in Language Models Trained on Programs*).
#
# **Setup.** A language model is trained from initialisation, by next-token prediction only, on text made
# of a specification (input/output grid-world examples) followed by a Karel program that satisfies it.
# While the LM writes a program for an unseen specification, linear probes read its hidden states and try
# to recover the robot's *unobserved* intermediate states (facing direction, position) on each input, after
# the tokens generated so far (current state) or one and two tokens later (future states). **Claims:** the
# LM learns to generate correct programs; the probes' accuracy ("semantic content") grows over training and
# correlates with generative accuracy; probes for future states work too; and an *intervention* that keeps
# the program text but swaps the meanings of the actions (turn_left <-> turn_right, put <-> pick) makes the
# probes worse, so the semantics lives in the LM, not in the probe.
#
# The claims, their gates and controls are registered in `claims.yaml` before any result; this notebook
# runs the experiment, measures each claim's statistic (`analysis.measure_*`) and `shared.claims` turns the
# measurement, the gate and the control into the verdict.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/program_meaning (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (one LM per seed) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
grid_size: int = 4  # interior size n of the n x n grid world (paper: 6) | 3 <= x <= 8
n_shown: int = 3  # input/output examples in each specification (paper: 5) | 1 <= x <= 10
n_held_out: int = 3  # further examples a correct program must also satisfy for gen_acc_all (paper: 5) | 0 <= x <= 10
min_length: int = 1  # shortest reference program (authors' generator: 1; their ICML training set drops 1-5) | 1 <= x
max_length: int = 4  # longest reference program (paper: 10) | min_length <= x <= 16
wall_ratio: float = 0.1  # probability that a cell is a wall (paper: 0.1) | 0 <= x <= 0.5
marker_ratio: float = 0.1  # probability that a free cell holds a marker (paper: 0.1) | 0 <= x <= 0.5
architecture: str = "llama"  # transformers model class of the LM | x in ("llama", "gpt2")
d_model: int = 64  # LM width | x >= 8 and x % n_heads == 0
n_layers: int = 2  # LM depth | 1 <= x <= 24
n_heads: int = 4  # attention heads | x >= 1
steps: int = 8000  # optimisation steps per LM | x >= 1
batch_size: int = 32  # sequences per step | x >= 1
lr: float = 0.003  # AdamW peak learning rate (cosine decay to 10%) | 0 < x < 1
warmup_steps: int = 50  # linear warmup steps | 0 <= x < steps
spec_loss: bool = True  # next-token loss on the specification tokens too, as the paper's LM objective
n_train: int = 40000  # training tasks (program + its specification) | x >= batch_size
n_checkpoints: int = 10  # evenly spaced checkpoints that are evaluated and probed | 2 <= x <= steps
n_probe_train: int = 600  # specs whose generated programs train the probes | x >= 10
n_test: int = 300  # held-out specs: generative accuracy and probe scores | x >= 10
probe_alpha: float = 1.0  # ridge penalty of the linear probes (standardised features) | x > 0
torch_threads: int = 1  # CPU threads for torch when workers = 1 (parallel workers use one each) | x >= 1
workers: int = 3  # seeds trained in parallel processes (results do not depend on it; use 1 on a GPU) | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.program_meaning import TITLE, URL
from papers.program_meaning import analysis as an
from papers.program_meaning.experiment import ModelConfig, RunConfig, TaskConfig, run_all
from papers.program_meaning.karel import Vocab, execute
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.legends import place_legends
from shared.plotting import savefig, set_theme

import torch

set_theme()
device = pick_device(device)
if device == "cpu":
    torch.set_num_threads(torch_threads)
out = resolve_output_dir(output_dir, "program_meaning")
print(f"profile={profile} device={device} output={out}")
task = TaskConfig(n=grid_size, n_shown=n_shown, n_held_out=n_held_out, min_length=min_length,
                  max_length=max_length, wall_ratio=wall_ratio, marker_ratio=marker_ratio)
model_cfg = ModelConfig(architecture=architecture, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
run = RunConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, spec_loss=spec_loss,
                n_train=n_train, n_checkpoints=n_checkpoints, n_probe_train=n_probe_train, n_test=n_test,
                probe_alpha=probe_alpha)

# %% [markdown]
# ## The language and what the model sees
# One training sequence: the shown examples (robot cell and direction, marker cells, wall cells) and the
# reference program. Below, the same program text run under the original and the *opposite* semantics on
# the first input: the intervention changes only what the tokens mean.

# %%
import numpy as np

vocab = Vocab(grid_size)
demo = task.specs(np.random.default_rng(12345), 1)
print(vocab.decode(vocab.prompts(demo)[0]), "|", vocab.decode(vocab.program(demo.programs[0])))
for sem in ("original", "opposite"):
    _, trace = execute(demo.programs, demo.inputs[:, :1], sem)
    steps_xy = [f"({x},{y},{'NESW'[d]})" for x, y, d in zip(trace.x[0, 0], trace.y[0, 0], trace.d[0, 0])]
    print(f"{sem:>9}: " + " -> ".join(steps_xy))

# %% [markdown]
# ## Train one LM per seed, evaluating and probing every checkpoint
# At each checkpoint the LM greedily writes a program for every probe-training and test specification;
# its hidden states at the positions that generated the program tokens are the probe features.

# %%
generation, probes, curves, baseline, n_parameters = run_all(task, model_cfg, run, seeds, device, progress,
                                                             workers=workers if device == "cpu" else 1)
summary = an.checkpoint_summary(generation, probes)
print(f"LM parameters: {n_parameters}")
print("spec-blind baseline (one program for every spec):")
print(baseline.to_string(index=False))
summary.groupby("step")[["gen_acc", "gen_acc_all", "sc_original_0", "sc_opposite_0", "scdiff_original_0",
                         "scdiff_opposite_0", "majority_0", "sc_original_1", "sc_original_2", "gen_length",
                         "turn_fraction"]].mean().round(3)

# %% [markdown]
# ## Verdicts

# %%
claims = an.evaluate_claims(load_claims("program_meaning"), generation, probes, baseline)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": c.control.measured.value if c.control else None, "verdict": c.verdict,
               "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## Figure: semantic content and generative accuracy over training
# Left: generative accuracy and the current-state probe accuracy under the original and the alternative
# semantics (the latter two on the states where they differ), with the majority-class baseline (mean and
# 95% interval over seeds). Right: each checkpoint of
# each seed, semantic content against generative accuracy.

# %%
long = summary.melt(id_vars=["seed", "step"],
                    value_vars=["gen_acc", "sc_original_0", "scdiff_original_0", "scdiff_opposite_0", "majority_0"],
                    var_name="quantity", value_name="value")
long["quantity"] = long["quantity"].map({"gen_acc": "generative accuracy", "sc_original_0": "probe: original",
                                         "scdiff_original_0": "probe: original (differing states)",
                                         "scdiff_opposite_0": "probe: opposite (differing states)",
                                         "majority_0": "majority baseline"})
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
sns.lineplot(data=long, x="step", y="value", hue="quantity", marker="o", errorbar=("ci", 95), seed=0, ax=axes[0])
axes[0].set(xlabel="training step", ylabel="accuracy", title="current state (offset 0)", ylim=(0, 1))
sns.scatterplot(data=summary, x="gen_acc", y="sc_original_0", hue="seed", style="seed", palette="colorblind",
                s=60, ax=axes[1])
axes[1].set(xlabel="generative accuracy", ylabel="semantic content (original)", title="across checkpoints")
fig.tight_layout()
place_legends(fig)  # legends off the data (shared.legends)
savefig(fig, out / "semantic_content.png")

# %% [markdown]
# ## Figure: future states
# Probe accuracy for the state after the current token (offset 0) and one or two tokens later.

# %%
future = summary.melt(id_vars=["seed", "step"], value_vars=["sc_original_0", "sc_original_1", "sc_original_2"],
                      var_name="offset", value_name="semantic content")
future["offset"] = future["offset"].str[-1].astype(int)
fig, ax = plt.subplots(figsize=(6, 4))
sns.lineplot(data=future, x="step", y="semantic content", hue="offset", marker="o", errorbar=("ci", 95),
             seed=0, palette="colorblind", ax=ax)
ax.set(xlabel="training step", title="original semantics, current and future states")
fig.tight_layout()
place_legends(fig)  # legends off the data (shared.legends)
savefig(fig, out / "future_states.png")

# %% [markdown]
# ## Write the results

# %%
summary.to_csv(out / "checkpoints.csv", index=False, float_format="%.6g")
probes.to_csv(out / "probes.csv", index=False, float_format="%.6g")
baseline.to_csv(out / "spec_blind_baseline.csv", index=False, float_format="%.6g")
curve_table = curves.pivot_table(index="step", columns="seed", values="loss").add_prefix("loss_seed").reset_index()
curve_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")
final = summary.sort_values("step").groupby("seed").last().reset_index()
final.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")

rhos = an.spearman_per_seed(generation, probes)
headline = {
    "final_gen_acc": final["gen_acc"].mean(),
    "final_gen_acc_with_held_out": final["gen_acc_all"].mean(),
    "final_semantic_content_original": final["sc_original_0"].mean(),
    "final_semantic_content_opposite": final["sc_opposite_0"].mean(),
    "final_differing_states_original": final["scdiff_original_0"].mean(),
    "final_differing_states_opposite": final["scdiff_opposite_0"].mean(),
    "spec_blind_gen_acc": baseline["gen_acc"].mean(),
    "final_semantic_content_random": final["sc_random_0"].mean(),
    "final_majority_baseline": final["majority_0"].mean(),
    "final_semantic_content_offset1": final["sc_original_1"].mean(),
    "final_semantic_content_offset2": final["sc_original_2"].mean(),
    "final_mean_generated_length": final["gen_length"].mean(),
    "final_fraction_of_programs_with_a_turn": final["turn_fraction"].mean(),
    "mean_raw_spearman_rho": rhos["rho"].mean(),
    "mean_partial_spearman_rho": an.partial_rho_table(generation, probes)["partial_rho"].mean(),
    "lm_parameters": n_parameters,
}
write_metrics(out, slug="program_meaning", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "program_meaning"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
