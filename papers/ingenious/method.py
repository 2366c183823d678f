"""INGENIOUS (Renduchintala et al., 2023) at toy scale: facility-location subset selection for LM pre-training.

The paper (Sec. 3, Fig. 2, Algorithm 1) pre-trains on a subset of the corpus that is re-selected
periodically from the model's own representations:

A. warm-start on the full data for ``W`` steps;
B. split the ground set into ``P`` random partitions (B1) and run greedy facility-location maximisation
   ``f(S) = sum_i max_{j in S} sim(i, j)`` inside each one (B2), keeping every element's greedy marginal
   gain as its importance score;
C. sample ``k_p`` (proportional to the partition's size) elements per partition with probabilities from
   the Taylor-softmax of the importance scores, rather than taking the greedy top-k;
D. train on the subset for ``R`` steps, recompute the features with the current model and re-select.

Here the corpus is Tiny Shakespeare (characters), the ground set a pool of fixed-length training windows,
the model a tiny GPT-2 (``shared.lm.tiny_gpt2``) trained from scratch with ``shared.training.train``, and the
features the mean-pooled last-layer hidden states of the current model. Every arm (full data, random
subset re-sampled every ``R`` steps, a second random stream as A/A control, facility location) runs the same
steps, batch size and window length from the same initialisation and the same warm-start batches, and is
scored on a held-out split of the text (the last part of the file) that the selection never sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from shared.claims import Control, Gate
from shared.metrics import Measurement
from shared.stats import seed_measurement

ARMS = ("full", "random", "random_b", "fl")
# the selection stream of each subset arm: random and random_b differ only in this stream (A/A control)
_STREAM = {"full": 0, "random": 1, "random_b": 2, "fl": 3}


# --- corpus ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    """Character-level corpus: ``pool`` (N, L) training windows (the ground set of the selection) and
    ``test`` (M, L) held-out windows from the end of the text (never seen by the selection)."""

    vocab: str
    pool: torch.Tensor  # (N, L) long
    test: torch.Tensor  # (M, L) long
    unigram_loss: float  # held-out cross-entropy (nats/char) of the train-split character frequencies


def build_corpus(text: str, window: int, n_pool: int, n_test: int, test_fraction: float = 0.1,
                 data_seed: int = 0) -> Corpus:
    """Split ``text`` at ``1 - test_fraction`` (train before, test after), cut both parts into
    non-overlapping windows of ``window`` characters, draw ``n_pool`` training windows (without replacement,
    seeded by ``data_seed``) and take ``n_test`` test windows evenly spaced over the test part."""
    vocab = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    cut = int(len(ids) * (1 - test_fraction))
    train, test = ids[:cut], ids[cut:]
    train_w = train[: len(train) // window * window].reshape(-1, window)
    test_w = test[: len(test) // window * window].reshape(-1, window)
    if n_pool > len(train_w) or n_test > len(test_w):
        raise ValueError(f"asked for {n_pool} pool / {n_test} test windows; have {len(train_w)} / {len(test_w)}")
    rng = np.random.default_rng(data_seed)
    pool = train_w[np.sort(rng.choice(len(train_w), n_pool, replace=False))]
    test_sel = test_w[np.linspace(0, len(test_w) - 1, n_test).round().astype(int)]
    return Corpus(vocab, torch.from_numpy(pool), torch.from_numpy(test_sel),
                  unigram_loss(train, test_sel[:, 1:].reshape(-1), len(vocab)))


def unigram_loss(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats) on ``test_ids`` of the add-one smoothed character frequencies of ``train_ids``:
    the spec-blind baseline the retention ratio is measured against."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(float) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[test_ids].mean())


# --- facility location (Sec. 3, steps B and C) ---------------------------------------------------------------

def cosine_kernel(features: np.ndarray, center: bool = True) -> np.ndarray:
    """(n, n) cosine similarities clipped at 0 (the facility-location kernel must be non-negative).

    ``center`` subtracts the mean feature first: mean-pooled hidden states of a small LM share one large
    common direction (uncentred cosines are all ~0.99 here, which makes every subset equally
    "representative"); centring is our choice, not stated in the paper."""
    if center:
        features = features - features.mean(axis=0, keepdims=True)
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return np.clip(x @ x.T, 0.0, None)


def facility_location(sim: np.ndarray, subset) -> float:
    """``f(S) = sum_i max_{j in S} sim[i, j]`` (0 for the empty set)."""
    subset = np.asarray(list(subset), dtype=int)
    if subset.size == 0:
        return 0.0
    return float(sim[:, subset].max(axis=1).sum())


def greedy_gains(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximisation of facility location over the whole ground set: (order, gains), where
    ``order[t]`` is the element picked at step t and ``gains[j]`` the marginal gain element j had when it was
    picked (its importance score). Ties go to the lowest index."""
    n = sim.shape[0]
    cover = np.zeros(n)  # max similarity of each i to the current set
    chosen = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=int)
    gains = np.empty(n)
    for t in range(n):
        g = np.maximum(sim - cover[:, None], 0.0).sum(axis=0)  # gain of adding column j
        g[chosen] = -np.inf
        j = int(np.argmax(g))
        order[t], gains[j], chosen[j] = j, g[j], True
        cover = np.maximum(cover, sim[:, j])
    return order, gains


def taylor_softmax(scores: np.ndarray) -> np.ndarray:
    """Second-order Taylor softmax: ``p_j ∝ 1 + s_j + s_j^2 / 2`` (always positive)."""
    w = 1.0 + scores + scores ** 2 / 2.0
    return w / w.sum()


def partition_sizes(n: int, n_partitions: int, k: int) -> np.ndarray:
    """Split ``k`` across partitions of a random split of ``n`` items into ``n_partitions`` near-equal
    parts, proportionally to their sizes (largest remainders), so the sizes sum to ``k``."""
    sizes = np.array([len(a) for a in np.array_split(np.arange(n), n_partitions)])
    exact = k * sizes / n
    base = np.floor(exact).astype(int)
    rest = k - base.sum()
    base[np.argsort(-(exact - base), kind="stable")[:rest]] += 1
    return base


def ingenious_select(features: np.ndarray, k: int, n_partitions: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, float, float]:
    """One INGENIOUS selection of ``k`` of the ``n`` rows of ``features`` (n, d).

    Returns (subset indices, f(subset), f(uniform random subset of the same partition sizes)), both
    objectives summed over the partitions on the same features: the manipulation check compares them.
    """
    n = features.shape[0]
    perm = rng.permutation(n)
    parts = np.array_split(perm, n_partitions)
    ks = partition_sizes(n, n_partitions, k)
    chosen, f_sel, f_rand = [], 0.0, 0.0
    for part, kp in zip(parts, ks):
        sim = cosine_kernel(features[part])
        _, gains = greedy_gains(sim)
        pick = rng.choice(len(part), size=kp, replace=False, p=taylor_softmax(gains))
        rand = rng.choice(len(part), size=kp, replace=False)
        f_sel += facility_location(sim, pick)
        f_rand += facility_location(sim, rand)
        chosen.append(part[pick])
    return np.sort(np.concatenate(chosen)), f_sel, f_rand


def random_pair_objectives(features: np.ndarray, k: int, n_partitions: int, rng: np.random.Generator
                           ) -> tuple[float, float]:
    """f of two independent uniform random subsets with the same partition sizes: the A/A control of the
    manipulation check."""
    n = features.shape[0]
    parts = np.array_split(rng.permutation(n), n_partitions)
    ks = partition_sizes(n, n_partitions, k)
    fa = fb = 0.0
    for part, kp in zip(parts, ks):
        sim = cosine_kernel(features[part])
        fa += facility_location(sim, rng.choice(len(part), size=kp, replace=False))
        fb += facility_location(sim, rng.choice(len(part), size=kp, replace=False))
    return fa, fb


# --- model and training ---------------------------------------------------------------------------------------

@torch.no_grad()
def embed_windows(model, windows: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Mean-pooled last-layer hidden states (n, d) of the current model (the selection features)."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(windows), batch_size):
        h = model.transformer(input_ids=windows[i:i + batch_size].to(dev)).last_hidden_state  # (B, L, d)
        out.append(h.mean(dim=1).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch_size: int = 256) -> float:
    """Mean next-character cross-entropy (nats) over every predicted position of the test windows."""
    from shared.lm import causal_lm_loss

    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size].to(dev)
        total += float(causal_lm_loss(model, x)) * x.shape[0]
        count += x.shape[0]
    return total / count


def run_arm(corpus: Corpus, arm: str, seed: int, steps: int, warm_steps: int, reselect_every: int,
            subset_fraction: float, n_partitions: int, batch_size: int, lr: float, d_model: int,
            n_layers: int, n_heads: int, eval_every: int, device: str = "cpu") -> dict:
    """Train one arm for one seed; return the final held-out loss, the warm-start checkpoint's held-out
    loss, the curve and (FL arm) the selection log. Same init, same warm-start batches for every arm of a
    seed; after the warm start each subset arm draws its batches uniformly from its current subset."""
    from shared.lm import causal_lm_loss, tiny_gpt2
    from shared.seeding import seed_everything
    from shared.training import TrainConfig, train

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}")
    seed_everything(seed)
    torch.set_num_threads(1)
    model = tiny_gpt2(len(corpus.vocab), corpus.pool.shape[1], d_model=d_model, n_layers=n_layers,
                      n_heads=n_heads)
    n = corpus.pool.shape[0]
    k = max(1, int(round(subset_fraction * n)))
    batch_rng = np.random.default_rng([seed, 0])  # identical warm-start batches in every arm
    select_rng = np.random.default_rng([seed, _STREAM[arm]])
    state = {"subset": np.arange(n), "warm_loss": None}
    selections: list[dict] = []

    def batch_fn(step: int) -> torch.Tensor:
        if step == warm_steps:
            state["warm_loss"] = heldout_loss(model, corpus.test)
        if arm != "full" and step >= warm_steps and (step - warm_steps) % reselect_every == 0:
            t0 = time.perf_counter()
            if arm == "fl":
                feats = embed_windows(model, corpus.pool)
                subset, f_sel, f_rand = ingenious_select(feats, k, n_partitions, select_rng)
                fa, fb = random_pair_objectives(feats, k, n_partitions, np.random.default_rng([seed, 9, step]))
                selections.append({"step": step, "f_fl": f_sel, "f_random": f_rand, "f_random_a": fa,
                                   "f_random_b": fb,
                                   "overlap_prev": float(np.isin(subset, state["subset"]).mean()),
                                   "seconds": time.perf_counter() - t0})
            else:
                subset = np.sort(select_rng.choice(n, size=k, replace=False))
            state["subset"] = subset
        source = state["subset"] if step >= warm_steps else np.arange(n)
        return corpus.pool[source[batch_rng.integers(0, len(source), batch_size)]].to(device)

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(50, steps // 10), log_every=max(1, eval_every),
                      eval_every=eval_every, desc=f"{arm} seed {seed}", progress=False)
    hist = train(model, cfg, batch_fn, lambda m, x: causal_lm_loss(m, x), device,
                 eval_fn=lambda m: {"heldout_loss": heldout_loss(m, corpus.test)})
    curve = hist.to_frame().assign(arm=arm, seed=seed)
    warm = state["warm_loss"] if state["warm_loss"] is not None else float("nan")
    return {"arm": arm, "seed": seed, "heldout_loss": float(hist.last("heldout_loss")),
            "warm_heldout_loss": warm, "curve": curve,
            "selections": pd.DataFrame(selections).assign(seed=seed) if selections else pd.DataFrame()}


def run_grid(corpus: Corpus, seeds: list[int], arms: list[str], workers: int = 2, device: str = "cpu", **kwargs
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every (arm, seed) in parallel worker processes: (per-run results, curves, FL selection log)."""
    from shared.parallel import run_jobs

    jobs = [(corpus, arm, seed, *[kwargs[k] for k in _RUN_KEYS], device) for seed in seeds for arm in arms]
    cost = [3.0 if j[1] == "fl" else 1.0 for j in jobs]
    out = run_jobs(run_arm, jobs, workers=workers, cost=cost)
    results = pd.DataFrame([{k: r[k] for k in ("arm", "seed", "heldout_loss", "warm_heldout_loss")} for r in out])
    curves = pd.concat([r["curve"] for r in out], ignore_index=True)
    sel = [r["selections"] for r in out if len(r["selections"])]
    return results, curves, (pd.concat(sel, ignore_index=True) if sel else pd.DataFrame())


_RUN_KEYS = ("steps", "warm_steps", "reselect_every", "subset_fraction", "n_partitions", "batch_size", "lr",
             "d_model", "n_layers", "n_heads", "eval_every")


# --- claims -----------------------------------------------------------------------------------------------------

def _by_arm(results: pd.DataFrame, arm: str, column: str = "heldout_loss") -> pd.Series:
    return results[results["arm"] == arm].set_index("seed")[column].sort_index()


def learned_gate(results: pd.DataFrame, max_loss: float) -> Gate:
    """The full-data model learned the language: its held-out loss is <= ``max_loss`` in every seed."""
    worst = float(_by_arm(results, "full").max())
    return Gate(passed=bool(worst <= max_loss), value=worst,
                detail=f"worst full-data held-out loss {worst:.4f} nats/char vs the gate {max_loss:g}")


def measure_fl_beats_random(results: pd.DataFrame, max_loss: float, min_room: float
                            ) -> tuple[Measurement, Gate, Control, str]:
    """Held-out loss of the random-subset arm minus the FL arm, per seed (positive = FL better), mean with a t
    interval. Gate: the full-data model learned (<= ``max_loss``) and the budget is data-limited (the random
    subset is worse than full data by >= ``min_room`` nats on average), so a better subset has room to help.
    Control: random_b minus random (two random streams, A/A), same statistic."""
    rand, fl, full, rand_b = (_by_arm(results, a) for a in ("random", "fl", "full", "random_b"))
    diff = (rand - fl).dropna()
    room = float((rand - full).mean())
    learned = learned_gate(results, max_loss)
    gate = Gate(passed=bool(learned.passed and room >= min_room), value=room,
                detail=f"{learned.detail}; random minus full {room:.4f} nats (needs >= {min_room:g})")
    control = Control(seed_measurement((rand - rand_b).dropna().tolist(), unit="nats/char"),
                      detail="random minus random_b: two uniform random subset streams (A/A)")
    detail = (f"random {rand.mean():.4f}, FL {fl.mean():.4f}, full {full.mean():.4f} nats/char; "
              f"per-seed random - FL: {', '.join(f'{v:+.4f}' for v in diff)}")
    return seed_measurement(diff.tolist(), unit="nats/char"), gate, control, detail


def retention(arm_loss, full_loss, reference: float):
    """Fraction of the full-data model's improvement over the unigram baseline that an arm keeps:
    ``(reference - arm) / (reference - full)``."""
    return (reference - np.asarray(arm_loss, dtype=float)) / (reference - np.asarray(full_loss, dtype=float))


def measure_fl_retention(results: pd.DataFrame, reference: float, max_loss: float
                         ) -> tuple[Measurement, Gate, Control, str]:
    """Per seed, the FL arm's retention of the full-data improvement over the unigram loss; t interval.
    Gate: the full-data model learned. Control: the same statistic for the warm-start checkpoint (the model
    before any subset training), which must not meet the criterion or the budget after the warm start
    does not matter."""
    full, fl = _by_arm(results, "full"), _by_arm(results, "fl")
    warm = _by_arm(results, "fl", "warm_heldout_loss")
    r = retention(fl.values, full.values, reference)
    rw = retention(warm.values, full.values, reference)
    rr = retention(_by_arm(results, "random").values, full.values, reference)
    detail = (f"unigram {reference:.4f}, full {full.mean():.4f}, FL {fl.mean():.4f}, warm start "
              f"{warm.mean():.4f} nats/char; retention FL {r.mean():.4f}, random {rr.mean():.4f}, "
              f"warm start {rw.mean():.4f}")
    control = Control(seed_measurement(rw.tolist(), unit="fraction"),
                      detail="the warm-start checkpoint (no subset training), same statistic")
    return seed_measurement(r.tolist(), unit="fraction"), learned_gate(results, max_loss), control, detail


def measure_fl_objective(selections: pd.DataFrame) -> tuple[Measurement, Control, str]:
    """Manipulation check: per seed, the mean over re-selections of f(S_FL) / f(S_random) - 1 on the same
    features and partitions. Control: f(S_random_a) / f(S_random_b) - 1 (two random subsets)."""
    s = selections.assign(gain=selections["f_fl"] / selections["f_random"] - 1.0,
                          aa=selections["f_random_a"] / selections["f_random_b"] - 1.0)
    per_seed = s.groupby("seed")[["gain", "aa"]].mean().sort_index()
    detail = (f"{len(s)} selections; relative FL gain per seed "
              f"{', '.join(f'{v:.4f}' for v in per_seed['gain'])}")
    control = Control(seed_measurement(per_seed["aa"].tolist(), unit="relative gain"),
                      detail="two uniform random subsets of the same partition sizes (A/A)")
    return seed_measurement(per_seed["gain"].tolist(), unit="relative gain"), control, detail
