"""The English corpus, its BPE tokenizer and the token streams of every impossible language.

The paper perturbs the 100M-word BabyLM corpus (ten genres, sentence-split and tagged with Stanza). Offline
we have two of its kinds of text (``data/`` fetch stages, see ../shared/datasets/*/SOURCE.md):

- ``aochildes``: AO-CHILDES transcripts, the source of BabyLM's CHILDES genre. We keep the utterances of
  adult speakers (:data:`ADULT_ROLES`), drop those with unintelligible material (``xxx``/``yyy``/``www``)
  and those whose %mor tier (``stem``, ``part_of_speech``) is not word-aligned with the ``gloss``, and end
  each utterance with ``?`` (questions), ``!`` (imperatives) or ``.`` from its ``type`` column. The split
  is by transcript.
- ``tinyshakespeare``: Shakespeare's plays (char-rnn), standing in for BabyLM's Gutenberg genre. Speaker
  lines are dropped, each turn is joined and split into sentences after ``.``/``?``/``!``. The split is by
  position (the last part of the text is held out).

How the *Hop verbs are found without a dependency parser: the paper marks every verb that Stanza tags
``Person=3 | Tense=Pres | VerbForm=Fin``. AO-CHILDES ships the CHILDES %mor analysis, aligned word by word
with the utterance, so a word is a 3rd-person-singular present verb when its %mor part of speech is a verb
(``v``, ``cop``, ``aux``, ``mod``) and its surface form is its stem inflected with ``-s`` (``goes``/``go``,
``wants``/``want``, ``cries``/``cry``) or one of ``is``/``be``, ``has``/``have``, ``does``/``do``
(:func:`is_third_singular_present`). Its lemma is the %mor stem. Differences from the paper: plural
3rd-person present verbs (``they go``) cannot be told from other base forms without a parse, so only the
singular marker is used; contracted copulas (``it's``) keep their form because the export does not keep
the clitic's analysis; Tiny Shakespeare has no %mor tier, so the *Hop languages are built from the
AO-CHILDES genre only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Sequence

import numpy as np

from .perturbations import (LANGUAGES, HopSentence, hop_affected, hop_complete, hop_perturb,
                            perturb_sentences)

GENRES = ("aochildes", "tinyshakespeare")
ADULT_ROLES = ("Mother", "Father", "Investigator", "Adult", "Visitor", "Clinician", "Grandmother",
               "Family_Friend", "Teacher", "Camera_Operator", "Aunt")
UNINTELLIGIBLE = re.compile(r"\b(?:xxx|yyy|www)\b")
VERB_TAGS = ("v", "cop", "aux", "mod")
IRREGULAR_3SG = {("is", "be"), ("has", "have"), ("does", "do")}
EOS, MARKER_REV, MARKER_SING = "<eos>", "<R>", "<S>"
SPECIAL_TOKENS = (EOS, MARKER_REV, MARKER_SING)
TERMINALS = frozenset(".?!")  # the utterance-final punctuation added to AO-CHILDES glosses


# --- AO-CHILDES --------------------------------------------------------------------------------------------

def is_third_singular_present(word: str, stem: str, pos: str) -> bool:
    """Is ``word`` (with %mor ``stem`` and part of speech ``pos``) a 3rd-person-singular present verb?"""
    if pos.partition(":")[0] not in VERB_TAGS:
        return False
    w, s = word.lower(), stem.lower()
    if "'" in w or w == s:
        return False
    if (w, s) in IRREGULAR_3SG:
        return True
    return w in (s + "s", s + "es") or (s.endswith("y") and w == s[:-1] + "ies")


def terminal_punctuation(utterance_type: str) -> str:
    t = str(utterance_type)
    if "question" in t:
        return "?"
    if t.startswith("imperative"):
        return "!"
    return "."


@dataclass
class Utterance:
    words: list[str]  # the gloss words and the terminal punctuation
    lemmas: list[str | None]  # the %mor stem of each 3rd-person-singular present verb, else None
    group: str  # transcript (the unit of the train/test split)


def parse_aochildes_row(gloss: str, stem: str, pos: str, utterance_type: str) -> Utterance | None:
    """One AO-CHILDES row as an :class:`Utterance`, or None when its %mor tier is not word-aligned."""
    words, stems, tags = gloss.split(), str(stem).split(), str(pos).split()
    if not words or not (len(words) == len(stems) == len(tags)):
        return None
    lemmas = [s if is_third_singular_present(w, s, p) else None for w, s, p in zip(words, stems, tags)]
    return Utterance(words + [terminal_punctuation(utterance_type)], lemmas + [None], "")


def load_aochildes(directory: Path) -> list[Utterance]:
    """Adult utterances of every AO-CHILDES corpus, ordered by corpus file, transcript and utterance."""
    import pandas as pd

    files = sorted(Path(directory).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no AO-CHILDES CSV files in {directory}")
    cols = ["gloss", "stem", "part_of_speech", "speaker_role", "type", "transcript_id", "utterance_order"]
    out = []
    for f in files:
        df = pd.read_csv(f, usecols=cols)
        df = df[df["speaker_role"].isin(ADULT_ROLES) & df["gloss"].notna()]
        df = df[~df["gloss"].str.contains(UNINTELLIGIBLE)]
        df = df.sort_values(["transcript_id", "utterance_order"], kind="stable")
        for gloss, stem, pos, kind, transcript in zip(df["gloss"], df["stem"], df["part_of_speech"], df["type"],
                                                      df["transcript_id"]):
            u = parse_aochildes_row(gloss, stem, pos, kind)
            if u is not None:
                u.group = f"{f.stem}/{transcript}"
                out.append(u)
    return out


# --- Tiny Shakespeare ----------------------------------------------------------------------------------------

SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


def shakespeare_sentences(text: str) -> list[list[str]]:
    """Sentences (as whitespace-separated words) of the plays: each blank-line-separated block is a turn
    whose first line is the speaker (``MENENIUS:``), dropped; a turn's lines are joined and split after
    sentence-final punctuation."""
    sentences = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.strip().split("\n")
        if len(lines) < 2 or not lines[0].rstrip().endswith(":"):
            continue
        speech = " ".join(line.strip() for line in lines[1:])
        for sent in SENTENCE_END.split(speech):
            words = sent.split()
            if words:
                sentences.append(words)
    return sentences


# --- the tokenizer -------------------------------------------------------------------------------------------

def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on ``texts`` with the special tokens
    ``<eos>`` (id 0: sentence separator and padding), ``<R>`` and ``<S>`` (the paper's markers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return tok


def encode_words(tok, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Token ids of every word of every sentence. Byte-level BPE on pre-split words encodes each word on
    its own (with its leading space), so a word's tokens do not depend on its neighbours: each distinct
    word is encoded once."""
    vocab = sorted({w for s in sentences for w in s})
    table = {w: enc.ids for w, enc in zip(vocab, tok.encode_batch([[w] for w in vocab], is_pretokenized=True,
                                                                   add_special_tokens=False))}
    return [[table[w] for w in s] for s in sentences]


# --- the prepared corpus --------------------------------------------------------------------------------------

@dataclass
class Split:
    """One split of the English corpus, as tokens: ``english[i]`` and ``genre[i]`` per sentence (*Shuffle
    and *Reverse), and the AO-CHILDES sentences prepared for the *Hop languages."""

    english: list[list[int]] = field(default_factory=list)
    genre: list[str] = field(default_factory=list)
    hop: list[HopSentence] = field(default_factory=list)


@dataclass
class Corpus:
    tokenizer: object
    train: Split
    test: Split
    stats: dict

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    @property
    def eos(self) -> int:
        return self.token_id(EOS)

    @property
    def markers(self) -> dict[str, int]:
        return {"reverse": self.token_id(MARKER_REV), "hop": self.token_id(MARKER_SING)}


def split_groups(groups: Sequence[str], test_fraction: float, seed: int) -> set[str]:
    """The held-out groups: a ``test_fraction`` of the distinct groups, drawn with ``default_rng(seed)``."""
    distinct = sorted(set(groups))
    n_test = max(1, int(round(test_fraction * len(distinct))))
    pick = np.random.default_rng(seed).choice(len(distinct), size=n_test, replace=False)
    return {distinct[i] for i in pick}


def build_corpus(aochildes_dir: Path, shakespeare_file: Path | None, vocab_size: int, max_tokens: int,
                 test_fraction: float = 0.1, split_seed: int = 0, corpus_fraction: float = 1.0) -> Corpus:
    """Load, split and tokenize the corpus. Sentences keep 2..``max_tokens`` tokens (the paper keeps
    2..350 GPT-2 tokens; here the limit is the model's context so that every test sentence fits).
    ``corpus_fraction`` < 1 keeps that fraction of the AO-CHILDES transcripts and of the Shakespeare text
    (a quick corpus for the smoke profile)."""
    if not 0 < corpus_fraction <= 1:
        raise ValueError(f"corpus_fraction must be in (0, 1], got {corpus_fraction}")
    utterances = load_aochildes(aochildes_dir)
    if corpus_fraction < 1:
        kept = split_groups([u.group for u in utterances], corpus_fraction, split_seed + 1)
        utterances = [u for u in utterances if u.group in kept]
    held_out = split_groups([u.group for u in utterances], test_fraction, split_seed)
    genres = {"aochildes": ([u.words for u in utterances], [u.group in held_out for u in utterances])}
    if shakespeare_file is not None:
        sents = shakespeare_sentences(Path(shakespeare_file).read_text())
        sents = sents[: max(2, int(round(corpus_fraction * len(sents))))]
        cut = int(round((1 - test_fraction) * len(sents)))
        genres["tinyshakespeare"] = (sents, [i >= cut for i in range(len(sents))])
    train_texts = [" ".join(w) for g in genres.values() for w, t in zip(*g) if not t]
    tok = train_tokenizer(train_texts, vocab_size)
    corpus = Corpus(tok, Split(), Split(), {})
    stats = {}
    for genre, (sentences, is_test) in genres.items():
        words = encode_words(tok, sentences)
        kept = {"train": 0, "test": 0}
        n_words = {"train": 0, "test": 0}
        for i, ws in enumerate(words):
            tokens = [t for w in ws for t in w]
            if not 2 <= len(tokens) <= max_tokens:
                continue
            split = corpus.test if is_test[i] else corpus.train
            split.english.append(tokens)
            split.genre.append(genre)
            kept["test" if is_test[i] else "train"] += 1
            n_words["test" if is_test[i] else "train"] += sum(1 for w in sentences[i] if w not in TERMINALS)
        stats[genre] = {"sentences": kept, "words": n_words}
    # *Hop: AO-CHILDES only (the %mor tier). Lemmatise the verbs, then tokenize word by word.
    hop_words = [[lem if lem is not None else w for w, lem in zip(u.words, u.lemmas)] for u in utterances]
    encoded = encode_words(tok, hop_words)
    for u, ws in zip(utterances, encoded):
        s = HopSentence(tuple(tuple(w) for w in ws), tuple(lem is not None for lem in u.lemmas),
                        tuple(w in TERMINALS for w in u.words))
        n_markers = sum(s.verbs)
        if not 2 <= len(s.tokens) + n_markers <= max_tokens:
            continue
        if hop_affected(s) and not hop_complete(s):
            continue  # the paper's filter_hop: affected sentences whose markers cannot hop 4 words are dropped
        (corpus.test if u.group in held_out else corpus.train).hop.append(s)
    stats["hop"] = {name: {"sentences": len(sp.hop), "affected": sum(hop_affected(s) for s in sp.hop)}
                    for name, sp in (("train", corpus.train), ("test", corpus.test))}
    corpus.stats = stats
    return corpus


# --- token streams of one language ---------------------------------------------------------------------------

@dataclass
class LanguageData:
    """What one language's models train and are evaluated on."""

    language: str
    train_stream: np.ndarray  # (N,) int64: every training sentence followed by <eos>, in corpus order
    test: list[list[int]]  # held-out sentences of this language (the paper's "affected" test sentences)
    test_genre: list[str]
    marker: int | None = None  # the *Hop marker id (surprisal test), None otherwise


def sample_test_indices(genre: Sequence[str], n_per_genre: int, seed: int = 0) -> list[int]:
    """Up to ``n_per_genre`` held-out sentences of each genre (the paper samples 1,000 per BabyLM genre),
    without replacement, in corpus order."""
    rng = np.random.default_rng(seed)
    genre = np.asarray(genre)
    picked = []
    for g in sorted(set(genre.tolist())):
        idx = np.flatnonzero(genre == g)
        picked += rng.choice(idx, size=min(n_per_genre, idx.size), replace=False).tolist()
    return sorted(picked)


def make_stream(sentences: Sequence[Sequence[int]], eos: int) -> np.ndarray:
    """Concatenate sentences, each followed by ``eos`` (the authors' training format before chunking)."""
    total = sum(len(s) + 1 for s in sentences)
    return np.fromiter(chain.from_iterable(chain(s, (eos,)) for s in sentences), dtype=np.int64, count=total)


def language_data(corpus: Corpus, language: str, n_test_per_genre: int, n_test_hop: int,
                  genres: Sequence[str] = GENRES) -> LanguageData:
    """Perturb the training and test splits into ``language``; test sentences are sampled once (seed 0)
    from the held-out English sentences, so every language of a family is scored on the same sentences."""
    lang = LANGUAGES[language]
    if lang.family == "hop":
        train = [hop_perturb(s, lang.kind, corpus.markers["hop"]) for s in corpus.train.hop]
        affected = [s for s in corpus.test.hop if hop_affected(s)]
        idx = sorted(np.random.default_rng(0).choice(len(affected), size=min(n_test_hop, len(affected)),
                                                     replace=False).tolist())
        test = [hop_perturb(affected[i], lang.kind, corpus.markers["hop"]) for i in idx]
        return LanguageData(language, make_stream(train, corpus.eos), test, ["aochildes"] * len(test),
                            corpus.markers["hop"])
    keep_train = [i for i, g in enumerate(corpus.train.genre) if g in genres]
    keep_test = [i for i, g in enumerate(corpus.test.genre) if g in genres]
    train = perturb_sentences(language, [corpus.train.english[i] for i in keep_train], corpus.markers)
    test_genres = [corpus.test.genre[i] for i in keep_test]
    idx = sample_test_indices(test_genres, n_test_per_genre)
    test = perturb_sentences(language, [corpus.test.english[keep_test[i]] for i in idx], corpus.markers)
    return LanguageData(language, make_stream(train, corpus.eos), test, [test_genres[i] for i in idx])


def corpus_summary(corpus: Corpus) -> dict:
    """Sentence and word counts per genre and split (for the README's corpus-size statement)."""
    rows = {}
    for genre in GENRES:
        if genre in corpus.stats:
            s = corpus.stats[genre]
            rows[genre] = {"train_sentences": s["sentences"]["train"], "test_sentences": s["sentences"]["test"],
                           "train_words": s["words"]["train"], "test_words": s["words"]["test"]}
    return rows

