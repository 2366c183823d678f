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
  text produces under an alternative semantics (``karel.SEMANTICS``), give probe_alt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from shared.lm import causal_lm_loss, greedy_generate, num_parameters, tiny_gpt2, tiny_llama
from shared.metrics import Claim
from shared.parallel import run_jobs
from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, train

from .karel import TURN_LEFT, TURN_RIGHT, SpecSet, Vocab, execute, pad_programs, sample_specs

# --- pre-registered claims (written before the first `small` run; see README.md) -------------------------

CLAIMS = {
    "generation": dict(
        statement="An LM trained only by next-token prediction on specs + programs learns to generate "
                  "programs that satisfy held-out specifications (Sec. 2.2 / Fig. 2).",
        criterion="Final-checkpoint generative accuracy (greedy program satisfies all shown examples of an "
                  "unseen spec), mean over seeds >= 0.5: reproduced. Below: inconclusive (a small model "
                  "that has not learned in a CPU budget does not refute the claim).",
        paper_value="generative accuracy rises steadily over training to a high level (Fig. 2; exact value "
                    "not retrieved for this replication)",
    ),
    "semantic_emergence": dict(
        statement="Semantic content - probe accuracy for the current (unobserved) robot state on the LM's "
                  "hidden states - increases over training (Sec. 3, Fig. 2).",
        criterion="Per seed, semantic content (mean of facing-direction and position probe accuracy, "
                  "original semantics, offset 0) at the last minus the first checkpoint; reproduced if the "
                  "95% t interval over seeds lies above 0, not_reproduced if it lies below 0 or contains 0 "
                  "with a mean <= 0, otherwise inconclusive.",
        paper_value="semantic content rises from near a baseline level early in training to well above it "
                    "(Fig. 2; exact values not retrieved)",
    ),
    "correlation": dict(
        statement="Across training checkpoints semantic content is strongly and significantly correlated "
                  "with generative accuracy (Sec. 3.2; v1 abstract: 'a strong, statistically significant "
                  "correlation').",
        criterion="Per seed, Spearman rho over checkpoints between semantic content (original, offset 0) "
                  "and generative accuracy. Reproduced if the mean rho over seeds >= 0.7 and its 95% t "
                  "interval lies above 0; not_reproduced if the interval's upper end < 0.7; otherwise "
                  "inconclusive. Inconclusive as well if generative accuracy varies by < 0.05 over "
                  "checkpoints in any seed (nothing to correlate with).",
        paper_value="strong, statistically significant correlation (exact coefficient not retrieved)",
    ),
    "intervention": dict(
        statement="Probes trained on the same hidden states to read the state under an alternative semantics "
                  "(same program text, meanings swapped: turn_left<->turn_right, put<->pick, the authors' "
                  "'opposite1') are less accurate than probes for the original semantics, so the semantics "
                  "is represented by the LM rather than learned by the probe (Sec. 4).",
        criterion="Final checkpoint, per seed: semantic content (offset 0) original minus opposite. "
                  "Reproduced if the 95% t interval over seeds lies above 0; not_reproduced if its upper end "
                  "<= 0; otherwise inconclusive.",
        paper_value="probe_alt markedly below probe_orig at the end of training (Sec. 4; exact values not "
                    "retrieved)",
    ),
    "future_states": dict(
        statement="The LM's hidden states also encode future program states (one and two tokens ahead), "
                  "with semantic content that increases over training (Sec. 3.3).",
        criterion="For offsets 1 and 2 separately: per seed, semantic content (original) at the last minus "
                  "the first checkpoint. Reproduced if both 95% t intervals lie above 0; not_reproduced if "
                  "either lies below 0; otherwise inconclusive. (Majority-class baselines are reported "
                  "alongside.)",
        paper_value="future-state semantic content rises over training, below that of the current state "
                    "(Sec. 3.3; exact values not retrieved)",
    ),
    "shorter_programs": dict(
        statement="Correct programs generated by the LM are on average shorter than the reference programs "
                  "of the same specs (v1 Sec. 5: outputs differ from the training distribution in a "
                  "semantically meaningful way).",
        criterion="Final checkpoint, per seed: mean over correctly solved test specs of (generated length - "
                  "reference length). Reproduced if the 95% t interval over seeds lies below 0; "
                  "not_reproduced if it lies above 0; otherwise inconclusive.",
        paper_value="correct generated programs shorter on average than the references (exact lengths "
                    "not retrieved)",
    ),
}


def make_claims() -> list[Claim]:
    return [Claim(id=cid, **spec) for cid, spec in CLAIMS.items()]


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


def probe_accuracies(pred: np.ndarray, Y: np.ndarray, heads: list[tuple[str, int, str]]) -> dict[tuple[str, str], float]:
    """Accuracy per (semantics, target) from per-head predictions: direction, and position (x and y both
    right), averaged over the shown examples. ``heads[h] = (semantics, example, coordinate)``."""
    right = pred == Y
    out: dict[tuple[str, str], float] = {}
    for sem in dict.fromkeys(h[0] for h in heads):
        examples = sorted({h[1] for h in heads if h[0] == sem})
        col = {(h[1], h[2]): i for i, h in enumerate(heads) if h[0] == sem}
        direction = np.stack([right[:, col[(e, "direction")]] for e in examples], 1)
        position = np.stack([right[:, col[(e, "x")]] & right[:, col[(e, "y")]] for e in examples], 1)
        out[(sem, "direction")] = float(direction.mean()) if direction.size else float("nan")
        out[(sem, "position")] = float(position.mean()) if position.size else float("nan")
    return out


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
                        device: str) -> tuple[dict, list[dict]]:
    """Generative accuracy and probe accuracies of one checkpoint.

    Returns (generation summary, probe rows ``{semantics, offset, target, accuracy, majority, n_train,
    n_test}``)."""
    gen = {}
    progs = {}
    for name, specs, prompts in (("probe", sets.probe, sets.probe_prompts), ("test", sets.test, sets.test_prompts)):
        progs[name] = generate_programs(model, vocab, prompts, task.max_length, device, run.eval_batch_size)
    # generative accuracy on the test specs (original semantics, all examples)
    test = sets.test
    parsed = pad_programs(progs["test"])
    final, _ = execute(parsed, test.inputs)
    ok = final.equal(test.outputs)  # (B, E)
    spec_ok = ok[:, :test.n_shown].all(1)
    gen_len = np.array([len(p) for p in progs["test"]])
    gen["gen_acc"] = float(spec_ok.mean())
    gen["gen_acc_all"] = float(ok.all(1).mean())
    gen["gen_length"] = float(gen_len.mean())
    # programs with a turn: the only tokens whose meaning the opposite semantics changes for the pose
    gen["turn_fraction"] = float(np.mean([any(a in (TURN_LEFT, TURN_RIGHT) for a in p) for p in progs["test"]]))
    gen["n_correct"] = int(spec_ok.sum())
    gen["length_diff_correct"] = (float((gen_len[spec_ok] - test.lengths[spec_ok]).mean())
                                  if spec_ok.any() else float("nan"))

    # probes: features of the generated programs, labels from running them under each semantics
    data = {}
    for name, specs, prompts in (("probe", sets.probe, sets.probe_prompts), ("test", sets.test, sets.test_prompts)):
        X, tasks, toks = program_features(model, vocab, prompts, progs[name], device, run.eval_batch_size)
        lengths = np.array([len(p) for p in progs[name]])
        padded = pad_programs(progs[name], task.max_length + 1)
        labels = {s: state_labels(specs, padded, s) for s in run.semantics}
        data[name] = (X, tasks, toks, lengths, labels)

    heads = [(s, e, c) for s in run.semantics for e in range(task.n_shown) for c in ("direction", "x", "y")]
    n_classes = [4 if c == "direction" else task.n for _, _, c in heads]
    rows = []
    for offset in run.offsets:
        XY = {}
        for name in ("probe", "test"):
            X, tasks, toks, lengths, labels = data[name]
            keep, t_idx = probe_rows(tasks, toks, lengths, offset)
            b = tasks[keep]
            Y = np.stack([labels[s][c][b, e, t_idx] for s, e, c in heads], 1) if keep.any() else \
                np.zeros((0, len(heads)), int)
            XY[name] = (X[keep], Y.astype(np.int64))
        (Xtr, Ytr), (Xte, Yte) = XY["probe"], XY["test"]
        if len(Xtr) < 10 or len(Xte) < 1:  # too few generated tokens to fit or score a probe
            for s in run.semantics:
                for target in TARGETS:
                    rows.append({"semantics": s, "offset": offset, "target": target, "accuracy": float("nan"),
                                 "majority": float("nan"), "n_train": len(Xtr), "n_test": len(Xte)})
            continue
        pred, maj = linear_probe(Xtr, Ytr, Xte, Yte, n_classes, run.probe_alpha)
        acc, base = probe_accuracies(pred, Yte, heads), probe_accuracies(maj, Yte, heads)
        for (s, target), a in acc.items():
            rows.append({"semantics": s, "offset": offset, "target": target, "accuracy": a,
                         "majority": base[(s, target)], "n_train": len(Xtr), "n_test": len(Xte)})
    return gen, rows


# --- one seed --------------------------------------------------------------------------------------------

def train_and_probe(task: TaskConfig, model_cfg: ModelConfig, run: RunConfig, seed: int, device: str,
                    progress: bool = True):
    """Train one LM (seed ``seed``), evaluating ``run.n_checkpoints`` evenly spaced checkpoints.

    Returns (generation table, probe table, training-curve table, number of parameters)."""
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
        g, p = evaluate_checkpoint(m, vocab, sets, task, run, device)
        ckpt_step = current[0]
        gen_rows.append({"seed": seed, "step": ckpt_step, **g})
        probe_rows_.extend({"seed": seed, "step": ckpt_step, **r} for r in p)
        sc = np.mean([r["accuracy"] for r in p if r["semantics"] == "original" and r["offset"] == 0])
        if progress:
            alt = np.mean([r["accuracy"] for r in p if r["semantics"] == "opposite" and r["offset"] == 0])
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
    return pd.DataFrame(gen_rows), pd.DataFrame(probe_rows_), curve, num_parameters(model)


def run_all(task: TaskConfig, model_cfg: ModelConfig, run: RunConfig, seeds: list[int], device: str,
            progress: bool = True, workers: int = 1):
    """Every seed; returns concatenated (generation, probes, curves) tables and the parameter count.

    With ``workers > 1`` the seeds train in parallel single-threaded processes (shared.parallel.run_jobs):
    the seeds are independent and a model this small uses one core best. Results do not depend on
    ``workers``."""
    import pandas as pd

    jobs = [(task, model_cfg, run, seed, device, progress and workers <= 1) for seed in seeds]
    results = run_jobs(train_and_probe, jobs, min(workers, len(seeds)))
    gens, probes, curves, n_params = zip(*results)
    return pd.concat(gens, ignore_index=True), pd.concat(probes, ignore_index=True), \
        pd.concat(curves, ignore_index=True), n_params[0]
