"""Models, training and evaluation for the in-context Boolean-function replication (claims: ``claims.yaml``).

Sequence layout (the authors' ``_combine``): the prompt ``(x_1, y_1, ..., x_N, y_N)`` becomes 2N vectors in
R^n: ``z_{2t-1} = x_t`` and ``z_{2t} = (y_t, 0, ..., 0)``; a linear read-in maps them to d_model, and the
label ``y_t`` is predicted by a linear read-out at the position of ``x_t`` (so, under the causal mask, from
``x_1, y_1, ..., x_t`` only). Loss: binary cross-entropy of ``sigmoid(logit)`` against ``(y + 1)/2`` at every
x position; metric: sign accuracy per position.

Models:
- ``transformer``: ``shared.transformer.Transformer`` (GPT-style pre-LN decoder, learned positions,
  causal) fed through ``inputs_embeds`` by the read-in; one logit per position.
- ``lstm``: the paper's attention-free recurrent comparison, read-in -> multi-layer ``nn.LSTM`` ->
  read-out (the authors' ``LSTM`` class in ``src/models.py``: same interface, no dropout).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.parallel import run_jobs
from shared.seeding import seed_everything
from shared.training import TrainConfig, TrainHistory, train
from shared.transformer import Transformer, TransformerConfig

from .llm import label_logprobs, prompt_text
from .task import (LEARNERS, LLM_LITERAL_PROBS, MONOTONE_TASKS, accuracy_by_position, first_query_after_teaching,
                   learners_for, sample_prompts)

# --- models ----------------------------------------------------------------------------------------------

def combine(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Interleave (B, N, n) inputs and (B, N) labels into (B, 2N, n): x_1, (y_1, 0..0), x_2, ..."""
    B, N, n = xs.shape
    y_wide = torch.cat([ys[:, :, None], xs.new_zeros(B, N, n - 1)], dim=2)
    return torch.stack([xs, y_wide], dim=2).reshape(B, 2 * N, n)


class ICLTransformer(nn.Module):
    """Linear read-in -> shared causal Transformer (continuous inputs) -> one logit at each x position."""

    def __init__(self, n_dims: int, n_points: int, d_model: int, n_layers: int, n_heads: int):
        super().__init__()
        self.read_in = nn.Linear(n_dims, d_model)
        cfg = TransformerConfig(vocab_size=1, max_len=2 * n_points, d_model=d_model, n_layers=n_layers,
                                n_heads=n_heads, causal=True, positions="learned", n_out=1)
        self.backbone = Transformer(cfg)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        z = self.read_in(combine(xs, ys))  # (B, 2N, D)
        # read at the x positions only: the last block skips the label positions' queries and MLP, whose
        # outputs nothing reads (same logits as the full forward's [:, ::2] up to float rounding)
        return self.backbone(inputs_embeds=z, read_at=slice(0, None, 2)).logits[..., 0]  # (B, N)


class ICLLSTM(nn.Module):
    """The paper's attention-free baseline: linear read-in -> LSTM -> linear read-out at each x position."""

    def __init__(self, n_dims: int, d_model: int, n_layers: int):
        super().__init__()
        self.read_in = nn.Linear(n_dims, d_model)
        self.lstm = nn.LSTM(d_model, d_model, n_layers, batch_first=True)
        self.read_out = nn.Linear(d_model, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.read_in(combine(xs, ys)))  # (B, 2N, D)
        return self.read_out(h)[:, ::2, 0]


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "transformer" | "lstm"
    d_model: int
    n_layers: int
    n_heads: int = 4


def build_model(spec: ModelSpec, n_dims: int, n_points: int) -> nn.Module:
    if spec.family == "transformer":
        return ICLTransformer(n_dims, n_points, spec.d_model, spec.n_layers, spec.n_heads)
    if spec.family == "lstm":
        return ICLLSTM(n_dims, spec.d_model, spec.n_layers)
    raise ValueError(f"unknown model family {spec.family!r}")


def icl_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """BCE of sigmoid(logit) against (y + 1)/2 at every x position (the authors' ``cross_entropy``)."""
    xs, ys = batch
    logits = model(xs, ys)
    return F.binary_cross_entropy_with_logits(logits, (ys + 1) / 2)


# --- one arm: train, then evaluate on fresh prompts ------------------------------------------------------

@dataclass
class ArmResult:
    curves: dict[str, np.ndarray]  # learner -> (N,) accuracy by position; "model" is the trained network
    post_teach: dict[str, float]  # learner -> accuracy at the first query after the (would-be) teaching sequence
    history: TrainHistory
    n_parameters: int
    seconds: float


def _to_torch(p, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(p.xs).to(device), torch.from_numpy(p.ys).to(device)


@torch.no_grad()
def predict(model: nn.Module, xs: np.ndarray, ys: np.ndarray, device: str, chunk: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(xs), chunk):
        xb, yb = torch.from_numpy(xs[s:s + chunk]).to(device), torch.from_numpy(ys[s:s + chunk]).to(device)
        out.append(torch.sign(model(xb, yb)).float().cpu().numpy())
    return np.concatenate(out)


def run_arm(task: str, spec: ModelSpec, seed: int, n_dims: int, n_points: int, steps: int, batch_size: int,
            lr: float, n_eval: int, device: str, progress: bool = True, train_seed: int | None = None) -> ArmResult:
    """Train one model on ``steps`` batches of fresh prompts (a new function per prompt), then evaluate
    it and every classical learner on ``n_eval`` held-out prompts drawn with seed ``10_000 + seed``.
    ``train_seed`` (default ``seed``) seeds the initialisation and the training prompts: an A/A replicate
    uses another training seed and the same evaluation prompts."""
    start = time.perf_counter()
    train_seed = seed if train_seed is None else train_seed
    seed_everything(train_seed)
    model = build_model(spec, n_dims, n_points).to(device)
    rng = np.random.default_rng(train_seed)
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10), weight_decay=0.0,
                      desc=f"{spec.family} {task} s{train_seed}", progress=progress, log_every=max(1, steps // 50))
    history = train(model, cfg, lambda step: _to_torch(sample_prompts(task, batch_size, n_points, n_dims, rng), device),
                    icl_loss, device)
    test = sample_prompts(task, n_eval, n_points, n_dims, np.random.default_rng(10_000 + seed))
    preds = {"model": predict(model, test.xs, test.ys, device)}
    preds.update({name: LEARNERS[name](test.xs, test.ys) for name in learners_for(task)})
    curves = {name: accuracy_by_position(p, test.ys) for name, p in preds.items()}
    post_teach = {}
    if task in MONOTONE_TASKS:
        # query index |w| + 1: right after the teaching sequence in teach prompts; in the control prompts
        # (same functions and inputs, same seed) the same index, after |w| + 1 ordinary examples
        anchor = first_query_after_teaching(test.w)
        post_teach = {name: float(np.mean(np.take_along_axis(np.sign(p) == test.ys, anchor[:, None], 1)))
                      for name, p in preds.items()}
    n_params = sum(p.numel() for p in model.parameters())
    return ArmResult(curves, post_teach, history, n_params, time.perf_counter() - start)


AA_SUFFIX = "_aa"  # family "lstm_aa": an A/A replicate of the "lstm" arm under other training seeds
AA_SEED_OFFSET = 1000  # ... trained with seed 1000 + s, evaluated on the prompts of seed s


def base_family(family: str) -> str:
    return family.removesuffix(AA_SUFFIX)


def run_grid(arms: list[tuple[str, str]], specs: dict[str, ModelSpec], seeds: list[int], n_dims: int,
             n_points: int, steps: dict[tuple[str, str], int], batch_size: int, lr: dict[str, float], n_eval: int,
             device: str, workers: int = 1, progress: bool = True):
    """Train and evaluate every (family, task) arm for every seed, ``workers`` models at a time in separate
    single-threaded processes (each model is seeded on its own, so results do not depend on ``workers``).
    ``steps`` maps (family, task) to the number of optimisation steps. A family ``<f>_aa`` is an A/A
    replicate of family ``<f>``: the same spec and learning rate, training seed ``1000 + s``, the
    evaluation prompts of seed ``s``.

    Returns (curves, post_teach, loss curves, runs): curves has one row per (family, task, seed, learner,
    position) with the accuracy; the classical learners are evaluated on the same prompts as the model of
    that arm (their rows carry the arm's family so that each arm is self-contained). post_teach has one row
    per (family, task, seed, learner) of the monotone arms: the accuracy at the first query after the
    teaching sequence (teach prompts) or at the same index (control prompts)."""
    import pandas as pd

    keys = [(family, task, seed) for family, task in arms for seed in seeds]
    jobs = [(task, specs[base_family(family)], seed, n_dims, n_points, steps[(family, task)], batch_size,
             lr[base_family(family)], n_eval, device, progress and workers <= 1,
             seed + AA_SEED_OFFSET if family.endswith(AA_SUFFIX) else seed) for family, task, seed in keys]

    def report(i: int, res: ArmResult, done: int) -> None:
        if progress:
            family, task, seed = keys[i]
            final = float(np.mean(res.curves["model"][-5:]))
            print(f"[{done}/{len(jobs)}] {family} {task} seed={seed}: final accuracy {final:.3f} "
                  f"({res.seconds:.1f} s)", flush=True)

    # longest jobs first (transformer steps cost about 3x an LSTM's) so the last worker does not finish alone
    cost = [job[5] * (3 if base_family(key[0]) == "transformer" else 1) for job, key in zip(jobs, keys)]
    results = run_jobs(run_arm, jobs, workers if device == "cpu" else 1, cost=cost, on_done=report)

    rows, post, losses, runs = [], [], [], []
    for (family, task, seed), res in zip(keys, results):
        for learner, curve in res.curves.items():
            name = family if learner == "model" else learner
            for t, acc in enumerate(curve):
                rows.append({"family": family, "task": task, "seed": seed, "learner": name,
                             "position": t + 1, "accuracy": float(acc)})
        for learner, acc in res.post_teach.items():
            post.append({"family": family, "task": task, "seed": seed,
                         "learner": family if learner == "model" else learner, "accuracy": acc})
        for rec in res.history.records:
            losses.append({"family": family, "task": task, "seed": seed, "step": rec["step"], "loss": rec["loss"]})
        runs.append({"family": family, "task": task, "seed": seed, "steps": steps[(family, task)],
                     "parameters": res.n_parameters, "final_loss": res.history.last("loss")})
    post_cols = ["family", "task", "seed", "learner", "accuracy"]
    return pd.DataFrame(rows), pd.DataFrame(post, columns=post_cols), pd.DataFrame(losses), pd.DataFrame(runs)


# --- the LLM arm: SmolLM2 prompted with fresh conjunctions (and single literals, its gate) ---------------

LLM_PROMPT_SEED = {"conjunction": 20_000, "literal": 21_000}  # prompts of seed s: LLM_PROMPT_SEED[task] + s
LLM_TASKS = tuple(LLM_PROMPT_SEED)
LLM_BASELINES = ("elimination", "nearest_neighbour", "null")


def llm_prompts(task: str, seed: int, functions: int, n_points: int, n_dims: int):
    """The prompts of one seed of the LLM arm: conjunctions with the authors' LLM sampler, or single
    literals (the gate's easiest class)."""
    if task not in LLM_PROMPT_SEED:
        raise ValueError(f"LLM arm task must be one of {LLM_TASKS}; got {task!r}")
    rng = np.random.default_rng(LLM_PROMPT_SEED[task] + seed)
    if task == "conjunction":
        return sample_prompts(task, functions, n_points, n_dims, rng, literal_probs=LLM_LITERAL_PROBS)
    return sample_prompts(task, functions, n_points, n_dims, rng)


def run_llm_arm(model, tokenizer, seeds: list[int], n_dims: int, n_points: int, functions: int,
                batch_size: int = 4, device: str = "cpu", progress: bool = True,
                tasks: tuple[str, ...] = LLM_TASKS):
    """Prompt the language model with ``functions`` fresh functions per seed and class (``tasks``:
    conjunctions from the authors' LLM sampler, single literals for the gate) and run the classical
    learners on the same prompts.

    Returns one row per (task, seed, function, position): the label, each learner's prediction in {-1, +1}
    (``pred_<learner>``; the LLM's is ``pred_smollm2``, the more probable label digit) and the LLM's
    log-probabilities of the two digits (``logp0``, ``logp1``)."""
    import pandas as pd

    if functions < 1:
        raise ValueError(f"functions must be >= 1; got {functions}")
    frames = []
    for task in tasks:
        for seed in seeds:
            start = time.perf_counter()
            p = llm_prompts(task, seed, functions, n_points, n_dims)
            lp0, lp1 = label_logprobs(model, tokenizer, [prompt_text(p.xs[b], p.ys[b]) for b in range(functions)],
                                      batch_size, device)
            preds = {"smollm2": np.where(lp1 > lp0, 1.0, -1.0)}
            preds.update({name: LEARNERS[name](p.xs, p.ys) for name in LLM_BASELINES})
            grid = {"task": np.full(p.ys.size, task), "seed": np.full(p.ys.size, seed),
                    "function": np.repeat(np.arange(functions), n_points),
                    "position": np.tile(np.arange(1, n_points + 1), functions), "label": p.ys.reshape(-1)}
            grid.update({f"pred_{name}": v.reshape(-1) for name, v in preds.items()})
            grid.update(logp0=lp0.reshape(-1), logp1=lp1.reshape(-1))
            frames.append(pd.DataFrame(grid))
            if progress:
                acc = float(np.mean(preds["smollm2"][:, 1:] == p.ys[:, 1:]))
                print(f"smollm2 {task} seed={seed}: {functions} functions, accuracy {acc:.3f} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
    return pd.concat(frames, ignore_index=True)
