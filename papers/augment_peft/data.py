"""SST-2 and TREC-6 as preprocessed by the EDA repository (data stage ``data_eda``; ``label<TAB>text``).

The paper samples small training sets ("limited data"); here the training set is a class-balanced sample
of ``n_per_class`` sentences per label drawn with the evaluation seed, and the test set a fixed
class-balanced sample of the official test file (the same for every seed and arm).
"""

from __future__ import annotations

import numpy as np

from shared.textdata import read_labelled

TASKS = ("sst2", "trec")


def stratified_sample(labels: np.ndarray, n_per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices: ``n_per_class`` rows of every label (all of a label's rows if it has fewer),
    drawn without replacement with ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        chosen.append(rows[rng.permutation(rows.size)[:n_per_class]])
    return np.sort(np.concatenate(chosen))


def load_task(task: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{"train": (texts, labels), "test": (texts, labels)}`` of the EDA copy of ``task``."""
    from shared.data import require

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")
    return {split: read_labelled(require("eda", "increment_datasets_f2", task, f"{name}.txt"))
            for split, name in (("train", "train_orig"), ("test", "test"))}
