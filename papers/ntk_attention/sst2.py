"""Part 2: NTK-Attention against P-Tuning v2 and a linear probe as PEFT of all-MiniLM-L6-v2 on SST-2.

The paper (Sec. 5, NLU with ChatGLM3-6B on SuperGLUE; vision with ViT) reports NTK-Attention "superior or
competitive" to P-Tuning v2 and LoRA. Here every arm is the same MiniLM + mean pooling + linear head
(shared.encoder.SentenceClassifier), trained by shared.training.train with the same data, batch, steps and
schedule; the arms differ only in what trains inside the encoder:

- ``head``: nothing (linear probe);
- ``prefix``: P-Tuning v2 (learned key/value prefixes in every layer, shared.encoder.PrefixSelfAttention);
- ``ntk``: NTK-Attention (this paper: Z, k per head per layer, papers.ntk_attention.method.NTKSelfAttention);
- ``ntk_frozen``: the NTK-Attention model with Z, k left at their initialisation (the control: the same
  architecture and recipe, the NTK parameters not learned);
- ``lora``: LoRA r=8 on query/value (descriptive; not used by a claim).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn

from shared.textdata import read_labelled

ARMS = ("head", "prefix", "ntk", "ntk_frozen", "lora")
FROZEN_ARMS = ("head", "ntk_frozen")  # nothing in the encoder trains


def balanced_indices(labels: np.ndarray, n: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` indices (n // 2 per class, 2 classes), drawn without replacement by a generator seeded with
    ``seed``, none in ``exclude``; sorted."""
    if n % 2:
        raise ValueError(f"n must be even for a balanced 2-class subset; got {n}")
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(labels), bool)
    if exclude is not None:
        allowed[np.asarray(exclude, dtype=int)] = False
    out = []
    for c in (0, 1):
        pool = np.flatnonzero((labels == c) & allowed)
        if len(pool) < n // 2:
            raise ValueError(f"class {c} has {len(pool)} examples; {n // 2} requested")
        out.append(rng.choice(pool, n // 2, replace=False))
    return np.sort(np.concatenate(out))


def load_splits(n_train: int, n_eval: int, seed: int, eval_split: str) -> dict:
    """Balanced training subset (drawn with ``seed``, so it varies over seeds) and a balanced evaluation
    subset: ``eval_split="test"``: from the SST-2 test file, drawn with data seed 0 (the same items for
    every seed and arm, so arms are compared on identical items); ``"val"``: held out from the training
    file (disjoint from the training subset; used only by pilots that size the budget)."""
    from shared.data import require

    tr_texts, tr_labels = read_labelled(require("eda", "increment_datasets_f2", "sst2", "train_orig.txt"))
    tr = balanced_indices(tr_labels, n_train, seed)
    if eval_split == "test":
        te_texts, te_labels = read_labelled(require("eda", "increment_datasets_f2", "sst2", "test.txt"))
        te = balanced_indices(te_labels, n_eval, 0)
    elif eval_split == "val":
        te_texts, te_labels = tr_texts, tr_labels
        te = balanced_indices(tr_labels, n_eval, 10_000 + seed, exclude=tr)
    else:
        raise ValueError(f"eval_split must be test or val; got {eval_split!r}")
    return {"train_texts": [tr_texts[i] for i in tr], "train_labels": tr_labels[tr],
            "eval_texts": [te_texts[i] for i in te], "eval_labels": te_labels[te]}


def build_model(arm: str, seed: int, prefix_len: int, lora_r: int):
    """(SentenceClassifier, trainable encoder parameters) for ``arm``; the head is always trainable and
    initialised from ``seed``."""
    from papers.ntk_attention.method import NTKSelfAttention
    from shared.encoder import SentenceClassifier, configure_peft, count_trainable, load_encoder, replace_self_attention

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    torch.manual_seed(seed)
    bert, tokenizer = load_encoder("cpu")
    model = SentenceClassifier(bert, 2)
    if arm == "head":
        n = configure_peft(model, "frozen")
    elif arm == "prefix":
        n = configure_peft(model, "prefix", prefix_len=prefix_len)
    elif arm == "lora":
        n = configure_peft(model, "lora", r=lora_r, alpha=2 * lora_r)
    else:
        configure_peft(model, "frozen")
        g = torch.Generator().manual_seed(30_000 + seed)
        replace_self_attention(bert, lambda _i, layer: NTKSelfAttention(layer, generator=g))
        if arm == "ntk_frozen":
            for name, p in bert.named_parameters():
                if name.endswith(".Z") or name.endswith(".kvec"):
                    p.requires_grad_(False)
        n = count_trainable(bert)
    return model, tokenizer, n


@torch.no_grad()
def encode(model: nn.Module, enc: dict, batch: int = 64) -> torch.Tensor:
    """Pooled sentence features (N, 384) of tokenised inputs, in eval mode, ``batch`` rows at a time."""
    model.eval()
    return torch.cat([model.features(enc["input_ids"][i:i + batch], enc["attention_mask"][i:i + batch])
                      for i in range(0, enc["input_ids"].shape[0], batch)])


@torch.no_grad()
def predict(model: nn.Module, enc: dict, batch: int = 64) -> np.ndarray:
    """Predicted labels of tokenised inputs, in eval mode, ``batch`` rows at a time."""
    model.eval()
    out = []
    for i in range(0, enc["input_ids"].shape[0], batch):
        logits = model(enc["input_ids"][i:i + batch], enc["attention_mask"][i:i + batch])
        out.append(logits.argmax(-1))
    return torch.cat(out).cpu().numpy()


def peft_job(arm: str, seed: int, n_train: int, n_eval: int, eval_split: str, steps: int, batch: int, lr: float,
             max_length: int, prefix_len: int, lora_r: int, device: str = "cpu") -> dict:
    """Train one (arm, seed) and evaluate it: a row with the accuracy, the per-item correctness (a string
    of 0/1 over the evaluation items), the trainable parameter count and the training curve's ends. A
    diverged run (non-finite loss) is recorded as ``diverged`` with chance accuracy, never raised.

    Arms whose encoder is frozen (``head``, ``ntk_frozen``) encode the data once in eval mode and train
    the same head with the same steps, batch and learning rate on those features (the same function class;
    no encoder dropout, which can only help the baseline)."""
    from shared.classifier import minibatch_sampler
    from shared.encoder import tokenize
    from shared.seeding import seed_everything
    from shared.training import TrainConfig, train

    seed_everything(seed)
    data = load_splits(n_train, n_eval, seed, eval_split)
    model, tokenizer, n_trainable = build_model(arm, seed, prefix_len, lora_r)
    model.to(device)
    tr = tokenize(tokenizer, data["train_texts"], max_length=max_length, device=device)
    ev = tokenize(tokenizer, data["eval_texts"], max_length=max_length, device=device)
    y = torch.as_tensor(data["train_labels"], device=device)
    g = torch.Generator().manual_seed(40_000 + seed)
    frozen = arm in FROZEN_ARMS
    if frozen:  # nothing in the encoder trains: encode once (eval mode), train the head on the features
        feats = encode(model, tr)
        ev_feats = encode(model, ev)
        sampler = minibatch_sampler([feats, y], batch, g)
        trained, batch_fn = model.head, sampler

        def loss_fn(mod: nn.Module, b) -> torch.Tensor:
            return nn.functional.cross_entropy(mod(b[0]), b[1])
    else:
        sampler = minibatch_sampler([tr["input_ids"], tr["attention_mask"], y], batch, g)
        trained = model

        def batch_fn(step: int):
            ids, am, yy = sampler(step)
            width = int(am.sum(1).max())  # drop all-padding columns (same function, less work)
            return ids[:, :width], am[:, :width], yy

        def loss_fn(mod: nn.Module, b) -> torch.Tensor:
            ids, am, yy = b
            return nn.functional.cross_entropy(mod(ids, am), yy)

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.0, warmup_steps=max(1, steps // 10), schedule="cosine",
                      log_every=max(1, steps // 10), desc=f"{arm} seed {seed}", progress=False)
    t0 = time.perf_counter()
    diverged = False
    try:
        hist = train(trained, cfg, batch_fn, loss_fn, device)
        first_loss, last_loss = float(hist.records[0]["loss"]), float(hist.last("loss"))
    except FloatingPointError:
        diverged, first_loss, last_loss = True, math.nan, math.nan
    sec_per_step = (time.perf_counter() - t0) / steps
    labels = data["eval_labels"]
    if diverged:
        correct, acc = "", 0.5
    else:
        if frozen:
            with torch.no_grad():
                pred = model.head(ev_feats).argmax(-1).cpu().numpy()
        else:
            pred = predict(model, ev)
        correct = "".join(map(str, (pred == labels).astype(int).tolist()))
        acc = float((pred == labels).mean())
    return {"arm": arm, "seed": seed, "accuracy": acc, "n_trainable_encoder": int(n_trainable),
            "first_loss": first_loss, "last_loss": last_loss, "diverged": diverged,
            "sec_per_step": sec_per_step, "lr": lr, "correct": correct}
