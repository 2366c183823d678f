# %% [markdown]
# # Robust and Scalable Model Editing for Large Language Models (EREN): replication
#
# Chen, Zhang, Han, Xiao, Liu, Chen, Li, Yang, Sun (LREC-COLING 2024),
# [arXiv:2403.17431](https://arxiv.org/abs/2403.17431). Authors' code: thunlp/EREN.
#
# **EREN** ("Edit models by REading Notes") stores every edit as a plain-text note. For a question, a
# retriever fetches the most similar notes from the whole memory and an instruction-tuned LM reads them with
# a prompt that allows the answer "unanswerable"; if the LM says so, EREN answers closed-book instead, so
# questions the notes do not cover keep the model's own behaviour. The paper reports that this beats
# parameter-editing methods and fine-tuning "by a large margin" on **CounterFact-Hard** (CFH), whose
# unrelated questions include hard ones about the *same subject* as an edit.
#
# Here the reader is SmolLM2-135M-Instruct (instead of flan-t5-xl) and the retriever all-MiniLM-L6-v2
# (instead of Contriever). Four editors answer the same questions: the unedited model, one-step MRC (always
# answer from the notes), EREN, and fine-tuning (LoRA on the edits); a fifth, EREN with its refusal decisions
# permuted among the questions, is the falsification control. Metrics: edit success ES on in-scope questions;
# behaviour preservation on unrelated questions, exact (BP: output identical to the unedited model's, the
# paper's definition) and answer-level (BP_ans: no edit's new answer leaked into the answer); their harmonic
# means EQ and EQ_ans. The claims, gates, controls and criteria are registered in `claims.yaml` before any
# run; the verdicts come from the shared rule (`shared.claims`).

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/eren (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
seeds: list[int] = [0, 1, 2]  # evaluation seeds; seed s evaluates block s of a fixed shuffle of the edits | len(x) >= 1 and len(set(x)) == len(x) and min(x) >= 0
n_edits: int = 64  # edits evaluated per seed (828 CFH edits have all three question kinds) | x >= 1 and (max(seeds) + 1) * x <= 828
n_scope: int = 1  # in-scope questions per edit (paraphrases; CFH has up to 3) | 1 <= x <= 3
n_neighbor: int = 1  # unrelated questions about neighbouring subjects per edit (CFH has 10) | 1 <= x <= 10
n_same: int = 1  # unrelated questions about the same subject per edit (CFH has up to 15) | 1 <= x <= 15
memory_size: int = 1024  # notes in EREN's memory: the evaluated edits plus others (1024 = every CFH edit) | len(seeds) * n_edits <= x <= 1024
top_k: int = 1  # notes retrieved per question | 1 <= x <= min(memory_size, 10)
max_new_tokens: int = 20  # greedy decoding limit (authors' max_length = 20) | 1 <= x <= 64
batch_size: int = 16  # generation and scoring batch size | x >= 1
lora_r: int = 8  # LoRA rank of the fine-tuning editor | x >= 1
lora_alpha: float = 16.0  # LoRA alpha | x > 0
ft_lr: float = 0.001  # AdamW learning rate of the fine-tuning editor (constant) | 0 < x < 1
ft_epochs: int = 5  # passes over the seed's edits | x >= 1
ft_batch_size: int = 8  # edits per fine-tuning step | x >= 1
ft_top_blocks: int = 8  # the fine-tuning editor's LoRA is on the top blocks only (lower ones frozen, cached) | 1 <= x <= 30
n_boot: int = 2000  # bootstrap replicates for the intervals | x >= 100

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from papers.eren import TITLE, URL
from papers.eren import analysis as A
from papers.eren.data import build_questions, edit_block, eligible_edits, load_cfh
from papers.eren.experiment import Settings, build_memory, memory_records, run_seed
from shared.claims import load_claims
from shared.data import require
from shared.device import pick_device
from shared.lm import load_minilm, load_smollm2
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme
from shared.seeding import seed_everything

set_theme()
device = pick_device(device)
out = resolve_output_dir(output_dir, "eren")
seed_everything(0)
print(f"profile={profile} device={device} torch threads={torch.get_num_threads()} output={out}")

# %% [markdown]
# ## CounterFact-Hard
# Each edit has a statement (stored as a note), in-scope questions with the new answer, and unrelated
# questions about neighbouring subjects (same relation) and about the same subject (other relations).
# Seed `s` evaluates block `s` of a fixed shuffle of the eligible edits, so the seeds use disjoint edits.

# %%
records = load_cfh(require("eren", "cfh_filtered.json"))
eligible = eligible_edits(records)
edit_ids = {s: [eligible[j] for j in edit_block(len(eligible), s, n_edits)] for s in seeds}
questions = {s: build_questions(records, edit_ids[s], n_scope, n_neighbor, n_same, s) for s in seeds}
print(f"{len(records)} edits, {len(eligible)} with all three question kinds")
pd.concat(questions.values()).groupby(["seed", "kind"]).size().unstack()

# %%
example = records[edit_ids[seeds[0]][0]]
pd.DataFrame([{"field": "edit statement (note)", "text": example["edit_statement"]}]
             + [{"field": f"in-scope -> {a}", "text": q} for q, a in example["edit_scope"][:n_scope]]
             + [{"field": "neighbour subject", "text": q} for q in example["unrelated"]["neighbor_subj"][:2]]
             + [{"field": "same subject", "text": q} for q in example["unrelated"]["same_subj"][:2]])

# %% [markdown]
# ## Models and the note memory
# The memory holds `memory_size` notes (all 1,024 CFH edits at `small`), embedded once with MiniLM.
# The fine-tuning editor learns, for each of its seed's edits, the first in-scope question answered with the
# edit statement (the authors' FT baseline trains on the first in-scope pair).

# %%
t0 = time.perf_counter()
model, tok = load_smollm2(device)
encoder, enc_tok = load_minilm(device)
all_evaluated = sorted({i for s in seeds for i in edit_ids[s]})
memory = build_memory(encoder, enc_tok, records, memory_records(len(records), all_evaluated, memory_size))
ft_answers = {int(r["id"]): (r["edit_scope"][0][0], r["edit_statement"]) for r in records if r["edit_scope"]}
edit_answers = {int(r["id"]): r["edit_scope"][0][1] for r in records if r["edit_scope"]}
settings = Settings(top_k=top_k, max_new_tokens=max_new_tokens, batch_size=batch_size, lora_r=lora_r,
                    lora_alpha=lora_alpha, ft_lr=ft_lr, ft_epochs=ft_epochs, ft_batch_size=ft_batch_size,
                    ft_top_blocks=ft_top_blocks)
print(f"models and {len(memory.notes)}-note memory ready in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Evaluate every editor on every seed

# %%
parts, curves, timings = [], [], []
for s in seeds:
    res, curve, tim = run_seed(model, tok, encoder, enc_tok, memory, questions[s], ft_answers, edit_answers,
                               settings, s, device, progress)
    parts.append(res)
    curves.append(curve)
    timings.append({"seed": s, **tim})
results = pd.concat(parts, ignore_index=True)
ft_curve = pd.concat(curves, ignore_index=True)
pd.DataFrame(timings).round(1)

# %% [markdown]
# ## Edit success, behaviour preservation, edit quality
# Pooled over all seeds, with 95% seed-stratified bootstrap intervals over edits.

# %%
METHODS = ["unedited", "one_step", "eren", "ft", "eren_permuted"]
COLUMNS = ["es", "bp", "bp_neighbor", "bp_same", "eq", "bp_ans", "bp_ans_neighbor", "bp_ans_same", "eq_ans",
           "refusal_scope", "refusal_unrelated"]
metrics = A.method_metrics(results).set_index("method").loc[METHODS, COLUMNS]
boot = A.bootstrap_metrics(results, n_boot=n_boot, seed=0)
table = metrics.copy()
for col in COLUMNS:
    table[f"{col}_ci"] = [
        "[{:.2f}, {:.2f}]".format(*A.interval(boot[m][col])) for m in table.index]
table.round(3)

# %%
A.per_seed_metrics(results).pivot(index="seed", columns="method", values="eq_ans").round(3)

# %% [markdown]
# ## What the reader does
# EREN's robustness rests on the reader answering "unanswerable" when the note does not cover the question.
# How often does it, per question kind, by the log-probability decision and by the generated text? Does the
# retriever return the edit's own note? How often does an edit's new answer leak into the answer to an
# unrelated question (present in the editor's answer, absent from the unedited one)? Diagnostics.

# %%
eren_rows = results[results["method"] == "eren"]
diag = eren_rows.assign(lp_margin=eren_rows["lp_refuse"] - eren_rows["lp_reply"]).groupby("kind").agg(
    questions=("score", "size"), refusal_rate=("refused", "mean"), refusal_rate_text=("refused_text", "mean"),
    median_lp_margin=("lp_margin", "median"), gold_note_retrieved=("retrieved_gold", "mean"))
diag = diag.loc[["scope", "neighbor_subj", "same_subj"]]
ft_scope = results[(results["method"] == "ft") & (results["kind"] == "scope")]
ft_fit = ft_scope.groupby("ft_trained")["score"].mean().rename({1: "trained question", 0: "paraphrase"})
unrelated = results[(results["kind"] != "scope") & (results["method"] != "unedited")]
leak = unrelated.pivot_table(index="kind", columns="method", values="leak", aggfunc="mean")
display(diag.round(3))
display(leak.round(3).rename(columns=lambda m: f"leak rate, {m}"))
display(ft_fit.to_frame("FT edit success").round(3))

# %%
keys = ["seed", "edit_id", "kind", "question"]
ref = results[results["method"] == "unedited"][keys + ["output"]].rename(columns={"output": "unedited_output"})
examples = (eren_rows.merge(ref, on=keys).groupby("kind").head(3)
            [["kind", "question", "context", "unedited_output", "step1_output", "score"]])
examples

# %% [markdown]
# ## Verdicts

# %%
claims = A.evaluate_all(load_claims("eren"), results, n_boot=n_boot)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "gate": None if c.gate is None else c.gate.passed,
               "control": None if c.control is None else c.control.measured.value, "verdict": c.verdict}
              for c in claims.values()])

# %% [markdown]
# ## Figure: ES, BP and EQ per editor
# Bars: pooled values; error bars: 95% bootstrap intervals over edits (seed-stratified).

# %%
labels = {"es": "ES (in-scope)", "bp": "BP (exact)", "eq": "EQ", "bp_ans_neighbor": "BP_ans neighbour",
          "bp_ans_same": "BP_ans same subj.", "eq_ans": "EQ_ans"}
names = {"unedited": "unedited", "one_step": "one-step MRC", "eren": "EREN", "ft": "FT (LoRA)",
         "eren_permuted": "EREN, permuted refusals"}
plot_rows = []
for m in names:
    for col, label in labels.items():
        lo, hi = A.interval(boot[m][col])
        plot_rows.append({"editor": names[m], "metric": label, "value": metrics.loc[m, col], "lo": lo, "hi": hi})
plot_df = pd.DataFrame(plot_rows)
fig, ax = plt.subplots(figsize=(10, 3.8))
sns.barplot(data=plot_df, x="metric", y="value", hue="editor", ax=ax, errorbar=None)
for bar_group, editor in zip(ax.containers, names.values()):
    sub = plot_df[plot_df["editor"] == editor].set_index("metric").loc[list(labels.values())]
    x = [b.get_x() + b.get_width() / 2 for b in bar_group]
    ax.errorbar(x, sub["value"], yerr=[sub["value"] - sub["lo"], sub["hi"] - sub["value"]], fmt="none",
                ecolor="black", capsize=2, lw=0.8)
ax.set(ylim=(0, 1.05), xlabel="", ylabel="rate",
       title=f"CounterFact-Hard, SmolLM2-135M reader, {len(memory.notes)} notes, k={top_k}")
ax.legend(ncol=5, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.12))
savefig(fig, out / "edit_metrics.png")

# %%
table.reset_index().to_csv(out / "method_metrics.csv", index=False)
results.drop(columns=["context"]).to_csv(out / "questions.csv", index=False)
ft_curve[["seed", "step", "loss"]].to_csv(out / "ft_curve.csv", index=False)
headline = {f"{m}_{col}": float(metrics.loc[m, col]) for m in metrics.index
            for col in ("es", "bp", "eq", "bp_ans", "eq_ans")}
headline.update({
    "eren_refusal_rate_scope": float(diag.loc["scope", "refusal_rate"]),
    "eren_refusal_rate_unrelated": float(eren_rows[eren_rows["kind"] != "scope"]["refused"].mean()),
    "eren_text_refusal_rate_unrelated": float(eren_rows[eren_rows["kind"] != "scope"]["refused_text"].mean()),
    "retrieval_recall_scope": float(diag.loc["scope", "gold_note_retrieved"]),
    "retrieval_own_note_same_subject": float(diag.loc["same_subj", "gold_note_retrieved"]),
    "n_questions": int(len(results) // len(METHODS)),
    "memory_notes": len(memory.notes),
})
write_metrics(out, slug="eren", title=TITLE, url=URL, profile=profile, device=device, seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "eren"))
