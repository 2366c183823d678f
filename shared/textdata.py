"""Labelled sentence files: one ``label<TAB>text`` line per example (the EDA copies of SST-2 and TREC-6
fetched by the ``data_eda`` stage). Read by augment_peft and ntk_attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["read_labelled"]


def read_labelled(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)`` of a ``label<TAB>text`` file: blank lines skipped, each text's whitespace runs
    collapsed to single spaces (the WordPiece tokenizers split on whitespace, so this changes no token),
    labels as int64. A line without a tab or with a non-integer label is an error naming the line."""
    texts, labels = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep or not label.strip().lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected 'label<TAB>text' with an integer label; got {line[:60]!r}")
        texts.append(" ".join(text.split()))
        labels.append(int(label))
    return texts, np.asarray(labels, dtype=np.int64)
