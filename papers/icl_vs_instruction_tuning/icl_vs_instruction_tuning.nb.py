# %% [markdown]
# # The Inherent Limits of Pretrained LLMs: The Unexpected Convergence of Instruction Tuning and In-Context Learning Capabilities: replication
#
# Bigoulaeva, Tayyar Madabushi, Gurevych (2025), [arXiv:2501.08716](https://arxiv.org/abs/2501.08716).
#
# **The paper.** Instruction tuning 90 LLMs (Llama-2, Mistral; FLAN-style mixture), the authors find that an
# instruction-tuned model's zero-shot accuracy on held-out tasks ("FLAN Direct") is significantly correlated
# with its *base* model's accuracy when prompted with gold in-context examples ("Gold Pipeline"): both are
# bounded by what pretraining put in the model, and tuning does not unlock tasks the base model cannot do
# in context.
#
# **This notebook** rebuilds that comparison in a synthetic world: a universe of 16 token-sequence
# transformations, several tiny GPT-2s pretrained independently on ICL-formatted episodes whose task mixture
# is a per-model Zipf prior (some episodes carry the task's name), LoRA instruction tuning on 8 training
# tasks in a new instruction format, and evaluation on the 8 held-out tasks. The claims, gates and controls
# are registered in `claims.yaml` before the first `small` run; `analysis.py` measures them and
# `shared.claims` turns each measurement into the verdict.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/icl_vs_instruction_tuning (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds: one independently pretrained model each | len(x) >= 1 and len(set(x)) == len(x)
n_symbols: int = 12  # alphabet size of the sequences | x >= 4
seq_len: int = 4  # input and output length | 2 <= x <= 8
n_tasks: int = 16  # tasks in the universe (the first n of tasks.task_functions) | 4 <= x <= 24
n_it_tasks: int = 8  # instruction-tuning (training) tasks; the rest are held out | 2 <= x <= n_tasks - 2
zipf_exponent: float = 1.0  # pretraining task mixture p(rank r) ~ r^-exponent, ranks permuted per model | x >= 0
named_fraction: float = 0.25  # fraction of pretraining episodes that start with the task's name token | 0 <= x <= 1
pretrain_pairs: int = 4  # (x, y) pairs per pretraining episode | x >= 2
d_model: int = 64  # GPT-2 width | x >= 8
n_layers: int = 2  # GPT-2 layers | x >= 1
n_heads: int = 4  # attention heads | x >= 1
pretrain_steps: int = 2000  # pretraining steps | x >= 1
pretrain_batch: int = 32  # episodes per pretraining step | x >= 1
pretrain_lr: float = 0.003  # AdamW learning rate, pretraining | 0 < x < 1
it_steps: int = 200  # instruction-tuning steps | x >= 1
it_batch: int = 32  # instruction examples per step | x >= 1
it_lr: float = 0.002  # AdamW learning rate, instruction tuning | 0 < x < 1
lora_r: int = 8  # LoRA rank of instruction tuning (0 = full fine-tuning) | x >= 0
k_shots: int = 3  # gold demonstrations in the base model's ICL prompt | 1 <= x < pretrain_pairs
n_eval: int = 100  # evaluation prompts per (model, task, format) | x >= 20
n_boot: int = 4000  # bootstrap resamples | x >= 100
workers: int = 2  # worker processes (one model seed each) | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.icl_vs_instruction_tuning import TITLE, URL
from papers.icl_vs_instruction_tuning.analysis import (accuracy_matrix, incapable_gain, measure_agreement,
                                                       measure_no_new_capability, spearman_rows)
from papers.icl_vs_instruction_tuning.experiment import RunConfig, run_all
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "icl_vs_instruction_tuning")
cfg = RunConfig(n_symbols=n_symbols, seq_len=seq_len, n_tasks=n_tasks, n_it_tasks=n_it_tasks,
                zipf_exponent=zipf_exponent, named_fraction=named_fraction, pretrain_pairs=pretrain_pairs,
                d_model=d_model, n_layers=n_layers, n_heads=n_heads, pretrain_steps=pretrain_steps,
                pretrain_batch=pretrain_batch, pretrain_lr=pretrain_lr, it_steps=it_steps, it_batch=it_batch,
                it_lr=it_lr, lora_r=lora_r, k_shots=k_shots, n_eval=n_eval, progress=False)
print(f"profile={profile} device=cpu output={out}")
print("instruction-tuning tasks:", cfg.universe.it_tasks)
print("held-out tasks:", cfg.universe.heldout_tasks)

# %% [markdown]
# ## Pretrain, instruction-tune and evaluate every model seed
# Each model seed is one independently pretrained LM (own initialisation, own Zipf task mixture, own data).
# Accuracy is exact match of the 4 output tokens under greedy decoding, on fresh inputs.

# %%
acc, curves, prior, n_parameters = run_all(seeds, cfg, workers=workers, progress=progress)
acc = acc.merge(prior, on=["seed", "task"])
print(f"{n_parameters} parameters per model")
table = acc.pivot_table(index=["split", "task"], columns=["stage", "format"], values="accuracy", aggfunc="mean")
table.round(3)

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("icl_vs_instruction_tuning")
m, gate, control, detail = measure_agreement(acc, n_boot=n_boot)
claims["it_icl_rank_agreement"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_no_new_capability(acc, n_boot=n_boot)
claims["no_unlock_beyond_icl"].evaluate(m, gate=gate, control=control, detail=detail)
pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value,
               "control_ci": None if c.control is None else (c.control.measured.ci_low, c.control.measured.ci_high),
               "verdict": c.verdict, "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## Reference correlations (descriptive, not verdicts)
# Per model seed, Spearman rho over held-out tasks of the tuned zero-shot accuracy with: its own base
# model's ICL accuracy (the claim), another model seed's base ICL accuracy (a base pretrained on another
# mixture: how much is task difficulty shared by all models), and its own pretraining task frequency.

# %%
x = accuracy_matrix(acc, "tuned", "instruction", "heldout")
y = accuracy_matrix(acc, "base", "icl", "heldout")[x.columns]
freq = prior.pivot(index="seed", columns="task", values="pretrain_frequency").loc[x.index, x.columns]
reference = pd.DataFrame({
    "seed": x.index,
    "rho_own_base_icl": spearman_rows(x.values, y.values),
    "rho_other_model_base_icl": spearman_rows(x.values, y.values[[(i + 1) % len(y) for i in range(len(y))]]),
    "rho_pretrain_frequency": spearman_rows(x.values, freq.values),
    "rho_base_icl_vs_frequency": spearman_rows(y.values, freq.values),
})
reference

# %% [markdown]
# ## Figure: tuned zero-shot accuracy against base in-context accuracy, per held-out task

# %%
points = (x.stack().rename("tuned_zero_shot").to_frame()
          .join(y.stack().rename("base_icl")).reset_index())
points["model seed"] = points["seed"].astype(str)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
sns.scatterplot(data=points, x="base_icl", y="tuned_zero_shot", hue="model seed", ax=axes[0])
axes[0].plot([0, 1], [0, 1], color="grey", ls=":")
c = claims["it_icl_rank_agreement"]
axes[0].set(xlabel="base model, 3-shot ICL accuracy", ylabel="instruction-tuned, zero-shot accuracy",
            title=f"held-out tasks: mean rho {c.measured.value:.2f} [{c.measured.ci_low:.2f}, {c.measured.ci_high:.2f}]")
gains = pd.concat([incapable_gain(acc, "heldout").assign(tasks="held-out"),
                   incapable_gain(acc, "it").assign(tasks="tuned on (control)")])
if len(gains):
    sns.stripplot(data=gains, x="tasks", y="gain", hue="tasks", jitter=False, alpha=0.6, ax=axes[1], legend=False)
axes[1].axhline(0.15, color="k", ls="--", label="+0.15 (criterion)")
axes[1].set(ylabel="tuned zero-shot - base ICL accuracy",
            title="pairs the base model cannot do in context (ICL < 0.2)")
axes[1].legend(loc="upper left")
fig.tight_layout()
savefig(fig, out / "tuned_vs_base_icl.png")

# %% [markdown]
# ## Write the results

# %%
acc.to_csv(out / "accuracy.csv", index=False, float_format="%.6g")
reference.to_csv(out / "reference_correlations.csv", index=False, float_format="%.6g")
curve_table = (curves.assign(series=curves["phase"] + "_loss").groupby(["series", "step"])["loss"].mean()
               .unstack("series").reset_index())
curve_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")
mean_acc = acc.groupby(["stage", "format", "split"])["accuracy"].mean()
headline = {f"{st}_{fm}_{sp}_accuracy": float(v) for (st, fm, sp), v in mean_acc.items()}
headline["n_parameters"] = int(n_parameters)
headline.update({f"mean_{k}": float(reference[k].mean()) for k in reference.columns if k != "seed"})
write_metrics(out, slug="icl_vs_instruction_tuning", title=TITLE, url=URL, profile=profile, device="cpu",
              seeds=seeds, claims=list(claims.values()), headline=headline,
              params=snapshot(globals(), "icl_vs_instruction_tuning"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
