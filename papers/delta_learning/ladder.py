"""A from-scratch language-model ladder (our small-scale stand-in for the paper's model ladders, Sec. 4-5).

One tiny ``transformers`` Llama (``shared.lm.tiny_llama``) learns multi-digit addition from scratch. Three
checkpoints of that run form the ladder: the first to reach a low exact-match accuracy is the weak teacher
(rejected responses), the first to reach a middle accuracy is the stronger teacher (chosen responses), the
first to reach a high accuracy is the *student*, which is stronger than both. On fresh prompts each teacher
answers greedily; pairs (teacher 1 > teacher 2) are never checked for correctness, like the paper's
Qwen-3B-vs-1.5B pairs, which are never judged. The student is then tuned for one epoch by

- ``dpo``: length-normalised DPO (the authors' ``dpo_norm``: mean per-token log-probabilities), reference =
  the student itself (configs/dpo/base.yaml of scottgeng00/delta_learning), learning rate and beta chosen
  on held-out selection problems;
- ``sft_chosen``: supervised fine-tuning on the chosen (teacher-1) responses, learning rate chosen the same
  way;
- at the chosen settings: ``dpo_swapped`` (pairs reversed: the paper reports that reversing the pair
  reverses the direction), ``dpo_random`` (each pair's orientation by a coin: no delta), ``dpo_rerun``
  (another data order: A/A) and ``sft_self`` (SFT on the student's own answers: no weak data);

and its exact-match accuracy on held-out evaluation problems is compared with its starting accuracy.

Token layout (fixed length, right-padded): ``[BOS] a + b =`` then the sum's n+1 digits and ``EOS``, every
number written *least significant digit first*: answer digit j then sits at a fixed offset from operand
digits j, and the carry flows left to right, which lets a two-layer causal model learn addition in a few
hundred CPU steps.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shared.lm import causal_lm_loss, greedy_generate, tiny_llama, token_logprobs
from shared.seeding import seed_everything, torch_generator
from shared.training import TrainConfig, train

PAD, BOS, EOS, PLUS, EQUALS, DIGIT0 = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = DIGIT0 + 10


# --- the task ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdditionTask:
    n_digits: int

    @property
    def prompt_len(self) -> int:
        return 2 * self.n_digits + 3  # BOS, a, +, b, =

    @property
    def answer_len(self) -> int:
        return self.n_digits + 2  # n + 1 sum digits, EOS

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.answer_len


def sample_operands(task: AdditionTask, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs of uniform ``n_digits``-digit operands (leading zeros allowed)."""
    hi = 10 ** task.n_digits
    return torch.randint(0, hi, (n,), generator=gen), torch.randint(0, hi, (n,), generator=gen)


def _digits(x: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) decimal digits of ``x``, most significant first."""
    powers = 10 ** torch.arange(k - 1, -1, -1)
    return (x[:, None] // powers) % 10


def encode_prompts(task: AdditionTask, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, prompt_len) token ids of ``[BOS] a + b =``, operands least significant digit first."""
    n = a.shape[0]
    col = lambda tok: torch.full((n, 1), tok, dtype=torch.long)  # noqa: E731
    return torch.cat([col(BOS), _digits(a, task.n_digits).flip(1) + DIGIT0, col(PLUS),
                      _digits(b, task.n_digits).flip(1) + DIGIT0, col(EQUALS)], dim=1)


def encode_answers(task: AdditionTask, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, answer_len) token ids of the sum's n+1 digits, least significant first, then EOS."""
    digits = _digits(a + b, task.n_digits + 1).flip(1) + DIGIT0
    return torch.cat([digits, torch.full((a.shape[0], 1), EOS, dtype=torch.long)], dim=1)


def pad_responses(responses: list[list[int]], width: int) -> torch.Tensor:
    """Right-pad (or cut) generated responses to ``width`` tokens with PAD."""
    out = torch.full((len(responses), width), PAD, dtype=torch.long)
    for i, r in enumerate(responses):
        r = r[:width]
        if r:
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def exact_match(responses: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """(n,) bool: the padded response equals the answer token for token (digits and EOS)."""
    return (responses == answers).all(dim=1)


@torch.no_grad()
def generate(model, prompts: torch.Tensor, task: AdditionTask, batch_size: int = 512) -> torch.Tensor:
    """Greedy answers (n, answer_len), right-padded with PAD after EOS."""
    out = greedy_generate(model, prompts.tolist(), task.answer_len, PAD, EOS, batch_size=batch_size)
    return pad_responses(out, task.answer_len)


def evaluate(model, prompts: torch.Tensor, answers: torch.Tensor, task: AdditionTask) -> float:
    """Exact-match accuracy of greedy answers."""
    return float(exact_match(generate(model, prompts, task), answers).float().mean())


# --- sequences and likelihoods -------------------------------------------------------------------------

def join(prompts: torch.Tensor, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full sequences (n, seq_len) and the mask of response tokens to predict (PAD after EOS excluded).

    Sequences are right-padded; with a causal model the trailing PADs influence no earlier position, so no
    attention mask is needed and every example has the same layout whatever batch it is in.
    """
    ids = torch.cat([prompts, responses], dim=1)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, prompts.shape[1]:] = responses != PAD
    return ids, mask


def mean_response_logprob(model, ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(n,) mean per-token log-probability of the response tokens (the ``dpo_norm`` sequence score)."""
    lp = token_logprobs(model, ids)  # (n, T-1): lp[:, t] = log p(ids[:, t+1] | ids[:, :t+1])
    m = response_mask[:, 1:].float()
    return (lp * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def dpo_norm_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                  ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO loss on length-normalised log-probabilities (authors' ``dpo_norm``):
    ``-log sigma(beta [(pi_c - ref_c) - (pi_r - ref_r)])``, averaged; also the fraction of pairs whose
    implicit reward ranks chosen above rejected."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), (margin > 0).float().mean()


# --- the ladder: one pretraining run, three checkpoints ------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4


def dpo_batch_loss(beta: float):
    """The ``shared.training.train`` loss of a DPO batch ``(ids, mask, ref_chosen, ref_rejected)`` whose
    first half of rows are the chosen responses and second half the rejected ones: :func:`dpo_norm_loss` of
    the policy's mean response log-probabilities, with the implicit-reward accuracy as a logged metric."""
    def loss_fn(m, batch):
        ids, mask, rc, rr = batch
        scores = mean_response_logprob(m, ids, mask)
        n = rc.shape[0]
        loss, reward_acc = dpo_norm_loss(scores[:n], scores[n:], rc, rr, beta)
        return loss, {"reward_accuracy": float(reward_acc)}

    return loss_fn


def build_model(task: AdditionTask, spec: ModelSpec):
    return tiny_llama(VOCAB_SIZE, max_len=task.seq_len + 2, d_model=spec.d_model, n_layers=spec.n_layers,
                      n_heads=spec.n_heads, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)


@dataclass
class Ladder:
    teacher_2: dict  # state dicts
    teacher_1: dict
    student: dict
    steps: dict  # which pretraining step each checkpoint comes from
    curve: list  # (step, validation exact match)


def select_checkpoints(curve: list[tuple[int, float]], targets: tuple[float, float, float]) -> tuple[int, int, int]:
    """Indices into ``curve`` of (teacher 2, teacher 1, student): the first checkpoint whose validation
    accuracy reaches each target, each strictly after the previous one; the student falls back to the last
    checkpoint if it never reaches its target. Raises ValueError when a teacher target is never reached."""
    names = ("weak teacher (teacher 2)", "strong teacher (teacher 1)", "student")
    chosen, start = [], 0
    for k, (target, name) in enumerate(zip(targets, names)):
        idx = next((i for i in range(start, len(curve)) if curve[i][1] >= target), None)
        if idx is None:
            if k == 2 and start < len(curve):
                idx = len(curve) - 1
            else:
                best = max(acc for _, acc in curve) if curve else float("nan")
                raise ValueError(f"pretraining never reached the {name} target {target} after the previous "
                                 f"checkpoint (best validation exact match {best:.3f}); train longer")
        chosen.append(idx)
        start = idx + 1
    return tuple(chosen)


def pretrain_ladder(task: AdditionTask, spec: ModelSpec, steps: int, batch_size: int, lr: float, eval_every: int,
                    n_val: int, targets: tuple[float, float, float], seed: int, device: str = "cpu",
                    progress: bool = False) -> Ladder:
    """Train one model on fresh random problems; snapshot it every ``eval_every`` steps together with its
    validation exact match; pick the three ladder checkpoints with :func:`select_checkpoints`.

    Training stops early at the first snapshot that reaches the student's target (after both teacher
    targets were reached), since later steps would not change the ladder.
    """
    seed_everything(seed)
    model = build_model(task, spec).to(device)
    gen = torch_generator(seed)
    val_gen = torch_generator(50_000 + seed)
    va, vb = sample_operands(task, n_val, val_gen)
    val_prompts, val_answers = encode_prompts(task, va, vb).to(device), encode_answers(task, va, vb).to(device)
    snapshots: list[tuple[int, float, dict]] = []

    def batch_fn(step):
        a, b = sample_operands(task, batch_size, gen)
        ids, mask = join(encode_prompts(task, a, b), encode_answers(task, a, b))
        return ids.to(device), mask.to(device)

    def eval_fn(m):
        step = min(steps, (len(snapshots) + 1) * eval_every)  # train() evaluates every eval_every steps and at the end
        acc = evaluate(m, val_prompts, val_answers, task)
        snapshots.append((step, acc, copy.deepcopy(m.state_dict())))
        try:
            select_checkpoints([(s, a) for s, a, _ in snapshots], targets)
            complete = acc >= targets[2]  # both teachers found earlier and the student target reached now
        except ValueError:
            complete = False
        return {"val_exact_match": acc, "ladder_complete": float(complete)}

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 20), eval_every=eval_every,
                      log_every=eval_every, desc=f"pretrain s{seed}", progress=progress)
    train(model, cfg, batch_fn, lambda m, b: causal_lm_loss(m, b[0], loss_mask=b[1]), device, eval_fn=eval_fn,
          stop_fn=lambda rec: rec.get("ladder_complete", 0.0) == 1.0)
    curve = [(s, a) for s, a, _ in snapshots]
    i2, i1, i_s = select_checkpoints(curve, targets)
    return Ladder(snapshots[i2][2], snapshots[i1][2], snapshots[i_s][2],
                  {"teacher_2": curve[i2][0], "teacher_1": curve[i1][0], "student": curve[i_s][0]}, curve)


# --- preference data and the three tuning arms ---------------------------------------------------------

@dataclass
class PairData:
    prompts: torch.Tensor  # (n, prompt_len)
    chosen: torch.Tensor  # (n, answer_len) teacher-1 greedy responses, right-padded
    rejected: torch.Tensor  # (n, answer_len) teacher-2 greedy responses
    answers: torch.Tensor  # (n, answer_len) the correct answers (used only for reporting, never for training)

    @property
    def distinct(self) -> torch.Tensor:
        """(n,) bool: the two responses differ (identical pairs carry no preference signal)."""
        return (self.chosen != self.rejected).any(dim=1)


def make_pairs(task: AdditionTask, spec: ModelSpec, ladder: Ladder, n_prompts: int, seed: int,
               device: str = "cpu") -> PairData:
    """Fresh prompts answered greedily by both teachers."""
    gen = torch_generator(60_000 + seed)
    a, b = sample_operands(task, n_prompts, gen)
    prompts, answers = encode_prompts(task, a, b), encode_answers(task, a, b)
    model = build_model(task, spec).to(device)
    responses = []
    for state in (ladder.teacher_1, ladder.teacher_2):
        model.load_state_dict(state)
        responses.append(generate(model, prompts.to(device), task).cpu())
    return PairData(prompts, responses[0], responses[1], answers)


def _epoch_batches(n: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=torch_generator(seed))
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _tune_config(n_batches: int, lr: float, desc: str, progress: bool) -> TrainConfig:
    """One epoch, cosine with a floor of 0.1 lr, 3% warmup, AdamW (0.9, 0.95), no weight decay, clip 1.0
    (authors' configs/dpo/base.yaml; ``shared.training`` defaults match the optimizer settings)."""
    return TrainConfig(steps=n_batches, lr=lr, warmup_steps=max(1, math.ceil(0.03 * n_batches)),
                       schedule="cosine", min_lr_ratio=0.1, weight_decay=0.0, grad_clip=1.0,
                       log_every=max(1, n_batches // 10), desc=desc, progress=progress)


ORIENTATIONS = ("paired", "swapped", "random")


def orient(chosen: torch.Tensor, rejected: torch.Tensor, orientation: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs as given (``paired``: teacher 1 chosen), reversed (``swapped``), or each pair's side drawn
    by a fair coin (``random``: the quality delta is zero in expectation; seeded by ``seed``)."""
    if orientation == "paired":
        return chosen, rejected
    if orientation == "swapped":
        return rejected, chosen
    if orientation == "random":
        flip = torch.rand(chosen.shape[0], generator=torch_generator(90_000 + seed)) < 0.5
        f = flip[:, None]
        return torch.where(f, rejected, chosen), torch.where(f, chosen, rejected)
    raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")


def tune_dpo(task: AdditionTask, spec: ModelSpec, student: dict, pairs: PairData, beta: float, lr: float,
             batch_size: int, seed: int, orientation: str = "paired", device: str = "cpu", progress: bool = False):
    """One epoch of ``dpo_norm`` from the student (also the frozen reference) on the distinct pairs;
    ``seed`` sets the data order (and the coin of the ``random`` orientation)."""
    keep = pairs.distinct
    prompts = pairs.prompts[keep]
    chosen, rejected = orient(pairs.chosen[keep], pairs.rejected[keep], orientation, seed)
    if len(prompts) == 0:
        raise ValueError("no distinct preference pairs: the two teachers answered every prompt identically")
    c_ids, c_mask = join(prompts, chosen)
    r_ids, r_mask = join(prompts, rejected)
    seed_everything(seed)
    model = build_model(task, spec).to(device)
    model.load_state_dict(student)
    with torch.no_grad():  # reference = the initial student, scored once
        model.eval()
        ref_c = mean_response_logprob(model, c_ids.to(device), c_mask.to(device)).cpu()
        ref_r = mean_response_logprob(model, r_ids.to(device), r_mask.to(device)).cpu()
    batches = _epoch_batches(len(prompts), batch_size, seed)

    def batch_fn(step):
        i = batches[step]
        ids = torch.cat([c_ids[i], r_ids[i]]).to(device)
        mask = torch.cat([c_mask[i], r_mask[i]]).to(device)
        return ids, mask, ref_c[i].to(device), ref_r[i].to(device)

    history = train(model, _tune_config(len(batches), lr, f"dpo-{orientation} s{seed}", progress),
                    batch_fn, dpo_batch_loss(beta), device)
    return model, history


def tune_sft(task: AdditionTask, spec: ModelSpec, student: dict, pairs: PairData, lr: float, batch_size: int,
             seed: int, device: str = "cpu", progress: bool = False, responses: torch.Tensor | None = None):
    """One epoch of SFT from the student on the chosen (teacher-1) response of every prompt, or on
    ``responses`` to the same prompts (the control: the student's own greedy answers)."""
    ids, mask = join(pairs.prompts, pairs.chosen if responses is None else responses)
    seed_everything(seed)
    model = build_model(task, spec).to(device)
    model.load_state_dict(student)
    batches = _epoch_batches(len(ids), batch_size, seed)

    def batch_fn(step):
        i = batches[step]
        return ids[i].to(device), mask[i].to(device)

    history = train(model, _tune_config(len(batches), lr, f"sft s{seed}", progress), batch_fn,
                    lambda m, b: causal_lm_loss(m, b[0], loss_mask=b[1]), device)
    return model, history


# --- one seed end to end -------------------------------------------------------------------------------

@torch.no_grad()
def likelihood_shift(before, after, pairs: PairData, eval_prompts: torch.Tensor, eval_answers: torch.Tensor) -> dict:
    """Mean change of the ``dpo_norm`` score (mean per-token log-probability) from ``before`` to ``after`` of
    the chosen and rejected responses of the distinct pairs and of the correct answers to held-out prompts
    (a fall of all three is the 'likelihood displacement' failure of DPO)."""
    d = pairs.distinct
    sets = {"chosen": join(pairs.prompts[d], pairs.chosen[d]), "rejected": join(pairs.prompts[d], pairs.rejected[d]),
            "correct_answer": join(eval_prompts.cpu(), eval_answers.cpu())}
    device = next(after.parameters()).device
    before.eval(), after.eval()
    out = {}
    for name, (ids, mask) in sets.items():
        ids, mask = ids.to(device), mask.to(device)
        out[f"logp_shift_{name}"] = float((mean_response_logprob(after, ids, mask)
                                           - mean_response_logprob(before, ids, mask)).mean())
    return out


def output_profile(responses: torch.Tensor, answers: torch.Tensor) -> dict:
    """What greedy answers look like against the correct sums: the share exactly right, numerically above
    or below the correct sum, malformed (a non-digit where a digit belongs or no EOS), and per answer
    digit (least significant first) the mean signed difference output digit - correct digit over the
    well-formed answers."""
    n_digits = answers.shape[1] - 1
    digits = responses[:, :n_digits] - DIGIT0
    well = ((digits >= 0) & (digits <= 9)).all(dim=1) & (responses[:, n_digits] == EOS)
    true = answers[:, :n_digits] - DIGIT0
    weights = 10 ** torch.arange(n_digits)
    value = (digits.clamp(0, 9) * weights).sum(dim=1)
    target = (true * weights).sum(dim=1)
    exact = exact_match(responses, answers)
    out = {"exact": float(exact.float().mean()), "above": float((well & (value > target)).float().mean()),
           "below": float((well & (value < target)).float().mean()), "malformed": float((~well).float().mean())}
    diff = (digits - true).float()
    for j in range(n_digits):
        out[f"digit{j}_diff"] = float(diff[well, j].mean()) if well.any() else float("nan")
    return out


def run_seed(task: AdditionTask, spec: ModelSpec, seed: int, pretrain_steps: int, pretrain_batch: int,
             pretrain_lr: float, eval_every: int, n_val: int, targets: tuple[float, float, float],
             n_pair_prompts: int, n_select: int, n_eval: int, dpo_lrs: tuple[float, ...],
             dpo_betas: tuple[float, ...], sft_lrs: tuple[float, ...], tune_batch: int, device: str = "cpu",
             progress: bool = False) -> tuple[list[dict], dict]:
    """Pretrain the ladder, build pairs, tune the student.

    DPO is run at every (learning rate, beta) of the grid and SFT on the chosen answers at every learning
    rate; each arm's setting is the one with the highest exact match on ``n_select`` held-out *selection*
    problems (drawn apart from the pair prompts and the ``n_eval`` evaluation problems, which no choice
    sees). At the chosen settings: DPO on swapped pairs, DPO on randomly oriented pairs (control), DPO
    again with another data order (A/A control), and SFT on the student's own greedy answers (control).

    Rows: one per model with its evaluation and selection exact match (``model`` = ``teacher_2``,
    ``teacher_1``, ``student``, ``dpo``, ``dpo_swapped``, ``dpo_random``, ``dpo_rerun``, ``sft_chosen``,
    ``sft_self``, and every grid point ``dpo_lr*_beta*`` / ``sft_lr*``).
    """
    ladder = pretrain_ladder(task, spec, pretrain_steps, pretrain_batch, pretrain_lr, eval_every, n_val, targets,
                             seed, device, progress)
    pairs = make_pairs(task, spec, ladder, n_pair_prompts, seed, device)
    sets = {}
    for name, offset, n in (("eval", 70_000, n_eval), ("select", 80_000, n_select)):
        a, b = sample_operands(task, n, torch_generator(offset + seed))
        sets[name] = (encode_prompts(task, a, b).to(device), encode_answers(task, a, b).to(device))

    def score(m) -> dict:
        return {f"{k}_exact_match" if k == "select" else "exact_match": evaluate(m, p, a, task)
                for k, (p, a) in sets.items()}

    model = build_model(task, spec).to(device)
    rows, profiles = [], []

    def record(name: str, m, role: str, lr=float("nan"), beta=float("nan"), step=None) -> dict:
        row = {"seed": seed, "model": name, "role": role, "lr": lr, "beta": beta, **score(m),
               "pretrain_step": ladder.steps["student"] if step is None else step}
        rows.append(row)
        return row

    for name in ("teacher_2", "teacher_1", "student"):
        model.load_state_dict(getattr(ladder, name))
        record(name, model, "ladder", step=ladder.steps[name])
    student = model  # holds the student's weights from here on
    student_answers = generate(student, pairs.prompts.to(device), task).cpu()
    models, histories = {}, {}

    def keep(name, tuned, hist):
        models[name], histories[name] = tuned, hist

    best_dpo, best_sft = None, None
    for lr in dpo_lrs:
        for beta in dpo_betas:
            name = f"dpo_lr{lr:g}_beta{beta:g}"
            tuned, hist = tune_dpo(task, spec, ladder.student, pairs, beta, lr, tune_batch, seed, "paired", device,
                                   progress)
            row = record(name, tuned, "dpo_grid", lr, beta)
            if best_dpo is None or row["select_exact_match"] > best_dpo["select_exact_match"]:
                best_dpo = row
                keep("dpo", tuned, hist)
    for lr in sft_lrs:
        name = f"sft_lr{lr:g}"
        tuned, hist = tune_sft(task, spec, ladder.student, pairs, lr, tune_batch, seed, device, progress)
        row = record(name, tuned, "sft_grid", lr)
        if best_sft is None or row["select_exact_match"] > best_sft["select_exact_match"]:
            best_sft = row
            keep("sft_chosen", tuned, hist)
    lr_d, beta_d, lr_s = best_dpo["lr"], best_dpo["beta"], best_sft["lr"]
    record("dpo", models["dpo"], "arm", lr_d, beta_d)
    record("sft_chosen", models["sft_chosen"], "arm", lr_s)
    for name, orientation, tune_seed in (("dpo_swapped", "swapped", seed), ("dpo_random", "random", seed),
                                         ("dpo_rerun", "paired", seed + 1000)):
        tuned, hist = tune_dpo(task, spec, ladder.student, pairs, beta_d, lr_d, tune_batch, tune_seed, orientation,
                               device, progress)
        record(name, tuned, "arm", lr_d, beta_d)
        keep(name, tuned, hist)
    tuned, hist = tune_sft(task, spec, ladder.student, pairs, lr_s, tune_batch, seed, device, progress,
                           responses=student_answers)
    record("sft_self", tuned, "arm", lr_s)
    keep("sft_self", tuned, hist)
    eval_prompts, eval_answers = sets["eval"]
    for name in ("student", "dpo", "dpo_swapped", "sft_chosen"):
        m = student if name == "student" else models[name]
        profiles.append({"seed": seed, "model": name,
                         **output_profile(generate(m, eval_prompts, task).cpu(), eval_answers.cpu())})
    shifts = {}
    for arm in ("dpo", "sft_chosen"):
        shifts.update({f"{arm}_{k}": v for k, v in
                       likelihood_shift(student, models[arm], pairs, eval_prompts, eval_answers).items()})
    correct_c = exact_match(pairs.chosen, pairs.answers)
    correct_r = exact_match(pairs.rejected, pairs.answers)
    d = pairs.distinct
    facts = {
        "seed": seed,
        "pairs": int(len(d)), "distinct_pairs": int(d.sum()),
        "chosen_correct": float(correct_c.float().mean()), "rejected_correct": float(correct_r.float().mean()),
        "chosen_correct_on_distinct": float(correct_c[d].float().mean()) if d.any() else float("nan"),
        "rejected_correct_on_distinct": float(correct_r[d].float().mean()) if d.any() else float("nan"),
        "dpo_lr": lr_d, "dpo_beta": beta_d, "sft_lr": lr_s,
        **shifts,
    }
    tuned_curves = [{"seed": seed, "arm": name, **rec} for name, hist in histories.items() for rec in hist.records]
    return rows, {"facts": facts, "curve": [{"seed": seed, "step": s, "val_exact_match": a} for s, a in ladder.curve],
                  "tune_curves": tuned_curves, "profiles": profiles}
