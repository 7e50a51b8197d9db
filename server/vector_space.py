"""Every live function's vector in memory, by label: an hnswlib graph and a float32 matrix.

**Two forms of the same vectors.**  The graph (inner product on L2-normalised vectors =
cosine) answers the k-NN; the matrix, whose rows are the labels, scores any other candidate:
a row look-up (one matrix product for all of them) instead of ``hnswlib.get_items``
(≈ 47 µs per vector).  At 100k functions of 384 dims the matrix is 154 MB.

Labels are never reused and a label's vector never changes (a function whose text changes
gets a new label), which is what lets the store (:mod:`pathfusion.server.index_store`) repair a graph
from SQLite instead of rebuilding it.

Why a class of its own: this is the part of the index that knows nothing of SQLite, files
or processes — growing the arrays, adding and forgetting labels, the k-NN and the scoring —
so the store and the ranking (:mod:`pathfusion.server.ranking`) share one implementation of each.
Nothing here locks: every caller holds the store's lock.
"""

from __future__ import annotations

import contextlib
from typing import Any

import hnswlib
import numpy as np

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
GROWTH = 1.25
"""Capacity growth of the matrix and the graph (doubling would waste 150 MB at 100k)."""
SCORE_CHUNK = 512
"""Rows gathered at a time to score search candidates (a buffer that stays in cache)."""


def new_graph(dim: int, capacity: int) -> Any:
    """An empty hnswlib graph for ``capacity`` labels (one thread: the server's other work
    and the other processes on the machine share the cores)."""
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=max(capacity, 64), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M)
    index.set_num_threads(1)
    return index


class VectorSpace:
    """The graph, the matrix and which labels are live (callers hold the store's lock)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.graph: Any = None
        """The hnswlib graph; None while the index is closed or being reopened."""
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.live = np.zeros(0, dtype=bool)
        self.live_count = 0
        self.next_label = 0
        self._gather: np.ndarray | None = None

    # -- the matrix ----------------------------------------------------------------------------
    def reset(self, labels: int, headroom: float = GROWTH) -> None:
        """An empty matrix for labels below ``labels`` (none live), with room to grow."""
        capacity = int(labels * headroom) + 64
        self.vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        self.live = np.zeros(capacity, dtype=bool)
        self.live_count = 0
        self.next_label = labels

    def reserve(self, labels: int) -> None:
        """Room for labels below ``labels`` in the matrix and in the graph."""
        if labels > len(self.live):
            capacity = max(labels, int(len(self.live) * GROWTH) + 64)
            vectors = np.zeros((capacity, self.dim), dtype=np.float32)
            vectors[: len(self.vectors)] = self.vectors
            live = np.zeros(capacity, dtype=bool)
            live[: len(self.live)] = self.live
            self.vectors, self.live = vectors, live
        if self.graph is not None:
            capacity = self.graph.get_max_elements()
            if labels > capacity:
                self.graph.resize_index(max(labels, int(capacity * GROWTH) + 64))

    # -- labels --------------------------------------------------------------------------------
    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """New live ``labels`` with their ``vectors``, in the matrix and in the graph (room
        reserved by the caller)."""
        self.vectors[labels] = vectors
        self.live[labels] = True
        self.live_count += len(labels)
        self.graph.add_items(vectors, labels)

    def delete_from_graph(self, label: int) -> None:
        """Mark ``label`` deleted in the graph (a no-op when it already is)."""
        with contextlib.suppress(RuntimeError):  # already deleted
            self.graph.mark_deleted(int(label))

    def forget(self, label: int) -> None:
        """A deleted label leaves the graph and the matrix."""
        self.delete_from_graph(label)
        if label < len(self.live) and self.live[label]:
            self.live[label] = False
            self.live_count -= 1

    # -- nearest neighbours and scores -----------------------------------------------------------
    def knn(self, vector: np.ndarray, k: int, live: int, ef: int | None = None) -> dict[int, float]:
        """hnswlib's ``k`` nearest live labels and their cosine (``live``: the live count)."""
        if live == 0 or k <= 0:
            return {}
        k = min(k, live)
        # ef 200: recall@10 0.999 at 100k functions (benchmarks/search_index.py measured
        # 0.988 at ef 50, 0.999 at ef 100); ef 1000 costs ~10x more for nothing.
        self.graph.set_ef(ef if ef is not None else max(2 * k, 100, min(live, 200)))
        try:
            labels, distances = self.graph.knn_query(vector.reshape(1, -1), k=k)
        except RuntimeError:  # fewer reachable live elements than k (many deletions)
            return self.exact_knn(vector, k)
        return {int(label): 1.0 - float(dist) for label, dist in zip(labels[0], distances[0], strict=True)}

    def exact_knn(self, vector: np.ndarray, k: int) -> dict[int, float]:
        """The ``k`` best live labels by brute force over the matrix: what a search falls back
        to when the graph cannot return ``k`` neighbours, instead of failing (≈ 20 ms at 100k
        functions)."""
        scores = self.vectors[: self.next_label] @ vector
        scores[~self.live[: self.next_label]] = -np.inf
        k = min(k, self.live_count)
        if k <= 0:
            return {}
        top = np.argpartition(-scores, k - 1)[:k]
        return {int(label): float(scores[label]) for label in top}

    def scores(self, vector: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Cosine of ``vector`` with the stored vectors of ``labels`` (float64; the buffer is
        shared, hence the lock).

        In chunks of :data:`SCORE_CHUNK` rows gathered into one reused buffer: gathering
        thousands of rows at once allocates megabytes of fresh pages per query, which cost
        more than the arithmetic (measured 18 ms vs 10 ms for 8,000 rows at 100k)."""
        out = np.empty(labels.size, dtype=np.float32)
        if labels.size:
            if self._gather is None:
                self._gather = np.empty((SCORE_CHUNK, self.dim), dtype=np.float32)
            for start in range(0, labels.size, SCORE_CHUNK):
                part = labels[start:start + SCORE_CHUNK]
                rows = self._gather[: part.size]
                np.take(self.vectors, part, axis=0, out=rows)
                np.matmul(rows, vector, out=out[start:start + part.size])
        return out.astype(np.float64)
