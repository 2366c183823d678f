"""STAT at toy scale: a skill-composed arithmetic world, a from-scratch step student, a programmatic teacher that
builds the Missing-Skill-Profile from the student's validation failures, and the data selections compared.

The paper (He et al., 2025, Sec. 3) runs: a student saturated on MATH -> a reward model flags difficult
validation questions -> a teacher LLM names the 2-3 skills each failed question is missing (the
Missing-Skill-Profile) -> STAT-Sel re-selects training questions per missing-skill occurrence -> SFT. Here
every stage is exact and programmatic:

- **World** (stands in for MATH): ``n_skills`` skills, skill ``k`` the affine map ``x -> a_k x + b_k (mod p)``
  on Z_p (a bijection). A problem is a start value ``x0`` and a list of skills; its solution is the scratchpad
  of intermediate values ``s_t = skill_t(s_{t-1})`` and its answer the last value. Skills are drawn with Zipf
  frequencies ``f_k ~ (k + 1)^-zipf`` (the skill-imbalanced mixture).
- **Student**: a from-scratch MLP that writes one scratchpad step at a time, ``(s_{t-1}, skill_t) -> s_t``
  (a custom module, not a ``transformers`` LM: the input is two categorical symbols, not text, and a
  sequence model would only have to learn to locate them). Answers are rolled out greedily from its own
  previous steps.
- **Teacher**: for a failed validation problem the skills of the steps the student gets wrong given the
  correct previous value (the first one of which caused the failure) are its missing skills (at most
  ``max_skills`` distinct ones, as the paper's 2-3 per question).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, train

ARMS = ("replay", "uniform", "uniform_b", "stat_sel", "stat_shuffled", "similarity")


# ----------------------------------------------------------------------------------------------- the world
@dataclass(frozen=True)
class World:
    """Skill ``k`` maps x to ``(a[k] * x + b[k]) % p``; ``freqs[k]`` is its share of skill draws (Zipf)."""

    p: int
    a: np.ndarray  # (K,)
    b: np.ndarray  # (K,)
    freqs: np.ndarray  # (K,), sums to 1, decreasing

    @property
    def n_skills(self) -> int:
        return len(self.a)


def zipf_freqs(n_skills: int, exponent: float) -> np.ndarray:
    """f_k = (k + 1)^-exponent / sum_j (j + 1)^-exponent (exponent 0: uniform)."""
    w = np.arange(1, n_skills + 1, dtype=float) ** -float(exponent)
    return w / w.sum()


def make_world(p: int, n_skills: int, zipf: float, rng: np.random.Generator) -> World:
    """``n_skills`` distinct non-identity affine bijections of Z_p (p prime), with Zipf frequencies."""
    if n_skills > (p - 1) * p - 1:
        raise ValueError("more skills than non-identity affine maps of Z_p")
    seen: set[tuple[int, int]] = {(1, 0)}
    a, b = [], []
    while len(a) < n_skills:
        ak, bk = int(rng.integers(1, p)), int(rng.integers(0, p))
        if (ak, bk) not in seen:
            seen.add((ak, bk))
            a.append(ak)
            b.append(bk)
    return World(p=p, a=np.array(a), b=np.array(b), freqs=zipf_freqs(n_skills, zipf))


@dataclass(frozen=True)
class Problems:
    """``x0`` (n,), ``skills`` (n, L_max) with -1 after each problem's length, ``states`` (n, L_max + 1): the
    exact scratchpad (``states[:, 0] = x0``; after the last step the answer is repeated)."""

    x0: np.ndarray
    skills: np.ndarray
    states: np.ndarray

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def lengths(self) -> np.ndarray:
        return (self.skills >= 0).sum(1)

    @property
    def answers(self) -> np.ndarray:
        return self.states[np.arange(len(self)), self.lengths]

    def subset(self, idx) -> "Problems":
        idx = np.asarray(idx, dtype=int)
        return Problems(self.x0[idx], self.skills[idx], self.states[idx])


def concat(parts: list[Problems]) -> Problems:
    """Problems of several sets, padded to the longest."""
    lmax = max(p.skills.shape[1] for p in parts)
    sk = [np.pad(p.skills, ((0, 0), (0, lmax - p.skills.shape[1])), constant_values=-1) for p in parts]
    st = [np.pad(p.states, ((0, 0), (0, lmax - p.skills.shape[1])), mode="edge") for p in parts]
    return Problems(np.concatenate([p.x0 for p in parts]), np.concatenate(sk), np.concatenate(st))


def solve(world: World, x0: np.ndarray, skills: np.ndarray) -> np.ndarray:
    """The exact scratchpad (n, L_max + 1) of problems (x0, skills)."""
    states = np.empty((len(x0), skills.shape[1] + 1), dtype=np.int64)
    states[:, 0] = x0
    for t in range(skills.shape[1]):
        k = skills[:, t]
        nxt = (world.a[np.maximum(k, 0)] * states[:, t] + world.b[np.maximum(k, 0)]) % world.p
        states[:, t + 1] = np.where(k >= 0, nxt, states[:, t])
    return states


def sample_problems(world: World, n: int, lengths: list[int], rng: np.random.Generator,
                    freqs: np.ndarray | None = None) -> Problems:
    """``n`` problems: start uniform on Z_p, length uniform on ``lengths``, each skill i.i.d. from ``freqs``
    (default: the world's Zipf mixture)."""
    freqs = world.freqs if freqs is None else freqs
    lmax = max(lengths)
    x0 = rng.integers(0, world.p, size=n)
    length = rng.choice(np.asarray(lengths), size=n)
    skills = rng.choice(world.n_skills, size=(n, lmax), p=freqs)
    skills = np.where(np.arange(lmax)[None, :] < length[:, None], skills, -1)
    return Problems(x0, skills, solve(world, x0, skills))


# --------------------------------------------------------------------------------------------- the student
class StepStudent(nn.Module):
    """``(s_{t-1}, skill_t) -> logits of s_t``: sum of a value and a skill embedding, two ReLU layers.
    Shapes: state (N,), skill (N,) -> (N, p)."""

    def __init__(self, p: int, n_skills: int, hidden: int):
        super().__init__()
        self.state_emb = nn.Embedding(p, hidden)
        self.skill_emb = nn.Embedding(n_skills, hidden)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, p))

    def forward(self, state: torch.Tensor, skill: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.state_emb(state) + self.skill_emb(skill))


def step_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of every scratchpad step of the batch's problems, averaged over the steps (every step
    is a step of the solution: nothing dilutes it). batch: (prev, skill, target), each (n_steps,)."""
    prev, skill, target = batch
    return F.cross_entropy(model(prev, skill), target)


def steps_of(problems: Problems) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flattened teacher-forced steps: (prev, skill, target, problem index), padding dropped."""
    valid = problems.skills >= 0
    rows, cols = np.nonzero(valid)
    return problems.states[rows, cols], problems.skills[rows, cols], problems.states[rows, cols + 1], rows


def make_batch_fn(problems: Problems, batch_size: int, seed: int):
    """``batch_fn(step)``: ``batch_size`` problems drawn uniformly with replacement from ``problems`` (a
    torch generator seeded with ``seed``), all their steps."""
    st = torch.as_tensor(problems.states)
    sk = torch.as_tensor(problems.skills)
    gen = torch_generator(seed)

    def batch_fn(step: int):
        idx = torch.randint(0, len(problems), (batch_size,), generator=gen)
        s, k = st[idx], sk[idx]
        valid = k >= 0
        return s[:, :-1][valid], k[valid], s[:, 1:][valid]

    return batch_fn


@torch.no_grad()
def rollout(model: nn.Module, problems: Problems) -> np.ndarray:
    """The student's greedy answers (n,): each step reads its own previous value."""
    model.eval()
    s = torch.as_tensor(problems.x0)
    sk = torch.as_tensor(problems.skills)
    for t in range(sk.shape[1]):
        k = sk[:, t]
        nxt = model(s, k.clamp(min=0)).argmax(-1)
        s = torch.where(k >= 0, nxt, s)
    return s.numpy()


def accuracy(model: nn.Module, problems: Problems) -> float:
    """Fraction of problems whose final answer is exact (the paper's answer accuracy)."""
    return float((rollout(model, problems) == problems.answers).mean())


@torch.no_grad()
def step_correct(model: nn.Module, problems: Problems) -> np.ndarray:
    """(n, L_max) bool: is the student's step right given the correct previous value (False on padding)."""
    model.eval()
    prev, skill, target, rows = steps_of(problems)
    pred = model(torch.as_tensor(prev), torch.as_tensor(skill)).argmax(-1).numpy()
    out = np.zeros(problems.skills.shape, dtype=bool)
    out[np.nonzero(problems.skills >= 0)] = pred == target
    return out


def per_skill_step_accuracy(correct: np.ndarray, problems: Problems, n_skills: int) -> np.ndarray:
    """(K,) teacher-forced step accuracy per skill (nan for a skill that never occurs)."""
    valid = problems.skills >= 0
    k = problems.skills[valid]
    c = correct[valid].astype(float)
    n = np.bincount(k, minlength=n_skills).astype(float)
    hit = np.bincount(k, weights=c, minlength=n_skills)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hit / n, np.nan)


# --------------------------------------------------------------------------------------------- the teacher
def missing_skills(skills_row: np.ndarray, correct_row: np.ndarray, max_skills: int) -> list[int]:
    """Distinct skills of the wrong steps of one problem, in step order, at most ``max_skills``."""
    out: list[int] = []
    for k, ok in zip(skills_row, correct_row):
        if k >= 0 and not ok and int(k) not in out:
            out.append(int(k))
    return out[:max_skills]


def missing_skill_profile(answers_correct: np.ndarray, correct: np.ndarray, problems: Problems, n_skills: int,
                          max_failures: int, max_skills: int) -> tuple[np.ndarray, np.ndarray]:
    """The Missing-Skill-Profile (Sec. 3.1): counts (K,) of missing-skill occurrences over the first
    ``max_failures`` failed problems, and the indices of those failures."""
    failed = np.nonzero(~answers_correct)[0][:max_failures]
    counts = np.zeros(n_skills, dtype=int)
    for i in failed:
        for k in missing_skills(problems.skills[i], correct[i], max_skills):
            counts[k] += 1
    return counts, failed


# --------------------------------------------------------------------------------------------- selections
def allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas proportional to ``counts`` that sum to ``total`` (largest remainder; ties to the lower
    index). The paper takes a fixed number of questions per missing-skill occurrence; with the extra budget
    fixed across arms this is the same rule rescaled."""
    counts = np.asarray(counts, dtype=float)
    if counts.sum() <= 0:
        raise ValueError("empty profile")
    exact = counts / counts.sum() * total
    q = np.floor(exact).astype(int)
    rest = total - q.sum()
    order = np.argsort(-(exact - q), kind="stable")
    q[order[:rest]] += 1
    return q


def select_by_profile(pool: Problems, counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """STAT-Sel (Sec. 3.2): for each skill, its quota of pool problems that contain it, drawn without
    replacement among problems not yet selected (with replacement only if the pool runs out)."""
    quotas = allocate(counts, total)
    taken = np.zeros(len(pool), dtype=bool)
    chosen: list[np.ndarray] = []
    for k in np.argsort(-quotas, kind="stable"):
        if quotas[k] == 0:
            continue
        has = np.nonzero((pool.skills == k).any(1))[0]
        free = has[~taken[has]]
        if len(free) >= quotas[k]:
            pick = rng.choice(free, size=quotas[k], replace=False)
        else:
            pick = np.concatenate([free, rng.choice(has, size=quotas[k] - len(free), replace=True)])
        taken[pick] = True
        chosen.append(pick)
    return np.concatenate(chosen)


def select_uniform(pool: Problems, total: int, rng: np.random.Generator) -> np.ndarray:
    """Vanilla continued SFT on the original mixture: ``total`` pool problems uniformly without replacement."""
    return rng.choice(len(pool), size=total, replace=False)


def bag_embedding(problems: Problems, p: int, n_skills: int) -> np.ndarray:
    """Unit-norm bag-of-tokens vector of each problem's statement (start-value token + skill tokens):
    (n, p + K). The stand-in for a text embedding of the question."""
    n = len(problems)
    e = np.zeros((n, p + n_skills))
    e[np.arange(n), problems.x0] = 1.0
    rows, cols = np.nonzero(problems.skills >= 0)
    np.add.at(e, (rows, p + problems.skills[rows, cols]), 1.0)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def select_similar(pool: Problems, failures: Problems, total: int, p: int, n_skills: int) -> np.ndarray:
    """Embedding-similarity selection (the paper's embedding baseline): round robin over the failed
    validation problems, each adding its most cosine-similar pool problem not yet selected."""
    if len(failures) == 0:
        raise ValueError("no failures to select near")
    sim = bag_embedding(failures, p, n_skills) @ bag_embedding(pool, p, n_skills).T  # (F, M)
    depth = min(len(pool), total // len(failures) + 2)
    while True:
        nearest = np.argsort(-sim, axis=1, kind="stable")[:, :depth]
        taken = np.zeros(len(pool), dtype=bool)
        chosen: list[int] = []
        for r in range(depth):
            for f in range(len(failures)):
                j = nearest[f, r]
                if not taken[j]:
                    taken[j] = True
                    chosen.append(int(j))
                    if len(chosen) == total:
                        return np.array(chosen)
        if depth == len(pool):
            raise ValueError("pool smaller than the selection")
        depth = min(len(pool), depth * 2)


# ----------------------------------------------------------------------------------------------- one seed
def _fit(model, problems, steps, lr, batch_size, seed, eval_fn=None, eval_every=0, desc="train"):
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.0, warmup_steps=min(100, steps // 10),
                      schedule="cosine", grad_clip=1.0, log_every=max(1, eval_every or 100),
                      eval_every=eval_every, desc=desc, progress=False)
    return train(model, cfg, make_batch_fn(problems, batch_size, seed), step_loss, "cpu", eval_fn=eval_fn)


def run_seed(seed: int, cfg: dict) -> dict:
    """Everything for one seed: world, data, pre-training to saturation, diagnosis, the arms' continued
    training (same extra problems, steps, batch and schedule), evaluation. Returns plain tables."""
    torch.set_num_threads(1)
    rng = seed_everything(seed)
    p, K = cfg["p"], cfg["n_skills"]
    world = make_world(p, K, cfg["zipf"], rng)
    lengths, ood_lengths = cfg["lengths"], cfg["ood_lengths"]
    pretrain = sample_problems(world, cfg["n_pretrain"], lengths, rng)
    pool = sample_problems(world, cfg["n_pool"], lengths, rng)
    val = sample_problems(world, cfg["n_val"], lengths, rng)
    test_id = sample_problems(world, cfg["n_test"], lengths, rng)
    test_ood = sample_problems(world, cfg["n_test"], ood_lengths, rng)

    # pre-training until the validation accuracy plateaus (the saturated student)
    student = StepStudent(p, K, cfg["hidden"])
    hist = _fit(student, pretrain, cfg["pretrain_steps"], cfg["lr"], cfg["batch_size"], seed * 1000 + 1,
                eval_fn=lambda m: {"val_acc": accuracy(m, val)}, eval_every=cfg["eval_every"], desc="pretrain")
    curve = [{"seed": seed, "step": r["step"], "loss": r["loss"], "val_acc": r["val_acc"]}
             for r in hist.records if "val_acc" in r]
    base_state = {k: v.clone() for k, v in student.state_dict().items()}

    # diagnosis on the validation set (the student's own held-out failures)
    val_correct = rollout(student, val) == val.answers
    counts, failed = missing_skill_profile(val_correct, step_correct(student, val), val, K,
                                           cfg["max_failures"], cfg["max_skills"])
    shuffled = counts[rng.permutation(K)]
    E = cfg["n_extra"]
    sel_rng = np.random.default_rng([seed, 7])
    selections = {
        "replay": np.array([], dtype=int),
        "uniform": select_uniform(pool, E, np.random.default_rng([seed, 1])),
        "uniform_b": select_uniform(pool, E, np.random.default_rng([seed, 2])),
        "stat_sel": select_by_profile(pool, counts, E, sel_rng),
        "stat_shuffled": select_by_profile(pool, shuffled, E, np.random.default_rng([seed, 8])),
        "similarity": select_similar(pool, val.subset(failed), E, p, K),
    }

    def evaluate(model, arm):
        tf = step_correct(model, test_id)
        return {"seed": seed, "arm": arm, "id_acc": accuracy(model, test_id), "ood_acc": accuracy(model, test_ood),
                "val_acc": accuracy(model, val),
                **{f"skill_{k}": v for k, v in enumerate(per_skill_step_accuracy(tf, test_id, K))}}

    rows = [evaluate(student, "base")]
    selected_rows = []
    for arm in ARMS:
        model = StepStudent(p, K, cfg["hidden"])
        model.load_state_dict(base_state)
        idx = selections[arm]
        data = pretrain if len(idx) == 0 else concat([pretrain, pool.subset(idx)])
        # the same batch stream seed for every arm: only the extra problems differ
        _fit(model, data, cfg["continue_steps"], cfg["lr_continue"], cfg["batch_size"], seed * 1000 + 2,
             desc=arm)
        rows.append(evaluate(model, arm))
        if len(idx):
            sub = pool.subset(idx)
            occ = np.bincount(sub.skills[sub.skills >= 0], minlength=K)
            selected_rows += [{"seed": seed, "arm": arm, "skill": k, "occurrences": int(occ[k])} for k in range(K)]

    # held-out weakness of the base student per skill (teacher forced, ID test), for the diagnosis check
    base_skill_acc = np.array([rows[0][f"skill_{k}"] for k in range(K)])
    val_occ = np.bincount(val.skills[val.skills >= 0], minlength=K)
    profile = [{"seed": seed, "skill": k, "freq": float(world.freqs[k]), "missing": int(counts[k]),
                "missing_shuffled": int(shuffled[k]), "val_occurrences": int(val_occ[k]),
                "test_step_error": float(1 - base_skill_acc[k])} for k in range(K)]
    return {"rows": rows, "curve": curve, "profile": profile, "selected": selected_rows,
            "n_failures": int(len(failed)), "n_val_failed_total": int((~val_correct).sum())}
