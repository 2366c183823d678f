# %% [markdown]
# # Item-Language Model for Conversational Recommendation: replication
#
# [https://arxiv.org/abs/2406.02844](https://arxiv.org/abs/2406.02844)
#
# TODO(papers new): one paragraph on the paper and what this notebook tests. The claims, their gates and
# controls are registered in `claims.yaml`, committed before the first run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/item_language_model (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds | len(x) >= 1 and len(set(x)) == len(x)
mu: float = 0.5  # true mean of the toy distribution
n_samples: int = 2000  # samples per seed | x >= 10

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.item_language_model import TITLE, URL
from papers.item_language_model.method import measure_example, sample_mean
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "item_language_model")

# %% [markdown]
# ## Experiment

# %%
results = pd.DataFrame([{"seed": s, "estimate": sample_mean(mu, n_samples, s),
                          "control_estimate": sample_mean(mu + 0.5, n_samples, s)} for s in seeds])
results

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("item_language_model")
measured, gate, control = measure_example(results["estimate"].tolist(), results["control_estimate"].tolist(),
                                          n_samples, tolerance=0.05)
claims["example_claim"].evaluate(measured, gate=gate, control=control, detail=f"mu = {mu}")
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "verdict": c.verdict, "reason": c.reason}
              for c in claims.values()])

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
write_metrics(out, slug="item_language_model", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline={"mean_estimate": results["estimate"].mean()},
              params=snapshot(globals(), "item_language_model"))
