"""The workspace index (docs/design.md §8 "Index" and "Search"; §10: a corrupt index,
cancellation).

Every function of the workspace's files (see :mod:`pathfusion.server.workspace`) is turned into a unit
vector by a :class:`~pathfusion.server.search_model.SearchModel` — the LLM embedder over the function
**as written** (name, signature, docstring and body, docs/design.md §2), or a fusion
variant's search graph where the models folder has one — and stored in an hnswlib index
(inner product on L2-normalised vectors = cosine) next to a SQLite database of metadata, in
a cache folder outside the workspace (:func:`index_dir_for`).  A search ranks the functions
by that cosine plus lexical scores: of their names, and BM25 over their words
(:mod:`pathfusion.server.ranking`).

:class:`WorkspaceIndex` is what the server and the CLI use; it is assembled from parts that
each have a module, and each module's docstring gives the design of its part:

* :mod:`pathfusion.server.index_files` — the files of an index folder (the on-disk layout), how each is
  opened and checked, atomic writes;
* :mod:`pathfusion.server.index_store` — :class:`~pathfusion.server.index_store.IndexStore`: SQLite as the source
  of truth, the in-memory state derived from it, the locks between threads and processes,
  catching up with other processes' commits;
* :mod:`pathfusion.server.index_graph` — the open-time check, repair and rebuild of the graph;
* :mod:`pathfusion.server.index_saving` — the lazy saves of the graph;
* :mod:`pathfusion.server.vector_space` — the graph and the matrix of vectors in memory, k-NN, scores;
* :mod:`pathfusion.server.indexing` — :class:`~pathfusion.server.indexing.Indexer`: indexing runs (which files,
  when), incremental updates, cancellation;
* :mod:`pathfusion.server.index_batch` — a batch of changed files: read, parsed, committed;
* :mod:`pathfusion.server.lexical`, :mod:`pathfusion.server.name_lookup` — the lexical score of names;
* :mod:`pathfusion.server.ranking` — :class:`~pathfusion.server.ranking.Ranker`: the hybrid search;
* :mod:`pathfusion.server.search_model` — the models that make the vectors.

**Composition, not mixins.**  One :class:`~pathfusion.server.index_store.IndexStore` holds all the
state; the :class:`~pathfusion.server.indexing.Indexer` and the :class:`~pathfusion.server.ranking.Ranker` hold a
reference to it and nothing of their own that the other needs.  Why: the state and its
invariants (labels, generations, locks) are in one class, so reading the indexing or the
ranking never means chasing attributes defined in a sibling mixin, and each part can be
tested on its own.  The store is split the same way: saving the graph is a component with
state of its own (:class:`~pathfusion.server.index_saving.GraphSaver`), opening the graph and
committing a batch are functions of the store (:mod:`pathfusion.server.index_graph`,
:mod:`pathfusion.server.index_batch`).  The price: the store's attributes are the parts' shared
interface, documented on :class:`~pathfusion.server.index_store.IndexStore`, not hidden behind
accessors.  :class:`WorkspaceIndex` only delegates; its methods are the public interface
that the server, the CLI, the benchmarks and the tests use.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .index_batch import snippet_of, text_hash
from .index_files import DATABASE, HNSW_FILE, MANIFEST, SYNC_LOCK, WRITE_LOCK, model_identity
from .index_saving import AUTOSAVE_DELAY_S
from .index_store import IndexStore
from .indexing import Cancelled, Indexer, IndexStats, Progress
from .ranking import Ranker, SearchResult
from .search_model import EmbedderSearchModel, SearchModel, search_model_from_settings
from .user_cache import ENV_CACHE_DIR, cache_root
from .vector_space import HNSW_EF_CONSTRUCTION, HNSW_M

# What other modules, tests and benchmarks import from here, besides what is defined here
# (each name is defined in the module it is imported from above).
__all__ = [
    "DATABASE", "ENV_CACHE_DIR", "HNSW_EF_CONSTRUCTION", "HNSW_FILE", "HNSW_M", "MANIFEST",
    "SYNC_LOCK", "WRITE_LOCK", "Cancelled", "EmbedderSearchModel", "IndexStats", "Progress",
    "SearchModel", "SearchResult", "WorkspaceIndex", "cache_root", "index_dir_for",
    "model_identity", "search_model_from_settings", "snippet_of", "text_hash",
]



def index_dir_for(root: Path | str) -> Path:
    """The folder holding the index of workspace ``root``."""
    key = hashlib.sha256(str(Path(os.path.abspath(Path(root).expanduser()))).encode()).hexdigest()[:16]
    return cache_root() / key


class WorkspaceIndex:
    """The index of one workspace root for one search model.  Open with :meth:`open`.

    ``model`` is a :class:`SearchModel`: a bare embedder is wrapped in
    :class:`EmbedderSearchModel` by the caller, as :func:`search_model_from_settings` does
    when the models folder has no fusion model.  Every public method may be called from a
    worker thread (:mod:`pathfusion.server.index_store`, "Threads"); :attr:`store`, :attr:`indexer`
    and :attr:`ranker` are the parts (module docstring), for tests and benchmarks."""

    def __init__(self, root: Path | str, model: SearchModel, *, exclude: Iterable[str] = (),
                 max_file_size: int = 1_000_000, index_dir: Path | str | None = None,
                 autosave_s: float | None = AUTOSAVE_DELAY_S, follow_external_symlinks: bool = False) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.dir = Path(index_dir) if index_dir is not None else index_dir_for(self.root)
        self.store = IndexStore(self.root, model, self.dir, autosave_s)
        self.indexer = Indexer(self.store, tuple(exclude), int(max_file_size), bool(follow_external_symlinks))
        self.ranker = Ranker(self.store)

    @classmethod
    def open(cls, root: Path | str, model: SearchModel, **kwargs: Any) -> WorkspaceIndex:
        """Open (or create, repair or rebuild) the stored index; see :mod:`pathfusion.server.index_store`."""
        index = cls(root, model, **kwargs)
        index.store.open()
        return index

    @classmethod
    def from_settings(cls, root: Path | str, model: SearchModel, settings: Any) -> WorkspaceIndex:
        """:meth:`open` with ``exclude``, ``max_file_size`` and ``follow_external_symlinks`` of a
        :class:`pathfusion.server.settings.Settings`."""
        return cls.open(root, model, exclude=getattr(settings, "exclude", ()),
                        max_file_size=getattr(settings, "max_file_size", 1_000_000),
                        follow_external_symlinks=getattr(settings, "follow_external_symlinks", False))

    # -- what it is ------------------------------------------------------------------------------
    @property
    def model(self) -> SearchModel:
        return self.store.model

    @property
    def model_id(self) -> str:
        """What must match for stored vectors to be reused (:func:`model_identity`)."""
        return self.store.model_id

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def exclude(self) -> tuple[str, ...]:
        return self.indexer.exclude

    @property
    def max_file_size(self) -> int:
        return self.indexer.max_file_size

    @property
    def follow_external_symlinks(self) -> bool:
        """Index files that symlinks lead to outside the root (:mod:`pathfusion.server.workspace`)."""
        return self.indexer.follow_external_symlinks

    @property
    def autosave_s(self) -> float | None:
        """Seconds from a small change to the lazy save of the graph; None: only
        :meth:`flush`, :meth:`close` and large runs save it."""
        return self.store.saver.autosave_s

    @property
    def rebuild_reason(self) -> str | None:
        """Why the stored index (or its graph) was rebuilt on open, if it was."""
        return self.store.rebuild_reason

    @property
    def repaired(self) -> str | None:
        """How the graph was brought up to date from SQLite on open, if it had to be."""
        return self.store.repaired

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection (raises RuntimeError once closed)."""
        return self.store.db

    # -- status ----------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(files, live functions) in the index."""
        return self.store.counts()

    def status(self) -> dict[str, Any]:
        """For ``pathfusion.status``: where the index is, what it holds, the last rebuild."""
        store = self.store
        store.fresh()
        files, functions = self.counts()
        return {"root": str(self.root), "dir": str(self.dir), "model_id": self.model_id,
                "files": files, "functions": functions, "rebuild_reason": store.rebuild_reason,
                "repaired": store.repaired, "graph_saved": store.saver.saved_generation == store.generation}

    def indexed_paths(self) -> list[str]:
        return self.indexer.indexed_paths()

    # -- indexing --------------------------------------------------------------------------------
    def sync(self, progress: Progress | None = None, cancelled: Cancelled | None = None, *,
             wait: bool = True) -> IndexStats:
        """Bring the index up to date with the workspace (:meth:`Indexer.sync
        <pathfusion.server.indexing.Indexer.sync>`)."""
        return self.indexer.sync(progress, cancelled, wait=wait)

    def update_files(self, paths: Iterable[Path | str], progress: Progress | None = None,
                     cancelled: Cancelled | None = None) -> IndexStats:
        """Re-index ``paths`` (saved or watched files).  A path that no longer exists or
        that the workspace rules now exclude is removed from the index."""
        return self.indexer.update_files(paths, progress, cancelled)

    def remove_files(self, paths: Iterable[Path | str]) -> int:
        """Drop ``paths`` from the index; returns how many were indexed."""
        return self.indexer.remove_files(paths)

    # -- search ----------------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        """The unit vector of a query (the search model's query side)."""
        return self.ranker.embed_query(text)

    def search(self, query: str, k: int = 10, vector: np.ndarray | None = None) -> list[SearchResult]:
        """The ``k`` best functions for ``query`` (hybrid ranking, :mod:`pathfusion.server.ranking`).
        ``vector``: the query already encoded (``embed_query(query.strip())`` of an index with
        the same search model) — the server searches every workspace folder's index for one
        query and encodes it once (:func:`pathfusion.server.feature_search.search`)."""
        return self.ranker.search(query, k, vector)

    def similar(self, target: np.ndarray | str | tuple[Path | str, str] | SearchResult,
                k: int = 10) -> list[SearchResult]:
        """The ``k`` functions most similar to ``target``: a vector, a query text (encoded as
        a query), a ``(path, qualname)`` of an indexed function or a :class:`SearchResult`
        (the function itself is left out of its own results)."""
        return self.ranker.similar(target, k)

    # -- saving and closing ----------------------------------------------------------------------
    def flush(self) -> bool:
        """Save the graph if it lags behind SQLite; True if it saved (searches go on meanwhile;
        :mod:`pathfusion.server.index_saving`).  Must not be called from inside another call of the index."""
        return self.store.saver.flush()

    def close(self) -> None:
        """Save the graph if needed, then release everything."""
        self.store.close()

    def __enter__(self) -> WorkspaceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
