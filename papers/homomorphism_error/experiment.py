"""Models, training (baseline and HE-regularised), evaluation and the pre-registered claims.

One *cell* of the grid is (seed, noise level, condition): train a small decoder-only transformer on
2-clause expressions with ``noise`` inserted noise tokens, then measure token-level OOD accuracy on 5..12
clauses (no noise), modifier and sequence HE on the training set, and accuracy on the real-SCAN fragment.
``condition`` is ``baseline`` (cross-entropy) or ``he_reg`` (cross-entropy + lambda * modifier-HE
regulariser on layers 2 and 4, An & Du Sec. 5).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.metrics import Claim
from shared.parallel import run_jobs
from shared.seeding import seed_everything
from shared.training import TrainConfig, train
from shared.transformer import Transformer, TransformerConfig

from .homomorphism import (ModifierHERegularizer, homomorphism_error, modifier_positions,
                           modifier_triples, representation, sequence_triples)
from .task import (MODIFIER_IDS, PRIMITIVE_IDS, VOCAB, EncodedSet, EpochBatches, aligned, encode_set,
                   generate_dataset)

# --- pre-registered claims (written before the first `small` run; see README.md) -------------------------

R2_REPRODUCED = 0.5  # paper: R^2 = 0.73
R2_FLOOR = 0.25  # below this HE explains under a quarter of the variance: not reproduced
ALPHA = 0.05

CLAIMS = {
    "he_predicts_ood": dict(
        statement="Across noise-injection levels, modifier HE predicts OOD compositional accuracy: "
                  "higher HE, lower accuracy (Fig. 6).",
        criterion="Baseline models; points = noise levels (mean over seeds of mean OOD token accuracy vs "
                  "mean modifier HE). Reproduced if Pearson r < 0, one-sided p < 0.05 and linear R^2 >= 0.5; "
                  "not_reproduced if r >= 0 or R^2 < 0.25; otherwise inconclusive. R^2 carries a bootstrap "
                  "(over seeds) 95% interval.",
        paper_value="R^2 = 0.73 over noise levels 0..15, 5 seeds",
    ),
    "he_predicts_ood_normalised": dict(
        statement="Control (not in the paper): the relation of he_predicts_ood survives dividing modifier HE "
                  "by the variance of the composed hidden states (a scale-free HE).",
        criterion="Same rule as he_predicts_ood with variance-normalised modifier HE.",
        paper_value="not reported (control)",
    ),
    "noise_raises_he": dict(
        statement="Randomly inserted noise tokens systematically increase (modifier) HE.",
        criterion="Baseline models; per seed, Spearman rho between noise level and modifier HE. Reproduced if "
                  "the 95% t interval over seeds of rho lies above 0; not_reproduced if the mean rho <= 0; "
                  "otherwise inconclusive.",
        paper_value="HE increases with the number of noise tokens (Fig. 5; no statistic given)",
    ),
    "he_reg_lowers_modifier_he": dict(
        statement="HE-regularised training (lambda = 0.2, layers 2 and 4) lowers modifier HE.",
        criterion="Paired over seeds (per-seed mean over the regularised noise levels), he_reg - baseline: "
                  "reproduced if the 95% t interval lies below 0 (two-sided p < 0.05, the paper's test); "
                  "not_reproduced if the mean difference >= 0; otherwise inconclusive.",
        paper_value="p = 1.1e-4 (paired t, 5 seeds, noise 0-15); mean -16% in the authors' summary.tsv",
    ),
    "he_reg_lowers_sequence_he": dict(
        statement="HE-regularised training also lowers sequence HE, which it does not target.",
        criterion="As he_reg_lowers_modifier_he, for sequence HE.",
        paper_value="p = 0.001 (paired t, 5 seeds); mean -8% in the authors' summary.tsv",
    ),
    "he_reg_improves_ood": dict(
        statement="HE-regularised training improves OOD compositional accuracy.",
        criterion="Paired over seeds (per-seed mean over the regularised noise levels), he_reg - baseline mean "
                  "OOD token accuracy: reproduced if the 95% t interval lies above 0; not_reproduced if the "
                  "mean difference <= 0; otherwise inconclusive.",
        paper_value="p = 0.023 (paired t, 5 seeds); +0.009 accuracy (0.442 -> 0.451) in summary.tsv",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


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
    if condition not in ("baseline", "he_reg"):
        raise ValueError(f"condition must be baseline or he_reg; got {condition!r}")
    seed_everything(seed)
    model = build_model(s)
    batches = EpochBatches(data, s.batch_size, seed)
    params = list(model.parameters())
    reg = pool = None
    he_gen = torch.Generator().manual_seed(12345 + seed)
    if condition == "he_reg":
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
        return ce + s.lambda_he * he, {"ce": float(ce.detach()), "he_reg": float(he.detach())}

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
    row["final_loss"] = history.last("loss")
    curve = [{"seed": seed, "noise": noise, "condition": condition, **r} for r in history.records]
    return CellResult(row, curve, time.perf_counter() - start)


def cell_list(seeds: list[int], noise_levels: list[int], reg_noise_levels: list[int]) -> list[tuple[int, int, str]]:
    """Baselines on every noise level; HE-regularised models on ``reg_noise_levels`` (a subset)."""
    cells = [(s, n, "baseline") for s in seeds for n in noise_levels]
    cells += [(s, n, "he_reg") for s in seeds for n in reg_noise_levels]
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

    results = run_jobs(run_cell, jobs, workers, on_done=report)
    rows = [r.row for r in results]
    curves = [c for r in results for c in r.curve]
    return pd.DataFrame(rows), pd.DataFrame(curves)
