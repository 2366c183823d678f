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
# The claims, their gates, controls and criteria are the registry `claims.yaml`, committed before any
# result. Besides the authors' per-script arms, the registry's comparisons use **matched** arms that differ
# in one ingredient only: on-policy vs `pi_ref` samples at the same learning rate, reward queries, steps and
# batches ("reference" arms), and Pref-FT at offline IPO's learning rate. Every comparison has an A/A
# control: the baseline arm run again on control seeds, through the same statistic.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner); this paper always runs on the CPU
output_dir: str = ""  # where outputs go; empty = scratch/onpolicy_preference (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (contexts, initialisation, data) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
control_seeds: list[int] = [1000, 1001, 1002, 1003, 1004]  # seeds of the A/A control runs of the baseline arms, paired one-to-one with seeds | len(x) == len(seeds) and len(set(x)) == len(x) and not set(x) & set(seeds)
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
from papers.onpolicy_preference.analysis import (Seeds, auc_table, final_table, measure_complementary,
                                                 measure_difference, measure_interaction, measure_mode_seeking,
                                                 summary, training_gate)
from papers.onpolicy_preference.experiment import (DataSpec, MethodSpec, make_setup, pretrain_reference,
                                                   run_methods, run_mode_fit)
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.legends import place_legends
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
place_legends(fig)  # legends off the data (shared.legends)
savefig(fig, out / "bandit_setup.png")
setting

# %% [markdown]
# ## Pre-train to `pi_ref`, then fine-tune with every method
# Offline methods (the authors' protocol) reuse one dataset of N samples from `pi_ref` per prompt (the same
# data for Pref-FT, IPO and DPO); on-policy methods resample from the current policy every `steps_per_round`
# steps; "reference" arms follow the on-policy schedule exactly but sample `pi_ref` every round. Every method
# takes the same number of gradient steps. The baseline arms of the registered comparisons run again on the
# control seeds (A/A controls).

# %%
n_train_states = max(n_offline_states, n_onpolicy_states)
setup = make_setup(["R1", "R2"], seeds, n_train_states, n_eval_states)
pretrained, pretrain_report = pretrain_reference(setup, pretrain_steps, pretrain_lr, progress)
control_setup = make_setup(["R1", "R2"], control_seeds, n_train_states, n_eval_states)
control_pretrained, control_pretrain_report = pretrain_reference(control_setup, pretrain_steps, pretrain_lr, progress)
pretrain_kl = float(max(pretrain_report["kl_to_ref"].max(), control_pretrain_report["kl_to_ref"].max()))
print(f"KL(pi || pi_ref) after pre-training: max over members (evaluation and control seeds) {pretrain_kl:.2e} nats")

data = DataSpec(n_samples=n_samples, n_offline_states=n_offline_states, n_onpolicy_states=n_onpolicy_states,
                steps_per_round=steps_per_round, offline_threshold=offline_pair_threshold,
                onpolicy_threshold=None, ipo_tau=ipo_tau, dpo_beta=dpo_beta)
# The same-lr pairs the registry names: Pref-FT at offline IPO's (= DPO's) lr, and the matched arms at
# on-policy IPO's lr.
assert lr_dpo == lr_ipo, "pref_ft_lr003 must share the lr of offline IPO and DPO"
authors = [
    MethodSpec("pref_ft", "sft", "offline", lr=lr_pref_ft),
    MethodSpec("ipo", "ipo", "offline", lr=lr_ipo),
    MethodSpec("dpo", "dpo", "offline", lr=lr_dpo),
    MethodSpec("bon_onpolicy", "sft", "on_policy", lr=lr_bon_onpolicy),
    MethodSpec("ipo_onpolicy", "ipo", "on_policy", lr=lr_ipo_onpolicy),
    MethodSpec("reinforce", "reinforce", "on_policy", lr=lr_reinforce),
]
same_lr = [MethodSpec("pref_ft_lr003", "sft", "offline", lr=lr_ipo)]
matched = [
    MethodSpec("bon_onpolicy_lr01", "sft", "on_policy", lr=lr_ipo_onpolicy),
    MethodSpec("bon_ref", "sft", "reference", lr=lr_ipo_onpolicy),
    MethodSpec("ipo_ref", "ipo", "reference", lr=lr_ipo_onpolicy),
]
controls = [same_lr[0], matched[1], matched[2]]  # the baseline arms of the registered comparisons
curves, final_dists = run_methods(authors + same_lr + matched, data, setup, pretrained, steps, eval_every, progress)
control_curves, _ = run_methods(controls, data, control_setup, control_pretrained, steps, eval_every, progress)
all_curves = pd.concat([curves, control_curves], ignore_index=True)
final = final_table(all_curves)
auc = auc_table(all_curves)
final_summary = summary(final_table(curves), "reward")
final_summary

# %% [markdown]
# ## Mode-seeking vs mode-covering
# Fit the same target `pi* ~ pi_ref exp(r / beta)` from the pre-trained policy by reverse KL (the
# KL-regularised RL objective, mode-seeking) and by forward KL (reward-weighted maximum likelihood,
# mode-covering), with the same optimiser, learning rate and number of steps.

# %%
mode_fit = run_mode_fit(setup, pretrained, fit_beta, fit_steps, fit_lr, progress)
control_fit = run_mode_fit(control_setup, control_pretrained, fit_beta, fit_steps, fit_lr, progress,
                           objectives=("forward_kl",))
mode_auc = auc_table(mode_fit, value="peak_mass", by="objective")
summary(mode_auc, "peak_mass", by="objective")

# %% [markdown]
# ## Verdicts

# %%
pi_ref_reward = {name: float(pi_ref @ r) for name, r in rewards.items()}
fit_target = B.kl_regularised_target(torch.log(torch.as_tensor(pi_ref)), torch.as_tensor(rewards["R1"]), fit_beta)
fit_target_mass = float(fit_target.exp()[torch.as_tensor(B.peak_region(B.REWARD_PEAKS["R1"]))].sum())
pairing = Seeds(eval=list(seeds), control=list(control_seeds))


def gate(arms, reward_fns=("R1",)):
    return training_gate(final, list(arms), list(reward_fns), pairing, pi_ref_reward, pretrain_kl,
                         equal_queries=list(arms))


FINAL_UNIT = "final expected reward difference"
claims = load_claims("onpolicy_preference")
measurements = {
    "on_policy_sampling_sft_matched": measure_difference(final, "bon_onpolicy_lr01", "bon_ref", pairing, FINAL_UNIT,
                                                         gate(["bon_onpolicy_lr01", "bon_ref"])),
    "on_policy_sampling_ipo_matched": measure_difference(final, "ipo_onpolicy", "ipo_ref", pairing, FINAL_UNIT,
                                                         gate(["ipo_onpolicy", "ipo_ref"])),
    "negative_gradient_ipo_same_lr": measure_difference(final, "ipo", "pref_ft_lr003", pairing, FINAL_UNIT,
                                                        gate(["ipo", "pref_ft_lr003"])),
    "negative_gradient_dpo_same_lr": measure_difference(final, "dpo", "pref_ft_lr003", pairing, FINAL_UNIT,
                                                        gate(["dpo", "pref_ft_lr003"])),
    "complementary_matched": measure_complementary(auc, "ipo_onpolicy", ["ipo_ref", "bon_onpolicy_lr01"], pairing,
                                                   gate(["ipo_onpolicy", "ipo_ref", "bon_onpolicy_lr01"]),
                                                   control_arm="ipo_ref"),
    "geometry_interaction_matched": measure_interaction(final, "ipo_onpolicy", "bon_ref", pairing,
                                                        gate(["ipo_onpolicy", "bon_ref"], ("R1", "R2"))),
    "mode_seeking_v2": measure_mode_seeking(pd.concat([mode_fit, control_fit], ignore_index=True), pairing,
                                            fit_target_mass),
}
for cid, (measured, gate_outcome, control, detail) in measurements.items():
    claims[cid].evaluate(measured, gate=gate_outcome, control=control, detail=detail)
verdicts = pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": c.gate.passed,
                          "control": c.control.measured.value, "control_meets": c.control_meets,
                          "verdict": c.verdict, "reason": c.reason} for c in claims.values()])
verdicts

# %% [markdown]
# ## Figures
# Evaluation reward against gradient steps (band: standard error over seeds), the final action
# distributions (mean over held-out states and seeds) and the forward / reverse KL fits.

# %%
LABELS = {"pref_ft": "Pref-FT (offline)", "ipo": "IPO (offline)", "dpo": "DPO (offline)",
          "bon_onpolicy": "best-of-N (on-policy)", "ipo_onpolicy": "IPO (on-policy)", "reinforce": "REINFORCE"}
MATCHED = {"ipo_onpolicy": "IPO, on-policy", "ipo_ref": "IPO, pi_ref samples",
           "bon_onpolicy_lr01": "best-of-N, on-policy", "bon_ref": "best-of-N, pi_ref samples"}
plot_curves = curves[curves["method"].isin(LABELS)].assign(method=lambda d: d["method"].map(LABELS))
g = sns.relplot(data=plot_curves, x="step", y="reward", hue="method", col="reward_fn", kind="line",
                errorbar="se", seed=0, height=3.4, aspect=1.25, hue_order=list(LABELS.values()))
g.set_axis_labels("gradient step", "expected reward (held-out states)")
g.set_titles("authors' settings, {col_name}")
place_legends(g.figure)  # legends off the data (shared.legends)
savefig(g.figure, out / "reward_curves.png")

# %% [markdown]
# The matched arms: the same learning rate (on-policy IPO's), reward queries, steps and batches; only the
# sampling policy (current policy vs `pi_ref`) and the loss (IPO vs best-of-N) differ.

# %%
matched_curves = curves[curves["method"].isin(MATCHED)].assign(method=lambda d: d["method"].map(MATCHED))
g = sns.relplot(data=matched_curves, x="step", y="reward", hue="method", col="reward_fn", kind="line",
                errorbar="se", seed=0, height=3.4, aspect=1.25, hue_order=list(MATCHED.values()))
g.set_axis_labels("gradient step", "expected reward (held-out states)")
g.set_titles("matched arms, {col_name}")
place_legends(g.figure)  # legends off the data (shared.legends)
savefig(g.figure, out / "matched_reward_curves.png")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=False)
mean_dists = final_dists.groupby(["method", "reward_fn", "action"], as_index=False)["prob"].mean()
for ax, reward_fn in zip(axes, ["R1", "R2"]):
    ax.plot(actions, pi_ref, "k--", lw=1, label="pi_ref")
    for key, label in {**LABELS, "ipo_ref": "IPO, pi_ref samples (matched)"}.items():
        d = mean_dists[(mean_dists["method"] == key) & (mean_dists["reward_fn"] == reward_fn)]
        ax.plot(d["action"], d["prob"], label=label)
    ax.axvline(B.REWARD_PEAKS[reward_fn], color="grey", ls=":")
    ax.set(yscale="log", ylim=(1e-5, 1.0), xlabel="action", ylabel="pi(a) after fine-tuning", title=reward_fn)
axes[1].legend(fontsize="small", loc="lower right")
fig.tight_layout()
place_legends(fig)  # legends off the data (shared.legends)
savefig(fig, out / "final_action_distributions.png")

# %%
g = sns.relplot(data=mode_fit, x="step", y="peak_mass", hue="objective", col="reward_fn", kind="line",
                errorbar="se", seed=0, height=3.2, aspect=1.2)
g.set_axis_labels("gradient step", "mass within 10 actions of the peak")
g.set_titles("{col_name}")
place_legends(g.figure)  # legends off the data (shared.legends)
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
per_seed["seed_role"] = np.where(per_seed["seed"].isin(control_seeds), "control", "evaluation")
per_seed.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
final_summary.to_csv(out / "final_reward_by_method.csv", index=False, float_format="%.6g")

headline = {f"{r.method}_{r.reward_fn}_final_reward": r.reward for r in final_summary.itertuples()}
eval_final = final[final["seed"].isin(seeds)]
for arm in ("ipo_onpolicy", "bon_onpolicy"):  # the authors' unmatched comparisons (10x queries, other lr)
    base = {"ipo_onpolicy": "ipo", "bon_onpolicy": "pref_ft"}[arm]
    gap = (eval_final[(eval_final["method"] == arm) & (eval_final["reward_fn"] == "R1")].set_index("seed")["reward"]
           - eval_final[(eval_final["method"] == base) & (eval_final["reward_fn"] == "R1")].set_index("seed")["reward"])
    headline[f"authors_settings_{arm}_minus_{base}_R1"] = float(gap.mean())
headline.update({f"{r.objective}_{r.reward_fn}_mean_peak_mass":
                 r.peak_mass for r in summary(mode_auc, "peak_mass", by="objective").itertuples()})
headline["pi_ref_R1_expected_reward"] = float(setting.set_index("reward_fn").loc["R1", "E_pi_ref[r]"])
headline["pi_ref_R2_expected_reward"] = float(setting.set_index("reward_fn").loc["R2", "E_pi_ref[r]"])
for name, peak in B.REWARD_PEAKS.items():
    headline[f"pi_ref_{name}_peak_region_mass"] = float(pi_ref[B.peak_region(peak)].sum())
headline["fit_target_R1_peak_region_mass"] = fit_target_mass
headline["reward_queries_offline"] = int(final[final["method"] == "pref_ft"]["queries"].iloc[0])
headline["reward_queries_onpolicy"] = int(final[final["method"] == "ipo_onpolicy"]["queries"].iloc[0])
headline["reward_queries_reference"] = int(final[final["method"] == "ipo_ref"]["queries"].iloc[0])
headline["pretrain_max_kl_to_ref"] = pretrain_kl
write_metrics(out, slug="onpolicy_preference", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "onpolicy_preference"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
