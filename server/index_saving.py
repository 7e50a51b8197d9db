"""Saving the hnswlib graph (``index.bin``) and its manifest, lazily.

SQLite is the source of truth and is committed at once (:mod:`pathfusion.server.index_store`); the
graph is derived from it and saved *lazily*: rewriting and hashing it on every save of a
file cost 350 ms at 100k functions, so a small update only schedules a save
(:data:`AUTOSAVE_DELAY_S` later, one save for all the changes meanwhile); a full sync that
changed anything, a run that changed at least :data:`SAVE_AFTER_CHANGES` labels, a
compaction, :meth:`GraphSaver.flush` and closing save at once.  Until then a reopen repairs
the older graph from SQLite (:mod:`pathfusion.server.index_graph`).

A lazy save holds the store's lock only while hnswlib writes the temp file, not while it is
hashed, so searches go on meanwhile; ``write.lock`` is held throughout, since the temp file
must not outlive it (:mod:`pathfusion.server.index_files`).

Why a class of its own: the state of saving (what is on disk, what changed since, the timer)
is separate from the index's content, and each of its many callers only asks "save now",
"schedule a save" or "flush".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from .atomic import write_atomic
from .index_files import HNSW_FILE, INDEX_FORMAT, MANIFEST, hash_or_remove
from .paths import EXTRACTOR_VERSION

if TYPE_CHECKING:
    from .index_store import IndexStore

log = logging.getLogger("pathfusion.server.index")  # one logger for everything the index says

AUTOSAVE_DELAY_S = 30.0
"""A small change saves the graph this many seconds later (one save for every change
meanwhile); until then a reopen repairs the older graph from SQLite."""
SAVE_AFTER_CHANGES = 1000
"""A run that added or deleted at least this many labels saves the graph when it ends:
re-adding that many on the next open would cost about as much as the save (≈ 0.7 ms per
vector at 100k functions)."""


class GraphSaver:
    """When and how the graph of ``store`` reaches the disk."""

    def __init__(self, store: IndexStore, autosave_s: float | None) -> None:
        self.store = store
        self.autosave_s = autosave_s
        """Seconds from a small change to the lazy save of the graph; None: only
        :meth:`flush`, closing and large runs save it."""
        self.save_lock = threading.Lock()
        self.saved_generation = -1
        """The generation that ``index.bin`` on disk reflects."""
        self.unsaved = 0
        """Labels added or deleted since the graph was last captured for saving."""
        self._timer: threading.Timer | None = None

    def forget_saved(self) -> None:
        """Nothing is on disk any more (the folder was wiped)."""
        self.saved_generation = -1
        self.unsaved = 0

    # -- saving (the store's lock held) --------------------------------------------------------
    def write_graph(self) -> tuple[str, dict[str, Any]]:
        """The graph into a temp file, and the state it reflects."""
        store = self.store
        fd, tmp = tempfile.mkstemp(dir=store.dir, prefix=f".{HNSW_FILE}.", suffix=".tmp")
        os.close(fd)
        try:
            store.space.graph.save_index(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        state = {"generation": store.generation, "labels": int(store.space.graph.element_count),
                 "layout": store.layout}
        self.unsaved = 0
        return tmp, state

    def _install(self, tmp: str, state: dict[str, Any], digest: str) -> None:
        """``index.bin`` then ``manifest.json``, each atomically."""
        store = self.store
        try:
            os.replace(tmp, store.dir / HNSW_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        manifest = {
            "format": INDEX_FORMAT, "model_id": store.model_id, "search_model": store.model.model_id,
            "dim": store.dim, "extractor_version": EXTRACTOR_VERSION, "root": str(store.root),
            **state, "index_sha256": digest,
        }
        write_atomic(store.dir / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        self.saved_generation = int(state["generation"])

    def save_locked(self) -> None:
        """Save the graph now, hashing it under the lock (opening, compaction)."""
        tmp, state = self.write_graph()
        self._install(tmp, state, hash_or_remove(tmp))

    def disk_graph_current(self) -> bool:
        """Whether the saved graph already reflects this state (another process saved it after
        the changes this one caught up with); notes it if so."""
        store = self.store
        try:
            manifest = json.loads((store.dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        current = (isinstance(manifest, dict) and manifest.get("model_id") == store.model_id
                   and manifest.get("generation") == store.generation
                   and manifest.get("layout", 0) == store.layout)
        if current:
            self.saved_generation = store.generation
        return current

    def schedule(self) -> None:
        """One lazy save :attr:`autosave_s` from now for every change until then."""
        if self.autosave_s is None or (self._timer is not None and self._timer.is_alive()):
            return
        timer = threading.Timer(self.autosave_s, self._autosave)
        timer.daemon = True  # a save interrupted by the exit is repaired on the next open
        timer.name = "pathfusion-index-save"
        self._timer = timer
        timer.start()

    def cancel(self) -> None:
        """No lazy save any more (closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- saving (no lock held) -----------------------------------------------------------------
    def flush(self) -> bool:
        """Save the graph if it lags behind SQLite; True if it saved.  The lock is held while
        hnswlib writes the temp file, not while it is hashed, so searches go on meanwhile;
        ``write.lock`` is held throughout (the temp file must not outlive it).  Must not be
        called with the lock or ``write.lock`` held."""
        store = self.store
        if store.connection is None:  # closed: do not take (and reopen) the lock file
            return False
        with self.save_lock, store.writer.hold(on_wait=store.waiting_for("changing")):
            with store.lock:
                if store.connection is None or store.space.graph is None:
                    return False
                store.refresh_locked()
                if self.saved_generation == store.generation or self.disk_graph_current():
                    return False
                graph, db = store.space.graph, store.connection
                tmp, state = self.write_graph()
            digest = hash_or_remove(tmp)
            with store.lock:
                if (store.space.graph is not graph or store.connection is not db
                        or self.saved_generation >= state["generation"]):
                    with contextlib.suppress(OSError):  # a rebuild or a wipe replaced the graph meanwhile
                        os.unlink(tmp)
                    return False
                self._install(tmp, state, digest)
                return True

    def _autosave(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a full disk must not kill the thread silently
            log.warning("workspace index %s: saving %s failed: %s", self.store.dir, HNSW_FILE, exc)
