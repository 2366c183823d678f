"""The controllable-context-sensitivity (CCS) task: items, prompts and the pair-accuracy metric.

A CCS item (Sec. 3 of the paper) is a counterfactual context about a subject ("The capital of France is
Madrid"), a query about the same subject ("What is the capital of France?") and an *intent*: use the
context (answer "Madrid") or use the prior (answer "Paris"). A model solves an item only when it is right
for both intents (pair accuracy, the authors' ``paired_accuracy``).

Two encodings of the same items:

- the **tiny world** (from scratch): a synthetic encyclopedia of ``n_entities`` subjects with one
  attribute each out of ``n_values`` (the analogue of CCS-BaseFakepedia), written with a word-level
  vocabulary in a fixed 10-token layout ``<bos> SRC SUBJ is VALUE instr INTENT query SUBJ ans``;
- **capitals** for SmolLM2-135M-Instruct: the authors' prompt (system "Answer the following query
  considering the provided context.", user ``Context: ...\\nInstruction: ...\\nQuery: ...``) in the model's
  chat template, with the answer start pre-filled (``The capital of France is``) so that the answer is the
  next token.

Every encoding returns a :class:`PromptSet` (left-padded ids + the first token of each candidate answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

# --- the authors' prompt (model_utils/utils.py: system prompt, instruction-format intents) --------------

SYSTEM_PROMPT = "Answer the following query considering the provided context."
INSTRUCTIONS = {  # intent 0 = use the prior, 1 = use the context
    0: "Ignore the context in answering the query.",
    1: "Only consider the context in answering the query.",
}
PRIOR, CONTEXT, NONE = 0, 1, -1  # intent codes; NONE = the instruction is removed (steering prompts)

# Country -> capital (first token of " " + capital is the answer token). SmolLM2 knows about 70% of them;
# items are restricted to the countries it answers correctly without context (the paper's "known" filter).
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("United Kingdom", "London"), ("Ireland", "Dublin"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"),
    ("Austria", "Vienna"), ("Switzerland", "Bern"), ("Poland", "Warsaw"), ("Czech Republic", "Prague"),
    ("Hungary", "Budapest"), ("Greece", "Athens"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
    ("Denmark", "Copenhagen"), ("Finland", "Helsinki"), ("Iceland", "Reykjavik"), ("Russia", "Moscow"),
    ("Ukraine", "Kyiv"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Turkey", "Ankara"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Ethiopia", "Addis Ababa"), ("Morocco", "Rabat"), ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"), ("Senegal", "Dakar"), ("Uganda", "Kampala"), ("Zimbabwe", "Harare"), ("Angola", "Luanda"),
    ("Sudan", "Khartoum"), ("China", "Beijing"), ("Japan", "Tokyo"), ("South Korea", "Seoul"),
    ("North Korea", "Pyongyang"), ("India", "New Delhi"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"),
    ("Nepal", "Kathmandu"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
    ("Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"), ("Saudi Arabia", "Riyadh"), ("Qatar", "Doha"),
    ("Afghanistan", "Kabul"), ("Mongolia", "Ulaanbaatar"), ("Australia", "Canberra"), ("New Zealand", "Wellington"),
    ("Canada", "Ottawa"), ("United States", "Washington"), ("Mexico", "Mexico City"), ("Cuba", "Havana"),
    ("Jamaica", "Kingston"), ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Peru", "Lima"),
    ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Brazil", "Brasilia"),
    ("Uruguay", "Montevideo"), ("Paraguay", "Asuncion"), ("Bolivia", "La Paz"), ("Panama", "Panama City"),
    ("Costa Rica", "San Jose"), ("Nicaragua", "Managua"), ("Honduras", "Tegucigalpa"),
    ("Guatemala", "Guatemala City"), ("Libya", "Tripoli"), ("Somalia", "Mogadishu"), ("Tanzania", "Dodoma"),
    ("Zambia", "Lusaka"), ("Mali", "Bamako"), ("Cambodia", "Phnom Penh"), ("Laos", "Vientiane"),
    ("Myanmar", "Naypyidaw"), ("Sri Lanka", "Colombo"), ("Kazakhstan", "Astana"), ("Uzbekistan", "Tashkent"),
    ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"), ("Israel", "Jerusalem"),
    ("Yemen", "Sanaa"), ("Oman", "Muscat"), ("Kuwait", "Kuwait City"), ("Estonia", "Tallinn"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Belarus", "Minsk"),
    ("Albania", "Tirana"), ("Cyprus", "Nicosia"), ("Malta", "Valletta"), ("Luxembourg", "Luxembourg"),
    ("Singapore", "Singapore"),
]


# --- items and prompt sets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Items:
    """CCS items: ``subject[i]`` with prior answer ``prior[i]`` and counterfactual context answer ``ctx[i]``
    (indices into the encoding's subjects and answers); ``prior[i] != ctx[i]`` always."""

    subject: np.ndarray  # (n,) int
    prior: np.ndarray  # (n,) int
    ctx: np.ndarray  # (n,) int

    def __post_init__(self):
        if not (len(self.subject) == len(self.prior) == len(self.ctx)):
            raise ValueError("subject, prior and ctx must have the same length")
        if np.any(self.prior == self.ctx):
            raise ValueError("a CCS item needs a context answer that differs from the prior answer")

    def __len__(self) -> int:
        return len(self.subject)

    def take(self, idx) -> "Items":
        idx = np.asarray(idx)
        return Items(self.subject[idx], self.prior[idx], self.ctx[idx])


@dataclass
class PromptSet:
    """Encoded prompts. ``ids``/``mask`` (N, T) are left-padded; the answer is the next token after the
    last position. ``ctx_token``/``prior_token`` (N,) are the first tokens of the two candidate answers,
    ``intent`` (N,) is 1 (use context), 0 (use prior) or -1 (no instruction), ``item`` (N,) the item index
    (the two intents of one item share it)."""

    ids: torch.Tensor
    mask: torch.Tensor
    ctx_token: torch.Tensor
    prior_token: torch.Tensor
    intent: torch.Tensor
    item: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def target(self, intent: torch.Tensor | None = None) -> torch.Tensor:
        """The correct answer token under ``intent`` (default: each prompt's own intent)."""
        intent = self.intent if intent is None else intent
        if bool((intent < 0).any()):
            raise ValueError("prompts without an intent have no target; pass the intent to score")
        return torch.where(intent == CONTEXT, self.ctx_token, self.prior_token)

    def flipped_target(self) -> torch.Tensor:
        """The answer under the opposite intent (the label of a DAS interchange intervention)."""
        return self.target(1 - self.intent)


def intents_interleaved(n_items: int, with_intent: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(item index, intent) per prompt: each item twice, prior then context (the authors' interleaving), or
    once with no instruction when ``with_intent`` is False."""
    if with_intent:
        return np.repeat(np.arange(n_items), 2), np.tile([PRIOR, CONTEXT], n_items)
    return np.arange(n_items), np.full(n_items, NONE)


def pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def pair_accuracy(correct: np.ndarray, intent: np.ndarray, item: np.ndarray) -> float:
    """Fraction of items answered correctly under *both* intents (the paper's metric)."""
    correct, intent, item = map(np.asarray, (correct, intent, item))
    ok_ctx = {i for i, c, t in zip(item, correct, intent) if t == CONTEXT and c}
    ok_prior = {i for i, c, t in zip(item, correct, intent) if t == PRIOR and c}
    items = set(item[intent >= 0].tolist())
    if not items:
        raise ValueError("pair_accuracy needs prompts with intents")
    return len(ok_ctx & ok_prior & items) / len(items)


def das_source_index(items: Items, item: np.ndarray, intent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every target prompt, a source prompt with a different subject, context answer, prior answer and
    the *opposite* intent (the authors' pairing rule in ``analysis/circuit_utils/das.py``), or -1 where no
    prompt qualifies (possible when few prompts remain, e.g. a small model answers few items right under
    both intents); the caller drops those targets. One random draw per target that has a source."""
    subj, prior, ctx = items.subject[item], items.prior[item], items.ctx[item]
    n = len(item)
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        ok = (subj != subj[i]) & (ctx != ctx[i]) & (prior != prior[i]) & (intent != intent[i])
        candidates = np.flatnonzero(ok)
        if candidates.size:
            out[i] = candidates[rng.integers(candidates.size)]
    return out


def sample_counterfactuals(prior: np.ndarray, n_answers: int, rng: np.random.Generator,
                           forbidden: np.ndarray | None = None) -> np.ndarray:
    """A context answer for each prior answer, uniform over the other answers (and, when ``forbidden``
    (n_answers, n_answers) is given, never an answer whose first token equals the prior's)."""
    out = np.empty(len(prior), dtype=np.int64)
    for i, p in enumerate(prior):
        allowed = np.ones(n_answers, dtype=bool)
        allowed[p] = False
        if forbidden is not None:
            allowed &= ~forbidden[p]
        out[i] = rng.choice(np.flatnonzero(allowed))
    return out


# --- the tiny world (from scratch) ------------------------------------------------------------------------

SPECIAL = ["<pad>", "<bos>", "is", "query", "_", "say", "answer", "trust", "doubt", "use", "ignore",
           "context", "prior"]
SEQ_LEN = 8
# The instruction is the last two prompt tokens (verb, object). Pre-training knows "say answer" (no
# instruction) and the cue "trust context" / "doubt context"; CCS fine-tuning introduces four new phrasings
# whose intent depends on both words (use context = ignore prior = CONTEXT; use prior = ignore context =
# PRIOR), so the intent has to be composed in the last token's residual stream.
NO_INSTRUCTION = ("say", "answer")
INTENT_PHRASES = {CONTEXT: [("use", "context"), ("ignore", "prior")],
                  PRIOR: [("use", "prior"), ("ignore", "context")]}
CUE_PHRASES = {CONTEXT: ("trust", "context"), PRIOR: ("doubt", "context")}


@dataclass(frozen=True)
class TinyWorld:
    """A synthetic encyclopedia (the analogue of CCS-BaseFakepedia): known entity ``e`` has attribute
    ``facts[e]``; ``n_novel`` further entities have no fact (they appear only with a context, to learn
    copying). Prompts are ``<bos> SUBJ is VALUE query SUBJ VERB OBJ`` (8 tokens); the answer is the next
    token. A context-free fact query is ``<bos> _ is _ query SUBJ say answer``."""

    n_entities: int
    n_novel: int
    n_values: int
    facts: np.ndarray  # (n_entities,) int in [0, n_values)

    @classmethod
    def make(cls, n_entities: int, n_novel: int, n_values: int, seed: int) -> "TinyWorld":
        if n_values < 3:
            raise ValueError("n_values must be >= 3 (a DAS source needs a third answer)")
        if n_entities < 4:
            raise ValueError("n_entities must be >= 4 (train, dev and test entities)")
        facts = np.random.default_rng(seed).integers(0, n_values, size=n_entities)
        return cls(n_entities, n_novel, n_values, facts)

    @cached_property
    def vocab(self) -> list[str]:
        return (SPECIAL + [f"e{i}" for i in range(self.n_entities)] + [f"n{i}" for i in range(self.n_novel)]
                + [f"v{i}" for i in range(self.n_values)])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def tok(self, word: str) -> int:
        return self._index[word]

    def entity_token(self, e) -> np.ndarray:
        return len(SPECIAL) + np.asarray(e)

    def novel_token(self, n) -> np.ndarray:
        return len(SPECIAL) + self.n_entities + np.asarray(n)

    def value_token(self, v) -> np.ndarray:
        return len(SPECIAL) + self.n_entities + self.n_novel + np.asarray(v)

    def sequences(self, subj_tok, ctx_val_tok, verb_tok, obj_tok) -> np.ndarray:
        """(n, 8) token ids ``<bos> SUBJ is VALUE query SUBJ VERB OBJ``."""
        subj_tok = np.asarray(subj_tok)
        seq = np.empty((len(subj_tok), SEQ_LEN), dtype=np.int64)
        ix = self._index
        seq[:, 0], seq[:, 2], seq[:, 4] = ix["<bos>"], ix["is"], ix["query"]
        seq[:, 1], seq[:, 3], seq[:, 5], seq[:, 6], seq[:, 7] = subj_tok, ctx_val_tok, subj_tok, verb_tok, obj_tok
        return seq

    def phrase_tokens(self, intent: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(verb, object) tokens for each intent: one of the two phrasings of the intent, drawn with ``rng``
        (or alternating when ``rng`` is None); ``NONE`` gives ``say answer``."""
        ix = self._index
        verb, obj = np.empty(len(intent), dtype=np.int64), np.empty(len(intent), dtype=np.int64)
        pick = rng.integers(0, 2, size=len(intent)) if rng is not None else np.arange(len(intent)) // 2 % 2
        for i, t in enumerate(intent):
            v, o = NO_INSTRUCTION if t == NONE else INTENT_PHRASES[int(t)][pick[i]]
            verb[i], obj[i] = ix[v], ix[o]
        return verb, obj

    def encode(self, items: Items, with_intent: bool = True, rng: np.random.Generator | None = None) -> PromptSet:
        """CCS prompts for ``items``: both intents interleaved (phrasings drawn with ``rng``, or
        alternating), or with no instruction (``say answer``)."""
        item, intent = intents_interleaved(len(items), with_intent)
        verb, obj = self.phrase_tokens(intent, rng)
        seq = self.sequences(self.entity_token(items.subject[item]), self.value_token(items.ctx[item]), verb, obj)
        return PromptSet(ids=torch.from_numpy(seq), mask=torch.ones(seq.shape, dtype=torch.long),
                         ctx_token=torch.from_numpy(self.value_token(items.ctx[item])),
                         prior_token=torch.from_numpy(self.value_token(items.prior[item])),
                         intent=torch.from_numpy(intent), item=torch.from_numpy(item))

    def items(self, entities: np.ndarray, per_entity: int, rng: np.random.Generator) -> Items:
        """``per_entity`` counterfactual items for each entity (distinct context answers)."""
        subj, ctx = [], []
        for e in entities:
            others = np.setdiff1d(np.arange(self.n_values), [self.facts[e]])
            pick = rng.choice(others, size=min(per_entity, others.size), replace=False)
            subj += [e] * len(pick)
            ctx += pick.tolist()
        subj = np.array(subj, dtype=np.int64)
        return Items(subj, self.facts[subj], np.array(ctx, dtype=np.int64))


# Pre-training mixture of the tiny "base" model, the analogue of pre-training + instruction tuning: it knows
# the facts, copies contexts, and already follows or ignores a context when told so with a cue it has seen
# ("trust context" / "doubt context"), but has never seen the CCS intent phrasings.
PRETRAIN_MIXTURE = {
    "fact": 0.35,  # <bos> _ is _ query e say answer -> facts[e]
    "novel_copy": 0.15,  # context about an entity without a fact ("say answer" or "trust context") -> its value
    "trusted_conflict": 0.20,  # counterfactual context, "trust context" -> context value
    "doubted_conflict": 0.20,  # counterfactual context, "doubt context" -> prior value
    "neutral_conflict": 0.10,  # counterfactual context, "say answer" -> context or prior value, 1/2 each
}


def sample_pretrain(world: TinyWorld, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` pre-training sequences: (ids (n, 8), answer token (n,), kind (n,) = index into
    ``PRETRAIN_MIXTURE``)."""
    ix = world._index
    names = list(PRETRAIN_MIXTURE)
    kind = rng.choice(len(names), size=n, p=np.array(list(PRETRAIN_MIXTURE.values())))
    k = np.array(names)[kind]
    ent = rng.integers(0, world.n_entities, size=n)
    prior = world.facts[ent]
    cf = (prior + rng.integers(1, world.n_values, size=n)) % world.n_values  # uniform over the other values
    novel, novel_val = rng.integers(0, world.n_novel, size=n), rng.integers(0, world.n_values, size=n)
    coin = rng.random(n) < 0.5
    subj, val = world.entity_token(ent), world.value_token(cf)
    target = world.value_token(cf)  # trusted conflict, and neutral conflict on heads
    verb, obj = np.full(n, ix["say"]), np.full(n, ix["answer"])
    trusted, doubted = k == "trusted_conflict", k == "doubted_conflict"
    verb[trusted], obj[trusted] = ix["trust"], ix["context"]
    verb[doubted], obj[doubted] = ix["doubt"], ix["context"]
    target = np.where(doubted | ((k == "neutral_conflict") & ~coin), world.value_token(prior), target)
    nc = k == "novel_copy"
    subj = np.where(nc, world.novel_token(novel), subj)
    val = np.where(nc, world.value_token(novel_val), val)
    target = np.where(nc, world.value_token(novel_val), target)
    verb[nc & coin], obj[nc & coin] = ix["trust"], ix["context"]
    fact = k == "fact"
    target = np.where(fact, world.value_token(prior), target)
    seq = world.sequences(subj, val, verb, obj)
    seq[fact, 1], seq[fact, 3] = ix["_"], ix["_"]
    return seq, target, kind


# --- capitals for SmolLM2 ---------------------------------------------------------------------------------

def capital_user_message(country: str, context_capital: str, intent: int) -> str:
    """The authors' instruction-format query (``QUERY_TEMPLATE_STR``); ``intent=-1`` drops the
    instruction line (their ``remove_instruction`` for steering)."""
    lines = [f"Context: The capital of {country} is {context_capital}."]
    if intent != NONE:
        lines.append(f"Instruction: {INSTRUCTIONS[intent]}")
    lines.append(f"Query: What is the capital of {country}?")
    return "\n".join(lines)


def answer_prefill(country: str) -> str:
    """The pre-filled start of the answer: after it, the capital is the next token."""
    return f"The capital of {country} is"


def first_answer_tokens(tokenizer, answers: list[str]) -> np.ndarray:
    """First token of ``" " + answer`` for each answer (the space belongs to the answer: docs/lm.md)."""
    return np.array([tokenizer(" " + a, add_special_tokens=False)["input_ids"][0] for a in answers])


def encode_capitals(tokenizer, items: Items, with_intent: bool = True, capitals=CAPITALS) -> PromptSet:
    """Chat prompts (system = the authors' system prompt) with the answer start pre-filled."""
    from shared.lm import chat_prompt

    item, intent = intents_interleaved(len(items), with_intent)
    answer_tok = first_answer_tokens(tokenizer, [c for _, c in capitals])
    rows = []
    for i, t in zip(item, intent):
        country = capitals[items.subject[i]][0]
        text = chat_prompt(tokenizer, capital_user_message(country, capitals[items.ctx[i]][1], int(t)),
                           system=SYSTEM_PROMPT) + answer_prefill(country)
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids, mask = pad_left(rows, tokenizer.pad_token_id)
    return PromptSet(ids=ids, mask=mask, ctx_token=torch.from_numpy(answer_tok[items.ctx[item]]),
                     prior_token=torch.from_numpy(answer_tok[items.prior[item]]),
                     intent=torch.from_numpy(intent), item=torch.from_numpy(item))


def encode_capital_queries(tokenizer, countries: list[int], capitals=CAPITALS) -> tuple[torch.Tensor, torch.Tensor]:
    """The context-free query (to find which capitals the model knows): left-padded (ids, mask)."""
    from shared.lm import chat_prompt

    rows = []
    for c in countries:
        country = capitals[c][0]
        text = chat_prompt(tokenizer, f"What is the capital of {country}?", system=SYSTEM_PROMPT) + answer_prefill(country)
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return pad_left(rows, tokenizer.pad_token_id)


def same_first_token(tokenizer, capitals=CAPITALS) -> np.ndarray:
    """(n, n) bool: capitals i and j start with the same token (never a valid context/prior pair)."""
    tok = first_answer_tokens(tokenizer, [c for _, c in capitals])
    return tok[:, None] == tok[None, :]
