"""Models, training (baseline and HE-regularised), evaluation and the pre-registered claims.

One *cell* of the grid is (seed, noise level, condition): train a small decoder-only transformer on
2-clause expressions with ``noise`` inserted noise tokens, then measure token-level OOD accuracy on 5..12
clauses (no noise), modifier and sequence HE on the training set, and accuracy on the real-SCAN fragment.
``condition`` is ``baseline`` (cross-entropy), ``he_reg`` (cross-entropy + lambda * modifier-HE
regulariser on layers 2 and 4, An & Du Sec. 5) or ``he_reg_sham`` (the control: the same regulariser and
its extra forward pass with weight 0, so only the random stream differs from the baseline). Every cell
also measures its accuracy on the real-SCAN fragment (the gate), on held-out 2-clause commands at its own
noise level, and those of a per-position majority baseline, and, for baselines, the HE of an untrained
model of the same architecture on the same training inputs (the control of the HE claims).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.parallel import run_jobs
from shared.seeding import seed_everything
from shared.training import TrainConfig, train
from shared.transformer import Transformer, TransformerConfig

from .homomorphism import (ModifierHERegularizer, homomorphism_error, modifier_positions,
                           modifier_triples, representation, sequence_triples)
from .task import (MODIFIER_IDS, PRIMITIVE_IDS, VOCAB, EncodedSet, EpochBatches, aligned, encode_set,
                   generate_dataset)

# The claims are registered in ``claims.yaml`` and decided by ``shared.claims`` (see analysis.py).

CONDITIONS = ("baseline", "he_reg", "he_reg_sham")  # he_reg_sham: the regulariser's pass with weight 0 (control)
ID_SAMPLES = 500  # held-out 2-clause commands at the model's own noise level per model (reported)
ID_SEED_OFFSET = 10_000  # their generator seed: 10_000 + training seed (never a training seed)
INIT_SEED_OFFSET = 1_000_003  # seed of the untrained (random-init) model whose HE is the control


# --- the model -------------------------------------------------------------------------------------------

def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) fixed encoding of Vaswani et al.: sin on even, cos on odd dimensions."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class SinusoidalLM(nn.Module):
    """The shared causal transformer (``positions="none"``) fed token embeddings plus fixed sinusoidal
    positions, as in the authors' model. Only the position encoding is added here (the shared module has
    learned/one-hot/none): learned positions would leave the long OOD positions (up to 35) untrained.
    Token embeddings start N(0, 1) like torch's default in the authors' code, so that they are not dwarfed
    by the unit-amplitude position signal."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.positions != "none":
            raise ValueError("SinusoidalLM adds its own positions; build the Transformer with positions='none'")
        self.net = Transformer(cfg)
        nn.init.normal_(self.net.tok_emb.weight, 0.0, 1.0)
        self.register_buffer("pe", sinusoidal_positions(cfg.max_len, cfg.d_model), persistent=False)

    def forward(self, idx: torch.Tensor, return_hidden: bool = False):
        x = self.net.tok_emb(idx) + self.pe[: idx.shape[1]]
        return self.net(inputs_embeds=x, return_hidden=return_hidden)


@dataclass(frozen=True)
class Settings:
    """Model, training and HE-measurement settings of one grid (defaults: the authors' probe recipe)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.1
    max_len: int = 64
    train_clauses: int = 2
    train_samples: int = 1000
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    beta2: float = 0.999
    lambda_he: float = 0.2
    he_layers: tuple[int, ...] = (2, 4)  # 1-indexed blocks whose output is regularised
    he_pool_max_pairs: int = 2048
    he_batch_size: int = 256
    probe_epochs: int = 50


def build_model(s: Settings) -> SinusoidalLM:
    cfg = TransformerConfig(vocab_size=len(VOCAB), max_len=s.max_len, d_model=s.d_model, n_layers=s.n_layers,
                            n_heads=s.n_heads, d_ff=s.d_ff, dropout=s.dropout, causal=True, positions="none")
    return SinusoidalLM(cfg)


def aligned_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Position-aligned token cross-entropy over the first min(T_in, T_out) positions, pad (0) ignored."""
    lg, y = aligned(logits, targets)
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1), ignore_index=0)


@torch.no_grad()
def token_accuracy(model: nn.Module, data: EncodedSet, batch_size: int = 64, device: str = "cpu") -> float:
    """Authors' OOD metric: correct / scored over position-aligned, non-pad targets, batches in order."""
    model.eval()
    correct = total = 0
    for start in range(0, len(data), batch_size):
        x, y = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        x, y = x.to(device), y.to(device)
        lg, yy = aligned(model(x).logits, y)
        mask = yy != 0
        correct += int(((lg.argmax(-1) == yy) & mask).sum())
        total += int(mask.sum())
    return correct / total if total else float("nan")


# --- the HE regulariser's data: a pool of primitive-modifier bigrams in the training set -------------------

@dataclass
class ModifierPool:
    """Up to ``max_pairs`` (row, primitive position) of primitive-modifier bigrams in the training set."""

    rows: torch.Tensor
    prim_pos: torch.Tensor
    mod_id: torch.Tensor

    def __len__(self) -> int:
        return self.rows.shape[0]


def mine_modifier_pool(data: EncodedSet, max_pairs: int) -> ModifierPool:
    rows, pos = modifier_positions(data.inputs, data.input_lengths, PRIMITIVE_IDS, MODIFIER_IDS)
    rows, pos = rows[:max_pairs], pos[:max_pairs]
    if len(rows) == 0:
        raise ValueError("no primitive-modifier bigram in the training set: the HE regulariser has no data")
    return ModifierPool(rows, pos, data.inputs[rows, pos + 1])


@dataclass
class RegBatch:
    x: torch.Tensor
    y: torch.Tensor
    he_x: torch.Tensor | None = None
    prim_pos: torch.Tensor | None = None
    mod_id: torch.Tensor | None = None


# --- one cell --------------------------------------------------------------------------------------------

@dataclass
class CellResult:
    row: dict
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time, printed only (outputs must not vary between identical runs)


def train_cell(data: EncodedSet, condition: str, seed: int, s: Settings, device: str = "cpu",
               progress: bool = False):
    """Train one model; returns (model, history)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}; got {condition!r}")
    seed_everything(seed)
    model = build_model(s)
    batches = EpochBatches(data, s.batch_size, seed)
    params = list(model.parameters())
    reg = pool = None
    he_gen = torch.Generator().manual_seed(12345 + seed)
    weight = 0.0 if condition == "he_reg_sham" else s.lambda_he
    if condition in ("he_reg", "he_reg_sham"):
        reg = ModifierHERegularizer(s.d_model, MODIFIER_IDS)
        params += list(reg.parameters())
        pool = mine_modifier_pool(data, s.he_pool_max_pairs)

    def batch_fn(step: int) -> RegBatch:
        x, y = batches(step)
        if reg is None:
            return RegBatch(x.to(device), y.to(device))
        pick = torch.randint(0, len(pool), (s.he_batch_size,), generator=he_gen)
        rows = pool.rows[pick]
        he_x = data.inputs[rows]
        he_x = he_x[:, : int(data.input_lengths[rows].max())]
        return RegBatch(x.to(device), y.to(device), he_x.to(device), pool.prim_pos[pick].to(device),
                        pool.mod_id[pick].to(device))

    def loss_fn(m: SinusoidalLM, b: RegBatch):
        ce = aligned_cross_entropy(m(b.x).logits, b.y)
        if reg is None:
            return ce
        hidden = m(b.he_x, return_hidden=True).hidden_states  # separate forward pass, as the authors do
        states = [representation(hidden[layer]) for layer in s.he_layers]
        he = reg(states, b.prim_pos, b.prim_pos + 1, b.mod_id)
        return ce + weight * he, {"ce": float(ce.detach()), "he_reg": float(he.detach())}

    cfg = TrainConfig(steps=batches.steps(s.epochs), lr=s.lr, betas=(0.9, s.beta2), weight_decay=0.0,
                      schedule="constant", grad_clip=None, log_every=max(1, batches.per_epoch),
                      desc=f"{condition} seed={seed}", progress=progress)
    if reg is not None:
        reg.to(device)
    history = train(model, cfg, batch_fn, loss_fn, device, parameters=params)
    return model, history


@torch.no_grad()
def last_layer_states(model: SinusoidalLM, data: EncodedSet, chunk: int = 512, device: str = "cpu") -> torch.Tensor:
    """(N, T, D) representation of the last block's output for every training input (eval mode), on CPU."""
    model.eval()
    out = [representation(model(data.inputs[i:i + chunk].to(device), return_hidden=True).hidden_states[-1]).float().cpu()
           for i in range(0, len(data), chunk)]
    return torch.cat(out)


def run_cell(seed: int, noise: int, condition: str, s: Settings, ood_sets: dict[int, EncodedSet],
             scan_set: EncodedSet | None, device: str = "cpu", progress: bool = False) -> CellResult:
    start = time.perf_counter()
    data = encode_set(generate_dataset(s.train_clauses, noise, s.train_samples, seed))
    model, history = train_cell(data, condition, seed, s, device, progress)
    row = {"seed": seed, "noise": noise, "condition": condition, "train_examples": len(data)}
    accs = {n: token_accuracy(model, ood, device=device) for n, ood in ood_sets.items()}
    row.update({f"ood_acc_{n}": a for n, a in accs.items()})
    row["ood_acc"] = float(np.mean(list(accs.values())))
    states = last_layer_states(model, data, device=device)
    mod = homomorphism_error(modifier_triples(states, data.inputs, data.input_lengths, PRIMITIVE_IDS,
                                              MODIFIER_IDS), seed=seed, epochs=s.probe_epochs, device=device)
    seq = homomorphism_error(sequence_triples(states, data.inputs, data.input_lengths, PRIMITIVE_IDS),
                             seed=seed, epochs=s.probe_epochs, device=device)
    row.update({"mod_he": mod.he, "mod_he_norm": mod.normalised, "mod_pairs": mod.n_triples,
                "seq_he": seq.he, "seq_he_norm": seq.normalised, "seq_pairs": seq.n_triples})
    row.update({f"mod_he_{k}": v for k, v in mod.per_operator.items()})
    row["scan_fragment_acc"] = (token_accuracy(model, scan_set, device=device) if scan_set is not None
                                else float("nan"))
    held = held_out_id_set(s, noise, seed)
    row["id_acc"] = token_accuracy(model, held, device=device)
    majority = PositionMajority(data)
    row["id_majority_acc"] = token_accuracy(majority, held)
    row["scan_majority_acc"] = token_accuracy(majority, scan_set) if scan_set is not None else float("nan")
    if condition == "baseline":
        row.update(untrained_he(data, seed, s, device))
    row["final_loss"] = history.last("loss")
    curve = [{"seed": seed, "noise": noise, "condition": condition, **r} for r in history.records]
    return CellResult(row, curve, time.perf_counter() - start)


class PositionMajority(nn.Module):
    """Spec-blind baseline: at every position, the most frequent output token of the training set there
    (whatever the input). Its token accuracy is what "learned the task" must be read against."""

    def __init__(self, train: EncodedSet, max_len: int = 64):
        super().__init__()
        tok = torch.zeros(max_len, dtype=torch.long)
        for t in range(min(train.outputs.shape[1], max_len)):
            col = train.outputs[:, t]
            col = col[col != 0]
            if len(col):
                tok[t] = torch.bincount(col, minlength=len(VOCAB)).argmax()
        self.register_buffer("tok", tok, persistent=False)

    def forward(self, idx: torch.Tensor):
        from types import SimpleNamespace

        B, T = idx.shape
        return SimpleNamespace(logits=F.one_hot(self.tok[:T].expand(B, T), len(VOCAB)).float())


def held_out_id_set(s: Settings, noise: int, seed: int) -> EncodedSet:
    """In-distribution test commands: ``train_clauses`` clauses with the training noise level, drawn with a
    generator seed no training set uses. Without noise only 144 commands exist, all in the training set, so
    at noise 0 this is the training distribution itself (the held-out positions of noise differ above 0)."""
    return encode_set(generate_dataset(s.train_clauses, noise, ID_SAMPLES, ID_SEED_OFFSET + seed))


def untrained_he(data: EncodedSet, seed: int, s: Settings, device: str = "cpu") -> dict:
    """Modifier and sequence HE (raw and normalised) of a randomly initialised, untrained model of the same
    architecture on the same training inputs: what HE measures when nothing has been learned."""
    torch.manual_seed(INIT_SEED_OFFSET + seed)
    model = build_model(s).to(device)
    states = last_layer_states(model, data, device=device)
    mod = homomorphism_error(modifier_triples(states, data.inputs, data.input_lengths, PRIMITIVE_IDS,
                                              MODIFIER_IDS), seed=seed, epochs=s.probe_epochs, device=device)
    seq = homomorphism_error(sequence_triples(states, data.inputs, data.input_lengths, PRIMITIVE_IDS),
                             seed=seed, epochs=s.probe_epochs, device=device)
    return {"init_mod_he": mod.he, "init_mod_he_norm": mod.normalised, "init_seq_he": seq.he,
            "init_seq_he_norm": seq.normalised}


def cell_list(seeds: list[int], noise_levels: list[int], reg_noise_levels: list[int]) -> list[tuple[int, int, str]]:
    """Baselines on every noise level; HE-regularised models and their sham-regulariser controls on
    ``reg_noise_levels`` (a subset)."""
    cells = [(s, n, "baseline") for s in seeds for n in noise_levels]
    cells += [(s, n, "he_reg") for s in seeds for n in reg_noise_levels]
    cells += [(s, n, "he_reg_sham") for s in seeds for n in reg_noise_levels]
    return cells


def build_ood_sets(clauses: list[int], samples_per_length: int, seed: int) -> dict[int, EncodedSet]:
    """Noise-free test sets with more clauses than training (5..12 in the paper), one fixed draw for all
    models so that conditions are compared on the same items."""
    return {n: encode_set(generate_dataset(n, 0, samples_per_length, seed + n)) for n in clauses}


def run_grid(seeds, noise_levels, reg_noise_levels, s: Settings, ood_sets, scan_set, device: str = "cpu",
             workers: int = 1, progress: bool = True):
    """Every cell, ``workers`` cells at a time in separate single-threaded processes (each cell is
    seeded on its own, so the results do not depend on ``workers``); returns (results, curves) tables."""
    import pandas as pd

    cells = cell_list(seeds, noise_levels, reg_noise_levels)
    jobs = [(seed, noise, cond, s, ood_sets, scan_set, device, False) for seed, noise, cond in cells]

    def report(i: int, res: CellResult, done: int) -> None:
        if progress:
            r = res.row
            print(f"[{done}/{len(cells)}] seed={r['seed']} noise={r['noise']} {r['condition']}: "
                  f"OOD {r['ood_acc']:.3f}, mod HE {r['mod_he']:.2e}, seq HE {r['seq_he']:.2e} "
                  f"({res.seconds:.1f} s)", flush=True)

    cost = [1.0 if cond == "baseline" else 1.5 for _, _, cond in cells]
    results = run_jobs(run_cell, jobs, workers, cost=cost, on_done=report)
    rows = [r.row for r in results]
    curves = [c for r in results for c in r.curve]
    return pd.DataFrame(rows), pd.DataFrame(curves)
