# %% [markdown]
# # Controllable Context Sensitivity and the Knob Behind It: replication
#
# Minder, Du, Stoehr, Monea, Wendler, West, Cotterell (ICLR 2025),
# [arXiv:2411.07404](https://arxiv.org/abs/2411.07404). Authors' code: kdu4108/context-vs-prior-finetuning.
#
# **The task (CCS).** A context that contradicts a fact ("The capital of France is Madrid"), a query about it
# and an *intent*: use the context (answer Madrid) or use your prior knowledge (answer Paris). A model solves
# an item only when it is right under both intents (pair accuracy). The paper fine-tunes 7-9B instruct
# models on this task, finds with rank-1 distributed alignment search (DAS) a 1-D subspace at one layer, at
# the last prompt token, that encodes the intent, and shows that setting the coordinate on it to a
# "context" or a "prior" value steers the model even when the instruction is removed from the prompt, in the
# fine-tuned model and in the models of the family that were never fine-tuned.
#
# **Two arms.** *tiny*: a 4-layer Llama trained from scratch on a synthetic encyclopedia (it learns facts,
# context copying, and to follow or ignore a context when cued), then LoRA-fine-tuned on CCS prompts with
# new intent phrasings; the whole pipeline of the paper runs on it, with 3 seeds in minutes.
# *smollm2*: the pretrained SmolLM2-135M-Instruct on capitals; on CPU (`small`) inference only (zero-shot
# pair accuracy, and a difference-of-means direction of the non-fine-tuned model as a knob); the GPU `full`
# profile adds LoRA fine-tuning, DAS on the fine-tuned model and steering the non-fine-tuned model with it.
#
# The claims, their gates, controls and criteria are registered in `claims.yaml` before any result; the
# verdicts come from the shared rule (`shared.claims`).

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/context_knob (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4, 5, 6, 7]  # evaluation seeds of the tiny arm (world, splits, initialisations, counterfactuals) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
workers: int = 2  # tiny-arm seeds trained in parallel single-threaded processes (results do not depend on it) | x >= 1
lm_seeds: list[int] = [0, 1, 2]  # seeds of the SmolLM2 arm (items, counterfactuals, splits) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
tiny_entities: int = 64  # known entities of the tiny world (split 1/2 train, 1/4 dev, 1/4 test) | x >= 8
tiny_novel: int = 32  # entities without a fact (context copying in pre-training) | x >= 1
tiny_values: int = 16  # attribute values (answers) | x >= 3
tiny_d_model: int = 64  # width of the tiny Llama | x >= 8 and x % tiny_heads == 0
tiny_layers: int = 4  # decoder blocks of the tiny Llama | x >= 1
tiny_heads: int = 4  # attention heads | x >= 1
pretrain_steps: int = 300  # AdamW steps of pre-training | x >= 1
pretrain_batch: int = 128  # sequences per pre-training step | x >= 1
pretrain_lr: float = 0.003  # pre-training learning rate | 0 < x < 1
ft_steps: int = 300  # LoRA fine-tuning steps on CCS prompts | x >= 1 and x % ft_checkpoints == 0
ft_pairs: int = 32  # CCS items (x 2 intents) per fine-tuning step | x >= 1
ft_lr: float = 0.003  # LoRA learning rate (tiny model) | 0 < x < 1
lora_r: int = 8  # LoRA rank on q/k/v/o (tiny model) | x >= 1
lora_alpha: float = 16.0  # LoRA alpha (tiny model) | x > 0
ft_checkpoints: int = 6  # fine-tuning checkpoints evaluated for the correlation claim | 1 <= x <= ft_steps
items_per_entity: int = 4  # counterfactual items per entity in the train/dev/test sets | 1 <= x < tiny_values
das_steps: int = 300  # Adam steps of rank-1 DAS per layer | x >= 1
das_lr: float = 0.03  # DAS learning rate | 0 < x < 1
das_max_targets: int = 256  # DAS training targets (prompts) | x >= 4
steer_multipliers: list[float] = [1.0, 2.0, 4.0, 8.0, 16.0]  # steering values mid +/- k * half-separation; k chosen on dev | len(x) >= 1 and all(k > 0 for k in x)
lm_arm: str = "finetune"  # SmolLM2 arm: none, probe (inference only), finetune (probe + top-block LoRA + DAS + transfer) | x in ("none", "probe", "finetune")
lm_candidates: int = 113  # first countries of the capitals list checked for the model's knowledge | 8 <= x <= 113
lm_items: int = 60  # known capitals per seed (split 1/2 train, 1/4 dev, 1/4 test) | x >= 8
lm_layers: list[int] = [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]  # SmolLM2 layers searched (0-29) | len(x) >= 1 and all(0 <= l <= 29 for l in x) and len(set(x)) == len(x)
lm_batch: int = 32  # SmolLM2 prompts per forward pass | x >= 1
lm_top_blocks: int = 2  # SmolLM2 LoRA on the last blocks only; the lower blocks' outputs are cached | 1 <= x <= 30
lm_ft_contexts: int = 1  # counterfactual contexts per training item in the fixed LoRA training set (x 2 intents) | x >= 1
lm_ft_steps: int = 60  # SmolLM2 LoRA steps (finetune arm) | x >= 1
lm_ft_batch: int = 8  # SmolLM2 cached training prompts per LoRA step | x >= 1
lm_ft_lr: float = 0.003  # SmolLM2 LoRA learning rate | 0 < x < 1
lm_lora_r: int = 64  # SmolLM2 LoRA rank (the authors' r = 64, alpha = 16) | x >= 1
lm_lora_alpha: float = 16.0  # SmolLM2 LoRA alpha | x > 0
lm_das_layers: list[int] = [20, 27, 28]  # SmolLM2 DAS candidate layers (finetune arm; layer chosen on dev IIA) | len(x) >= 1 and all(0 <= l <= 29 for l in x) and len(set(x)) == len(x)
lm_das_steps: int = 25  # SmolLM2 DAS steps per layer | x >= 1
lm_das_lr: float = 0.01  # SmolLM2 DAS learning rate | 0 < x < 1
lm_das_max_targets: int = 24  # SmolLM2 DAS training targets | x >= 4

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.context_knob import TITLE, URL
from papers.context_knob.analysis import evaluate_all, spearman, steering_summary
from papers.context_knob.experiment import DasSpec, LMSpec, TinySpec, known_capitals, run_smollm2_seed, run_tiny_all
from shared.claims import load_claims
from shared.device import describe, pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.legends import place_legends
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
out = resolve_output_dir(output_dir, "context_knob")
print(f"profile={profile} device={describe(device)} output={out}")

# %% [markdown]
# ## Tiny arm: pre-training, CCS fine-tuning, DAS per layer, steering
#
# Per seed: a new world (facts), a train/dev/test split of the entities, a pre-trained base model, its
# LoRA-fine-tuned copy, a rank-1 DAS direction at each layer (targets from training entities, the
# authors' pairing rule: source with a different subject, context answer, prior answer and the opposite
# intent), the layer with the best dev interchange accuracy, and steering on held-out prompts without an
# instruction.

# %%
tiny_spec = TinySpec(n_entities=tiny_entities, n_novel=tiny_novel, n_values=tiny_values, d_model=tiny_d_model,
                     n_layers=tiny_layers, n_heads=tiny_heads, pretrain_steps=pretrain_steps,
                     pretrain_batch=pretrain_batch, pretrain_lr=pretrain_lr, ft_steps=ft_steps, ft_pairs=ft_pairs,
                     ft_lr=ft_lr, lora_r=lora_r, lora_alpha=lora_alpha, ft_checkpoints=ft_checkpoints,
                     items_per_entity=items_per_entity,
                     das=DasSpec(steps=das_steps, lr=das_lr, max_targets=das_max_targets),
                     multipliers=steer_multipliers)
t0 = time.perf_counter()
tiny = {k: pd.DataFrame(v) for k, v in run_tiny_all(tiny_spec, seeds, device, workers, progress).items()}
print(f"tiny arm: {time.perf_counter() - t0:.0f} s")
tiny["pretrain"]

# %% [markdown]
# The pre-trained model knows the facts, copies contexts and follows the trust/doubt cue (a neutral
# conflict is a coin flip by construction). Fine-tuning results and the chosen layers:

# %%
tiny["summary"]

# %%
tiny["das"]

# %% [markdown]
# ## SmolLM2-135M-Instruct on capitals

# %%
lm = {k: [] for k in ("summary", "steering", "sweep", "layer_scan", "das", "steering_ft", "curves_lm")}
if lm_arm != "none":
    from shared.lm import load_smollm2

    t0 = time.perf_counter()
    model, tokenizer = load_smollm2(device)
    known = known_capitals(model, tokenizer, lm_batch, device, n_candidates=lm_candidates)
    print(f"SmolLM2 knows {len(known)} of the first {lm_candidates} capitals")
    if len(known) < 8:
        raise RuntimeError(f"only {len(known)} known capitals: raise lm_candidates")
    lm_spec = LMSpec(mode=lm_arm, n_items=lm_items, layers=lm_layers, multipliers=steer_multipliers,
                     batch_size=lm_batch, ft_steps=lm_ft_steps, ft_batch=lm_ft_batch, ft_contexts=lm_ft_contexts,
                     n_top=lm_top_blocks, ft_lr=lm_ft_lr, lora_r=lm_lora_r, lora_alpha=lm_lora_alpha,
                     das_layers=lm_das_layers,
                     das=DasSpec(steps=lm_das_steps, lr=lm_das_lr, max_targets=lm_das_max_targets))
    for seed in lm_seeds:
        res = run_smollm2_seed(model, tokenizer, known, lm_spec, seed, device, progress)
        lm["summary"].append(res["summary"])
        for k in ("steering", "sweep", "layer_scan", "das", "steering_ft", "curves_lm"):
            lm[k] += res.get(k, [])
    print(f"SmolLM2 arm: {time.perf_counter() - t0:.0f} s")
lm = {k: pd.DataFrame(v) for k, v in lm.items()}
lm["summary"]

# %% [markdown]
# The LoRA arm (`lm_arm = finetune`): LoRA on the last `lm_top_blocks` blocks of SmolLM2 on a fixed training
# set (lower-block states cached), rank-1 DAS at the candidate layers `lm_das_layers` of the fine-tuned model
# (`tuned`: the layer is inside the tuned blocks), the layer chosen on dev interchange accuracy.

# %%
lm["das"]

# %% [markdown]
# ## Verdicts

# %%
steering = pd.concat([tiny["steering"], lm["steering"]], ignore_index=True)
claims = evaluate_all(load_claims("context_knob"), tiny, lm, lm_arm)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low, "ci_high": c.measured.ci_high,
               "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value, "verdict": c.verdict}
              for c in claims.values()])

# %%
table = steering_summary(pd.concat([steering, lm["steering_ft"]], ignore_index=True))
table

# %% [markdown]
# ## Figures
#
# Steered pair accuracy on held-out prompts without an instruction (the main result), the DAS layer scan,
# the steering sweep, and pair accuracy against separation across fine-tuning checkpoints.

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
plot_df = steering.assign(setting=steering["arm"] + ": " + steering["model"])
sns.barplot(data=plot_df, x="setting", y="pair_accuracy", hue="direction", errorbar=("ci", 95), seed=0, ax=ax)
sns.stripplot(data=plot_df, x="setting", y="pair_accuracy", hue="direction", dodge=True, palette="dark:k", size=3,
              legend=False, ax=ax)
ax.set(xlabel="", ylabel="steered pair accuracy (test)", ylim=(0, 1.02))
ax.legend(title="direction", fontsize="small")
place_legends(fig)  # legends off the data (shared.legends)
savefig(fig, out / "steering_pair_accuracy.png")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
if tiny["das"].empty:
    raise RuntimeError("DAS did not run: no item passed the correctness filter (fine-tuning failed)")
das_long = tiny["das"].melt(id_vars=["seed", "layer"], value_vars=["dev_iia", "test_iia"], var_name="split",
                            value_name="iia").astype({"seed": str})
sns.lineplot(data=das_long, x="layer", y="iia", hue="seed", style="split", markers=True, palette="colorblind",
             errorbar=None, ax=ax)
ax.set(xlabel="layer (tiny Llama; residual stream after the block, last token)", ylabel="interchange accuracy",
       ylim=(0, 1.02), xticks=sorted(das_long["layer"].unique()))
# one entry per seed and split is taller than the panel: always outside, right of it
sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
savefig(fig, out / "das_iia_by_layer.png")

# %%
sweep = pd.concat([tiny["sweep"], lm["sweep"]], ignore_index=True)
sweep["setting"] = sweep["arm"] + ": " + sweep["model"]
g = sns.relplot(data=sweep, x="scale", y="context_answer_rate", hue="direction", col="setting", kind="line",
                errorbar=("ci", 95), seed=0, height=3, aspect=1.0, facet_kws={"ylim": (0, 1.02)})
g.set_axis_labels("steering value (mid + s * half)", "P(context answer)")
place_legends(g.figure)  # legends off the data (shared.legends)
savefig(g.figure, out / "steering_sweep.png")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
sns.scatterplot(data=tiny["checkpoints"], x="separation", y="pair_accuracy", hue="seed", style="seed",
                palette="colorblind", ax=ax)
ax.set(xlabel="d' of the two intents on the DAS direction", ylabel="pair accuracy (test)")
place_legends(fig)  # legends off the data (shared.legends)
savefig(fig, out / "separation_vs_accuracy.png")
# Spearman correlation over seeds at each checkpoint step (the across-model statistic of separation_across_seeds)
tiny["checkpoints"].groupby("ft_step").apply(lambda g: spearman(g["pair_accuracy"], g["separation"]))

# %%
tiny["das"].to_csv(out / "das_by_layer.csv", index=False)
pd.concat([steering, lm["steering_ft"]], ignore_index=True).to_csv(out / "steering.csv", index=False)
tiny["checkpoints"].to_csv(out / "checkpoints.csv", index=False)
tiny["curves"].to_csv(out / "training_curves.csv", index=False)
if len(lm["das"]):
    lm["das"].to_csv(out / "smollm2_das_by_layer.csv", index=False)
    lm["summary"].to_csv(out / "smollm2_summary.csv", index=False)


def mean_of(arm, model, direction):
    sub = steering[(steering["arm"] == arm) & (steering["model"] == model) & (steering["direction"] == direction)]
    return float(sub["pair_accuracy"].mean()) if len(sub) else None


def mean_of_ft(model, direction):
    sub = lm["steering_ft"]
    if sub.empty:
        return None
    sub = sub[(sub["model"] == model) & (sub["direction"] == direction)]
    return float(sub["pair_accuracy"].mean()) if len(sub) else None


headline = {
    "tiny_ft_pair_accuracy": float(tiny["summary"]["ft_pair_accuracy"].mean()),
    "tiny_base_pair_accuracy_with_intent": float(tiny["summary"]["base_pair_accuracy"].mean()),
    "tiny_test_iia": float(tiny["summary"]["test_iia"].mean()) if "test_iia" in tiny["summary"] else None,
    "tiny_test_iia_random": float(tiny["summary"]["test_iia_random"].mean()) if "test_iia_random" in tiny["summary"] else None,
    "tiny_pretrain_fact_accuracy": float(tiny["pretrain"]["fact"].mean()),
    "tiny_pretrain_copy_accuracy": float(tiny["pretrain"]["novel_copy"].mean()),
    "tiny_das_layers": ",".join(str(int(v)) for v in tiny["summary"].get("best_layer", pd.Series(dtype=int))),
    "tiny_das_dom_cosine": float(tiny["summary"]["das_dom_cosine"].mean()) if "das_dom_cosine" in tiny["summary"] else None,
    "tiny_steer_ft_knob": mean_of("tiny", "fine-tuned", "knob"),
    "tiny_steer_ft_random": mean_of("tiny", "fine-tuned", "random"),
    "tiny_steer_ft_difference_of_means": mean_of("tiny", "fine-tuned", "difference of means"),
    "tiny_steer_base_knob": mean_of("tiny", "base", "knob"),
    "tiny_steer_base_random": mean_of("tiny", "base", "random"),
    "tiny_steer_ft_random_b": mean_of("tiny", "fine-tuned", "random_b"),
    "tiny_steer_base_random_b": mean_of("tiny", "base", "random_b"),
}
if len(lm["summary"]):
    headline.update({
        "smollm2_known_capitals": int(len(known)),
        "smollm2_zero_shot_pair_accuracy": float(lm["summary"]["zero_shot_pair_accuracy"].mean()),
        "smollm2_unsteered_context_rate": float(lm["summary"]["unsteered_context_rate"].mean()),
        "smollm2_steer_knob": mean_of("smollm2", "instruct", "knob"),
        "smollm2_steer_random": mean_of("smollm2", "instruct", "random"),
    })
    if "ft_pair_accuracy" in lm["summary"]:
        headline["smollm2_ft_pair_accuracy"] = float(lm["summary"]["ft_pair_accuracy"].mean())
        headline["smollm2_ft_dev_pair_accuracy"] = float(lm["summary"]["ft_dev_pair_accuracy"].mean())
        headline["smollm2_steer_transfer_knob"] = mean_of_ft("instruct (DAS from fine-tuned)", "knob")
        headline["smollm2_steer_transfer_random"] = mean_of_ft("instruct (DAS from fine-tuned)", "random")
        headline["smollm2_steer_transfer_random_b"] = mean_of_ft("instruct (DAS from fine-tuned)", "random_b")
        headline["smollm2_steer_finetuned_knob"] = mean_of_ft("fine-tuned", "knob")
    if "das_layer" in lm["summary"]:
        headline["smollm2_das_layers"] = ",".join(str(int(v)) for v in lm["summary"]["das_layer"].dropna())
write_metrics(out, slug="context_knob", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "context_knob"))
