# %% [markdown]
# # Effectiveness of Data Augmentation for Parameter Efficient Tuning with Limited Data: replication
#
# Obadinma, Guo, Zhu (RepL4NLP @ ACL 2023), [arXiv:2303.02577](https://arxiv.org/abs/2303.02577).
#
# The paper tunes BERT/RoBERTa with P-tuning v2 (deep prefixes), LoRA or full fine-tuning on small
# training sets enlarged by EDA, back-translation or Mixup. It reports that prefix tuning separates the
# sentence embeddings of augmented data by class less well than fine-tuning, does worse on heavily
# altered data, and that adding a supervised contrastive loss to prefix tuning improves its performance
# on augmented data. This notebook tests those statements at reduced scale: SST-2, 32 sentences per class
# with 2 EDA copies each, all-MiniLM-L6-v2 with a linear head, and four arms per seed (prefix tuning,
# prefix tuning + SupCon, full fine-tuning, and prefix tuning under another model seed as the A/A
# control). The claims, gates and controls are registered in `claims.yaml`, committed before the first
# `small` run; `analysis.py` measures, `shared.claims` decides.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/augment_peft (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (training sample, augmentations, model seeds) | len(x) >= 1 and len(set(x)) == len(x)
task: str = "sst2"  # EDA copy of the task; the registry's gate level is for SST-2 | x in ("sst2", "trec")
n_per_class: int = 32  # original training sentences per class | x >= 2
n_aug: int = 2  # EDA copies per training sentence | x >= 1
alpha: float = 0.1  # EDA strength of the training copies and of the `aug` test copies | 0 < x < 1
alpha_heavy: float = 0.3  # EDA strength of the heavily altered test copies | alpha < x < 1
n_test_per_class: int = 100  # test sentences per class (a fixed sample for every seed and arm) | x >= 4
synonyms_k: int = 5  # nearest embedding neighbours a synonym is drawn from | x >= 1
steps: int = 40  # optimisation steps per arm (all arms the same) | x >= 1
originals_per_batch: int = 8  # originals per batch, each with all its EDA copies | 1 <= x <= n_per_class * 2
lr_prefix: float = 0.01  # AdamW learning rate of the prefix arms (P-tuning v2 range) | 0 < x < 1
lr_full: float = 0.0001  # AdamW learning rate of full fine-tuning | 0 < x < 1
prefix_len: int = 10  # prefix vectors per layer and head | x >= 1
scl_weight: float = 0.5  # lambda of CE + lambda * SupCon in the prefix_scl arm (fixed a priori) | x > 0
scl_temperature: float = 0.1  # SupCon temperature | x > 0
max_length: int = 48  # word pieces per sentence, [CLS] and [SEP] included | x >= 8
gate_accuracy: float = 0.6  # registered gate: clean test accuracy of the compared arms in every seed | 0 < x < 1
workers: int = 2  # parallel single-threaded worker processes | x >= 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.augment_peft import TITLE, URL
from papers.augment_peft.analysis import (heavy_drop, measure_heavy_drop_gap, measure_scl_gain,
                                          measure_scl_separation, measure_separation_gap)
from papers.augment_peft.data import load_task
from papers.augment_peft.eda import word_change_fraction
from papers.augment_peft.method import ARMS, RunConfig, minilm_synonyms, prepare_data, run_arm
from shared.claims import load_claims
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
# on a CPU, single-threaded worker processes beat intra-op threads; one accelerator runs the arms in turn
n_workers = workers if device == "cpu" else 1
if device == "cpu":
    torch.set_num_threads(1)
out = resolve_output_dir(output_dir, "augment_peft")
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## Data and augmentation
# A class-balanced training sample per seed with `n_aug` EDA copies of every sentence, and a fixed test
# sample with one EDA copy at the training strength (`aug`) and one heavily altered copy (`heavy`).
# Synonym replacement and insertion draw from the nearest whole-word neighbours in MiniLM's input
# embedding table (WordNet is not available offline).

# %%
task_data = load_task(task)
synonyms = minilm_synonyms(synonyms_k)
data = {s: prepare_data(s, *task_data["train"], *task_data["test"], n_per_class=n_per_class, n_aug=n_aug,
                        alpha=alpha, alpha_heavy=alpha_heavy, n_test_per_class=n_test_per_class,
                        synonyms=synonyms) for s in seeds}
d0 = data[seeds[0]]
alteration = pd.DataFrame([{"set": name, "mean fraction of words changed": sum(
    word_change_fraction(a, b) for a, b in zip(d0["eval_clean_texts"], d0[f"eval_{name}_texts"]))
    / len(d0["eval_clean_texts"])} for name in ("aug", "heavy")])
print(f"{len(d0['train_texts'])} training rows per seed ({n_per_class} per class x (1 + {n_aug})), "
      f"{len(d0['eval_clean_texts'])} test sentences")
pd.DataFrame({"original": d0["train_texts"][:3 * (1 + n_aug):(1 + n_aug)],
              "EDA copy": d0["train_texts"][1:3 * (1 + n_aug):(1 + n_aug)]})

# %%
alteration

# %% [markdown]
# ## Train and evaluate every arm
# Same data, same steps and batch layout for every arm of a seed; each arm has its own model seed.

# %%
cfg = RunConfig(steps=steps, originals_per_batch=originals_per_batch, lr_prefix=lr_prefix, lr_full=lr_full,
                prefix_len=prefix_len, scl_weight=scl_weight, scl_temperature=scl_temperature,
                max_length=max_length)
jobs = [(s, arm, data[s], cfg, progress and n_workers <= 1, device) for s in seeds for arm in ARMS]
runs = run_jobs(run_arm, jobs, workers=n_workers, cost=[2.0 if a == "ft" else 1.0 for _, a, *_ in jobs],
                on_done=lambda i, r, n: print(f"{n}/{len(jobs)} done: seed {r['seed']} {r['arm']}", flush=True))
results = pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in runs])
curves = pd.DataFrame([rec for r in runs for rec in r["curve"]])
results = heavy_drop(results)
summary = results.groupby("arm", sort=False)[["acc_clean", "acc_aug", "acc_heavy", "drop_heavy", "sil_aug",
                                              "final_train_loss", "trainable_encoder_params"]].mean()
summary

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("augment_peft")
for cid, fn in (("scl_improves_prefix_on_eda", measure_scl_gain),
                ("prefix_separates_augmented_less_than_ft", measure_separation_gap),
                ("prefix_loses_more_on_heavy_eda", measure_heavy_drop_gap),
                ("scl_raises_prefix_separation", measure_scl_separation)):
    m, gate, control, detail = fn(results, gate_accuracy)
    claims[cid].evaluate(m, gate=gate, control=control, detail=detail)
verdicts = pd.DataFrame([{"claim": c.id, "kind": c.kind, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": c.gate.passed,
                          "control": c.control.measured.value, "control_ci": (c.control.measured.ci_low,
                                                                              c.control.measured.ci_high),
                          "verdict": c.verdict, "reason": c.reason} for c in claims.values()])
verdicts

# %% [markdown]
# ## Figures
# Left: clean, augmented and heavily altered test accuracy per arm (bars: mean over seeds, 95% bootstrap
# interval). Right: class silhouette of the embeddings of the augmented test sentences.

# %%
long = results.melt(id_vars=["seed", "arm"], value_vars=["acc_clean", "acc_aug", "acc_heavy"],
                    var_name="test set", value_name="accuracy")
long["test set"] = long["test set"].str.replace("acc_", "", regex=False)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
sns.barplot(data=long, x="arm", y="accuracy", hue="test set", errorbar=("ci", 95), seed=0, ax=axes[0])
axes[0].axhline(1 / d0["n_classes"], color="grey", ls=":")
axes[0].set(ylim=(0.0, 1.0), title=f"{task}: test accuracy by arm")
sns.stripplot(data=results, x="arm", y="sil_aug", hue="seed", ax=axes[1], size=7)
axes[1].set(ylabel="cosine silhouette by class", title="separation of augmented test embeddings")
fig.tight_layout()
savefig(fig, out / "accuracy_and_separation.png")

# %% [markdown]
# ## Write the results

# %%
curve_table = (curves.assign(run=curves["arm"] + "_s" + curves["seed"].astype(str))
               .pivot_table(index="step", columns="run", values="loss").reset_index())
curve_table.to_csv(out / "loss_curves.csv", index=False, float_format="%.6g")
results.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
summary.reset_index().to_csv(out / "by_arm.csv", index=False, float_format="%.6g")
alteration.to_csv(out / "alteration.csv", index=False, float_format="%.6g")

headline = {f"{arm}_{col}": float(summary.loc[arm, col]) for arm in summary.index
            for col in ("acc_clean", "acc_heavy", "sil_aug")}
write_metrics(out, slug="augment_peft", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "augment_peft"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
