# %% [markdown]
# # Item-Language Model for Conversational Recommendation: replication
#
# Yang et al. (2024), [arXiv:2406.02844](https://arxiv.org/abs/2406.02844).
#
# **ILM.** A BLIP-2-style Q-Former turns a collaborative-filtering (CF) item embedding into a few soft
# tokens that a **frozen** LLM reads (Fig. 2). Phase 1 pretrains the Q-Former on item-text contrastive,
# item-grounded text generation (and item-text matching) plus a new item-item contrastive loss; phase 2
# trains the Q-Former and its projection adaptor on the recommendation task with the LLM frozen. The
# paper reports that this beats an MLP adaptor over the same CF embeddings and a randomly initialised
# Q-Former, and that the item-item loss helps.
#
# **Here** (reduced scale, see the README): a synthetic catalogue with MovieLens-100k's schema, PureSVD
# CF embeddings, a tiny Llama pretrained on the catalogue's texts and then frozen (SmolLM2-135M in
# `full`), next-item ranking of 1 held-out item among unseen negatives by the frozen LM's
# length-normalised likelihood of each candidate's title. The claims, gates and controls are registered
# in `claims.yaml` before the first `small` run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/item_language_model (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
data_source: str = "auto"  # interactions and item texts: MovieLens 100K (stage data_movielens_100k, fetched online only), the synthetic catalogue with its schema, or auto = MovieLens when fetched, else synthetic | x in ("auto", "synthetic", "movielens_100k")
seeds: list[int] = [0, 1, 2]  # evaluation seeds (catalogue, LM, every arm) | len(x) >= 1 and len(set(x)) == len(x)
workers: int = 2  # seeds run in parallel single-threaded processes | x >= 1
n_items: int = 200  # catalogue size | 50 <= x <= 1920
n_users: int = 400  # users | x >= 10
seq_len: int = 20  # items watched per user (the last one is held out) | history + 2 <= x < n_items
beta: float = 2.0  # taste sharpness of the watch process | x > 0
history: int = 4  # history items in each phase-2 prompt | x >= 1
d_cf: int = 16  # PureSVD CF embedding size | 2 <= x <= 64
lm: str = "tiny"  # frozen LM: tiny Llama pretrained on the catalogue texts, or SmolLM2-135M | x in ("tiny", "smollm2")
lm_d_model: int = 64  # tiny LM width | x >= 16
lm_layers: int = 2  # tiny LM layers | x >= 1
lm_batch: int = 64  # tiny LM pretraining batch | x >= 1
lm_steps: int = 400  # tiny LM pretraining steps | x >= 1
lm_lr: float = 0.003  # tiny LM pretraining learning rate | 0 < x < 1
lm_lists: int = 40  # genre lists per genre in the LM's pretraining corpus | x >= 0
lm_list_len: int = 4  # titles per genre list | x >= 2
prompt: str = ","  # text between the history's soft tokens and the candidate title | len(x) > 0
d_q: int = 64  # Q-Former width | x >= 8
n_query: int = 2  # learned queries = soft tokens per item | x >= 1
n_kv: int = 4  # key/value tokens the CF vector is split into | x >= 1
q_layers: int = 2  # Q-Former layers | x >= 1
ii_window: int = 3  # co-consumption window for item-item positives | x >= 1
p1_batch: int = 64  # phase-1 batch (items) | x >= 2
p1_steps: int = 150  # phase-1 steps | x >= 1
p1_lr: float = 0.003  # phase-1 learning rate | 0 < x < 1
mlp_hidden: int = 128  # MLP adaptor hidden width | x >= 1
p2_batch: int = 32  # phase-2 batch (next-item examples) | x >= 1
p2_steps: int = 300  # phase-2 steps, the same for every arm | x >= 1
p2_lr: float = 0.003  # phase-2 learning rate, the same for every arm | 0 < x < 1
n_eval_users: int = 150  # users whose held-out last item is ranked | 1 <= x <= n_users
n_candidates: int = 50  # candidates per user: the held-out item + unseen negatives | 2 <= x <= n_items - seq_len
k: int = 10  # cut-off of HR@k and NDCG@k | 1 <= x < n_candidates
eval_chunk: int = 20  # users scored per forward pass | x >= 1
gate_hit: float = 0.3  # gate: every compared arm's HR@k in every seed (chance k / n_candidates) | 0 <= x <= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.item_language_model import TITLE, URL
from papers.item_language_model.analysis import (arm_means, measure_alignment, measure_gap,
                                                 measure_language_preserved)
from papers.item_language_model.experiment import run_seed
from shared.claims import load_claims
from shared.data import available
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
out = resolve_output_dir(output_dir, "item_language_model")
cfg = {name: globals()[name] for name in (
    "n_items", "n_users", "seq_len", "beta", "history", "d_cf", "lm", "lm_d_model", "lm_layers", "lm_batch",
    "lm_steps", "lm_lr", "lm_lists", "lm_list_len", "prompt", "d_q", "n_query", "n_kv", "q_layers", "ii_window",
    "p1_batch", "p1_steps", "p1_lr", "mlp_hidden", "p2_batch", "p2_steps", "p2_lr", "n_eval_users",
    "n_candidates", "k", "eval_chunk")}
# MovieLens may not be redistributed: its stage fetches it online and records UNAVAILABLE offline
if data_source == "movielens_100k" and not available("movielens_100k"):
    raise ValueError("data_source=movielens_100k but data/movielens_100k was not fetched: run "
                     "`dvc repro --force data_movielens_100k` online, or use data_source=auto|synthetic")
data_used = data_source if data_source != "auto" else (
    "movielens_100k" if available("movielens_100k") else "synthetic")
cfg["data_source"] = data_used
print(f"profile={profile} device={device} data_source={data_source} -> {data_used} output={out}")

# %% [markdown]
# ## Run every seed
# Per seed: catalogue, PureSVD item embeddings, the frozen LM, phase 1 for the four pretrained arms,
# phase 2 for every arm on the same batches, and the ranking of each evaluation user's held-out item.

# %%
runs = run_jobs(run_seed, [(s, cfg, device, progress and workers <= 1) for s in seeds],
                workers=1 if device != "cpu" else min(workers, len(seeds)))
results = pd.DataFrame([r for run in runs for r in run["rows"]])
per_seed = pd.DataFrame([{"seed": run["seed"], "n_items": run["n_items"], "nll_before": run["nll_before"],
                          "nll_after": run["nll_after"], "nll_unfrozen": run["nll_unfrozen"],
                          **{f"retrieval_{a}": v for a, v in run["retrieval"].items()}} for run in runs])
summary = arm_means(results).groupby("arm")[["hit", "ndcg"]].agg(["mean", "std"])
print("example item texts:", runs[0]["example_titles"])
summary

# %%
per_seed

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("item_language_model")
m, gate, control, detail = measure_gap(results, "ilm_it_ii", "mlp", "ilm_shuffled", gate_hit)
claims["ilm_beats_mlp_adaptor"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_gap(results, "ilm_it_ii", "ilm_rand", "ilm_shuffled", gate_hit)
claims["ilm_beats_random_init_qformer"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_gap(results, "ilm_it_ii", "ilm_it", "ilm_it_rii", gate_hit)
claims["item_item_loss_helps"].evaluate(m, gate=gate, control=control, detail=detail)
m, control, detail = measure_alignment(per_seed, "ilm_it_ii", "ilm_shuffled", 10)
claims["phase1_aligns_items_to_text"].evaluate(m, control=control, detail=detail)
m, control, detail = measure_language_preserved(per_seed)
claims["frozen_lm_language_preserved"].evaluate(m, control=control, detail=detail)
verdicts = pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
                          "control": None if c.control is None else c.control.measured.value,
                          "verdict": c.verdict, "reason": c.reason} for c in claims.values()])
verdicts

# %% [markdown]
# ## Figure: HR@k and NDCG@k by arm
# Bars: mean over seeds of the per-seed mean over users (error bars: 95% bootstrap over seeds); dotted:
# chance HR@k = k / candidates; dashed: the CF signal alone (mean history embedding . candidate).

# %%
seed_level = arm_means(results).melt(id_vars=["seed", "arm"], value_vars=["hit", "ndcg"], var_name="metric")
seed_level["metric"] = seed_level["metric"].map({"hit": f"HR@{k}", "ndcg": f"NDCG@{k}"})
order = ["mlp", "ilm_rand", "ilm_shuffled", "ilm_it", "ilm_it_rii", "ilm_it_ii", "ref_text_prior"]
fig, ax = plt.subplots(figsize=(9, 4))
sns.barplot(data=seed_level[seed_level["arm"].isin(order)], x="arm", y="value", hue="metric", order=order,
            errorbar=("ci", 95), seed=0, ax=ax)
mf = seed_level[(seed_level["arm"] == "ref_mf_only") & (seed_level["metric"] == f"HR@{k}")]["value"].mean()
ax.axhline(mf, color="k", ls="--", label=f"CF only, HR@{k}")
ax.axhline(k / n_candidates, color="grey", ls=":", label=f"chance HR@{k}")
ax.set(xlabel="", ylabel="held-out next item", title=f"frozen {lm} LM, {n_candidates} candidates")
ax.tick_params(axis="x", rotation=20)
ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, out / "ranking_by_arm.png")

# %% [markdown]
# ## Write the results

# %%
curves = pd.DataFrame([c for run in runs for c in run["p2_curves"]])
curve_table = curves.groupby(["arm", "step"])["loss"].mean().unstack("arm").reset_index()
curve_table.to_csv(out / "phase2_loss_curves.csv", index=False, float_format="%.6g")
arm_means(results).to_csv(out / "arm_by_seed.csv", index=False, float_format="%.6g")
per_seed.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
headline = {f"{arm}_ndcg@{k}": float(summary.loc[arm, ("ndcg", "mean")]) for arm in summary.index}
headline.update({f"{arm}_hr@{k}": float(summary.loc[arm, ("hit", "mean")]) for arm in summary.index})
write_metrics(out, slug="item_language_model", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline={"data_source": data_used, **headline},
              params=snapshot(globals(), "item_language_model"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
