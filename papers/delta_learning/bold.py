"""Exp C: the paper's bold-section warm-up (Sec. 2) in miniature, on SmolLM2-135M-Instruct (GPU ``full`` profile).

The paper (Sec. 2, "A warm-up case study"; authors' configs/dpo/exp_num_sections/*) tunes
Llama-3.2-3B-Instruct with length-normalised DPO (``dpo_norm``, beta 5) on pairs whose chosen response has 3
bold section headers and whose rejected response has 2, and finds that the tuned model writes *more*
sections than any training response; SFT on the 3-section responses does not extrapolate, reversing the
pairs (2 > 3) reverses the direction and equal-section pairs change little.

Here (reduced design, see the README):

- prompts: a template bank of generic requests generated in code (:func:`template_bank`); the subjects of
  the held-out prompts never occur in the training prompts;
- responses: SmolLM2's own greedy answers, stripped of markdown and rewritten to exactly ``k`` bold
  section headers over the same sentences (:func:`reformat`), so chosen and rejected differ only in the
  number of headers;
- arms, each from the same starting model (also the DPO reference): ``dpo_3v2`` (3 > 2), ``dpo_2v3``
  (2 > 3), ``dpo_3v3`` (3 = 3: the same 3 sections, headers taken from the section's words over generic
  "Part j" headers: a delta that is not a number of sections), ``dpo_3v2_rerun`` (3 > 2 in another data
  order: A/A), ``sft_3`` (SFT on the 3-section responses);
- metric: the mean number of bold section headers (:func:`count_sections`) of greedy answers to held-out
  prompts.

The DPO loss is ``ladder.dpo_norm_loss``; the loop is ``shared.training.train``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np
import torch

from papers.delta_learning.ladder import (_epoch_batches, _tune_config, dpo_batch_loss, dpo_norm_loss,
                                         mean_response_logprob)
from shared.device import autocast_dtype
from shared.lm import causal_lm_loss, chat_prompt, generate_text, tiny_llama
from shared.seeding import seed_everything, torch_generator
from shared.training import train

ARMS = ("dpo_3v2", "dpo_2v3", "dpo_3v3", "dpo_3v2_rerun", "sft_3")
RERUN_SEED_OFFSET = 1000  # dpo_3v2_rerun: the same pairs and settings in another data order (A/A control)

# --- the template bank ---------------------------------------------------------------------------------

TEMPLATES = (
    "Explain {s}.",
    "What are the main benefits of {s}?",
    "Give me practical advice about {s}.",
    "Describe the history of {s}.",
    "What should a person know before getting into {s}?",
    "What are common mistakes people make with {s}?",
    "Summarize the most important facts about {s}.",
    "How can someone get better at {s}?",
    "What are the pros and cons of {s}?",
    "Write a short guide to {s}.",
    "Why is {s} important today?",
    "How has {s} changed over the last fifty years?",
    "What are the biggest challenges in {s}?",
    "Compare different approaches to {s}.",
    "What tools or resources help with {s}?",
    "Tell me something surprising about {s}.",
)
AUDIENCES = ("", " Keep it simple.", " Write for a beginner.", " Write for a busy professional.",
             " Write for a high-school student.")
SUBJECTS = (
    "gardening", "solar energy", "public libraries", "personal budgeting", "learning a new language",
    "home cooking", "running", "urban cycling", "birdwatching", "photography", "recycling", "beekeeping",
    "chess", "volunteering", "remote work", "public speaking", "baking bread", "camping", "meditation",
    "time management", "composting", "woodworking", "train travel", "saving for retirement", "swimming",
    "journaling", "houseplants", "learning to code", "playing the guitar", "hiking", "first aid",
    "healthy sleep", "job interviews", "renting an apartment", "raising a puppy", "electric cars",
    "board games", "museum visits", "knitting", "drinking water safety", "weather forecasting", "tea",
    "city parks", "online privacy", "yoga", "rock climbing", "painting with watercolors", "vaccines",
    "fishing", "making friends as an adult", "small business ownership", "reading novels", "pottery",
    "space exploration", "wind power", "organizing a closet", "writing letters", "learning history",
    "caring for elderly parents", "street food",
)
HELDOUT_EVERY = 5  # every 5th subject (in the order above) is held out: 12 of 60 subjects


def template_bank() -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): every template x subject x audience, each list in a fixed
    shuffled order (independent of any run seed). Held-out prompts use subjects that never occur in the
    training prompts. 16 x 48 x 5 = 3840 training and 16 x 12 x 5 = 960 held-out prompts."""
    out = []
    for heldout in (False, True):
        subjects = [s for i, s in enumerate(SUBJECTS) if (i % HELDOUT_EVERY == HELDOUT_EVERY - 1) == heldout]
        prompts = [t.format(s=s) + a for s in subjects for t in TEMPLATES for a in AUDIENCES]
        order = np.random.default_rng(20250708 + heldout).permutation(len(prompts))
        out.append([prompts[i] for i in order])
    return out[0], out[1]


# --- sections: counting and rewriting -----------------------------------------------------------------

# A bold section header: a line that is one bold span (optionally after markdown '#'s, optionally ending
# with a colon). Inline bold inside a sentence, or a bold lead-in followed by text, is not a header.
HEADER_RE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*)?\*\*(?=\S)([^*\n]+?)\*\*[ \t]*:?[ \t]*$", re.MULTILINE)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
_LINE_MARKUP_RE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|[-*+][ \t]+|\d+[.)][ \t]+)", re.MULTILINE)


def count_sections(text: str) -> int:
    """Number of bold section headers in ``text`` (lines that are a single ``**bold**`` span)."""
    return len(HEADER_RE.findall(text))


def plain_text(text: str) -> str:
    """``text`` without markdown: its own bold header lines dropped (structure, not content), then heading
    marks, list markers and bold markers removed; one line, single spaces."""
    text = HEADER_RE.sub("", text)
    text = _LINE_MARKUP_RE.sub("", text)
    text = text.replace("**", "").replace("__", "")
    return " ".join(text.split())


def split_units(text: str, k: int) -> tuple[list[str], bool]:
    """The sentences of ``plain_text(text)`` and whether there are at least ``k`` of them; with fewer,
    the words instead (so any text of >= ``k`` words can carry ``k`` sections)."""
    plain = plain_text(text)
    sentences = [s for s in _SENTENCE_RE.split(plain) if s]
    if len(sentences) >= k:
        return sentences, True
    return plain.split(), False


def _title(group: list[str], n_words: int = 4) -> str:
    words = [re.sub(r"[^\w'-]", "", w) for w in " ".join(group).split()]
    words = [w for w in words if w][:n_words]
    return " ".join(words).capitalize() if words else "Section"


def reformat(text: str, k: int, generic_headers: bool = False) -> str:
    """The content of ``text`` rewritten with exactly ``k`` bold section headers: the sentences (or words,
    see :func:`split_units`) cut into ``k`` contiguous, near-equal groups, each preceded by a header line
    ``**<its first words>**`` (``**Part j**`` with ``generic_headers``). Raises ValueError when the text has
    fewer than ``k`` words."""
    units, _ = split_units(text, k)
    if len(units) < k:
        raise ValueError(f"cannot make {k} sections from {len(units)} words")
    bounds = np.linspace(0, len(units), k + 1).round().astype(int)
    groups = [units[bounds[j]:bounds[j + 1]] for j in range(k)]
    blocks = [f"**{'Part ' + str(j + 1) if generic_headers else _title(g)}**\n{' '.join(g)}"
              for j, g in enumerate(groups)]
    return "\n\n".join(blocks)


def body_text(text: str) -> str:
    """The text without its header lines, as one line (for checking that content is preserved)."""
    return " ".join(HEADER_RE.sub("", text).split())


# --- pairs ---------------------------------------------------------------------------------------------

@dataclass
class BoldPairs:
    """Per prompt: the 3-section and 2-section rewrites of one response, and the 3-section rewrite with
    generic headers (the rejected side of the 3 = 3 control)."""
    prompts: list[str]
    three: list[str]
    two: list[str]
    three_generic: list[str]

    def oriented(self, arm: str) -> tuple[list[str], list[str]]:
        """(chosen, rejected) texts of a DPO arm."""
        if arm in ("dpo_3v2", "dpo_3v2_rerun"):
            return self.three, self.two
        if arm == "dpo_2v3":
            return self.two, self.three
        if arm == "dpo_3v3":
            return self.three, self.three_generic
        raise ValueError(f"not a DPO arm: {arm!r}")

    def subset(self, idx) -> "BoldPairs":
        return BoldPairs(*[[getattr(self, f)[i] for i in idx] for f in ("prompts", "three", "two", "three_generic")])


def make_pairs(prompts: list[str], responses: list[str]) -> tuple[BoldPairs, dict]:
    """Pairs from responses with at least 3 words; facts: how many responses were usable and how many had
    at least 3 sentences (no word-level fallback) and their own section count before rewriting."""
    keep = [i for i, r in enumerate(responses) if len(plain_text(r).split()) >= 3]
    sentences_ok = [split_units(responses[i], 3)[1] for i in keep]
    pairs = BoldPairs([prompts[i] for i in keep], [reformat(responses[i], 3) for i in keep],
                      [reformat(responses[i], 2) for i in keep],
                      [reformat(responses[i], 3, generic_headers=True) for i in keep])
    facts = {"responses": len(responses), "usable": len(keep),
             "sentence_split": float(np.mean(sentences_ok)) if keep else 0.0,
             "raw_sections": float(np.mean([count_sections(r) for r in responses])) if responses else 0.0}
    return pairs, facts


# --- the smoke / test stand-in: a tiny random Llama with a word-level chat tokenizer ------------------------

class TinyChatTokenizer:
    """A word-level tokenizer with SmolLM2's special tokens and ChatML template, over the words of the
    template bank (plus markdown and punctuation), for the tiny random Llama that exercises Exp C's code
    path at ``smoke`` and in the unit tests without loading SmolLM2. Unknown words map to ``<unk>``."""

    SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
    _TOKEN_RE = re.compile(r"<\|[a-z_]+\|>|\*\*|\n|\w+|[^\w\s]")
    chat_template = "chatml (built in)"

    def __init__(self):
        train, heldout = template_bank()
        words = set()
        for text in train + heldout + ["system user assistant Part You are a helpful assistant", "0 1 2 3 4 5 6 7 8 9"]:
            words.update(t for t in self._TOKEN_RE.findall(text) if t not in self.SPECIALS)
        words.update(["**", "\n", ".", ",", "?", "!", ":", "-"])
        self.vocab = list(self.SPECIALS) + sorted(words)
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        self.eos_token_id = self.pad_token_id = 2
        self.all_special_ids = [0, 1, 2, 3]

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [self.ids.get(t, 3) for t in self._TOKEN_RE.findall(text)]}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        toks = [self.vocab[i] for i in ids if not (skip_special_tokens and i in self.all_special_ids)]
        out, bold_open = "", False
        for t in toks:
            glue = out == "" or out.endswith("\n") or t == "\n" or t in ".,?!:"
            if t == "**":
                glue, bold_open = glue or bold_open, not bold_open
            elif out.endswith("**") and bold_open:
                glue = True
            out += t if glue else " " + t
        return out

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        if not messages or messages[0]["role"] != "system":
            messages = [{"role": "system", "content": "You are a helpful assistant"}] + list(messages)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def tiny_model_and_tokenizer(seed: int = 0, d_model: int = 32, n_layers: int = 1, n_heads: int = 2):
    """A tiny random ``transformers`` Llama (``shared.lm.tiny_llama``) and :class:`TinyChatTokenizer`."""
    tok = TinyChatTokenizer()
    seed_everything(seed)
    model = tiny_llama(len(tok), max_len=1024, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                       pad_token_id=2, bos_token_id=1, eos_token_id=2)
    with torch.no_grad():  # zero (tied) embeddings of special and non-word tokens: greedy answers are words
        emb = model.get_input_embeddings().weight
        for i, t in enumerate(tok.vocab):
            if i < len(tok.SPECIALS) or not t[0].isalnum():
                emb[i] = 0.0
    return model.eval(), tok


# --- tokens and scores ---------------------------------------------------------------------------------

def encode(tokenizer, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T) right-padded ids of chat prompt + response + eos, and the mask of the response tokens
    (response and its eos; padding excluded by length, since SmolLM2's pad id is its eos id)."""
    rows, spans = [], []
    for p, r in zip(prompts, responses):
        p_ids = tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p_ids + r_ids)
        spans.append((len(p_ids), len(p_ids) + len(r_ids)))
    if not rows:
        return torch.zeros((0, 1), dtype=torch.long), torch.zeros((0, 1), dtype=torch.bool)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, (a, b)) in enumerate(zip(rows, spans)):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, a:b] = True
    return ids, mask


def _device_of(model) -> str:
    return str(next(model.parameters()).device)


def _autocast(device: str):
    amp = autocast_dtype(device)
    return torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None)


@torch.no_grad()
def scores(model, ids: torch.Tensor, mask: torch.Tensor, device: str, batch_size: int = 16) -> torch.Tensor:
    """(n,) mean per-token log-probability of the response tokens (the ``dpo_norm`` score), in the same
    precision as training (bf16 autocast on a GPU)."""
    model.eval()
    out = []
    for i in range(0, len(ids), batch_size):
        with _autocast(device):
            out.append(mean_response_logprob(model, ids[i:i + batch_size].to(device),
                                             mask[i:i + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def pair_accuracy(model, ref_scores: tuple[torch.Tensor, torch.Tensor], chosen, rejected, device: str) -> float:
    """Share of pairs whose implicit reward ranks chosen above rejected: (pi_c - ref_c) > (pi_r - ref_r)."""
    pc, pr = scores(model, *chosen, device), scores(model, *rejected, device)
    if len(pc) == 0:
        return float("nan")
    return float((((pc - ref_scores[0]) - (pr - ref_scores[1])) > 0).float().mean())


# --- tuning ----------------------------------------------------------------------------------------------

def tune(base, tokenizer, arm: str, pairs: BoldPairs, lr: float, beta: float, batch_size: int, seed: int,
         device: str, progress: bool = False):
    """One epoch of ``arm`` from a copy of ``base`` (also the frozen DPO reference). DPO arms use
    ``ladder.dpo_norm_loss``; ``sft_3`` is the causal LM loss on the 3-section responses. ``seed`` sets
    the data order."""
    seed_everything(seed)
    model = copy.deepcopy(base).to(device)
    batches = _epoch_batches(len(pairs.prompts), batch_size, seed)
    if arm == "sft_3":
        ids, mask = encode(tokenizer, pairs.prompts, pairs.three)

        def batch_fn(step):
            i = batches[step]
            return ids[i].to(device), mask[i].to(device)

        loss_fn = lambda m, b: causal_lm_loss(m, b[0], loss_mask=b[1])  # noqa: E731
    else:
        chosen, rejected = pairs.oriented(arm)
        c_ids, c_mask = encode(tokenizer, pairs.prompts, chosen)
        r_ids, r_mask = encode(tokenizer, pairs.prompts, rejected)
        ref_c, ref_r = scores(model, c_ids, c_mask, device), scores(model, r_ids, r_mask, device)

        def batch_fn(step):
            i = batches[step]
            c, r = c_ids[i], r_ids[i]
            width = max(c.shape[1], r.shape[1])
            pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
            ids = torch.cat([pad(c, tokenizer.pad_token_id), pad(r, tokenizer.pad_token_id)])
            mask = torch.cat([pad(c_mask[i], False), pad(r_mask[i], False)])
            return ids.to(device), mask.to(device), ref_c[i].to(device), ref_r[i].to(device)

        loss_fn = dpo_batch_loss(beta)

    model.train()
    history = train(model, _tune_config(len(batches), lr, f"{arm} s{seed}", progress), batch_fn, loss_fn, device)
    model.eval()
    return model, history


def section_counts(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   batch_size: int = 64) -> tuple[list[int], list[str]]:
    """Bold section headers of the greedy answer to each prompt (chat template)."""
    with _autocast(_device_of(model)):  # bf16 on a GPU, as in training; fp32 on CPU
        texts = generate_text(model, tokenizer, [chat_prompt(tokenizer, p) for p in prompts], max_new_tokens,
                              batch_size=batch_size)
    return [count_sections(t) for t in texts], texts


def run_bold(model, tokenizer, seeds, n_pool: int, n_train: int, n_select: int, n_eval: int, gen_tokens: int,
             eval_tokens: int, lrs, beta: float, batch_size: int, device: str, progress: bool = False,
             gen_batch: int = 64):
    """Exp C end to end. ``model``: the starting model (fp32 weights; bf16 autocast on a GPU).

    1. Greedy responses (``gen_tokens``) of the starting model to ``n_pool`` training prompts and to the
       ``n_select`` + ``n_eval`` held-out prompts; pairs from them (:func:`make_pairs`).
    2. The starting model's section count on the ``n_eval`` held-out prompts (``eval_tokens``).
    3. Per seed: ``n_train`` training pairs drawn from the pool; ``dpo_3v2`` at every learning rate in
       ``lrs``, the rate with the lowest held-out ``dpo_norm`` loss on the *selection* pairs is kept (ties: the
       smaller rate) and used for ``dpo_2v3``, ``dpo_3v3`` and ``dpo_3v2_rerun`` (another data order); ``sft_3`` at every rate, kept by the highest
       mean log-probability of the held-out 3-section *selection* responses. Every kept arm: section count
       on the evaluation prompts, pair accuracy on the evaluation pairs in its own orientation, and the
       change of the evaluation 3-section responses' mean log-probability.

    Returns (rows: one per (seed, arm) incl. ``base``; grid rows; facts; sample answers).
    """
    train_bank, heldout_bank = template_bank()
    if n_pool > len(train_bank) or n_select + n_eval > len(heldout_bank) or n_train > n_pool:
        raise ValueError("the template bank is too small for these sizes")
    pool_prompts = train_bank[:n_pool]
    select_prompts, eval_prompts = heldout_bank[:n_select], heldout_bank[n_select:n_select + n_eval]
    model = model.to(device).eval()
    with _autocast(device):
        responses = generate_text(model, tokenizer, [chat_prompt(tokenizer, p) for p in
                                                     pool_prompts + select_prompts + eval_prompts], gen_tokens,
                                  batch_size=gen_batch)
    pool, pool_facts = make_pairs(pool_prompts, responses[:n_pool])
    select, _ = make_pairs(select_prompts, responses[n_pool:n_pool + n_select])
    evalp, eval_facts = make_pairs(eval_prompts, responses[n_pool + n_select:])
    base_counts, base_texts = section_counts(model, tokenizer, eval_prompts, eval_tokens, gen_batch)

    def enc(p: BoldPairs, texts):
        return encode(tokenizer, p.prompts, texts)

    held = {name: {k: enc(p, getattr(p, k)) for k in ("three", "two", "three_generic")}
            for name, p in (("select", select), ("eval", evalp))}
    ref = {name: {k: scores(model, *v, device) for k, v in d.items()} for name, d in held.items()}
    side = {"dpo_3v2": ("three", "two"), "dpo_2v3": ("two", "three"), "dpo_3v3": ("three", "three_generic"),
            "dpo_3v2_rerun": ("three", "two"), "sft_3": ("three", "two")}

    def pair_acc(m, arm, split):
        c, r = side[arm]
        return pair_accuracy(m, (ref[split][c], ref[split][r]), held[split][c], held[split][r], device)

    def heldout_dpo_loss(m, arm, split):
        """The dpo_norm loss on held-out pairs (lower is better); unlike the pair accuracy it does not
        saturate at 1 while the model keeps moving."""
        c, r = side[arm]
        pc, pr = scores(m, *held[split][c], device), scores(m, *held[split][r], device)
        if len(pc) == 0:
            return float("nan")
        return float(dpo_norm_loss(pc, pr, ref[split][c], ref[split][r], beta)[0])

    def logp_shift(m, split):
        d = scores(m, *held[split]["three"], device) - ref[split]["three"]
        return float(d.mean()) if len(d) else float("nan")

    rows, grid, samples = [], [], {"base": base_texts[:3]}
    facts = {"pool_responses": pool_facts["responses"], "pool_usable": pool_facts["usable"],
             "pool_sentence_split": pool_facts["sentence_split"], "pool_raw_sections": pool_facts["raw_sections"],
             "eval_pairs": len(evalp.prompts), "select_pairs": len(select.prompts),
             "base_sections": float(np.mean(base_counts))}
    for seed in seeds:
        perm = torch.randperm(len(pool.prompts), generator=torch_generator(110_000 + seed))[:n_train].tolist()
        train_pairs = pool.subset(perm)
        rows.append({"seed": seed, "arm": "base", "sections": float(np.mean(base_counts)),
                     "pair_accuracy": float("nan"), "logp_shift_three": 0.0, "lr": float("nan"),
                     "train_pairs": len(perm)})
        if not perm:  # no usable training pair: the arms cannot run (their gates fail)
            rows += [{"seed": seed, "arm": arm, "sections": float("nan"), "pair_accuracy": float("nan"),
                      "logp_shift_three": float("nan"), "lr": float("nan"), "train_pairs": 0} for arm in ARMS]
            continue
        kept = {}
        for arm, criterion in (("dpo_3v2", lambda m, a: -heldout_dpo_loss(m, a, "select")),
                               ("sft_3", lambda m, a: logp_shift(m, "select"))):
            best = None
            for lr in lrs:
                m, _ = tune(model, tokenizer, arm, train_pairs, lr, beta, batch_size, seed, device, progress)
                crit = criterion(m, arm)
                grid.append({"seed": seed, "arm": arm, "lr": lr, "select_criterion": crit})
                if best is None or (np.isfinite(crit) and (not np.isfinite(best[0]) or crit > best[0])):
                    best = (crit, lr, m)
                else:
                    del m
            kept[arm] = best
        lr_dpo = kept["dpo_3v2"][1]
        for arm in ("dpo_2v3", "dpo_3v3", "dpo_3v2_rerun"):
            order = seed + (RERUN_SEED_OFFSET if arm == "dpo_3v2_rerun" else 0)
            m, _ = tune(model, tokenizer, arm, train_pairs, lr_dpo, beta, batch_size, order, device, progress)
            kept[arm] = (float("nan"), lr_dpo, m)
        for arm in ARMS:
            _, lr, m = kept[arm]
            counts, texts = section_counts(m, tokenizer, eval_prompts, eval_tokens, gen_batch)
            rows.append({"seed": seed, "arm": arm, "sections": float(np.mean(counts)),
                         "pair_accuracy": pair_acc(m, arm, "eval"), "logp_shift_three": logp_shift(m, "eval"),
                         "lr": lr, "train_pairs": len(perm)})
            if seed == seeds[0]:
                samples[arm] = texts[:3]
        del kept
    return rows, grid, facts, samples
