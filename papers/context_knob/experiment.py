"""The two arms of the replication (the claims they test are registered in ``claims.yaml``).

- **tiny** (from scratch, CPU): a 4-layer Llama pre-trained on a synthetic encyclopedia (facts, context
  copying, and cue-driven following or ignoring of a context), then LoRA-fine-tuned on CCS prompts with an
  explicit intent. On it: pair accuracy, rank-1 DAS at every layer, steering the fine-tuned and the
  pre-trained ("base") model with the DAS direction against two random directions (the second is the A/A
  control), and pair accuracy and subspace separation at every fine-tuning checkpoint.
- **smollm2** (pretrained SmolLM2-135M-Instruct on capitals): ``probe`` (CPU) is inference only: zero-shot
  CCS pair accuracy and a difference-of-means direction at one layer of the *non-fine-tuned* model used as a
  knob; ``finetune`` adds LoRA fine-tuning of the top blocks on a fixed training set (lower-block states
  cached, :mod:`.cached_lora`; CPU-sized at ``small``, all 30 blocks at ``full``), rank-1 DAS at a few
  candidate layers of the fine-tuned model and steering the non-fine-tuned model with that direction (the
  paper's transfer claim).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from shared.lm import tiny_llama
from shared.seeding import seed_everything
from shared.training import TrainConfig, train

from .knob import (LastTokenRunner, answer_loss, control_values, correctness, finetune_lora, interchange_accuracy,
                   mean_difference_direction, n_layers, random_direction, select_steering, separation,
                   steered_pair_correct, steering_values, train_das)
from .task import (CAPITALS, PromptSet, TinyWorld, das_source_index, encode_capital_queries, encode_capitals,
                   first_answer_tokens, pair_accuracy, same_first_token, sample_counterfactuals, sample_pretrain, Items)

LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the authors' default --LORA_MODULES


# --- shared pieces of both arms ----------------------------------------------------------------------------

@dataclass
class SteeringSpec:
    multipliers: list[float]
    seed: int  # for the random control direction


@dataclass
class DasSpec:
    steps: int
    lr: float
    max_targets: int


def split_indices(n: int, rng: np.random.Generator, fractions=(0.5, 0.25)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random train / dev / test split of ``range(n)`` (train and dev fractions; test gets the rest)."""
    perm = rng.permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    if a < 1 or b - a < 1 or n - b < 1:
        raise ValueError(f"cannot split {n} items into non-empty train/dev/test sets")
    return np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])


def das_data(model, items: Items, prompts: PromptSet, rng: np.random.Generator, max_targets: int,
             layers: list[int], batch_size: int, device: str, filter_correct: bool = True,
             runner: "LastTokenRunner | None" = None):
    """Targets, sources and labels for DAS on ``prompts`` (both intents of ``items``): targets are prompts
    whose item the model answers right under both intents (the authors' ``filter_confident_samples``), at
    most ``max_targets``; each gets a source by the authors' pairing rule, and one without a valid source is
    dropped. Returns (target runner, target prompts, source states (N, len(layers), d), labels (N,)) or None
    if fewer than 4 targets remain.
    ``runner``: an existing runner of ``model`` on ``prompts`` (saves a forward pass over the prefixes)."""
    runner = runner if runner is not None else LastTokenRunner(model, prompts, batch_size, device)
    states = runner.states(layers)
    correct = correctness(runner.predictions(), prompts)
    item, intent = prompts.item.numpy(), prompts.intent.numpy()
    if filter_correct:
        both = {i for i in np.unique(item) if correct[item == i].all()}
        eligible = np.flatnonzero(np.isin(item, sorted(both)))  # prompt indices
    else:
        eligible = np.arange(len(item))
    if eligible.size < 4:
        return None
    src = das_source_index(items, item[eligible], intent[eligible], rng)  # index into eligible; -1: none
    if np.count_nonzero(src >= 0) < 4:
        return None
    targets, source = eligible[src >= 0], eligible[src[src >= 0]]  # prompt indices
    if targets.size > max_targets:
        pick = np.sort(rng.choice(targets.size, size=max_targets, replace=False))
        targets, source = targets[pick], source[pick]
    target_prompts = _take(prompts, targets)
    return (LastTokenRunner(model, target_prompts, batch_size, device), target_prompts,
            states[torch.from_numpy(source)], target_prompts.flipped_target())


def _take(prompts: PromptSet, idx) -> PromptSet:
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
    return PromptSet(prompts.ids[idx], prompts.mask[idx], prompts.ctx_token[idx], prompts.prior_token[idx],
                     prompts.intent[idx], prompts.item[idx])


def orient(u: torch.Tensor, coords: torch.Tensor, intent: torch.Tensor) -> torch.Tensor:
    """Flip ``u`` so that use-context prompts have the larger mean coordinate."""
    return -u if float(steering_values(coords, intent).half) < 0 else u


def steering_rows(arm: str, model_name: str, runners: dict, prompts: dict, layer: int, u: torch.Tensor,
                  values, control_u: torch.Tensor, control_vals, multipliers: list[float], seed: int,
                  control_b: tuple[torch.Tensor, object] | None = None) -> list[dict]:
    """Steered pair accuracy on the test prompts for the direction and its random control, each with its
    multiplier chosen on the dev prompts; ``control_b`` (a second random direction and its values) adds the
    ``random_b`` row of the A/A control."""
    rows = []
    arms = [("knob", u, values), ("random", control_u, control_vals)]
    if control_b is not None:
        arms.append(("random_b", *control_b))
    for direction, vec, vals in arms:
        _, k, dev_acc = select_steering(runners["dev"], prompts["dev"], [(layer, vec, vals)], multipliers)
        both, ok_ctx, ok_prior = steered_pair_correct(runners["test"], prompts["test"], layer, vec, vals, k)
        rows.append({"arm": arm, "model": model_name, "direction": direction, "seed": seed, "layer": layer,
                     "multiplier": k, "dev_pair_accuracy": dev_acc, "pair_accuracy": float(both.mean()),
                     "context_accuracy": float(ok_ctx.mean()), "prior_accuracy": float(ok_prior.mean()),
                     "n_items": int(len(both))})
    return rows


def steering_curve(arm: str, model_name: str, runner: LastTokenRunner, prompts: PromptSet, layer: int,
                   u: torch.Tensor, values, direction: str, multipliers: list[float], seed: int) -> list[dict]:
    """P(top token = context answer) and P(top = prior answer) as the steering value sweeps from the prior
    side to the context side (value = mid + s * half, s in -max..max)."""
    from .knob import steer_predictions

    rows = []
    top = max(multipliers)
    for s in np.linspace(-top, top, 9):
        pred = steer_predictions(runner, layer, u, values.mid + float(s) * values.half)
        rows.append({"arm": arm, "model": model_name, "direction": direction, "seed": seed, "scale": float(s),
                     "context_answer_rate": float((pred == prompts.ctx_token).float().mean()),
                     "prior_answer_rate": float((pred == prompts.prior_token).float().mean())})
    return rows


# --- the tiny arm ------------------------------------------------------------------------------------------

@dataclass
class TinySpec:
    n_entities: int
    n_novel: int
    n_values: int
    d_model: int
    n_layers: int
    n_heads: int
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float
    ft_steps: int
    ft_pairs: int
    ft_lr: float
    lora_r: int
    lora_alpha: float
    ft_checkpoints: int
    items_per_entity: int
    das: DasSpec
    multipliers: list[float]
    batch_size: int = 256


def pretrain_tiny(world: TinyWorld, spec: TinySpec, seed: int, device: str, progress: bool):
    """The 'base' model: a tiny Llama trained on the pre-training mixture (no intent instructions)."""
    seed_everything(seed)
    model = tiny_llama(world.vocab_size, 16, d_model=spec.d_model, n_layers=spec.n_layers, n_heads=spec.n_heads,
                       pad_token_id=0)
    rng = np.random.default_rng(10_000 + seed)

    def batch_fn(step):
        seq, target, _ = sample_pretrain(world, spec.pretrain_batch, rng)
        ids = torch.from_numpy(seq).to(device)
        return ids, torch.ones_like(ids), torch.from_numpy(target).to(device)

    cfg = TrainConfig(steps=spec.pretrain_steps, lr=spec.pretrain_lr, warmup_steps=min(50, spec.pretrain_steps // 10),
                      log_every=max(1, spec.pretrain_steps // 20), desc=f"pre-train s{seed}", progress=progress)
    history = train(model, cfg, batch_fn, answer_loss, device)
    return model.eval(), history


def pretrain_accuracy(model, world: TinyWorld, n: int, seed: int, device: str) -> dict[str, float]:
    """Accuracy of the pre-trained model on each part of the pre-training mixture (fresh samples)."""
    from .knob import last_token_logits
    from .task import PRETRAIN_MIXTURE

    seq, target, kind = sample_pretrain(world, n, np.random.default_rng(20_000 + seed))
    ids = torch.from_numpy(seq).to(device)
    with torch.no_grad():
        pred = last_token_logits(model, ids, torch.ones_like(ids)).argmax(-1).cpu().numpy()
    return {name: float((pred[kind == k] == target[kind == k]).mean()) for k, name in enumerate(PRETRAIN_MIXTURE)}


def run_tiny_seed(spec: TinySpec, seed: int, device: str, progress: bool = False) -> dict:
    """One seed of the tiny arm; returns tables (lists of dicts) for the notebook."""
    world = TinyWorld.make(spec.n_entities, spec.n_novel, spec.n_values, seed)
    rng = np.random.default_rng(seed)
    train_e, dev_e, test_e = split_indices(spec.n_entities, rng)
    base, pre_hist = pretrain_tiny(world, spec, seed, device, progress)
    layers = list(range(spec.n_layers))
    bs = spec.batch_size

    # held-out evaluation sets: prompts with intents (pair accuracy, DAS) and without (steering)
    items = {"dev": world.items(dev_e, spec.items_per_entity, rng), "test": world.items(test_e, spec.items_per_entity, rng)}
    with_intent = {s: world.encode(it) for s, it in items.items()}
    no_intent = {s: world.encode(it, with_intent=False) for s, it in items.items()}

    # fine-tuning on CCS prompts of the training entities, with checkpoints evaluated on the test set
    ft_rng = np.random.default_rng(30_000 + seed)

    def ft_batch(step):
        ent = ft_rng.choice(train_e, size=spec.ft_pairs)
        prior = world.facts[ent]
        ctx = (prior + ft_rng.integers(1, spec.n_values, size=len(ent))) % spec.n_values
        p = world.encode(Items(ent, prior, ctx), rng=ft_rng)
        return p.ids.to(device), p.mask.to(device), p.target().to(device)

    checkpoints = []  # (step, pair accuracy on test, test states (N, layers, d))

    def snapshot(model, step):
        runner = LastTokenRunner(model, with_intent["test"], bs, device)
        acc = pair_accuracy(correctness(runner.predictions(), with_intent["test"]),
                            with_intent["test"].intent.numpy(), with_intent["test"].item.numpy())
        checkpoints.append((step, acc, runner.states(layers)))
        return acc

    snapshot(base, 0)
    every = max(1, spec.ft_steps // spec.ft_checkpoints)
    counter = {"step": 0}

    def eval_fn(model):
        counter["step"] += every
        return {"test_pair_accuracy": snapshot(model, min(counter["step"], spec.ft_steps))}

    seed_everything(seed)
    ft, ft_hist = finetune_lora(copy.deepcopy(base), ft_batch, spec.ft_steps, spec.ft_lr, spec.lora_r, spec.lora_alpha,
                                LORA_MODULES, device, progress=progress, eval_fn=eval_fn, eval_every=every,
                                desc=f"CCS fine-tune s{seed}")
    if checkpoints[-1][0] != spec.ft_steps:  # the last step is always evaluated by train(); keep it labelled
        checkpoints[-1] = (spec.ft_steps, checkpoints[-1][1], checkpoints[-1][2])
    ft_pair = checkpoints[-1][1]

    # DAS at every layer of the fine-tuned model (targets from training entities), IIA on dev and test
    train_items = world.items(train_e, spec.items_per_entity, rng)
    das_train = das_data(ft, train_items, world.encode(train_items), rng, spec.das.max_targets, layers, bs, device)
    das_eval = {s: das_data(ft, items[s], with_intent[s], rng, 10**9, layers, bs, device) for s in ("dev", "test")}
    das_rows, directions = [], {}
    if das_train is not None:
        t_runner, t_prompts, t_src, t_labels = das_train
        for layer in layers:
            u, _ = train_das(t_runner, layer, t_src[:, layer], t_labels, spec.das.steps, spec.das.lr,
                             seed=40_000 + seed * 100 + layer, device=device)
            directions[layer] = u
            row = {"arm": "tiny", "seed": seed, "layer": layer,
                   "train_iia": interchange_accuracy(t_runner, layer, u, t_src[:, layer], t_labels)}
            for s, d in das_eval.items():
                row[f"{s}_iia"] = (interchange_accuracy(d[0], layer, u, d[2][:, layer], d[3]) if d is not None
                                   else float("nan"))
            das_rows.append(row)
    out = {"pretrain": [{"seed": seed, **pretrain_accuracy(base, world, 4000, seed, device)}],
           "curves": [dict(r, seed=seed, phase="pre-train") for r in pre_hist.records]
           + [dict(r, seed=seed, phase="fine-tune") for r in ft_hist.records],
           "das": das_rows, "steering": [], "sweep": [], "checkpoints": [], "summary": {}}
    base_pair = checkpoints[0][1]
    out["summary"] = {"seed": seed, "ft_pair_accuracy": ft_pair, "base_pair_accuracy": base_pair}
    if not das_rows:
        return out

    das_df = pd.DataFrame(das_rows)
    best = int(das_df.sort_values(["dev_iia", "layer"], ascending=[False, True]).iloc[0]["layer"])
    train_runner = LastTokenRunner(ft, world.encode(train_items), bs, device)
    train_prompts = world.encode(train_items)
    train_states = train_runner.states([best])[:, 0]
    u = orient(directions[best], train_states @ directions[best], train_prompts.intent)
    values = steering_values(train_states @ u, train_prompts.intent)
    r = random_direction(spec.d_model, 50_000 + seed)
    r_values = control_values(train_states @ r, values)
    r_b = random_direction(spec.d_model, 70_000 + seed)  # the A/A control's second random direction
    r_b_values = control_values(train_states @ r_b, values)
    dom = mean_difference_direction(train_states, train_prompts.intent)

    for name, model in (("fine-tuned", ft), ("base", base)):
        runners = {s: LastTokenRunner(model, no_intent[s], bs, device) for s in ("dev", "test")}
        out["steering"] += steering_rows("tiny", name, runners, no_intent, best, u, values, r, r_values,
                                         spec.multipliers, seed, control_b=(r_b, r_b_values))
        out["sweep"] += steering_curve("tiny", name, runners["test"], no_intent["test"], best, u, values, "knob",
                                       spec.multipliers, seed)
        out["sweep"] += steering_curve("tiny", name, runners["test"], no_intent["test"], best, r, r_values, "random",
                                       spec.multipliers, seed)
        if name == "fine-tuned":
            dom_values = steering_values(train_states @ dom, train_prompts.intent)
            rows = steering_rows("tiny", name, runners, no_intent, best, dom, dom_values, r, r_values,
                                 spec.multipliers, seed)
            out["steering"].append(dict(rows[0], direction="difference of means"))

    # the DAS claim's control: a random unit direction interchanged at the chosen layer on the test targets
    test_das = das_eval["test"]
    test_iia_random = (interchange_accuracy(test_das[0], best, random_direction(spec.d_model, 80_000 + seed),
                                            test_das[2][:, best], test_das[3]) if test_das is not None else float("nan"))

    intent = with_intent["test"].intent
    for step, acc, states in checkpoints:
        out["checkpoints"].append({"seed": seed, "ft_step": step, "pair_accuracy": acc,
                                   "separation": separation(states[:, best] @ u, intent)})
    out["summary"].update({"best_layer": best, "test_iia": float(das_df.set_index("layer").loc[best, "test_iia"]),
                           "test_iia_random": test_iia_random,
                           "dev_iia": float(das_df.set_index("layer").loc[best, "dev_iia"]),
                           "das_dom_cosine": float(torch.dot(u, dom)), "das_targets": len(das_train[1]),
                           "steer_context_value": values.context_value(1.0), "steer_prior_value": values.prior_value(1.0)})
    return out


TINY_TABLES = ("pretrain", "curves", "das", "steering", "sweep", "checkpoints", "summary")


def run_tiny_all(spec: TinySpec, seeds: list[int], device: str, workers: int = 1, progress: bool = False) -> dict:
    """Every seed of the tiny arm, concatenated into one list of rows per table (``summary``: one row per
    seed). With ``workers > 1`` the seeds run in parallel single-threaded processes
    (``shared.parallel.run_jobs``); each seed seeds itself, so the result does not depend on ``workers``."""
    from shared.parallel import run_jobs

    results = run_jobs(run_tiny_seed, [(spec, seed, device, progress and workers <= 1) for seed in seeds],
                       min(workers, len(seeds)))
    tables = {k: [] for k in TINY_TABLES}
    for res in results:
        for k in TINY_TABLES:
            tables[k] += [res[k]] if k == "summary" else res[k]
    return tables


# --- the SmolLM2 arm ---------------------------------------------------------------------------------------

@dataclass
class LMSpec:
    mode: str  # "probe" | "finetune"
    n_items: int
    layers: list[int]
    multipliers: list[float]
    batch_size: int
    ft_steps: int = 0
    ft_batch: int = 16  # cached training prompts per LoRA step
    ft_contexts: int = 2  # counterfactual contexts per training item in the fixed training set
    n_top: int = 4  # LoRA on the last n_top blocks (lower blocks frozen, their outputs cached)
    ft_lr: float = 2e-4
    lora_r: int = 64
    lora_alpha: float = 16
    das_layers: list[int] = field(default_factory=lambda: [20, 27, 28])  # DAS candidate layers
    das: DasSpec = field(default_factory=lambda: DasSpec(steps=100, lr=1e-2, max_targets=128))


def known_capitals(model, tokenizer, batch_size: int, device: str, n_candidates: int = len(CAPITALS)) -> np.ndarray:
    """Indices (among the first ``n_candidates`` countries) whose capital is the model's top next token after
    the context-free query (the paper keeps only facts the model knows)."""
    from .knob import last_token_logits

    countries = list(range(min(n_candidates, len(CAPITALS))))
    ids, mask = encode_capital_queries(tokenizer, countries)
    answers = first_answer_tokens(tokenizer, [CAPITALS[c][1] for c in countries])
    pred = []
    with torch.no_grad():
        for s in range(0, len(countries), batch_size):
            m = mask[s:s + batch_size]
            w = int(m.sum(-1).max())
            pred.append(last_token_logits(model, ids[s:s + batch_size, -w:].to(device), m[:, -w:].to(device)).argmax(-1).cpu())
    return np.flatnonzero(torch.cat(pred).numpy() == answers)


def capital_items(known: np.ndarray, n_items: int, rng: np.random.Generator, forbidden: np.ndarray) -> Items:
    subj = np.sort(rng.choice(known, size=min(n_items, len(known)), replace=False))
    ctx = sample_counterfactuals(subj, len(CAPITALS), rng, forbidden)
    return Items(subj, subj.copy(), ctx)


def run_smollm2_seed(model, tokenizer, known: np.ndarray, spec: LMSpec, seed: int, device: str,
                     progress: bool = False) -> dict:
    """One seed of the SmolLM2 arm (a seed draws the items, their counterfactual contexts and the split)."""
    rng = np.random.default_rng(seed)
    items = capital_items(known, spec.n_items, rng, same_first_token(tokenizer))
    tr, dv, te = split_indices(len(items), rng)
    split = {"train": items.take(tr), "dev": items.take(dv), "test": items.take(te)}
    bs = spec.batch_size
    with_intent = {s: encode_capitals(tokenizer, it) for s, it in split.items()}
    no_intent = {s: encode_capitals(tokenizer, split[s], with_intent=False) for s in ("dev", "test")}

    # the non-fine-tuned instruct model: zero-shot pair accuracy (training items) and the states for the direction
    train_runner = LastTokenRunner(model, with_intent["train"], bs, device)
    pred = train_runner.predictions()
    p = with_intent["train"]
    zero_shot = pair_accuracy(correctness(pred, p), p.intent.numpy(), p.item.numpy())
    states = train_runner.states(spec.layers)  # (N, layers, d)
    runners = {s: LastTokenRunner(model, no_intent[s], bs, device) for s in ("dev", "test")}
    base_pred = runners["test"].predictions()
    out = {"summary": {"seed": seed, "zero_shot_pair_accuracy": zero_shot, "n_items": len(items),
                       "unsteered_context_rate": float((base_pred == no_intent["test"].ctx_token).float().mean()),
                       "unsteered_prior_rate": float((base_pred == no_intent["test"].prior_token).float().mean())},
           "steering": [], "sweep": [], "das": [], "layer_scan": []}

    candidates = []
    for j, layer in enumerate(spec.layers):
        u = mean_difference_direction(states[:, j], p.intent)
        candidates.append((layer, u, steering_values(states[:, j] @ u, p.intent)))
    for layer, u, vals in candidates:  # dev steered pair accuracy of every layer (best multiplier): the layer scan
        _, k, acc = select_steering(runners["dev"], no_intent["dev"], [(layer, u, vals)], spec.multipliers)
        out["layer_scan"].append({"arm": "smollm2", "seed": seed, "layer": layer, "multiplier": k, "dev_pair_accuracy": acc})
    scan = pd.DataFrame(out["layer_scan"])
    best_j = int(scan.sort_values(["dev_pair_accuracy", "layer"], ascending=[False, True]).index[0])
    layer, u, vals = candidates[best_j]
    j = spec.layers.index(layer)
    r = random_direction(states.shape[-1], 50_000 + seed)
    r_vals = control_values(states[:, j] @ r, vals)
    out["steering"] += steering_rows("smollm2", "instruct", runners, no_intent, layer, u, vals, r, r_vals,
                                     spec.multipliers, seed)
    out["sweep"] += steering_curve("smollm2", "instruct", runners["test"], no_intent["test"], layer, u, vals, "knob",
                                   spec.multipliers, seed)
    out["sweep"] += steering_curve("smollm2", "instruct", runners["test"], no_intent["test"], layer, r, r_vals, "random",
                                   spec.multipliers, seed)
    out["summary"]["dom_layer"] = layer

    if spec.mode == "finetune":
        out.update(_smollm2_finetune(model, tokenizer, split, with_intent, no_intent, runners, spec, seed, device,
                                     progress, rng))
        out["summary"].update(out.pop("ft_summary"))
    return out


def fixed_training_items(subjects: np.ndarray, n_contexts: int, n_answers: int, rng: np.random.Generator,
                         forbidden: np.ndarray | None = None) -> Items:
    """The fixed CCS training set of one seed: every training subject ``n_contexts`` times, each with a
    counterfactual context drawn from ``rng`` (encoded with both intents, it gives 2 x n_contexts prompts
    per subject). Fixed so that the lower-block states of its prompts can be cached."""
    subj = np.repeat(np.asarray(subjects, dtype=np.int64), n_contexts)
    return Items(subj, subj.copy(), sample_counterfactuals(subj, n_answers, rng, forbidden))


def _smollm2_finetune(model, tokenizer, split, with_intent, no_intent, base_runners, spec: LMSpec, seed: int,
                      device: str, progress: bool, rng: np.random.Generator) -> dict:
    """LoRA fine-tuning on CCS capitals (the last ``spec.n_top`` blocks, on a fixed training set whose
    lower-block states are cached: :mod:`.cached_lora`), rank-1 DAS at each of ``spec.das_layers`` of the
    fine-tuned model (layer chosen on dev IIA), and steering the non-fine-tuned model with the direction
    (the paper's transfer experiment)."""
    from .cached_lora import cache_prompts, train_top_lora_answers

    ft_rng = np.random.default_rng(30_000 + seed)
    train_set = encode_capitals(tokenizer, fixed_training_items(split["train"].subject, spec.ft_contexts,
                                                                len(CAPITALS), ft_rng, same_first_token(tokenizer)))
    ft = copy.deepcopy(model).float()
    cached = cache_prompts(ft, train_set.ids, train_set.mask, train_set.target(), spec.n_top, spec.batch_size, device)
    seed_everything(seed)
    hist = train_top_lora_answers(ft, cached, spec.n_top, spec.lora_r, spec.lora_alpha, spec.ft_lr, spec.ft_steps,
                                  spec.ft_batch, 35_000 + seed, device, LORA_MODULES, progress=progress,
                                  desc=f"SmolLM2 top-{spec.n_top} LoRA s{seed}")
    del cached
    ft = ft.to(next(model.parameters()).dtype)

    ft_runner = {s: LastTokenRunner(ft, with_intent[s], spec.batch_size, device) for s in ("train", "dev", "test")}

    def pair_acc(s):
        p = with_intent[s]
        return pair_accuracy(correctness(ft_runner[s].predictions(), p), p.intent.numpy(), p.item.numpy())

    result = {"ft_summary": {"ft_pair_accuracy": pair_acc("test"), "ft_dev_pair_accuracy": pair_acc("dev"),
                             "ft_train_prompts": len(train_set),
                             "ft_final_loss": float(hist.records[-1]["loss"]) if hist.records else float("nan")},
              "curves_lm": [dict(r, seed=seed) for r in hist.records]}
    das_train = das_data(ft, split["train"], with_intent["train"], rng, spec.das.max_targets, spec.das_layers,
                         spec.batch_size, device, runner=ft_runner["train"])
    das_dev = das_data(ft, split["dev"], with_intent["dev"], rng, 10**9, spec.das_layers, spec.batch_size, device,
                       runner=ft_runner["dev"])
    if das_train is None or das_dev is None:
        return result
    t_runner, t_prompts, t_src, t_labels = das_train
    das_rows, dirs = [], {}
    for j, layer in enumerate(spec.das_layers):
        u, _ = train_das(t_runner, layer, t_src[:, j], t_labels, spec.das.steps, spec.das.lr,
                         seed=40_000 + seed * 100 + layer, device=device, progress=progress)
        dirs[layer] = u
        das_rows.append({"arm": "smollm2", "seed": seed, "layer": layer, "tuned": layer >= n_layers(model) - spec.n_top,
                         "train_iia": interchange_accuracy(t_runner, layer, u, t_src[:, j], t_labels),
                         "dev_iia": interchange_accuracy(das_dev[0], layer, u, das_dev[2][:, j], das_dev[3])})
    best = int(pd.DataFrame(das_rows).sort_values(["dev_iia", "layer"], ascending=[False, True]).iloc[0]["layer"])
    states = ft_runner["train"].states([best])[:, 0]
    intent = with_intent["train"].intent
    u = orient(dirs[best], states @ dirs[best], intent)
    vals = steering_values(states @ u, intent)
    r = random_direction(states.shape[-1], 60_000 + seed)
    r_vals = control_values(states @ r, vals)
    r_b = random_direction(states.shape[-1], 70_000 + seed)
    steering = steering_rows("smollm2", "instruct (DAS from fine-tuned)", base_runners, no_intent, best, u, vals, r,
                             r_vals, spec.multipliers, seed, control_b=(r_b, control_values(states @ r_b, vals)))
    ft_runners = {s: LastTokenRunner(ft, no_intent[s], spec.batch_size, device) for s in ("dev", "test")}
    steering += steering_rows("smollm2", "fine-tuned", ft_runners, no_intent, best, u, vals, r, r_vals,
                              spec.multipliers, seed)
    result["ft_summary"].update({"das_layer": best, "das_targets": len(t_prompts),
                                 "das_dev_iia": float(pd.DataFrame(das_rows).set_index("layer").loc[best, "dev_iia"])})
    return {**result, "das": das_rows, "steering_ft": steering}
