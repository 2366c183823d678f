# %% [markdown]
# # Incorporating Surrogate Gradient Norm to Improve Offline Optimization Techniques (IGNITE): replication
#
# Dao, Nguyen, Truong, Hoang (NeurIPS 2024), [arXiv:2503.04242](https://arxiv.org/abs/2503.04242).
#
# **Offline optimization.** A surrogate g(x; w) is fitted to an offline dataset of designs and scores from
# which the best designs were removed; an optimizer then searches the surrogate for better designs, and an
# oracle scores its 128 proposals. Away from the data the surrogate is unreliable and the optimizer exploits
# its errors. **IGNITE** trains the surrogate under the constraint ||grad_w h_D(w)|| <= eps, where
# h_D(w) is the surrogate's mean prediction on the offline inputs (a first-order proxy of its *sharpness*),
# with a Lagrange multiplier updated by dual ascent, and leaves the optimizer unchanged.
#
# This notebook trains vanilla and IGNITE surrogates with identical initialisations and minibatches for every
# seed, runs four optimizers on both (gradient ascent on one surrogate, on the ensemble mean, on the ensemble
# minimum, and REINFORCE), and scores the proposals with the exact oracle of four synthetic tasks. The claims
# and the criteria that decide them are fixed in `method.CLAIMS` and in the README, before any result.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/ignite (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (data sample, initialisation, minibatches) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
tasks: list[str] = ["ackley", "rosenbrock", "rastrigin", "tfbind"]  # synthetic tasks | len(x) >= 1 and len(set(x)) == len(x) and all(t in ("ackley", "rosenbrock", "rastrigin", "tfbind") for t in x)
optimizers: list[str] = ["grad", "ens_mean", "ens_min", "reinforce"]  # offline optimizers run on both surrogates | len(x) >= 1 and len(set(x)) == len(x) and all(o in ("grad", "ens_mean", "ens_min", "reinforce") for o in x)
n_total: int = 4000  # designs sampled per seed; the bottom half is the offline dataset | x % 2 == 0 and x // 2 >= n_candidates and x <= 65536
hidden: int = 128  # surrogate MLP width | x >= 1
n_layers: int = 2  # surrogate hidden layers | x >= 1
ensemble: int = 4  # surrogates per (seed, arm); grad uses the first, the others all | x >= 1
epochs: int = 50  # surrogate training epochs over the offline data | x >= 1
batch_size: int = 128  # minibatch size of surrogate training | x >= 1
lr: float = 0.001  # Adam learning rate of the surrogate | 0 < x < 1
eps_fraction: float = 0.5  # IGNITE threshold eps = this x vanilla gradient norm on the calibration seed | x > 0
eta_lambda: float = 0.01  # dual step size of the Lagrange multiplier | x > 0
calibration_seed: int = 100  # seed of the vanilla run that sets eps (never an evaluation seed) | x not in seeds
n_candidates: int = 128  # designs proposed per run (Design-Bench: 128) | x >= 2
search_steps: int = 200  # optimizer iterations (gradient ascent steps / REINFORCE updates) | x >= 1
search_lr: float = 0.01  # gradient ascent step = this x sqrt(input width) | x > 0
reinforce_lr: float = 0.05  # Adam learning rate of the REINFORCE search distribution | x > 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.ignite import TITLE, URL
from papers.ignite.analysis import (constraint_check, decide_improvement, decide_unseen_sharpness,
                                    pair_summary, sharpness_log_ratios)
from papers.ignite.method import SearchConfig, SurrogateConfig, make_claims, run_task
from papers.ignite.tasks import task_spec
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme
from shared.seeding import seed_everything

set_theme()
device = pick_device(device)
out = resolve_output_dir(output_dir, "ignite")
seed_everything(0)  # every draw below uses its own seeded generator; this pins anything global
surrogate_cfg = SurrogateConfig(hidden=hidden, n_layers=n_layers, ensemble=ensemble, epochs=epochs,
                                batch_size=batch_size, lr=lr, eps_fraction=eps_fraction, eta_lambda=eta_lambda,
                                calibration_seed=calibration_seed)
search_cfg = SearchConfig(n_candidates=n_candidates, steps=search_steps, lr=search_lr, reinforce_lr=reinforce_lr)
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## Train the surrogates and run the optimizers
# Per task: a vanilla surrogate on the calibration seed sets eps; then all seeds x {vanilla, IGNITE} x
# ensemble members train together; then every optimizer searches every (seed, arm) surrogate.

# %%
task_results = {t: run_task(task_spec(t), seeds, n_total, optimizers, surrogate_cfg, search_cfg, device, progress)
                for t in tasks}
scores = pd.concat([r.scores for r in task_results.values()], ignore_index=True)
sharpness = pd.concat([r.sharpness for r in task_results.values()], ignore_index=True)
curves = pd.concat([r.curves for r in task_results.values()], ignore_index=True)
eps = {t: r.eps for t, r in task_results.items()}
constraint = constraint_check(sharpness, eps)
constraint

# %% [markdown]
# ## Normalized scores, per (task, optimizer)
# Mean over seeds; `diff` is IGNITE - vanilla with a t interval over seeds.

# %%
summary100 = pair_summary(scores, "p100")
summary50 = pair_summary(scores, "p50")
summary100

# %%
summary50

# %% [markdown]
# ## Verdicts

# %%
claims = {c.id: c for c in make_claims()}
decide_improvement(claims["improves_100th"], scores, "p100")
decide_improvement(claims["improves_50th"], scores, "p50")
decide_unseen_sharpness(claims["unseen_sharpness"], sharpness)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "verdict": c.verdict, "detail": c.detail}
              for c in claims.values()])

# %% [markdown]
# ## Figure: where IGNITE helps and where it hurts
# Left: mean IGNITE - vanilla normalized 100th-percentile score per (task, optimizer). Right: the scores
# themselves, mean and 95% interval over seeds.

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
heat = summary100.pivot(index="task", columns="optimizer", values="diff")
sns.heatmap(heat, annot=True, fmt="+.3f", center=0, cmap="vlag", cbar_kws={"label": "IGNITE - vanilla"},
            ax=axes[0])
axes[0].set(title="normalized 100th percentile: IGNITE - vanilla")
axes[0].tick_params(axis="y", rotation=0)
long = scores.assign(pair=scores["task"] + "/" + scores["optimizer"])
sns.pointplot(data=long, x="pair", y="p100", hue="arm", hue_order=["vanilla", "ignite"], dodge=0.35,
              errorbar=("ci", 95), seed=0, linestyle="none", ax=axes[1])
axes[1].set(xlabel="", ylabel="normalized 100th percentile", title="scores by task / optimizer")
axes[1].tick_params(axis="x", rotation=60)
fig.tight_layout()
savefig(fig, out / "ignite_gain.png")

# %% [markdown]
# ## Figure: sharpness on offline and unseen inputs, and the constraint during training

# %%
ratios = pd.concat([sharpness_log_ratios(sharpness, c).assign(inputs=c) for c in ("offline", "unseen")])
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
sns.barplot(data=ratios.assign(ratio=np.exp(ratios["log_ratio"])), x="task", y="ratio", hue="inputs",
            errorbar=("ci", 95), seed=0, ax=axes[0])
axes[0].axhline(1.0, color="k", ls="--", lw=1)
axes[0].set(ylabel="||grad_w h|| IGNITE / vanilla", title="surrogate sharpness ratio")
curve_long = curves.melt(id_vars=["task", "step"], value_vars=["sharpness_vanilla", "sharpness_ignite"],
                         var_name="arm", value_name="sharpness")
curve_long["sharpness"] = curve_long["sharpness"] / curve_long["task"].map(eps)
sns.lineplot(data=curve_long, x="step", y="sharpness", hue="task", style="arm", ax=axes[1])
axes[1].axhline(1.0, color="k", ls="--", lw=1)
axes[1].set(ylabel="minibatch ||grad_w h_B|| / eps", title="constraint during training")
fig.tight_layout()
savefig(fig, out / "sharpness.png")

# %% [markdown]
# ## Write the results

# %%
scores.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
sharpness.to_csv(out / "sharpness.csv", index=False, float_format="%.6g")
pd.concat([summary100.assign(percentile=100), summary50.assign(percentile=50)]).to_csv(
    out / "pair_summary.csv", index=False, float_format="%.6g")
curve_table = curves.pivot_table(index="step", columns="task", values=["sharpness_ignite", "sharpness_vanilla"])
curve_table.columns = [f"{t}_{c.removeprefix('sharpness_')}" for c, t in curve_table.columns]
curve_table.reset_index().to_csv(out / "training_curves.csv", index=False, float_format="%.6g")

headline = {
    "mean_gain_p100": summary100["diff"].mean(),
    "mean_gain_p50": summary50["diff"].mean(),
    "win_fraction_p100": float((summary100["diff"] > 0).mean()),
    "win_fraction_p50": float((summary50["diff"] > 0).mean()),
    "vanilla_mean_p100": summary100["vanilla"].mean(),
    "ignite_mean_p100": summary100["ignite"].mean(),
}
headline.update({f"{r.task}_ignite_sharpness_over_eps": r.ignite_over_eps for r in constraint.itertuples()})
write_metrics(out, slug="ignite", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "ignite"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.detail})")
