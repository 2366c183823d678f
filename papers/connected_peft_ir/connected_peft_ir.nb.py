# %% [markdown]
# # Scattered or Connected? An Optimized Parameter-efficient Tuning Approach for Information Retrieval: replication
#
# Ma, Guo, Zhang, Fan, Cheng (CIKM 2022), [arXiv:2208.09847](https://arxiv.org/abs/2208.09847).
#
# **Claim.** Parameter-efficient tuning (PET: adapters, LoRA, ...) with < 1% trainable parameters does not
# match full fine-tuning of a dense retriever, because the trainable modules are *scattered* among frozen
# blocks; connecting them into one trainable pathway alongside the model closes the gap.
#
# **Here.** A bi-encoder (the bottom 3 layers of all-MiniLM-L6-v2, mean pooling, InfoNCE with in-batch and
# one hard negative) is tuned for duplicate-question retrieval over entity facts built from CounterFact-Hard
# (`data.py`), evaluated by MRR@10 on subjects unseen in training. Arms: zero-shot, full fine-tuning,
# LoRA, scattered Houlsby adapters, and the *same* adapters connected by a parameter-free aside pathway to
# the output (`method.py`), plus the scattered adapters again under other seeds (an A/A control). Learning
# rates were chosen per arm on validation subjects in a pilot (`pilot.py`, seed 100), the claims registered
# in `claims.yaml` before this notebook's first `small` run.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/connected_peft_ir (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (batch order and module init) | len(x) >= 1 and len(set(x)) == len(x) and all(s < 100 for s in x)
aa_offset: int = 1000  # the A/A control arm trains the scattered adapters with seed + aa_offset | x >= 100
n_layers: int = 3  # bottom layers of MiniLM kept | 1 <= x <= 6
steps: int = 80  # optimisation steps per arm and seed (the same for every arm) | x >= 1
batch_size: int = 8  # queries per step (each with its positive and one hard negative) | 2 <= x <= 64
temperature: float = 0.05  # InfoNCE temperature | x > 0
warmup_frac: float = 0.1  # linear warmup share of the steps, then cosine decay | 0 <= x < 1
adapter_size: int = 16  # adapter bottleneck width (scattered and connected arms) | x >= 1
lora_r: int = 16  # LoRA rank on query and value (budget matched to the adapters) | x >= 1
lora_alpha: float = 32.0  # LoRA scale alpha / r | x > 0
lr_full: float = 1e-3  # learning rate, full fine-tuning (pilot on validation) | 0 < x < 1
lr_lora: float = 3e-3  # learning rate, LoRA (pilot on validation) | 0 < x < 1
lr_adapter: float = 1e-2  # learning rate, scattered adapters (pilot on validation) | 0 < x < 1
lr_connected: float = 1e-2  # learning rate, connected adapters (pilot on validation) | 0 < x < 1
max_length: int = 32  # word pieces per text | x >= 8
n_val: int = 100  # validation subjects (used by the pilot only; held out here) | x >= 1
n_test: int = 150  # test subjects (unseen in training) | x >= 1
split_seed: int = 0  # the one fixed subject split | x >= 0
min_gain_pet: float = 0.01  # gate: MRR@10 gain over zero-shot an adapter arm must reach | x >= 0
min_gain_full: float = 0.02  # gate: MRR@10 gain over zero-shot full fine-tuning must reach | x >= 0
log_every: int = 10  # training-loss record interval | x >= 1
workers: int = 2  # parallel single-threaded worker processes (CPU); 1 on a GPU | x >= 1

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from papers.connected_peft_ir import TITLE, URL
from papers.connected_peft_ir.data import build_corpus, load_subjects, split_subjects
from papers.connected_peft_ir.method import (TRAINED_ARMS, measure_budget, measure_connected_vs_full,
                                             measure_connected_vs_scattered, measure_pet_below_full, run_arm)
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
if device != "cpu":
    workers = 1
out = resolve_output_dir(output_dir, "connected_peft_ir")
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## Data: subjects split once into train / validation / test

# %%
train_subjects, val_subjects, test_subjects = split_subjects(load_subjects(), n_val, n_test, split_seed)
test_corpus = build_corpus(test_subjects)
print(f"train {len(train_subjects)} subjects, validation {len(val_subjects)}, test {len(test_subjects)}: "
      f"{len(test_corpus.queries)} test queries over {len(test_corpus.passages)} passages")

# %% [markdown]
# ## Train every arm (one model per arm and seed, from the pretrained encoder)

# %%
cfg = dict(n_layers=n_layers, steps=steps, batch_size=batch_size, temperature=temperature,
           warmup_frac=warmup_frac, adapter_size=adapter_size, lora_r=lora_r, lora_alpha=lora_alpha,
           max_length=max_length, log_every=log_every, device=device, progress=progress and workers == 1)
lrs = {"full": lr_full, "lora": lr_lora, "adapter": lr_adapter, "connected": lr_connected}
jobs = [("zero_shot", seeds[0], 0.0, train_subjects, test_subjects, cfg)]
jobs += [(arm, s, lrs[arm], train_subjects, test_subjects, cfg) for s in seeds for arm in TRAINED_ARMS]
jobs += [("adapter", s + aa_offset, lr_adapter, train_subjects, test_subjects, cfg) for s in seeds]
t0 = time.perf_counter()
cost = {"zero_shot": 0.3, "full": 2.0, "lora": 1.5, "adapter": 1.0, "connected": 1.0}  # longest first
raw = run_jobs(run_arm, jobs, workers=workers, cost=[cost[j[0]] for j in jobs],
               on_done=lambda i, r, n: print(f"[{n}/{len(jobs)}] {r['arm']} seed {r['seed']}: "
                                             f"MRR@10 {r['mrr10']:.4f}", flush=True))
print(f"trained and evaluated {len(jobs)} models in {time.perf_counter() - t0:.0f} s")

rows, curves = [], []
for r in raw:
    arm, seed = r["arm"], r["seed"]
    if arm == "adapter" and seed >= aa_offset:  # the A/A control, paired with evaluation seed - aa_offset
        arm, seed = "adapter_aa", seed - aa_offset
    rows.append({k: v for k, v in r.items() if k != "curve"} | {"arm": arm, "seed": seed})
    curves += [c | {"arm": arm, "seed": seed} for c in r["curve"]]
results = pd.DataFrame(rows)
curves = pd.DataFrame(curves)
zero_shot_mrr = float(results.loc[results["arm"] == "zero_shot", "mrr10"].iloc[0])
results["trainable_pct"] = 100 * results["n_trainable"] / results["n_total"]
summary = (results.groupby("arm", sort=False)
           .agg(mrr10=("mrr10", "mean"), mrr10_sd=("mrr10", "std"), recall10=("recall10", "mean"),
                trainable=("n_trainable", "max"), trainable_pct=("trainable_pct", "max"), lr=("lr", "first"))
           .reset_index())
summary

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("connected_peft_ir")
m, gate, control, detail = measure_connected_vs_scattered(results, zero_shot_mrr, min_gain_pet)
claims["connected_beats_scattered"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_pet_below_full(results, zero_shot_mrr, min_gain_full)
claims["scattered_pet_below_full"].evaluate(m, gate=gate, control=control, detail=detail)
m, gate, control, detail = measure_connected_vs_full(results, zero_shot_mrr, min_gain_full)
claims["connected_matches_full"].evaluate(m, gate=gate, control=control, detail=detail)
m, control, detail = measure_budget(results)
claims["pet_budget_below_1pct"].evaluate(m, control=control, detail=detail)
pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value, "verdict": c.verdict,
               "reason": c.reason} for c in claims.values()])

# %% [markdown]
# ## Figures: test MRR@10 per arm and seed; training loss

# %%
order = ["zero_shot", "full", "lora", "adapter", "adapter_aa", "connected"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
sns.pointplot(data=results, x="arm", y="mrr10", order=order, errorbar=("ci", 95), seed=0, linestyle="none",
              color="k", ax=axes[0])
sns.stripplot(data=results, x="arm", y="mrr10", order=order, hue="seed", palette="deep", ax=axes[0])
axes[0].axhline(zero_shot_mrr, color="grey", ls=":", label="zero-shot")
axes[0].set(xlabel="", ylabel="test MRR@10 (unseen subjects)", title="retrieval quality after tuning")
axes[0].tick_params(axis="x", rotation=20)
if not curves.empty:
    sns.lineplot(data=curves, x="step", y="loss", hue="arm", errorbar=("ci", 95), seed=0, ax=axes[1])
    axes[1].set(ylabel="training InfoNCE loss (batch)", title="training loss, mean over seeds")
fig.tight_layout()
savefig(fig, out / "mrr_and_loss.png")

# %% [markdown]
# ## Write the results

# %%
results.sort_values(["arm", "seed"]).to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
if not curves.empty:
    curve_table = curves.groupby(["arm", "step"])["loss"].mean().unstack("arm").reset_index()
    curve_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")
headline = {f"{r.arm}_mrr10": r.mrr10 for r in summary.itertuples()}
write_metrics(out, slug="connected_peft_ir", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "connected_peft_ir"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
