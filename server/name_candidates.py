"""The wordpieces a naming-head step can write for one function, and their log-probabilities.

Why apart from :mod:`pathfusion.server.name_generator`: the step graph returns the next
wordpiece's distribution in two parts (generated over the vocabulary, copied over source
positions), and adding them over the few columns that can be non-zero is its own small job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-9
"""Added to a probability before its log, as in training (``name_decoder.EPSILON``)."""


@dataclass(frozen=True)
class Vocabulary:
    """The generator's wordpieces (the step graph's ``generated`` columns) and each one's
    column: built once per head, shared by every function's :class:`Candidates`."""

    ids: np.ndarray
    column: dict[int, int]

    @classmethod
    def of(cls, vocab_ids: Sequence[int]) -> Vocabulary:
        return cls(np.asarray(vocab_ids, dtype=np.int64), {int(i): n for n, i in enumerate(vocab_ids)})


@dataclass(frozen=True)
class Candidates:
    """The wordpieces a step can give a non-zero probability for one function: the generator's
    vocabulary, then the function's own wordpieces outside it (copies only).  Why: the step
    graph returns the two parts of the distribution (``generated`` over the vocabulary,
    ``copied`` over source positions) and they are added here, over these columns only —
    every other wordpiece has probability 0, as in the full-vocabulary distribution."""

    vocabulary: Vocabulary
    extra: dict[int, int]
    """The function's wordpieces outside the vocabulary → their columns (after the vocabulary's)."""
    ids: np.ndarray
    """``[C]`` the wordpiece id of each column."""
    source_columns: np.ndarray
    """``[S]`` the column of each source position's wordpiece."""

    @classmethod
    def of(cls, vocabulary: Vocabulary, source: np.ndarray) -> Candidates:
        extra: dict[int, int] = {}
        for wordpiece in source.tolist():
            if wordpiece not in vocabulary.column and wordpiece not in extra:
                extra[wordpiece] = len(vocabulary.ids) + len(extra)
        ids = np.concatenate([vocabulary.ids, np.asarray(list(extra), dtype=np.int64)])
        columns = [vocabulary.column.get(w, extra.get(w)) for w in source.tolist()]
        return cls(vocabulary, extra, ids, np.asarray(columns, dtype=np.int64))

    def column(self, wordpiece: int) -> int | None:
        """The column of ``wordpiece``, or None for one this function cannot write."""
        found = self.vocabulary.column.get(wordpiece)
        return found if found is not None else self.extra.get(wordpiece)

    def log_probs(self, generated: np.ndarray, copied: np.ndarray) -> np.ndarray:
        """``[n, C]`` log-probabilities from ``generated`` ``[n, K]`` and ``copied`` ``[n, S]``."""
        prob = np.zeros((generated.shape[0], len(self.ids)), dtype=np.float64)
        prob[:, :generated.shape[1]] = generated
        for row in range(generated.shape[0]):
            prob[row] += np.bincount(self.source_columns, weights=copied[row], minlength=len(self.ids))
        return np.log(prob + EPSILON).astype(np.float32)

    def log_prob_of(self, log_probs: np.ndarray, wordpiece: int) -> float:
        """One row's log-probability of ``wordpiece`` (``log ε`` for a wordpiece it cannot write)."""
        where = self.column(wordpiece)
        return float(log_probs[where]) if where is not None else math.log(EPSILON)
