"""The controlled arm: a tiny GPT pretrained on a synthetic knowledge base of which only a known subset of
facts appears, then tuned with vanilla or R-Tuning data exactly as in the paper's pipeline.

Here the "parametric knowledge" is under our control: a fact (subject s, relation r, object o) is in the
pretraining corpus or it is not, and how often it appears varies. Everything downstream follows the paper
(and the LM arm): the pretrained model's own greedy answers split the tuning questions into certain /
uncertain, vanilla tuning trains on ``Q s r A o .``, R-Tuning on ``Q s r A o . CHECK sure|unsure``
(gold answer kept), and AP ranks the tuned model's test answers by answer confidence (vanilla) or by
0.5 * confidence + 0.5 * p(sure) (R-Tuning). ID test = new subjects with the tuned relations; OOD test =
the same new subjects with relations never seen in tuning (all relations are in pretraining).

Objects of a relation follow a Zipf prior, so a model that does not know a fact still answers it right
now and then by guessing the most common object, as a real model guesses "French" for a French name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.lm import tiny_gpt2
from shared.seeding import seed_everything
from shared.training import TrainConfig, train

PAD, Q, A, DOT, CHECK, SURE, UNSURE = range(7)
N_SPECIAL = 7


@dataclass(frozen=True)
class WorldSpec:
    n_subjects: int = 300
    n_relations: int = 8
    n_id_relations: int = 4  # relations 0..n_id-1 are tuned on; the rest are the OOD test
    n_objects: int = 16  # objects per relation (disjoint vocabularies)
    zipf: float = 1.0  # object prior p(k) ~ 1 / (k + 1)^zipf
    p_known: float = 0.5  # probability that a fact appears in the pretraining corpus
    max_frequency: float = 10.0  # a known fact's corpus weight is log-uniform in [1, max_frequency]
    n_train_subjects: int = 100  # subjects whose ID facts form the tuning set

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_relations + self.n_subjects + self.n_relations * self.n_objects

    def rel_token(self, r):
        return N_SPECIAL + np.asarray(r)

    def subj_token(self, s):
        return N_SPECIAL + self.n_relations + np.asarray(s)

    def obj_token(self, r, k):
        return N_SPECIAL + self.n_relations + self.n_subjects + np.asarray(r) * self.n_objects + np.asarray(k)


@dataclass
class World:
    spec: WorldSpec
    obj: np.ndarray  # (n_subjects, n_relations) object index k of each fact
    known: np.ndarray  # (n_subjects, n_relations) bool: the fact is in the pretraining corpus
    weight: np.ndarray  # (n_subjects, n_relations) corpus weight (0 for unknown facts)
    train_subjects: np.ndarray
    test_subjects: np.ndarray


def zipf_prior(n: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return p / p.sum()


def make_world(spec: WorldSpec, seed: int) -> World:
    """A knowledge base and its pretraining exposure, deterministic given ``seed``."""
    if not 1 <= spec.n_id_relations < spec.n_relations:
        raise ValueError("need 1 <= n_id_relations < n_relations (some relations must be held out)")
    if not 1 <= spec.n_train_subjects < spec.n_subjects:
        raise ValueError("need 1 <= n_train_subjects < n_subjects")
    rng = np.random.default_rng(seed)
    shape = (spec.n_subjects, spec.n_relations)
    obj = rng.choice(spec.n_objects, size=shape, p=zipf_prior(spec.n_objects, spec.zipf))
    known = rng.random(shape) < spec.p_known
    weight = np.where(known, np.exp(rng.uniform(0.0, np.log(spec.max_frequency), size=shape)), 0.0)
    perm = rng.permutation(spec.n_subjects)
    return World(spec, obj, known, weight, np.sort(perm[:spec.n_train_subjects]),
                 np.sort(perm[spec.n_train_subjects:]))


def qa_tokens(spec: WorldSpec, s: np.ndarray, r: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) prompts ``Q s r A``, or (N, 6) examples ``Q s r A o .`` when objects ``k`` are given."""
    s, r = np.asarray(s), np.asarray(r)
    cols = [np.full(s.shape, Q), spec.subj_token(s), spec.rel_token(r), np.full(s.shape, A)]
    if k is not None:
        cols += [spec.obj_token(r, np.asarray(k)), np.full(s.shape, DOT)]
    return np.stack(cols, axis=1)


def r_tuning_tokens(spec: WorldSpec, s, r, k, certain) -> np.ndarray:
    """(N, 8) R-Tuning examples ``Q s r A o . CHECK sure|unsure`` (gold object kept in both cases)."""
    base = qa_tokens(spec, s, r, k)
    tail = np.stack([np.full(base.shape[0], CHECK), np.where(np.asarray(certain, bool), SURE, UNSURE)], axis=1)
    return np.concatenate([base, tail], axis=1)


RESPONSE_START = 4  # the answer token follows ``Q s r A``: the loss predicts tokens 4.. (the response)


def response_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the response tokens (position 4 onwards) given everything before them."""
    logits = model(input_ids=tokens).logits[:, RESPONSE_START - 1:-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, RESPONSE_START:].reshape(-1))


def weighted_response_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Per example: the mean cross-entropy of the answer tokens (``o .``) plus, for R-Tuning examples (8
    tokens), the cross-entropy of the certainty token (``sure``/``unsure``); the fixed ``CHECK`` token is
    not a target. Averaged over the batch. (A token mean over ``o . CHECK sure`` would give the certainty
    label a quarter of an example's weight.)"""
    logits = model(input_ids=tokens).logits[:, RESPONSE_START - 1:-1].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, RESPONSE_START:].reshape(-1),
                         reduction="none").view(tokens.shape[0], -1)  # (B, response length)
    loss = ce[:, :2].mean(dim=1)  # answer object and '.'
    if tokens.shape[1] == 8:
        loss = loss + ce[:, 3]  # the certainty token (position 7)
    elif tokens.shape[1] != 6:
        raise ValueError(f"expected 6 (vanilla) or 8 (R-Tuning) tokens per example, got {tokens.shape[1]}")
    return loss.mean()


def full_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the whole sequence (pretraining)."""
    logits = model(input_ids=tokens).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


@dataclass(frozen=True)
class TinySpec:
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    pretrain_steps: int = 1500
    pretrain_batch: int = 256
    pretrain_lr: float = 1e-3
    tune_epochs: int = 3
    tune_batch: int = 32
    tune_lr: float = 3e-4


def pretrain(world: World, tiny: TinySpec, seed: int, device: str, progress: bool):
    """A tiny GPT-2 trained from scratch on the known facts, ``Q s r A o .``, sampled by corpus weight."""
    seed_everything(seed)
    spec = world.spec
    model = tiny_gpt2(spec.vocab_size, 8, d_model=tiny.d_model, n_layers=tiny.n_layers, n_heads=tiny.n_heads,
                      pad_token_id=PAD)
    s_idx, r_idx = np.nonzero(world.known)
    p = world.weight[s_idx, r_idx] / world.weight[s_idx, r_idx].sum()
    corpus = torch.as_tensor(qa_tokens(spec, s_idx, r_idx, world.obj[s_idx, r_idx]), dtype=torch.long)
    rng = np.random.default_rng(seed + 1)

    def batch_fn(_step):
        return corpus[rng.choice(len(corpus), size=tiny.pretrain_batch, p=p)].to(device)

    cfg = TrainConfig(steps=tiny.pretrain_steps, lr=tiny.pretrain_lr, warmup_steps=tiny.pretrain_steps // 20,
                      weight_decay=0.0, log_every=max(1, tiny.pretrain_steps // 20), desc=f"pretrain s{seed}",
                      progress=progress)
    history = train(model, cfg, batch_fn, full_loss, device)
    return model.eval(), history


@torch.no_grad()
def answer(model, spec: WorldSpec, s, r, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-token answer to ``Q s r A`` (object index, or -1 if the argmax is not an object of r)
    and its probability (the answer confidence: one token, so the geometric mean is the probability)."""
    prompts = torch.as_tensor(qa_tokens(spec, s, r), dtype=torch.long, device=device)
    probs = model(input_ids=prompts).logits[:, -1].float().softmax(-1)
    conf, tok = probs.max(-1)
    k = tok.cpu().numpy() - spec.obj_token(np.asarray(r), 0)
    k = np.where((k >= 0) & (k < spec.n_objects), k, -1)
    return k, conf.cpu().numpy()


@torch.no_grad()
def certainty(model, spec: WorldSpec, s, r, k_pred, device: str) -> np.ndarray:
    """p(sure) / (p(sure) + p(unsure)) after ``Q s r A o_pred . CHECK`` (o_pred: the model's own answer;
    a non-object answer is replaced by the relation's first object so the sequence stays well-formed)."""
    k = np.where(np.asarray(k_pred) >= 0, k_pred, 0)
    seq = np.concatenate([qa_tokens(spec, s, r, k), np.full((len(k), 1), CHECK)], axis=1)
    logits = model(input_ids=torch.as_tensor(seq, dtype=torch.long, device=device)).logits[:, -1].float()
    two = logits[:, [SURE, UNSURE]].softmax(-1)
    return two[:, 0].cpu().numpy()


def tune(pretrained, world: World, method: str, certain: np.ndarray, tiny: TinySpec, seed: int, device: str,
         progress: bool):
    """Vanilla or R-Tuning fine-tuning (all weights) of a copy of the pretrained model on the ID facts of
    the training subjects; ``certain`` (per training fact, in the order of :func:`tuning_facts`) is the
    pretrained model's correctness."""
    import copy

    spec = world.spec
    s, r = tuning_facts(world)
    k = world.obj[s, r]
    if method == "vanilla":
        data = qa_tokens(spec, s, r, k)
    elif method == "r_tuning":
        data = r_tuning_tokens(spec, s, r, k, certain)
    else:
        raise ValueError(f"unknown method {method!r}")
    data = torch.as_tensor(data, dtype=torch.long)
    model = copy.deepcopy(pretrained)
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(data), generator=gen) for _ in range(tiny.tune_epochs)])
    steps = -(-len(order) // tiny.tune_batch)

    def batch_fn(step):
        return data[order[step * tiny.tune_batch:(step + 1) * tiny.tune_batch]].to(device)

    cfg = TrainConfig(steps=steps, lr=tiny.tune_lr, warmup_steps=0, schedule="constant", weight_decay=0.0,
                      log_every=max(1, steps // 10), desc=f"{method} s{seed}", progress=progress)
    train(model, cfg, batch_fn, weighted_response_loss, device)
    return model.eval()


def tuning_facts(world: World) -> tuple[np.ndarray, np.ndarray]:
    """(subjects, relations) of the tuning set: training subjects x ID relations."""
    rels = np.arange(world.spec.n_id_relations)
    s, r = np.meshgrid(world.train_subjects, rels, indexing="ij")
    return s.ravel(), r.ravel()


def test_facts(world: World, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(subjects, relations) of the ID (tuned relations) or OOD (held-out relations) test, test subjects."""
    if split == "id":
        rels = np.arange(world.spec.n_id_relations)
    elif split == "ood":
        rels = np.arange(world.spec.n_id_relations, world.spec.n_relations)
    else:
        raise ValueError(f"split must be 'id' or 'ood'; got {split!r}")
    s, r = np.meshgrid(world.test_subjects, rels, indexing="ij")
    return s.ravel(), r.ravel()


def run_seed(spec: WorldSpec, tiny: TinySpec, seed: int, device: str, progress: bool = False):
    """One seed of the controlled arm: world, pretraining, knowledge split, both tunings, evaluation.

    Returns (per-question table, facts about the seed). Columns: seed, method, split, correct, confidence,
    p_sure (NaN for vanilla), in_pretraining (the fact was in the corpus), pretrained_correct (the model
    before tuning answered it right).
    """
    import pandas as pd

    world = make_world(spec, seed)
    base, history = pretrain(world, tiny, seed, device, progress)
    s_tr, r_tr = tuning_facts(world)
    k_tr, _ = answer(base, spec, s_tr, r_tr, device)
    certain = k_tr == world.obj[s_tr, r_tr]
    splits = {name: test_facts(world, name) for name in ("id", "ood")}
    base_correct = {name: answer(base, spec, s, r, device)[0] == world.obj[s, r] for name, (s, r) in splits.items()}
    rows, train_auroc = [], float("nan")
    for method in ("vanilla", "r_tuning"):
        model = tune(base, world, method, certain, tiny, seed, device, progress)
        if method == "r_tuning" and 0 < certain.sum() < len(certain):  # did it fit its certainty labels?
            from sklearn.metrics import roc_auc_score

            p_train = certainty(model, spec, s_tr, r_tr, world.obj[s_tr, r_tr], device)
            train_auroc = float(roc_auc_score(certain, p_train))
        for name, (s, r) in splits.items():
            k, conf = answer(model, spec, s, r, device)
            p_sure = certainty(model, spec, s, r, k, device) if method == "r_tuning" else np.full(len(s), np.nan)
            rows.append(pd.DataFrame({
                "seed": seed, "method": method, "split": name, "qid": np.arange(len(s)), "correct": k == world.obj[s, r],
                "confidence": conf, "p_sure": p_sure, "in_pretraining": world.known[s, r],
                "pretrained_correct": base_correct[name]}))
    info = {"seed": seed, "certain_fraction": float(certain.mean()),
            "known_recall": float((certain & world.known[s_tr, r_tr]).sum() / max(1, world.known[s_tr, r_tr].sum())),
            "pretrain_final_loss": float(history.last("loss")), "train_auroc_p_sure": train_auroc}
    return pd.concat(rows, ignore_index=True), info


def run_arm(spec: WorldSpec, tiny: TinySpec, seeds, device: str, workers: int = 1, progress: bool = True):
    """:func:`run_seed` for every seed (in ``workers`` single-threaded processes on a CPU; each seed seeds
    itself, so the results do not depend on ``workers``). Returns (per-question table, per-seed info)."""
    import time

    import pandas as pd

    from shared.parallel import run_jobs

    start = time.perf_counter()

    def done(i, result, n):
        if progress:
            print(f"[synthetic {time.perf_counter() - start:6.0f} s] seed {seeds[i]} done ({n}/{len(seeds)}): "
                  f"{100 * result[1]['certain_fraction']:.0f}% of tuning facts answered right before tuning",
                  flush=True)

    jobs = [(spec, tiny, int(s), device, False) for s in seeds]
    results = run_jobs(run_seed, jobs, workers=workers if device == "cpu" else 1, on_done=done)
    return (pd.concat([r[0] for r in results], ignore_index=True), pd.DataFrame([r[1] for r in results]))
