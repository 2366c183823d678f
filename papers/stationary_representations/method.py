"""Stationary representations with a d-Simplex fixed classifier (Biondi et al., CVPR 2024): the classifier,
the data, the independently trained model sequence, and the compatibility metrics.

- :func:`dsimplex`: the K vertices of a regular simplex in R^{K-1}, used as a frozen classifier (Sec. 3.2,
  "d-Simplex fixed classifier"; the authors' ``dsimplex``). Every model of a sequence uses the SAME matrix
  and the same class -> vertex map, so that the feature of class k is pulled towards the same fixed
  vertex by every model: the representation is *stationary*.
- :func:`make_synthetic`: a class-structured data set (class centres in a latent space pushed through a
  random frozen network, plus noise) whose difficulty is set by its noise; :func:`make_digits`: sklearn's
  8x8 digits (bundled, no download).
- :func:`train_feature_model`: one model phi_t trained from scratch (``shared.training.train``) with a
  fixed simplex, a per-model permuted simplex (control) or a learnable linear classifier (baseline).
- :func:`compatibility_matrix`, :func:`average_compatibility` (AC) and :func:`average_multimodel_accuracy`
  (AM): the empirical compatibility criterion M(phi_new query, phi_old gallery) > M(phi_old, phi_old)
  (Shen et al. 2020, Eq. 1 of the paper) over every pair of a sequence, as in the authors'
  ``compatibility_metrics.py`` (a tie counts as a failure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.classifier import cross_entropy_loss, minibatch_sampler
from shared.training import TrainConfig, train

ARMS = ("simplex", "permuted_simplex", "learned")


# --------------------------------------------------------------------------------------------------
# the d-Simplex fixed classifier
# --------------------------------------------------------------------------------------------------

def dsimplex(num_classes: int) -> torch.Tensor:
    """(K, K-1) matrix whose rows are the unit-norm vertices of a regular simplex centred at the origin.

    Built from the K standard basis vectors of R^K: centre them (their mean is removed), express them in an
    orthonormal basis of the (K-1)-dimensional subspace orthogonal to the all-ones vector, and normalise.
    Every pair of rows then has inner product -1/(K-1), the largest possible equal separation of K unit
    vectors (Pernici et al. 2021; Sec. 3.2 of the paper).
    """
    if num_classes < 2:
        raise ValueError("a simplex needs at least 2 vertices")
    k = num_classes
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k  # (K, K), rows sum to 0
    # orthonormal basis of span{centred rows} = 1^perp: the first K-1 left singular vectors
    u, s, _ = torch.linalg.svd(centred.T)
    basis = u[:, : k - 1]  # (K, K-1)
    verts = centred @ basis  # (K, K-1)
    verts = verts / verts.norm(dim=1, keepdim=True)
    return verts.float()


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------

@dataclass
class Split:
    """Train pool and held-out evaluation images with labels; the held-out half is split into query and
    gallery (each class split in two halves)."""

    x_train: np.ndarray  # (n_train, d) float32
    y_train: np.ndarray  # (n_train,) int64
    x_query: np.ndarray
    y_query: np.ndarray
    x_gallery: np.ndarray
    y_gallery: np.ndarray
    n_classes: int


def _split_per_class(x: np.ndarray, y: np.ndarray, n_train: int, n_query: int, n_gallery: int,
                     rng: np.random.Generator) -> Split:
    parts = {k: [] for k in ("tr", "q", "g")}
    classes = np.unique(y)
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        if idx.size < n_train + n_query + n_gallery:
            raise ValueError(f"class {c} has {idx.size} samples, fewer than {n_train + n_query + n_gallery}")
        parts["tr"].append(idx[:n_train])
        parts["q"].append(idx[n_train:n_train + n_query])
        parts["g"].append(idx[n_train + n_query:n_train + n_query + n_gallery])
    tr, q, g = (np.concatenate(parts[k]) for k in ("tr", "q", "g"))
    # within the training pool the order is by class, then by a random permutation: the first
    # ``m`` samples of each class are a random subset (used for growing data fractions)
    return Split(x[tr].astype(np.float32), y[tr].astype(np.int64), x[q].astype(np.float32),
                 y[q].astype(np.int64), x[g].astype(np.float32), y[g].astype(np.int64), int(classes.size))


def make_synthetic(n_classes: int, n_train: int, n_query: int, n_gallery: int, dim: int, latent_dim: int,
                   noise: float, seed: int) -> Split:
    """Class-structured synthetic data: class centres mu_k ~ N(0, I) in R^latent_dim, samples
    z = mu_k + noise * N(0, I), pushed through a random frozen 2-layer tanh network to R^dim, standardised
    with the training pool's statistics. ``noise`` sets the Bayes error (the difficulty)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n_classes, latent_dim))
    w1 = rng.normal(size=(latent_dim, 2 * dim)) / np.sqrt(latent_dim)
    w2 = rng.normal(size=(2 * dim, dim)) / np.sqrt(2 * dim)
    per_class = n_train + n_query + n_gallery
    y = np.repeat(np.arange(n_classes), per_class)
    z = mu[y] + noise * rng.normal(size=(y.size, latent_dim))
    x = np.tanh(z @ w1) @ w2
    split = _split_per_class(x, y, n_train, n_query, n_gallery, rng)
    m, s = split.x_train.mean(0), split.x_train.std(0) + 1e-6
    for name in ("x_train", "x_query", "x_gallery"):
        setattr(split, name, ((getattr(split, name) - m) / s).astype(np.float32))
    return split


def make_digits(n_train: int, n_query: int, n_gallery: int, seed: int) -> Split:
    """sklearn's 8x8 digits (1,797 images, 10 classes; bundled with scikit-learn), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    return _split_per_class(d.data / 16.0, d.target, n_train, n_query, n_gallery, rng)


def task_classes(initial: int, increment: int, n_tasks: int) -> list[int]:
    """Number of classes seen by the model of each task (class ids 0..n-1 arrive in order)."""
    return [initial + increment * t for t in range(n_tasks)]


def training_subset(split: Split, n_seen: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` training samples of each of the classes 0..n_seen-1 (a random subset: the
    pool is shuffled within each class), so a later task's data contains an earlier task's."""
    keep = []
    for c in range(n_seen):
        idx = np.flatnonzero(split.y_train == c)
        keep.append(idx[:per_class])
    keep = np.concatenate(keep)
    return split.x_train[keep], split.y_train[keep]


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------

class FeatureNet(nn.Module):
    """MLP backbone -> feature z in R^{K-1} -> classifier W z (no bias), as the authors' model (features
    of dimension K-1 = preallocated classes - 1, classifier ``fc2`` without bias). ``classifier`` is the
    (K, K-1) fixed matrix (frozen, a buffer-like parameter without gradient) or None for a learnable one."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, classifier: torch.Tensor | None):
        super().__init__()
        feat = num_classes - 1
        self.backbone = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                      nn.Linear(hidden, feat))
        self.fc = nn.Linear(feat, num_classes, bias=False)
        if classifier is not None:
            with torch.no_grad():
                self.fc.weight.copy_(classifier)
            self.fc.weight.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def classifier_for(arm: str, num_classes: int, rng: np.random.Generator) -> torch.Tensor | None:
    """The classifier matrix of one model: the shared simplex (same class -> vertex map for every model),
    the simplex with a class -> vertex map drawn afresh for this model (the control: a fixed classifier
    but no SHARED one), or None (learnable)."""
    if arm == "simplex":
        return dsimplex(num_classes)
    if arm == "permuted_simplex":
        return dsimplex(num_classes)[torch.as_tensor(rng.permutation(num_classes))]
    if arm == "learned":
        return None
    raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")


def train_feature_model(x: np.ndarray, y: np.ndarray, arm: str, num_classes: int, hidden: int, steps: int,
                        batch_size: int, lr: float, weight_decay: float, seed: int,
                        progress: bool = False) -> tuple[FeatureNet, float]:
    """Train one model from scratch with cross-entropy over all K preallocated outputs; every arm gets the
    same backbone initialisation (``seed``), data, batches, steps, learning rate and weight decay. Returns
    the model and its final training loss."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = FeatureNet(x.shape[1], hidden, num_classes, None)
    cls = classifier_for(arm, num_classes, rng)
    if cls is not None:
        with torch.no_grad():
            model.fc.weight.copy_(cls)
        model.fc.weight.requires_grad_(False)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batch_fn = minibatch_sampler([xt, yt], min(batch_size, xt.shape[0]), torch.Generator().manual_seed(seed + 1))
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, log_every=max(1, steps // 4),
                      progress=progress, desc=arm)
    hist = train(model, cfg, batch_fn, cross_entropy_loss, "cpu")
    return model, float(hist.last("loss"))


@torch.no_grad()
def extract(model: FeatureNet, x: np.ndarray) -> np.ndarray:
    """L2-normalised features (as the authors' ``extract_features``)."""
    model.eval()
    f = model.features(torch.from_numpy(x))
    return F.normalize(f, dim=1).numpy()


@torch.no_grad()
def classify(model: FeatureNet, x: np.ndarray, n_seen: int) -> np.ndarray:
    """Predicted class among the classes the model was trained on (0..n_seen-1)."""
    model.eval()
    return model(torch.from_numpy(x))[:, :n_seen].argmax(1).numpy()


# --------------------------------------------------------------------------------------------------
# compatibility metrics
# --------------------------------------------------------------------------------------------------

def top1_retrieval(query: np.ndarray, y_query: np.ndarray, gallery: np.ndarray, y_gallery: np.ndarray) -> float:
    """1:N search accuracy: the fraction of queries whose most cosine-similar gallery item (features are
    L2-normalised) has the query's label."""
    sim = query @ gallery.T
    return float((y_gallery[sim.argmax(1)] == y_query).mean())


def compatibility_matrix(q_feats: list[np.ndarray], g_feats: list[np.ndarray], y_query: np.ndarray,
                         y_gallery: np.ndarray, eval_classes: list[int] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """M[i, j] (j <= i): 1:N accuracy with model i's query features against model j's gallery features;
    and U[i, j]: model i's own (self) accuracy on the same evaluation set (query and gallery both model i).

    ``eval_classes[j]``: the evaluation set of column j is the held-out images of classes 0..eval_classes[j]-1
    (the classes the old model j was trained on); None: every class, for every entry (the authors' single
    fixed query/gallery set). Entries above the diagonal are NaN."""
    t = len(q_feats)
    m = np.full((t, t), np.nan)
    u = np.full((t, t), np.nan)
    for j in range(t):
        if eval_classes is None:
            qm, gm = np.ones_like(y_query, bool), np.ones_like(y_gallery, bool)
        else:
            qm, gm = y_query < eval_classes[j], y_gallery < eval_classes[j]
        for i in range(j, t):
            m[i, j] = top1_retrieval(q_feats[i][qm], y_query[qm], g_feats[j][gm], y_gallery[gm])
            u[i, j] = top1_retrieval(q_feats[i][qm], y_query[qm], g_feats[i][gm], y_gallery[gm])
    return m, u


def compatible_pairs(m: np.ndarray) -> np.ndarray:
    """Boolean (T, T): True at (i, j), i > j, where M[i, j] > M[j, j] (the empirical compatibility
    criterion; a tie is not compatible, as ``create_position_matrix`` in the authors' code)."""
    t = m.shape[0]
    out = np.zeros((t, t), bool)
    for j in range(t):
        for i in range(j + 1, t):
            out[i, j] = bool(m[i, j] > m[j, j])
    return out


def average_compatibility(m: np.ndarray) -> float:
    """AC = 2 / (T (T-1)) * sum_{i > j} 1[M[i, j] > M[j, j]] (CL2R, Biondi et al. 2023)."""
    t = m.shape[0]
    if t < 2:
        raise ValueError("AC needs at least two models")
    return float(compatible_pairs(m).sum() / (t * (t - 1) / 2))


def upper_bound_compatibility(m: np.ndarray, u: np.ndarray) -> float:
    """The AC a sequence would have if cross-model search were as good as the new model's self-search:
    fraction of pairs i > j with U[i, j] > M[j, j] (the new model is better than the old one on the old
    model's evaluation set). The empirical criterion presupposes a better new model."""
    t = m.shape[0]
    hits = [u[i, j] > m[j, j] for j in range(t) for i in range(j + 1, t)]
    return float(np.mean(hits))


def average_multimodel_accuracy(m: np.ndarray) -> float:
    """AM: mean of the lower triangle of M including the diagonal (the authors' ``average_accuracy``,
    as a fraction)."""
    return float(np.nanmean(m[np.tril_indices(m.shape[0])]))


def mean_cross_accuracy(m: np.ndarray) -> float:
    """Mean of M[i, j] over the strictly lower triangle (cross-model search only)."""
    return float(np.mean(m[np.tril_indices(m.shape[0], k=-1)]))


def class_mean_cosines(feats: list[np.ndarray], y: np.ndarray, n_seen: list[int]) -> float:
    """Mean over model pairs i > j and the classes both were trained on of the cosine between model i's and
    model j's (normalised) class-mean features: 1 when the class means do not move between models
    (first-order stationarity), about 0 for unrelated feature spaces."""
    vals = []
    for j in range(len(feats)):
        for i in range(j + 1, len(feats)):
            for c in range(n_seen[j]):
                a = feats[i][y == c].mean(0)
                b = feats[j][y == c].mean(0)
                vals.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------------------
# one seed: every arm's sequence of independently trained models
# --------------------------------------------------------------------------------------------------

def make_data(dataset: str, seed: int, n_classes: int, n_train: int, n_query: int, n_gallery: int, dim: int,
              latent_dim: int, noise: float) -> Split:
    if dataset == "synthetic":
        return make_synthetic(n_classes, n_train, n_query, n_gallery, dim, latent_dim, noise, seed)
    if dataset == "digits":
        return make_digits(n_train, n_query, n_gallery, seed)
    raise ValueError(f"unknown dataset {dataset!r}")


def run_seed(seed: int, dataset: str, data_kw: dict, initial_classes: int, increment: int, n_tasks: int,
             train_per_class: list[int], preallocated: int, hidden: int, steps: int, batch_size: int, lr: float,
             weight_decay: float, arms: list[str] = list(ARMS)) -> dict:
    """Train, for each arm, the T models of the sequence independently (model t: classes 0..n_t-1, the
    first ``train_per_class[t]`` training samples of each, its own initialisation) and evaluate them.

    The backbone initialisation of model t is the same in every arm (seed 1000 * seed + t), so the arms
    differ only in the classifier. Returns per-arm matrices (M on the old model's classes and on all
    classes), self matrices U, per-model accuracies and class-mean cosines."""
    split = make_data(dataset, seed, **data_kw)
    n_seen = task_classes(initial_classes, increment, n_tasks)
    if n_seen[-1] > split.n_classes:
        raise ValueError(f"{n_seen[-1]} classes needed, the data has {split.n_classes}")
    if preallocated < n_seen[-1]:
        raise ValueError("preallocated classes must cover every class of the sequence")
    out: dict = {"seed": seed, "n_seen": n_seen, "arms": {}}
    for arm in arms:
        qf, gf, models_rows = [], [], []
        for t in range(n_tasks):
            x, y = training_subset(split, n_seen[t], train_per_class[t])
            model, loss = train_feature_model(x, y, arm, preallocated, hidden, steps, batch_size, lr, weight_decay,
                                              seed=1000 * seed + t)
            qf.append(extract(model, split.x_query))
            gf.append(extract(model, split.x_gallery))
            seen_q = split.y_query < n_seen[t]
            acc = float((classify(model, split.x_query[seen_q], n_seen[t]) == split.y_query[seen_q]).mean())
            models_rows.append({"task": t, "n_classes": n_seen[t], "n_train": int(len(y)), "train_loss": loss,
                                "test_accuracy": acc})
        m_seen, u_seen = compatibility_matrix(qf, gf, split.y_query, split.y_gallery, eval_classes=n_seen)
        m_all, u_all = compatibility_matrix(qf, gf, split.y_query, split.y_gallery, eval_classes=None)
        out["arms"][arm] = {"models": models_rows, "m_seen": m_seen, "u_seen": u_seen, "m_all": m_all,
                            "u_all": u_all, "class_mean_cos": class_mean_cosines(qf, split.y_query, n_seen)}
    return out
