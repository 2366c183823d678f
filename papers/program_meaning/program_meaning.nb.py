# %% [markdown]
# # Emergent Representations of Program Semantics in Language Models Trained on Programs: replication
#
# [https://arxiv.org/abs/2305.11169](https://arxiv.org/abs/2305.11169)
#
# TODO(papers new): one paragraph on the paper and what this notebook tests. The claims and criteria are in
# `method.CLAIMS` and the README, fixed before the first run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/program_meaning (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds | len(x) >= 1 and len(set(x)) == len(x)
mu: float = 0.5  # true mean of the toy distribution
n_samples: int = 2000  # samples per seed | x >= 10

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.program_meaning import TITLE, URL
from papers.program_meaning.method import decide_example, make_claims, sample_mean
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "program_meaning")

# %% [markdown]
# ## Experiment

# %%
results = pd.DataFrame([{"seed": s, "estimate": sample_mean(mu, n_samples, s)} for s in seeds])
results

# %% [markdown]
# ## Verdicts

# %%
claims = {c.id: c for c in make_claims()}
decide_example(claims["example_claim"], results["estimate"].tolist(), mu)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "verdict": c.verdict} for c in claims.values()])

# %% [markdown]
# ## Figure

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
sns.stripplot(data=results, y="estimate", ax=ax)
ax.axhline(mu, color="k", ls="--", label="true value")
ax.legend()
savefig(fig, out / "estimates.png")

# %%
results.to_csv(out / "per_seed.csv", index=False)
write_metrics(out, slug="program_meaning", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline={"mean_estimate": results["estimate"].mean()},
              params=snapshot(globals(), "program_meaning"))
