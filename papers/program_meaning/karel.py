"""The Karel-like grid-world DSL of Jin & Rinard (ICML 2024, Sec. 2.1): worlds, the interpreter under the
original and the alternative semantics (Sec. 4), the random spec/program sampler and the token encoding.

A world is an ``n x n`` grid (the paper: 8x8 with a border of walls, i.e. a 6x6 interior; here the interior
size ``n`` is a parameter and the border walls are implicit). It holds a robot (cell ``(x, y)``, facing
N/E/S/W), interior walls and markers (a count per cell). A program is a straight-line sequence of the five
actions ``move, turn_left, turn_right, put_marker, pick_marker`` (the paper's ICML setting: no loops, no
conditionals). Semantics as in the authors' Karel library: ``move`` into a wall or the border and
``pick_marker`` on a cell without markers do nothing; the robot carries unlimited markers.

Everything is vectorised over a batch of programs and a batch of example worlds per program: world arrays
have shape ``(B, E)`` (+ ``(n*n,)`` for walls and markers) and programs are ``(B, L)`` action ids padded
with ``NOOP = -1``.

**Alternative semantics** (Sec. 4, the interventional baseline): the program *text* is unchanged, only the
meaning of each action token is swapped before execution. ``opposite`` and ``random`` are the authors'
``opposite1`` and ``random1`` maps (``probe/alt.py``); a semantics is a tuple ``meaning[token] = primitive``.

**Token encoding** (our compact stand-in for the paper's rendered grids; see the README's deviations): an
example is ``IN <robot cell> <direction> OUT <robot cell> <direction> IN_MARKS <marker cell>* OUT_MARKS
<marker cell>* [WALL <wall cell>*]`` (input and output poses side by side; a marker cell is repeated once per
marker; walls never change); a training sequence is the shown examples followed by ``CODE a_1 ... a_L
END``. The prompt for synthesis ends with ``CODE``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

ACTIONS = ("move", "turn_left", "turn_right", "put_marker", "pick_marker")
MOVE, TURN_LEFT, TURN_RIGHT, PUT_MARKER, PICK_MARKER = range(5)
NOOP = -1  # padding of programs shorter than the batch's longest
# Sampling weights of the authors' generator (data/lib/karel_lib/generate.py, stmt_weights)
ACTION_WEIGHTS = {"move": 5, "turn_left": 3, "turn_right": 3, "put_marker": 2, "pick_marker": 2}
DIRECTIONS = "NESW"  # 0 = north (y - 1), 1 = east (x + 1), 2 = south (y + 1), 3 = west (x - 1)
DX = np.array([0, 1, 0, -1], dtype=np.int16)
DY = np.array([-1, 0, 1, 0], dtype=np.int16)
MARKER_DTYPE = np.int16  # marker counts; small integer types keep the batched interpreter fast

# meaning[token] = the primitive the token executes
SEMANTICS: dict[str, tuple[int, ...]] = {
    "original": (MOVE, TURN_LEFT, TURN_RIGHT, PUT_MARKER, PICK_MARKER),
    # opposite1: turn_left <-> turn_right, put_marker <-> pick_marker, move unchanged
    "opposite": (MOVE, TURN_RIGHT, TURN_LEFT, PICK_MARKER, PUT_MARKER),
    # random1: move -> turn_right, turn_left -> put_marker, turn_right -> pick_marker,
    #          put_marker -> move, pick_marker -> turn_left
    "random": (TURN_RIGHT, PUT_MARKER, PICK_MARKER, MOVE, TURN_LEFT),
}


@dataclass
class Worlds:
    """A batch of worlds: ``x, y, d`` of shape S (any batch shape), ``walls`` (bool) and ``markers`` (int)
    of shape S + (n*n,), cell index ``y * n + x``."""

    n: int
    x: np.ndarray
    y: np.ndarray
    d: np.ndarray
    walls: np.ndarray
    markers: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape

    @property
    def cell(self) -> np.ndarray:
        return self.y * self.n + self.x

    def copy(self) -> "Worlds":
        return replace(self, x=self.x.copy(), y=self.y.copy(), d=self.d.copy(), walls=self.walls.copy(),
                       markers=self.markers.copy())

    def __getitem__(self, idx) -> "Worlds":
        return Worlds(self.n, self.x[idx], self.y[idx], self.d[idx], self.walls[idx], self.markers[idx])

    def equal(self, other: "Worlds") -> np.ndarray:
        """Elementwise: same robot pose and same markers (walls never change)."""
        return ((self.x == other.x) & (self.y == other.y) & (self.d == other.d)
                & (self.markers == other.markers).all(-1))


def world_from_grid(rows: list[str]) -> Worlds:
    """One world from a picture, for tests and examples: ``.`` empty, ``#`` wall, a digit = that many
    markers, ``^ > v <`` the robot facing N/E/S/W (on a cell without markers)."""
    n = len(rows)
    if any(len(r) != n for r in rows):
        raise ValueError("world_from_grid needs a square picture")
    walls = np.zeros(n * n, dtype=bool)
    markers = np.zeros(n * n, dtype=MARKER_DTYPE)
    robot = None
    for y, row in enumerate(rows):
        for x, ch in enumerate(row):
            c = y * n + x
            if ch == "#":
                walls[c] = True
            elif ch.isdigit():
                markers[c] = int(ch)
            elif ch in "^>v<":
                robot = (x, y, "^>v<".index(ch))
            elif ch != ".":
                raise ValueError(f"unknown character {ch!r} in world picture")
    if robot is None:
        raise ValueError("world picture has no robot")
    x, y, d = (np.array(v, dtype=np.int16) for v in robot)
    return Worlds(n, x, y, d, walls, markers)


# --- the interpreter -------------------------------------------------------------------------------------

def step(worlds: Worlds, primitive: np.ndarray) -> Worlds:
    """Apply one primitive per world in place (``primitive`` broadcasts to ``worlds.shape``; ``NOOP`` does
    nothing) and return the worlds."""
    op = np.broadcast_to(primitive, worlds.shape)
    n = worlds.n
    # move: to the cell in front unless it is outside the grid or a wall
    nx, ny = worlds.x + DX[worlds.d], worlds.y + DY[worlds.d]
    inside = (nx >= 0) & (nx < n) & (ny >= 0) & (ny < n)
    front = np.clip(ny, 0, n - 1) * n + np.clip(nx, 0, n - 1)
    blocked = ~inside | np.take_along_axis(worlds.walls, front[..., None], -1)[..., 0]
    go = (op == MOVE) & ~blocked
    worlds.x = np.where(go, nx, worlds.x)
    worlds.y = np.where(go, ny, worlds.y)
    worlds.d = np.where(op == TURN_LEFT, (worlds.d + 3) % 4, worlds.d)
    worlds.d = np.where(op == TURN_RIGHT, (worlds.d + 1) % 4, worlds.d)
    here = worlds.cell[..., None]
    count = np.take_along_axis(worlds.markers, here, -1)[..., 0]
    delta = (op == PUT_MARKER).astype(MARKER_DTYPE) - ((op == PICK_MARKER) & (count > 0)).astype(MARKER_DTYPE)
    np.put_along_axis(worlds.markers, here, (count + delta)[..., None], -1)
    return worlds


@dataclass
class Trace:
    """Robot pose before the program (index 0) and after each of its ``L`` tokens: arrays ``(B, E, L + 1)``.
    After a program's end (padding) the pose stays put."""

    x: np.ndarray
    y: np.ndarray
    d: np.ndarray

    def cell(self, n: int) -> np.ndarray:
        return self.y * n + self.x


def execute(programs: np.ndarray, inputs: Worlds, semantics: str = "original") -> tuple[Worlds, Trace]:
    """Run program ``b`` (row of ``programs``, shape (B, L), NOOP-padded) on every example world
    ``inputs[b, :]`` (shape (B, E)) under ``semantics``; return the final worlds and the pose trace."""
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}; choose from {sorted(SEMANTICS)}")
    programs = np.asarray(programs)
    if programs.ndim != 2 or programs.shape[0] != inputs.shape[0]:
        raise ValueError(f"programs must be (B, L) with B = {inputs.shape[0]}; got {programs.shape}")
    meaning = np.array(SEMANTICS[semantics] + (NOOP,))  # index -1 (NOOP) maps to NOOP
    worlds = inputs.copy()
    xs, ys, ds = [worlds.x.copy()], [worlds.y.copy()], [worlds.d.copy()]
    for t in range(programs.shape[1]):
        step(worlds, meaning[programs[:, t]][:, None])
        xs.append(worlds.x.copy())
        ys.append(worlds.y.copy())
        ds.append(worlds.d.copy())
    return worlds, Trace(np.stack(xs, -1), np.stack(ys, -1), np.stack(ds, -1))


def run_program(program: list[str] | list[int], world: Worlds, semantics: str = "original") -> Worlds:
    """Convenience for one program (action names or ids) on one world."""
    ids = [ACTIONS.index(a) if isinstance(a, str) else int(a) for a in program]
    batched = Worlds(world.n, *(np.asarray(v).reshape(1, 1) for v in (world.x, world.y, world.d)),
                     world.walls.reshape(1, 1, -1), world.markers.reshape(1, 1, -1))
    final, _ = execute(np.array([ids], dtype=np.int64).reshape(1, len(ids)), batched, semantics)
    return final[0, 0]


# --- the sampler -----------------------------------------------------------------------------------------

def sample_worlds(rng: np.random.Generator, shape: tuple[int, ...], n: int, wall_ratio: float,
                  marker_ratio: float) -> Worlds:
    """Random worlds as in the authors' generator (Karel.random_world): each interior cell is a wall with
    probability ``wall_ratio``; the robot stands on a uniform random cell (cleared of walls) facing a
    uniform direction; every other free cell holds one marker with probability ``marker_ratio``."""
    cells = n * n
    walls = rng.random(shape + (cells,), dtype=np.float32) < wall_ratio
    x = rng.integers(0, n, size=shape, dtype=np.int16)
    y = rng.integers(0, n, size=shape, dtype=np.int16)
    d = rng.integers(0, 4, size=shape, dtype=np.int16)
    robot = (y * n + x)[..., None] == np.arange(cells)
    walls &= ~robot
    markers = ((rng.random(shape + (cells,), dtype=np.float32) < marker_ratio) & ~walls & ~robot).astype(MARKER_DTYPE)
    return Worlds(n, x, y, d, walls, markers)


def sample_programs(rng: np.random.Generator, count: int, min_length: int, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` programs with lengths uniform on ``[min_length, max_length]`` and i.i.d. actions drawn with
    ``ACTION_WEIGHTS``; returns (programs (count, max_length) NOOP-padded, lengths (count,))."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    lengths = rng.integers(min_length, max_length + 1, size=count)
    p = np.array([ACTION_WEIGHTS[a] for a in ACTIONS], dtype=float)
    actions = rng.choice(len(ACTIONS), size=(count, max_length), p=p / p.sum())
    programs = np.where(np.arange(max_length) < lengths[:, None], actions, NOOP)
    return programs.astype(np.int64), lengths


@dataclass
class SpecSet:
    """Synthesis tasks: reference programs and ``n_examples`` input/output worlds each, of which the first
    ``n_shown`` form the specification in the prompt and the rest are held out."""

    programs: np.ndarray  # (B, L) NOOP-padded reference programs
    lengths: np.ndarray  # (B,)
    inputs: Worlds  # (B, E)
    outputs: Worlds  # (B, E)
    n_shown: int

    def __len__(self) -> int:
        return len(self.lengths)


def sample_specs(rng: np.random.Generator, count: int, n: int, n_shown: int, n_held_out: int,
                 min_length: int, max_length: int, wall_ratio: float, marker_ratio: float) -> SpecSet:
    """Random reference programs, each with ``n_shown + n_held_out`` random input worlds and the outputs of
    running the program on them (original semantics)."""
    programs, lengths = sample_programs(rng, count, min_length, max_length)
    inputs = sample_worlds(rng, (count, n_shown + n_held_out), n, wall_ratio, marker_ratio)
    outputs, _ = execute(programs, inputs)
    return SpecSet(programs, lengths, inputs, outputs, n_shown)


# --- tokens ----------------------------------------------------------------------------------------------

class Vocab:
    """Token ids: specials, directions, one token per cell, the five actions."""

    SPECIALS = ("<pad>", "IN", "OUT", "IN_MARKS", "OUT_MARKS", "WALL", "CODE", "END")

    def __init__(self, n: int):
        self.n = n
        self.tokens = list(self.SPECIALS) + [f"dir_{c}" for c in DIRECTIONS] + \
            [f"c{i}" for i in range(n * n)] + list(ACTIONS)
        self.id = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.inp, self.out, self.in_marks, self.out_marks, self.wall, self.code, self.end = (
            self.id[t] for t in self.SPECIALS)
        self.dir0 = self.id["dir_N"]
        self.cell0 = self.id["c0"]
        self.action0 = self.id[ACTIONS[0]]

    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self, ids) -> str:
        return " ".join(self.tokens[i] for i in ids)

    def example_tokens(self, inp: "Worlds", out: "Worlds") -> list[int]:
        """One example (scalar worlds), written out token by token: the reference for
        :meth:`encode_prompts` (cells in increasing order, repeated per marker)."""
        c0 = self.cell0

        def marks(w):
            return [c0 + c for c, k in enumerate(w.markers.tolist()) for _ in range(k)]

        walls = [c0 + int(c) for c in np.flatnonzero(inp.walls)]
        return ([self.inp, c0 + int(inp.cell), self.dir0 + int(inp.d), self.out, c0 + int(out.cell),
                 self.dir0 + int(out.d), self.in_marks] + marks(inp) + [self.out_marks] + marks(out)
                + ([self.wall] + walls if walls else []))

    def encode_prompts(self, specs: SpecSet) -> tuple[np.ndarray, np.ndarray]:
        """The specification of every task (its shown examples, then ``CODE``) as a right-padded array
        (B, T) with the lengths (B,). Vectorised: every token gets a sort key (task, example, segment,
        index in segment) and one sort puts them in order."""
        B, k, C = len(specs), specs.n_shown, self.n * self.n
        inp, out = specs.inputs[:, :k], specs.outputs[:, :k]
        bb, ee = (a.ravel() for a in np.meshgrid(np.arange(B), np.arange(k), indexing="ij"))
        parts: list[tuple[np.ndarray, ...]] = []  # (task, example, segment, index, token)

        def fixed(seg: int, idx: int, tok) -> None:
            parts.append((bb, ee, np.full_like(bb, seg), np.full_like(bb, idx), np.broadcast_to(tok, bb.shape)))

        def cells(seg: int, counts: np.ndarray) -> None:  # counts (B, k, C): one token per unit
            r, c = np.nonzero(counts.reshape(B * k, C))
            rep = counts.reshape(B * k, C)[r, c].astype(np.int64)
            r, c = np.repeat(r, rep), np.repeat(c, rep)
            parts.append((r // k, r % k, np.full_like(r, seg), c + 1, self.cell0 + c))

        fixed(0, 0, self.inp)
        fixed(1, 0, self.cell0 + inp.cell.ravel())
        fixed(1, 1, self.dir0 + inp.d.ravel())
        fixed(2, 0, self.out)
        fixed(3, 0, self.cell0 + out.cell.ravel())
        fixed(3, 1, self.dir0 + out.d.ravel())
        fixed(4, 0, self.in_marks)
        cells(4, inp.markers)
        fixed(5, 0, self.out_marks)
        cells(5, out.markers)
        has_walls = inp.walls.reshape(B * k, C).any(-1)
        parts.append((bb[has_walls], ee[has_walls], np.full(has_walls.sum(), 6), np.zeros(has_walls.sum(), int),
                      np.full(has_walls.sum(), self.wall)))
        cells(6, inp.walls)
        tasks = np.arange(B)
        parts.append((tasks, np.full(B, k), np.zeros(B, int), np.zeros(B, int), np.full(B, self.code)))
        b, e, seg, idx, tok = (np.concatenate([np.asarray(p[i], dtype=np.int64) for p in parts]) for i in range(5))
        key = ((b * (k + 1) + e) * 8 + seg) * (C + 2) + idx  # lexicographic (task, example, segment, index)
        order = np.argsort(key, kind="stable")
        b, tok = b[order], tok[order]
        lengths = np.bincount(b, minlength=B)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ids = np.full((B, int(lengths.max())), self.pad, dtype=np.int64)
        ids[b, np.arange(b.size) - starts[b]] = tok
        return ids, lengths

    def prompts(self, specs: SpecSet) -> list[list[int]]:
        """The specification of every task as token-id lists (see :meth:`encode_prompts`)."""
        ids, lengths = self.encode_prompts(specs)
        return [row[:n].tolist() for row, n in zip(ids, lengths)]

    def encode_training(self, specs: SpecSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training sequences ``prompt + reference program + END``, right-padded: (ids (B, T), lengths (B,),
        prompt lengths (B,))."""
        prompt, plen = self.encode_prompts(specs)
        B, L = specs.programs.shape
        lengths = plen + specs.lengths + 1
        ids = np.full((B, int(lengths.max())), self.pad, dtype=np.int64)
        ids[:, :prompt.shape[1]] = prompt
        j = np.arange(L + 1)
        prog = np.where(j[None, :L] < specs.lengths[:, None], self.action0 + specs.programs, self.pad)
        prog = np.concatenate([prog, np.full((B, 1), self.pad)], 1)
        prog[np.arange(B), specs.lengths] = self.end
        cols = plen[:, None] + j[None, :]
        keep = j[None, :] <= specs.lengths[:, None]
        ids[np.nonzero(keep)[0], cols[keep]] = prog[keep]
        return ids, lengths, plen

    def program(self, actions) -> list[int]:
        """Program tokens followed by ``END``."""
        return [self.action0 + int(a) for a in actions if a != NOOP] + [self.end]

    def parse_program(self, generated: list[int]) -> list[int]:
        """Action ids of a generated continuation: every token up to the first one that is not an action
        (``END`` or anything else) - a lenient parser in place of the paper's grammar-constrained decoding."""
        actions = []
        for t in generated:
            a = t - self.action0
            if not 0 <= a < len(ACTIONS):
                break
            actions.append(a)
        return actions


def pad_programs(programs: list[list[int]], width: int | None = None) -> np.ndarray:
    """(B, width) NOOP-padded array from lists of action ids (width: the longest, at least 1)."""
    width = max([len(p) for p in programs] + [1]) if width is None else width
    out = np.full((len(programs), width), NOOP, dtype=np.int64)
    for i, p in enumerate(programs):
        out[i, :len(p)] = p
    return out
