# %% [markdown]
# # Mission: Impossible Language Models: replication
#
# Kallini, Papadimitriou, Futrell, Mahowald, Potts (ACL 2024), [arXiv:2401.06416](https://arxiv.org/abs/2401.06416).
#
# **The question.** Can a GPT-2 learn a humanly impossible language as easily as English? The paper builds
# "impossible languages" by perturbing English sentences, each a deterministic, documented function of the
# token sequence: three families, each with a control that keeps English word order.
#
# - *Shuffle: NoShuffle (control), NondeterministicShuffle (fresh random order per sentence),
#   DeterministicShuffle(s) (a fixed permutation for each sentence length), LocalShuffle(w) (a fixed
#   permutation inside windows of w tokens), EvenOddShuffle (even positions, then odd positions).
# - *Reverse: a marker R at a random position; NoReverse (control), PartialReverse (the rest of the
#   sentence reversed after R), FullReverse (the whole sentence reversed).
# - *Hop: 3rd-person-singular present verbs are lemmatised and a marker S carries the agreement: right after
#   the verb (NoHop, control), 4 tokens later (TokenHop) or 4 words later (WordHop).
#
# A GPT-2 is trained from scratch on each language with several seeds; Experiment 1 tracks held-out
# perplexity over training, Experiment 2 the surprisal of the *Hop marker. Here the models are tiny and the
# corpus is two of BabyLM's kinds of text that we have offline (child-directed speech from AO-CHILDES and
# Shakespeare's plays). The claims, their gates and controls are registered in `claims.yaml` before any
# result; this notebook measures each claim's statistic and `shared.claims` decides the verdict.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner)
output_dir: str = ""  # where outputs go; empty = scratch/impossible_languages (set by the runner)
progress: bool = True  # show progress bars (set by the runner)
shuffle_languages: list[str] = ["no_shuffle", "nondeterministic_shuffle", "deterministic_shuffle_s21", "local_shuffle_w3", "even_odd_shuffle"]  # *Shuffle languages to train | len(set(x)) == len(x) and all(v in ("no_shuffle", "nondeterministic_shuffle", "deterministic_shuffle_s21", "deterministic_shuffle_s57", "deterministic_shuffle_s84", "local_shuffle_w3", "local_shuffle_w5", "local_shuffle_w10", "even_odd_shuffle") for v in x)
reverse_languages: list[str] = ["no_reverse", "partial_reverse", "full_reverse"]  # *Reverse languages to train | len(set(x)) == len(x) and all(v in ("no_reverse", "partial_reverse", "full_reverse") for v in x)
hop_languages: list[str] = ["no_hop", "token_hop", "word_hop"]  # *Hop languages to train (AO-CHILDES genre only) | len(set(x)) == len(x) and all(v in ("no_hop", "token_hop", "word_hop") for v in x)
genres: list[str] = ["aochildes", "tinyshakespeare"]  # English genres of the *Shuffle and *Reverse corpus | len(x) >= 1 and len(set(x)) == len(x) and all(g in ("aochildes", "tinyshakespeare") for g in x)
corpus_fraction: float = 1.0  # fraction of the AO-CHILDES transcripts and of the Shakespeare text used | 0 < x <= 1
seeds: list[int] = [0, 1, 2]  # evaluation seeds: one model per language and seed | len(x) >= 1 and len(set(x)) == len(x)
vocab_size: int = 2048  # BPE vocabulary (special tokens included) | 256 + 3 <= x <= 50000
context: int = 64  # model positions = training block length; sentences over context - 2 tokens are dropped (room for <eos> and R) | 8 <= x <= 1024
d_model: int = 64  # GPT-2 width | x >= 8 and x % n_heads == 0
n_layers: int = 2  # GPT-2 layers | 1 <= x <= 24
n_heads: int = 4  # attention heads | x >= 1
steps: int = 250  # optimisation steps per model | x >= 1
batch_size: int = 16  # blocks of `context` tokens per step | x >= 1
lr: float = 0.003  # AdamW peak learning rate (linear warmup, cosine decay to 10%) | 0 < x < 1
warmup_steps: int = 25  # linear warmup steps | 0 <= x < steps
weight_decay: float = 0.1  # AdamW weight decay on matrices | 0 <= x < 1
n_evals: int = 5  # evaluated checkpoints, evenly spaced, the last at the final step | 1 <= x <= steps
n_test_per_genre: int = 400  # held-out sentences per genre (the paper: 1,000 per BabyLM genre) | x >= 10
n_test_hop: int = 500  # held-out affected *Hop sentences (fewer when fewer are available) | x >= 10
cpu_threads: int = 1  # torch CPU threads: one is as fast for these tiny models and robust to a shared CPU | x >= 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from papers.impossible_languages import TITLE, URL
from papers.impossible_languages.analysis import evaluate_claims, final_checkpoint, gap_table, language_summary
from papers.impossible_languages.corpus import build_corpus, corpus_summary, language_data
from papers.impossible_languages.experiment import ModelSpec, RunSpec, run_grid, unigram_bits, unigram_log_ppl
from papers.impossible_languages.perturbations import CONTROLS, LANGUAGES
from shared.claims import load_claims
from shared.data import require
from shared.device import pick_device
from shared.metrics import write_metrics
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
device = pick_device(device)
torch.set_num_threads(cpu_threads)
out = resolve_output_dir(output_dir, "impossible_languages")
languages = shuffle_languages + reverse_languages + hop_languages
if not languages:
    raise ValueError("no language to train: shuffle_languages, reverse_languages and hop_languages are all empty")
eval_every = max(1, steps // n_evals)
print(f"profile={profile} device={device} languages={len(languages)} seeds={seeds} output={out}")

# %% [markdown]
# ## The corpus
# AO-CHILDES adult utterances (split by transcript) and Tiny Shakespeare sentences (the last 10% held out).
# A byte-level BPE tokenizer is trained on the training split. The *Hop languages need the 3rd-person-singular
# present verbs: they are read off the CHILDES %mor tier, so the *Hop corpus is the AO-CHILDES genre alone
# (see `corpus.py` for the rule and its limits).

# %%
corpus = build_corpus(require("aochildes"), require("tinyshakespeare", "input.txt"), vocab_size=vocab_size,
                      max_tokens=context - 2, corpus_fraction=corpus_fraction)
sizes = pd.DataFrame(corpus_summary(corpus)).T
sizes.loc["total"] = sizes.sum()
print(f"*Hop corpus: {corpus.stats['hop']}")
sizes

# %% [markdown]
# What the languages look like: one held-out sentence of each (decoded; `<R>`, `<S>` are the markers).

# %%
datasets = {lang: language_data(corpus, lang, n_test_per_genre, n_test_hop, genres) for lang in languages}


def show(tokens):
    return corpus.tokenizer.decode(tokens, skip_special_tokens=False).strip()


example = {lang: show(d.test[1]) for lang, d in datasets.items()}
pd.DataFrame({"language": [LANGUAGES[k].name for k in example], "held-out sentence": list(example.values()),
              "training tokens": [len(datasets[k].train_stream) for k in example],
              "test sentences": [len(datasets[k].test) for k in example]})

# %% [markdown]
# The order-blind control: a unigram model of each language's training stream, scored like the GPT-2s
# (whole sentence with its closing `<eos>`). It does not depend on word order, so its gaps between the
# languages of a family are 0 up to the reversal marker's frequency: any convention that favoured one order
# would show here. For *Hop, the marker's unigram surprisal is the reference of the hop gate.

# %%
unigram = {lang: unigram_log_ppl(d.train_stream, d.test, corpus.eos, corpus.vocab_size) for lang, d in datasets.items()}
marker_unigram_bits = {lang: unigram_bits(d.train_stream, d.marker, corpus.vocab_size)
                       for lang, d in datasets.items() if d.marker is not None}
pd.DataFrame({"unigram perplexity": {LANGUAGES[k].name: np.exp(v) for k, v in unigram.items()}})

# %% [markdown]
# ## Train one GPT-2 per language and seed
# Every model of a family starts from the same weights for a given seed and sees its training blocks in the
# same order; each is evaluated on its own language's held-out sentences as initialised (step 0, the
# random-init control) and at evenly spaced checkpoints.

# %%
spec = ModelSpec(d_model=d_model, n_layers=n_layers, n_heads=n_heads, context=context)
run = RunSpec(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay,
              eval_every=eval_every)
curves, n_parameters = run_grid(datasets, spec, run, corpus.vocab_size, corpus.eos, seeds, device, progress)
curves["perplexity"] = np.exp(curves["log_ppl"])
final = final_checkpoint(curves)
summary = language_summary(final)
summary["unigram_perplexity"] = summary["language"].map(lambda k: float(np.exp(unigram[k])))
print(f"GPT-2: {n_parameters:,} parameters; {steps} steps x {batch_size} x {context} tokens")
summary

# %% [markdown]
# ## Verdicts

# %%
claims = evaluate_claims(load_claims("impossible_languages"), curves, unigram, marker_unigram_bits)
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low,
               "ci_high": c.measured.ci_high, "unit": c.measured.unit, "gate": c.gate.passed,
               "control": c.control.measured.value, "verdict": c.verdict, "reason": c.reason}
              for c in claims.values()])

# %% [markdown]
# Every paired gap against the family's control (ln perplexity ratio; *Hop also in surprisal difference):

# %%
pairs = [(lang, CONTROLS[LANGUAGES[lang].family]) for lang in languages
         if lang != CONTROLS[LANGUAGES[lang].family] and CONTROLS[LANGUAGES[lang].family] in languages]
hop_pairs = [(a, b) for a, b in pairs if LANGUAGES[a].family == "hop"]
gaps = pd.concat([gap_table(final, pairs)]
                 + ([gap_table(final, hop_pairs, "surprisal_difference")] if hop_pairs else []))
gaps

# %% [markdown]
# **Sensitivity to the scoring convention** (reported, decides nothing). The statistic of record scores the
# whole sentence: its first token given the `<eos>` that precedes it, and the closing `<eos>`. For a perfect
# model that score does not depend on the reading direction (chain rule over the same boundary-delimited
# tokens); dropping a boundary token does. The same gaps with the closing `<eos>` unscored (the v1
# statistic: a reversed sentence is spared its hard end, English only its easy one) and with the first
# token unscored as well (the authors' GPT-2 without BOS):

# %%
sensitivity = pd.concat([gap_table(final, pairs, "log_ppl_no_end"), gap_table(final, pairs, "log_ppl_first_unscored")])
sensitivity

# %% [markdown]
# ## Figure: perplexity over training (the paper's Fig. 2 layout) and the *Hop marker surprisals (Fig. 3)

# %%
families = [f for f in ("shuffle", "reverse", "hop") if (curves["family"] == f).any()]
fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 4.2), squeeze=False)
for ax, family in zip(axes[0], families):
    sub = curves[curves["family"] == family].assign(language=lambda d: d["language"].map(lambda k: LANGUAGES[k].name))
    sns.lineplot(data=sub, x="step", y="perplexity", hue="language", marker="o", errorbar=("ci", 95), seed=0,
                 ax=ax)
    ax.set(yscale="log", title=f"*{family.capitalize()}", xlabel="training step",
           ylabel="geometric-mean perplexity (held-out)")
    ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, out / "perplexity_curves.png")

# %%
hop_curves = curves[curves["family"] == "hop"]
if not hop_curves.empty:
    long = hop_curves.melt(id_vars=["language", "seed", "step"], value_vars=["marker_surprisal", "surprisal_difference"],
                           var_name="statistic", value_name="bits")
    long["language"] = long["language"].map(lambda k: LANGUAGES[k].name)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for ax, stat, title in zip(axes, ["marker_surprisal", "surprisal_difference"],
                               ["marker surprisal (lower: marker expected)",
                                "surprisal difference (higher: marker preferred)"]):
        sns.lineplot(data=long[long["statistic"] == stat], x="step", y="bits", hue="language", marker="o",
                     errorbar=("ci", 95), seed=0, ax=ax)
        ax.set(title=title, xlabel="training step")
    axes[1].axhline(0, color="grey", lw=0.8)
    fig.tight_layout()
    savefig(fig, out / "hop_surprisal.png")

# %% [markdown]
# ## Write the results

# %%
curves.to_csv(out / "curves_per_seed.csv", index=False, float_format="%.6g")
(curves.groupby(["step", "language"])["perplexity"].mean().unstack("language").reset_index()
 .to_csv(out / "perplexity_curves.csv", index=False, float_format="%.6g"))
final.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
summary.to_csv(out / "final_by_language.csv", index=False, float_format="%.6g")

headline = {f"{r.language}_perplexity": r.perplexity for r in summary.itertuples()}
headline.update({f"{r.language}_unigram_perplexity": r.unigram_perplexity for r in summary.itertuples()})
suffix = {"log_ppl_no_end": "end_unscored", "log_ppl_first_unscored": "first_and_end_unscored"}
headline.update({f"{r.minuend}_minus_{r.subtrahend}_ln_ppl_gap_{suffix[r.metric]}": r.mean
                 for r in sensitivity.itertuples()})
if "surprisal_difference" in summary:
    headline.update({f"{r.language}_surprisal_difference_bits": r.surprisal_difference
                     for r in summary.itertuples() if not pd.isna(r.surprisal_difference)})
headline.update({"train_words_shuffle_reverse": int(sizes.loc[genres, "train_words"].sum()),
                 "train_sentences_hop": corpus.stats["hop"]["train"]["sentences"],
                 "model_parameters": n_parameters})
write_metrics(out, slug="impossible_languages", title=TITLE, url=URL, profile=profile, device=device,
              seeds=seeds, claims=list(claims.values()), headline=headline,
              params=snapshot(globals(), "impossible_languages"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason}; {c.detail})")
