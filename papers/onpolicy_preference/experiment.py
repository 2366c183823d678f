"""Policies and training runs of the bandit replication (the claims are in ``claims.yaml``).

One run trains one fine-tuning method on every (reward, seed) pair at once: the policy is a stack of
independent MLPs (one per pair, :class:`StackedCategoricalPolicy`) and the loss is the sum of the per-pair
losses, so Adam (element-wise) updates each member exactly as if it were trained alone. Training uses
``shared.training.train`` with the authors' optimiser: Adam (betas 0.9 / 0.999, no weight decay, no
clipping, constant learning rate).

Protocol (authors' ``bandit_experiment/bandit_learner.py`` and ``scripts/*.sh``):

- pre-train every policy to ``pi_ref`` by minimising KL(pi || pi_ref) over the training states (100 Adam
  steps, lr 0.01, the authors' ``run_sft``);
- offline methods: one dataset of N = 10 samples from ``pi_ref`` on each of the 100 training states, reused
  for every gradient step (``epochs=1``);
- on-policy methods: every ``steps_per_round`` = 15 steps, N = 10 fresh samples on each of 10 training
  states from the current policy (the first round from ``pi_ref``, as in the authors' code), labelled by
  the true reward;
- evaluation: exact expected reward sum_a pi(a|s) r(a) on 100 held-out states (the authors sample it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from shared.seeding import seed_everything, torch_generator
from shared.stacked import StackedLayers, StackedLinear, select_members
from shared.training import TrainConfig, train

from . import bandit as B

# --- the policy ------------------------------------------------------------------------------------------

class StackedCategoricalPolicy(StackedLayers):
    """``M`` independent copies of the authors' categorical actor, evaluated in one batched pass.

    Each member: Linear(100, 50) -> LayerNorm(50) -> ReLU -> Linear(50, 256) -> ReLU -> Linear(256, 256) -> ReLU
    -> Linear(256, 100) -> log-softmax (``bandit_agents.CategoricalActor``), weights Xavier-uniform with
    gain 1e-2 and zero biases (``utils.weight_init``). A custom module because nn.Linear has no stacked form.
    Shapes: contexts (M, n, 100) -> log-probabilities (M, n, 100).
    """

    def __init__(self, generators: list[torch.Generator], context_dim: int = B.CONTEXT_DIM,
                 feature_dim: int = 50, hidden_dim: int = 256, n_actions: int = B.N_ACTIONS, gain: float = 1e-2):
        super().__init__()
        dims = [(context_dim, feature_dim), (feature_dim, hidden_dim), (hidden_dim, hidden_dim),
                (hidden_dim, n_actions)]
        m = len(generators)
        # Xavier-uniform bound gain * sqrt(6 / (fan_in + fan_out)), zero biases
        self.layers = nn.ModuleList(StackedLinear.uniform(fan_in, fan_out, generators,
                                                          gain * (6.0 / (fan_in + fan_out)) ** 0.5)
                                    for fan_in, fan_out in dims)
        self.ln_weight = nn.Parameter(torch.ones(m, 1, feature_dim))
        self.ln_bias = nn.Parameter(torch.zeros(m, 1, feature_dim))

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        h = self.layers[0](contexts)
        h = nn.functional.layer_norm(h, h.shape[-1:]) * self.ln_weight + self.ln_bias
        h = torch.relu(h)
        h = torch.relu(self.layers[1](h))
        h = torch.relu(self.layers[2](h))
        return torch.log_softmax(self.layers[3](h), dim=-1)

    def select(self, index: list[int]) -> "StackedCategoricalPolicy":
        """A new stack whose member k is a copy of member ``index[k]`` of this one."""
        return select_members(self, index)


# --- the setting of one replication ----------------------------------------------------------------------

@dataclass
class BanditSetup:
    """Everything fixed per (reward, seed) member: contexts, reference policy, rewards."""

    rewards: list[str]  # reward name of every member
    seeds: list[int]  # seed of every member
    train_contexts: torch.Tensor  # (M, n_train, 100)
    eval_contexts: torch.Tensor  # (M, n_eval, 100)
    log_ref: torch.Tensor  # (A,)
    reward_table: torch.Tensor  # (M, A) true reward of every action, per member
    peak_mask: torch.Tensor  # (M, A) actions within one width of the member's reward peak

    @property
    def members(self) -> int:
        return len(self.seeds)


def make_setup(rewards: list[str], seeds: list[int], n_train_states: int, n_eval_states: int) -> BanditSetup:
    """Contexts depend on the seed only (the same states for R1 and R2), drawn from generator 10_000 + seed."""
    pairs = [(r, s) for r in rewards for s in seeds]
    train_ctx, eval_ctx = {}, {}
    for s in seeds:
        g = torch_generator(10_000 + s)
        train_ctx[s] = B.sample_contexts(n_train_states, g)
        eval_ctx[s] = B.sample_contexts(n_eval_states, g)
    log_ref = torch.log(torch.as_tensor(B.reference_policy(), dtype=torch.float32))
    table = torch.stack([torch.as_tensor(B.reward_vector(B.REWARD_PEAKS[r]), dtype=torch.float32) for r, _ in pairs])
    mask = torch.stack([torch.as_tensor(B.peak_region(B.REWARD_PEAKS[r]), dtype=torch.float32) for r, _ in pairs])
    return BanditSetup(rewards=[r for r, _ in pairs], seeds=[s for _, s in pairs],
                       train_contexts=torch.stack([train_ctx[s] for _, s in pairs]),
                       eval_contexts=torch.stack([eval_ctx[s] for _, s in pairs]),
                       log_ref=log_ref, reward_table=table, peak_mask=mask)


def pretrain_reference(setup: BanditSetup, steps: int, lr: float, progress: bool = True
                       ) -> tuple[StackedCategoricalPolicy, pd.DataFrame]:
    """Initialise one policy per seed (generator = seed) and fit it to pi_ref by minimising KL(pi || pi_ref)
    on its training states (the authors' ``run_sft``); return a stack with one member per (reward, seed)
    (both rewards of a seed start from the same pre-trained policy) and KL(pi || pi_ref) on eval states."""
    seeds = sorted(set(setup.seeds))
    seed_everything(seeds[0])
    model = StackedCategoricalPolicy([torch_generator(s) for s in seeds])
    first = [setup.seeds.index(s) for s in seeds]
    ctx = setup.train_contexts[first]
    cfg = TrainConfig(steps=steps, lr=lr, betas=(0.9, 0.999), schedule="constant", grad_clip=None,
                      weight_decay=0.0, log_every=max(1, steps), desc="pretrain to pi_ref", progress=progress)
    train(model, cfg, lambda step: ctx, lambda m, c: B.reverse_kl(m(c), setup.log_ref).sum(), "cpu")
    stacked = model.select([seeds.index(s) for s in setup.seeds])
    with torch.no_grad():
        kl = B.reverse_kl(stacked(setup.eval_contexts), setup.log_ref)
    report = pd.DataFrame({"reward": setup.rewards, "seed": setup.seeds, "kl_to_ref": kl.numpy()})
    return stacked, report


# --- one fine-tuning method ------------------------------------------------------------------------------

SOURCES = ("offline", "on_policy", "reference")


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning arm. ``source`` says where its responses come from:

    - ``offline``: the authors' offline protocol, one fixed dataset of N samples from ``pi_ref`` on
      ``n_offline_states`` prompts, reused at every step, pairs below ``offline_threshold`` dropped;
    - ``on_policy``: every ``steps_per_round`` steps, N fresh samples from the current policy on
      ``n_onpolicy_states`` prompts (the first round from ``pi_ref``), no pair threshold;
    - ``reference``: exactly the on-policy schedule (same prompts, batch sizes, rounds, reward queries, no
      threshold, the same sampling generator) except that every round samples from ``pi_ref``: an offline
      dataset of the same size as the on-policy arm's, consumed in the same batches. The pair
      (``on_policy``, ``reference``) at one learning rate differs only in the sampling policy.
    """

    name: str
    loss: str  # "sft" | "ipo" | "dpo" | "reinforce"
    source: str  # "offline" | "on_policy" | "reference"
    lr: float

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")

    @property
    def on_policy(self) -> bool:
        return self.source == "on_policy"

    @property
    def fixed_dataset(self) -> bool:
        return self.source == "offline"


@dataclass(frozen=True)
class DataSpec:
    n_samples: int = 10  # N responses per prompt
    n_offline_states: int = 100  # prompts of the offline dataset
    n_onpolicy_states: int = 10  # prompts sampled per on-policy round
    steps_per_round: int = 15  # gradient steps on each on-policy batch
    offline_threshold: float | None = 0.2  # offline pairs with |r_w - r_l| below this are dropped
    onpolicy_threshold: float | None = None
    ipo_tau: float = 0.05  # IPO target margin 1 / (2 tau) = 10 (the authors' beta = 10)
    dpo_beta: float = 0.1


@dataclass
class Batch:
    contexts: torch.Tensor  # (M, n, 100)
    actions: torch.Tensor  # (M, n, N)
    rewards: torch.Tensor  # (M, n, N)
    advantages: torch.Tensor | None = None


def _label(setup: BanditSetup, actions: torch.Tensor) -> torch.Tensor:
    """True rewards of sampled actions: (M, n, N) -> (M, n, N)."""
    return torch.gather(setup.reward_table.unsqueeze(1).expand(-1, actions.shape[1], -1), -1, actions)


def sample_batch(setup: BanditSetup, logp: torch.Tensor, contexts: torch.Tensor, n_samples: int,
                 generators: list[torch.Generator]) -> Batch:
    """N actions per state from ``exp(logp)`` (M, n, A), member m with its own generator; rewards labelled."""
    actions = torch.stack([B.sample_actions(logp[m], n_samples, generators[m]) for m in range(logp.shape[0])])
    return Batch(contexts, actions, _label(setup, actions))


def offline_dataset(setup: BanditSetup, data: DataSpec) -> Batch:
    """The offline preference data: N samples from pi_ref on each of the first ``n_offline_states`` training
    states, drawn from generator 20_000 + seed (the same actions for R1 and R2 of a seed)."""
    ctx = setup.train_contexts[:, :data.n_offline_states]
    logp = setup.log_ref.expand(setup.members, data.n_offline_states, -1)
    gens = [torch_generator(20_000 + s) for s in setup.seeds]
    return sample_batch(setup, logp, ctx, data.n_samples, gens)


def method_loss(spec: MethodSpec, data: DataSpec, setup: BanditSetup, logp: torch.Tensor, batch: Batch
                ) -> torch.Tensor:
    """Per-member loss (M,) of one method on one batch."""
    threshold = data.offline_threshold if spec.fixed_dataset else data.onpolicy_threshold
    if spec.loss == "sft":
        return B.best_of_n_sft_loss(logp, batch.actions, batch.rewards)
    if spec.loss == "ipo":
        return B.ipo_loss(logp, setup.log_ref, batch.actions, batch.rewards, data.ipo_tau, threshold)
    if spec.loss == "dpo":
        return B.dpo_loss(logp, setup.log_ref, batch.actions, batch.rewards, data.dpo_beta, threshold)
    if spec.loss == "reinforce":
        return B.reinforce_loss(logp, batch.actions, batch.advantages)
    raise ValueError(f"unknown loss {spec.loss!r}")


def evaluate(model: StackedCategoricalPolicy, setup: BanditSetup) -> dict[str, torch.Tensor]:
    """Exact metrics on the held-out states, one value per member."""
    logp = model(setup.eval_contexts)
    return {"reward": B.expected_reward(logp, setup.reward_table.unsqueeze(1)),
            "peak_mass": B.region_mass(logp, setup.peak_mask.unsqueeze(1)),
            "entropy": B.entropy(logp),
            "kl_to_ref": B.reverse_kl(logp, setup.log_ref)}


def _long(records: list[dict], setup: BanditSetup, **labels) -> pd.DataFrame:
    rows = []
    for rec in records:
        for m in range(setup.members):
            row = {**labels, "reward_fn": setup.rewards[m], "seed": setup.seeds[m], "step": rec["step"]}
            row.update({k.split("|")[0]: v for k, v in rec.items() if k.endswith(f"|{m}")})
            rows.append(row)
    return pd.DataFrame(rows)


def _metric_record(model: StackedCategoricalPolicy, setup: BanditSetup) -> dict[str, float]:
    return {f"{k}|{m}": float(v[m]) for k, v in evaluate(model, setup).items() for m in range(setup.members)}


def run_method(spec: MethodSpec, data: DataSpec, setup: BanditSetup, pretrained: StackedCategoricalPolicy,
               steps: int, eval_every: int, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Fine-tune a copy of ``pretrained`` with one method for ``steps`` gradient steps.

    Returns the evaluation curve (one row per member and evaluation, step 0 included, with the number of
    reward queries so far) and the final mean action distribution per member, shape (M, A).
    """
    model = copy.deepcopy(pretrained)
    offline = offline_dataset(setup, data) if spec.fixed_dataset else None
    gens = [torch_generator(30_000 + s) for s in setup.seeds]
    normalizer = B.RunningNormalizer(setup.members)
    state = {"batch": offline, "queries": data.n_offline_states * data.n_samples if spec.fixed_dataset else 0}
    queries_at: dict[int, int] = {0: state["queries"]}

    def batch_fn(step: int) -> Batch:
        if not spec.fixed_dataset and step % data.steps_per_round == 0:
            ctx = setup.train_contexts[:, :data.n_onpolicy_states]
            with torch.no_grad():
                from_ref = step == 0 or spec.source == "reference"
                logp = setup.log_ref.expand(setup.members, ctx.shape[1], -1) if from_ref else model(ctx)
            batch = sample_batch(setup, logp, ctx, data.n_samples, gens)
            if spec.loss == "reinforce":
                normalizer.update(batch.rewards)
                batch.advantages = normalizer.normalize(batch.rewards)
            state["batch"] = batch
            state["queries"] += ctx.shape[1] * data.n_samples
        queries_at[step + 1] = state["queries"]
        return state["batch"]

    def loss_fn(m: StackedCategoricalPolicy, batch: Batch) -> torch.Tensor:
        return method_loss(spec, data, setup, m(batch.contexts), batch).sum()

    with torch.no_grad():
        start = {"step": 0, **_metric_record(model, setup)}
    cfg = TrainConfig(steps=steps, lr=spec.lr, betas=(0.9, 0.999), schedule="constant", grad_clip=None,
                      weight_decay=0.0, log_every=eval_every, eval_every=eval_every, desc=spec.name,
                      progress=progress)
    history = train(model, cfg, batch_fn, loss_fn, "cpu", eval_fn=lambda m: _metric_record(m, setup))
    records = [start] + [r for r in history.records if any("|" in k for k in r)]
    curve = _long(records, setup, method=spec.name)
    curve["queries"] = curve["step"].map(queries_at)
    with torch.no_grad():
        final_probs = model(setup.eval_contexts).exp().mean(1).numpy()
    return curve, final_probs


def run_methods(specs: list[MethodSpec], data: DataSpec, setup: BanditSetup, pretrained: StackedCategoricalPolicy,
                steps: int, eval_every: int, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method on every (reward, seed); returns (curves, final action distributions in long form)."""
    curves, dists = [], []
    for spec in specs:
        curve, probs = run_method(spec, data, setup, pretrained, steps, eval_every, progress)
        curves.append(curve)
        for m in range(setup.members):
            dists.append(pd.DataFrame({"method": spec.name, "reward_fn": setup.rewards[m], "seed": setup.seeds[m],
                                       "action": np.arange(probs.shape[1]), "prob": probs[m]}))
        if progress:
            last = curve[curve["step"] == curve["step"].max()].groupby("reward_fn")["reward"].mean()
            print(f"{spec.name}: final reward " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()), flush=True)
    return pd.concat(curves, ignore_index=True), pd.concat(dists, ignore_index=True)


# --- mode-seeking vs mode-covering: fitting the same target two ways -------------------------------------

FIT_OBJECTIVES = {"reverse_kl": B.reverse_kl, "forward_kl": B.forward_kl}


def run_mode_fit(setup: BanditSetup, pretrained: StackedCategoricalPolicy, beta: float, steps: int, lr: float,
                 progress: bool = True, objectives: tuple[str, ...] = ("reverse_kl", "forward_kl")) -> pd.DataFrame:
    """Fit pi* ~ pi_ref exp(r / beta) from the pre-trained policy by reverse KL (mode-seeking) and by forward
    KL (mode-covering) with the same optimiser, lr and steps, on the training states; evaluate every step."""
    log_target = B.kl_regularised_target(setup.log_ref, setup.reward_table, beta).unsqueeze(1)  # (M, 1, A)
    out = []
    for objective in objectives:
        fn = FIT_OBJECTIVES[objective]
        model = copy.deepcopy(pretrained)
        ctx = setup.train_contexts

        def record(m: StackedCategoricalPolicy) -> dict[str, float]:
            rec = _metric_record(m, setup)
            kl = B.reverse_kl(m(setup.eval_contexts), log_target)
            rec.update({f"kl_to_target|{i}": float(kl[i]) for i in range(setup.members)})
            return rec

        with torch.no_grad():
            start = {"step": 0, **record(model)}
        cfg = TrainConfig(steps=steps, lr=lr, betas=(0.9, 0.999), schedule="constant", grad_clip=None,
                          weight_decay=0.0, log_every=1, eval_every=1, desc=objective, progress=progress)
        history = train(model, cfg, lambda step: ctx, lambda m, c: fn(m(c), log_target).sum(), "cpu",
                        eval_fn=record)
        out.append(_long([start] + history.records, setup, objective=objective))
    return pd.concat(out, ignore_index=True)
