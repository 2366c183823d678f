"""IGNITE (Dao, Nguyen, Truong, Hoang, NeurIPS 2024): surrogate training under a gradient-norm (sharpness)
constraint, plugged into offline optimizers (the claims are in ``claims.yaml``).

The paper (Sec. 3) measures the *sharpness* of a surrogate g(x; w) on a set of inputs D as the largest
increase of its mean prediction h_D(w) = (1/|D|) sum_{x in D} g(x; w) under a parameter perturbation
||gamma|| <= rho, and approximates it to first order by rho * ||grad_w h_D(w)|| (the quantity its sharpness
table reports). IGNITE trains the surrogate by

    min_w  L(w)   subject to   ||grad_w h_D(w)|| <= eps,

solved with a Lagrangian and alternating primal-dual updates: a gradient step on
L(w) + lambda * (||grad_w h_D(w)|| - eps) for w (which needs double backpropagation), then a projected
ascent step lambda <- max(0, lambda + eta_lambda * (||grad_w h_D(w)|| - eps)). Its hyper-parameters are
the threshold eps and the dual step eta_lambda (the paper's sensitivity study varies exactly these two).
Here the constraint is written in the equivalent, scale-free form ||grad_w h_D|| / eps - 1 <= 0 (the
multiplier is rescaled by eps), and eps is set per task as a fraction (chosen on held-out tasks) of the gradient norm a vanilla
surrogate reaches on a calibration seed that is never an evaluation seed.

Vectorisation. Every surrogate of a task - evaluation seeds x {vanilla, IGNITE} x ensemble members - is one
:class:`StackedMLP` whose parameters carry a leading member axis and are applied with batched matmuls. The
members share no parameter, the loss is the sum of the members' losses, and Adam is element-wise, so one
call of ``shared.training.train`` (gradient clipping and weight decay off, because a global clipping norm
would couple the members) is exactly the independent training of every member (tested). At this size the
step is matmul-bound: measured on one thread, a step of the 40-member stack costs the same CPU time as a
loop over 40 separate members (45 ms either way), so the stack is kept for simplicity - one training call
per task, one curve table, and the pairing below by construction - not for speed. The vanilla and IGNITE
members of a seed start from the same weights and see the same minibatches, so the comparison is paired.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.stacked import StackedLayers, StackedLinear
from shared.training import TrainConfig, TrainHistory, train

from .tasks import OfflineData, TaskSpec, make_dataset, normalized_score, one_hot, oracle

OPTIMIZERS = ("grad", "ens_mean", "ens_min", "reinforce")

# --- the surrogate: M independent MLPs in one module ------------------------------------------------------

class StackedMLP(StackedLayers):
    """``members`` independent MLP surrogates g(x; w_m): ``in_dim -> hidden x n_layers -> 1`` with
    LeakyReLU(0.3), applied with batched matmuls.

    Parameters are drawn for ``n_unique`` members (PyTorch ``nn.Linear`` initialisation,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases) and tiled ``members // n_unique`` times
    along the member axis, so that member ``a * n_unique + u`` starts equal to member ``u``: this is how
    the vanilla and IGNITE arms share an initialisation. ``generators`` (one per unique member) make each
    member's initialisation independent of how many others are stacked.

    Shapes: x (M, N, in_dim) -> predictions (M, N).
    """

    def __init__(self, in_dim: int, hidden: int, n_layers: int, generators: list[torch.Generator],
                 n_tiles: int = 1, negative_slope: float = 0.3):
        super().__init__()
        self.negative_slope = negative_slope
        dims = [in_dim] + [hidden] * n_layers + [1]
        self.layers = nn.ModuleList(
            StackedLinear.uniform(fan_in, fan_out, generators, 1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in),
                                  n_tiles=n_tiles)
            for fan_in, fan_out in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)  # (M, N, fan_out)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, self.negative_slope)
        return h.squeeze(-1)


def surrogate_gradient_norm(model: StackedMLP, pred: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """||grad_w h_D(w_m)|| for every member m, where h_D is the member's mean prediction ``pred.mean(-1)``
    over its inputs (the paper's first-order surrogate sharpness, up to the radius rho).

    ``pred``: (M, N) predictions still attached to the graph. Because member m's prediction depends only on
    its own slice of every parameter tensor, the gradient of sum_m h_m restricted to slice m is
    grad_w h_m(w_m). Returns (M,).
    """
    h = pred.mean(-1).sum()
    grads = torch.autograd.grad(h, list(model.parameters()), create_graph=create_graph, retain_graph=True)
    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
    return torch.sqrt(sq + 1e-30)


@dataclass
class IgniteState:
    """Dual state of the constrained problem, one entry per member; ``active`` False for vanilla members."""

    eps: torch.Tensor  # (M,) threshold on ||grad_w h_D||
    active: torch.Tensor  # (M,) bool
    eta_lambda: float
    lam: torch.Tensor = field(default=None)  # (M,) Lagrange multipliers

    def __post_init__(self) -> None:
        if self.lam is None:
            self.lam = torch.zeros_like(self.eps)


def ignite_loss(model: StackedMLP, batch: tuple[torch.Tensor, torch.Tensor], state: IgniteState):
    """Sum over members of MSE + lambda * (||grad_w h_B(w)|| / eps - 1) on the minibatch B, then the dual
    ascent step on lambda (projected on lambda >= 0). Vanilla members have lambda = 0 throughout.

    Returns (loss, {curves}) for ``shared.training.train``.
    """
    xb, yb = batch  # (M, B, in), (M, B)
    pred = model(xb)
    mse = ((pred - yb) ** 2).mean(-1)  # (M,)
    any_active = bool(state.active.any())
    norm = surrogate_gradient_norm(model, pred, create_graph=any_active)
    violation = norm / state.eps - 1.0
    loss = mse.sum()
    if any_active:
        loss = loss + (state.lam * violation)[state.active].sum()
        with torch.no_grad():
            step = state.eta_lambda * violation.detach()
            state.lam = torch.where(state.active, (state.lam + step).clamp_min(0.0), state.lam)
    act, van = state.active, ~state.active
    extra = {"mse": float(mse.detach().mean())}
    if van.any():
        extra["sharpness_vanilla"] = float(norm.detach()[van].mean())
    if act.any():
        extra["sharpness_ignite"] = float(norm.detach()[act].mean())
        extra["lambda"] = float(state.lam[act].mean())
    return loss, extra


# --- one task: data of every seed, stacked training -----------------------------------------------------

@dataclass(frozen=True)
class SurrogateConfig:
    hidden: int = 128
    n_layers: int = 2
    ensemble: int = 4  # members per (seed, arm); "grad" uses member 0, the ensembles all of them
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    eta_lambda: float = 0.01
    calibration_seed: int = 100


@dataclass(frozen=True)
class SearchConfig:
    n_candidates: int = 128
    steps: int = 200
    lr: float = 0.01  # gradient ascent step = lr * sqrt(input width) (continuous and logits)
    reinforce_lr: float = 0.05
    normalized: bool = True  # gradient ascent along grad / ||grad|| (equal distance per step for every surrogate)


@dataclass
class SeedData:
    """Standardised tensors of all seeds of one task, stacked on a leading seed axis."""

    spec: TaskSpec
    seeds: list[int]
    raw: list[OfflineData]
    x: torch.Tensor  # (S, n, in) offline inputs (standardised / one-hot)
    y: torch.Tensor  # (S, n) standardised offline scores
    x_unseen: torch.Tensor  # (S, n_unseen, in)
    x_mean: torch.Tensor  # (S, 1, d) (continuous; zeros for discrete)
    x_std: torch.Tensor  # (S, 1, d)


def prepare_seeds(spec: TaskSpec, n_total: int, seeds: list[int]) -> SeedData:
    """Datasets of every seed, standardised with offline statistics only (x: continuous tasks; y: all)."""
    raw = [make_dataset(spec, n_total, seed) for seed in seeds]
    xs, ys, xu, means, stds = [], [], [], [], []
    for d in raw:
        if spec.discrete:
            mean = torch.zeros(1, spec.input_dim, dtype=torch.float64)
            std = torch.ones(1, spec.input_dim, dtype=torch.float64)
            xo, xn = one_hot(d.x_offline, spec.letters), one_hot(d.x_unseen, spec.letters)
        else:
            mean, std = d.x_offline.mean(0, keepdim=True), d.x_offline.std(0, keepdim=True)
            xo, xn = (d.x_offline - mean) / std, (d.x_unseen - mean) / std
        ys.append((d.y_offline - d.y_offline.mean()) / d.y_offline.std())
        xs.append(xo.float())
        xu.append(xn.float())
        means.append(mean.float())
        stds.append(std.float())
    return SeedData(spec, list(seeds), raw, torch.stack(xs), torch.stack(ys).float(), torch.stack(xu),
                    torch.stack(means), torch.stack(stds))


def member_generators(task: str, seeds: list[int], ensemble: int, salt: int) -> list[torch.Generator]:
    """One generator per (seed, ensemble member), seeded from (task, seed, member, salt) only."""
    task_id = sum(ord(c) * 31**i for i, c in enumerate(task)) % 10_000
    return [torch.Generator().manual_seed(((seed * 1000 + k) * 10_000 + task_id) * 10 + salt)
            for seed in seeds for k in range(ensemble)]


@dataclass(frozen=True)
class Arm:
    """One surrogate-training arm: vanilla (``eps_fraction`` None) or IGNITE with eps = ``eps_fraction`` x the
    calibration norm; ``init_salt`` / ``batch_salt`` pick the generators of its initialisation and
    minibatches. Arms with the same salts start from the same weights and see the same minibatches (the
    vanilla / IGNITE pairing); the A/A control arm ``vanilla_aa`` is vanilla with other salts."""

    name: str
    eps_fraction: float | None = None
    init_salt: int = 1
    batch_salt: int = 2

    @property
    def ignite(self) -> bool:
        return self.eps_fraction is not None


def standard_arms(eps_fraction: float) -> list[Arm]:
    """vanilla, IGNITE (same initialisation and minibatches) and the A/A control vanilla_aa."""
    return [Arm("vanilla"), Arm("ignite", eps_fraction), Arm("vanilla_aa", None, init_salt=4, batch_salt=5)]


def train_surrogates(data: SeedData, arms: list[Arm], cfg: SurrogateConfig, base_norm: float, device: str,
                     progress: bool, desc: str) -> tuple[StackedMLP, IgniteState, TrainHistory]:
    """Train ``arms x seeds x ensemble`` surrogates at once (member order: arm, seed, member).

    An IGNITE arm's threshold is ``eps_fraction * base_norm``. Minibatches are drawn per (seed, member)
    from generators that depend only on (task, seed, member, salt).
    """
    S, n, _ = data.x.shape
    K = cfg.ensemble
    init_gens = [g for arm in arms for g in member_generators(data.spec.name, data.seeds, K, salt=arm.init_salt)]
    batch_gens = [member_generators(data.spec.name, data.seeds, K, salt=arm.batch_salt) for arm in arms]
    model = StackedMLP(data.spec.input_dim, cfg.hidden, cfg.n_layers, init_gens)
    M = model.members
    active = torch.tensor([arm.ignite for arm in arms for _ in range(S * K)], dtype=torch.bool)
    eps = torch.tensor([(arm.eps_fraction or 1.0) * base_norm for arm in arms for _ in range(S * K)])
    assert len(active) == M
    state = IgniteState(eps=eps.to(device), active=active.to(device), eta_lambda=cfg.eta_lambda)
    x, y = data.x.to(device), data.y.to(device)
    seed_of = torch.arange(S).repeat_interleave(K)[:, None].to(device)  # (S*K, 1)

    def batch_fn(step: int):
        xs, ys = [], []
        for gens in batch_gens:
            idx = torch.stack([torch.randint(n, (cfg.batch_size,), generator=g) for g in gens]).to(device)
            xs.append(x[seed_of, idx])  # (S*K, B, in); indices drawn on the CPU: the same on any device
            ys.append(y[seed_of, idx])
        return torch.cat(xs), torch.cat(ys)

    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    tc = TrainConfig(steps=steps, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0, schedule="constant",
                     grad_clip=None, log_every=max(1, steps // 50), desc=desc, progress=progress)
    history = train(model, tc, batch_fn, lambda m, b: ignite_loss(m, b, state), device)
    return model, state, history


def calibrate_norm(spec: TaskSpec, n_total: int, cfg: SurrogateConfig, device: str, progress: bool) -> float:
    """The mean minibatch gradient norm ||grad_w h_B|| of one vanilla surrogate over the last 10% of its
    training, on ``cfg.calibration_seed`` (never an evaluation or selection seed); eps = fraction x this."""
    data = prepare_seeds(spec, n_total, [cfg.calibration_seed])
    one = dataclasses.replace(cfg, ensemble=1)
    _, _, history = train_surrogates(data, [Arm("vanilla")], one, 1.0, device, progress, f"{spec.name} calibration")
    frame = history.to_frame()
    tail = frame[frame["step"] > 0.9 * frame["step"].max()]
    return float(tail["sharpness_vanilla"].mean())


# --- offline optimizers on the trained surrogates -----------------------------------------------------

def _predict(model: StackedMLP, x: torch.Tensor, K: int) -> torch.Tensor:
    """x: (A, S, N, in) designs per (arm, seed) -> (A, S, K, N) predictions of every ensemble member."""
    A, S, N, D = x.shape
    xm = x.unsqueeze(2).expand(A, S, K, N, D).reshape(A * S * K, N, D)
    return model(xm).reshape(A, S, K, N)


def _aggregate(pred: torch.Tensor, optimizer: str) -> torch.Tensor:
    if optimizer == "grad":
        return pred[:, :, 0]
    if optimizer in ("ens_mean", "reinforce"):
        return pred.mean(2)
    if optimizer == "ens_min":
        return pred.min(2).values
    raise ValueError(f"unknown optimizer {optimizer!r}")


def top_designs(data: SeedData, n: int) -> torch.Tensor:
    """The ``n`` best offline designs of every seed in the surrogate's input space: (S, n, in)."""
    idx = torch.argsort(data.y, dim=1, descending=True, stable=True)[:, :n]
    return torch.gather(data.x, 1, idx[:, :, None].expand(-1, -1, data.x.shape[-1]))


def _box(data: SeedData) -> tuple[torch.Tensor, torch.Tensor]:
    """Box bounds in standardised units, (S, 1, d) each."""
    lo = (data.spec.low - data.x_mean) / data.x_std
    hi = (data.spec.high - data.x_mean) / data.x_std
    return lo, hi


def gradient_ascent(model: StackedMLP, data: SeedData, arms: int, K: int, optimizer: str,
                    cfg: SearchConfig, checkpoints: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Gradient ascent on the surrogate (Design-Bench "Grad. Ascent"; ``ens_mean`` / ``ens_min`` ascend the
    mean / minimum of the ensemble) from the top ``n_candidates`` offline designs.

    Every design moves by ``lr * sqrt(input width)`` per iteration along its *normalised* gradient
    ``grad / ||grad||`` (``cfg.normalized``, the default), so that every surrogate's designs travel the same
    distance whatever the surrogate's slope: a flatter surrogate (IGNITE's aim) would otherwise make raw
    gradient ascent travel less, which alone changes the scores. ``normalized=False`` takes raw steps
    ``lr * sqrt(width) * grad``. Continuous designs are clipped to the box after every step; discrete designs
    are optimised as per-position logits fed through a softmax (initialised from the one-hot design smoothed
    to 0.7 / 0.1) and read out by argmax.

    Returns the proposed designs in the surrogate's input space (continuous: standardised; discrete:
    one-hot), (A, S, N, in), and the designs at the iterations in ``checkpoints`` (0 = the start).
    """
    spec = data.spec
    x0 = top_designs(data, cfg.n_candidates).unsqueeze(0).repeat(arms, 1, 1, 1)
    step = cfg.lr * math.sqrt(spec.input_dim)
    saved: dict[int, torch.Tensor] = {}

    def direction(grad: torch.Tensor) -> torch.Tensor:
        if not cfg.normalized:
            return grad
        flat = grad.flatten(3) if spec.discrete else grad
        norm = flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return grad / (norm.unsqueeze(-1) if spec.discrete else norm)

    if spec.discrete:
        A, S, N, _ = x0.shape
        z = torch.log(0.1 + 0.6 * x0.reshape(A, S, N, spec.dim, spec.letters))
        read = lambda v: one_hot(v.detach().argmax(-1), spec.letters)  # noqa: E731
    else:
        lo, hi = _box(data)
        z = x0.clone()
        read = lambda v: v.detach().clone()  # noqa: E731
    for t in range(cfg.steps):
        if t in checkpoints:
            saved[t] = read(z)
        z = z.detach().requires_grad_(True)
        inputs = z.softmax(-1).flatten(-2) if spec.discrete else z
        score = _aggregate(_predict(model, inputs, K), optimizer)
        (grad,) = torch.autograd.grad(score.sum(), z)
        z = z + step * direction(grad)
        if not spec.discrete:
            z = torch.maximum(torch.minimum(z, hi), lo)
    if cfg.steps in checkpoints:
        saved[cfg.steps] = read(z)
    return read(z), saved


def reinforce(model: StackedMLP, data: SeedData, arms: int, K: int, cfg: SearchConfig) -> torch.Tensor:
    """REINFORCE (Williams 1992) on the ensemble-mean surrogate: a factorised search distribution (Gaussian
    with learned mean and log-std for continuous designs, clipped to the box; independent categoricals per
    position for sequences), initialised on the top ``n_candidates`` offline designs, trained by Adam on the
    score-function gradient with a mean-reward baseline, ``n_candidates`` samples per iteration. Returns
    ``n_candidates`` samples of the final distribution, (A, S, N, in). The sampling noise comes from one
    generator per seed and is shared by the two arms (common random numbers)."""
    spec = data.spec
    top = top_designs(data, cfg.n_candidates)  # (S, N, in)
    N = cfg.n_candidates
    S = top.shape[0]
    if spec.discrete:
        counts = top.reshape(S, N, spec.dim, spec.letters).sum(1) + 1.0
        theta = counts.log().unsqueeze(0).repeat(arms, 1, 1, 1).requires_grad_(True)  # (A, S, L, letters)
        params = [theta]
    else:
        lo, hi = _box(data)
        mu = top.mean(1, keepdim=True).unsqueeze(0).repeat(arms, 1, 1, 1).requires_grad_(True)  # (A, S, 1, d)
        log_sigma = top.std(1, keepdim=True).log().unsqueeze(0).repeat(arms, 1, 1, 1).requires_grad_(True)
        params = [mu, log_sigma]
    opt = torch.optim.Adam(params, lr=cfg.reinforce_lr)
    gens = member_generators(spec.name, data.seeds, 1, salt=3)

    def draw(fn, *shape):  # (A, S, *shape): per-seed draws, the same for both arms
        return torch.stack([fn(*shape, generator=g) for g in gens]).unsqueeze(0).expand(arms, S, *shape)

    def sample():
        if spec.discrete:
            logp_all = theta.log_softmax(-1).unsqueeze(2)  # (A, S, 1, L, letters)
            u = draw(torch.rand, N, spec.dim, spec.letters).clamp(1e-12, 1 - 1e-12)
            letters = (logp_all - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max, (A, S, N, L)
            logp = logp_all.expand(-1, -1, N, -1, -1).gather(-1, letters.unsqueeze(-1)).squeeze(-1).sum(-1)
            return one_hot(letters, spec.letters), logp
        raw = (mu + log_sigma.exp() * draw(torch.randn, N, spec.dim)).detach()  # a sample: no path to mu
        logp = (-0.5 * ((raw - mu) / log_sigma.exp()).pow(2) - log_sigma).sum(-1)  # log N(raw; mu, sigma) + c
        return torch.maximum(torch.minimum(raw, hi), lo), logp

    for _ in range(cfg.steps):
        x, logp = sample()
        with torch.no_grad():
            reward = _predict(model, x.detach(), K).mean(2)  # (A, S, N)
            adv = reward - reward.mean(-1, keepdim=True)
        loss = -(adv * logp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, _ = sample()
    return x.detach()


def to_designs(data: SeedData, x: torch.Tensor) -> torch.Tensor:
    """Surrogate-space designs (A, S, N, in) -> original units (continuous, clipped) or letters (discrete)."""
    spec = data.spec
    if spec.discrete:
        return x.reshape(*x.shape[:-1], spec.dim, spec.letters).argmax(-1)
    return (x.double() * data.x_std.double() + data.x_mean.double()).clamp(spec.low, spec.high)


def score_designs(data: SeedData, x: torch.Tensor) -> torch.Tensor:
    """Normalized oracle scores (A, S, N) of surrogate-space designs (A, S, N, in)."""
    designs = to_designs(data, x)
    y = oracle(data.spec, designs)
    return torch.stack([normalized_score(y[:, s], data.raw[s]) for s in range(len(data.raw))], dim=1)


def sharpness_on(model: StackedMLP, x: torch.Tensor, arms: int, K: int) -> torch.Tensor:
    """||grad_w h_X(w)|| of every member on inputs x (S, N, in) of its seed: (A, S, K)."""
    S = x.shape[0]
    xm = x.unsqueeze(1).expand(S, K, *x.shape[1:]).reshape(S * K, *x.shape[1:]).repeat(arms, 1, 1)
    pred = model(xm)
    return surrogate_gradient_norm(model, pred).detach().reshape(arms, S, K)


@dataclass
class TaskResult:
    scores: "object"  # DataFrame: task, seed, optimizer, arm, p100, p50, distance
    trajectory: "object"  # DataFrame: task, seed, optimizer, arm, step, p100, p50, distance (gradient ascent)
    sharpness: "object"  # DataFrame: task, seed, member, arm, offline, unseen
    curves: "object"  # DataFrame: task, step, mse, sharpness_vanilla, sharpness_ignite, lambda
    base_norm: float  # the calibration norm; arm eps = eps_fraction * base_norm
    raw: "object" = None  # DataFrame like scores: `grad` with raw (unnormalised) steps, a diagnostic


def _percentiles(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.max(-1).values, torch.quantile(scores, 0.5, dim=-1)


def travelled(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Mean over the proposals of the Euclidean distance from their starting design, in the surrogate's input
    space (standardised units; one-hot for sequences): (A, S, N, in) -> (A, S)."""
    return (x - x0).norm(dim=-1).mean(-1)


def run_task(spec: TaskSpec, seeds: list[int], n_total: int, optimizers: list[str], surrogate: SurrogateConfig,
             search: SearchConfig, arms: list[Arm], device: str = "cpu", progress: bool = True,
             n_checkpoints: int = 10, raw_diagnostic: bool = False) -> TaskResult:
    """Calibrate the gradient-norm scale, train every arm's surrogates for every seed, run every optimizer on
    each, score the proposals with the oracle (also at ``n_checkpoints`` points along gradient ascent), and
    measure sharpness on offline and unseen inputs."""
    import pandas as pd

    base_norm = calibrate_norm(spec, n_total, surrogate, device, progress)
    data = prepare_seeds(spec, n_total, seeds)
    model, state, history = train_surrogates(data, arms, surrogate, base_norm, device, progress,
                                             f"{spec.name} surrogates")
    model = model.cpu().eval()
    K, A = surrogate.ensemble, len(arms)
    x0 = top_designs(data, search.n_candidates).unsqueeze(0).repeat(A, 1, 1, 1)
    checkpoints = tuple(sorted({round(i * search.steps / n_checkpoints) for i in range(n_checkpoints + 1)}))
    rows, traj = [], []
    for opt_name in optimizers:
        if opt_name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {opt_name!r}; choose from {OPTIMIZERS}")
        if opt_name == "reinforce":
            x, saved = reinforce(model, data, A, K, search), {}
        else:
            x, saved = gradient_ascent(model, data, A, K, opt_name, search, checkpoints)
        p100, p50 = _percentiles(score_designs(data, x))  # (A, S)
        dist = travelled(x, x0)
        for a, arm in enumerate(arms):
            for s, seed in enumerate(seeds):
                rows.append({"task": spec.name, "seed": seed, "optimizer": opt_name, "arm": arm.name,
                             "p100": float(p100[a, s]), "p50": float(p50[a, s]), "distance": float(dist[a, s])})
        for step, xs in saved.items():
            q100, q50 = _percentiles(score_designs(data, xs))
            d = travelled(xs, x0)
            traj += [{"task": spec.name, "seed": seed, "optimizer": opt_name, "arm": arm.name, "step": step,
                      "p100": float(q100[a, s]), "p50": float(q50[a, s]), "distance": float(d[a, s])}
                     for a, arm in enumerate(arms) for s, seed in enumerate(seeds)]
    sharp_off = sharpness_on(model, data.x, A, K)
    sharp_un = sharpness_on(model, data.x_unseen, A, K)
    srows = [{"task": spec.name, "seed": seed, "member": k, "arm": arm.name, "eps": (arm.eps_fraction or 0.0) * base_norm,
              "offline": float(sharp_off[a, s, k]), "unseen": float(sharp_un[a, s, k])}
             for a, arm in enumerate(arms) for s, seed in enumerate(seeds) for k in range(K)]
    curves = history.to_frame().assign(task=spec.name)
    raw = None
    if raw_diagnostic:  # the same `grad` search with raw steps lr * sqrt(width) * grad: how far does each go?
        x, _ = gradient_ascent(model, data, A, K, "grad", dataclasses.replace(search, normalized=False))
        p100, p50 = _percentiles(score_designs(data, x))
        dist = travelled(x, x0)
        raw = pd.DataFrame([{"task": spec.name, "seed": seed, "optimizer": "grad_raw", "arm": arm.name,
                             "p100": float(p100[a, s]), "p50": float(p50[a, s]), "distance": float(dist[a, s])}
                            for a, arm in enumerate(arms) for s, seed in enumerate(seeds)])
    return TaskResult(pd.DataFrame(rows), pd.DataFrame(traj), pd.DataFrame(srows), curves, base_norm, raw)
