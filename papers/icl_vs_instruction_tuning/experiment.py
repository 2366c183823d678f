"""Pretrain a tiny LM on the task universe, instruction-tune a copy, evaluate both (the claims: claims.yaml).

One *model seed* is one independently pretrained LM: its own initialisation, its own Zipf mixture of
tasks (``tasks.zipf_prior``) and its own data stream. Per seed:

1. pretraining (``shared.training.train`` on ``tasks.pretraining_batch``), the paper's base model;
2. instruction tuning of a copy on the training tasks in the instruction format (the paper's FLAN-style
   tuning, with LoRA adapters on every linear map of the blocks as the paper's PEFT setup);
3. exact-match accuracy under greedy decoding of both models on every task in every prompt format
   (``tasks.eval_set``): ``icl`` (base + k gold demonstrations: the paper's Gold Pipeline),
   ``instruction`` (zero-shot; on the tuned model this is the paper's FLAN Direct) and ``named``.

The LM is a ``transformers`` GPT-2 from ``shared.lm.tiny_gpt2``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from shared.lm import add_lora, causal_lm_loss, num_parameters, tiny_gpt2
from shared.seeding import seed_everything
from shared.training import TrainConfig, train

from .tasks import PAD, Universe, eval_set, instruction_batch, pretraining_batch, zipf_prior

FORMATS = ("icl", "instruction", "named")


@dataclass(frozen=True)
class RunConfig:
    """Everything one model seed needs (picklable, for ``shared.parallel.run_jobs``)."""

    n_symbols: int = 12
    seq_len: int = 4
    n_tasks: int = 24
    n_it_tasks: int = 12
    zipf_exponent: float = 1.0
    named_fraction: float = 0.25
    pretrain_pairs: int = 4
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    pretrain_steps: int = 2000
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3
    it_steps: int = 300
    it_batch: int = 32
    it_lr: float = 2e-3
    lora_r: int = 8  # LoRA rank of instruction tuning (the paper tunes with PEFT); 0 = full fine-tuning
    k_shots: int = 3
    n_eval: int = 200
    progress: bool = False

    @property
    def universe(self) -> Universe:
        return Universe(n_symbols=self.n_symbols, seq_len=self.seq_len, n_tasks=self.n_tasks,
                        n_it_tasks=self.n_it_tasks)


def build_model(cfg: RunConfig):
    u = cfg.universe
    max_len = 2 + cfg.pretrain_pairs * (2 * u.seq_len + 2)
    return tiny_gpt2(vocab_size=u.vocab_size, max_len=max_len, d_model=cfg.d_model, n_layers=cfg.n_layers,
                     n_heads=cfg.n_heads, pad_token_id=PAD)


@torch.no_grad()
def exact_match(model, es, chunk: int = 512) -> np.ndarray:
    """(N,) bool: greedy decoding reproduces the L gold answer tokens. With a fixed-length answer, the greedy
    output equals the gold answer iff every teacher-forced argmax is the gold token (if all earlier tokens
    are right, greedy decoding saw exactly the gold prefix), so one forward pass suffices."""
    model.eval()
    L = es.n_answer
    out = []
    for s in range(0, len(es.input_ids), chunk):
        ids = es.input_ids[s: s + chunk]
        logits = model(input_ids=ids, use_cache=False).logits[:, -L - 1:-1]  # (B, L, V)
        out.append((logits.argmax(-1) == ids[:, -L:]).all(dim=1).numpy())
    return np.concatenate(out)


def evaluate_model(model, cfg: RunConfig, seed: int, stage: str, formats=FORMATS) -> list[dict]:
    """Accuracy of ``model`` on every task and format; eval prompts are seeded by 10_000 + seed (never the
    training streams)."""
    u = cfg.universe
    it = set(u.it_tasks)
    rows = []
    for task in u.names:
        for fmt in formats:
            es = eval_set(u, task, fmt, cfg.n_eval, cfg.k_shots, 10_000 + seed)
            correct = exact_match(model, es)
            rows.append({"seed": seed, "stage": stage, "task": task, "split": "it" if task in it else "heldout",
                         "format": fmt, "correct": int(correct.sum()), "n": int(correct.size),
                         "accuracy": float(correct.mean())})
    return rows


def run_model(seed: int, cfg: RunConfig) -> dict:
    """Pretrain, instruction-tune and evaluate one model seed. Returns {"rows", "curves", "prior", ...}."""
    torch.set_num_threads(1)
    u = cfg.universe
    seed_everything(seed)
    prior = zipf_prior(u.n_tasks, cfg.zipf_exponent, seed)
    model = build_model(cfg)
    rng = np.random.default_rng([seed, 1])

    def pre_batch(step):
        return pretraining_batch(u, prior, cfg.pretrain_batch, cfg.pretrain_pairs, cfg.named_fraction, rng)

    def pre_loss(m, b):
        ids, att, lm = b
        return causal_lm_loss(m, ids, att, lm)

    pcfg = TrainConfig(steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, warmup_steps=min(100, cfg.pretrain_steps // 10),
                       weight_decay=0.01, desc=f"pretrain s{seed}", progress=cfg.progress,
                       log_every=max(1, cfg.pretrain_steps // 40))
    hist_pre = train(model, pcfg, pre_batch, pre_loss, "cpu")
    rows = evaluate_model(model, cfg, seed, "base")

    tuned = copy.deepcopy(model)
    if cfg.lora_r > 0:
        tuned = add_lora(tuned, r=cfg.lora_r, alpha=2 * cfg.lora_r)
    rng_it = np.random.default_rng([seed, 2])

    def it_batch(step):
        return instruction_batch(u, u.it_tasks, cfg.it_batch, rng_it)

    def it_loss(m, b):
        ids, lm = b
        return causal_lm_loss(m, ids, None, lm)

    icfg = TrainConfig(steps=cfg.it_steps, lr=cfg.it_lr, warmup_steps=min(30, cfg.it_steps // 10),
                       weight_decay=0.0, desc=f"instruct s{seed}", progress=cfg.progress,
                       log_every=max(1, cfg.it_steps // 20))
    hist_it = train(tuned, icfg, it_batch, it_loss, "cpu")
    rows += evaluate_model(tuned, cfg, seed, "tuned", formats=("instruction", "icl"))
    curves = ([{"seed": seed, "phase": "pretrain", **r} for r in hist_pre.records]
              + [{"seed": seed, "phase": "instruction_tuning", **r} for r in hist_it.records])
    return {"seed": seed, "rows": rows, "curves": curves, "n_parameters": num_parameters(model),
            "prior": {t: float(p) for t, p in zip(u.names, prior)}}


def run_all(seeds: list[int], cfg: RunConfig, workers: int = 2, progress: bool = True):
    """Every model seed, ``workers`` at a time in single-threaded processes; returns (accuracy table,
    curve table, prior table). Results do not depend on ``workers`` (each job seeds itself)."""
    import time

    import pandas as pd

    from shared.parallel import run_jobs

    start = time.perf_counter()

    def done(i, res, n):
        if progress:
            print(f"[{n}/{len(seeds)}] model seed {res['seed']} done ({time.perf_counter() - start:.0f} s)", flush=True)

    results = run_jobs(run_model, [(s, cfg) for s in seeds], workers=min(workers, len(seeds)), on_done=done)
    acc = pd.DataFrame([r for res in results for r in res["rows"]])
    curves = pd.DataFrame([r for res in results for r in res["curves"]])
    prior = pd.DataFrame([{"seed": res["seed"], "task": t, "pretrain_frequency": p}
                          for res in results for t, p in res["prior"].items()])
    return acc, curves, prior, results[0]["n_parameters"]


def config_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)
