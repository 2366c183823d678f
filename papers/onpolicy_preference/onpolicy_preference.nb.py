# %% [markdown]
# # Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data: replication
#
# Tajwar, Singh, Sharma, Rafailov, Schneider, Xie, Ermon, Finn, Kumar (ICML 2024),
# [arXiv:2404.14367](https://arxiv.org/abs/2404.14367). Authors' code: Asap7772/understanding-rlhf.
#
# **The didactic bandit.** A contextual bandit with 100 actions ("tokens"); the reference policy `pi_ref`
# is a squashed Cauchy binned into the actions (mode near action 16, plus the squashed tails in the first
# and last bin). Two true rewards: `R1` peaks at action 70, where `pi_ref` has little mass, and `R2` peaks at
# action 20, near `pi_ref`'s mode. Every policy starts from `pi_ref` and is fine-tuned with preferences
# labelled by the true reward, with or without **on-policy sampling** (fresh samples from the current
# policy) and with or without a **negative gradient** (a loss that pushes down the dispreferred response).
# The paper's finding: both ingredients beat offline maximum likelihood (Pref-FT), most when the optimum lies
# where `pi_ref` has little mass, and both are "mode-seeking".
#
# The claims and their criteria are fixed in `experiment.CLAIMS` and the README, before any result.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner); this paper always runs on the CPU
output_dir: str = ""  # where outputs go; empty = scratch/onpolicy_preference (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (contexts, initialisation, data) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
steps: int = 1500  # gradient steps of every fine-tuning method (authors' on-policy budget: 100 rounds x 15) | x >= 1 and x % steps_per_round == 0
eval_every: int = 15  # evaluate on the held-out states every this many steps | 1 <= x <= steps
n_samples: int = 10  # responses N sampled per prompt | 2 <= x <= 100
n_offline_states: int = 100  # prompts of the offline dataset (from pi_ref) | x >= 1
n_onpolicy_states: int = 10  # prompts sampled per on-policy round | x >= 1
n_eval_states: int = 100  # held-out prompts for evaluation | x >= 1
steps_per_round: int = 15  # gradient steps on each on-policy batch before resampling | x >= 1
offline_pair_threshold: float = 0.2  # offline IPO/DPO drop pairs with a reward gap below this (authors' reward_threshold) | 0 <= x < 1
ipo_tau: float = 0.05  # IPO regularisation tau; target margin 1/(2 tau) = 10 (authors' beta = 10) | x > 0
dpo_beta: float = 0.1  # DPO inverse temperature | x > 0
lr_pref_ft: float = 0.01  # Adam lr, offline Pref-FT (authors' best_of_n.sh) | 0 < x < 1
lr_ipo: float = 0.003  # Adam lr, offline IPO (authors' ipo.sh) | 0 < x < 1
lr_dpo: float = 0.003  # Adam lr, offline DPO (= offline IPO's) | 0 < x < 1
lr_bon_onpolicy: float = 0.001  # Adam lr, on-policy best-of-N (authors' onpolicy_best_of_n.sh) | 0 < x < 1
lr_ipo_onpolicy: float = 0.01  # Adam lr, on-policy IPO (authors' onpolicy_ipo.sh) | 0 < x < 1
lr_reinforce: float = 0.001  # Adam lr, REINFORCE (authors' best_hyperparams.py) | 0 < x < 1
pretrain_steps: int = 100  # Adam steps fitting the initial policy to pi_ref (authors' run_sft) | x >= 1
pretrain_lr: float = 0.01  # Adam lr of that fit | 0 < x < 1
fit_beta: float = 0.1  # temperature of the target pi* ~ pi_ref exp(r / beta) of the mode-seeking experiment | x > 0
fit_steps: int = 300  # Adam steps of the forward / reverse KL fits | x >= 1
fit_lr: float = 0.001  # Adam lr of the forward / reverse KL fits | 0 < x < 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from papers.onpolicy_preference import TITLE, URL
from papers.onpolicy_preference import bandit as B
from papers.onpolicy_preference.analysis import (auc_table, decide_complementary, decide_geometry_interaction,
                                                 decide_mode_seeking, decide_negative_gradient,
                                                 decide_on_policy_sampling, final_table, summary)
from papers.onpolicy_preference.experiment import (DataSpec, MethodSpec, make_claims, make_setup,
                                                   pretrain_reference, run_methods, run_mode_fit)
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
# The policies are tiny (~110k parameters): one intra-op thread is fastest, and on a shared 2-core machine a
# second thread mostly spin-waits (measured: 14 ms vs 115 ms CPU per step under load).
torch.set_num_threads(1)
out = resolve_output_dir(output_dir, "onpolicy_preference")
print(f"profile={profile} device=cpu (requested {device!r}; the policies are tiny) output={out}")

# %% [markdown]
# ## The reference policy and the two rewards

# %%
pi_ref = B.reference_policy()
actions = np.arange(B.N_ACTIONS)
rewards = {name: B.reward_vector(peak) for name, peak in B.REWARD_PEAKS.items()}
setting = pd.DataFrame([{"reward_fn": name, "peak": B.REWARD_PEAKS[name],
                         "pi_ref mass within 10 of peak": pi_ref[B.peak_region(B.REWARD_PEAKS[name])].sum(),
                         "E_pi_ref[r]": float(pi_ref @ r)} for name, r in rewards.items()])
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.bar(actions, pi_ref, color="grey", alpha=0.6, label="pi_ref")
ax.set(xlabel="action", ylabel="pi_ref(a)")
ax2 = ax.twinx()
for name, r in rewards.items():
    ax2.plot(actions, r, label=f"{name}: peak at {B.REWARD_PEAKS[name]:.0f}")
ax2.set(ylabel="reward", ylim=(0, 1.05))
ax2.grid(False)
fig.legend(loc="upper right", bbox_to_anchor=(0.88, 0.88))
savefig(fig, out / "bandit_setup.png")
setting

# %% [markdown]
# ## Pre-train to `pi_ref`, then fine-tune with every method
# Offline methods reuse one dataset of N samples from `pi_ref` per prompt (the same data for Pref-FT, IPO and
# DPO); on-policy methods resample from the current policy every `steps_per_round` steps. Every method takes
# the same number of gradient steps.

# %%
setup = make_setup(["R1", "R2"], seeds, max(n_offline_states, n_onpolicy_states), n_eval_states)
pretrained, pretrain_report = pretrain_reference(setup, pretrain_steps, pretrain_lr, progress)
print(f"KL(pi || pi_ref) after pre-training: max over members {pretrain_report['kl_to_ref'].max():.2e} nats")

data = DataSpec(n_samples=n_samples, n_offline_states=n_offline_states, n_onpolicy_states=n_onpolicy_states,
                steps_per_round=steps_per_round, offline_threshold=offline_pair_threshold,
                onpolicy_threshold=None, ipo_tau=ipo_tau, dpo_beta=dpo_beta)
methods = [
    MethodSpec("pref_ft", "sft", on_policy=False, lr=lr_pref_ft),
    MethodSpec("ipo", "ipo", on_policy=False, lr=lr_ipo),
    MethodSpec("dpo", "dpo", on_policy=False, lr=lr_dpo),
    MethodSpec("bon_onpolicy", "sft", on_policy=True, lr=lr_bon_onpolicy),
    MethodSpec("ipo_onpolicy", "ipo", on_policy=True, lr=lr_ipo_onpolicy),
    MethodSpec("reinforce", "reinforce", on_policy=True, lr=lr_reinforce),
]
curves, final_dists = run_methods(methods, data, setup, pretrained, steps, eval_every, progress)
final = final_table(curves)
auc = auc_table(curves)
final_summary = summary(final, "reward")
final_summary

# %% [markdown]
# ## Mode-seeking vs mode-covering
# Fit the same target `pi* ~ pi_ref exp(r / beta)` from the pre-trained policy by reverse KL (the
# KL-regularised RL objective, mode-seeking) and by forward KL (reward-weighted maximum likelihood,
# mode-covering), with the same optimiser, learning rate and number of steps.

# %%
mode_fit = run_mode_fit(setup, pretrained, fit_beta, fit_steps, fit_lr, progress)
mode_auc = auc_table(mode_fit, value="peak_mass", by="objective")
summary(mode_auc, "peak_mass", by="objective")

# %% [markdown]
# ## Verdicts

# %%
claims = {c.id: c for c in make_claims()}
decide_on_policy_sampling(claims["on_policy_sampling"], final)
decide_negative_gradient(claims["negative_gradient"], final)
decide_complementary(claims["complementary"], auc)
decide_geometry_interaction(claims["geometry_interaction"], final)
decide_mode_seeking(claims["mode_seeking"], mode_fit)
verdicts = pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "verdict": c.verdict, "detail": c.detail}
                         for c in claims.values()])
verdicts

# %% [markdown]
# ## Figures
# Evaluation reward against gradient steps (band: standard error over seeds), the final action
# distributions (mean over held-out states and seeds) and the forward / reverse KL fits.

# %%
LABELS = {"pref_ft": "Pref-FT (offline)", "ipo": "IPO (offline)", "dpo": "DPO (offline)",
          "bon_onpolicy": "best-of-N (on-policy)", "ipo_onpolicy": "IPO (on-policy)", "reinforce": "REINFORCE"}
plot_curves = curves.assign(method=curves["method"].map(LABELS))
g = sns.relplot(data=plot_curves, x="step", y="reward", hue="method", col="reward_fn", kind="line",
                errorbar="se", seed=0, height=3.4, aspect=1.25, hue_order=list(LABELS.values()))
g.set_axis_labels("gradient step", "expected reward (held-out states)")
g.set_titles("{col_name}")
savefig(g.figure, out / "reward_curves.png")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=False)
mean_dists = final_dists.groupby(["method", "reward_fn", "action"], as_index=False)["prob"].mean()
for ax, reward_fn in zip(axes, ["R1", "R2"]):
    ax.plot(actions, pi_ref, "k--", lw=1, label="pi_ref")
    for key, label in LABELS.items():
        d = mean_dists[(mean_dists["method"] == key) & (mean_dists["reward_fn"] == reward_fn)]
        ax.plot(d["action"], d["prob"], label=label)
    ax.axvline(B.REWARD_PEAKS[reward_fn], color="grey", ls=":")
    ax.set(yscale="log", ylim=(1e-5, 1.0), xlabel="action", ylabel="pi(a) after fine-tuning", title=reward_fn)
axes[1].legend(fontsize="small", loc="lower right")
fig.tight_layout()
savefig(fig, out / "final_action_distributions.png")

# %%
g = sns.relplot(data=mode_fit, x="step", y="peak_mass", hue="objective", col="reward_fn", kind="line",
                errorbar="se", seed=0, height=3.2, aspect=1.2)
g.set_axis_labels("gradient step", "mass within 10 actions of the peak")
g.set_titles("{col_name}")
savefig(g.figure, out / "mode_seeking_fit.png")

# %% [markdown]
# ## Write the results

# %%
curve_table = (curves.assign(arm=curves["method"] + "_" + curves["reward_fn"])
               .groupby(["arm", "step"])["reward"].mean().unstack("arm").reset_index())
curve_table.to_csv(out / "reward_curves.csv", index=False, float_format="%.6g")
fit_table = (mode_fit.assign(arm=mode_fit["objective"] + "_" + mode_fit["reward_fn"])
             .groupby(["arm", "step"])["peak_mass"].mean().unstack("arm").reset_index())
fit_table.to_csv(out / "mode_fit_curves.csv", index=False, float_format="%.6g")
per_seed = final.merge(auc.rename(columns={"reward": "reward_auc"}), on=["method", "reward_fn", "seed"])
per_seed.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
final_summary.to_csv(out / "final_reward_by_method.csv", index=False, float_format="%.6g")

headline = {f"{r.method}_{r.reward_fn}_final_reward": r.reward for r in final_summary.itertuples()}
headline.update({f"{r.objective}_{r.reward_fn}_mean_peak_mass":
                 r.peak_mass for r in summary(mode_auc, "peak_mass", by="objective").itertuples()})
headline["pi_ref_R1_expected_reward"] = float(setting.set_index("reward_fn").loc["R1", "E_pi_ref[r]"])
headline["pi_ref_R2_expected_reward"] = float(setting.set_index("reward_fn").loc["R2", "E_pi_ref[r]"])
for name, peak in B.REWARD_PEAKS.items():
    headline[f"pi_ref_{name}_peak_region_mass"] = float(pi_ref[B.peak_region(peak)].sum())
fit_target = B.kl_regularised_target(torch.log(torch.as_tensor(pi_ref)), torch.as_tensor(rewards["R1"]), fit_beta)
headline["fit_target_R1_peak_region_mass"] = float(fit_target.exp()[torch.as_tensor(B.peak_region(70.0))].sum())
headline["reward_queries_offline"] = int(final[final["method"] == "pref_ft"]["queries"].iloc[0])
headline["reward_queries_onpolicy"] = int(final[final["method"] == "ipo_onpolicy"]["queries"].iloc[0])
headline["pretrain_max_kl_to_ref"] = float(pretrain_report["kl_to_ref"].max())
write_metrics(out, slug="onpolicy_preference", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "onpolicy_preference"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.detail})")
