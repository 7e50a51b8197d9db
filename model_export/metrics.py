"""Naming metrics, defined exactly (docs/design.md §5) — no torch, so they can score ONNX models.

Labels are ``|``-joined subtokens (``get|file|name``).  The *prediction* of an example is
its first legal candidate: the first of the model's ranked names that is not ``<UNK>`` (or
another special token) — code2vec's ``filter_impossible_names``.  An example with no legal
candidate predicts the empty name.  Gold names outside the vocabulary stay in the test set
(they can still earn partial subtoken credit).

* **code2vec subtoken P/R/F1** (``SubtokensEvaluationMetric``): for every predicted
  subtoken (with multiplicity) a true positive if it occurs in the gold subtokens, else a
  false positive; every gold subtoken (with multiplicity) absent from the prediction is a
  false negative; precision, recall and F1 micro-averaged over the whole test set.
* **code2seq F1** (set-based): per example, ``tp = |P ∩ G|``, ``fp = |P − G|``,
  ``fn = |G − P|`` on subtoken *sets*, summed over the test set, then micro P/R/F1.
* **exact match**: the prediction equals the gold label.
* **top-5 accuracy**: the gold label is among the first 5 legal candidates.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import numpy as np

SPECIAL_NAMES = frozenset({"<UNK>", "<PAD>", ""})
T = TypeVar("T")


def legal_names(candidates: Iterable[str]) -> list[str]:
    """The candidates that are real names, in order: what every naming metric reads (and
    what ``eval naming --predictions`` lists), so a listing and its scores cannot differ."""
    return [c for c in candidates if c not in SPECIAL_NAMES]


def _subtokens(label: str) -> list[str]:
    return [part for part in label.split("|") if part]


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class NamingScores:
    """Accumulates the four naming metrics over a stream of (gold, ranked candidates)."""

    examples: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    set_tp: int = 0
    set_fp: int = 0
    set_fn: int = 0
    exact: int = 0
    top5: int = 0
    samples: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def add(self, gold: str, candidates: Sequence[str]) -> None:
        legal = legal_names(candidates)
        prediction = legal[0] if legal else ""
        gold_subtokens = _subtokens(gold)
        predicted = _subtokens(prediction)
        for subtoken in predicted:
            if subtoken in gold_subtokens:
                self.tp += 1
            else:
                self.fp += 1
        for subtoken in gold_subtokens:
            if subtoken not in predicted:
                self.fn += 1
        gold_set, predicted_set = set(gold_subtokens), set(predicted)
        self.set_tp += len(gold_set & predicted_set)
        self.set_fp += len(predicted_set - gold_set)
        self.set_fn += len(gold_set - predicted_set)
        self.exact += prediction == gold
        self.top5 += gold in legal[:5]
        self.examples += 1
        if len(self.samples) < 20:
            self.samples.append((gold, prediction))

    def result(self) -> dict[str, float | int]:
        precision, recall, f1 = _prf(self.tp, self.fp, self.fn)
        set_p, set_r, set_f1 = _prf(self.set_tp, self.set_fp, self.set_fn)
        n = max(1, self.examples)
        return {
            "examples": self.examples,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "code2seq_precision": round(set_p, 4),
            "code2seq_recall": round(set_r, 4),
            "code2seq_f1": round(set_f1, 4),
            "exact_match": round(self.exact / n, 4),
            "top5_accuracy": round(self.top5 / n, 4),
        }

    def counts(self) -> dict[str, int]:
        data = asdict(self)
        data.pop("samples")
        return data


SEARCH_GROUP = 1000
"""CodeSearchNet's group size: each query against 1 correct + 999 distractor codes."""
SEARCH_SEED = 2019
"""Seed of the shuffle before the pairs are cut into groups (``random.Random(SEARCH_SEED)``),
shared by every search evaluation so that they all see the same groups."""



def protocol_order(count: int, limit: int | None = None, *, group: int = SEARCH_GROUP,
                   seed: int = SEARCH_SEED, short_group: bool = True) -> list[int]:
    """The positions of ``count`` docstring/code pairs that a search evaluation scores, in the
    order it scores them: shuffled with ``seed``, the first ``limit`` kept, cut to whole groups
    of ``group``.

    Every search evaluation (``eval search``, the embedder's validation, the ranking grids, the
    embedding cache) takes its pairs from here, so that they all score the same groups.  When
    fewer than one group remain, ``short_group`` keeps them all as one smaller (easier) group —
    the callers report the group size — instead of scoring nothing.  The order depends only on
    ``count`` and ``seed``: shuffling the pairs themselves with ``random.Random(seed)`` gives
    the same permutation.
    """
    order = list(range(count))
    random.Random(seed).shuffle(order)
    if limit is not None:
        order = order[:max(0, limit)]
    whole = (len(order) // group) * group
    return order if whole == 0 and short_group else order[:whole]


def protocol_pairs(pairs: Sequence[T], limit: int | None = None, *, group: int = SEARCH_GROUP,
                   seed: int = SEARCH_SEED, short_group: bool = True) -> list[T]:
    """``pairs`` in :func:`protocol_order`."""
    return [pairs[i] for i in protocol_order(len(pairs), limit, group=group, seed=seed,
                                             short_group=short_group)]


def protocol_group(scored: int, group: int = SEARCH_GROUP) -> int:
    """The group size of ``scored`` pairs from :func:`protocol_order` (one short group when
    there are fewer than ``group``)."""
    return group if scored >= group else scored


def mrr(queries: np.ndarray, codes: np.ndarray, group: int = SEARCH_GROUP) -> float:
    """Mean reciprocal rank under the CodeSearchNet protocol.

    Row ``i`` of ``queries`` belongs with row ``i`` of ``codes``.  The pairs are cut into
    consecutive groups of ``group`` (a trailing incomplete group is left out — the caller
    shuffles with a fixed seed first); each query is ranked by inner product against the
    codes of its own group.  A distractor scoring *equal* to the correct code ranks ahead of
    it (ties count against the model, so a constant model cannot score well).
    """
    def scores(start: int) -> np.ndarray:
        return np.asarray(queries[start:start + group]) @ np.asarray(codes[start:start + group]).T

    return mrr_of_scores(scores, len(queries), group)


def mrr_of_scores(scores: Callable[[int], np.ndarray], pairs: int, group: int = SEARCH_GROUP) -> float:
    """:func:`mrr` for any ranking: ``scores(start)`` is the ``[group, group]`` score matrix
    of the queries ``start…start+group`` against the codes of the same rows (the correct
    code on the diagonal).  Ties count against the model, as in :func:`mrr`."""
    total, count = 0.0, 0
    for _, matrix in _score_blocks(scores, pairs, group):
        ranks = _group_ranks(matrix)
        total += float((1.0 / ranks).sum())
        count += len(ranks)
    return total / count if count else 0.0


def _score_blocks(scores: Callable[[int], np.ndarray], pairs: int, group: int
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """The protocol's whole groups (a last partial group is not scored): each one's first
    row and its score matrix in float64."""
    for start in range(0, pairs - group + 1, group):
        yield start, np.asarray(scores(start), dtype=np.float64)


def _group_ranks(matrix: np.ndarray) -> np.ndarray:
    """Each row's rank of its diagonal entry (1 = first; a tie counts against it)."""
    return (matrix >= np.diagonal(matrix)[:, None]).sum(axis=1)


def ranks_of_scores(scores: Callable[[int], np.ndarray], pairs: int, group: int = SEARCH_GROUP
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each scored query's rank (1 = first; ties against the model) and the row of the
    code ranked first for it (a distractor that ties with the correct code is ranked above
    it, as in the rank), over ``scores`` as in :func:`mrr_of_scores`: what ``eval search
    --ranks`` lists, so that the misses behind an MRR can be read."""
    ranks, firsts = [], []
    for start, matrix in _score_blocks(scores, pairs, group):
        rank = _group_ranks(matrix)
        others = matrix.copy()
        np.fill_diagonal(others, -np.inf)
        own = np.arange(len(matrix))
        ranks.append(rank)
        firsts.append(start + np.where(rank == 1, own, others.argmax(axis=1)))
    if not ranks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ranks), np.concatenate(firsts)
