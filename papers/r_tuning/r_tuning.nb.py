# %% [markdown]
# # R-Tuning: Teaching Large Language Models to Refuse Unknown Questions: replication
#
# Zhang, Diao, Lin, Fung, Lian, Wang, Chen, Ji, Zhang (NAACL 2024), [arXiv:2311.09677](https://arxiv.org/abs/2311.09677).
# Authors' code: shizhediao/R-Tuning.
#
# **R-Tuning.** Before instruction tuning, ask the model every training question; where its greedy answer
# contains the gold answer the question is *certain*, otherwise *uncertain*. Tune on
# `Question: q Answer: a. Are you sure you accurately answered the question based on your internal
# knowledge? I am sure.` (or `unsure`), keeping the gold answer in both cases. At test time the model
# answers, then states its certainty; its answers are ranked by 0.5 x answer confidence + 0.5 x p(sure),
# and average precision (AP) measures how well that ranking puts the correct answers first. Vanilla tuning
# trains on `Question: q Answer: a.` and ranks by answer confidence.
#
# Two arms test it: **SmolLM2-135M-Instruct** (LoRA) on factual questions from the EREN/CounterFact file
# (ID = held-out subjects of the tuned relation families, OOD = held-out families), and a **controlled
# synthetic arm**: a tiny GPT pretrained on a knowledge base of which only a known subset of facts
# appears, then tuned the same two ways. The tuning loss weighs every example equally: the mean
# cross-entropy of its answer tokens plus that of its certainty token. The claims, gates (did R-Tuning fit
# its own certainty labels?) and controls (R-Tuning ranked by answer confidence alone) are registered in
# `claims.yaml`, committed before the run; the verdicts come from `shared.claims`.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/r_tuning (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds (LM arm: LoRA init + data order; synthetic arm: the whole world) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
data_seed: int = 0  # fixed draw of the EREN records into train / ID test / OOD test | x >= 0
n_train: int = 240  # tuning questions (in-domain relation families) | x >= 4
train_per_record: int = 2  # tuning questions taken from each CounterFact record | 1 <= x <= 13
n_test_id: int = 120  # ID test questions (other records of the tuned families), one per record | x >= 4
n_test_ood: int = 120  # OOD test questions (held-out relation families), one per record | x >= 4
probe_max_new_tokens: int = 10  # greedy tokens of the untuned model's answer (knowledge split) | 1 <= x <= 32
answer_max_new_tokens: int = 5  # greedy tokens of a tuned model's answer (authors: 5) | 1 <= x <= 32
probe_test: bool = True  # also ask the untuned model the test questions (diagnostic only)
gen_batch_size: int = 32  # questions per generation / scoring batch | x >= 1
lora_layers: int = 8  # LoRA on the top this many of SmolLM2's 30 blocks (the rest frozen, cached) | 1 <= x <= 30
lora_r: int = 16  # LoRA rank | x >= 1
lora_alpha: float = 32.0  # LoRA alpha (scale alpha / r) | x > 0
lora_lr: float = 1e-3  # AdamW learning rate of the adapters | 0 < x < 1
lora_epochs: int = 3  # passes over the tuning questions | x >= 1
lora_batch_size: int = 16  # tuning examples per step | x >= 1
syn_subjects: int = 300  # synthetic arm: subjects | x >= 4
syn_train_subjects: int = 200  # subjects whose ID facts are the tuning set (the rest are test subjects) | 1 <= x < syn_subjects
syn_relations: int = 6  # relations | x >= 2
syn_id_relations: int = 3  # relations used in tuning (the others are the OOD test) | 1 <= x < syn_relations
syn_objects: int = 16  # objects per relation | x >= 2
syn_zipf: float = 1.0  # Zipf exponent of the object prior (guessable facts) | x >= 0
syn_p_known: float = 0.5  # probability that a fact is in the pretraining corpus | 0 < x < 1
syn_d_model: int = 128  # tiny GPT width | x >= 8 and x % 4 == 0
syn_layers: int = 4  # tiny GPT depth | x >= 1
syn_pretrain_steps: int = 1000  # pretraining steps | x >= 1
syn_pretrain_batch: int = 128  # pretraining sequences per step | x >= 1
syn_pretrain_lr: float = 1e-3  # pretraining AdamW learning rate | 0 < x < 1
syn_tune_epochs: int = 15  # tuning passes over the tuning facts | x >= 1
syn_tune_batch: int = 32  # tuning examples per step | x >= 1
syn_tune_lr: float = 3e-5  # tuning learning rate (all weights, constant) | 0 < x < 1
workers: int = 2  # synthetic seeds trained in parallel single-threaded processes on a CPU | x >= 1
n_boot: int = 1000  # bootstrap resamples of the test questions | x >= 100

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.r_tuning import TITLE, URL
from papers.r_tuning.analysis import auroc, evaluate_all, per_seed_metrics, summary_table, train_aurocs
from papers.r_tuning.facts import families_by_size, load_records, make_split, split_families
from papers.r_tuning.lm_arm import LoraSpec, run_lm_arm
from papers.r_tuning.refusal import r_tuning_text, ranking_score
from papers.r_tuning.synthetic import TinySpec, WorldSpec, run_arm
from shared.claims import load_claims
from shared.data import require
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
out = resolve_output_dir(output_dir, "r_tuning")
print(f"profile={profile} device={device} output={out}")

# %% [markdown]
# ## The facts: EREN's CounterFact-Hard file, true answers only
# Each record is one CounterFact case: paraphrased questions about a subject and questions about ten
# "neighbour" subjects with the same relation and the same (true) object. The relation family is read from
# the questions' wording; families alternate into in-domain (tuned) and out-of-domain (held out) by size.

# %%
records = load_records(require("eren", "cfh_filtered.json"))
sizes = families_by_size(records)
id_families, ood_families = split_families(sizes)
families = pd.DataFrame([{"family": f, "records": n, "split": "ID" if f in id_families else "OOD"}
                         for f, n in sizes])
split = make_split(records, n_train, n_test_id, n_test_ood, train_per_record, data_seed)
print(f"{len(records)} records; tuning questions {len(split.train)}, ID test {len(split.test_id)}, "
      f"OOD test {len(split.test_ood)}")
families.T

# %%
print(r_tuning_text(split.train[0].question, split.train[0].answer, True))

# %% [markdown]
# ## Arm 1: SmolLM2-135M-Instruct
# Knowledge split by the untuned model (few-shot prompt, greedy), then for every seed one vanilla and one
# R-Tuning LoRA model on the top blocks, each evaluated on the ID and OOD questions with the authors'
# protocol (greedy answer of at most 5 tokens stopped at '.', answer confidence, p(sure)).

# %%
lora = LoraSpec(n_top=lora_layers, r=lora_r, alpha=lora_alpha, lr=lora_lr, epochs=lora_epochs,
                batch_size=lora_batch_size)
lm = run_lm_arm(split, seeds, lora, probe_max_new_tokens, answer_max_new_tokens, gen_batch_size, probe_test,
                device, progress)
lm_q = lm.questions.assign(arm="SmolLM2")
print(f"untuned model: {lm.info['certain_fraction']:.1%} of the tuning questions certain")
lm.train_probe.groupby("family")["certain"].agg(["mean", "size"]).T

# %%
lm_q[lm_q["seed"] == seeds[0]].groupby(["split", "method"]).head(4)[
    ["split", "method", "question", "gold", "answer", "correct", "confidence", "p_sure"]]

# %% [markdown]
# ## Arm 2: the controlled synthetic world
# Per seed: a new knowledge base, a tiny GPT-2 pretrained on the facts that are "in the corpus" (each with
# its own frequency), the knowledge split by its own greedy answers, vanilla and R-Tuning fine-tuning of
# all weights, and the same evaluation. ID = new subjects, tuned relations; OOD = new subjects, relations
# never seen in tuning.

# %%
world = WorldSpec(n_subjects=syn_subjects, n_relations=syn_relations, n_id_relations=syn_id_relations,
                  n_objects=syn_objects, zipf=syn_zipf, p_known=syn_p_known, n_train_subjects=syn_train_subjects)
tiny = TinySpec(d_model=syn_d_model, n_layers=syn_layers, n_heads=4, pretrain_steps=syn_pretrain_steps,
                pretrain_batch=syn_pretrain_batch, pretrain_lr=syn_pretrain_lr, tune_epochs=syn_tune_epochs,
                tune_batch=syn_tune_batch, tune_lr=syn_tune_lr)
syn_q, syn_info = run_arm(world, tiny, seeds, device, workers, progress)
syn_q = syn_q.assign(arm="synthetic")
syn_info

# %% [markdown]
# ## Per-seed metrics
# AP ranks each method by its own score (vanilla: answer confidence; R-Tuning: 0.5 confidence + 0.5
# p(sure)); refusal rate = share of questions with p(sure) <= 0.5; answered accuracy = accuracy where
# p(sure) > 0.5.

# %%
per_seed = pd.concat([per_seed_metrics(lm_q).assign(arm="SmolLM2"),
                      per_seed_metrics(syn_q).assign(arm="synthetic")], ignore_index=True)
summary = pd.concat([summary_table(lm_q).assign(arm="SmolLM2"), summary_table(syn_q).assign(arm="synthetic")],
                    ignore_index=True)
summary

# %% [markdown]
# ## Does the certainty track the untuned model's knowledge?
# AUROC of R-Tuning's p(sure) for "the untuned model answered this test question right" (SmolLM2: few-shot
# probe; synthetic: the pretrained model), and in the synthetic arm for "the fact was in the pretraining
# corpus". 0.5 = no information.

# %%
diag = []
for arm, q in (("SmolLM2", lm_q), ("synthetic", syn_q)):
    rt = q[q["method"] == "r_tuning"]
    for sp in ("id", "ood"):
        g = rt[rt["split"] == sp]
        row = {"arm": arm, "split": sp}
        if g["pretrained_correct"].notna().all():
            row["auroc_psure_untuned_correct"] = auroc(g["pretrained_correct"].astype(bool), g["p_sure"])
            row["untuned_accuracy"] = g["pretrained_correct"].astype(float).mean() * 1.0
        row["auroc_psure_tuned_correct"] = auroc(g["correct"], g["p_sure"])
        if "in_pretraining" in g:
            row["auroc_psure_in_corpus"] = auroc(g["in_pretraining"].astype(bool), g["p_sure"])
        diag.append(row)
diagnostics = pd.DataFrame(diag)
diagnostics

# %% [markdown]
# ## Did R-Tuning fit its certainty labels? (the gate)
# AUROC of each R-Tuning model's p(sure) for the *certain* label on its own training questions (the gold
# answer after the question, then the certainty question), per seed and arm; and the mean p(sure) of the
# certain and uncertain training questions (SmolLM2 arm).

# %%
lm_aurocs = train_aurocs(lm.train_fit)
syn_aurocs = dict(zip(syn_info["seed"], syn_info["train_auroc_p_sure"]))
train_fit = pd.DataFrame([{"arm": "SmolLM2", "seed": s, "train_auroc_p_sure": v} for s, v in lm_aurocs.items()]
                         + [{"arm": "synthetic", "seed": s, "train_auroc_p_sure": v} for s, v in syn_aurocs.items()])
print(lm.train_fit.groupby(["seed", "certain"])["p_sure"].mean().unstack())
train_fit

# %% [markdown]
# ## Verdicts

# %%
claims = evaluate_all(load_claims("r_tuning"), lm_q, lm_aurocs, syn_q, syn_aurocs, n_boot)
verdicts = pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
                          "ci_high": c.measured.ci_high, "gate": c.gate.passed,
                          "control": c.control.measured.value, "verdict": c.verdict, "reason": c.reason}
                         for c in claims.values()])
verdicts

# %% [markdown]
# ## Figures
# AP per seed (points) and mean (bars), and the precision-recall curves of the seed-pooled test answers.

# %%
LABELS = {"vanilla": "vanilla tuning", "r_tuning": "R-Tuning"}
plot = per_seed.assign(method=per_seed["method"].map(LABELS), split=per_seed["split"].str.upper())
g = sns.catplot(data=plot, x="split", y="ap", hue="method", col="arm", kind="bar", errorbar=None,
                hue_order=list(LABELS.values()), height=3.4, aspect=1.0, alpha=0.6)
for ax, arm in zip(g.axes.flat, g.col_names):
    sns.stripplot(data=plot[plot["arm"] == arm], x="split", y="ap", hue="method", dodge=True, ax=ax,
                  hue_order=list(LABELS.values()), legend=False, palette=dict.fromkeys(LABELS.values(), "k"),
                  size=4, jitter=False)  # no random jitter: the figure is byte-stable across reruns
g.set_axis_labels("test split", "average precision")
g.set_titles("{col_name}")
savefig(g.figure, out / "ap_by_method.png")

# %%
from sklearn.metrics import precision_recall_curve

curves = []
for arm, q in (("SmolLM2", lm_q), ("synthetic", syn_q)):
    for (sp, method), gq in q.groupby(["split", "method"]):
        if gq["correct"].any():
            score = ranking_score(method, gq["confidence"].to_numpy(), gq["p_sure"].to_numpy()
                                  if method == "r_tuning" else None)
            prec, rec, _ = precision_recall_curve(gq["correct"].astype(int), score)
            curves.append(pd.DataFrame({"arm": arm, "split": sp.upper(), "method": LABELS[method],
                                        "recall": rec, "precision": prec}))
pr = pd.concat(curves, ignore_index=True)
g = sns.relplot(data=pr, x="recall", y="precision", hue="method", row="arm", col="split", kind="line",
                drawstyle="steps-post", estimator=None, height=2.8, aspect=1.2, hue_order=list(LABELS.values()),
                facet_kws={"sharey": False})
g.set_titles("{row_name}, {col_name}")
savefig(g.figure, out / "pr_curves.png")

# %% [markdown]
# ## Write the results

# %%
per_seed.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
loss_curves = (lm.curves.assign(run=lm.curves["method"] + "_s" + lm.curves["seed"].astype(str))
               .pivot(index="step", columns="run", values="loss").reset_index())
loss_curves.to_csv(out / "lm_loss_curves.csv", index=False, float_format="%.6g")
lm_q.drop(columns=["arm"]).to_csv(out / "lm_answers.csv", index=False, float_format="%.6g")
lm.train_probe.to_csv(out / "knowledge_split.csv", index=False)
diagnostics.to_csv(out / "certainty_diagnostics.csv", index=False, float_format="%.6g")
train_fit.to_csv(out / "train_fit.csv", index=False, float_format="%.6g")

headline = {}
for r in summary.itertuples():
    key = f"{'lm' if r.arm == 'SmolLM2' else 'syn'}_{r.split}_{r.method}"
    headline[f"{key}_ap"] = r.ap
    headline[f"{key}_accuracy"] = r.accuracy
    if r.method == "r_tuning":
        headline[f"{key}_refusal_rate"] = r.refusal_rate
for r in diagnostics.itertuples():
    key = f"{'lm' if r.arm == 'SmolLM2' else 'syn'}_{r.split}"
    headline[f"{key}_auroc_psure_tuned_correct"] = r.auroc_psure_tuned_correct
    if "auroc_psure_untuned_correct" in diagnostics and pd.notna(r.auroc_psure_untuned_correct):
        headline[f"{key}_auroc_psure_untuned_correct"] = r.auroc_psure_untuned_correct
        headline[f"{key}_untuned_accuracy"] = r.untuned_accuracy
headline["lm_train_certain_fraction"] = lm.info["certain_fraction"]
headline["syn_train_certain_fraction"] = float(syn_info["certain_fraction"].mean())
for arm, g in train_fit.groupby("arm"):
    headline[f"{'lm' if arm == 'SmolLM2' else 'syn'}_min_train_auroc_p_sure"] = float(g["train_auroc_p_sure"].min())
for (arm, sp), g in pd.concat([per_seed_metrics(lm_q, "confidence").assign(arm="lm"),
                               per_seed_metrics(syn_q, "confidence").assign(arm="syn")]).groupby(["arm", "split"]):
    headline[f"{arm}_{sp}_r_tuning_ap_confidence_only"] = float(g[g["method"] == "r_tuning"]["ap"].mean())
write_metrics(out, slug="r_tuning", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "r_tuning"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
