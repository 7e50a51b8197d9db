"""Indexing: from the workspace's files to stored functions and vectors.

Every function of the workspace's files (see :mod:`pathfusion.server.workspace`) is turned into a unit
vector by the search model (:mod:`pathfusion.server.search_model`) — the LLM embedder over the
function **as written** (name, signature, docstring and body, docs/design.md §2), or a
fusion variant's search graph — and stored (:mod:`pathfusion.server.index_store`).

**Incremental updates.**  A file whose (mtime, size) is unchanged is not read; one whose
content hash is unchanged is not parsed.  A changed file is parsed; each function's text is
hashed and looked up in the vector cache, so only new or edited functions are encoded
(:mod:`pathfusion.server.index_batch`: what happens to each changed file and function).  Deleted
labels are compacted away when they outnumber the live ones (:meth:`IndexStore.after_change
<pathfusion.server.index_store.IndexStore.after_change>`).

**Runs.**  Indexing runs of one index are serialised (:attr:`Indexer.run_lock`); the store's
lock is *not* held while encoding, so searches run between the batches.  A full
:meth:`Indexer.sync` holds ``sync.lock`` for its whole run, so a second indexer of the same
folder (another process) does not embed the same files again: it waits for its turn (with a
message, cancellable) or, with ``wait=False``, returns at once with :attr:`IndexStats.busy`
set — the index stays searchable meanwhile.  Saves of single files
(:meth:`Indexer.update_files`) do not wait for it; they commit between the other run's
batches.

**Cancellation** (``cancelled()`` returning True, polled between batches) stops after the
current batch: what was committed stays, the rest is indexed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .index_batch import PendingFile, cached_vectors, commit, read_changed
from .index_files import log, relist_files
from .index_store import IndexStore
from .parsing import FunctionInfo
from .search_model import unit_rows
from .workspace import WorkspaceFilter, discover

EMBED_BATCH = 32
"""Functions encoded between two cancellation checks / commits."""

Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]


@dataclass
class IndexStats:
    """What one indexing run did."""

    files: int = 0
    """Files in the index afterwards."""
    functions: int = 0
    """Live functions in the index afterwards."""
    scanned: int = 0
    """Files looked at by this run."""
    changed: int = 0
    """Files (re-)parsed because their content changed."""
    removed: int = 0
    embedded: int = 0
    """Functions encoded by this run (new or edited text)."""
    cached: int = 0
    """Functions of changed files whose vector came from the cache."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False
    rebuild_reason: str | None = None
    busy: str | None = None
    """Who was indexing the folder when a ``sync(wait=False)`` did nothing because of it
    (``process 1234``); None when this run indexed."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        data["seconds"] = round(self.seconds, 3)
        data["functions_per_second"] = round(self.functions_per_second, 1)
        return data

    @property
    def functions_per_second(self) -> float:
        return (self.embedded + self.cached) / self.seconds if self.seconds > 0 else 0.0


class Indexer:
    """Brings the store of one workspace root up to date with its files (module docstring)."""

    def __init__(self, store: IndexStore, exclude: tuple[str, ...], max_file_size: int,
                 follow_external_symlinks: bool) -> None:
        self.store = store
        self.exclude = exclude
        self.max_file_size = max_file_size
        self.follow_external_symlinks = follow_external_symlinks
        """Index files that symlinks lead to outside the root (:mod:`pathfusion.server.workspace`)."""
        self.run_lock = threading.Lock()

    def indexed_paths(self) -> list[str]:
        with self.store.lock:
            return [row[0] for row in self.store.db.execute("SELECT path FROM files ORDER BY path")]

    def sync(self, progress: Progress | None = None, cancelled: Cancelled | None = None, *,
             wait: bool = True) -> IndexStats:
        """Bring the index up to date with the workspace: discover every file, index the
        changed ones, drop the vanished or newly ignored ones.  Also builds the name look-up,
        so that the first search does not pay for it.

        When another process is running a sync of the same folder, this one waits for it to
        end (saying so in the log; ``cancelled`` still stops it) and then finds little left
        to do; with ``wait=False`` it returns at once, indexing nothing, with
        :attr:`IndexStats.busy` saying who is indexing (the index is searchable meanwhile)."""
        store = self.store
        start = time.perf_counter()
        with self.indexing_lock(wait=wait, cancelled=cancelled) as holder:
            if holder is not None:
                store.fresh()
                stats = IndexStats(cancelled=wait, busy=None if wait else holder)
                return self._finish(stats, start)
            found = discover(store.root, self.exclude, self.max_file_size, cancelled=cancelled,
                             follow_external_symlinks=self.follow_external_symlinks)
            if cancelled is not None and cancelled():
                stats = self._finish(IndexStats(cancelled=True), start)
                return stats
            with store.writing():
                marked = relist_files(store.db)
            if marked:
                log.info("workspace index of %s: what it lists changed; re-reading %d files "
                         "(their vectors are kept)", store.root, marked)
            wanted = {str(path) for path in found.files}
            gone = [path for path in self.indexed_paths() if path not in wanted]
            stats = self._index(sorted(wanted), gone, progress, cancelled, start, trust_stat=True,
                                save=True)
            stats.skipped[:0] = [(str(path), reason) for path, reason in found.skipped]
            if not stats.cancelled:
                with store.lock:
                    store.name_lookup().warm()
            return stats

    @contextlib.contextmanager
    def indexing_lock(self, wait: bool = True, cancelled: Cancelled | None = None) -> Iterator[str | None]:
        """``sync.lock`` for a whole run: yields None once held, else (not waiting, or
        cancelled while waiting) who holds it."""
        syncing = self.store.syncing
        if not syncing.acquire(blocking=wait, cancelled=cancelled, on_wait=self.store.waiting_for("indexing")):
            yield syncing.holder()
            return
        try:
            yield None
        finally:
            syncing.release()

    def update_files(self, paths: Iterable[Path | str], progress: Progress | None = None,
                     cancelled: Cancelled | None = None) -> IndexStats:
        """Re-index ``paths`` (saved or watched files).  A path that no longer exists or
        that the workspace rules now exclude is removed from the index."""
        start = time.perf_counter()
        rules = WorkspaceFilter(self.store.root, self.exclude, self.max_file_size,
                                follow_external_symlinks=self.follow_external_symlinks)
        keep: list[str] = []
        drop: list[str] = []
        skipped: list[tuple[str, str]] = []
        for raw in paths:
            path = str(Path(os.path.abspath(Path(raw).expanduser())))
            reason = rules.check(path)
            if reason is None:
                keep.append(path)
            else:
                drop.append(path)
                if reason not in ("no such file", "gitignored", "excluded", "not a .py file") \
                        and not reason.startswith(("inside a skipped", "outside")):
                    skipped.append((path, reason))
        stats = self._index(sorted(set(keep)), sorted(set(drop)), progress, cancelled, start,
                            trust_stat=False)
        stats.skipped[:0] = skipped
        return stats

    def remove_files(self, paths: Iterable[Path | str]) -> int:
        """Drop ``paths`` from the index; returns how many were indexed."""
        absolute = [str(Path(os.path.abspath(Path(p).expanduser()))) for p in paths]
        with self.run_lock:
            with self.store.writing():
                removed = self._remove(absolute)
                save_now = self.store.after_change() if removed else False
            if save_now:
                self.store.saver.flush()
            return removed

    def _remove(self, paths: Sequence[str]) -> int:
        """Mark the functions of ``paths`` deleted (lock held, inside no transaction)."""
        store = self.store
        removed = 0
        labels: list[int] = []
        db = store.db
        with db:
            for path in paths:
                labels.extend(row[0] for row in db.execute(
                    "SELECT label FROM functions WHERE path = ? AND deleted = 0", (path,)))
                db.execute("UPDATE functions SET deleted = 1 WHERE path = ? AND deleted = 0", (path,))
                removed += db.execute("DELETE FROM files WHERE path = ?", (path,)).rowcount
            if removed or labels:
                store.bump_generation()
        for label in labels:
            store.forget(label)
        return removed

    def _index(self, paths: Sequence[str], gone: Sequence[str], progress: Progress | None,
               cancelled: Cancelled | None, start: float, *, trust_stat: bool,
               save: bool = False) -> IndexStats:
        """Remove ``gone``, (re-)index ``paths``; with ``save`` (a full sync) the graph is
        saved at the end when anything changed, else only after large changes."""
        store = self.store
        stats = IndexStats()
        with self.run_lock:
            with store.writing():
                stats.removed = self._remove(gone) if gone else 0
                known = self._known_files(paths)
            total = len(paths)
            pending: list[PendingFile] = []
            waiting = 0
            if progress is not None:
                progress(0, total)
            for path in paths:
                if cancelled is not None and cancelled():
                    stats.cancelled = True
                    break
                stats.scanned += 1
                item = read_changed(self.store, path, known.get(path), stats, trust_stat, self.max_file_size)
                if item is not None:
                    pending.append(item)
                    waiting += len(item.functions)
                if waiting >= EMBED_BATCH:
                    if not self._flush(pending, stats, cancelled):
                        stats.cancelled = True
                        break
                    pending, waiting = [], 0
                    if progress is not None:
                        progress(stats.scanned, total)
                elif not pending and progress is not None and stats.scanned % 50 == 0:
                    progress(stats.scanned, total)
            if pending and not stats.cancelled and not self._flush(pending, stats, cancelled):
                stats.cancelled = True
            if progress is not None and not stats.cancelled:
                progress(total, total)
            save_now = False
            with store.writing():
                if stats.removed or stats.changed or stats.cancelled:
                    save_now = store.after_change() or save
            if save_now:
                store.saver.flush()
            return self._finish(stats, start)

    def _known_files(self, paths: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        """(mtime, size, content hash) of the indexed ``paths`` (lock held); a save asks
        for one file, not for the thousand rows of every file."""
        query = "SELECT path, mtime_ns, size, content_hash FROM files"
        if not paths:
            return {}
        db = self.store.db
        if len(paths) > 500:
            return {row[0]: (row[1], row[2], row[3]) for row in db.execute(query)}
        marks = ",".join("?" * len(paths))
        return {row[0]: (row[1], row[2], row[3])
                for row in db.execute(f"{query} WHERE path IN ({marks})", list(paths))}

    def _finish(self, stats: IndexStats, start: float) -> IndexStats:
        stats.files, stats.functions = self.store.counts()
        stats.seconds = time.perf_counter() - start
        stats.rebuild_reason = self.store.rebuild_reason
        return stats

    def _flush(self, pending: list[PendingFile], stats: IndexStats, cancelled: Cancelled | None = None) -> bool:
        """Encode what the cache lacks (lock not held), then store the files (one
        transaction); False when cancelled first.

        The encoding runs :data:`EMBED_BATCH` functions at a time with a cancellation check
        in between, so that one file with thousands of functions cannot hold up a cancel or
        a disconnect for minutes; the vectors of a cancelled flush go to the vector cache
        (the next run reuses them), its files are left for the next run.
        """
        store = self.store
        hashes = {h for item in pending for _, h in item.functions}
        with store.lock:
            cached = cached_vectors(store, hashes)
        todo: dict[str, FunctionInfo] = {}
        for item in pending:
            for func, h in item.functions:
                if h not in cached:
                    todo.setdefault(h, func)
        fresh: dict[str, np.ndarray] = {}
        keys = list(todo)
        for start in range(0, len(keys), EMBED_BATCH):
            if cancelled is not None and cancelled():
                with store.writing(), store.db:
                    store.db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                                         [(h, v.tobytes()) for h, v in fresh.items()])
                return False
            chunk = keys[start:start + EMBED_BATCH]
            vectors = unit_rows(store.model.encode_functions([todo[k] for k in chunk]), len(chunk), store.dim,
                                "the search model")
            fresh.update(zip(chunk, vectors, strict=True))
        with store.writing():
            commit(store, pending, cached, fresh, stats)
        return True
