# %% [markdown]
# # The Gauss-Markov Adjunction: replication of its computable content
#
# Kamiura (2025), [arXiv:2507.02442](https://arxiv.org/abs/2507.02442).
#
# **What the paper does.** It defines a category of parameters (vectors a, morphisms translations) and a
# category of data (vectors y, morphisms translations), a functor F applying the linear model (a |-> Xa)
# and a functor G, y |-> X^+ y (the left pseudo-inverse), and proves that G is right adjoint to F. A
# residual y - Xa is then the morphism F(a) -> y and corresponds to the parameter variation X^+ y - a; the
# unit is the identity, the counit is the minimum residual, and the OLS estimator G(y) and the minimum
# residual are related by G preserving limits.
#
# **What can be checked.** The adjunction is a proof: no experiment can confirm or refute it. This
# notebook checks, on two regression datasets shipped with scikit-learn and on random designs with
# condition numbers from 1 to 1e8, the linear-algebra identities the proof rests on, each against a
# tolerance *derived* from floating-point error bounds (machine epsilon, problem sizes, condition
# number): a ratio error / bound <= 1 means the identity holds as exactly as floating point allows. The
# claims are registered in `claims.yaml` (all of them `check`s: the paper makes no empirical prediction)
# and decided by the shared rule of `shared.claims`.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner; this paper uses numpy only)
output_dir: str = ""  # where outputs go; empty = scratch/gauss_markov (set by the runner)
progress: bool = True  # show progress (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (random designs, test points, noise) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
datasets: list[str] = ["diabetes", "linnerud"]  # scikit-learn regression datasets (bundled, no download) | len(set(x)) == len(x) and all(d in ("diabetes", "linnerud") for d in x)
conditions: list[float] = [1.0, 10.0, 100.0, 10000.0, 100000000.0]  # condition numbers kappa_2(X) of the random designs | all(1 <= c <= 1e12 for c in x) and len(x) + len(datasets) >= 1
n_rows: int = 200  # rows n of a random design | x >= n_cols
n_cols: int = 5  # columns m of a random design (including the intercept direction) | 2 <= x <= 50
n_pairs: int = 10000  # random parameter points per design for the algebraic checks | x >= 1
gd_steps: int = 20000  # gradient-descent steps for the variation and limit checks | x >= 1
gd_max_condition: float = 30.0  # gradient descent only on designs with kappa_2(X) <= this (rate 1 - 1/kappa^2) | x >= 1
n_record: int = 40  # recorded steps of each trajectory (log-spaced) | x >= 2
mc_draws: int = 2000  # Monte-Carlo noise draws for the Gauss-Markov variance comparison | x >= 10
noise: float = 1.0  # noise standard deviation of the Monte-Carlo draws | x > 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.gauss_markov import TITLE, URL
from papers.gauss_markov.analysis import evaluate_blue, evaluate_bounded, evaluate_limits, variance_log_ratios
from papers.gauss_markov.method import RIDGE_CONTROL, U, run_seed
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "gauss_markov")
print(f"profile={profile} output={out} unit roundoff u = {U:.3g}")

# %% [markdown]
# ## Run every check on every design and seed

# %%
ratio_rows, traj_rows, var_rows = [], [], []
for seed in seeds:
    r, t, v = run_seed(seed, datasets, conditions, n_rows, n_cols, n_pairs, gd_steps, gd_max_condition,
                       n_record, mc_draws, noise)
    ratio_rows += r
    traj_rows += t
    var_rows += v
    if progress:
        print(f"seed {seed}: largest ratio {max(x['ratio'] for x in r):.3g}", flush=True)
ratios = pd.DataFrame(ratio_rows)
trajectories = pd.DataFrame(traj_rows)
variances = pd.DataFrame(var_rows)
ratios.groupby(["group", "check"])["ratio"].agg(["max", "median", "count"])

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("gauss_markov")
for cid in ("functoriality_worst_ratio", "variation_correspondence_worst_ratio", "unit_counit_worst_ratio"):
    evaluate_bounded(claims[cid], ratios)
evaluate_limits(claims["limit_preservation_worst_ratio"], ratios, trajectories)
evaluate_blue(claims["gauss_markov_blue_worst_case"], variances)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "verdict": c.verdict, "reason": c.reason}
              for c in claims.values()])

# %% [markdown]
# ## Figure: how close each identity comes to its floating-point bound
# Each point is one (seed, design) value of error / bound; 1 (the dashed line) is the bound. Checks that
# hold exactly (ratio 0: `F(0) = 0`, minimality of `r*`) are not drawn.

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.4, 1]})
plot = ratios[ratios["ratio"] > 0].assign(log10_ratio=lambda d: np.log10(d["ratio"]))  # exact checks (0) left out
np.random.seed(0)  # seaborn's strip jitter draws from numpy's global generator: fixed for stable PNGs
sns.stripplot(data=plot, y="check", x="log10_ratio", hue="group", dodge=False, jitter=0.2, size=4, ax=axes[0])
axes[0].axvline(0.0, color="k", ls="--", lw=1)
axes[0].set(xlabel="log10(error / floating-point bound)", ylabel="", title="identities vs their bounds")
axes[0].legend(fontsize=8, loc="lower left")
if not trajectories.empty:
    tr = trajectories[trajectories["step"] > 0]
    sns.lineplot(data=tr, x="step", y="param_error", hue="design", units="seed", estimator=None, lw=0.8,
                 ax=axes[1])
    for design, g in tr.groupby("design"):
        g0 = g[g["seed"] == g["seed"].min()]
        axes[1].plot(g0["step"], g0["param_bound"], ls="--", lw=0.8, color="grey")
    axes[1].set(xscale="log", yscale="log", ylabel="||a_t - G(y)||",
                title="gradient descent reaches G(y) (dashed: rate bound + floor)")
fig.tight_layout()
savefig(fig, out / "bounds_and_limits.png")

# %% [markdown]
# ## Figure: the Gauss-Markov theorem behind the name
# Log ratio of the Monte-Carlo total variance of each alternative linear unbiased estimator to that of OLS,
# and of the control (ridge, linear but biased), which must fall below 0.

# %%
lr = variance_log_ratios(variances, alternatives=None)
lr = pd.concat([lr, variance_log_ratios(variances, alternatives=[RIDGE_CONTROL])], ignore_index=True)
fig, ax = plt.subplots(figsize=(8, 3.8))
sns.boxplot(data=lr, x="design", y="log_ratio", hue="alternative", ax=ax)
ax.axhline(0.0, color="k", ls="--", lw=1)
ax.set(ylabel="log(var alternative / var OLS)", xlabel="", title="OLS has the smallest total variance among unbiased estimators")
ax.legend(title="alternative", loc="upper left", bbox_to_anchor=(1.0, 1.0))
ax.tick_params(axis="x", rotation=30)
fig.tight_layout()
savefig(fig, out / "gauss_markov_variances.png")

# %% [markdown]
# ## Write the results

# %%
ratios.to_csv(out / "ratios.csv", index=False, float_format="%.6g")
variances.to_csv(out / "variances.csv", index=False, float_format="%.6g")
if not trajectories.empty:
    curve = trajectories.pivot_table(index="step", columns="design", values="param_error", aggfunc="max")
    curve.reset_index().to_csv(out / "gd_param_error.csv", index=False, float_format="%.6g")
else:
    pd.DataFrame({"step": []}).to_csv(out / "gd_param_error.csv", index=False)
headline = {f"max_ratio_{g}": float(ratios.loc[ratios["group"] == g, "ratio"].max())
            for g in ratios["group"].unique()}
headline["largest_condition_number"] = float(ratios["kappa"].max())
headline["min_log_variance_ratio"] = float(lr.loc[lr["alternative"] != RIDGE_CONTROL, "log_ratio"].min())
headline["max_log_variance_ratio_ridge_control"] = float(lr.loc[lr["alternative"] == RIDGE_CONTROL, "log_ratio"].max())
write_metrics(out, slug="gauss_markov", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "gauss_markov"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
