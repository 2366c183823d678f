"""Bayes-error-optimised unlearnable examples (BEO), the baselines it is compared with, a tested Bayes-error
estimator, data and the small classifiers, all as plain functions. The claims live in ``claims.yaml``; the
statistics behind their verdicts are in ``analysis.py``.

Paper: Zhang, Sun, Lim, Zhang, *Towards Provably Unlearnable Examples via Bayes Error Optimisation*
(AAAI 2026, arXiv:2511.08191).

- BEO (Sec. 3-4 of the paper): maximise an estimate of the Bayes error of the protected samples, with their
  true labels, over an L_inf-bounded perturbation, by projected gradient ascent (PGA). The paper's
  differentiable estimator is the local average of a kernel posterior (the authors' ``bayeslap`` tool):
  ``BE_hat = mean_i [1 - max_c p_hat(c | x_i)]`` with a Gaussian-kernel posterior over the other samples
  (leave-one-out). :func:`kernel_posterior_bayes_error`, :func:`beo_perturb`.
- Error-minimising noise (Huang et al. 2021, sample-wise min-min): alternate training a surrogate on the
  perturbed data and PGD that *lowers* its loss on every sample. :func:`em_perturb`.
- Random uniform noise in the same L_inf ball. :func:`random_perturb`.
- The measuring estimator (not the one BEO optimises, so the measurement is not the objective itself): the
  Cover-Hart inversion of the leave-one-out 1-NN error, ``BE_CH = (K-1)/K (1 - sqrt(1 - K/(K-1) R_1NN))``
  (Cover & Hart 1967), checked against the exact Bayes error of a Gaussian mixture of the same size and
  dimension. :func:`cover_hart_bayes_error`, :func:`make_gmm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.classifier import accuracy, cross_entropy_loss, minibatch_sampler
from shared.training import TrainConfig, train

N_CLASSES = 10
ARCHITECTURES = ("logreg", "mlp", "cnn")


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Split:
    """The digits split of one seed: the clean half (anyone's data), the half to protect, and a clean test
    set. Images are flattened 8x8 in [0, 1] (the 17 grey levels of ``load_digits`` divided by 16)."""

    x_clean: np.ndarray  # (n_clean, 64)
    y_clean: np.ndarray
    x_protect: np.ndarray  # (n_protect, 64)
    y_protect: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split(seed: int, test_fraction: float = 0.3) -> Split:
    """Stratified split of sklearn's digits: ``test_fraction`` held out, the rest halved (stratified) into a
    clean half and a half to protect. Deterministic given ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    x_a, x_b, y_a, y_b = train_test_split(x_tr, y_tr, test_size=0.5, stratify=y_tr, random_state=seed + 7919)
    return Split(x_a, y_a.astype(np.int64), x_b, y_b.astype(np.int64), x_te, y_te.astype(np.int64))


def make_gmm(n: int, n_classes: int, d_latent: int, d: int, separation: float, noise: float, seed: int,
             n_mc: int = 200_000) -> tuple[np.ndarray, np.ndarray, float]:
    """A Gaussian mixture with a known Bayes error, shaped like the digits' protected half.

    Latent z | y=c ~ N(mu_c, I_{d_latent}), mu_c ~ N(0, separation^2 I) (equal priors); the observation is
    x = A z + noise * e with A a random d x d_latent orthonormal embedding and e ~ N(0, I_d). Projected on
    span(A), x | y=c ~ N(mu_c, (1 + noise^2) I); the orthogonal part is class-independent noise, so the
    Bayes error is that of the latent mixture with variance 1 + noise^2, computed here by Monte Carlo with
    the exact posterior (``n_mc`` draws; standard error <= 0.5 / sqrt(n_mc)). Returns (x, y, bayes_error)."""
    rng = np.random.default_rng(seed)
    mus = rng.normal(0.0, separation, size=(n_classes, d_latent))
    y = rng.integers(0, n_classes, size=n)
    z = mus[y] + rng.normal(size=(n, d_latent))
    a = np.linalg.qr(rng.normal(size=(d, d_latent)))[0]
    x = z @ a.T + noise * rng.normal(size=(n, d))
    return x.astype(np.float32), y.astype(np.int64), gaussian_mixture_bayes_error(mus, 1.0 + noise ** 2, rng, n_mc)


def gaussian_mixture_bayes_error(mus: np.ndarray, variance: float, rng: np.random.Generator,
                                 n_mc: int) -> float:
    """Monte-Carlo Bayes error of an equal-prior mixture of N(mu_c, variance I): E[1 - max_c p(c | x)]."""
    k, d = mus.shape
    errs = []
    for start in range(0, n_mc, 50_000):
        m = min(50_000, n_mc - start)
        yy = rng.integers(0, k, size=m)
        xx = mus[yy] + math.sqrt(variance) * rng.normal(size=(m, d))
        logits = -((xx[:, None, :] - mus[None]) ** 2).sum(-1) / (2 * variance)
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        errs.append(1.0 - p.max(1))
    return float(np.concatenate(errs).mean())


# ----------------------------------------------------------------------------------------------------------
# Bayes-error estimators
# ----------------------------------------------------------------------------------------------------------

def one_nn_error(x: np.ndarray, y: np.ndarray, leave_one_out: bool = True) -> float:
    """Error of the 1-NN rule on the sample itself; leave-one-out excludes each point from its own
    neighbours (without it every point is its own neighbour and the error is 0 unless duplicates conflict)."""
    x = np.asarray(x, dtype=np.float64)
    sq = (x ** 2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    if leave_one_out:
        np.fill_diagonal(d2, np.inf)
    else:
        np.fill_diagonal(d2, -np.inf)
    return float(np.mean(y[d2.argmin(1)] != y))


def cover_hart_from_error(r1: float, n_classes: int) -> float:
    """Invert the Cover-Hart bound R_1NN <= R*(2 - K/(K-1) R*): R* >= (K-1)/K (1 - sqrt(1 - K/(K-1) R_1NN)).
    ``r1`` above (K-1)/K (chance) is clipped to it."""
    k = n_classes
    r1 = min(float(r1), (k - 1) / k)
    return (k - 1) / k * (1.0 - math.sqrt(max(0.0, 1.0 - k / (k - 1) * r1)))


def cover_hart_bayes_error(x: np.ndarray, y: np.ndarray, n_classes: int = N_CLASSES,
                           leave_one_out: bool = True) -> float:
    """The measuring estimator: the Cover-Hart inversion of the (leave-one-out) 1-NN error."""
    return cover_hart_from_error(one_nn_error(x, y, leave_one_out), n_classes)


def kernel_log_posterior(x: torch.Tensor, y: torch.Tensor, n_classes: int, sigma: float) -> torch.Tensor:
    """Leave-one-out Gaussian-kernel class posterior, in log space: (n, n_classes).

    log p(c | x_i) = logsumexp_{j != i, y_j = c} (-|x_i - x_j|^2 / 2 sigma^2) - logsumexp_{j != i} (...)."""
    n = x.shape[0]
    d2 = torch.cdist(x, x).pow(2)  # (n, n)
    logk = -d2 / (2 * sigma ** 2)
    logk = logk.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), float("-inf"))
    onehot = F.one_hot(y, n_classes).bool()  # (n, C)
    per_class = logk[:, :, None].masked_fill(~onehot[None, :, :], float("-inf"))  # (n, n, C)
    num = torch.logsumexp(per_class, dim=1)  # (n, C)
    return num - torch.logsumexp(logk, dim=1, keepdim=True)


def kernel_posterior_bayes_error(x: torch.Tensor, y: torch.Tensor, n_classes: int, sigma: float) -> torch.Tensor:
    """The objective BEO maximises (differentiable): mean_i [1 - max_c p_hat(c | x_i)] with the
    leave-one-out Gaussian-kernel posterior (local averaging of the posterior)."""
    logp = kernel_log_posterior(x, y, n_classes, sigma)
    return 1.0 - logp.exp().max(dim=1).values.mean()


def median_nn_distance(x: np.ndarray) -> float:
    """Median over points of the distance to the nearest other point (the kernel bandwidth of BEO)."""
    x = np.asarray(x, dtype=np.float64)
    sq = (x ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    return float(np.median(np.sqrt(d2.min(1))))


# ----------------------------------------------------------------------------------------------------------
# Perturbations (all within the L_inf ball of radius eps and the pixel range [0, 1])
# ----------------------------------------------------------------------------------------------------------

def project(x0: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto {x : |x - x0|_inf <= eps} intersected with [0, 1]^d."""
    return torch.clamp(torch.min(torch.max(x, x0 - eps), x0 + eps), 0.0, 1.0)


def random_perturb(x: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """Uniform noise in [-eps, eps] per pixel, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.uniform(-eps, eps, size=x.shape), 0.0, 1.0).astype(np.float32)


def beo_perturb(x: np.ndarray, y: np.ndarray, eps: float, steps: int, sigma: float,
                step_size: float | None = None, n_classes: int = N_CLASSES) -> tuple[np.ndarray, list[float]]:
    """Bayes Error Optimisation by projected sign-gradient ascent on :func:`kernel_posterior_bayes_error`
    over the protected samples (their true labels kept). Returns (perturbed x, objective per step incl. the
    start). ``step_size`` defaults to 2.5 eps / steps (the usual PGD schedule)."""
    alpha = 2.5 * eps / steps if step_size is None else step_size
    x0 = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    xa = x0.clone()
    trace = []
    for _ in range(steps):
        xa.requires_grad_(True)
        obj = kernel_posterior_bayes_error(xa, yt, n_classes, sigma)
        (grad,) = torch.autograd.grad(obj, xa)
        trace.append(float(obj.detach()))
        with torch.no_grad():
            xa = project(x0, xa + alpha * grad.sign(), eps)
    with torch.no_grad():
        trace.append(float(kernel_posterior_bayes_error(xa, yt, n_classes, sigma)))
    return xa.detach().numpy().astype(np.float32), trace


def em_perturb(x: np.ndarray, y: np.ndarray, eps: float, seed: int, rounds: int, train_steps: int,
               pgd_steps: int, lr: float = 3e-3, batch_size: int = 64, progress: bool = False,
               n_classes: int = N_CLASSES) -> tuple[np.ndarray, float]:
    """Sample-wise error-minimising noise (Huang et al. 2021, min-min): ``rounds`` times, train a surrogate
    MLP for ``train_steps`` steps on the perturbed data (shared training loop), then ``pgd_steps`` signed
    gradient steps that *decrease* the surrogate's loss on every sample (step eps / 4), projected on the
    ball. The surrogate keeps its weights across rounds (bi-level, not a fixed model).
    Returns (perturbed x, surrogate accuracy on the perturbed data at the end)."""
    torch.manual_seed(seed)
    model = make_model("mlp", seed)
    x0 = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    xa = x0.clone()
    gen = torch.Generator().manual_seed(seed)
    alpha = eps / 4
    for r in range(rounds):
        data = xa.clone()

        train(model, TrainConfig(steps=train_steps, lr=lr, schedule="constant", progress=False,
                                 log_every=train_steps, desc=f"em surrogate {r}"),
              minibatch_sampler([data, yt], batch_size, gen), cross_entropy_loss, "cpu")
        for _ in range(pgd_steps):
            xa.requires_grad_(True)
            loss = F.cross_entropy(model(xa), yt, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                xa = project(x0, xa - alpha * grad.sign(), eps)
    with torch.no_grad():
        acc = float((model(xa).argmax(1) == yt).float().mean())
    return xa.detach().numpy().astype(np.float32), acc


# ----------------------------------------------------------------------------------------------------------
# Classifiers and the training/evaluation of one arm
# ----------------------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """Two 3x3 conv layers (16, 32 channels) on the 8x8 image, 2x2 max-pool, linear read-out."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 4 * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 64)
        h = F.relu(self.conv1(x.view(-1, 1, 8, 8)))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.head(h.flatten(1))


def make_model(arch: str, seed: int, d_in: int = 64, n_classes: int = N_CLASSES, width: int = 256) -> nn.Module:
    """``logreg`` (linear softmax), ``mlp`` (2 hidden layers of ``width``, ReLU) or ``cnn`` (SmallCNN),
    initialised from ``seed``."""
    torch.manual_seed(seed)
    if arch == "logreg":
        return nn.Linear(d_in, n_classes)
    if arch == "mlp":
        return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                             nn.Linear(width, n_classes))
    if arch == "cnn":
        return SmallCNN(n_classes)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHITECTURES}")


def train_and_test(arch: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   seed: int, steps: int, lr: float, batch_size: int, weight_decay: float = 0.0) -> dict:
    """Train ``arch`` from ``seed`` for exactly ``steps`` AdamW steps of ``batch_size`` samples drawn
    uniformly from the training set (every arm: same steps, lr, batch size, schedule), then report the
    accuracy on the clean test set and on its own training set."""
    model = make_model(arch, seed)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.long)
    batch_fn = minibatch_sampler([xt, yt], batch_size, torch.Generator().manual_seed(seed + 1_000_003))
    hist = train(model, TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, warmup_steps=steps // 20,
                                    progress=False, log_every=max(1, steps // 4), desc=arch),
                 batch_fn, cross_entropy_loss, "cpu")
    return {"test_acc": accuracy(model, x_test, y_test), "train_acc": accuracy(model, x_train, y_train),
            "final_loss": hist.last("loss"), "n_train": int(len(y_train))}
