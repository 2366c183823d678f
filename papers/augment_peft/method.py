"""One training run per (seed, arm): MiniLM + a linear head tuned on EDA-augmented limited data.

Arms (Obadinma et al. 2023, Sec. 3-6, at reduced scale):

- ``prefix``: P-tuning v2 (deep prefixes in every layer, ``shared.encoder.configure_peft(..., "prefix")``)
  trained with cross-entropy;
- ``prefix_scl``: the same plus ``scl_weight`` x the supervised contrastive loss (Khosla et al. 2020) on the
  pooled sentence features of the batch, the paper's fix for prefix tuning on augmented data;
- ``ft``: full fine-tuning with cross-entropy;
- ``prefix_b``: ``prefix`` again under another model seed (the A/A control arm of every claim).

All arms of a seed see the same training sample and augmentations, the same number of steps and the same
batch layout (``originals_per_batch`` originals with all their augmented copies, as the contrastive loss
needs same-label positives in the batch). Each arm uses its own model seed (prefix init, head, dropout,
batch order), so the A/A arm differs from ``prefix`` exactly as the other arms do, minus the method.

The linear head starts at random and trains jointly at the arm's learning rate, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARMS = ("prefix", "prefix_scl", "ft", "prefix_b")
ARM_METHOD = {"prefix": "prefix", "prefix_scl": "prefix", "ft": "full", "prefix_b": "prefix"}
ARM_SCL = {"prefix": False, "prefix_scl": True, "ft": False, "prefix_b": False}
ARM_OFFSET = {"prefix": 1, "prefix_scl": 2, "ft": 3, "prefix_b": 4}


def model_seed(seed: int, arm: str) -> int:
    """The seed of an arm's initialisation, dropout and batch order: ``1000 * seed + offset(arm)``."""
    return 1000 * int(seed) + ARM_OFFSET[arm]


def group_batches(groups: np.ndarray, per_batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """Row indices of each step's batch: the originals (``groups`` values) are visited in a fresh random
    order each epoch, ``per_batch`` originals per step, each with ALL its rows (the original and its
    augmented copies). An epoch's last, short batch is completed from the next epoch's order (no original
    twice in one batch)."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    if per_batch < 1 or per_batch > ids.size:
        raise ValueError(f"per_batch must be in [1, {ids.size}]; got {per_batch}")
    rows_of = {int(g): np.flatnonzero(groups == g) for g in ids}
    queue: list[int] = []
    batches = []
    for _ in range(steps):
        chosen: list[int] = []
        while len(chosen) < per_batch:
            if not queue:
                queue = [int(g) for g in rng.permutation(ids)]
            g = queue.pop(0)
            if g in chosen:  # only possible across an epoch boundary: defer it to the next batch
                queue.append(g)
                continue
            chosen.append(g)
        batches.append(np.concatenate([rows_of[g] for g in chosen]))
    return batches


def trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns that no row of the batch uses (right padding)."""
    t = int(mask.sum(1).max())
    return ids[:, :t], mask[:, :t]


def scl_objective(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, scl_weight: float,
                  temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy + ``scl_weight`` x supervised contrastive loss of the pooled features (the paper's
    CE + lambda * SupCon objective); returns the loss and its two parts for the curves."""
    from shared.encoder import supervised_contrastive_loss

    ce = F.cross_entropy(logits, labels)
    if scl_weight == 0:
        return ce, {"ce": float(ce.detach())}
    scl = supervised_contrastive_loss(features, labels, temperature)
    return ce + scl_weight * scl, {"ce": float(ce.detach()), "scl": float(scl.detach())}


def class_silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient of the rows grouped by label, cosine distance (in [-1, 1]; higher =
    classes better separated)."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(np.asarray(features, dtype=np.float64), np.asarray(labels), metric="cosine"))


@torch.no_grad()
def encode(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 64
           ) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features, logits) of every row as float32 numpy arrays, in eval mode, batched and trimmed."""
    model.eval()
    feats, logits = [], []
    for i in range(0, ids.shape[0], batch_size):
        b_ids, b_mask = trim(ids[i:i + batch_size], mask[i:i + batch_size])
        f = model.features(b_ids, b_mask).float()
        feats.append(f.cpu())
        logits.append(model.head(f).float().cpu())
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


@dataclass
class RunConfig:
    steps: int
    originals_per_batch: int
    lr_prefix: float
    lr_full: float
    prefix_len: int
    scl_weight: float
    scl_temperature: float
    max_length: int
    warmup_frac: float = 0.1


def run_arm(seed: int, arm: str, data: dict, cfg: RunConfig, progress: bool = False, device: str = "cpu") -> dict:
    """Train one arm on ``data`` (``train_texts``, ``train_labels``, ``train_groups``, ``n_classes`` and
    the evaluation sets ``eval_<name>_texts`` / ``eval_<name>_labels`` for names in ``data["eval_sets"]``)
    and evaluate it. Returns a dict with the per-run numbers (``acc_<name>`` per evaluation set,
    ``sil_<name>`` per set in ``data["silhouette_sets"]``), the trainable-parameter count, the last logged
    training loss and the curve."""
    from shared.encoder import SentenceClassifier, configure_peft, load_encoder, tokenize
    from shared.seeding import seed_everything
    from shared.training import TrainConfig, train

    ms = model_seed(seed, arm)
    seed_everything(ms)
    bert, tok = load_encoder(device)
    model = SentenceClassifier(bert, data["n_classes"])
    n_trainable = configure_peft(model, ARM_METHOD[arm], prefix_len=cfg.prefix_len)
    model.to(device)
    seed_everything(ms)  # the head and prefix initialisations drew from the global generator; restart it
    enc = tokenize(tok, data["train_texts"], max_length=cfg.max_length, device=device)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    y = torch.as_tensor(data["train_labels"], dtype=torch.long, device=device)

    batches = group_batches(np.asarray(data["train_groups"]), cfg.originals_per_batch, cfg.steps, ms)
    weight = cfg.scl_weight if ARM_SCL[arm] else 0.0

    def batch_fn(step: int):
        rows = torch.as_tensor(batches[step], device=device)
        b_ids, b_mask = trim(ids[rows], mask[rows])
        return b_ids, b_mask, y[rows]

    def loss_fn(m: nn.Module, batch):
        b_ids, b_mask, b_y = batch
        f = m.features(b_ids, b_mask)
        return scl_objective(m.head(f).float(), f.float(), b_y, weight, cfg.scl_temperature)

    lr = cfg.lr_full if ARM_METHOD[arm] == "full" else cfg.lr_prefix
    tcfg = TrainConfig(steps=cfg.steps, lr=lr, weight_decay=0.0, betas=(0.9, 0.999),
                       warmup_steps=max(1, int(cfg.warmup_frac * cfg.steps)), log_every=max(1, cfg.steps // 8),
                       progress=progress, desc=f"{arm} seed {seed}")
    history = train(model, tcfg, batch_fn, loss_fn, device)

    out = {"seed": int(seed), "arm": arm, "method": ARM_METHOD[arm], "scl_weight": weight,
           "model_seed": ms, "trainable_encoder_params": int(n_trainable),
           "final_train_loss": float(history.records[-1]["loss"])}
    for name in data["eval_sets"]:
        e = tokenize(tok, data[f"eval_{name}_texts"], max_length=cfg.max_length, device=device)
        f, lg = encode(model, e["input_ids"], e["attention_mask"])
        labels = np.asarray(data[f"eval_{name}_labels"])
        out[f"acc_{name}"] = float((lg.argmax(1) == labels).mean())
        if name in data["silhouette_sets"]:
            out[f"sil_{name}"] = class_silhouette(f, labels)
    out["curve"] = [{"seed": int(seed), "arm": arm, **r} for r in history.records]
    return out


def prepare_data(seed: int, train_texts: list[str], train_labels: np.ndarray, test_texts: list[str],
                 test_labels: np.ndarray, n_per_class: int, n_aug: int, alpha: float, alpha_heavy: float,
                 n_test_per_class: int, synonyms, test_seed: int = 12345) -> dict:
    """The data of one seed, shared by its arms: a class-balanced training sample of ``n_per_class``
    per label (drawn with ``seed``) with ``n_aug`` EDA copies each at strength ``alpha``; a fixed balanced
    test sample (``test_seed``, the same for every seed) and two EDA-altered copies of it, at ``alpha``
    (``aug``, the kind of data the model was trained on) and ``alpha_heavy`` (``heavy``)."""
    from papers.augment_peft.data import stratified_sample
    from papers.augment_peft.eda import augment_corpus

    rows = stratified_sample(train_labels, n_per_class, seed)
    texts, labels, groups = augment_corpus([train_texts[i] for i in rows], train_labels[rows], alpha, n_aug,
                                           seed=10_000 + seed, synonyms=synonyms)
    trows = stratified_sample(test_labels, n_test_per_class, test_seed)
    clean = [" ".join(test_texts[i].lower().split()) for i in trows]
    tl = test_labels[trows]
    light, _, g = augment_corpus(clean, tl, alpha, 1, seed=test_seed + 1, synonyms=synonyms)
    heavy, _, _ = augment_corpus(clean, tl, alpha_heavy, 1, seed=test_seed + 2, synonyms=synonyms)
    keep = np.arange(len(light)) % 2 == 1  # each original is followed by its one copy: keep the copies
    return {"train_texts": texts, "train_labels": labels, "train_groups": groups,
            "n_classes": int(np.unique(train_labels).size),
            "eval_sets": ["clean", "aug", "heavy"], "silhouette_sets": ["aug"],
            "eval_clean_texts": clean, "eval_clean_labels": tl,
            "eval_aug_texts": [t for t, k in zip(light, keep) if k], "eval_aug_labels": tl,
            "eval_heavy_texts": [t for t, k in zip(heavy, keep) if k], "eval_heavy_labels": tl}


def minilm_synonyms(k: int = 5):
    """:class:`papers.augment_peft.eda.EmbeddingSynonyms` over MiniLM's word-piece vocabulary and input
    embeddings (read from the checkpoint without building the model)."""
    from safetensors.numpy import load_file

    from papers.augment_peft.eda import EmbeddingSynonyms
    from shared.data import require

    path = require("minilm", "model.safetensors")
    vectors = load_file(str(path))["embeddings.word_embeddings.weight"]
    vocab = (path.parent / "vocab.txt").read_text().split("\n")[: vectors.shape[0]]
    return EmbeddingSynonyms(vocab, vectors, k=k)
