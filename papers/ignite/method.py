"""IGNITE (Dao, Nguyen, Truong, Hoang, NeurIPS 2024): surrogate training under a gradient-norm (sharpness)
constraint, plugged into offline optimizers; and the pre-registered claims of this replication.

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
multiplier is rescaled by eps), and eps is set per task as a fixed fraction of the gradient norm a vanilla
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

from shared.metrics import Claim
from shared.stacked import StackedLayers, StackedLinear
from shared.training import TrainConfig, TrainHistory, train

from .tasks import OfflineData, TaskSpec, make_dataset, normalized_score, one_hot, oracle

ARMS = ("vanilla", "ignite")
OPTIMIZERS = ("grad", "ens_mean", "ens_min", "reinforce")

# --- pre-registered claims (written before the first `small` run; see README.md) -------------------------

CLAIMS = {
    "improves_100th": dict(
        statement="Training the surrogate under the gradient-norm (sharpness) constraint improves the "
                  "normalized 100th-percentile score of a fixed offline optimizer in most (task, optimizer) "
                  "pairs.",
        criterion="Per (task, optimizer) pair, the paired difference IGNITE - vanilla of the normalized "
                  "100th-percentile score, averaged over seeds. Reproduced if IGNITE wins (mean difference "
                  "> 0) in >= 60% of pairs AND a one-sided Wilcoxon signed-rank test over pairs gives "
                  "p < 0.05; not_reproduced if IGNITE wins in <= 50% of pairs; inconclusive otherwise. "
                  "Reported value: mean difference over pairs, t interval over seeds.",
        paper_value="improves most optimizer/task cells on Design-Bench (Ant, D'Kitty, TF-Bind-8, "
                    "TF-Bind-10); gains up to +9.6% (100th percentile)",
    ),
    "improves_50th": dict(
        statement="The same improvement holds for the normalized 50th-percentile (median) score.",
        criterion="As improves_100th, on the 50th percentile of the 128 proposed designs.",
        paper_value="50th-percentile tables reported alongside (appendix); improvement in most cells",
    ),
    "unseen_sharpness": dict(
        statement="Reducing surrogate sharpness on the offline data reduces its sharpness on unseen data "
                  "(the paper's theorem bounds the generalized sharpness by the empirical one).",
        criterion="Per seed, the mean over tasks and ensemble members of log(||grad_w h_U||_IGNITE / "
                  "||grad_w h_U||_vanilla), with U the unseen top half of the sampled designs. Reproduced "
                  "if the t interval over seeds lies entirely below 0 and the mean log ratio is negative "
                  "in every task; not_reproduced if the interval lies entirely above 0; inconclusive "
                  "otherwise.",
        paper_value="lower sharpness of IGNITE surrogates on unseen design candidates (sharpness table, "
                    "REINFORCE and GA on Ant and TF-Bind-10)",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


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
    eps_fraction: float = 0.5  # eps = this * vanilla gradient norm on the calibration seed
    eta_lambda: float = 0.01
    calibration_seed: int = 100


@dataclass(frozen=True)
class SearchConfig:
    n_candidates: int = 128
    steps: int = 200
    lr: float = 0.01  # gradient ascent step = lr * sqrt(input width) (continuous and logits)
    reinforce_lr: float = 0.05


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


def train_surrogates(data: SeedData, arms: int, cfg: SurrogateConfig, eps: float | None, device: str,
                     progress: bool, desc: str) -> tuple[StackedMLP, IgniteState, TrainHistory]:
    """Train ``arms x seeds x ensemble`` surrogates at once (member order: arm, seed, member).

    Arm 0 is vanilla, arm 1 (if present) IGNITE with threshold ``eps``. Minibatches are drawn per
    (seed, member) from generators that depend only on that pair, and shared by the arms.
    """
    S, n, _ = data.x.shape
    K = cfg.ensemble
    init_gens = member_generators(data.spec.name, data.seeds, K, salt=1)
    batch_gens = member_generators(data.spec.name, data.seeds, K, salt=2)
    model = StackedMLP(data.spec.input_dim, cfg.hidden, cfg.n_layers, init_gens, n_tiles=arms)
    M = model.members
    active = torch.zeros(M, dtype=torch.bool)
    if arms == 2:
        active[S * K:] = True
    state = IgniteState(eps=torch.full((M,), eps if eps else 1.0, device=device), active=active.to(device),
                        eta_lambda=cfg.eta_lambda)
    x, y = data.x.to(device), data.y.to(device)
    seed_of = torch.arange(S).repeat_interleave(K)  # (S*K,)

    def batch_fn(step: int):
        idx = torch.stack([torch.randint(n, (cfg.batch_size,), generator=g) for g in batch_gens])  # (S*K, B)
        rows, idx = seed_of[:, None].to(device), idx.to(device)  # indices drawn on the CPU: same on any device
        xb, yb = x[rows, idx], y[rows, idx]  # (S*K, B, in), (S*K, B)
        return xb.repeat(arms, 1, 1), yb.repeat(arms, 1)

    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    tc = TrainConfig(steps=steps, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0, schedule="constant",
                     grad_clip=None, log_every=max(1, steps // 50), desc=desc, progress=progress)
    history = train(model, tc, batch_fn, lambda m, b: ignite_loss(m, b, state), device)
    return model, state, history


def calibrate_eps(spec: TaskSpec, n_total: int, cfg: SurrogateConfig, device: str, progress: bool) -> float:
    """eps = eps_fraction * the mean minibatch gradient norm ||grad_w h_B|| of one vanilla surrogate over the
    last 10% of its training, on ``cfg.calibration_seed`` (not an evaluation seed)."""
    data = prepare_seeds(spec, n_total, [cfg.calibration_seed])
    one = dataclasses.replace(cfg, ensemble=1)
    _, _, history = train_surrogates(data, 1, one, None, device, progress, f"{spec.name} calibration")
    frame = history.to_frame()
    tail = frame[frame["step"] > 0.9 * frame["step"].max()]
    return cfg.eps_fraction * float(tail["sharpness_vanilla"].mean())


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
                    cfg: SearchConfig) -> torch.Tensor:
    """Gradient ascent on the surrogate (Design-Bench "Grad. Ascent"; ``ens_mean`` / ``ens_min`` ascend the
    mean / minimum of the ensemble) from the top ``n_candidates`` offline designs; step
    ``lr * sqrt(input width)`` per iteration. Continuous designs are clipped to the box after every step;
    discrete designs are optimised as per-position logits fed through a softmax (initialised from the
    one-hot design smoothed to 0.7 / 0.1) and read out by argmax.

    Returns the proposed designs in the surrogate's input space (continuous: standardised; discrete:
    one-hot), (A, S, N, in).
    """
    spec = data.spec
    x0 = top_designs(data, cfg.n_candidates).unsqueeze(0).repeat(arms, 1, 1, 1)
    step = cfg.lr * math.sqrt(spec.input_dim)
    if spec.discrete:
        A, S, N, _ = x0.shape
        z = torch.log(0.1 + 0.6 * x0.reshape(A, S, N, spec.dim, spec.letters))
        for _ in range(cfg.steps):
            z = z.detach().requires_grad_(True)
            score = _aggregate(_predict(model, z.softmax(-1).flatten(-2), K), optimizer)
            (grad,) = torch.autograd.grad(score.sum(), z)
            z = z + step * grad
        return one_hot(z.detach().argmax(-1), spec.letters)
    lo, hi = _box(data)
    x = x0.clone()
    for _ in range(cfg.steps):
        x = x.detach().requires_grad_(True)
        score = _aggregate(_predict(model, x, K), optimizer)
        (grad,) = torch.autograd.grad(score.sum(), x)
        x = torch.maximum(torch.minimum(x + step * grad, hi), lo)
    return x.detach()


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
    scores: "object"  # DataFrame: task, seed, optimizer, arm, p100, p50
    sharpness: "object"  # DataFrame: task, seed, member, arm, offline, unseen
    curves: "object"  # DataFrame: task, step, mse, sharpness_vanilla, sharpness_ignite, lambda
    eps: float


def run_task(spec: TaskSpec, seeds: list[int], n_total: int, optimizers: list[str], surrogate: SurrogateConfig,
             search: SearchConfig, device: str = "cpu", progress: bool = True) -> TaskResult:
    """Calibrate eps, train vanilla and IGNITE surrogates for every seed, run every optimizer on both, score
    the proposals with the oracle, and measure sharpness on offline and unseen inputs."""
    import pandas as pd

    eps = calibrate_eps(spec, n_total, surrogate, device, progress)
    data = prepare_seeds(spec, n_total, seeds)
    model, state, history = train_surrogates(data, 2, surrogate, eps, device, progress, f"{spec.name} surrogates")
    model = model.cpu().eval()
    K = surrogate.ensemble
    rows = []
    for opt_name in optimizers:
        if opt_name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {opt_name!r}; choose from {OPTIMIZERS}")
        if opt_name == "reinforce":
            x = reinforce(model, data, 2, K, search)
        else:
            x = gradient_ascent(model, data, 2, K, opt_name, search)
        scores = score_designs(data, x)  # (A, S, N)
        p100 = scores.max(-1).values
        p50 = torch.quantile(scores, 0.5, dim=-1)
        for a, arm in enumerate(ARMS):
            for s, seed in enumerate(seeds):
                rows.append({"task": spec.name, "seed": seed, "optimizer": opt_name, "arm": arm,
                             "p100": float(p100[a, s]), "p50": float(p50[a, s])})
    sharp_off = sharpness_on(model, data.x, 2, K)
    sharp_un = sharpness_on(model, data.x_unseen, 2, K)
    srows = [{"task": spec.name, "seed": seed, "member": k, "arm": arm,
              "offline": float(sharp_off[a, s, k]), "unseen": float(sharp_un[a, s, k])}
             for a, arm in enumerate(ARMS) for s, seed in enumerate(seeds) for k in range(K)]
    curves = history.to_frame().assign(task=spec.name)
    return TaskResult(pd.DataFrame(rows), pd.DataFrame(srows), curves, eps)
