"""Semantic search over the workspace indexes (docs/design.md §8 "Search"): the
``pathfusion.search`` command, ``workspace/symbol`` (the same engine, for every LSP editor)
and the "Similar functions" of a hover.

Why each folder is searched on its own and the results merged: every workspace folder has
its own index (:mod:`pathfusion.server.feature_index`); a search asks each for its best ``k`` and keeps
the best ``k`` of all.  The folders' indexes share one search model (the hub's for the
settings), so the query is encoded once per request, by the first folder, and the others
search with its vector (an embedding costs milliseconds; the k-NN of an index a fraction of
that).  Searches run on the shared pool against each index's own lock, so they never wait
for an indexing run's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from .index import SearchResult, WorkspaceIndex
from .lsp_convert import link_target, markdown_text, workspace_symbols
from .protocol import well_formed
from .ranking import relevant

if TYPE_CHECKING:
    from .feature_index import Indexes
    from .lsp_server import PathfusionServer

log = logging.getLogger(__name__)

SIMILAR_IN_HOVER = 3
SIMILAR_FLOOR = 0.3
"""A hover's "Similar functions" leaves out those whose cosine to the hovered one is below
this.  On validation (``python -m pathfusion.model_export.similar_floor``, the shipped encoder,
docs/results.md "What users see, again") 1.3 % of random pairs of functions of
two projects score above 0.3 and 0.8 % of same-named functions of two projects below it; in a
workspace with nothing like the hovered function the closest ones scored ≈ 0."""
SYMBOL_RESULTS = 20
RESULT_KEYS = ("uri", "range", "name", "qualname", "score", "snippet", "signature", "summary")
"""What ``pathfusion.search`` answers of each :class:`~pathfusion.server.index.SearchResult`."""


def search_args(args: Sequence[Any]) -> tuple[str, int]:
    """``(query, k)`` of ``pathfusion.search``: ``[{"query", "k"}]``, ``{"query", "k"}`` or
    ``[[{...}]]``; a bare string is the query.  Raises ValueError on anything else."""
    value: Any = list(args)
    while isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        value = {"query": value}
    if not isinstance(value, dict):
        raise ValueError('pathfusion.search expects {"query": str, "k": int}')
    query = value.get("query")
    if not isinstance(query, str):
        raise ValueError("pathfusion.search: query must be a string")
    k = value.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int | float) or int(k) != k:
        raise ValueError("pathfusion.search: k must be an integer")
    return query, max(0, min(int(k), 200))


def merge_results(per_folder: Sequence[Sequence[SearchResult]], k: int) -> list[SearchResult]:
    """The ``k`` best results of several folders (by score; ties by path and line), without
    those below the relevance floor (:data:`pathfusion.server.ranking.RELEVANCE_FLOOR`)."""
    merged = [result for results in per_folder for result in relevant(results)]
    merged.sort(key=lambda r: (-r.score, r.path, r.line))
    return merged[:k]


async def search(ls: PathfusionServer, query: str, k: int) -> list[SearchResult]:
    """Every folder's best ``k`` functions for ``query``, merged by score.  Lone
    surrogates (ill-formed UTF-16 an editor may send, e.g. half an emoji) become U+FFFD:
    the rest of the query still searches, where the tokenizer would refuse all of it."""
    query = well_formed(query).strip()
    if not query or k <= 0:
        return []
    loop = asyncio.get_running_loop()
    per_folder: list[list[SearchResult]] = []
    vectors: dict[int, np.ndarray] = {}
    """id(search model) → the query's vector.  Normally one model; keyed all the same, so
    that folders opened with different models (settings changing meanwhile) are still
    searched right."""
    for folder in list(ls.indexes.folders.values()):
        index = folder.index
        if index is None:
            continue
        model = id(index.model)
        try:
            results, vectors[model] = await loop.run_in_executor(
                ls.executor, _search_folder, index, query, k, vectors.get(model))
            per_folder.append(results)
        except Exception as exc:  # a closed index, an embedder failure
            log.warning("search in %s failed: %s", folder.root, exc)
    return merge_results(per_folder, k)


def _search_folder(index: WorkspaceIndex, query: str, k: int,
                   vector: np.ndarray | None) -> tuple[list[SearchResult], np.ndarray]:
    """On a worker: ``index``'s best ``k`` for ``query`` and the query's vector, encoded
    here unless a folder with the same search model already did (``vector``)."""
    if vector is None:
        vector = index.embed_query(query)
    return index.search(query, k, vector), vector


async def search_command(ls: PathfusionServer, args: Sequence[Any]) -> list[dict[str, Any]]:
    """``{"query": str, "k": int}`` → ``[{uri, range, name, qualname, score, snippet, signature,
    summary}]``; other arguments are invalid params."""
    try:
        query, k = search_args(args)
    except ValueError as exc:
        raise JsonRpcInvalidParams(str(exc)) from exc
    results = await search(ls, query, k)
    return [{key: value for key, value in result.to_json().items() if key in RESULT_KEYS} for result in results]


async def symbols(ls: PathfusionServer, query: str) -> list[types.WorkspaceSymbol]:
    """``workspace/symbol``: the best :data:`SYMBOL_RESULTS` functions for ``query``."""
    if not query.strip():
        return []
    return workspace_symbols(await search(ls, query, SYMBOL_RESULTS))


def similar_finder(indexes: Indexes, uri: str) -> Callable[[str], list[SearchResult]] | None:
    """For a worker thread: the functions most similar to a function (by qualname) of the
    document ``uri`` as indexed; None unless the document's folder has a ready index."""
    found = indexes.ready_folder_of(uri)
    if found is None:
        return None
    path, folder = found
    index = folder.index
    assert index is not None

    def similar(qualname: str) -> list[SearchResult]:
        try:
            results = index.similar((path, qualname), SIMILAR_IN_HOVER)
        except Exception as exc:
            log.warning("similar functions failed: %s", exc)
            return []
        return [r for r in results
                if not (r.path == path and r.qualname == qualname) and r.score >= SIMILAR_FLOOR]

    return similar


def similar_markdown(results: Sequence[SearchResult]) -> str:
    """The "Similar functions" part of a hover: links to each, with its score."""
    lines = ["**Similar functions**", ""]
    for result in results:
        lines.append(f"- [{markdown_text(result.qualname)}]({link_target(result.uri)}#L{result.line})"
                     f" — {result.score:.2f}")
    return "\n".join(lines)
