# %% [markdown]
# # HelpSteer2-Preference: Complementing Ratings with Preferences: replication
#
# Wang, Bukharin, Delalleau, Egert, Shen, Zeng, Kuchaiev, Dong (ICLR 2025),
# [arXiv:2410.01257](https://arxiv.org/abs/2410.01257).
#
# **What the paper does.** It adds 7-point preference annotations (A >>> B ... B >>> A) to the SAME
# prompt/response pairs that HelpSteer2 rated on a 0-4 Likert scale, filters disagreeing tasks (Cohen's
# kappa 0.489 -> 0.878), and compares on matched data Regression reward models (MSE on the rating) with
# Bradley-Terry (BT), Margin BT and its proposed Scaled BT (the BT loss weighted by the preference
# magnitude). Scaled BT beats BT and Margin BT; Scaled BT initialised from the helpfulness-only Regression
# model is best (RewardBench 93.7; 94.1 with ExPO).
#
# **What this notebook tests.** HelpSteer2 and 70B models are out of reach offline, so everything is
# synthetic: a hidden utility of prompt/response features, simulated annotators who give ratings AND
# preference strengths on the same tasks with one perception-noise model, and small MLP reward heads
# trained with `shared.training.train` and early-stopped on annotated validation tasks. The statistic is
# held-out pairwise accuracy against the true utility. Claims (`claims.yaml`, committed before the first
# `small` run) are decided at the pre-registered noise level `sigma_verdict`; the other noise levels of the
# fixed grid are reported, not decided.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner; these tiny heads run on CPU)
output_dir: str = ""  # where outputs go; empty = scratch/helpsteer2_preference (set by the runner)
progress: bool = True  # show progress lines (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (one world, data set, annotation and init per seed) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
sigmas: list[float] = [0.5, 1.0, 2.0]  # pre-registered grid of annotator perception noise (std of q noise) | len(x) >= 1 and all(s > 0 for s in x)
sigma_verdict: float = 1.0  # the grid point at which the claims are decided | x in sigmas
n_train_tasks: int = 12000  # annotated two-response tasks (before filtering), validation included | x > n_val_tasks
n_val_tasks: int = 2000  # annotated tasks held out for early stopping (before filtering) | x >= 50
n_test_tasks: int = 4000  # held-out tasks scored against the true utility | x >= 100
d_prompt: int = 8  # prompt feature dimension | x >= 1
d_resp: int = 16  # response feature dimension | x >= 1
teacher_hidden: int = 32  # width of the hidden utility network | x >= 1
prompt_scale: float = 1.0  # std of the prompt-level utility shift (irrelevant to within-prompt ranking) | x >= 0
n_annotators: int = 3  # annotators per task and format | x >= 2
sigma_offset: float = 0.5  # std of the per-(annotator, prompt) rating calibration offset | x >= 0
pref_scale: float = 1.0  # preference strength per unit of perceived utility difference | x > 0
max_spread: int = 2  # agreement filter: drop tasks whose annotators' strengths span more than this | 0 <= x <= 6
hidden: int = 64  # reward-head width (two hidden layers) | x >= 1
steps: int = 800  # maximum optimiser steps per arm (and per stage of the two-stage arms) | x >= 1
eval_every: int = 40  # validation (early stopping) every this many steps | 1 <= x <= steps
lr: float = 0.001  # AdamW learning rate, every arm | 0 < x < 1
weight_decay: float = 0.01  # AdamW weight decay, every arm | x >= 0
batch_size: int = 128  # pairs per step (regression: 2x responses) | x >= 1
gate_accuracy: float = 0.75  # gate: every compared arm reaches this held-out accuracy in every seed | 0.5 <= x <= 1
gate_kept: float = 0.5  # gate of the filter check: smallest kept fraction of tasks | 0 <= x <= 1
workers: int = 2  # parallel single-threaded worker processes | x >= 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.helpsteer2_preference import TITLE, URL
from papers.helpsteer2_preference.analysis import (accuracy_table, measure_filter_agreement,
                                                   measure_init_from_regression, measure_regression_vs_bt,
                                                   measure_scaled_bt_beats_bt, measure_scaled_bt_beats_margin_bt)
from papers.helpsteer2_preference.method import run_cell
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "helpsteer2_preference")
cfg = dict(d_prompt=d_prompt, d_resp=d_resp, teacher_hidden=teacher_hidden, prompt_scale=prompt_scale,
           n_train_tasks=n_train_tasks, n_val_tasks=n_val_tasks, n_test_tasks=n_test_tasks,
           n_annotators=n_annotators, sigma_offset=sigma_offset, pref_scale=pref_scale, max_spread=max_spread,
           hidden=hidden, steps=steps, eval_every=eval_every, lr=lr, weight_decay=weight_decay,
           batch_size=batch_size)
print(f"profile={profile} output={out} cells={len(seeds) * len(sigmas)}")

# %% [markdown]
# ## Simulate, annotate and train every arm, per (seed, noise level)

# %%
jobs = [(s, float(sig), cfg) for sig in sigmas for s in seeds]


def _done(i, res, n):
    if progress:
        print(f"cell {n}/{len(jobs)} done (seed {jobs[i][0]}, sigma {jobs[i][1]})", flush=True)


cells = run_jobs(run_cell, jobs, workers=workers, on_done=_done)
arms = pd.DataFrame([r for c in cells for r in c["arms"]])
agreement = pd.DataFrame([c["agreement"] for c in cells])
arms.groupby(["sigma", "arm"])[["accuracy", "accuracy_hard", "best_step"]].mean().round(4)

# %%
agreement.groupby("sigma")[["kappa_all", "kappa_filtered", "kappa_random_filter", "kept_fraction",
                            "tie_fraction_kept", "pref_sign_accuracy_kept"]].mean().round(4)

# %% [markdown]
# ## Verdicts (at the pre-registered noise level)

# %%
claims = load_claims("helpsteer2_preference")
acc = accuracy_table(arms, sigma_verdict)
for cid, fn in [("scaled_bt_beats_bt", measure_scaled_bt_beats_bt),
                ("scaled_bt_beats_margin_bt", measure_scaled_bt_beats_margin_bt),
                ("init_from_regression_beats_single", measure_init_from_regression),
                ("regression_competitive_with_bt", measure_regression_vs_bt)]:
    measured, gate, control = fn(arms, sigma_verdict, gate_accuracy)
    means = ", ".join(f"{a} {acc[a].mean():.4f}" for a in acc.columns)
    claims[cid].evaluate(measured, gate=gate, control=control,
                         detail=f"sigma = {sigma_verdict}; mean held-out accuracy per arm: {means}")
measured, gate, control = measure_filter_agreement(agreement, sigma_verdict, gate_kept)
ag = agreement[np.isclose(agreement["sigma"], sigma_verdict)]
claims["filter_raises_agreement"].evaluate(
    measured, gate=gate, control=control,
    detail=f"sigma = {sigma_verdict}; mean kappa all {ag['kappa_all'].mean():.3f}, filtered "
           f"{ag['kappa_filtered'].mean():.3f}, random filter {ag['kappa_random_filter'].mean():.3f}")
verdicts = pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": c.gate.passed,
                          "control": c.control.measured.value, "verdict": c.verdict} for c in claims.values()])
verdicts

# %% [markdown]
# ## Figure: held-out pairwise accuracy by arm and annotator noise
# Means over seeds with 95% bootstrap intervals (seaborn, seeded). The dashed line marks the noise level at
# which the claims are decided.

# %%
order = ["regression", "bt", "margin_bt", "scaled_bt", "scaled_bt_init_reg",
         "control_scaled_bt_shuffled_magnitude", "control_scaled_bt_init_shuffled_reg"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
plot = arms[arms["arm"].isin(order)]
sns.pointplot(data=plot, x="sigma", y="accuracy", hue="arm", hue_order=order, dodge=0.5, errorbar=("ci", 95),
              seed=0, ax=axes[0])
axes[0].set(title="all held-out tasks", xlabel="annotator noise sigma", ylabel="pairwise accuracy vs true utility")
axes[0].legend(fontsize=7)
sns.pointplot(data=plot, x="sigma", y="accuracy_hard", hue="arm", hue_order=order, dodge=0.5,
              errorbar=("ci", 95), seed=0, ax=axes[1], legend=False)
axes[1].set(title="hard half (|q_a - q_b| below the median)", xlabel="annotator noise sigma", ylabel="")
fig.tight_layout()
savefig(fig, out / "accuracy_by_arm.png")

# %% [markdown]
# ## Figure: the per-seed gaps behind each claim, at every noise level

# %%
gap_rows = []
for sig in sigmas:
    a = accuracy_table(arms, sig)
    for s in a.index:
        r = a.loc[s]
        gap_rows += [
            {"sigma": sig, "seed": s, "comparison": "Scaled BT - BT", "gap": r["scaled_bt"] - r["bt"]},
            {"sigma": sig, "seed": s, "comparison": "Scaled BT - Margin BT", "gap": r["scaled_bt"] - r["margin_bt"]},
            {"sigma": sig, "seed": s, "comparison": "ScaledBT<-Reg - max(Reg, ScaledBT)",
             "gap": r["scaled_bt_init_reg"] - max(r["regression"], r["scaled_bt"])},
            {"sigma": sig, "seed": s, "comparison": "Regression - BT", "gap": r["regression"] - r["bt"]},
            {"sigma": sig, "seed": s, "comparison": "control: shuffled-magnitude Scaled BT - BT",
             "gap": r["control_scaled_bt_shuffled_magnitude"] - r["bt"]},
            {"sigma": sig, "seed": s, "comparison": "control: ScaledBT<-shuffled Reg - max(Reg, ScaledBT)",
             "gap": r["control_scaled_bt_init_shuffled_reg"] - max(r["regression"], r["scaled_bt"])}]
gaps = pd.DataFrame(gap_rows)
fig, ax = plt.subplots(figsize=(10, 4.5))
np.random.seed(0)  # strip jitter uses numpy's global generator: fixed for stable PNGs
sns.stripplot(data=gaps, y="comparison", x="gap", hue="sigma", dodge=True, jitter=0.15, size=5, ax=ax)
ax.axvline(0.0, color="k", lw=1)
ax.axvline(0.005, color="grey", ls="--", lw=1)
ax.set(xlabel="per-seed held-out accuracy gap", ylabel="")
fig.tight_layout()
savefig(fig, out / "gaps.png")

# %% [markdown]
# ## Write the results

# %%
arms.to_csv(out / "arms.csv", index=False, float_format="%.6g")
agreement.to_csv(out / "agreement.csv", index=False, float_format="%.6g")
gaps.to_csv(out / "gaps.csv", index=False, float_format="%.6g")
verdict_acc = acc.mean()
headline = {f"accuracy_{a}": float(verdict_acc[a]) for a in acc.columns}
headline.update({"kappa_all": float(ag["kappa_all"].mean()), "kappa_filtered": float(ag["kappa_filtered"].mean()),
                 "sigma_verdict": sigma_verdict})
write_metrics(out, slug="helpsteer2_preference", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "helpsteer2_preference"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
