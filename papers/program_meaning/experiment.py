"""Training the LM on Karel specs + programs, and what is measured at each checkpoint (Jin & Rinard 2024).

- **LM** (Sec. 2.2): a decoder trained from initialisation by next-token prediction on ``spec + program``
  sequences (``shared.lm.tiny_llama``: rotary positions like the paper's CodeGen architecture), by default
  with the loss on every token as in the authors' ``lm/train.py``; ``shared.training.train`` is the loop
  and its ``eval_fn`` hook evaluates a checkpoint every ``steps / n_checkpoints`` steps.
- **Generative accuracy** (Sec. 2.2): greedy decoding of a program from each held-out spec; correct when
  it maps every shown input to its output (``gen_acc``; ``gen_acc_all`` also needs the held-out examples).
- **Semantic content** (Sec. 3): the LM's own generated program is fed back with
  ``output_hidden_states=True``; the feature of program token ``i`` is the hidden state, averaged over all
  layers (the authors' default), at the position that *generated* token ``i``. It is aligned with the
  robot state after executing tokens ``1..i`` (offset 0, the "current" state in the paper's convention),
  or ``1..i+k`` (offset k > 0, future states), on each shown input. Linear probes (scikit-learn ridge
  least-squares classifiers, one output block per target) read the facing direction and the x and y
  coordinates; position counts as right when x and y both are. Probes are fit on the generations for one
  set of specs and scored on those for the held-out test specs.
- **Semantic intervention** (Sec. 4): the same hidden states, labelled with the states the same program
  text produces under an alternative semantics (``karel.SEMANTICS``), give probe_alt. Its effect is scored
  only on the states where the two semantics disagree (``accuracy_differing``): elsewhere the labels are
  the same and the gap is 0 by construction.
- **Controls** (the registry, ``claims.yaml``): at the final checkpoint the same probes are also fit on the
  hidden states of the LM *as initialised* (``features = "init"``, the same weights as step 0) and of a
  second initialisation (``"init_other"``), all on the trained LM's generated programs; and the best
  spec-blind program (one fixed program for every spec, :func:`best_constant_program`) is scored like the LM.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch

from shared.lm import causal_lm_loss, greedy_generate, num_parameters, tiny_gpt2, tiny_llama
from shared.parallel import run_jobs
from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, train

from .karel import ACTIONS, TURN_LEFT, TURN_RIGHT, SpecSet, Vocab, execute, pad_programs, sample_specs

# --- configuration ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskConfig:
    n: int = 5  # grid interior size
    n_shown: int = 5  # examples in the specification
    n_held_out: int = 5  # further examples that a correct program must also satisfy (gen_acc_all)
    min_length: int = 3
    max_length: int = 8
    wall_ratio: float = 0.1
    marker_ratio: float = 0.1

    def specs(self, rng: np.random.Generator, count: int, held_out: bool = True) -> SpecSet:
        return sample_specs(rng, count, self.n, self.n_shown, self.n_held_out if held_out else 0,
                            self.min_length, self.max_length, self.wall_ratio, self.marker_ratio)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "llama"  # "llama" | "gpt2"
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4


@dataclass(frozen=True)
class RunConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    spec_loss: bool = True  # loss on spec tokens too (the paper's LM objective); False: program only
    n_train: int = 32000  # training tasks (programs with their specs)
    n_checkpoints: int = 8
    n_probe_train: int = 600  # specs whose generations train the probes
    n_test: int = 400  # held-out specs: generative accuracy and probe evaluation
    offsets: tuple[int, ...] = (0, 1, 2)
    semantics: tuple[str, ...] = ("original", "opposite", "random")
    probe_alpha: float = 1.0
    eval_batch_size: int = 256


TARGETS = ("direction", "position")


def build_lm(vocab: Vocab, max_len: int, model: ModelConfig):
    kw = dict(vocab_size=len(vocab), max_len=max_len, d_model=model.d_model, n_layers=model.n_layers,
              n_heads=model.n_heads, pad_token_id=vocab.pad, eos_token_id=vocab.end)
    if model.architecture == "llama":
        return tiny_llama(**kw)
    if model.architecture == "gpt2":
        return tiny_gpt2(**kw)
    raise ValueError(f"unknown architecture {model.architecture!r}")


# --- generation, features, labels ------------------------------------------------------------------------

def generate_programs(model, vocab: Vocab, prompts: list[list[int]], max_length: int, device: str,
                      batch_size: int) -> list[list[int]]:
    """Greedy decoding (``shared.lm.greedy_generate``) of each prompt, parsed to action ids."""
    out = greedy_generate(model, prompts, max_new_tokens=max_length + 1, pad_id=vocab.pad, eos_id=vocab.end,
                          batch_size=batch_size, device=device)
    return [vocab.parse_program(g) for g in out]


@torch.no_grad()
def program_features(model, vocab: Vocab, prompts: list[list[int]], programs: list[list[int]], device: str,
                     batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden states (mean over the embedding output and every layer) at the positions that generated each
    program token: for token ``i`` (0-based) of task ``b`` the position ``len(prompt_b) - 1 + i``.

    Returns (features (N, d), task index (N,), token index (N,)) over all program tokens."""
    feats, tasks, toks = [], [], []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        seqs = [prompts[b] + [vocab.action0 + a for a in programs[b]] for b in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), vocab.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):  # right padding: causal attention keeps real positions unaffected
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        hs = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
        mean = torch.stack(hs, 0).float().mean(0).cpu()  # (B, T, d)
        for r, b in enumerate(chunk):
            m = len(programs[b])
            if m == 0:
                continue
            pos = torch.arange(len(prompts[b]) - 1, len(prompts[b]) - 1 + m)
            feats.append(mean[r, pos].numpy())
            tasks.append(np.full(m, b))
            toks.append(np.arange(m))
    if not feats:
        return np.zeros((0, model.config.hidden_size), np.float32), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(feats), np.concatenate(tasks), np.concatenate(toks)


def state_labels(specs: SpecSet, programs: np.ndarray, semantics: str) -> dict[str, np.ndarray]:
    """Robot state on each shown input after each token of ``programs`` (B, L) under ``semantics``:
    ``{"direction", "x", "y"}``, each (B, n_shown, L + 1) (index 0 = before the program)."""
    k = specs.n_shown
    _, trace = execute(programs, specs.inputs[:, :k], semantics)
    return {"direction": trace.d, "x": trace.x, "y": trace.y}


def probe_rows(tasks: np.ndarray, toks: np.ndarray, lengths: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Which feature rows have a label at ``offset`` (token ``i + offset`` exists) and the trace index of
    that label (``i + 1 + offset``: the state after executing tokens ``0..i+offset``)."""
    keep = toks + offset < lengths[tasks]
    return keep, toks[keep] + 1 + offset


def linear_probe(X_train: np.ndarray, Y_train: np.ndarray, X_test: np.ndarray, Y_test: np.ndarray,
                 n_classes: list[int], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares linear probe (scikit-learn ``Ridge`` on standardised features, one-hot targets): one
    output block per head, the prediction is the argmax within the block.

    ``Y_*`` are (N, H) integer labels of H heads with ``n_classes[h]`` classes. Returns the predictions
    (N_test, H) of the probe and of the majority-class baseline (the most frequent training label)."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_train)
    offsets = np.concatenate([[0], np.cumsum(n_classes)])
    T = np.zeros((len(X_train), offsets[-1]))
    for h, k in enumerate(n_classes):
        T[np.arange(len(X_train)), offsets[h] + Y_train[:, h]] = 1.0
    ridge = Ridge(alpha=alpha).fit(scaler.transform(X_train), T)
    scores = ridge.predict(scaler.transform(X_test))
    pred = np.stack([scores[:, offsets[h]:offsets[h + 1]].argmax(1) for h in range(len(n_classes))], 1)
    majority = np.array([np.bincount(Y_train[:, h], minlength=k).argmax() for h, k in enumerate(n_classes)])
    return pred, np.broadcast_to(majority, (len(X_test), len(n_classes)))


def probe_accuracies(pred: np.ndarray, Y: np.ndarray, heads: list[tuple[str, int, str]],
                     differ_from: str | None = None) -> dict[tuple[str, str], float]:
    """Accuracy per (semantics, target) from per-head predictions: direction, and position (x and y both
    right), averaged over the shown examples. ``heads[h] = (semantics, example, coordinate)``.

    With ``differ_from`` (a semantics among the heads), only the states whose label under the head's
    semantics differs from the label under ``differ_from`` count (direction: the directions differ;
    position: the cells differ); NaN when there is none."""
    right = pred == Y
    col_all = {h: i for i, h in enumerate(heads)}
    out: dict[tuple[str, str], float] = {}
    for sem in dict.fromkeys(h[0] for h in heads):
        examples = sorted({h[1] for h in heads if h[0] == sem})
        col = {(h[1], h[2]): i for i, h in enumerate(heads) if h[0] == sem}
        direction = np.stack([right[:, col[(e, "direction")]] for e in examples], 1)
        position = np.stack([right[:, col[(e, "x")]] & right[:, col[(e, "y")]] for e in examples], 1)
        if differ_from is None:
            keep_d = np.ones_like(direction)
            keep_p = np.ones_like(position)
        else:
            ref = {(e, c): col_all[(differ_from, e, c)] for e in examples for c in ("direction", "x", "y")}
            keep_d = np.stack([Y[:, col[(e, "direction")]] != Y[:, ref[(e, "direction")]] for e in examples], 1)
            keep_p = np.stack([(Y[:, col[(e, "x")]] != Y[:, ref[(e, "x")]]) | (Y[:, col[(e, "y")]] != Y[:, ref[(e, "y")]])
                               for e in examples], 1)
        out[(sem, "direction")] = float(direction[keep_d].mean()) if keep_d.any() else float("nan")
        out[(sem, "position")] = float(position[keep_p].mean()) if keep_p.any() else float("nan")
        out[(sem, "n_direction")] = int(keep_d.sum())
        out[(sem, "n_position")] = int(keep_p.sum())
    return out


def best_constant_program(specs: SpecSet, max_length: int, enumerate_up_to: int = 4) -> tuple[list[int], float]:
    """The spec-blind baseline: the one program (of 0 to ``min(max_length, enumerate_up_to)`` actions: 781
    programs at 4) that satisfies the shown examples of the most specs in ``specs``; ties go to the shorter,
    then the lexicographically first program. Returns (program, its accuracy on ``specs``)."""
    top = min(max_length, enumerate_up_to)
    best, best_acc = [], -1.0
    for length in range(top + 1):
        for prog in itertools.product(range(5), repeat=length):
            padded = np.tile(np.array(prog + (-1,) * (top - length) + (-1,), dtype=np.int64), (len(specs), 1))
            final, _ = execute(padded, specs.inputs[:, :specs.n_shown])
            acc = float(final.equal(specs.outputs[:, :specs.n_shown]).all(1).mean())
            if acc > best_acc:
                best, best_acc = list(prog), acc
    return best, best_acc


def score_programs(programs: list[list[int]], specs: SpecSet) -> dict:
    """Generative accuracy of ``programs`` (one per spec) and the length difference on the solved specs."""
    parsed = pad_programs(programs)
    final, _ = execute(parsed, specs.inputs)
    ok = final.equal(specs.outputs)  # (B, E)
    spec_ok = ok[:, :specs.n_shown].all(1)
    gen_len = np.array([len(p) for p in programs])
    return {"gen_acc": float(spec_ok.mean()), "gen_acc_all": float(ok.all(1).mean()),
            "gen_length": float(gen_len.mean()),
            # programs with a turn: the only tokens whose meaning the opposite semantics changes for the pose
            "turn_fraction": float(np.mean([any(a in (TURN_LEFT, TURN_RIGHT) for a in p) for p in programs])),
            "n_correct": int(spec_ok.sum()),
            "length_diff_correct": (float((gen_len[spec_ok] - specs.lengths[spec_ok]).mean())
                                    if spec_ok.any() else float("nan"))}


# --- one checkpoint --------------------------------------------------------------------------------------

@dataclass
class EvalSets:
    probe: SpecSet
    test: SpecSet
    probe_prompts: list[list[int]]
    test_prompts: list[list[int]]


def make_eval_sets(task: TaskConfig, vocab: Vocab, run: RunConfig, seed: int) -> EvalSets:
    """Fresh specs (new worlds and programs, seed ``10_000 + seed``) for probe training and testing."""
    rng = np.random.default_rng(10_000 + seed)
    probe, test = task.specs(rng, run.n_probe_train), task.specs(rng, run.n_test)
    return EvalSets(probe, test, vocab.prompts(probe), vocab.prompts(test))


def evaluate_checkpoint(model, vocab: Vocab, sets: EvalSets, task: TaskConfig, run: RunConfig,
                        device: str, feature_models: dict | None = None) -> tuple[dict, list[dict]]:
    """Generative accuracy and probe accuracies of one checkpoint.

    The probes read the hidden states of ``model`` (``features = "trained"``) and of every model in
    ``feature_models`` (name -> model), all on the programs that ``model`` generated.
    Returns (generation summary, probe rows ``{features, semantics, offset, target, accuracy, majority,
    accuracy_differing, n_differing, n_train, n_test}``; ``accuracy_differing`` counts only the states
    where the semantics disagrees with the original one)."""
    progs = {}
    for name, specs, prompts in (("probe", sets.probe, sets.probe_prompts), ("test", sets.test, sets.test_prompts)):
        progs[name] = generate_programs(model, vocab, prompts, task.max_length, device, run.eval_batch_size)
    gen = score_programs(progs["test"], sets.test)

    labels, lengths = {}, {}
    for name, specs in (("probe", sets.probe), ("test", sets.test)):
        lengths[name] = np.array([len(p) for p in progs[name]])
        padded = pad_programs(progs[name], task.max_length + 1)
        labels[name] = {s: state_labels(specs, padded, s) for s in run.semantics}
    heads = [(s, e, c) for s in run.semantics for e in range(task.n_shown) for c in ("direction", "x", "y")]
    n_classes = [4 if c == "direction" else task.n for _, _, c in heads]
    models = {"trained": model, **(feature_models or {})}
    rows = []
    for fname, fmodel in models.items():
        data = {}
        for name, prompts in (("probe", sets.probe_prompts), ("test", sets.test_prompts)):
            data[name] = program_features(fmodel, vocab, prompts, progs[name], device, run.eval_batch_size)
        for offset in run.offsets:
            XY = {}
            for name in ("probe", "test"):
                X, tasks, toks = data[name]
                keep, t_idx = probe_rows(tasks, toks, lengths[name], offset)
                b = tasks[keep]
                Y = np.stack([labels[name][s][c][b, e, t_idx] for s, e, c in heads], 1) if keep.any() else \
                    np.zeros((0, len(heads)), int)
                XY[name] = (X[keep], Y.astype(np.int64))
            (Xtr, Ytr), (Xte, Yte) = XY["probe"], XY["test"]
            base = {"features": fname, "offset": offset, "n_train": len(Xtr), "n_test": len(Xte)}
            if len(Xtr) < 10 or len(Xte) < 1:  # too few generated tokens to fit or score a probe
                for s in run.semantics:
                    for target in TARGETS:
                        rows.append({**base, "semantics": s, "target": target, "accuracy": float("nan"),
                                     "majority": float("nan"), "accuracy_differing": float("nan"),
                                     "n_differing": 0})
                continue
            pred, maj = linear_probe(Xtr, Ytr, Xte, Yte, n_classes, run.probe_alpha)
            acc, majority = probe_accuracies(pred, Yte, heads), probe_accuracies(maj, Yte, heads)
            diff = {}
            for s in run.semantics:  # each semantics' states that differ from the original's, both probes
                if s == "original":
                    continue
                pair = [h for h in heads if h[0] in ("original", s)]
                idx = [heads.index(h) for h in pair]
                d = probe_accuracies(pred[:, idx], Yte[:, idx], pair, differ_from=s)  # original on those states
                d_alt = probe_accuracies(pred[:, idx], Yte[:, idx], pair, differ_from="original")
                for target in TARGETS:
                    diff[(s, target)] = (d_alt[(s, target)], d_alt[(s, f"n_{target}")])
                    diff[(f"original_vs_{s}", target)] = (d[("original", target)], d[("original", f"n_{target}")])
            for s in run.semantics:
                for target in TARGETS:
                    rows.append({**base, "semantics": s, "target": target, "accuracy": acc[(s, target)],
                                 "majority": majority[(s, target)],
                                 "accuracy_differing": diff.get((s, target), (float("nan"), 0))[0],
                                 "n_differing": diff.get((s, target), (float("nan"), 0))[1]})
            for (s, target), (a, n) in diff.items():
                if s.startswith("original_vs_"):
                    rows.append({**base, "semantics": s, "target": target, "accuracy": float("nan"),
                                 "majority": float("nan"), "accuracy_differing": a, "n_differing": n})
    return gen, rows


# --- one seed --------------------------------------------------------------------------------------------

def train_and_probe(task: TaskConfig, model_cfg: ModelConfig, run: RunConfig, seed: int, device: str,
                    progress: bool = True):
    """Train one LM (seed ``seed``), evaluating ``run.n_checkpoints`` evenly spaced checkpoints.

    At the last checkpoint the probes are also fit on the hidden states of this LM as initialised
    (``features = "init"``) and of another initialisation (``"init_other"``, torch seed ``seed + 500_000``),
    on the programs the trained LM generated. The spec-blind baseline (:func:`best_constant_program`,
    chosen on the probe specs) is scored on the test specs.

    Returns (generation table, probe table, training-curve table, spec-blind baseline row, number of
    parameters)."""
    import pandas as pd

    vocab = Vocab(task.n)
    rng = np.random.default_rng(seed)
    train_specs = task.specs(rng, run.n_train, held_out=False)
    ids, lengths, plen = vocab.encode_training(train_specs)
    ids, lengths, plen = torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(plen)
    sets = make_eval_sets(task, vocab, run, seed)
    max_len = max(ids.shape[1], max(len(p) for p in sets.probe_prompts + sets.test_prompts) + task.max_length + 2)

    seed_everything(seed)
    model = build_lm(vocab, max_len, model_cfg).to(device)
    init_models = {"init": copy.deepcopy(model).eval()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 500_000)
        init_models["init_other"] = build_lm(vocab, max_len, model_cfg).to(device).eval()
    blind, blind_probe_acc = best_constant_program(sets.probe, task.max_length)
    baseline = {"seed": seed, "program": " ".join(ACTIONS[a] for a in blind) or "(empty)",
                "probe_acc": blind_probe_acc, **score_programs([blind] * len(sets.test), sets.test)}
    gen = torch_generator(seed)
    order: list[torch.Tensor] = []
    current = [0]  # optimisation steps done when eval_fn runs

    def batch_fn(step: int):
        current[0] = step + 1
        start = (step * run.batch_size) % len(ids)
        if start == 0 or not order:  # a fresh permutation each epoch
            order[:] = [torch.randperm(len(ids), generator=gen)]
        idx = order[0][start:start + run.batch_size]
        width = int(lengths[idx].max())
        pos = torch.arange(width)
        mask = (pos[None, :] < lengths[idx, None]).long()
        loss_mask = mask if run.spec_loss else mask * (pos[None, :] >= plen[idx, None]).long()
        return ids[idx, :width].to(device), mask.to(device), loss_mask.to(device)

    def loss_fn(m, batch):
        return causal_lm_loss(m, batch[0], batch[1], batch[2])

    gen_rows: list[dict] = []
    probe_rows_: list[dict] = []

    def eval_fn(m) -> dict[str, float]:
        ckpt_step = current[0]
        g, p = evaluate_checkpoint(m, vocab, sets, task, run, device,
                                   init_models if ckpt_step >= run.steps else None)
        gen_rows.append({"seed": seed, "step": ckpt_step, **g})
        probe_rows_.extend({"seed": seed, "step": ckpt_step, **r} for r in p)
        p0 = [r for r in p if r["features"] == "trained" and r["offset"] == 0]
        sc = np.mean([r["accuracy"] for r in p0 if r["semantics"] == "original"])
        if progress:
            alt = np.mean([r["accuracy"] for r in p0 if r["semantics"] == "opposite"])
            print(f"  seed {seed} step {ckpt_step}: gen_acc {g['gen_acc']:.3f}, semantic content {sc:.3f} "
                  f"(opposite {alt:.3f}), mean generated length {g['gen_length']:.2f}", flush=True)
        return {"gen_acc": g["gen_acc"], "semantic_content": float(sc)}

    eval_every = max(1, run.steps // run.n_checkpoints)
    cfg = TrainConfig(steps=run.steps, lr=run.lr, warmup_steps=run.warmup_steps, weight_decay=run.weight_decay,
                      eval_every=eval_every, log_every=max(1, run.steps // 50), desc=f"seed {seed}",
                      progress=progress)
    t0 = time.perf_counter()
    history = train(model, cfg, batch_fn, loss_fn, device, eval_fn=eval_fn)
    if progress:
        print(f"seed {seed}: {num_parameters(model)} parameters, {time.perf_counter() - t0:.0f} s, final gen_acc "
              f"{gen_rows[-1]['gen_acc']:.3f}", flush=True)
    curve = history.to_frame().assign(seed=seed)
    return pd.DataFrame(gen_rows), pd.DataFrame(probe_rows_), curve, baseline, num_parameters(model)


def run_all(task: TaskConfig, model_cfg: ModelConfig, run: RunConfig, seeds: list[int], device: str,
            progress: bool = True, workers: int = 1):
    """Every seed; returns concatenated (generation, probes, curves, spec-blind baseline) tables and the
    parameter count.

    With ``workers > 1`` the seeds train in parallel single-threaded processes (shared.parallel.run_jobs):
    the seeds are independent and a model this small uses one core best. Results do not depend on
    ``workers``."""
    import pandas as pd

    jobs = [(task, model_cfg, run, seed, device, progress and workers <= 1) for seed in seeds]
    results = run_jobs(train_and_probe, jobs, min(workers, len(seeds)))
    gens, probes, curves, baselines, n_params = zip(*results)
    return pd.concat(gens, ignore_index=True), pd.concat(probes, ignore_index=True), \
        pd.concat(curves, ignore_index=True), pd.DataFrame(list(baselines)), n_params[0]
