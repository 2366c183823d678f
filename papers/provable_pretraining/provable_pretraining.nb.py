# %% [markdown]
# # On the Provable Advantage of Unsupervised Pretraining: replication
#
# Ge, Tang, Fan, Jin (ICLR 2024), [arXiv:2303.01566](https://arxiv.org/abs/2303.01566).
#
# **Claim.** Maximum-likelihood pretraining of a latent-variable model on `m` unlabeled samples, then ERM on
# `n` labeled samples over the learned representation, reaches excess risk
# `O~(sqrt(C_Phi/m) + sqrt(C_Psi/n))`, against `O~(sqrt(C_PhioPsi/n))` for supervised learning alone, under an
# "informative" condition (the latent model is identified up to a transformation the downstream class absorbs).
#
# This notebook simulates two of the paper's instantiations where every quantity is known: a **factor model**
# (PPCA pretraining, OLS downstream; excess risk computed exactly in closed form) and a **Gaussian mixture**
# (EM pretraining, logistic regression on the posterior cluster probabilities; excess 0-1 error against the
# exact Bayes classifier), plus **uninformative controls** of both where the guarantee's condition fails.
# The claims are registered in `claims.yaml` (gates and controls included) and decided by the shared rule
# of `shared.claims`.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # unused: this paper needs no accelerator (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/provable_pretraining (set by the runner)
progress: bool = True  # show progress (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # evaluation seeds (a fresh model instance each) | len(x) >= 2 and len(set(x)) == len(x)
factor_d: list[int] = [50, 100]  # ambient dimensions d of the factor model | len(x) >= 1 and all(d > latent_r for d in x)
latent_r: int = 5  # latent dimension r | x >= 1
n_grid: list[int] = [10, 20, 50, 100, 200, 500, 1000]  # labeled sample sizes; must contain 2d for every d | all(n > latent_r + 1 for n in x) and all(2 * d in x for d in factor_d) and sorted(x) == x
m_grid: list[int] = [100, 1000, 10000, 100000]  # unlabeled sample sizes (nested) | len(x) >= 2 and all(m >= 2 for m in x) and sorted(x) == x
noise_x: float = 1.0  # sigma: x = B z + sigma e | x > 0
noise_y: float = 0.5  # tau: y = <beta, z> + tau eps | x > 0
mixture_d: int = 20  # dimension of the mixture data | x >= 2
mixture_k: int = 4  # number of mixture components (half of them labelled 1) | x >= 2 and x % 2 == 0
mixture_separation: float = 4.0  # expected distance between component means, in noise standard deviations | x > 0
mixture_n_grid: list[int] = [10, 20, 50, 100, 200, 500]  # labeled sample sizes for the mixture | sorted(x) == x and x[0] >= 2 and any(n <= 50 for n in x)
mixture_m_grid: list[int] = [100, 1000, 10000]  # unlabeled sample sizes for the mixture | sorted(x) == x and x[0] >= mixture_k
mixture_test_size: int = 20000  # test points per seed (shared by all methods) | x >= 1000

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.provable_pretraining import TITLE, URL
from papers.provable_pretraining.analysis import (GMM_SMALL_N, advantage_table, evaluate_factor_advantage,
                                                  evaluate_factor_rate, evaluate_mixture_advantage,
                                                  evaluate_unlabeled_consistency)
from papers.provable_pretraining.experiment import (PRETRAIN, SUPERVISED_RIDGE, run_factor_grid,
                                                    run_mixture_grid)
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "provable_pretraining")


def timed(label, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if progress:
        print(f"{label}: {time.perf_counter() - start:.1f} s", flush=True)
    return result


# %% [markdown]
# ## Factor model: informative case and the uninformative control
# Exact excess risk `(a - a*)^T Sigma_x (a - a*) + c^2` of every linear predictor `a^T x + c`.

# %%
factor = timed("factor model", run_factor_grid, factor_d, latent_r, n_grid, m_grid, seeds, True, noise_x, noise_y)
control = timed("control", run_factor_grid, factor_d, latent_r, n_grid, m_grid[-1:], seeds, False, noise_x, noise_y)
factor.groupby(["d", "method", "m", "n"])["excess_risk"].mean().unstack("n")

# %% [markdown]
# ## Gaussian mixture

# %%
mixture = timed("mixture", run_mixture_grid, mixture_d, mixture_k, mixture_separation, mixture_n_grid,
                mixture_m_grid, seeds, mixture_test_size)
mixture_control = timed("mixture control", run_mixture_grid, mixture_d, mixture_k, mixture_separation,
                        [n for n in mixture_n_grid if n <= GMM_SMALL_N], mixture_m_grid[-1:], seeds,
                        mixture_test_size, False)
mixture.groupby(["method", "m", "n"])["excess_risk"].mean().unstack("n")

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("provable_pretraining")
evaluate_factor_advantage(claims["factor_advantage_at_2d"], factor, control)
evaluate_factor_rate(claims["factor_rate_v2"], factor, control, latent_r)
evaluate_unlabeled_consistency(claims["unlabeled_consistency"], factor)
evaluate_mixture_advantage(claims["mixture_advantage_v2"], mixture, mixture_control)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low, "ci_high": c.measured.ci_high,
               "verdict": c.verdict, "gate": None if c.gate is None else c.gate.passed,
               "control_meets": c.control_meets, "reason": c.reason} for c in claims.values()])

# %% [markdown]
# Paired advantage (supervised ridge minus pretrained excess risk) at every (d, n), informative model and
# control; written to `advantage.csv`.

# %%
advantages = pd.concat([advantage_table(factor, SUPERVISED_RIDGE).assign(model="informative"),
                        advantage_table(control, SUPERVISED_RIDGE).assign(model="uninformative control")],
                       ignore_index=True)
advantages

# %% [markdown]
# ## Figure: excess risk against the number of labels (log-log, 95% intervals over seeds)

# %%
def label(df):
    return np.where(df["method"] == PRETRAIN, PRETRAIN.split(" ")[0] + " m=" + df["m"].map("{:.0e}".format),
                    df["method"])


factor_plot = factor.assign(curve=label(factor))
control_plot = control.assign(curve=label(control))
mixture_plot = mixture.assign(curve=label(mixture))
fig, axes = plt.subplots(1, 3, figsize=(18, 5))
sns.lineplot(data=factor_plot, x="n", y="excess_risk", hue="curve", style="d", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[0])
axes[0].set(xscale="log", yscale="log", title="factor model (informative)", ylabel="excess risk (exact)")
sns.lineplot(data=control_plot, x="n", y="excess_risk", hue="curve", style="d", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[1])
axes[1].set(xscale="log", yscale="log", title="control: label outside the latent subspace")
sns.lineplot(data=mixture_plot.dropna(), x="n", y="excess_risk", hue="curve", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[2])
axes[2].set(xscale="log", title="Gaussian mixture", ylabel="excess 0-1 error")
for ax in axes:
    ax.legend(fontsize="small")
fig.tight_layout()
savefig(fig, out / "excess_risk_vs_labels.png")

# %% [markdown]
# ## Write the results

# %%
factor.to_csv(out / "factor_model.csv", index=False, float_format="%.6g")
control.to_csv(out / "control.csv", index=False, float_format="%.6g")
mixture.to_csv(out / "mixture_model.csv", index=False, float_format="%.6g")
mixture_control.to_csv(out / "mixture_control.csv", index=False, float_format="%.6g")
advantages.to_csv(out / "advantage.csv", index=False, float_format="%.6g")
curves = (factor[factor["d"] == max(factor_d)].assign(curve=label(factor[factor["d"] == max(factor_d)]))
          .groupby(["n", "curve"])["excess_risk"].mean().unstack("curve").reset_index())
curves.to_csv(out / "excess_risk_curves.csv", index=False, float_format="%.6g")

d_max = max(factor_d)
means = factor[factor["d"] == d_max].groupby(["method", "m", "n"])["excess_risk"].mean()
headline = {
    f"pretrain_excess_d{d_max}_n{2 * d_max}": means[(PRETRAIN, max(m_grid), 2 * d_max)],
    f"supervised_ridge_excess_d{d_max}_n{2 * d_max}": means[(SUPERVISED_RIDGE, 0, 2 * d_max)],
    "mixture_bayes_error": float(mixture["bayes_error"].mean()),
    "largest_subspace_sin": float(factor.loc[(factor["method"] == PRETRAIN) & (factor["m"] == max(m_grid)),
                                             "subspace_sin"].max()),
}
write_metrics(out, slug="provable_pretraining", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "provable_pretraining"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
