# %% [markdown]
# # INGENIOUS: Using Informative Data Subsets for Efficient Pre-Training of Language Models: replication
#
# Renduchintala et al. (Findings of EMNLP 2023), [arXiv:2305.06677](https://arxiv.org/abs/2305.06677).
#
# INGENIOUS pre-trains a language model on a subset (25%) of its corpus that is re-selected every `R` steps
# by greedy facility-location maximisation over the model's own representations (after a warm start on all
# data), sampling from the greedy gains with a Taylor softmax, inside random partitions. The paper reports
# ~98.6% of the fully trained BERT's GLUE score and better downstream scores than a random subset of the
# same size. Here a tiny character-level GPT-2 is pre-trained on Tiny Shakespeare windows, and four arms
# run the same steps, batch size and window length from the same initialisation and warm-start batches:
# `full` (all windows), `random` (a uniform 25% subset re-drawn at each re-selection), `random_b` (a second
# random stream: the A/A control) and `fl` (INGENIOUS). The held-out loss on the last 10% of the text
# is the score. The claims, their gates and controls are registered in `claims.yaml` before the first run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/ingenious (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (one model per arm and seed) | len(x) >= 1 and len(set(x)) == len(x)
window: int = 64  # characters per training window (sequence length) | x >= 8
n_pool: int = 2000  # training windows in the ground set of the selection | x >= 20
n_test: int = 512  # held-out windows (last 10% of the text) | x >= 1
steps: int = 800  # optimisation steps per arm (equal for every arm) | x >= 2
warm_steps: int = 160  # warm start on the full pool before the first selection | 1 <= x < steps
reselect_every: int = 160  # R: steps between re-selections | x >= 1
subset_fraction: float = 0.25  # subset size k / n_pool | 0 < x < 1
n_partitions: int = 8  # P: random partitions of the ground set | 1 <= x <= n_pool
batch_size: int = 32  # windows per step (equal for every arm) | x >= 1
lr: float = 0.003  # AdamW peak learning rate (cosine schedule), same for every arm | 0 < x < 1
d_model: int = 64  # GPT-2 width | x >= 8
n_layers: int = 2  # GPT-2 layers | x >= 1
n_heads: int = 4  # attention heads | x >= 1 and d_model % x == 0
eval_every: int = 160  # held-out evaluation every this many steps | x >= 1
workers: int = 2  # parallel worker processes (single-threaded on CPU) | x >= 1
gate_max_loss: float = 2.3  # gate: full-data held-out loss (nats/char) in every seed at most this | x > 0
gate_min_room: float = 0.02  # gate: random-subset minus full-data held-out loss (nats/char) at least this | x >= 0

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.ingenious import TITLE, URL
from papers.ingenious.method import (build_corpus, measure_fl_beats_random, measure_fl_objective,
                                     measure_fl_retention, run_grid)
from shared.claims import load_claims
from shared.data import require
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
# small models: one intra-op thread per worker process is fastest on a small CPU
torch.set_num_threads(1)
out = resolve_output_dir(output_dir, "ingenious")
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## Corpus
# Non-overlapping windows of Tiny Shakespeare: the first 90% of the text gives the pool (the ground set of
# the selection), the last 10% the held-out windows, never seen by training or selection. The unigram
# loss (train-split character frequencies on the held-out windows) is the spec-blind baseline of the
# retention ratio.

# %%
text = require("tinyshakespeare", "input.txt").read_text()
corpus = build_corpus(text, window=window, n_pool=n_pool, n_test=n_test)
print(f"vocab {len(corpus.vocab)}, pool {tuple(corpus.pool.shape)}, test {tuple(corpus.test.shape)}, "
      f"unigram loss {corpus.unigram_loss:.4f} nats/char; each arm sees {steps * batch_size} windows "
      f"({steps * batch_size / n_pool:.1f} passes over the pool)")

# %% [markdown]
# ## Train every arm

# %%
results, curves, selections = run_grid(
    corpus, seeds, ["full", "random", "random_b", "fl"], workers=workers, steps=steps, warm_steps=warm_steps,
    reselect_every=reselect_every, subset_fraction=subset_fraction, n_partitions=n_partitions,
    batch_size=batch_size, lr=lr, d_model=d_model, n_layers=n_layers, n_heads=n_heads, eval_every=eval_every,
    device=device)
summary = results.groupby("arm")[["heldout_loss", "warm_heldout_loss"]].agg(["mean", "std"])
summary

# %%
selections.drop(columns=["seconds"], errors="ignore")

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("ingenious")
m, gate, control, detail = measure_fl_beats_random(results, gate_max_loss, gate_min_room)
claims["fl_beats_random_heldout"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_fl_retention(results, corpus.unigram_loss, gate_max_loss)
claims["fl_retains_full_heldout"].evaluate(m, gate=gate, control=control, detail=detail)
m, control, detail = measure_fl_objective(selections)
claims["fl_subset_higher_objective"].evaluate(m, control=control, detail=detail)
verdicts = pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
                          "control": None if c.control is None else c.control.measured.value,
                          "verdict": c.verdict, "reason": c.reason} for c in claims.values()])
verdicts

# %% [markdown]
# ## Figure: held-out loss against training step
# Every arm trains the same steps on batches of the same size; the vertical line marks the end of the warm
# start (all arms identical up to there). Right: the final held-out loss per seed.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
ev = curves.dropna(subset=["heldout_loss"])
sns.lineplot(data=ev, x="step", y="heldout_loss", hue="arm", marker="o", errorbar=("ci", 95), seed=0, ax=axes[0])
axes[0].axvline(warm_steps, color="grey", ls=":", label="end of warm start")
axes[0].set(xlabel="training step", ylabel="held-out loss (nats/char)", title="held-out loss, mean and 95% CI")
axes[0].legend(fontsize=8)
sns.stripplot(data=results, x="arm", y="heldout_loss", hue="arm", ax=axes[1], legend=False)
axes[1].set(ylabel="final held-out loss (nats/char)", title="final, per seed")
fig.tight_layout()
savefig(fig, out / "heldout_loss.png")

# %% [markdown]
# ## Write the results

# %%
curve_table = ev.groupby(["step", "arm"])["heldout_loss"].mean().unstack("arm").reset_index()
curve_table.to_csv(out / "heldout_curves.csv", index=False, float_format="%.6g")
results.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
if len(selections):
    selections.drop(columns=["seconds"]).to_csv(out / "selections.csv", index=False, float_format="%.6g")

means = results.groupby("arm")["heldout_loss"].mean()
headline = {f"{a}_heldout_loss": float(means[a]) for a in means.index}
headline["unigram_loss"] = corpus.unigram_loss
headline["warm_start_heldout_loss"] = float(results["warm_heldout_loss"].mean())
write_metrics(out, slug="ingenious", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "ingenious"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
