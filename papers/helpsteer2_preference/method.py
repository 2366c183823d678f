"""Simulated HelpSteer2(-Preference) annotation and the paper's reward-model losses.

HelpSteer2-Preference (Wang et al., 2025) adds 7-point preference annotations (A >>> B ... B >>> A) to the
SAME prompt/response pairs that HelpSteer2 rated on a 0-4 Likert scale, and compares, on matched data,
Regression reward models (MSE on the rating, Sec. 4 "SteerLM Regression"), Bradley-Terry (Eq. 1), Margin BT
(Eq. 2, margin = preference magnitude) and the proposed Scaled BT (Eq. 3, loss weighted by the preference
magnitude), and Scaled BT initialised from the helpfulness-only Regression model (Sec. 4, Table 4).

The data here are fully synthetic (HelpSteer2, its responses and a 70B model are out of reach offline):

* a *world* (one per seed): a hidden utility ``q(prompt, response) = prompt_scale * u . z_p + h([z_p, x])``,
  ``h`` a fixed random tanh network of the prompt and response features standardised to unit variance;
* each task = one prompt with two responses (as in HelpSteer2), features ``z_p`` (d_prompt) and ``x``
  (d_resp) standard Gaussian;
* simulated annotators perceive each response's utility with Gaussian noise ``sigma`` (one perception model
  for both tasks, so neither annotation format is favoured by construction). In the rating task annotator j
  also carries a per-(annotator, prompt) calibration offset ``o ~ N(0, sigma_offset)``; the Likert rating is
  ``clip(round(2 + q + o + eps), 0, 4)``. In the preference task (a separate session, fresh noise) the
  7-point strength is ``clip(round(pref_scale * (y_a - y_b)), -3, 3)``;
* aggregation and filtering as the paper describes (Sec. 2): ratings averaged over annotators; preference =
  median strength; tasks whose annotators' strengths span more than ``max_spread`` points are dropped.

The reward model is a small MLP on the concatenated [prompt, response] features, trained with
:func:`shared.training.train`. Evaluation: held-out pairwise accuracy against the TRUE utility (the
RewardBench proxy: does the RM rank the better response first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.classifier import minibatch_sampler
from shared.seeding import torch_generator
from shared.training import TrainConfig, train

# every arm trained in a cell, in training order; the control_* arms remove one ingredient by design
ARMS = ("regression", "bt", "margin_bt", "scaled_bt", "control_scaled_bt_shuffled_magnitude",
        "scaled_bt_init_reg", "control_regression_shuffled", "control_scaled_bt_init_shuffled_reg")


# ----------------------------------------------------------------------------------------------- data
@dataclass
class World:
    """The hidden utility of one seed: q(z_p, x) = prompt_scale * u . z_p + h([z_p, x]) (h standardised)."""

    u: np.ndarray  # (d_prompt,)
    w1: np.ndarray  # (d_prompt + d_resp, teacher_hidden)
    w2: np.ndarray  # (teacher_hidden,)
    h_mean: float
    h_std: float
    prompt_scale: float

    def utility(self, z_p: np.ndarray, x: np.ndarray) -> np.ndarray:
        """q for rows of prompt features (n, d_prompt) and response features (n, d_resp)."""
        h = np.tanh(np.concatenate([z_p, x], axis=1) @ self.w1) @ self.w2
        return self.prompt_scale * (z_p @ self.u) + (h - self.h_mean) / self.h_std


def make_world(seed: int, d_prompt: int, d_resp: int, teacher_hidden: int, prompt_scale: float) -> World:
    """A random world: teacher weights N(0, 1/fan_in), ``u`` a unit vector; ``h`` standardised on 20,000
    reference draws so that the within-prompt part of q has unit variance."""
    rng = np.random.default_rng([seed, 1])
    d = d_prompt + d_resp
    u = rng.normal(size=d_prompt)
    u /= np.linalg.norm(u)
    w1 = rng.normal(scale=1.5 / np.sqrt(d), size=(d, teacher_hidden))
    w2 = rng.normal(scale=1.0 / np.sqrt(teacher_hidden), size=teacher_hidden)
    ref = np.tanh(rng.normal(size=(20_000, d)) @ w1) @ w2
    return World(u, w1, w2, float(ref.mean()), float(ref.std()), prompt_scale)


def sample_tasks(world: World, n_tasks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n_tasks`` prompts with two responses each: features (n, 2, d) = [z_p, x] and utilities q (n, 2)."""
    d_prompt, d_resp = world.u.size, world.w1.shape[0] - world.u.size
    z_p = rng.normal(size=(n_tasks, d_prompt))
    x = rng.normal(size=(n_tasks, 2, d_resp))
    q = np.stack([world.utility(z_p, x[:, k]) for k in range(2)], axis=1)
    feats = np.concatenate([np.repeat(z_p[:, None, :], 2, axis=1), x], axis=2)
    return {"features": feats.astype(np.float32), "q": q}


def annotate(q: np.ndarray, n_annotators: int, sigma: float, sigma_offset: float, pref_scale: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulated annotation of tasks with utilities q (n, 2).

    Returns Likert ratings (n, 2, A) in 0..4 and 7-point preference strengths (n, A) in -3..3 (positive =
    response A better), each annotator perceiving ``q + N(0, sigma)`` in each task, the rating task adding a
    per-(annotator, prompt) offset N(0, sigma_offset) shared by both responses of the prompt.
    """
    n = q.shape[0]
    offset = rng.normal(scale=sigma_offset, size=(n, 1, n_annotators))
    y_rate = q[:, :, None] + offset + rng.normal(scale=sigma, size=(n, 2, n_annotators))
    ratings = np.clip(np.rint(2.0 + y_rate), 0, 4)
    y_pref = q[:, :, None] + rng.normal(scale=sigma, size=(n, 2, n_annotators))
    strengths = np.clip(np.rint(pref_scale * (y_pref[:, 0] - y_pref[:, 1])), -3, 3)
    return ratings, strengths


def aggregate(ratings: np.ndarray, strengths: np.ndarray, max_spread: int) -> dict[str, np.ndarray]:
    """Mean rating per response (n, 2), median strength per task (n,) and the keep mask of the agreement
    filter: a task is kept when max - min of its annotators' strengths is <= ``max_spread``."""
    spread = strengths.max(axis=1) - strengths.min(axis=1)
    return {"rating": ratings.mean(axis=2), "strength": np.median(strengths, axis=1),
            "keep": spread <= max_spread}


def weighted_kappa(strengths: np.ndarray) -> float:
    """Mean over annotator pairs of Cohen's quadratic-weighted kappa on the 7-point strengths (n, A)."""
    from sklearn.metrics import cohen_kappa_score

    a = strengths.shape[1]
    labels = list(range(-3, 4))
    vals = [cohen_kappa_score(strengths[:, i], strengths[:, j], labels=labels, weights="quadratic")
            for i in range(a) for j in range(i + 1, a)]
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------------- losses
def regression_loss(pred: torch.Tensor, rating: torch.Tensor) -> torch.Tensor:
    """SteerLM-style Regression RM (Sec. 4): mean squared error to the (helpfulness) rating."""
    return F.mse_loss(pred, rating)


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry (Eq. 1): mean of -log sigmoid(r_c - r_r)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def margin_bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Margin BT (Eq. 2; Touvron et al., 2023): mean of -log sigmoid(r_c - r_r - m), m = |strength|."""
    return -F.logsigmoid(r_chosen - r_rejected - magnitude).mean()


def scaled_bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Scaled BT (Eq. 3, the paper's proposal): mean of -m log sigmoid(r_c - r_r), m = |strength|."""
    return -(magnitude * F.logsigmoid(r_chosen - r_rejected)).mean()


# ------------------------------------------------------------------------------------------ the models
class RewardMLP(nn.Module):
    """Scalar reward head: features (..., d) -> reward (...,); two ReLU hidden layers."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def preference_rows(features: np.ndarray, strength: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen features, rejected features, magnitude |strength|) of the non-tied tasks (ties excluded from
    every BT loss, as in the paper)."""
    nz = strength != 0
    a_better = strength[nz] > 0
    f = features[nz]
    chosen = np.where(a_better[:, None], f[:, 0], f[:, 1])
    rejected = np.where(a_better[:, None], f[:, 1], f[:, 0])
    return (torch.as_tensor(chosen), torch.as_tensor(rejected),
            torch.as_tensor(np.abs(strength[nz]), dtype=torch.float32))


def fit(model: RewardMLP, kind: str, tensors: tuple[torch.Tensor, ...], steps: int, lr: float,
        weight_decay: float, batch_size: int, data_seed: int, val: tuple[np.ndarray, np.ndarray],
        eval_every: int, progress: bool = False) -> tuple[RewardMLP, int]:
    """Train ``model`` with :func:`shared.training.train` on one objective and keep the checkpoint with the
    best validation accuracy (early stopping; the same rule for every arm).

    ``kind`` in regression (tensors = features, rating), bt / margin_bt / scaled_bt (tensors = chosen,
    rejected, m). Batches are drawn with replacement from a generator seeded with ``data_seed``; regression
    batches hold ``2 * batch_size`` responses, BT batches ``batch_size`` pairs (the same number of responses).
    ``val`` = (features (n, 2, d), aggregated preference strength (n,)) of held-out ANNOTATED tasks: the
    selection criterion is agreement with the annotators' preference direction on non-tied validation
    tasks, what a practitioner can measure (never the hidden utility). Every ``eval_every`` steps and at the
    end; the first best is kept on ties. Returns (model with the best weights, the step they came from).
    """
    n_rows = 2 * batch_size if kind == "regression" else batch_size
    batch_fn = minibatch_sampler(tensors, n_rows, torch_generator(data_seed))
    if kind == "regression":
        def loss_fn(m, b):
            return regression_loss(m(b[0]), b[1])
    elif kind == "bt":
        def loss_fn(m, b):
            return bt_loss(m(b[0]), m(b[1]))
    elif kind == "margin_bt":
        def loss_fn(m, b):
            return margin_bt_loss(m(b[0]), m(b[1]), b[2])
    elif kind == "scaled_bt":
        def loss_fn(m, b):
            return scaled_bt_loss(m(b[0]), m(b[1]), b[2])
    else:
        raise ValueError(f"unknown objective {kind!r}")
    val_feats, val_strength = val
    nz = val_strength != 0
    vf, vsign = torch.as_tensor(val_feats[nz]), np.sign(val_strength[nz])
    best = {"acc": -1.0, "step": 0, "state": None, "calls": 0}

    def eval_fn(m):
        best["calls"] += 1
        r = m(vf).double().numpy()
        dr = r[:, 0] - r[:, 1]
        acc = float(np.where(dr == 0, 0.5, (np.sign(dr) == vsign).astype(float)).mean())
        if acc > best["acc"]:
            best.update(acc=acc, step=min(best["calls"] * eval_every, steps),
                        state={k: v.detach().clone() for k, v in m.state_dict().items()})
        return {"val_acc": acc}

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, schedule="cosine", log_every=eval_every,
                      eval_every=eval_every, desc=kind, progress=progress)
    train(model, cfg, batch_fn, loss_fn, device="cpu", eval_fn=eval_fn)
    model.load_state_dict(best["state"])
    return model, int(best["step"])


@torch.no_grad()
def pair_accuracy(model: nn.Module, features: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per task: 1 when the model ranks the response with the higher TRUE utility first, 0 otherwise, 0.5
    on an exact reward tie. features (n, 2, d), q (n, 2) -> (n,)."""
    r = model(torch.as_tensor(features)).double().numpy()
    dr, dq = r[:, 0] - r[:, 1], q[:, 0] - q[:, 1]
    return np.where(dr == 0, 0.5, (np.sign(dr) == np.sign(dq)).astype(float))


def run_cell(seed: int, sigma: float, cfg: dict) -> dict:
    """Everything for one (seed, annotator noise) cell: world, train/test tasks, annotation, agreement
    statistics and every reward-model arm. Returns {"arms": rows, "agreement": row}. Deterministic in
    (seed, sigma, cfg); runs single-threaded (called through :func:`shared.parallel.run_jobs`).

    Budgets: every arm trains up to ``steps`` steps (same learning rate, batch size and weight decay) and
    keeps its best checkpoint on the annotated validation split (:func:`fit`); the from-scratch arms start
    from the same initial weights. ``scaled_bt_init_reg`` starts from the selected Regression model (as in
    the paper) and ``control_scaled_bt_init_shuffled_reg`` from a Regression model trained on ratings
    permuted across responses (same two-stage budget, no rating information). The held-out test tasks are
    the same for every sigma of a seed.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and under CPU contention much faster
    try:
        return _run_cell(seed, sigma, cfg)
    finally:
        torch.set_num_threads(threads)


def _run_cell(seed: int, sigma: float, cfg: dict) -> dict:
    """The body of :func:`run_cell` (which pins torch to one thread around it)."""
    world = make_world(seed, cfg["d_prompt"], cfg["d_resp"], cfg["teacher_hidden"], cfg["prompt_scale"])
    rng = np.random.default_rng([seed, 2, int(round(sigma * 1000))])
    tr = sample_tasks(world, cfg["n_train_tasks"], rng)
    te = sample_tasks(world, cfg["n_test_tasks"], np.random.default_rng([seed, 3]))  # same test set for every sigma
    ratings, strengths = annotate(tr["q"], cfg["n_annotators"], sigma, cfg["sigma_offset"], cfg["pref_scale"], rng)
    agg = aggregate(ratings, strengths, cfg["max_spread"])
    keep = agg["keep"]
    # annotated tasks: the last n_val_tasks are the validation split (early stopping), the rest train
    is_val = np.zeros(keep.size, dtype=bool)
    is_val[-cfg["n_val_tasks"]:] = True
    val_idx = is_val & keep
    # agreement filter statistics and the random-filter control (same number of tasks kept at random)
    random_keep = np.zeros_like(keep)
    random_keep[rng.choice(keep.size, size=int(keep.sum()), replace=False)] = True
    dq_tr = tr["q"][:, 0] - tr["q"][:, 1]
    agreement = {"seed": seed, "sigma": sigma, "kappa_all": weighted_kappa(strengths),
                 "kappa_filtered": weighted_kappa(strengths[keep]),
                 "kappa_random_filter": weighted_kappa(strengths[random_keep]),
                 "kept_fraction": float(keep.mean()),
                 "tie_fraction_kept": float((agg["strength"][keep] == 0).mean()),
                 "pref_sign_accuracy_kept": float((np.sign(agg["strength"][keep]) == np.sign(dq_tr[keep]))[
                     agg["strength"][keep] != 0].mean())}

    train_idx = keep & ~is_val
    feats, rating, strength = tr["features"][train_idx], agg["rating"][train_idx], agg["strength"][train_idx]
    reg_tensors = (torch.as_tensor(feats.reshape(-1, feats.shape[-1])),
                   torch.as_tensor(rating.reshape(-1), dtype=torch.float32))
    shuffled_rating = np.random.default_rng([seed, 4]).permutation(rating.reshape(-1))
    reg_shuffled = (reg_tensors[0], torch.as_tensor(shuffled_rating, dtype=torch.float32))
    pref = preference_rows(feats, strength)
    mag_shuffled = pref[2][torch.as_tensor(np.random.default_rng([seed, 5]).permutation(pref[2].numel()))]
    pref_shuffled = (pref[0], pref[1], mag_shuffled)

    d_in = feats.shape[-1]
    steps = cfg["steps"]
    val = (tr["features"][val_idx], agg["strength"][val_idx])
    common = dict(lr=cfg["lr"], weight_decay=cfg["weight_decay"], batch_size=cfg["batch_size"], val=val,
                  eval_every=cfg["eval_every"])

    def fresh() -> RewardMLP:
        torch.manual_seed(10_000 + seed)  # the same initial weights for every arm of this seed
        return RewardMLP(d_in, cfg["hidden"])

    def from_(model: RewardMLP) -> RewardMLP:
        new = RewardMLP(d_in, cfg["hidden"])
        new.load_state_dict(model.state_dict())
        return new

    ds = 20_000 + seed
    plan = [("regression", "regression", reg_tensors, None), ("bt", "bt", pref, None),
            ("margin_bt", "margin_bt", pref, None), ("scaled_bt", "scaled_bt", pref, None),
            ("control_scaled_bt_shuffled_magnitude", "scaled_bt", pref_shuffled, None),
            ("scaled_bt_init_reg", "scaled_bt", pref, "regression"),
            ("control_regression_shuffled", "regression", reg_shuffled, None),
            ("control_scaled_bt_init_shuffled_reg", "scaled_bt", pref, "control_regression_shuffled")]
    models: dict[str, nn.Module] = {}
    best_step: dict[str, int] = {}
    for arm, kind, tensors, init_from in plan:
        start = fresh() if init_from is None else from_(models[init_from])
        models[arm], best_step[arm] = fit(start, kind, tensors, steps, data_seed=ds + (init_from is not None),
                                          **common)

    dq = np.abs(te["q"][:, 0] - te["q"][:, 1])
    hard = dq <= np.median(dq)
    rows = []
    for arm, model in models.items():
        acc = pair_accuracy(model, te["features"], te["q"])
        rows.append({"seed": seed, "sigma": sigma, "arm": arm, "accuracy": float(acc.mean()),
                     "accuracy_easy": float(acc[~hard].mean()), "accuracy_hard": float(acc[hard].mean()),
                     "best_step": best_step[arm], "n_train_tasks_kept": int(train_idx.sum()),
                     "n_pref_pairs": int(pref[2].numel())})
    return {"arms": rows, "agreement": agreement}
