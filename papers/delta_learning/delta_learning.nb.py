# %% [markdown]
# # The Delta Learning Hypothesis: Preference Tuning on Weak Data can Yield Strong Gains: replication
#
# Geng, Ivison, Li, Sap, Li, Krishna, Koh (COLM 2025), [arXiv:2507.06187](https://arxiv.org/abs/2507.06187).
#
# **The hypothesis.** Paired preference data whose responses are individually weak can still improve a
# model stronger than any of them: what drives learning is the *relative* quality delta between chosen and
# rejected, while supervised fine-tuning (SFT) on the same weak chosen responses hurts.
#
# Two experiments from scratch on the CPU, and a third on a pretrained LM in the GPU `full` profile:
#
# 1. **Logistic regression** (paper Sec. 6). A student and two weaker teachers are linear classifiers of a
#    Gaussian halfspace; pairs are (teacher-1 sample > teacher-2 sample). DPO with the student as reference
#    against SFT on the chosen labels, for several amounts of shared error between the three models (`rho`)
#    and several teacher gaps. Accuracies are exact (`1 - angle / pi`). The one-step and converged facts are
#    checks (they hold by construction); the replications compare DPO and SFT along their whole
#    gradient-descent paths, against a control with two equally good teachers.
# 2. **A from-scratch LM ladder** (the model ladders of Secs. 4-5, miniaturised). A tiny Llama learns
#    3-digit addition (numbers written least significant digit first); the first checkpoints of its run to
#    reach 30%, 55% and 85% validation exact match are teacher 2, teacher 1 and the student. The student is
#    tuned for one epoch with length-normalised DPO on the teachers' greedy answers to fresh prompts (chosen =
#    teacher 1, never checked for correctness) or with SFT on the chosen answers; each arm's learning rate
#    (and DPO's beta) is chosen on held-out selection problems. Controls: randomly oriented pairs, SFT on the
#    student's own answers, an A/A rerun; and the swapped pairs.
# 3. **Bold sections** (paper Sec. 2, `full` profile only): SmolLM2-135M-Instruct tuned with DPO on its own
#    answers rewritten with 3 vs 2 bold section headers (same content), against DPO(2 > 3), DPO(3 = 3) and SFT
#    on the 3-section answers; metric = bold section headers per greedy answer to held-out prompts. At
#    `small` (CPU) it does not run and its claims are inconclusive (failed gate).
#
# The claims, gates, controls and criteria are registered in `claims.yaml` (committed before the run); the
# verdicts come from `shared.claims`.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/delta_learning (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
beta: float = 5.0  # DPO beta, both experiments (authors' configs/dpo/base.yaml) | x > 0
lr_seeds: list[int] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # logistic regression: evaluation seeds | len(x) >= 1 and len(set(x)) == len(x)
lr_dim: int = 50  # logistic regression: input dimension d | x >= 5
lr_acc_student: float = 0.9  # accuracy of the student | 0.5 < x < 1
lr_acc_teacher_1: float = 0.8  # accuracy of the chosen (stronger) teacher | 0.5 < x < lr_acc_student
lr_acc_teacher_2: list[float] = [0.75, 0.7, 0.65, 0.6]  # accuracies of the rejected teacher (the gap sweep) | len(x) >= 2 and all(0.5 <= a < lr_acc_teacher_1 for a in x)
lr_primary_teacher_2: float = 0.7  # rejected teacher of the headline comparisons | x in lr_acc_teacher_2
lr_rhos: list[float] = [0.0, 0.5, 1.0]  # shared-error fractions between the three models | len(x) >= 1 and all(0 <= r <= 1 for r in x)
lr_kappa: float = 4.0  # norm (sharpness) of every model | x > 0
lr_pairs: int = 20000  # preference pairs per seed | x >= 10 * lr_dim
lr_step: float = 0.01  # learning rate of the one-step (small-step) DPO and SFT updates | x > 0
seeds: list[int] = [0, 1, 2, 3, 4]  # LM ladder: evaluation seeds (one ladder each) | len(x) >= 1 and len(set(x)) == len(x)
n_digits: int = 3  # LM ladder: digits per operand | 1 <= x <= 6
d_model: int = 64  # tiny Llama width | x >= 8 and x % n_heads == 0
n_layers: int = 2  # tiny Llama layers | x >= 1
n_heads: int = 4  # attention heads | x >= 1
pretrain_steps: int = 1000  # pretraining steps at most (stops once the student checkpoint exists) | x >= 1
pretrain_batch: int = 128  # fresh problems per pretraining step | x >= 1
pretrain_lr: float = 0.003  # pretraining AdamW learning rate | 0 < x < 1
eval_every: int = 10  # snapshot + validation every this many steps | 1 <= x <= pretrain_steps
n_val: int = 256  # validation problems that place the ladder checkpoints | x >= 16
target_teacher_2: float = 0.3  # validation exact match of the weak teacher's checkpoint | 0 <= x <= 1
target_teacher_1: float = 0.55  # ... of the strong teacher's checkpoint | target_teacher_2 <= x <= 1
target_student: float = 0.85  # ... of the student's checkpoint (else the last one) | target_teacher_1 <= x <= 1
n_pair_prompts: int = 4096  # fresh prompts answered by both teachers | x >= 32
n_select: int = 512  # held-out problems that choose each arm's learning rate (and DPO's beta) | x >= 16
n_eval: int = 2000  # held-out problems for exact match | x >= 100
dpo_lrs: list[float] = [1e-5, 3e-5, 1e-4, 3e-4]  # DPO learning-rate grid (one epoch, cosine, 3% warmup) | len(x) >= 1 and all(0 < v < 1 for v in x)
dpo_betas: list[float] = [0.5, 5.0]  # DPO beta grid (catalogue: {0.5, 5}; authors: 5) | len(x) >= 1 and all(v > 0 for v in x)
sft_lrs: list[float] = [1e-5, 3e-5, 1e-4, 3e-4]  # SFT learning-rate grid | len(x) >= 1 and all(0 < v < 1 for v in x)
tune_batch: int = 32  # pairs (or SFT examples) per step (authors: 32) | x >= 1
bold_arm: bool = False  # Exp C (bold sections, SmolLM2): on only in the GPU `full` profile (and, tiny, at smoke)
bold_model: str = "smollm2"  # Exp C model: smollm2 (data/smollm2) or tiny (random tiny Llama: smoke code path) | x in ("smollm2", "tiny")
bold_seeds: list[int] = [0, 1, 2]  # Exp C evaluation seeds (training subset and order) | len(x) >= 1 and len(set(x)) == len(x)
bold_n_pool: int = 2560  # Exp C: training-bank prompts answered by the starting model | x >= bold_n_train
bold_n_train: int = 2048  # Exp C: training pairs per seed, drawn from the pool | x >= 1
bold_n_select: int = 128  # Exp C: held-out prompts whose pairs choose the learning rates | x >= 1
bold_n_eval: int = 300  # Exp C: held-out prompts for the section count and pair accuracy | x >= 1 and x + bold_n_select <= 960
bold_gen_tokens: int = 128  # Exp C: new tokens of the starting model's training responses | x >= 8
bold_eval_tokens: int = 160  # Exp C: new tokens of the evaluated answers (~ a 3-section training response) | x >= bold_gen_tokens
bold_lrs: list[float] = [1e-6, 3e-6, 1e-5]  # Exp C: learning-rate grid of DPO(3>2) and SFT (one epoch, cosine, 3% warmup) | len(x) >= 1 and all(0 < v < 1 for v in x)
bold_batch: int = 32  # Exp C: pairs per step (authors: 32) | x >= 1
bold_gen_batch: int = 320  # Exp C: prompts per generation batch (300 held-out prompts in one) | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.delta_learning import TITLE, URL
from papers.delta_learning import analysis as A
from papers.delta_learning.bold import run_bold, tiny_model_and_tokenizer
from papers.delta_learning.ladder import AdditionTask, ModelSpec, run_seed
from papers.delta_learning.logistic import run_grid, run_paths
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
out = resolve_output_dir(output_dir, "delta_learning")
torch.set_num_threads(1)  # tiny models: one thread is as fast and keeps CPU runs reproducible
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## 1. Logistic regression
#
# Every model is `theta = kappa (cos(alpha) w* + sin(alpha) u)`; the student is the most accurate. On a
# disagreement pair the chosen label follows `sigma(<theta_1 - theta_2, x>)` exactly, so DPO (reference =
# student) converges to `theta_s + (theta_1 - theta_2) / beta`, while SFT on the chosen labels converges to
# `theta_1`. We measure one gradient step (`lr_step`, the small-step regime of a fine-tuning run) and the
# converged solutions, for every shared-error fraction `rho` and teacher gap.

# %%
lr_results = run_grid(lr_seeds, lr_rhos, lr_acc_teacher_2, lr_dim, lr_acc_student, lr_acc_teacher_1, lr_kappa,
                      beta, lr_pairs, lr_step)
lr_table = A.lr_summary(lr_results)
lr_table[["rho", "acc_teacher_2", "dpo_step_gain", "sft_step_gain", "dpo_converged_gain", "sft_converged_gain",
          "delta_cosine", "delta_norm_ratio"]]

# %% [markdown]
# The whole training path: full-batch gradient descent from the student on the DPO loss, on the SFT loss, and
# (control) on the DPO loss of pairs from two teachers of *equal* accuracy, each run to its Newton optimum
# (step = 0.25 / smoothness constant). The best point of each path (oracle early stopping on the exact
# accuracy) and its end; teachers at the primary pair.

# %%
path_rows, path_curves = [], []
for seed in lr_seeds:
    for rho in lr_rhos:
        rows_, curves_ = run_paths(lr_dim, lr_acc_student, lr_acc_teacher_1, lr_primary_teacher_2, rho, lr_kappa,
                                   beta, lr_pairs, seed)
        path_rows += rows_
        if seed == lr_seeds[0]:
            path_curves += [{"rho": rho, "arm": arm, "step": t, "accuracy change": float(v)}
                            for arm, c in curves_.items() for t, v in enumerate(c)]
lr_paths = pd.DataFrame(path_rows)
lr_paths.groupby(["rho", "arm"])[["best_gain", "best_step", "final_gain", "steps", "reached_optimum"]].mean()

# %% [markdown]
# ## 2. The LM ladder
#
# One pretraining run per seed gives the three models; then one epoch of each tuning arm from the student:
# the DPO grid (lr x beta) and the SFT grid (lr), each arm's setting chosen on the selection problems, then
# the swapped, random-orientation, A/A and self-SFT arms at the chosen settings.

# %%
task = AdditionTask(n_digits)
spec = ModelSpec(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
lm_rows, facts, curves, tune_curves, profiles = [], [], [], [], []
for seed in seeds:
    rows, extra = run_seed(task, spec, seed, pretrain_steps, pretrain_batch, pretrain_lr, eval_every, n_val,
                           (target_teacher_2, target_teacher_1, target_student), n_pair_prompts, n_select, n_eval,
                           tuple(dpo_lrs), tuple(dpo_betas), tuple(sft_lrs), tune_batch, device=device,
                           progress=progress)
    lm_rows += rows
    facts.append(extra["facts"])
    curves += extra["curve"]
    tune_curves += extra["tune_curves"]
    profiles += extra["profiles"]
    print(f"seed {seed}: " + ", ".join(f"{r['model']} {r['exact_match']:.3f}" for r in rows if r["role"] != "dpo_grid"
                                       and r["role"] != "sft_grid"), flush=True)
lm_results = pd.DataFrame(lm_rows)
pair_facts = pd.DataFrame(facts)
outputs = pd.DataFrame(profiles)
A.lm_wide(lm_results[lm_results["role"].isin(["ladder", "arm"])])

# %% [markdown]
# Pair statistics per seed (how often each side is correct), the settings chosen on the selection problems,
# and how the tuned students' scores moved: the mean per-token log-probability of the chosen and rejected
# responses and of the *correct* answers to held-out prompts.

# %%
pair_facts

# %% [markdown]
# What the greedy answers look like on the evaluation problems: the share exactly right, numerically above or
# below the correct sum, malformed, and per answer digit (least significant first) the mean signed
# difference from the correct digit.

# %%
outputs.groupby("model").mean(numeric_only=True).drop(columns="seed")

# %% [markdown]
# ## 3. Bold sections (Exp C, GPU `full` profile)
#
# The starting model answers training-bank and held-out prompts greedily; each answer is stripped of
# markdown and rewritten with exactly 3 and exactly 2 bold section headers over the same sentences. Per
# seed: DPO(3 > 2) over the learning-rate grid (kept: lowest dpo_norm loss on held-out selection pairs), then
# DPO(2 > 3), DPO(3 = 3) and DPO(3 > 2) in another data order (A/A) at that rate, and SFT on the 3-section answers (its rate kept by the held-out
# log-probability of 3-section answers). Every kept model answers the held-out evaluation prompts. At `small`
# this section does nothing (`bold_arm` is false); at `smoke` it runs a tiny random Llama through the same
# code.

# %%
bold_table, bold_grid, bold_facts, bold_samples = pd.DataFrame(), pd.DataFrame(), None, {}
if bold_arm:
    if bold_model == "tiny":
        bold_lm, bold_tok = tiny_model_and_tokenizer(bold_seeds[0])
    else:
        from shared.lm import load_smollm2
        bold_lm, bold_tok = load_smollm2(device, dtype=torch.float32)  # fp32 weights; training adds bf16 autocast
    rows_, grid_, bold_facts, bold_samples = run_bold(
        bold_lm, bold_tok, bold_seeds, bold_n_pool, bold_n_train, bold_n_select, bold_n_eval, bold_gen_tokens,
        bold_eval_tokens, bold_lrs, beta, bold_batch, device, progress, bold_gen_batch)
    bold_table, bold_grid = pd.DataFrame(rows_), pd.DataFrame(grid_)
    print(bold_facts)
    print(A.bold_wide(bold_table).to_string())
    for arm_, texts_ in bold_samples.items():
        print(f"--- {arm_} (seed {bold_seeds[0]}), first held-out answer:\n{texts_[0] if texts_ else ''}\n")

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("delta_learning")
A.evaluate_all(claims, lr_results, lr_paths, lm_results, pair_facts, lr_primary_teacher_2, bold_table, bold_facts,
               bold_arm)
pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value, "verdict": c.verdict}
              for c in claims.values()])

# %% [markdown]
# ## Figures
# Left: logistic regression, accuracy change of the student along the gradient-descent paths (seed
# `lr_seeds[0]`; DPO, SFT and the equal-teachers control) by shared-error fraction. Second: one-step DPO gain
# against the teacher gap (a check). Third: the LM ladder, held-out exact match of every model and arm (points:
# seeds). Right: the DPO grid, held-out exact match by learning rate and beta (the arm's setting is chosen on
# the selection problems, not on this plot).

# %%
fig, axes = plt.subplots(1, 4, figsize=(22, 4.4))
pc = pd.DataFrame(path_curves)
pc["step"] = pc["step"] + 1  # log axis: step 1 = start
sns.lineplot(data=pc, x="step", y="accuracy change", hue="arm", style="rho", ax=axes[0])
axes[0].set_xscale("log")
axes[0].axhline(0, color="k", lw=0.8)
axes[0].set(xlabel="gradient-descent step + 1", title=f"logistic regression: student {lr_acc_student}, "
                                                        f"teachers {lr_acc_teacher_1} / {lr_primary_teacher_2}")
sns.lineplot(data=lr_results, x="delta_accuracy", y="dpo_step_gain", hue="rho", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[1])
axes[1].set(xlabel="teacher gap (accuracy of teacher 1 - teacher 2)", ylabel="accuracy change, one DPO step",
            title="one-step gain by gap (check)")
order = ["teacher_2", "teacher_1", "student", "sft_chosen", "sft_self", "dpo_swapped", "dpo_random", "dpo_rerun", "dpo"]
arms = lm_results[lm_results["model"].isin(order)]
sns.pointplot(data=arms, x="model", y="exact_match", order=order, errorbar=("ci", 95), seed=0, linestyle="none",
              ax=axes[2])
sns.stripplot(data=arms, x="model", y="exact_match", order=order, color="grey", size=4, ax=axes[2])
axes[2].set(xlabel="", ylabel="held-out exact match", title=f"LM ladder ({n_digits}-digit addition)")
axes[2].tick_params(axis="x", rotation=30)
grid = lm_results[lm_results["role"] == "dpo_grid"]
sns.pointplot(data=grid, x="lr", y="exact_match", hue="beta", errorbar=("ci", 95), seed=0, ax=axes[3])
axes[3].axhline(A.lm_wide(arms)["student"].mean(), color="k", ls="--", label="student before tuning")
axes[3].set(xlabel="DPO learning rate", ylabel="held-out exact match", title="DPO grid")
axes[3].legend()
fig.tight_layout()
savefig(fig, out / "delta_learning.png")

# %% [markdown]
# Exp C (only when it ran): bold section headers per held-out answer by arm (points: seeds); the dashed line
# is 3, the most in any training response.

# %%
if bold_arm and not bold_table.empty:
    fig, ax = plt.subplots(figsize=(7, 4.4))
    bold_order = ["base", "sft_3", "dpo_2v3", "dpo_3v3", "dpo_3v2", "dpo_3v2_rerun"]
    sns.pointplot(data=bold_table, x="arm", y="sections", order=bold_order, errorbar=("ci", 95), seed=0,
                  linestyle="none", ax=ax)
    sns.stripplot(data=bold_table, x="arm", y="sections", order=bold_order, color="grey", size=4, ax=ax)
    ax.axhline(3, color="k", ls="--", lw=0.8)
    ax.set(xlabel="", ylabel="bold section headers per answer", title=f"bold sections ({bold_model})")
    fig.tight_layout()
    savefig(fig, out / "delta_learning_bold.png")

# %% [markdown]
# ## Write the results

# %%
lr_results.to_csv(out / "logistic_per_seed.csv", index=False, float_format="%.6g")
lr_table.to_csv(out / "logistic_summary.csv", index=False, float_format="%.6g")
lr_paths.to_csv(out / "logistic_paths.csv", index=False, float_format="%.6g")
lm_results.to_csv(out / "ladder_per_seed.csv", index=False, float_format="%.6g")
pair_facts.to_csv(out / "ladder_pairs.csv", index=False, float_format="%.6g")
outputs.to_csv(out / "ladder_outputs.csv", index=False, float_format="%.6g")
(pd.DataFrame(curves).assign(seed=lambda t: "seed_" + t["seed"].astype(str))
 .pivot(index="step", columns="seed", values="val_exact_match").reset_index()
 .to_csv(out / "ladder_pretrain_curves.csv", index=False, float_format="%.6g"))
tune = pd.DataFrame(tune_curves)
(tune.groupby(["arm", "step"])["loss"].mean().unstack("arm").reset_index()
 .to_csv(out / "ladder_tune_curves.csv", index=False, float_format="%.6g"))

if bold_arm:
    bold_table.to_csv(out / "bold_per_seed.csv", index=False, float_format="%.6g")
    bold_grid.to_csv(out / "bold_lr_grid.csv", index=False, float_format="%.6g")

wide = A.lm_wide(arms).mean()
headline = {f"lm_{k}_exact_match": float(v) for k, v in wide.items()}
headline.update({f"lm_{c}": float(pair_facts[c].mean()) for c in pair_facts.columns if "logp_shift" in c})
for arm in ("dpo", "sft_chosen"):
    o = outputs[outputs["model"] == arm]
    headline[f"lm_{arm}_answers_above_correct"] = float(o["above"].mean())
    headline[f"lm_{arm}_answers_below_correct"] = float(o["below"].mean())
for r in lr_table[lr_table["acc_teacher_2"].round(6) == round(lr_primary_teacher_2, 6)].itertuples():
    for col in ("dpo_step_gain", "sft_step_gain", "dpo_converged_gain", "sft_converged_gain"):
        headline[f"lr_rho{r.rho:g}_{col}"] = float(getattr(r, col))
for (rho, arm), g in lr_paths.groupby(["rho", "arm"]):
    headline[f"lr_rho{rho:g}_{arm}_path_best_gain"] = float(g["best_gain"].mean())
if bold_arm and not bold_table.empty:
    headline.update({f"bold_{k}_sections": float(v) for k, v in A.bold_wide(bold_table).mean().items()})
write_metrics(out, slug="delta_learning", title=TITLE, url=URL, profile=profile, device=device,
              seeds=sorted(set(seeds) | set(lr_seeds) | (set(bold_seeds) if bold_arm else set())), claims=list(claims.values()), headline=headline,
              params=snapshot(globals(), "delta_learning"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
