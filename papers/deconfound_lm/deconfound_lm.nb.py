# %% [markdown]
# # Aligning Language Models with Observational Data: Opportunities and Risks from a Causal Perspective: replication
#
# Loghmani (2025), [arXiv:2506.00152](https://arxiv.org/abs/2506.00152).
#
# **Setting.** Observational outcomes Y (clicks on a headline) depend on the text and on a context C
# (posting slot / audience) that also shifts which texts get written: here C makes sports headlines more
# likely while sports has no causal effect on Y. A reward fit naively on (text, Y) learns that sports
# "works"; DeconfoundLM partials the known confounder out before fitting the reward (our reading:
# cross-fitted residual-on-residual regression on frozen MiniLM embeddings). The "aligned policy" is
# best-of-N selection from a template sampler, and each policy is scored on the exact interventional
# outcome E_C[P(Y=1 | do(x), C)] from the generator, never on held-out observational Y.
#
# The claims, gates and controls are registered in `claims.yaml` before the first `small` run; the
# module `method.py` measures them and `shared.claims` turns measurement, gate and control into verdicts.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/deconfound_lm (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (data, candidate sets, cross-fitting folds) | len(x) >= 1 and len(set(x)) == len(x)
features: str = "minilm"  # text representation of the reward models: MiniLM embeddings or the 5 attribute bits | x in ("minilm", "attributes")
strengths: list[float] = [0.0, 0.3, 0.6, 0.9]  # confounding strengths P(sports|C=1) - P(sports|C=0); must include 0 | 0.0 in x and all(0 <= s <= 1 for s in x)
claim_strength: float = 0.6  # the strength at which the claims are evaluated | x in strengths and x > 0
n_obs: int = 5000  # observational rows per (seed, strength); the oracle's randomised set has the same size | x >= 50
n_folds: int = 2  # cross-fitting folds of the confounder nuisances | 2 <= x <= 10
n_sets: int = 2000  # best-of-N candidate sets per seed (shared by every arm and strength) | x >= 10
n_candidates: int = 16  # N of best-of-N | x >= 2
b0: float = -1.0  # outcome intercept (logit)
beta: list[float] = [0.5, 0.8, 0.6, 0.0, -0.4]  # causal logit effects of question, number, emotional, sports, long; sports must be 0 | len(x) == 5 and x[3] == 0.0
gamma: float = 1.5  # logit effect of the confounder C on Y
min_bias: float = 0.02  # gate of the removal claim: smallest |naive spurious effect| in every seed | x > 0
min_lift: float = 0.03  # gate of the utility claims: smallest oracle lift over random selection in every seed | x > 0
min_auc: float = 0.55  # gate of the observational-validation claim: smallest held-out observational AUC of the naive reward | 0.5 <= x < 1

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.deconfound_lm import TITLE, URL
from papers.deconfound_lm.method import (ARMS, ATTRIBUTES, World, attribute_features, lift_fraction,
                                         measure_naive_bias, measure_near_oracle, measure_observational_preference,
                                         measure_removal,
                                         measure_utility_gain, measure_with_c_equivalence, run_seed,
                                         template_table)
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "deconfound_lm")
world = World(b0=b0, beta=tuple(beta), gamma=gamma)

# %% [markdown]
# ## The headlines and their features
# Every distinct headline is embedded once (MiniLM, mean-pooled, unit norm); the data sets index into this
# table.

# %%
templates = template_table()
t0 = time.time()
if features == "minilm":
    from shared.lm import embed, load_minilm

    encoder, tokenizer = load_minilm("cpu")
    phi = embed(encoder, tokenizer, templates["text"].tolist()).numpy().astype(np.float64)
    del encoder
else:
    phi = attribute_features(templates)
print(f"{len(templates)} headlines, features {phi.shape} in {time.time() - t0:.1f} s")
templates.sample(6, random_state=0)[["text"] + list(ATTRIBUTES)]

# %% [markdown]
# ## Fit every reward at every confounding strength, select best-of-N, score on the truth

# %%
rows, eff_rows = [], []
for seed in seeds:
    r, e = run_seed(seed, phi, templates, world, strengths, n_obs, n_folds, n_sets, n_candidates)
    rows += r
    eff_rows += e
    if progress:
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
table = pd.DataFrame(rows)
effects = pd.DataFrame(eff_rows)
summary = table.groupby("strength")[[f"u_{a}" for a in ARMS] + ["u_random", "u_best"]
                                    + [f"eff_{a}" for a in ARMS]].mean()
summary

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("deconfound_lm")
m, ctrl = measure_naive_bias(table, claim_strength)
claims["naive_reward_spurious_bias"].evaluate(m, control=ctrl, detail=f"strength {claim_strength}")
m, gate, ctrl = measure_removal(table, claim_strength, min_bias)
claims["deconfound_removes_spurious_effect"].evaluate(m, gate=gate, control=ctrl, detail=f"strength {claim_strength}")
m, gate, ctrl = measure_utility_gain(table, claim_strength, min_lift)
claims["deconfound_true_utility_gain"].evaluate(m, gate=gate, control=ctrl, detail=f"strength {claim_strength}")
m, gate, ctrl = measure_near_oracle(table, claim_strength, min_lift)
claims["deconfound_near_oracle"].evaluate(m, gate=gate, control=ctrl, detail=f"strength {claim_strength}")
m, ctrl = measure_with_c_equivalence(table, claim_strength)
claims["with_c_matches_deconfound"].evaluate(m, control=ctrl, detail=f"strength {claim_strength}")
m, gate, ctrl = measure_observational_preference(table, claim_strength, min_auc)
claims["observational_validation_prefers_naive"].evaluate(m, gate=gate, control=ctrl,
                                                          detail=f"strength {claim_strength}")
verdicts = pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
                          "control": c.control.measured.value, "control_meets": c.control_meets,
                          "verdict": c.verdict} for c in claims.values()])
verdicts

# %% [markdown]
# ## Figure: true utility of best-of-N and the reward's spurious-attribute effect
# Left: exact interventional outcome of each reward's best-of-16 pick (random selection and the truth's
# own pick for reference). Right: the reward's counterfactual sports effect (true value 0). Bands: 95% CI
# over seeds.

# %%
long_u = table.melt(id_vars=["seed", "strength"], value_vars=[f"u_{a}" for a in ARMS] + ["u_random", "u_best"],
                    var_name="reward", value_name="true utility")
long_u["reward"] = long_u["reward"].str.removeprefix("u_")
long_e = table.melt(id_vars=["seed", "strength"], value_vars=[f"eff_{a}" for a in ARMS],
                    var_name="reward", value_name="spurious effect")
long_e["reward"] = long_e["reward"].str.removeprefix("eff_")
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
sns.lineplot(data=long_u, x="strength", y="true utility", hue="reward", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[0])
axes[0].set(xlabel="confounding strength", ylabel="E[Y | do(best-of-16 pick)]")
sns.lineplot(data=long_e, x="strength", y="spurious effect", hue="reward", marker="o", errorbar=("ci", 95),
             seed=0, ax=axes[1], legend=False)
axes[1].axhline(0.0, color="k", ls="--", lw=1)
axes[1].set(xlabel="confounding strength", ylabel="reward change when sports is flipped on")
fig.tight_layout()
savefig(fig, out / "utility_and_spurious_effect.png")

# %% [markdown]
# ## Figure: estimated vs true attribute effects at the claim strength

# %%
e_at = effects[np.isclose(effects["strength"], claim_strength)]
fig, ax = plt.subplots(figsize=(8, 3.8))
sns.barplot(data=e_at, x="attribute", y="estimated", hue="arm", errorbar=("ci", 95), seed=0, ax=ax)
truth = e_at.groupby("attribute", sort=False)["true"].first()
ax.scatter(range(len(truth)), truth.to_numpy(), color="k", marker="_", s=600, zorder=5, label="true")
ax.legend(fontsize=8)
ax.set(ylabel="effect on reward / true outcome (probability)", title=f"strength {claim_strength}")
fig.tight_layout()
savefig(fig, out / "attribute_effects.png")

# %% [markdown]
# ## Write the results

# %%
table.assign(lift_fraction_deconfound=lift_fraction(table, "deconfound"),
             lift_fraction_naive=lift_fraction(table, "naive")).to_csv(out / "per_seed.csv", index=False,
                                                                       float_format="%.6g")
effects.to_csv(out / "attribute_effects.csv", index=False, float_format="%.6g")
at = table[np.isclose(table["strength"], claim_strength)]
headline = {f"utility_{a}": float(at[f"u_{a}"].mean()) for a in ARMS}
headline.update({"utility_random": float(at["u_random"].mean()), "utility_best": float(at["u_best"].mean()),
                 "spurious_effect_naive": float(at["eff_naive"].mean()),
                 "spurious_effect_deconfound": float(at["eff_deconfound"].mean()),
                 "observational_auc_naive": float(at["obs_auc_naive"].mean()),
                 "observational_auc_deconfound": float(at["obs_auc_deconfound"].mean())})
write_metrics(out, slug="deconfound_lm", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "deconfound_lm"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
