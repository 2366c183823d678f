# %% [markdown]
# # Towards Provably Unlearnable Examples via Bayes Error Optimisation: replication
#
# Zhang, Sun, Lim, Zhang (AAAI 2026), [arXiv:2511.08191](https://arxiv.org/abs/2511.08191).
#
# **The paper.** Unlearnable examples perturb a data owner's images so that models trained on them
# generalise badly. Prior methods (error-minimising noise, Huang et al. 2021) plant shortcuts that work
# only when *all* the training data is protected: mixed 50/50 with clean data, the protected half acts as
# extra data (CIFAR-10: 92.51% vs 91.16% for the clean half alone). BEO instead maximises an estimate of the
# **Bayes error** of the protected data by projected gradient ascent inside an L_inf ball, and the paper
# reports that it stays harmful in the mix (69.68%).
#
# **This notebook** tests, on sklearn's digits at reduced scale, (i) that the measuring Bayes-error
# estimator is accurate where the answer is known, (ii) that PGA raises BEO's own objective, (iii) that BEO
# raises an *independent* estimate of the Bayes error, (iv) that a clean + BEO mix lowers test accuracy
# below the clean half alone, (v) that a clean + EM mix does not. Claims, gates and controls are registered
# in `claims.yaml` before the first `small` run; `shared.claims` turns measurements into verdicts.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner; this paper runs on CPU)
output_dir: str = ""  # where outputs go; empty = scratch/unlearnable_bayes (set by the runner)
progress: bool = True  # show progress lines (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (split, noise, inits) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
eps_list: list[float] = [0.06274509803921569, 0.12549019607843137, 0.25098039215686274]  # L_inf budgets (16, 32, 64 / 255) | len(x) >= 1 and all(0 < e < 1 for e in x)
claim_eps: float = 0.12549019607843137  # the budget every claim is decided at (32/255) | x in eps_list
architectures: list[str] = ["logreg", "mlp", "cnn"]  # classifiers trained on every arm | len(x) >= 1 and all(a in ("logreg", "mlp", "cnn") for a in x)
steps: int = 500  # AdamW steps per classifier (every arm) | x >= 1
lr: float = 0.003  # AdamW learning rate (every arm) | 0 < x < 1
batch_size: int = 64  # samples per step (every arm) | x >= 1
test_fraction: float = 0.3  # held-out clean test fraction of the digits | 0.1 <= x <= 0.5
beo_steps: int = 100  # PGA steps of BEO (step size 2.5 eps / steps) | x >= 1
em_rounds: int = 10  # min-min rounds of the error-minimising noise | x >= 1
em_train_steps: int = 20  # surrogate training steps per round | x >= 1
em_pgd_steps: int = 20  # noise PGD steps per round (step eps / 4) | x >= 1
gmm_separations: list[float] = [1.5, 2.0, 2.5]  # latent class-mean scale of the known-BE mixtures | len(x) >= 1 and all(s > 0 for s in x)
gmm_noise: float = 0.3  # ambient noise of the mixtures | x >= 0
gmm_d_latent: int = 9  # latent dimension of the mixtures | 1 <= x <= 64
gmm_mc: int = 200000  # Monte-Carlo draws for the exact Bayes error | x >= 1000
workers: int = 2  # worker processes (single-threaded each) | x >= 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from papers.unlearnable_bayes import TITLE, URL
from papers.unlearnable_bayes.analysis import (be_increase, measure_beo_be, measure_beo_mix, measure_em_mix,
                                               measure_estimator, measure_objective, mix_minus_clean_only,
                                               only_gap, per_arch_difference)
from papers.unlearnable_bayes.experiment import arms, gmm_check, protect_seed, train_seed_arch
from papers.unlearnable_bayes.method import digits_split
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
torch.set_num_threads(1)
out = resolve_output_dir(output_dir, "unlearnable_bayes")
print(f"profile={profile} output={out} eps={[round(e * 255) for e in eps_list]}/255")

# %% [markdown]
# ## 1. The measuring estimator on data with a known Bayes error
# Gaussian mixtures with the protected half's size, dimension and class count (a 9-dimensional latent
# mixture embedded in 64 dimensions plus noise); the exact Bayes error is a Monte-Carlo average of the
# true posterior's error.

# %%
n_protect = len(digits_split(seeds[0], test_fraction).y_protect)
gmm = pd.DataFrame([r for s in seeds for r in gmm_check(s, n_protect, 64, gmm_d_latent, gmm_separations,
                                                          gmm_noise, gmm_mc)])
gmm.round(4)

# %% [markdown]
# ## 2. Protect one half with each method at each budget

# %%
def _done(i, res, n):
    if progress:
        print(f"protected seed {seeds[i]} ({n}/{len(seeds)})", flush=True)


protected = run_jobs(protect_seed, [(s, eps_list, beo_steps, em_rounds, em_train_steps, em_pgd_steps, test_fraction)
                                    for s in seeds], workers=workers, on_done=_done)
be = pd.DataFrame([r for p in protected for r in p["rows"]])
be.groupby(["method", "eps"])[["cover_hart_be", "kernel_be", "linf"]].mean().round(4)

# %% [markdown]
# ## 3. Train every architecture on every arm (same steps, lr, batch, init)

# %%
jobs = []
for s, p in zip(seeds, protected):
    arm_list = arms(p["split"], p["perturbed"], eps_list, claim_eps)
    for arch in architectures:
        jobs.append((s, arch, arm_list, p["split"].x_test, p["split"].y_test, steps, lr, batch_size))
cost = [{"logreg": 1, "mlp": 3, "cnn": 9}[j[1]] for j in jobs]


def _trained(i, res, n):
    if progress:
        print(f"trained seed {jobs[i][0]} {jobs[i][1]} ({n}/{len(jobs)})", flush=True)


acc = pd.DataFrame([r for rows in run_jobs(train_seed_arch, jobs, workers=workers, cost=cost, on_done=_trained)
                    for r in rows])
acc.pivot_table(index=["setting", "method", "eps"], columns="arch", values="test_acc").round(3)

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("unlearnable_bayes")
m, c = measure_estimator(gmm)
claims["cover_hart_recovers_known_be"].evaluate(
    m, control=c, detail=f"per-mixture mean error (estimate - exact): "
    + ", ".join(f"sep {k:g}: {v:+.4f}" for k, v in (gmm["cover_hart_be"] - gmm["exact_be"]).groupby(gmm["separation"]).mean().items()))
m, g, c = measure_objective(be, claim_eps)
claims["beo_objective_raised"].evaluate(
    m, gate=g, control=c, detail=f"clean kernel BE {be.loc[be['method'] == 'clean', 'kernel_be'].mean():.3f} (mean over seeds)")
m, g, c = measure_beo_be(be, gmm, claim_eps)
claims["beo_raises_estimated_be"].evaluate(
    m, gate=g, control=c, detail=f"clean Cover-Hart BE {be.loc[be['method'] == 'clean', 'cover_hart_be'].mean():.4f}; "
    f"EM half change {be_increase(be, 'em', claim_eps, 'cover_hart_be').mean():+.4f} (mean over seeds)")
m, g, c = measure_beo_mix(acc, claim_eps)
claims["beo_mix_lowers_accuracy"].evaluate(
    m, gate=g, control=c, detail="mean difference per architecture: " + ", ".join(
        f"{a} {v:+.4f}" for a, v in per_arch_difference(acc, "beo", claim_eps).items()))
m, g, c = measure_em_mix(acc, claim_eps)
claims["em_mix_does_not_lower_accuracy"].evaluate(
    m, gate=g, control=c, detail=f"BEO half alone costs {only_gap(acc, 'beo', claim_eps).mean():.3f} accuracy "
    f"(EM half alone {only_gap(acc, 'em', claim_eps).mean():.3f}); clean unperturbed mix "
    f"{mix_minus_clean_only(acc, 'clean', 0.0).mean():+.4f} vs clean only")
verdicts = pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
                          "control": c.control.measured.value if c.control else None, "verdict": c.verdict}
                         for c in claims.values()])
verdicts

# %% [markdown]
# ## Figures
# Left: test accuracy of the 50/50 mixes against the budget, one line per method (mean over seeds, 95%
# bootstrap band), one panel per architecture; dashed: clean half alone, dotted: clean + unperturbed half.
# Right: the Cover-Hart Bayes-error estimate of the protected half against the budget, and the estimator
# against the exact Bayes error on the mixtures.

# %%
mix = acc[(acc.setting == "mix") & acc.method.isin(["random", "em", "beo"])].assign(eps255=lambda d: (d.eps * 255).round())
fig, axes = plt.subplots(1, len(architectures) + 2, figsize=(4.2 * (len(architectures) + 2), 3.8))
for ax, arch in zip(axes, architectures):
    sns.lineplot(data=mix[mix.arch == arch], x="eps255", y="test_acc", hue="method", marker="o", seed=0,
                 errorbar=("ci", 95), ax=ax, hue_order=["random", "em", "beo"])
    ax.axhline(acc[(acc.setting == "clean_only") & (acc.arch == arch)].test_acc.mean(), color="k", ls="--",
               lw=1, label="clean half only")
    ax.axhline(acc[(acc.setting == "mix") & (acc.method == "clean") & (acc.arch == arch)].test_acc.mean(),
               color="grey", ls=":", lw=1, label="clean + unperturbed half")
    ax.set(title=f"{arch}: 50/50 mix", xlabel="eps x 255", ylabel="clean test accuracy")
    ax.legend(fontsize=7)
bep = be.assign(eps255=lambda d: (d.eps * 255).round())
sns.lineplot(data=bep[bep.method != "clean"], x="eps255", y="cover_hart_be", hue="method", marker="o", seed=0,
             hue_order=["random", "em", "beo"], ax=axes[-2])
axes[-2].axhline(be[be.method == "clean"].cover_hart_be.mean(), color="k", ls="--", lw=1, label="clean half")
axes[-2].set(title="Bayes error of the protected half", xlabel="eps x 255", ylabel="Cover-Hart estimate")
axes[-2].legend(fontsize=7)
sns.scatterplot(data=gmm, x="exact_be", y="cover_hart_be", hue="separation", ax=axes[-1], palette="viridis")
lim = [0, max(gmm.exact_be.max(), gmm.cover_hart_be.max()) * 1.1]
axes[-1].plot(lim, lim, "k--", lw=1)
axes[-1].set(title="estimator check (Gaussian mixtures)", xlabel="exact Bayes error", ylabel="Cover-Hart estimate")
fig.tight_layout()
savefig(fig, out / "accuracy_and_bayes_error.png")

# %% [markdown]
# ## Write the results

# %%
acc.to_csv(out / "accuracy.csv", index=False, float_format="%.6g")
be.to_csv(out / "bayes_error.csv", index=False, float_format="%.6g")
gmm.to_csv(out / "estimator_check.csv", index=False, float_format="%.6g")
headline = {
    "clean_only_acc": float(acc[acc.setting == "clean_only"].test_acc.mean()),
    "mix_clean_acc": float(acc[(acc.setting == "mix") & (acc.method == "clean")].test_acc.mean()),
    **{f"mix_{mth}_acc": float(acc[(acc.setting == "mix") & (acc.method == mth) & np.isclose(acc.eps, claim_eps)].test_acc.mean())
       for mth in ("random", "em", "beo")},
    "mix_shifted_labels_acc": float(acc[(acc.setting == "mix") & (acc.method == "shifted_labels")].test_acc.mean()),
    "clean_cover_hart_be": float(be[be.method == "clean"].cover_hart_be.mean()),
    "beo_cover_hart_be": float(be[(be.method == "beo") & np.isclose(be.eps, claim_eps)].cover_hart_be.mean()),
}
write_metrics(out, slug="unlearnable_bayes", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "unlearnable_bayes"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
