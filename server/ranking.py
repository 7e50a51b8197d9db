"""Search: ranking the stored functions for a query, or for another function.

The score is hybrid: the cosine of the query's vector with a function's (the vector k-NN of
:class:`~pathfusion.server.vector_space.VectorSpace`) plus the lexical bonus of the function's name
(:mod:`pathfusion.server.lexical`, computed for every name at once by
:class:`~pathfusion.server.name_lookup._NameLookup`) plus its BM25 bonus (FTS5 over the function's
terms, :func:`pathfusion.server.lexical.bm25_bonuses`, for the query's
:data:`~pathfusion.server.lexical.BM25_CANDIDATES` nearest functions) plus a prior by the name.  Scoring every function
would be exact but slow at 100k functions; :meth:`Ranker.search` scores the k-NN set and
only those functions outside it whose bonus can still lift them into the top k, which ranks
the same (given an exact k-NN).

Searches read the store under its lock after catching up with other processes
(:meth:`IndexStore.fresh <pathfusion.server.index_store.IndexStore.fresh>`); a search that finds the
labels renumbered meanwhile by another process's compaction is retried.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import lexical
from .index_store import IndexStore
from .lexical import bm25_bonuses, query_features
from .search_model import unit_rows
from .snippets import snippet_parts

EXPAND_CANDIDATES = 1000
EXPAND_FACTOR = 8
"""A search with more than EXPAND_CANDIDATES lexical candidates that might reach the top k
widens its k-NN set EXPAND_FACTOR times (see :meth:`Ranker.search`)."""


RELEVANCE_FLOOR = 0.2
"""Results scoring below this are not shown to users (``pathfusion.search``,
``workspace/symbol``, ``pathfusion search``).  On validation (2,000 pairs, groups of 1,000,
the shipped embedder and hybrid weights; ``python -m pathfusion.model_export.relevance_floor``) no correct
answer that ranked in the top 10 scored below 0.2, and 0.85 % of all correct answers did (all
ranked lower; re-checked 2026-11-28 with BM25 over the nearest functions); in a workspace the
functions below it are the unrelated ones listed to fill ``k`` (cosine ≈ 0, no lexical
match).  Raw index searches (:meth:`Ranker.search`, evaluation) are not cut."""


def relevant(results: Sequence[SearchResult]) -> list[SearchResult]:
    """The results worth showing: those at or above :data:`RELEVANCE_FLOOR`."""
    return [result for result in results if result.score >= RELEVANCE_FLOOR]


class _StaleView(Exception):
    """Another process compacted the labels while a search read them: search again."""


@dataclass(frozen=True)
class SearchResult:
    """One ranked function (docs/design.md §8, ``pathfusion.search``); :meth:`to_json` is
    stable."""

    uri: str
    range: dict[str, dict[str, int]]
    """LSP range: ``{"start": {"line", "character"}, "end": {...}}``, 0-based, UTF-16."""
    name: str
    qualname: str
    score: float
    snippet: str
    path: str
    label: int = field(compare=False)

    @property
    def line(self) -> int:
        """1-based first line (decorators included)."""
        return self.range["start"]["line"] + 1

    def to_json(self) -> dict[str, Any]:
        """``{uri, range, name, qualname, score, snippet, signature, summary, path, line}``
        (``signature``: the ``def`` line on one line; ``summary``: the docstring's first line)."""
        data = asdict(self)
        data.pop("label")
        data["score"] = round(float(self.score), 6)
        data["signature"], data["summary"] = snippet_parts(self.snippet)
        data["line"] = self.line
        return data


def _needed_bonus(scores: np.ndarray, k: int) -> float:
    """The bonus a function outside the k-NN set needs to reach the top ``k``: the k-th
    vector score minus the lowest one (-inf when the k-NN set is not larger than k)."""
    if len(scores) <= k:
        return float("-inf")
    ordered = np.sort(scores)[::-1]
    return float(ordered[k - 1] - ordered[-1])


class Ranker:
    """The searches of one store (module docstring)."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store

    def name_table(self) -> dict[int, tuple[str, str, tuple[str, ...]]]:
        """label → (name, qualname, subtokens of the name) of every live function."""
        with self.store.lock:
            return self.store.name_lookup().table

    def embed_query(self, text: str) -> np.ndarray:
        """The unit vector of a query (the search model's query side)."""
        store = self.store
        return unit_rows(store.model.encode_queries([text]), 1, store.dim, "the search model")[0]

    def search(self, query: str, k: int = 10, vector: np.ndarray | None = None) -> list[SearchResult]:
        """The ``k`` best functions for ``query`` (hybrid ranking, see the module docstring).
        ``vector``: the query already encoded by the same search model (``embed_query`` of
        the stripped query) — the server encodes a query once for all workspace folders."""
        query = query.strip()
        if not query or k <= 0:
            return []
        if vector is None:
            vector = self.embed_query(query)
        for _ in range(3):
            self.store.fresh()
            with contextlib.suppress(_StaleView):
                return self._search(query, vector, k)
        return []

    def _search(self, query: str, vector: np.ndarray, k: int) -> list[SearchResult]:
        store, space = self.store, self.store.space
        exact_form, query_tokens = query_features(query)
        with store.lock:
            live = space.live_count
            lookup = store.name_lookup()
            labels, bonus = lookup.bonuses(query, exact_form, query_tokens)
            dense = np.zeros(max(len(lookup.n_tokens), space.next_label), dtype=np.float64)
            dense[labels] = bonus
            # A function outside the k-NN set scores at most the lowest k-NN score plus its
            # name bonus (BM25 scores k-NN members only), so it can reach the top k only with
            # a bonus of at least ``need`` (the k-th k-NN score minus the lowest: bonuses
            # only raise the k-th total).  This does not change the ranking (given an exact
            # k-NN) and spares the vector scores of the names whose bonus is too small.  When
            # thousands of names still qualify (a common subtoken), a k-NN set 8x larger
            # lowers its lowest score, and so raises ``need``, for far less than scoring them.
            width = max(4 * k, 50, lexical.BM25_CANDIDATES)
            knn, knn_scores, keep = self.knn_set(vector, width, live, None, labels, bonus, k)
            if int(keep.sum()) > EXPAND_CANDIDATES and live > width:
                wide = min(live, EXPAND_FACTOR * width)
                knn, knn_scores, keep = self.knn_set(vector, wide, live, max(wide, 200), labels, bonus, k)
            closest = knn[np.lexsort((knn, -knn_scores))[:lexical.BM25_CANDIDATES]]
            bm25_labels, bm25 = bm25_bonuses(store.db, query_tokens, closest, counts=store.match_counts)
            known = bm25_labels < min(len(dense), len(space.live))
            bm25_labels, bm25 = bm25_labels[known], bm25[known]
            alive = space.live[bm25_labels]  # SQLite is the truth; the matrix follows it
            dense[bm25_labels[alive]] += bm25[alive]
            outside = labels[keep]
            all_labels = np.concatenate([knn, outside])
            totals = np.concatenate([knn_scores + dense[knn] + lookup.priors(knn),
                                     space.scores(vector, outside) + bonus[keep] + lookup.priors(outside)])
            order = np.lexsort((all_labels, -totals))[:k]
            return self._results([(float(totals[i]), int(all_labels[i])) for i in order])

    def knn_set(self, vector: np.ndarray, width: int, live: int, ef: int | None, labels: np.ndarray,
                bonus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k-NN labels, their scores, and which lexical ``labels`` outside them can still
        reach the top ``k`` (lock held)."""
        space = self.store.space
        knn = np.fromiter(space.knn(vector, width, live, ef), dtype=np.int64)
        knn_scores = space.scores(vector, knn)
        keep = (bonus >= _needed_bonus(knn_scores, k)) & ~np.isin(labels, knn)
        return knn, knn_scores, keep

    def similar(self, target: np.ndarray | str | tuple[Path | str, str] | SearchResult,
                k: int = 10) -> list[SearchResult]:
        """The ``k`` functions most similar to ``target``: a vector, a query text (encoded as
        a query), a ``(path, qualname)`` of an indexed function or a :class:`SearchResult`
        (the function itself is left out of its own results)."""
        store, space = self.store, self.store.space
        exclude: set[int] = set()
        store.fresh()
        with store.lock:
            if isinstance(target, SearchResult):
                target = (target.path, target.qualname)
            if isinstance(target, tuple):
                path, qualname = target
                row = store.db.execute(
                    "SELECT label FROM functions WHERE path = ? AND qualname = ? AND deleted = 0 "
                    "ORDER BY label LIMIT 1", (str(Path(os.path.abspath(path))), qualname)).fetchone()
                if row is None or not space.live[int(row[0])]:
                    return []
                exclude.add(int(row[0]))
                vector = space.vectors[int(row[0])].copy()
            elif isinstance(target, str):
                vector = None
            else:
                vector = np.asarray(target, dtype=np.float32).reshape(-1)
        if vector is None:
            vector = self.embed_query(str(target))
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with store.lock, contextlib.suppress(_StaleView):
            labels = np.fromiter((label for label in space.knn(vector, k + len(exclude), space.live_count)
                                  if label not in exclude), dtype=np.int64)
            scores = space.scores(vector, labels)
            order = np.lexsort((labels, -scores))[:k]
            return self._results([(float(scores[i]), int(labels[i])) for i in order])
        return []  # another process compacted the index meanwhile: its labels changed

    def _results(self, ranked: Sequence[tuple[float, int]]) -> list[SearchResult]:
        """The rows of the ranked labels (one query), in the given order (lock held); raises
        :class:`_StaleView` when another process renumbered the labels meanwhile."""
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        db = self.store.db
        db.execute("BEGIN")  # one snapshot for the layout and the rows
        try:
            layout = db.execute("SELECT value FROM state WHERE key = 'layout'").fetchone()
            if int(layout[0] if layout else 0) != self.store.layout:
                raise _StaleView  # another process compacted since fresh(): labels mean other rows
            rows = {row[0]: row[1:] for row in db.execute(
                "SELECT label, path, qualname, name, start_line, start_char, end_line, end_char, snippet "
                f"FROM functions WHERE deleted = 0 AND label IN ({marks})", [label for _, label in ranked])}
        finally:
            db.rollback()
        results = []
        for score, label in ranked:
            row = rows.get(label)
            if row is None:
                continue
            path, qualname, name, sl, sc, el, ec, snippet = row
            results.append(SearchResult(
                uri=Path(path).as_uri(),
                range={"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}},
                name=name, qualname=qualname, score=float(score), snippet=snippet, path=path,
                label=int(label)))
        return results
