# %% [markdown]
# # The Impossibility of Inverse Permutation Learning in Transformer Models: replication
#
# Alur, Hays, Raghavan, Shah (2025), [arXiv:2509.24125](https://arxiv.org/abs/2509.24125).
#
# **Task.** The input is a permutation `pi` (n index tokens), the permuted string `Y_P` (n symbols,
# `Y_P[j] = Y[pi(j)]`) and `k` content-free scratch tokens. The model must output the canonical string
# `Y` at the last n positions. **Theorem 1**: with a causal mask, output `i` (read at `Y_P` position `i`
# when `k = 0`) can never see a source symbol that sits later in the sequence, so those rows are at chance
# whatever the depth and parameters. Without the mask, or with enough scratch tokens, the task is solvable.
#
# The claims, their gates and controls are registered in `claims.yaml` before any result; this notebook
# trains one model per (arm, seed), evaluates it on fresh data, measures each claim's statistic with its
# interval (`analysis.py`), and `shared.claims` turns the measurement, the gate and the control into the
# verdict.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/inverse_permutation (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
n: int = 8  # string length = permutation size | 2 <= x <= 32
n_symbols: int = 16  # alphabet size |V| | x >= 2
scratch_tokens: list[int] = [0, 1, 2, 4, 8]  # k of the causal arms; must include 0 and n | 0 in x and n in x and all(0 <= k <= n for k in x)
architectures: list[str] = ["disentangled"]  # paper's attention-only model and/or the standard transformer | len(x) >= 1 and all(a in ("disentangled", "standard") for a in x)
depth: int = 2  # layers per model | 1 <= x <= 12
seeds: list[int] = [0, 1, 2]  # evaluation seeds (one model per arm and seed) | len(x) >= 1 and len(set(x)) == len(x)
steps: int = 6000  # optimisation steps per model | x >= 1
batch_size: int = 128  # fresh examples per step | x >= 1
lr_disentangled: float = 0.01  # AdamW learning rate, attention-only model | 0 < x < 1
lr_standard: float = 0.003  # AdamW learning rate, standard transformer | 0 < x < 1
n_eval: int = 2000  # held-out examples per model | x >= 100
workers: int = 2  # models trained in parallel single-threaded processes on a CPU (results do not depend on it) | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.inverse_permutation import TITLE, URL
from papers.inverse_permutation.analysis import (arm_summary, measure_ceiling, measure_invisible_rows,
                                                 measure_solved)
from papers.inverse_permutation.experiment import run_grid
from papers.inverse_permutation.task import accuracy_ceiling
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
# small models: one intra-op thread is as fast, and two threads on a busy 2-core CPU spin and slow down
# by an order of magnitude
torch.set_num_threads(1)
out = resolve_output_dir(output_dir, "inverse_permutation")
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## The information ceiling
# For a uniform random permutation the source of every output is uniform over the n positions, so the
# expected fraction of visible rows is `c(k) = (1/n^2) * sum_i min(i + k + 1, n)`; the best causal model
# gets those right and guesses the rest at `1/|V|`.

# %%
ceilings = pd.DataFrame({"k": scratch_tokens,
                         "ceiling": [accuracy_ceiling(n, k, n_symbols) for k in scratch_tokens]})
ceilings

# %% [markdown]
# ## Train and evaluate every arm

# %%
results, curves = run_grid(n=n, n_symbols=n_symbols, scratch_tokens=scratch_tokens,
                           architectures=architectures, depth=depth, seeds=seeds, steps=steps,
                           batch_size=batch_size,
                           lr={"disentangled": lr_disentangled, "standard": lr_standard},
                           n_eval=n_eval, device=device, progress=progress, workers=workers)
summary = arm_summary(results, n, n_symbols)
summary

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("inverse_permutation")
m, control, detail = measure_invisible_rows(results, n, n_symbols)
claims["invisible_rows_at_chance"].evaluate(m, control=control, detail=detail)
m, control, detail = measure_solved(results, "bidirectional", 0)
claims["no_mask_solves"].evaluate(m, control=control, detail=detail)
m, control, detail = measure_solved(results, "causal", n)
claims["scratch_solves"].evaluate(m, control=control, detail=detail)
m, gate, control, detail = measure_ceiling(results, n, n_symbols)
claims["ceiling_curve_all_k"].evaluate(m, gate=gate, control=control, detail=detail)
pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value, "verdict": c.verdict,
               "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## Figure: accuracy against the number of scratch tokens
# Left: causal models against the analytic ceiling (dashed). Right: the mechanism at every k, causal
# models' accuracy on the rows whose source they can see (s(i) <= i + k) and on the rest, against chance.

# %%
from papers.inverse_permutation.analysis import add_rates

rates = add_rates(results)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
causal = rates[rates["attention"] == "causal"]
sns.lineplot(data=causal, x="k", y="accuracy", hue="architecture", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[0])
axes[0].plot(ceilings["k"], ceilings["ceiling"], "k--", label="ceiling c(k) + (1-c(k))/|V|")
axes[0].set(xlabel="scratch tokens k", ylabel="per-row accuracy", title=f"causal read-out, n={n}")
axes[0].legend(loc="lower right")
rows = causal.melt(id_vars=["architecture", "k", "seed"], value_vars=["visible_accuracy", "invisible_accuracy"],
                   var_name="rows", value_name="acc").dropna()
rows["rows"] = rows["rows"].map({"visible_accuracy": "source visible (s(i) <= i + k)",
                                 "invisible_accuracy": "source hidden (s(i) > i + k)"})
sns.lineplot(data=rows, x="k", y="acc", hue="rows", style="architecture", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[1])
axes[1].axhline(1 / n_symbols, color="grey", ls=":", label="chance 1/|V|")
axes[1].set(xlabel="scratch tokens k", ylabel="per-row accuracy", title="where the causal mask bites")
axes[1].legend(loc="center right", fontsize=8)
fig.tight_layout()
savefig(fig, out / "accuracy_vs_scratch_tokens.png")

# %% [markdown]
# ## Write the results

# %%
curve_table = (curves.assign(arm=curves["architecture"] + "_" + curves["attention"] + "_k" + curves["k"].astype(str))
               .groupby(["arm", "step"])["loss"].mean().unstack("arm").reset_index())
curve_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")
accuracy_table = summary.assign(arm=summary["architecture"] + "_" + summary["attention"])
accuracy_table.to_csv(out / "accuracy_by_arm.csv", index=False, float_format="%.6g")
results.to_csv(out / "per_seed.csv", index=False)

headline = {f"{r.architecture}_{r.attention}_k{r.k}_accuracy": r.accuracy for r in summary.itertuples()}
write_metrics(out, slug="inverse_permutation", title=TITLE, url=URL, profile=profile, device=device,
              seeds=seeds, claims=list(claims.values()), headline=headline,
              params=snapshot(globals(), "inverse_permutation"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
