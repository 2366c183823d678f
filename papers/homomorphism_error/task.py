"""The SCAN-style command language of An & Du (2026), Sec. 3, its batching, and the real-SCAN fragment.

Expressions are ``k`` clauses joined by ``then``; a clause is a primitive (walk, jump, look, turn)
optionally followed by a modifier (twice, thrice); ``n_noise`` noise tokens (foo, bar, baz) are inserted
at uniformly random positions of the input. The output is the concatenation of the clauses' meanings:
``walk twice then jump`` -> ``WALK WALK JUMP``; noise has no meaning.

Training sets hold 2-clause expressions with noise; the OOD test sets hold 5..12 clauses without noise.
As in the authors' generator, a data set is up to ``max_samples`` *distinct* (input, output) pairs drawn
in at most ``10 * max_samples`` attempts: with 2 clauses and no noise only (4 * 3)^2 = 144 distinct pairs
exist, so the noise-0 training set is much smaller than the others.

The model reads the input and is trained as a per-position classifier: the logit at input position ``t``
predicts output token ``t``, over the first ``min(T_in, T_out)`` positions of the *padded batch*, padding
(id 0) ignored (the authors' ``experiment.py``). This is a position-aligned task, not generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PRIMITIVES = ("walk", "jump", "look", "turn")
MODIFIERS = ("twice", "thrice")
NOISE = ("foo", "bar", "baz")
CONNECTOR = "then"
PAD = "<pad>"
REPEATS = {None: 1, "twice": 2, "thrice": 3}


def make_vocab() -> list[str]:
    """One fixed vocabulary for every train and test set: pad (id 0), then the sorted input and output
    tokens (the authors fix it the same way so ids agree across runs)."""
    tokens = set(PRIMITIVES) | {p.upper() for p in PRIMITIVES} | set(MODIFIERS) | set(NOISE) | {CONNECTOR}
    return [PAD] + sorted(tokens)


VOCAB = make_vocab()
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PRIMITIVE_IDS = frozenset(TOKEN_ID[t] for t in PRIMITIVES)
MODIFIER_IDS = tuple(TOKEN_ID[t] for t in MODIFIERS)


def generate_expression(prims: list[str], mods: list[str | None], n_noise: int,
                        rng: np.random.Generator) -> list[str]:
    """Input tokens: clauses joined by ``then``, then ``n_noise`` noise tokens each inserted at a uniform
    position 0..len (so noise may separate a primitive from its modifier)."""
    parts: list[str] = []
    for i, (p, m) in enumerate(zip(prims, mods)):
        parts.append(p)
        if m is not None:
            parts.append(m)
        if i < len(prims) - 1:
            parts.append(CONNECTOR)
    for _ in range(n_noise):
        pos = int(rng.integers(0, len(parts) + 1))
        parts.insert(pos, NOISE[int(rng.integers(0, len(NOISE)))])
    return parts


def generate_output(prims: list[str], mods: list[str | None]) -> list[str]:
    """The meaning: each primitive in upper case, repeated 1, 2 or 3 times."""
    out: list[str] = []
    for p, m in zip(prims, mods):
        out += [p.upper()] * REPEATS[m]
    return out


def interpret(tokens: list[str]) -> list[str]:
    """Meaning of an input token list (noise ignored); the inverse check of the generator."""
    out: list[str] = []
    for tok in tokens:
        if tok in PRIMITIVES:
            out.append(tok.upper())
        elif tok in MODIFIERS:
            if not out:
                raise ValueError(f"modifier {tok!r} with nothing to modify in {tokens}")
            out += [out[-1]] * (REPEATS[tok] - 1)
    return out


def generate_dataset(n_clauses: int, n_noise: int, max_samples: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Up to ``max_samples`` distinct (input, output) pairs of ``n_clauses`` clauses and ``n_noise`` noise
    tokens, in the order first drawn (deterministic given ``seed``)."""
    rng = np.random.default_rng(seed)
    seen: dict[tuple, None] = {}
    choices = (None,) + MODIFIERS
    for _ in range(10 * max_samples):
        if len(seen) >= max_samples:
            break
        prims = [PRIMITIVES[int(i)] for i in rng.integers(0, len(PRIMITIVES), n_clauses)]
        mods = [choices[int(i)] for i in rng.integers(0, len(choices), n_clauses)]
        expr = generate_expression(prims, mods, n_noise, rng)
        seen.setdefault((tuple(expr), tuple(generate_output(prims, mods))), None)
    return [(list(x), list(y)) for x, y in seen]


def encode(tokens: list[str]) -> list[int]:
    try:
        return [TOKEN_ID[t] for t in tokens]
    except KeyError as exc:
        raise ValueError(f"token {exc.args[0]!r} is not in the vocabulary") from None


@dataclass
class EncodedSet:
    """A data set as padded id tensors: inputs (N, T_in), outputs (N, T_out), pad id 0."""

    inputs: torch.Tensor
    outputs: torch.Tensor
    input_lengths: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``index``, re-padded to the batch's own longest input and output (as a DataLoader with
        ``pad_sequence`` would give), so the aligned length ``min(T_in, T_out)`` is the batch's."""
        x, y = self.inputs[index], self.outputs[index]
        t_in = int((x != 0).sum(1).max())
        t_out = int((y != 0).sum(1).max())
        return x[:, :t_in], y[:, :t_out]


def encode_set(data: list[tuple[list[str], list[str]]]) -> EncodedSet:
    if not data:
        raise ValueError("empty data set")
    xs = [encode(x) for x, _ in data]
    ys = [encode(y) for _, y in data]
    t_in, t_out = max(map(len, xs)), max(map(len, ys))
    inputs = torch.zeros(len(xs), t_in, dtype=torch.long)
    outputs = torch.zeros(len(ys), t_out, dtype=torch.long)
    for i, (x, y) in enumerate(zip(xs, ys)):
        inputs[i, :len(x)] = torch.tensor(x)
        outputs[i, :len(y)] = torch.tensor(y)
    return EncodedSet(inputs, outputs, torch.tensor([len(x) for x in xs]))


def aligned(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate (B, T_in, V) logits and (B, T_out) targets to their common length min(T_in, T_out)."""
    t = min(logits.shape[1], targets.shape[1])
    return logits[:, :t], targets[:, :t]


class EpochBatches:
    """``batch_fn(step)`` for the shared training loop: shuffled mini-batches, epoch after epoch, the last
    batch of an epoch smaller (a DataLoader with ``shuffle=True, drop_last=False``)."""

    def __init__(self, data: EncodedSet, batch_size: int, seed: int):
        self.data, self.batch_size = data, batch_size
        self.per_epoch = -(-len(data) // batch_size)
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.arange(len(data))

    def steps(self, epochs: int) -> int:
        return epochs * self.per_epoch

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = step % self.per_epoch
        if k == 0:
            self.order = torch.randperm(len(self.data), generator=self.gen)
        return self.data.batch(self.order[k * self.batch_size:(k + 1) * self.batch_size])


# --- the real SCAN data (Lake & Baroni 2018) --------------------------------------------------------------

SCAN_ACTIONS = {"I_WALK": "WALK", "I_JUMP": "JUMP", "I_LOOK": "LOOK"}


def parse_scan_line(line: str) -> tuple[list[str], list[str]]:
    """``IN: walk twice and jump OUT: I_WALK I_WALK I_JUMP`` -> (command tokens, action tokens)."""
    line = line.strip()
    if not line.startswith("IN: ") or " OUT: " not in line:
        raise ValueError(f"not a SCAN line: {line!r}")
    command, actions = line[4:].split(" OUT: ")
    return command.split(), actions.split()


def scan_to_fragment(command: list[str], actions: list[str]) -> tuple[list[str], list[str]] | None:
    """Map a SCAN example into the synthetic language when it lies in the shared fragment: primitives walk,
    jump, look (SCAN's ``turn`` needs a direction, ``run`` is not in the synthetic language), modifiers
    twice/thrice, ``and`` (x and y = x then y) rewritten as ``then``. Returns None outside the fragment."""
    allowed = {"walk", "jump", "look", "twice", "thrice", "and"}
    if not set(command) <= allowed or not set(actions) <= set(SCAN_ACTIONS):
        return None
    return [CONNECTOR if t == "and" else t for t in command], [SCAN_ACTIONS[a] for a in actions]


def scan_fragment(lines) -> list[tuple[list[str], list[str]]]:
    """Distinct SCAN examples (from any split) that lie in the shared fragment, mapped into the synthetic
    language, in first-seen order."""
    seen: dict[tuple, None] = {}
    for line in lines:
        if not line.strip():
            continue
        mapped = scan_to_fragment(*parse_scan_line(line))
        if mapped is not None:
            seen.setdefault((tuple(mapped[0]), tuple(mapped[1])), None)
    return [(list(x), list(y)) for x, y in seen]


def read_scan_lines(path) -> list[str]:
    """Lines of one fetched SCAN file, through Hugging Face ``datasets`` (offline text loader)."""
    from datasets import load_dataset

    return load_dataset("text", data_files=str(path), split="train")["text"]
