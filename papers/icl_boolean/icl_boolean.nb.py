# %% [markdown]
# # Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions: replication
#
# Bhattamishra, Patel, Blunsom, Kanade (ICLR 2024), [arXiv:2310.03016](https://arxiv.org/abs/2310.03016).
#
# **Setup.** A prompt is a sequence of labelled points `(x_1, y_1, ..., x_N, y_N)`, `x_t in {-1, +1}^n`,
# `y_t = f(x_t)`, with a fresh Boolean function `f` drawn from a class for every prompt. A model trained
# on such prompts must predict each `y_t` from the points before it: it has to *learn in context*. The
# paper compares Transformers trained from scratch with the optimal learners of each class (the
# elimination algorithm for conjunctions, Gaussian elimination over GF(2) for parities), nearest
# neighbour and attention-free models (LSTM here), and shows that a *teaching sequence* at the start of
# the prompt makes the Transformer far more sample-efficient.
#
# The claims, their gates and controls are registered in `claims.yaml` before any result. This notebook
# trains one model per (arm, seed), evaluates it and the classical learners on the same fresh prompts,
# measures each claim's statistic with its interval (`analysis.py`), and `shared.claims` turns the
# measurement, the gate and the control into the verdict.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/icl_boolean (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
n_dims: int = 8  # input dimension n | 2 <= x <= 62
n_points: int = 20  # labelled points per prompt N | x >= n_dims + 2 and x >= 6
seeds: list[int] = [0, 1, 2]  # evaluation seeds (one model per arm and seed) | len(x) >= 1 and len(set(x)) == len(x)
lstm_tasks: list[str] = ["conjunction"]  # classes the LSTM is trained on (the Transformer does all five) | "conjunction" in x and all(t in ("conjunction", "sparse_parity", "teach_conjunction", "mono_conjunction", "sparse_conjunction") for t in x)
d_model: int = 64  # Transformer width | x >= 8
n_layers: int = 3  # Transformer layers | 1 <= x <= 12
n_heads: int = 4  # Transformer attention heads | x >= 1 and d_model % x == 0
lstm_d_model: int = 64  # LSTM hidden size | x >= 8
lstm_layers: int = 2  # LSTM layers | 1 <= x <= 6
steps: int = 2000  # optimisation steps per model on conjunction (Transformer, LSTM and its A/A replicate) | x >= 1
teach_steps: int = 600  # optimisation steps per model on teach_conjunction and its control mono_conjunction | x >= 1
parity_steps: int = 1000  # optimisation steps of the Transformer on sparse_parity and on its gate sparse_conjunction (one budget for both) | x >= 1
batch_size: int = 64  # prompts (fresh functions) per step | x >= 1
lr: float = 0.003  # AdamW peak learning rate, Transformer (100 warmup steps, cosine decay to 10%) | 0 < x < 1
lstm_lr: float = 0.003  # AdamW peak learning rate, LSTM | 0 < x < 1
n_eval: int = 1280  # held-out prompts per model | x >= 100
workers: int = 2  # models trained in parallel on CPU, one single-threaded process each | x >= 1
llm_functions: int = 5  # fresh functions per seed and class (conjunctions; single literals for the gate) in the SmolLM2 arm | x >= 1
llm_n_dims: int = 5  # input dimension of the SmolLM2 prompts (the authors' LLM runs: 5) | 1 <= x <= 7
llm_n_points: int = 50  # labelled points per SmolLM2 prompt (the authors': 50) | x >= 3
llm_batch_size: int = 4  # SmolLM2 prompts per forward pass | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.icl_boolean import TITLE, URL
from papers.icl_boolean.analysis import (LLM_LEARNERS, llm_function_accuracy, llm_label_mass, measure_conjunction,
                                         measure_llm, measure_lstm, measure_sparse_parity, measure_teaching,
                                         summary)
from papers.icl_boolean.experiment import ModelSpec, run_grid, run_llm_arm
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
torch.set_num_threads(1)  # small models: one thread per process is as fast and robust to a shared CPU
out = resolve_output_dir(output_dir, "icl_boolean")
print(f"profile={profile} device={device} workers={workers} output={out}")

# %% [markdown]
# ## Train and evaluate every arm
# Transformer on the five prompt distributions (`conjunction`, `sparse_parity`, its gate
# `sparse_conjunction` with the same 28 supports, `teach_conjunction` and its control `mono_conjunction`,
# the same prompts without the teaching prefix), the LSTM on `lstm_tasks`, and an A/A replicate of the
# LSTM on conjunctions (`lstm_aa`: training seeds 1000 + s, the evaluation prompts of seed s), the
# control of the LSTM claim. Every model sees `steps x batch_size` fresh functions (`teach_steps` for
# the teaching pair, `parity_steps` for `sparse_parity` and its gate `sparse_conjunction`); the evaluation prompts (seed `10000 + seed`) are shared by the model and the
# classical learners of its arm.

# %%
TRANSFORMER_TASKS = ["conjunction", "sparse_parity", "sparse_conjunction", "teach_conjunction", "mono_conjunction"]
arms = ([("transformer", t) for t in TRANSFORMER_TASKS] + [("lstm", t) for t in lstm_tasks]
        + [("lstm_aa", "conjunction")])
specs = {"transformer": ModelSpec("transformer", d_model, n_layers, n_heads),
         "lstm": ModelSpec("lstm", lstm_d_model, lstm_layers)}  # lstm_aa uses the lstm spec
steps_by_arm = {(f, t): teach_steps if t in ("teach_conjunction", "mono_conjunction")
                else parity_steps if t in ("sparse_parity", "sparse_conjunction") else steps for f, t in arms}
curves, post_teach, losses, runs = run_grid(arms, specs, seeds, n_dims, n_points, steps=steps_by_arm,
                                            batch_size=batch_size, lr={"transformer": lr, "lstm": lstm_lr},
                                            n_eval=n_eval, device=device, workers=workers, progress=progress)
table = summary(curves)
table

# %%
runs

# %% [markdown]
# Accuracy at the first query after the teaching sequence (index |w| + 1), and at the same index in the
# control prompts, which by then have shown |w| + 1 ordinary examples.

# %%
post_teach.groupby(["task", "learner"])["accuracy"].agg(["mean", "min", "max"]).reset_index()

# %% [markdown]
# ## The LLM arm: SmolLM2 on fresh conjunctions, and on single literals (its gate)
# SmolLM2-135M-Instruct reads `llm_functions` fresh conjunctions per seed (n = `llm_n_dims`, the authors'
# LLM sampler) as text in the authors' format; one forward pass per prompt gives its label prediction at
# every query (the more probable of the digits "0" and "1"). Nearest neighbour, the elimination learner and
# the constant -1 predictor see the same prompts. The gate asks whether the model learns anything in
# context: the same number of prompts of the easiest class, a single literal (`y = x_i` or `y = -x_i`).
# The model is the same for every seed; the seeds only draw the functions. It runs with `workers` torch
# threads (the cores the training workers used).

# %%
from shared.lm import load_smollm2

torch.set_num_threads(max(1, workers))
lm, tokenizer = load_smollm2(device)
llm_table = run_llm_arm(lm, tokenizer, seeds, llm_n_dims, llm_n_points, llm_functions, batch_size=llm_batch_size,
                        device=device, progress=progress)
del lm
llm_accuracy = llm_function_accuracy(llm_table)
llm_accuracy.groupby(["task", "seed"])[list(LLM_LEARNERS)].mean()

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("icl_boolean")
for cid, (m, gate, control, detail) in {
        "conjunction_final_gap": measure_conjunction(curves),
        "sparse_parity_near_chance_v2": measure_sparse_parity(curves),
        "teaching_post_prefix_gain": measure_teaching(curves, post_teach),
        "lstm_below_transformer": measure_lstm(curves),
        "llm_competes_with_nearest_neighbour_v2": measure_llm(llm_table)}.items():
    claims[cid].evaluate(m, gate=gate, control=control, detail=detail)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": c.gate.passed, "control": c.control.measured.value,
               "verdict": c.verdict, "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## Figure: accuracy against the number of in-context examples
# One panel per class; the trained networks against the class's optimal learner, nearest neighbour and
# the constant -1 predictor, on the same prompts (95% interval over seeds). "optimal learner" is the
# elimination algorithm on conjunctions and sparse conjunctions, its monotone version on the teaching pair
# and Gaussian elimination over GF(2) on sparse parities.

# %%
plot_df = curves.copy()
# the classical learners are evaluated once per arm; show them from the Transformer arms only
plot_df = plot_df[(plot_df["learner"] == plot_df["family"]) | (plot_df["family"] == "transformer")]
# each class's optimal learner is shown under one legend entry (one per panel, named in the caption), so that
# every colour in the legend stands for one entry
OPTIMAL = "optimal learner"
plot_df["learner"] = plot_df["learner"].replace({"elimination": OPTIMAL, "elimination_monotone": OPTIMAL,
                                                 "gf2_elimination": OPTIMAL})
cb = sns.color_palette("colorblind")
palette = {"transformer": cb[0], "lstm": cb[1], "lstm_aa": cb[5], OPTIMAL: cb[2], "sparse_parity_bayes": cb[4],
           "nearest_neighbour": cb[6], "null": cb[7]}
hue_order = [h for h in palette if h in set(plot_df["learner"])]
grid = sns.relplot(data=plot_df, x="position", y="accuracy", hue="learner", hue_order=hue_order, palette=palette,
                   col="task", col_order=TRANSFORMER_TASKS, kind="line", errorbar=("ci", 95), seed=0, height=3.2,
                   aspect=1.0, facet_kws={"sharey": True})
grid.set_axis_labels("query position t", "accuracy")
grid.figure.suptitle(f"in-context accuracy, n = {n_dims}, N = {n_points} (t - 1 labelled examples before query t)",
                     y=1.04)
grid.set_titles("{col_name}")
for ax in grid.axes.flat:
    ax.axhline(0.9, color="grey", ls=":", lw=1)
savefig(grid.figure, out / "accuracy_vs_examples.png")

# %% [markdown]
# ## Figure: SmolLM2 against the classical learners on the same prompts
# Accuracy at each query position, mean over functions (95% interval over functions, all seeds pooled);
# left the conjunctions of the claim, right the single literals of its gate.

# %%
llm_long = llm_table.melt(id_vars=["task", "seed", "function", "position", "label"],
                          value_vars=[f"pred_{name}" for name in LLM_LEARNERS], var_name="learner",
                          value_name="prediction")
llm_long["learner"] = llm_long["learner"].str.removeprefix("pred_")
llm_long["accuracy"] = (llm_long["prediction"] == llm_long["label"]).astype(float)
llm_palette = {"smollm2": cb[3], "nearest_neighbour": cb[6], "elimination": cb[2], "null": cb[7]}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
for ax, task in zip(axes, ["conjunction", "literal"]):
    sns.lineplot(data=llm_long[llm_long["task"] == task], x="position", y="accuracy", hue="learner",
                 hue_order=list(LLM_LEARNERS), palette=llm_palette, errorbar=("ci", 95), seed=0, ax=ax,
                 legend=task == "literal")
    ax.set_xlabel("query position t")
    ax.set_title(f"SmolLM2-135M-Instruct, {task} n = {llm_n_dims} "
                 f"({int((llm_accuracy['task'] == task).sum())} functions)")
sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
fig.tight_layout()
savefig(fig, out / "llm_accuracy_vs_examples.png")

# %% [markdown]
# ## Write the results

# %%
curves.to_csv(out / "accuracy_curves.csv", index=False, float_format="%.6g")
table.to_csv(out / "summary.csv", index=False, float_format="%.6g")
post_teach.to_csv(out / "post_teach_accuracy.csv", index=False, float_format="%.6g")
loss_table = (losses.assign(arm=losses["family"] + "_" + losses["task"])
              .groupby(["arm", "step"])["loss"].mean().unstack("arm").reset_index())
loss_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")

headline = {}
for r in table.itertuples():
    if r.learner == r.family or r.family == "transformer":
        headline[f"{r.task}_{r.learner}_final_accuracy"] = r.final_accuracy
for r in post_teach[post_teach["learner"] == "transformer"].groupby("task")["accuracy"].mean().items():
    headline[f"{r[0]}_transformer_post_teach_accuracy"] = r[1]
llm_table.to_csv(out / "llm_predictions.csv", index=False, float_format="%.6g")
for (task, name), value in llm_accuracy.groupby("task")[list(LLM_LEARNERS)].mean().stack().items():
    headline[f"llm_{task}_{name}_accuracy"] = float(value)
headline["llm_label_token_probability"] = llm_label_mass(llm_table)
write_metrics(out, slug="icl_boolean", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "icl_boolean"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
