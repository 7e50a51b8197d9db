"""The stored workspace index and its in-memory state, kept in step with other processes.

**Source of truth.**  SQLite holds everything, vectors included; every change is one SQLite
transaction that bumps ``generation``.  Everything in memory — the graph and the matrix
(:class:`~pathfusion.server.vector_space.VectorSpace`), the name look-up
(:class:`~pathfusion.server.name_lookup._NameLookup`) — and ``index.bin`` on disk are derived from it:
how an open checks, repairs or rebuilds them is :mod:`pathfusion.server.index_graph`, how the graph is
saved :mod:`pathfusion.server.index_saving`, the files themselves :mod:`pathfusion.server.index_files`.

:meth:`IndexStore.open` decides between them: an unreadable SQLite (``quick_check`` fails,
wrong schema), a manifest naming another model, or neither telling which model made the
stored vectors wipe the folder (everything is re-embedded); anything wrong with
``index.bin`` or a lost manifest, when SQLite's ``state`` says the stored vectors come from
this very model, only rebuilds the graph from the cached vectors.  Each case is logged with
its reason and kept in :attr:`IndexStore.rebuild_reason`.

**Threads.**  Every public method of the index may be called from a worker thread; one
lock (:attr:`IndexStore.lock`) guards the SQLite connection, the graph, the matrix and the
name look-up, and is *not* held while encoding, so searches run between the batches of a
long indexing run.  Lock order: ``Indexer.run_lock``, ``GraphSaver.save_lock``,
``syncing``, ``writer``, ``lock`` (never the other way).

**Processes.**  Several processes may open one index at once (two editor windows, the server
and ``pathfusion index``); each keeps its own graph and matrix in memory, so they follow one
protocol (:class:`pathfusion.server.locks.ProcessLock`, an OS file lock that dies with its holder):

* every change — a commit to SQLite, a graph save with its temp file, a compaction, the
  repairs and rebuilds of an open — happens while holding ``write.lock``, for a moment;
* whoever takes it first **catches up** with what the others committed (SQLite's
  ``generation`` moved): the new live labels are added to its matrix and graph from the
  stored vectors, the deleted ones removed; a compaction or a replaced database file means
  a reopen.  Labels are allocated after that, so two writers never take the same label;
* a read (search, status) checks the generation first — one SQLite look-up — and catches
  up the same way when another process moved it;
* a full sync holds ``sync.lock`` for its whole run (:mod:`pathfusion.server.indexing`), so a second
  indexer does not embed the same files again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import index_graph
from .index_files import (
    DATABASE,
    HNSW_FILE,
    MANIFEST,
    SYNC_LOCK,
    WRITE_LOCK,
    IndexCorrupt,
    ManifestLost,
    database_file_id,
    model_identity,
    open_database,
    read_manifest,
    remove_temps,
    wipe_files,
)
from .index_saving import SAVE_AFTER_CHANGES, GraphSaver
from .locks import ProcessLock
from .name_lookup import _NameLookup
from .search_model import SearchModel
from .vector_space import VectorSpace

log = logging.getLogger("pathfusion.server.index")  # one logger for everything the index says


class IndexStore:
    """SQLite, the graph, the matrix and the name look-up of one index folder, and the locks
    that keep them consistent (see the module docstring).  Open with :meth:`open`.

    The indexing (:class:`pathfusion.server.indexing.Indexer`) and the ranking
    (:class:`pathfusion.server.ranking.Ranker`) read and change this state through the attributes
    below, holding :attr:`lock`; whatever must stay true across them (labels, generations,
    catching up, saving) is done by the methods here."""

    def __init__(self, root: Path, model: SearchModel, folder: Path, autosave_s: float | None) -> None:
        self.root = root
        self.model = model
        self.dir = folder
        self.model_id = model_identity(model)
        self.dim = int(model.dim)
        self.rebuild_reason: str | None = None
        self.repaired: str | None = None
        """How the graph was brought up to date from SQLite on open, if it had to be."""
        self.lock = threading.RLock()
        self.writer = ProcessLock(folder / WRITE_LOCK)
        self.syncing = ProcessLock(folder / SYNC_LOCK)
        self.connection: sqlite3.Connection | None = None
        """None once closed (:attr:`db` raises then)."""
        self.db_file: tuple[int, int] | None = None
        """(device, inode) of the database file opened: another process may replace it."""
        self.generation = 0
        self.match_counts: dict[str, int] = {}
        """How many functions each BM25 expression matches (:func:`~pathfusion.server.lexical.bm25_bonuses`);
        valid for this generation only: emptied whenever it moves."""
        self.layout = 0
        self.space = VectorSpace(self.dim)
        self.lookup: _NameLookup | None = None
        """The name look-up, built on first use (:meth:`name_lookup`), then kept up to date."""
        self.saver = GraphSaver(self, autosave_s)

    @property
    def db(self) -> sqlite3.Connection:
        if self.connection is None:
            raise RuntimeError("the workspace index is closed")
        return self.connection

    # -- opening -------------------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create, repair or rebuild) what is stored; see the module docstring."""
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with self.writer.hold(on_wait=self.waiting_for("changing")), self.lock:
                self._open_locked()
        except BaseException:
            self.close_files()
            raise

    def _open_locked(self) -> None:
        """Open, repair or rebuild what is stored (``write.lock`` and the lock held)."""
        remove_temps(self.dir)
        lost: str | None = None
        try:
            manifest: dict[str, Any] | None = read_manifest(self.dir, self.model_id)
        except ManifestLost as exc:
            manifest, lost = None, str(exc)
        except IndexCorrupt as exc:
            self._wipe(str(exc))
            manifest = None
        try:
            self._open_db(trusted=manifest is not None)
        except IndexCorrupt as exc:
            reason = f"{lost} and {exc}" if lost is not None else str(exc)
            self._wipe(reason)
            manifest, lost = None, None
            self._open_db(trusted=True)
        try:
            index_graph.load_vectors(self)
            if lost is not None and self.space.next_label:
                raise IndexCorrupt(lost)
            index_graph.load_graph(self, manifest)
        except IndexCorrupt as exc:
            self.note_rebuild(f"{exc}; rebuilding it from the cached vectors" if lost is None else
                              f"{exc}; rebuilding {HNSW_FILE} and {MANIFEST} from the vectors "
                              f"stored in {DATABASE}")
            index_graph.rebuild_graph(self)

    def _open_db(self, trusted: bool) -> None:
        opened = open_database(self.dir, self.model_id, trusted)
        self.generation, self.layout = opened.generation, opened.layout
        self.match_counts.clear()
        self.connection, self.db_file = opened.connection, opened.file_id

    def waiting_for(self, what: str) -> Callable[[str], None]:
        """An ``on_wait`` callback that says, once, whom this process waits for."""
        def say(holder: str) -> None:
            log.warning("workspace index of %s: waiting for %s, which is %s it", self.root, holder, what)
        return say

    def note_rebuild(self, reason: str) -> None:
        log.warning("workspace index %s: %s", self.dir, reason)
        self.rebuild_reason = reason

    def _wipe(self, reason: str) -> None:
        if reason != "no index yet":
            self.note_rebuild(f"{reason}; rebuilding the index")
        if self.connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self.connection.close()
            self.connection = None
        wipe_files(self.dir)
        self.space.graph = None
        self.lookup = None
        self.saver.forget_saved()
        self.space.reset(0)

    # -- other processes (module docstring, "Processes") -------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """``write.lock``, then the lock, with this process caught up with every commit of
        the others: what a change must hold (never taken with the lock already held)."""
        with self.writer.hold(on_wait=self.waiting_for("changing")), self.lock:
            self.refresh_locked()
            yield

    def fresh(self) -> None:
        """Before a read: catch up when another process committed since this one looked.
        Costs one SQLite look-up when nobody did; must not be called with the lock held."""
        with self.lock:
            if not self._behind():
                return
        with self.writing():
            pass

    def _behind(self) -> bool:
        """Whether the stored index moved since this process last looked (lock held)."""
        if self.connection is None:
            return False
        try:
            file_id = database_file_id(self.dir)
        except OSError:
            return True
        if file_id != self.db_file:
            return True
        row = self.connection.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
        return row is None or int(row[0]) != self.generation

    def refresh_locked(self) -> None:
        """Catch up with what other processes committed (``write.lock`` and the lock held, so
        nothing changes meanwhile): new and deleted labels are applied to the graph, the
        matrix and the name look-up; a compaction (new ``layout``) or a database file
        replaced by a wipe means reopening everything."""
        if self.connection is None or not self._behind():
            return
        file_id: tuple[int, int] | None
        try:
            file_id = database_file_id(self.dir)
            state = dict(self.connection.execute(
                "SELECT key, value FROM state WHERE key IN ('generation', 'layout')"))
        except (OSError, sqlite3.Error, ValueError):
            file_id, state = None, {}
        if file_id is None or file_id != self.db_file or int(state.get("layout", 0)) != self.layout:
            log.info("workspace index %s: another process rebuilt it; reopening", self.dir)
            self.connection.close()
            self.connection = None
            self.space.graph = None
            self.lookup = None
            self.rebuild_reason = self.repaired = None
            self._open_locked()
            return
        self._catch_up(int(state.get("generation", 0)))

    def _catch_up(self, generation: int) -> None:
        """Apply the commits of other processes up to ``generation`` (same layout, locks held).

        Labels are never reused within a layout and a label's vector never changes, so the
        difference is the live labels from ``next_label`` on and the labels deleted since;
        renames of kept labels only show in the name look-up, which is rebuilt."""
        db, space = self.db, self.space
        size = 4 * self.dim
        rows = db.execute(
            "SELECT f.label, v.vector FROM functions f LEFT JOIN vectors v ON v.content_hash = f.content_hash "
            "WHERE f.deleted = 0 AND f.label >= ? ORDER BY f.label", (space.next_label,)).fetchall()
        usable = [(label, blob) for label, blob in rows if blob is not None and len(blob) == size]
        if len(usable) < len(rows):
            log.warning("workspace index %s: %d functions another process indexed have no stored vector",
                        self.dir, len(rows) - len(usable))
        gone = [label for (label,) in db.execute(
            "SELECT label FROM functions WHERE deleted = 1 AND label < ?", (space.next_label,))
                if label < len(space.live) and space.live[label]]
        next_label = max(space.next_label,
                         int(db.execute("SELECT coalesce(max(label) + 1, 0) FROM functions").fetchone()[0]))
        for label in gone:
            space.forget(label)
        space.reserve(next_label)
        if usable:
            labels = np.fromiter((label for label, _ in usable), dtype=np.int64, count=len(usable))
            space.add(labels, np.frombuffer(b"".join(blob for _, blob in usable), dtype=np.float32)
                      .reshape(-1, self.dim))
        space.next_label = next_label
        self.generation = generation
        self.match_counts.clear()
        self.lookup = None
        self.saver.disk_graph_current()
        log.info("workspace index %s: caught up with another process (%d functions added, %d deleted)",
                 self.dir, len(usable), len(gone))

    # -- changes (lock held) -------------------------------------------------------------------
    def bump_generation(self) -> None:
        """Part of every transaction that changes the index (inside it)."""
        self.generation += 1
        self.match_counts.clear()
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('generation', ?)", (str(self.generation),))

    def forget(self, label: int) -> None:
        """A deleted label leaves the graph, the matrix and the name look-up."""
        self.space.forget(label)
        if self.lookup is not None:
            self.lookup.remove(label)
        self.saver.unsaved += 1

    def after_change(self) -> bool:
        """Compact, or decide when to save, after a committed change; True when the caller
        should flush (:meth:`~pathfusion.server.index_saving.GraphSaver.flush`) once it released the lock."""
        deleted = self.space.next_label - self.space.live_count
        if deleted > max(self.space.live_count, 256):
            index_graph.rebuild_graph(self)  # compacts the deleted labels, saves
            return False
        if self.saver.unsaved >= SAVE_AFTER_CHANGES:
            return True
        self.saver.schedule()
        return False

    def name_lookup(self) -> _NameLookup:
        """The name look-up, built from SQLite once and then kept up to date."""
        if self.lookup is None:
            self.lookup = _NameLookup.from_rows(
                self.db.execute("SELECT label, name, qualname FROM functions WHERE deleted = 0"))
        return self.lookup

    # -- status and closing --------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(files, live functions) in the index."""
        with self.lock:
            files = self.db.execute("SELECT count(*) FROM files").fetchone()[0]
            return int(files), self.space.live_count

    def close(self) -> None:
        """Save the graph if needed, then release everything."""
        if self.connection is not None:
            try:
                self.saver.flush()
            except Exception as exc:  # a full disk: the next open repairs the older graph
                log.warning("workspace index %s: saving %s failed: %s", self.dir, HNSW_FILE, exc)
        with self.lock:
            self.saver.cancel()
            if self.connection is not None:
                self.connection.close()
                self.connection = None
            self.space.graph = None
            self.lookup = None
        self.close_files()

    def close_files(self) -> None:
        self.writer.close()
        self.syncing.close()
