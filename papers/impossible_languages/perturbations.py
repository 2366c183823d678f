"""The impossible languages of Kallini et al. (2024), Sec. 2 and Table 1, as functions of a token sequence.

Every perturbation maps one sentence, a list of token ids, to a new list of token ids. Each one is a
deterministic function of its arguments: the shuffles that the paper draws from a random number generator
take either a fixed seed (the permutation then depends only on the sentence length) or an explicit
``numpy.random.Generator`` that the caller advances sentence by sentence in corpus order
(NondeterministicShuffle), and the reversal marker position is an explicit argument
(:func:`reverse_marker_positions` draws it the paper's way). The reversible languages have an inverse here
(``undo_*``) and the tests check the round trip.

Three families (names as in the paper):

- *Shuffle: ``NoShuffle`` (English, the control), ``NondeterministicShuffle`` (a fresh random permutation
  per sentence), ``DeterministicShuffle(s)`` (the permutation drawn from ``default_rng(s)``: a fixed
  function of the sentence length), ``LocalShuffle(w)`` (the same fixed permutation inside every window of
  ``w`` tokens), ``EvenOddShuffle`` (even-indexed tokens, then odd-indexed tokens).
- *Reverse: a marker ``R`` is inserted at a random position ``i`` of every sentence. ``NoReverse`` keeps the
  order, ``PartialReverse`` reverses the tokens after the marker, ``FullReverse`` reverses the whole sentence
  (marker included).
- *Hop: every 3rd-person-singular present verb is replaced by its lemma and a marker ``S`` encodes the lost
  agreement: right after the lemma (``NoHop``), 4 tokens later (``TokenHop``) or 4 words later
  (``WordHop``). How the verbs are found without a dependency parser is in :mod:`.corpus`.

The authors' definitions (``utils.py`` of jkallini/mission-impossible-language-models) were read for the
exact rules; this is an independent implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Sequence

import numpy as np

# --- language registry ------------------------------------------------------------------------------------

FAMILIES = ("shuffle", "reverse", "hop")
CONTROLS = {"shuffle": "no_shuffle", "reverse": "no_reverse", "hop": "no_hop"}
HOPS = 4  # the paper's TokenHop / WordHop distance
REVERSE_SEED = 21  # utils.py draws every reversal marker position from default_rng(21)
NONDETERMINISTIC_SEED = 0  # utils.py: NondeterministicShuffle uses one default_rng(0) stream
LOCAL_SHUFFLE_SEED = 0  # utils.py: LocalShuffle(w) permutes every window with default_rng(0)


@dataclass(frozen=True)
class Language:
    id: str  # snake_case identifier used in parameters and tables
    name: str  # the paper's name
    family: str  # shuffle | reverse | hop
    kind: str  # which perturbation
    arg: int | None = None  # seed s of DeterministicShuffle, window w of LocalShuffle


LANGUAGES: dict[str, Language] = {lang.id: lang for lang in [
    Language("no_shuffle", "NoShuffle", "shuffle", "identity"),
    Language("nondeterministic_shuffle", "NondeterministicShuffle", "shuffle", "nondeterministic"),
    Language("deterministic_shuffle_s21", "DeterministicShuffle(s=21)", "shuffle", "deterministic", 21),
    Language("deterministic_shuffle_s57", "DeterministicShuffle(s=57)", "shuffle", "deterministic", 57),
    Language("deterministic_shuffle_s84", "DeterministicShuffle(s=84)", "shuffle", "deterministic", 84),
    Language("local_shuffle_w3", "LocalShuffle(w=3)", "shuffle", "local", 3),
    Language("local_shuffle_w5", "LocalShuffle(w=5)", "shuffle", "local", 5),
    Language("local_shuffle_w10", "LocalShuffle(w=10)", "shuffle", "local", 10),
    Language("even_odd_shuffle", "EvenOddShuffle", "shuffle", "even_odd"),
    Language("no_reverse", "NoReverse", "reverse", "no_reverse"),
    Language("partial_reverse", "PartialReverse", "reverse", "partial_reverse"),
    Language("full_reverse", "FullReverse", "reverse", "full_reverse"),
    Language("no_hop", "NoHop", "hop", "no_hop"),
    Language("token_hop", "TokenHop", "hop", "token_hop"),
    Language("word_hop", "WordHop", "hop", "word_hop"),
]}


def family_members(languages: Sequence[str], family: str) -> list[str]:
    return [lang for lang in languages if LANGUAGES[lang].family == family]


# --- *Shuffle ---------------------------------------------------------------------------------------------

def apply_permutation(tokens: Sequence[int], perm: Sequence[int]) -> list[int]:
    """``out[j] = tokens[perm[j]]``: what ``Generator.shuffle`` does to a list when ``perm`` is the same
    generator's ``permutation(len(tokens))``."""
    return [tokens[i] for i in perm]


def invert_permutation(tokens: Sequence[int], perm: Sequence[int]) -> list[int]:
    out = [0] * len(tokens)
    for j, i in enumerate(perm):
        out[i] = tokens[j]
    return out


def no_shuffle(tokens: Sequence[int]) -> list[int]:
    """NoShuffle: English unchanged."""
    return list(tokens)


def nondeterministic_shuffle(tokens: Sequence[int], rng: np.random.Generator) -> list[int]:
    """NondeterministicShuffle: a fresh uniformly random permutation of the sentence, drawn from ``rng``
    (advanced by this call), so two sentences of equal length get unrelated orders. Irreversible."""
    return apply_permutation(tokens, rng.permutation(len(tokens)))


def deterministic_permutation(n: int, seed: int) -> np.ndarray:
    """The fixed permutation DeterministicShuffle(s) applies to every sentence of ``n`` tokens."""
    return np.random.default_rng(seed).permutation(n)


def deterministic_shuffle(tokens: Sequence[int], seed: int) -> list[int]:
    """DeterministicShuffle(s): permute with ``default_rng(s).permutation(n)``, a function of the sentence
    length ``n`` only (every 7-token sentence is scrambled the same way). Reversible given ``n``."""
    return apply_permutation(tokens, deterministic_permutation(len(tokens), seed))


def undo_deterministic_shuffle(tokens: Sequence[int], seed: int) -> list[int]:
    return invert_permutation(tokens, deterministic_permutation(len(tokens), seed))


def _local_windows(n: int, window: int, seed: int) -> list[int]:
    """Index map of LocalShuffle: every full window of ``window`` tokens gets the same permutation
    ``default_rng(seed).permutation(window)``; the last, shorter window gets the one for its length."""
    perm: list[int] = []
    for start in range(0, n, window):
        size = min(window, n - start)
        perm += [start + int(i) for i in np.random.default_rng(seed).permutation(size)]
    return perm


def local_shuffle(tokens: Sequence[int], window: int, seed: int = LOCAL_SHUFFLE_SEED) -> list[int]:
    """LocalShuffle(w): split the sentence into consecutive windows of ``w`` tokens and apply one fixed
    permutation inside each window. Reversible."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return apply_permutation(tokens, _local_windows(len(tokens), window, seed))


def undo_local_shuffle(tokens: Sequence[int], window: int, seed: int = LOCAL_SHUFFLE_SEED) -> list[int]:
    return invert_permutation(tokens, _local_windows(len(tokens), window, seed))


def even_odd_shuffle(tokens: Sequence[int]) -> list[int]:
    """EvenOddShuffle: the tokens at even positions (0, 2, 4, ...) in order, then those at odd positions."""
    return list(tokens[0::2]) + list(tokens[1::2])


def undo_even_odd_shuffle(tokens: Sequence[int]) -> list[int]:
    n_even = (len(tokens) + 1) // 2
    out = [0] * len(tokens)
    out[0::2] = tokens[:n_even]
    out[1::2] = tokens[n_even:]
    return out


# --- *Reverse ---------------------------------------------------------------------------------------------

def reverse_marker_positions(lengths: Sequence[int], seed: int = REVERSE_SEED) -> np.ndarray:
    """Marker position of each sentence, drawn as in the paper: one ``default_rng(seed)`` stream advanced
    sentence by sentence in corpus order, position uniform on ``0..n`` for an ``n``-token sentence. The
    three *Reverse languages use the same positions."""
    rng = np.random.default_rng(seed)
    return np.array([int(rng.integers(0, n + 1)) for n in lengths], dtype=np.int64)


def no_reverse(tokens: Sequence[int], position: int, marker: int) -> list[int]:
    """NoReverse: English with the marker ``R`` inserted before token ``position``."""
    if not 0 <= position <= len(tokens):
        raise ValueError(f"marker position {position} outside 0..{len(tokens)}")
    return list(tokens[:position]) + [marker] + list(tokens[position:])


def partial_reverse(tokens: Sequence[int], position: int, marker: int) -> list[int]:
    """PartialReverse: the marker at ``position``, then the rest of the sentence in reverse order."""
    if not 0 <= position <= len(tokens):
        raise ValueError(f"marker position {position} outside 0..{len(tokens)}")
    return list(tokens[:position]) + [marker] + list(tokens[position:])[::-1]


def full_reverse(tokens: Sequence[int], position: int, marker: int) -> list[int]:
    """FullReverse: the NoReverse sentence (marker included) read backwards."""
    return no_reverse(tokens, position, marker)[::-1]


def undo_reverse(perturbed: Sequence[int], kind: str, marker: int) -> list[int]:
    """The English sentence back from a *Reverse sentence (the marker is removed)."""
    seq = list(perturbed)
    if kind == "full_reverse":
        seq = seq[::-1]
    i = seq.index(marker)
    rest = seq[i + 1:]
    if kind == "partial_reverse":
        rest = rest[::-1]
    elif kind not in ("no_reverse", "full_reverse"):
        raise ValueError(f"unknown reverse kind {kind!r}")
    return seq[:i] + rest


# --- *Hop -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HopSentence:
    """A sentence prepared for the *Hop languages.

    ``words``: token ids of each word, the 3rd-person-singular present verbs already replaced by their
    lemma; ``verbs``: which words are such verbs; ``punct``: which words are punctuation (not counted as
    words by WordHop).
    """

    words: tuple[tuple[int, ...], ...]
    verbs: tuple[bool, ...]
    punct: tuple[bool, ...]

    def __post_init__(self) -> None:
        if not len(self.words) == len(self.verbs) == len(self.punct):
            raise ValueError("words, verbs and punct must have one entry per word")

    @property
    def tokens(self) -> list[int]:
        return [t for w in self.words for t in w]


def hop_affected(s: HopSentence) -> bool:
    """The paper's ``affect_hop``: the sentence has at least one verb to mark."""
    return any(s.verbs)


def hop_complete(s: HopSentence, hops: int = HOPS) -> bool:
    """The paper's ``filter_hop``: every marked verb is followed by at least ``hops`` words (punctuation not
    counted), so WordHop and TokenHop can both place the marker inside the sentence."""
    for i, is_verb in enumerate(s.verbs):
        if is_verb and sum(1 for p in s.punct[i + 1:] if not p) < hops:
            return False
    return True


def hop_slots(s: HopSentence, rule: str, hops: int = HOPS) -> list[int]:
    """Where each verb's marker goes, as a slot in the (lemmatised, unmarked) token sequence: the marker
    is inserted before token number ``slot`` (``slot == len`` appends it).

    - ``no_hop``: right after the lemma's last token;
    - ``token_hop``: after ``hops`` more tokens of the sentence;
    - ``word_hop``: after the last token of the ``hops``-th following word, punctuation words skipped.

    Counts run over the sentence's own tokens and words; markers of other verbs are never counted (the
    authors' code counts an earlier-inserted marker as a word when two verbs are within 4 words; this
    implementation keeps the rule purely positional).
    """
    ends = list(accumulate(len(w) for w in s.words))  # ends[i] = index after word i's last token
    slots = []
    for i, is_verb in enumerate(s.verbs):
        if not is_verb:
            continue
        if rule == "no_hop":
            slots.append(ends[i])
        elif rule == "token_hop":
            slot = ends[i] + hops
            if slot > ends[-1]:
                raise ValueError(f"TokenHop: verb {i} has fewer than {hops} tokens after it")
            slots.append(slot)
        elif rule == "word_hop":
            counted = [j for j in range(i + 1, len(s.words)) if not s.punct[j]]
            if len(counted) < hops:
                raise ValueError(f"WordHop: verb {i} has fewer than {hops} words after it")
            slots.append(ends[counted[hops - 1]])
        else:
            raise ValueError(f"unknown hop rule {rule!r}")
    return slots


def hop_perturb(s: HopSentence, rule: str, marker: int, hops: int = HOPS) -> list[int]:
    """NoHop / TokenHop / WordHop: the lemmatised sentence with one marker per verb at its slot
    (:func:`hop_slots`); markers that share a slot keep the order of their verbs."""
    tokens = s.tokens
    if not any(s.verbs):
        return tokens  # unaffected sentences are the same in every *Hop language
    slots = hop_slots(s, rule, hops)
    out: list[int] = []
    k = 0
    for pos in range(len(tokens) + 1):
        while k < len(slots) and slots[k] == pos:
            out.append(marker)
            k += 1
        if pos < len(tokens):
            out.append(tokens[pos])
    # slots are non-decreasing for no_hop and token_hop; word_hop slots are too (later verbs, later words)
    if k != len(slots):
        raise AssertionError("hop slots out of order")
    return out


def remove_markers(tokens: Sequence[int], markers: Sequence[int]) -> list[int]:
    drop = set(markers)
    return [t for t in tokens if t not in drop]


# --- a whole split -----------------------------------------------------------------------------------------

def perturb_sentences(language: str, sentences: Sequence[Sequence[int]], markers: dict[str, int]) -> list[list[int]]:
    """Apply a *Shuffle or *Reverse language to every sentence of one split, in corpus order.

    The per-split random streams restart for every split (as in the authors' pipeline, which perturbs each
    split in its own process): NondeterministicShuffle from ``default_rng(0)``, the reversal markers from
    ``default_rng(21)``. ``markers`` maps "reverse" to the R marker id.
    """
    lang = LANGUAGES[language]
    if lang.family == "hop":
        raise ValueError(f"{language} is a *Hop language: use hop_perturb on HopSentence objects")
    if lang.kind == "identity":
        return [list(s) for s in sentences]
    if lang.kind == "nondeterministic":
        rng = np.random.default_rng(NONDETERMINISTIC_SEED)
        return [nondeterministic_shuffle(s, rng) for s in sentences]
    if lang.kind == "deterministic":
        return [deterministic_shuffle(s, lang.arg) for s in sentences]
    if lang.kind == "local":
        return [local_shuffle(s, lang.arg) for s in sentences]
    if lang.kind == "even_odd":
        return [even_odd_shuffle(s) for s in sentences]
    positions = reverse_marker_positions([len(s) for s in sentences])
    fn = {"no_reverse": no_reverse, "partial_reverse": partial_reverse, "full_reverse": full_reverse}[lang.kind]
    return [fn(s, int(p), markers["reverse"]) for s, p in zip(sentences, positions)]
