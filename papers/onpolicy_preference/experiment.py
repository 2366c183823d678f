"""Policies, training runs and the pre-registered claims of the bandit replication.

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

from shared.metrics import Claim
from shared.seeding import seed_everything, torch_generator
from shared.stacked import StackedLayers, StackedLinear, select_members
from shared.training import TrainConfig, train

from . import bandit as B

# --- pre-registered claims (written before the first `small` run; see README.md) -------------------------

ALPHA = 0.05
CLAIMS = {
    "on_policy_sampling": dict(
        statement="With the reward peak in a low-likelihood region of pi_ref (R1), on-policy sampling beats "
                  "offline data for the same loss: on-policy best-of-N > offline Pref-FT, and on-policy IPO "
                  "> offline IPO (final true reward after the same number of gradient steps).",
        criterion="R1, final expected reward on held-out states, paired over seeds: reproduced if both "
                  "differences (on-policy minus offline) are > 0 with a one-sided paired t test p < 0.05; "
                  "not_reproduced if either difference is < 0 with one-sided p < 0.05; otherwise inconclusive. "
                  "Reported value: the smaller of the two mean differences, with its 95% t interval.",
        paper_value="qualitative (bandit on-policy sampling figures; authors' scripts onpolicy_best_of_n.sh, "
                    "onpolicy_ipo.sh vs best_of_n.sh, ipo.sh)",
    ),
    "negative_gradient": dict(
        statement="On the same offline preference data from pi_ref, objectives with a negative gradient "
                  "(IPO, DPO) reach a higher true reward than maximum likelihood on the preferred responses "
                  "(Pref-FT) when the reward peak lies where pi_ref has little mass (R1).",
        criterion="R1, final expected reward, paired over seeds: reproduced if offline IPO - Pref-FT and "
                  "offline DPO - Pref-FT are both > 0 with one-sided paired t p < 0.05; not_reproduced if "
                  "either is < 0 with one-sided p < 0.05; otherwise inconclusive. Reported value: the smaller "
                  "mean difference with its 95% t interval.",
        paper_value="qualitative (bandit negative-gradient figure; authors' scripts ipo.sh vs best_of_n.sh)",
    ),
    "complementary": dict(
        statement="On-policy sampling and a negative gradient are complementary: on-policy IPO improves "
                  "faster than either ingredient alone (offline IPO, on-policy best-of-N) on R1.",
        criterion="R1, area under the reward curve (mean expected reward over the evaluations of training, "
                  "step 0 included), paired over seeds: reproduced if on-policy IPO exceeds both offline IPO "
                  "and on-policy best-of-N with one-sided paired t p < 0.05; not_reproduced if it is below "
                  "either with one-sided p < 0.05; otherwise inconclusive. Reported value: the smaller mean "
                  "difference with its 95% t interval.",
        paper_value="qualitative (bandit complementarity figure)",
    ),
    "geometry_interaction": dict(
        statement="The advantage of on-policy + negative-gradient methods over offline maximum likelihood is "
                  "larger when the reward peak lies in a low-likelihood region of pi_ref (R1) than when it "
                  "is aligned with pi_ref's mode (R2).",
        criterion="Per seed, gap = final reward(on-policy IPO) - final reward(Pref-FT) on each reward; "
                  "reproduced if gap(R1) - gap(R2) > 0 with one-sided paired t p < 0.05; not_reproduced if "
                  "< 0 with one-sided p < 0.05; otherwise inconclusive.",
        paper_value="qualitative (R1 vs R2 panels of the bandit figures)",
    ),
    "mode_seeking": dict(
        statement="A mode-seeking objective relocates probability mass across the bins of a categorical "
                  "policy faster than maximum likelihood: fitting the same target pi* ~ pi_ref exp(r/beta) "
                  "by reverse KL (the KL-regularised RL objective) moves mass onto the reward peak faster "
                  "than forward KL (reward-weighted maximum likelihood).",
        criterion="R1, beta = 0.1 (99.6% of pi*'s mass within 10 actions of the peak), same policy, "
                  "optimiser, learning rate and steps: mean over the fit's evaluations (steps 0..T) of the "
                  "probability mass within 10 actions of the peak on held-out states; reproduced if reverse "
                  "KL > forward KL with one-sided paired t p < 0.05; not_reproduced if reverse < forward with "
                  "one-sided p < 0.05; otherwise inconclusive.",
        paper_value="qualitative (abstract and conceptual section: mode-seeking objectives 'alter probability "
                    "mass on specific bins of a categorical distribution at a fast rate compared to maximum "
                    "likelihood')",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


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

@dataclass(frozen=True)
class MethodSpec:
    name: str
    loss: str  # "sft" | "ipo" | "dpo" | "reinforce"
    on_policy: bool
    lr: float


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
    threshold = data.onpolicy_threshold if spec.on_policy else data.offline_threshold
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
    offline = None if spec.on_policy else offline_dataset(setup, data)
    gens = [torch_generator(30_000 + s) for s in setup.seeds]
    normalizer = B.RunningNormalizer(setup.members)
    state = {"batch": offline, "queries": 0 if spec.on_policy else data.n_offline_states * data.n_samples}
    queries_at: dict[int, int] = {0: state["queries"]}

    def batch_fn(step: int) -> Batch:
        if spec.on_policy and step % data.steps_per_round == 0:
            ctx = setup.train_contexts[:, :data.n_onpolicy_states]
            with torch.no_grad():
                logp = setup.log_ref.expand(setup.members, ctx.shape[1], -1) if step == 0 else model(ctx)
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

def run_mode_fit(setup: BanditSetup, pretrained: StackedCategoricalPolicy, beta: float, steps: int, lr: float,
                 progress: bool = True) -> pd.DataFrame:
    """Fit pi* ~ pi_ref exp(r / beta) from the pre-trained policy by reverse KL (mode-seeking) and by forward
    KL (mode-covering) with the same optimiser, lr and steps, on the training states; evaluate every step."""
    log_target = B.kl_regularised_target(setup.log_ref, setup.reward_table, beta).unsqueeze(1)  # (M, 1, A)
    out = []
    for objective, fn in (("reverse_kl", B.reverse_kl), ("forward_kl", B.forward_kl)):
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
