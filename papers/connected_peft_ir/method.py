"""Scattered vs connected parameter-efficient tuning of a dense retriever (Ma et al. 2022, arXiv 2208.09847).

The paper's argument (Sec. 3-4): PET modules inserted inside a frozen pre-trained model (adapters, LoRA,
prefixes) are *scattered*: each reaches the loss only through the frozen blocks above it, which makes the
optimisation hard (slow, unstable); adding modules *alongside* the model that connect the scattered ones
into one trainable pathway to the output smooths the loss surface. Their method inserts aside modules; the
exact wiring could not be read here, so this module implements the smallest version of the idea that keeps
the parameter budget exactly equal:

- ``adapter`` (scattered, Houlsby et al. 2019): a bottleneck ``a(z) = Up(gelu(Down(z)))`` added to the
  output projection of every attention and feed-forward sub-layer (``z + a(z)`` before the residual and
  LayerNorm), ``Up`` zero-initialised so training starts at the pretrained encoder;
- ``connected``: the *same* adapters, plus a parameter-free aside pathway that adds every adapter's output
  ``a_k`` directly to the last hidden state before pooling, ``h_out = h_L + sum_k a_k``: every trainable
  module then has a gradient path to the loss that bypasses the frozen blocks (the "connected pathway").

The baselines come from :mod:`shared.encoder` (``full``, ``lora``, ``frozen`` = zero-shot); the loss is
InfoNCE with in-batch and hard negatives (:func:`shared.encoder.info_nce_loss`), the loop
``shared.training.train``. The retrieval metric is MRR@10 (the paper's MS MARCO metric) on unseen subjects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from papers.connected_peft_ir.data import Corpus, Subject, build_corpus, sample_batch
from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

ARMS = ("zero_shot", "full", "lora", "adapter", "connected")
TRAINED_ARMS = ("full", "lora", "adapter", "connected")


# --- the adapters ------------------------------------------------------------------------------------------

class Adapter(nn.Module):
    """Bottleneck adapter ``a(z) = Up(gelu(Down(z)))`` (Houlsby et al. 2019), (B, T, d) -> (B, T, d);
    ``Up`` starts at zero so ``z + a(z) = z`` at initialisation."""

    def __init__(self, d: int, size: int, init_std: float = 0.02):
        super().__init__()
        self.down = nn.Linear(d, size)
        self.up = nn.Linear(size, d)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(F.gelu(self.down(z)))


def adapter_sites(bert: nn.Module) -> list[nn.Module]:
    """The sub-layer output projections an adapter follows: per layer, the attention output ``dense`` and
    the feed-forward output ``dense`` (Houlsby's two positions), bottom to top."""
    sites = []
    for layer in bert.encoder.layer:
        sites += [layer.attention.output.dense, layer.output.dense]
    return sites


class RetrievalEncoder(nn.Module):
    """Bi-encoder: BERT (+ optional adapters) -> mean pooling -> (B, d). Queries and passages share it.

    ``adapters``: None, ``"scattered"`` or ``"connected"`` (see the module docstring). With adapters the
    BERT is frozen here; other PET set-ups are applied to ``bert`` by :func:`shared.encoder.configure_peft`
    before wrapping.
    """

    def __init__(self, bert: nn.Module, adapters: str | None = None, adapter_size: int = 16):
        super().__init__()
        if adapters not in (None, "scattered", "connected"):
            raise ValueError(f"adapters must be None, 'scattered' or 'connected'; got {adapters!r}")
        self.bert = bert
        self.mode = adapters
        self.adapters = nn.ModuleList()
        self._aside: list[torch.Tensor] | None = None
        if adapters is not None:
            for p in bert.parameters():
                p.requires_grad_(False)
            d = bert.config.hidden_size
            for site in adapter_sites(bert):
                adapter = Adapter(d, adapter_size)
                self.adapters.append(adapter)
                site.register_forward_hook(self._hook(adapter))

    def _hook(self, adapter: Adapter):
        def hook(_module, _inputs, output):
            a = adapter(output)
            if self._aside is not None:
                self._aside.append(a)
            return output + a
        return hook

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from shared.encoder import mean_pool

        self._aside = [] if self.mode == "connected" else None
        try:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if self.mode == "connected":
                hidden = hidden + torch.stack(self._aside).sum(0)  # the aside pathway: h_L + sum_k a_k
        finally:
            self._aside = None
        return mean_pool(hidden.float(), attention_mask)  # (B, d)


def truncate_layers(bert: nn.Module, n_layers: int) -> nn.Module:
    """Keep BERT's bottom ``n_layers`` layers (in place)."""
    if not 1 <= n_layers <= len(bert.encoder.layer):
        raise ValueError(f"n_layers must be in [1, {len(bert.encoder.layer)}]; got {n_layers}")
    bert.encoder.layer = bert.encoder.layer[:n_layers]
    bert.config.num_hidden_layers = n_layers
    return bert


def build_model(arm: str, bert: nn.Module, *, adapter_size: int = 16, lora_r: int = 16,
                lora_alpha: float = 32) -> tuple[RetrievalEncoder, int]:
    """The model of one arm and its trainable parameter count. ``full`` trains every encoder parameter
    except the word-embedding table (30522 x 384, frozen in every arm: a vocabulary-sized AdamW update per
    step would dominate CPU time and the short questions touch a few hundred rows)."""
    from shared.encoder import configure_peft, count_trainable

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    if arm in ("adapter", "connected"):
        configure_peft(bert, "frozen")
        model = RetrievalEncoder(bert, "scattered" if arm == "adapter" else "connected", adapter_size)
    else:
        method = {"zero_shot": "frozen", "full": "full", "lora": "lora"}[arm]
        configure_peft(bert, method, r=lora_r, alpha=lora_alpha)
        bert.embeddings.word_embeddings.weight.requires_grad_(False)
        model = RetrievalEncoder(bert)
    return model, count_trainable(model)


# --- retrieval metrics --------------------------------------------------------------------------------------

def ranks_of_relevant(scores: torch.Tensor, relevant: list[int] | torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's relevant passage in ``scores`` (Q, N); ties count against the query
    (rank = 1 + number of passages scoring at least as high, other than itself)."""
    rel = torch.as_tensor(relevant, dtype=torch.long)
    s_pos = scores[torch.arange(scores.shape[0]), rel]
    return (scores >= s_pos[:, None]).sum(1)  # the relevant passage counts itself: rank >= 1


def mrr_at_k(ranks: torch.Tensor, k: int = 10) -> float:
    """Mean reciprocal rank, 0 for a relevant passage ranked below ``k`` (MS MARCO's MRR@10)."""
    r = ranks.double()
    return float(torch.where(r <= k, 1.0 / r, torch.zeros_like(r)).mean())


def recall_at_k(ranks: torch.Tensor, k: int = 10) -> float:
    return float((ranks <= k).double().mean())


@torch.no_grad()
def encode(model: nn.Module, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 32,
           device: str = "cpu") -> torch.Tensor:
    """(N, d) unit-norm embeddings, batched by length (a text's vector does not depend on its batch)."""
    from shared.encoder import tokenize

    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = torch.zeros(len(texts), model.bert.config.hidden_size)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenize(tokenizer, [texts[i] for i in idx], max_length=max_length, device=device)
        out[torch.as_tensor(idx)] = F.normalize(model(**enc), dim=-1).float().cpu()
    return out


def evaluate_retrieval(model: nn.Module, tokenizer, corpus: Corpus, k: int = 10, max_length: int = 32,
                       device: str = "cpu") -> dict[str, float]:
    """MRR@k and Recall@k of ``model`` on ``corpus`` (cosine similarity, full ranking of the pool)."""
    qv = encode(model, tokenizer, corpus.queries, max_length=max_length, device=device)
    pv = encode(model, tokenizer, corpus.passages, max_length=max_length, device=device)
    ranks = ranks_of_relevant(qv @ pv.T, corpus.relevant)
    return {"mrr10": mrr_at_k(ranks, k), "recall10": recall_at_k(ranks, k)}


# --- one (arm, seed) run ------------------------------------------------------------------------------------

def run_arm(arm: str, seed: int, lr: float, train_subjects: list[Subject], eval_subjects: list[Subject],
            cfg: dict) -> dict:
    """Train one arm from the pretrained encoder with ``seed`` (batch order and adapter/LoRA init) and
    evaluate it on ``eval_subjects``. ``cfg``: n_layers, steps, batch_size, temperature, warmup_frac,
    adapter_size, lora_r, lora_alpha, max_length, log_every, device, progress. A module-level function for
    ``shared.parallel.run_jobs``. Returns the metrics, the trainable count and the loss curve."""
    from shared.encoder import info_nce_loss, load_encoder, tokenize
    from shared.seeding import seed_everything
    from shared.training import TrainConfig, train

    rng = seed_everything(seed)
    device = cfg.get("device", "cpu")
    bert, tok = load_encoder(device)
    truncate_layers(bert, cfg["n_layers"])
    model, n_trainable = build_model(arm, bert, adapter_size=cfg["adapter_size"], lora_r=cfg["lora_r"],
                                     lora_alpha=cfg["lora_alpha"])
    model.to(device)
    n_total = sum(p.numel() for p in model.parameters())
    curve: list[dict] = []
    if arm != "zero_shot":
        bsz, max_len = cfg["batch_size"], cfg["max_length"]

        def batch_fn(_step):
            q, p, n = sample_batch(train_subjects, bsz, rng)
            return tokenize(tok, q + p + n, max_length=max_len, device=device)  # one padded forward for all 3B texts

        def loss_fn(m, batch):
            z = m(**batch)  # (3B, d)
            return info_nce_loss(z[:bsz], z[bsz:2 * bsz], cfg["temperature"], hard_negatives=z[2 * bsz:])

        tcfg = TrainConfig(steps=cfg["steps"], lr=lr, betas=(0.9, 0.999), weight_decay=0.0,
                           warmup_steps=int(cfg["warmup_frac"] * cfg["steps"]), log_every=cfg["log_every"],
                           desc=f"{arm} s{seed}", progress=cfg.get("progress", False))
        history = train(model, tcfg, batch_fn, loss_fn, device)
        curve = history.records
    metrics = evaluate_retrieval(model, tok, build_corpus(eval_subjects), max_length=cfg["max_length"],
                                 device=device)
    return {"arm": arm, "seed": seed, "lr": lr, "n_trainable": n_trainable, "n_total": n_total,
            **metrics, "curve": curve}


# --- claims -------------------------------------------------------------------------------------------------

def _per_seed(results: pd.DataFrame, arm: str, metric: str = "mrr10") -> pd.Series:
    rows = results[results["arm"] == arm]
    if rows.empty:
        raise ValueError(f"no results for arm {arm!r}")
    return rows.set_index("seed")[metric].sort_index()


def _paired(results: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Per-seed difference a - b over the seeds both arms ran."""
    x, y = _per_seed(results, a), _per_seed(results, b)
    common = x.index.intersection(y.index)
    return x[common] - y[common]


def _aa_control(results: pd.DataFrame) -> Control:
    d = _paired(results, "adapter_aa", "adapter")
    return Control(seed_measurement(d.tolist(), unit="MRR@10 difference"),
                   detail="A/A: scattered adapters under seeds + 1000 minus scattered adapters, paired by seed")


def measure_connected_vs_scattered(results: pd.DataFrame, zero_shot_mrr: float, min_gain: float
                                   ) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``connected_beats_scattered``: per seed MRR@10(connected) - MRR@10(adapter) (same adapters,
    same batches and init, only the aside pathway differs), t interval over seeds. Gate: in every seed at
    least one of the two arms gains >= ``min_gain`` MRR@10 over the zero-shot encoder (the adapters
    trained at all). Control: the A/A difference (adapter under other seeds minus adapter)."""
    d = _paired(results, "connected", "adapter")
    gains = pd.concat([_per_seed(results, "connected"), _per_seed(results, "adapter")], axis=1).max(axis=1)
    worst = float(gains.min() - zero_shot_mrr)
    gate = Gate(passed=bool(worst >= min_gain), value=worst,
                detail=f"smallest per-seed gain of the better adapter arm over zero-shot {worst:+.4f} "
                       f"(needs >= {min_gain:g})")
    detail = "per-seed connected - adapter: " + ", ".join(f"{v:+.4f}" for v in d)
    return seed_measurement(d.tolist(), unit="MRR@10 difference"), gate, _aa_control(results), detail


def measure_pet_below_full(results: pd.DataFrame, zero_shot_mrr: float, min_gain: float
                           ) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``scattered_pet_below_full``: per seed MRR@10(full) - max(MRR@10(lora), MRR@10(adapter)) (the
    better existing PET method of that seed), t interval. Gate: full fine-tuning gains >= ``min_gain`` over
    zero-shot in every seed. Control: the A/A adapter difference."""
    full = _per_seed(results, "full")
    best_pet = pd.concat([_per_seed(results, "lora"), _per_seed(results, "adapter")], axis=1).max(axis=1)
    common = full.index.intersection(best_pet.index)
    d = full[common] - best_pet[common]
    worst = float(full.min() - zero_shot_mrr)
    gate = Gate(passed=bool(worst >= min_gain), value=worst,
                detail=f"smallest per-seed gain of full fine-tuning over zero-shot {worst:+.4f} (needs >= {min_gain:g})")
    detail = "per-seed full - best scattered PET: " + ", ".join(f"{v:+.4f}" for v in d)
    return seed_measurement(d.tolist(), unit="MRR@10 difference"), gate, _aa_control(results), detail


def measure_connected_vs_full(results: pd.DataFrame, zero_shot_mrr: float, min_gain: float
                              ) -> tuple[Measurement, Gate, Control, str]:
    """Claim ``connected_matches_full``: per seed MRR@10(connected) - MRR@10(full), t interval. Gate: full
    fine-tuning gains >= ``min_gain`` over zero-shot in every seed. Control: the zero-shot encoder in place
    of the connected arm (zero-shot - full per seed), which lacks any tuning by design."""
    d = _paired(results, "connected", "full")
    full = _per_seed(results, "full")
    worst = float(full.min() - zero_shot_mrr)
    gate = Gate(passed=bool(worst >= min_gain), value=worst,
                detail=f"smallest per-seed gain of full fine-tuning over zero-shot {worst:+.4f} (needs >= {min_gain:g})")
    control = Control(seed_measurement((zero_shot_mrr - full).tolist(), unit="MRR@10 difference"),
                      detail="zero-shot encoder minus full fine-tuning, per seed")
    detail = "per-seed connected - full: " + ", ".join(f"{v:+.4f}" for v in d)
    return seed_measurement(d.tolist(), unit="MRR@10 difference"), gate, control, detail


def measure_budget(results: pd.DataFrame) -> tuple[Measurement, Control, str]:
    """Check ``pet_budget``: the largest trainable share (% of the encoder's parameters) over the PET arms
    (lora, adapter, connected) and seeds; deterministic, so the interval is the point. Control: the same
    share for full fine-tuning."""
    pet = results[results["arm"].isin(["lora", "adapter", "connected"])]
    share = 100.0 * pet["n_trainable"] / pet["n_total"]
    worst = float(share.max())
    full = results[results["arm"] == "full"]
    full_share = float((100.0 * full["n_trainable"] / full["n_total"]).max())
    counts = pet.groupby("arm")["n_trainable"].max().to_dict()

    def point(v: float) -> Measurement:
        return Measurement(value=v, ci_low=v, ci_high=v, n=len(share), method="exact count (deterministic)",
                           unit="% trainable")

    detail = "trainable parameters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    return point(worst), Control(point(full_share), detail="full fine-tuning's share"), detail
