"""R-Tuning's data construction and evaluation metrics, independent of the model (both arms use them).

Paper: Zhang et al., "R-Tuning: Instructing Large Language Models to Say 'I Don't Know'", NAACL 2024
(arXiv:2311.09677). Settings read from the authors' code (shizhediao/R-Tuning):

- knowledge split (``training/pararel/run_pararel.py``, method ``unsure``): the model before tuning answers
  each training question greedily; the question is *certain* if the gold answer string occurs in the
  output (cut at the first '.'), else *uncertain*;
- refusal-aware data (Sec. 3, "padding" strategy): ``Question: q Answer: a. Are you sure you accurately
  answered the question based on your internal knowledge? I am sure.`` (``unsure`` for uncertain
  questions); the gold answer is kept in both cases. Vanilla tuning trains on ``Question: q Answer: a.``;
- evaluation (``evaluation/pararel/evaluate.py``): greedy answer of at most 5 tokens, stopped at '.';
  answer confidence = geometric mean of the greedy tokens' probabilities; certainty = p(" sure") /
  (p(" sure") + p(" unsure")) after ``{prompt} {answer}. Are you sure ...? I am``; correct = gold in answer;
- AP (``evaluation/MMLU/results/calculate_ap.py``): ``average_precision_score(correct, 0.5 * answer
  confidence + 0.5 * certainty)`` for R-Tuning; Vanilla has no certainty and is ranked by its answer
  confidence alone.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CERTAINTY_QUESTION = "Are you sure you accurately answered the question based on your internal knowledge?"
SURE, UNSURE = " sure", " unsure"  # the two certainty tokens (one token each in SmolLM2's vocabulary)
METHODS = ("vanilla", "r_tuning")


def qa_prompt(question: str) -> str:
    """The prompt of training and evaluation (authors' ``Question: {q} Answer:``)."""
    return f"Question: {question} Answer:"


def vanilla_text(question: str, answer: str) -> str:
    """A vanilla instruction-tuning example."""
    return f"{qa_prompt(question)} {answer}."


def r_tuning_text(question: str, answer: str, certain: bool) -> str:
    """A refusal-aware (R-Tuning, ``unsure`` variant) example: the gold answer, then the certainty
    question and ``I am sure.`` / ``I am unsure.`` by the pre-tuning model's correctness."""
    return f"{vanilla_text(question, answer)} {CERTAINTY_QUESTION} I am{SURE if certain else UNSURE}."


CERTAINTY_SUFFIX = f". {CERTAINTY_QUESTION} I am"  # appended to a generated answer to read the certainty


def cut_answer(text: str) -> str:
    """The answer part of a generation: up to the first '.', stripped (as the authors cut it)."""
    idx = text.find(".")
    return (text[:idx] if idx >= 0 else text).strip()


def answer_matches(gold: str, output: str) -> bool:
    """Whether the gold answer occurs in the (cut) output, ignoring case (the authors' ``gold in output``
    is case-sensitive; ignoring case keeps "Basketball" for "basketball")."""
    gold = gold.strip().lower()
    return bool(gold) and gold in cut_answer(output).lower()


def label_certain(golds: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
    """The knowledge split: True where the pre-tuning model's answer contains the gold answer."""
    if len(golds) != len(outputs):
        raise ValueError(f"{len(golds)} gold answers but {len(outputs)} outputs")
    return np.array([answer_matches(g, o) for g, o in zip(golds, outputs)], dtype=bool)


def geometric_mean_confidence(token_logprobs: Sequence[float]) -> float:
    """prod_t p_t ^ (1/T) of the greedy answer's token probabilities; 0 for an empty answer (the
    authors' code divides by zero there)."""
    if len(token_logprobs) == 0:
        return 0.0
    return float(math.exp(float(np.mean(token_logprobs))))


def certainty(logp_sure: float, logp_unsure: float) -> float:
    """p(sure) / (p(sure) + p(unsure)), from the two tokens' log-probabilities (computed stably)."""
    return float(1.0 / (1.0 + math.exp(logp_unsure - logp_sure)))


def ranking_score(method: str, answer_confidence: np.ndarray, p_sure: np.ndarray | None) -> np.ndarray:
    """The score AP ranks by: Vanilla by answer confidence, R-Tuning by 0.5 * confidence + 0.5 * p(sure)."""
    conf = np.asarray(answer_confidence, dtype=float)
    if method == "vanilla":
        return conf
    if method == "r_tuning":
        if p_sure is None:
            raise ValueError("R-Tuning's ranking score needs the certainty p(sure)")
        return 0.5 * conf + 0.5 * np.asarray(p_sure, dtype=float)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def average_precision(correct: Sequence[bool], score: Sequence[float]) -> float:
    """Area under the precision-recall curve of ``correct`` ranked by ``score`` (sklearn's step-wise
    ``average_precision_score``: sum_n (R_n - R_{n-1}) P_n); NaN when no answer is correct."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(correct, dtype=int)
    if y.size == 0 or y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, np.asarray(score, dtype=float)))


def answered_accuracy(correct: Sequence[bool], p_sure: Sequence[float], threshold: float = 0.5) -> tuple[float, int]:
    """Accuracy on the questions the model is willing to answer (p(sure) > threshold) and how many
    those are; NaN accuracy when it answers none."""
    c = np.asarray(correct, dtype=bool)
    answered = np.asarray(p_sure, dtype=float) > threshold
    n = int(answered.sum())
    return (float(c[answered].mean()) if n else float("nan")), n
