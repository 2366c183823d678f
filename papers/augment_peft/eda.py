"""Easy Data Augmentation (EDA; Wei & Zou 2019, Sec. 2) with an offline synonym proxy.

EDA's four operations on a sentence of ``l`` words, with strength ``alpha`` and ``n = max(1, int(alpha * l))``:

- SR (synonym replacement): ``n`` distinct non-stop-word positions that have a synonym are replaced by a
  random synonym;
- RI (random insertion): ``n`` times, a random synonym of a random non-stop word of the sentence is
  inserted at a random position;
- RS (random swap): ``n`` times, two random positions are swapped;
- RD (random deletion): every word is deleted with probability ``alpha`` (at least one word is kept).

Each augmented copy applies ONE operation; the copies of a sentence cycle through SR, RI, RS, RD from a
random starting operation (the original code draws ``num_aug/4 + 1`` copies per operation, shuffles and
keeps ``num_aug``; cycling gives the same balanced mix without the surplus draws).

WordNet (EDA's synonym source) is not available offline. :class:`EmbeddingSynonyms` is the proxy used
here: the ``k`` nearest whole-word tokens to a word in the input (word-piece) embedding table of the
encoder, by cosine similarity, excluding the word itself, its morphological variants (one a prefix of the
other) and stop words. Such neighbours are mostly synonyms or co-hyponyms ("film" -> "movie"), but they can
also be antonyms ("good" -> "bad"), so the proxy is less label-preserving than WordNet on sentiment data;
the README says so. Any ``synonyms(word) -> list[str]`` callable can be passed instead (the tests pass a
hand-written dictionary).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

# EDA's stop-word list (the NLTK English list it ships with), lower case.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is are
was were be been being have has had having do does did doing a an the and but if or because as until while
of at by for with about against between into through during before after above below to from up down in
out on off over under again further then once here there when where why how all any both each few more most
other some such no nor not only own same so than too very s t can will just don should now
""".split())

OPERATIONS = ("sr", "ri", "rs", "rd")

Synonyms = Callable[[str], Sequence[str]]


def n_changed(n_words: int, alpha: float) -> int:
    """Words changed by SR, RI and RS: ``max(1, int(alpha * l))`` (EDA Sec. 2)."""
    return max(1, int(alpha * n_words))


def synonym_replacement(words: list[str], n: int, rng: np.random.Generator, synonyms: Synonyms) -> list[str]:
    """SR: replace up to ``n`` distinct non-stop-word positions that have synonyms by a random synonym."""
    out = list(words)
    candidates = [i for i, w in enumerate(words) if w not in STOP_WORDS and len(synonyms(w)) > 0]
    for i in rng.permutation(len(candidates))[:n]:
        pos = candidates[int(i)]
        options = list(synonyms(words[pos]))
        out[pos] = options[int(rng.integers(len(options)))]
    return out


def random_insertion(words: list[str], n: int, rng: np.random.Generator, synonyms: Synonyms) -> list[str]:
    """RI: ``n`` times insert a random synonym of a random non-stop word at a random position (a word
    without synonyms is skipped; if no word has one the sentence is returned unchanged)."""
    out = list(words)
    candidates = [w for w in words if w not in STOP_WORDS and len(synonyms(w)) > 0]
    if not candidates:
        return out
    for _ in range(n):
        w = candidates[int(rng.integers(len(candidates)))]
        options = list(synonyms(w))
        new = options[int(rng.integers(len(options)))]
        out.insert(int(rng.integers(len(out) + 1)), new)
    return out


def random_swap(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """RS: ``n`` times swap the words at two distinct random positions (unchanged if fewer than 2 words)."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = (int(v) for v in rng.choice(len(out), size=2, replace=False))
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """RD: delete every word independently with probability ``p``; keep one random word if all go."""
    if len(words) <= 1:
        return list(words)
    keep = rng.random(len(words)) >= p
    if not keep.any():
        return [words[int(rng.integers(len(words)))]]
    return [w for w, k in zip(words, keep) if k]


def apply_operation(op: str, words: list[str], alpha: float, rng: np.random.Generator,
                    synonyms: Synonyms) -> list[str]:
    """One EDA operation at strength ``alpha`` on a list of words."""
    n = n_changed(len(words), alpha)
    if op == "sr":
        return synonym_replacement(words, n, rng, synonyms)
    if op == "ri":
        return random_insertion(words, n, rng, synonyms)
    if op == "rs":
        return random_swap(words, n, rng)
    if op == "rd":
        return random_deletion(words, alpha, rng)
    raise ValueError(f"unknown EDA operation {op!r}; expected one of {OPERATIONS}")


def eda(sentence: str, alpha: float, n_aug: int, rng: np.random.Generator, synonyms: Synonyms) -> list[str]:
    """``n_aug`` augmented copies of ``sentence`` (whitespace-tokenised, lower case), one operation each,
    cycling through SR, RI, RS, RD from a random start."""
    words = sentence.lower().split()
    start = int(rng.integers(len(OPERATIONS)))
    return [" ".join(apply_operation(OPERATIONS[(start + k) % len(OPERATIONS)], words, alpha, rng, synonyms))
            for k in range(n_aug)]


def augment_corpus(texts: Sequence[str], labels: Sequence[int], alpha: float, n_aug: int, seed: int,
                   synonyms: Synonyms) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each original followed by its ``n_aug`` copies: (texts, labels, group), where ``group[i]`` is the
    index of the original sentence row ``i`` came from (the copies inherit its label)."""
    rng = np.random.default_rng(seed)
    out_texts, out_labels, groups = [], [], []
    for g, (text, label) in enumerate(zip(texts, labels)):
        copies = [" ".join(text.lower().split())] + eda(text, alpha, n_aug, rng, synonyms)
        out_texts += copies
        out_labels += [int(label)] * len(copies)
        groups += [g] * len(copies)
    return out_texts, np.asarray(out_labels, dtype=np.int64), np.asarray(groups, dtype=np.int64)


def word_change_fraction(original: str, augmented: str) -> float:
    """1 - (multiset overlap of words) / max(len): 0 for an unchanged word multiset, 1 for disjoint."""
    a, b = original.split(), augmented.split()
    if not a and not b:
        return 0.0
    from collections import Counter

    overlap = sum((Counter(a) & Counter(b)).values())
    return 1.0 - overlap / max(len(a), len(b))


class EmbeddingSynonyms:
    """Synonym proxy: the ``k`` nearest whole-word vocabulary tokens to a word by cosine similarity of the
    encoder's input embeddings (see the module docstring). ``vocab[i]`` labels row ``i`` of ``vectors``.

    Candidates are alphabetic tokens of >= 3 letters that are not stop words; a word that is not such a
    token has no synonyms. Neighbours that are a prefix of the word or have it as a prefix (plural,
    inflection) are skipped. Results are cached.
    """

    def __init__(self, vocab: Sequence[str], vectors: np.ndarray, k: int = 5):
        keep = [i for i, w in enumerate(vocab) if w.isalpha() and w.isascii() and len(w) >= 3
                and w not in STOP_WORDS]
        self.words = [vocab[i] for i in keep]
        self.index = {w: j for j, w in enumerate(self.words)}
        v = np.asarray(vectors, dtype=np.float64)[keep]
        self.unit = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        self.k = k
        self._cache: dict[str, list[str]] = {}

    def _pick(self, word: str, order: np.ndarray) -> list[str]:
        result: list[str] = []
        for c in order:
            cand = self.words[int(c)]
            if cand == word or cand.startswith(word) or word.startswith(cand):
                continue
            result.append(cand)
            if len(result) == self.k:
                break
        return result

    def __call__(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        j = self.index.get(word)
        result: list[str] = []
        if j is not None:
            sims = self.unit @ self.unit[j]
            m = min(sims.size, 10 * self.k + 10)  # enough candidates for the filters, usually
            top = np.argpartition(-sims, m - 1)[:m]
            result = self._pick(word, top[np.lexsort((top, -sims[top]))])  # by similarity, ties by index
            if len(result) < self.k and m < sims.size:
                result = self._pick(word, np.lexsort((np.arange(sims.size), -sims)))
        self._cache[word] = result
        return result
