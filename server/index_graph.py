"""Bringing the in-memory vectors and the hnswlib graph up to SQLite on open: load, check,
repair, rebuild.

SQLite is the source of truth (:mod:`pathfusion.server.index_store`); ``index.bin`` is derived from it
and saved lazily (:mod:`pathfusion.server.index_saving`), and the manifest records the ``generation``
(and compaction ``layout``) the saved graph reflects.  Labels are never reused and a
label's vector never changes (a function whose text changes gets a new label), so a graph
that is a few generations behind is **repaired** on open: the live labels it lacks are
added from the stored vectors, the labels deleted since are marked deleted
(:attr:`IndexStore.repaired <pathfusion.server.index_store.IndexStore.repaired>` says so).  Nothing is
re-embedded.

The generation alone cannot prove that the graph matches: processes that write one index
at once without the locks of :mod:`pathfusion.server.index_store` (an older version of this code,
say) can leave a manifest at the database's generation over a graph holding none of its
functions.  So every open also **checks** the
graph against SQLite: its labels must all be functions of SQLite, a sample of its vectors
must equal the stored ones (and not be marked deleted), and a live function the graph
lacks is added as by a repair.

When ``index.bin`` is missing, half written or fails its sha256 (checked *before* hnswlib
reads the file), predates a compaction, claims a state SQLite never had or fails that
check, it is **rebuilt** from the cached vectors (:func:`rebuild_graph`), again without
embedding anything.  The same rebuild compacts the labels when deleted ones outnumber the
live ones.

Why functions of the store rather than its methods: they are the open-time half of the
store's work, each a step of :meth:`IndexStore.open <pathfusion.server.index_store.IndexStore.open>`,
and the store reads more easily without them.  All of them run with ``write.lock`` and the
store's lock held.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import hnswlib
import numpy as np

from .index_files import DATABASE, FUNCTION_COLUMNS, HNSW_FILE, MANIFEST, IndexCorrupt
from .models import sha256_file
from .vector_space import new_graph

if TYPE_CHECKING:
    from .index_store import IndexStore

log = logging.getLogger("pathfusion.server.index")  # one logger for everything the index says

OPEN_HEADROOM = 1.0625
"""Room for this much growth in the matrix and the graph as opened, before a resize."""
GRAPH_CHECK_SAMPLE = 64
"""Live labels whose vectors in the opened graph are compared with the stored ones."""


def load_vectors(store: IndexStore) -> None:
    """Every live function's vector from SQLite into the matrix, in chunks: the blobs of
    100k functions at once would be 154 MB of short-lived bytes objects, whose memory
    the allocator keeps (RSS) long after they are freed."""
    db, space = store.db, store.space
    next_label = int(db.execute("SELECT coalesce(max(label) + 1, 0) FROM functions").fetchone()[0])
    space.reset(next_label, headroom=OPEN_HEADROOM)
    cursor = db.execute(
        "SELECT f.label, v.vector FROM functions f LEFT JOIN vectors v ON v.content_hash = f.content_hash "
        "WHERE f.deleted = 0")
    size = 4 * space.dim
    live = 0
    while rows := cursor.fetchmany(4096):
        if any(blob is None or len(blob) != size for _, blob in rows):
            lost = sum(1 for _, blob in rows if blob is None or len(blob) != size)
            raise IndexCorrupt(f"{lost} indexed functions have no cached vector in {DATABASE}")
        labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        space.vectors[labels] = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(-1, space.dim)
        space.live[labels] = True
        live += len(rows)
    space.live_count = live


def load_graph(store: IndexStore, manifest: dict[str, Any] | None) -> None:
    """The saved graph, repaired when SQLite moved on since it was saved; raises
    :class:`IndexCorrupt` when it cannot be used (the caller rebuilds it)."""
    space = store.space
    if manifest is None:
        if space.next_label:
            raise IndexCorrupt("no manifest for the stored functions")
        space.graph = new_graph(space.dim, 64)
        store.saver.save_locked()
        return
    path = store.dir / HNSW_FILE
    if not path.is_file():
        raise IndexCorrupt(f"{HNSW_FILE} is missing")
    saved, labels, layout = manifest.get("generation"), manifest.get("labels"), manifest.get("layout", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (saved, labels, layout)):
        raise IndexCorrupt(f"{MANIFEST} does not say which state of {DATABASE} {HNSW_FILE} holds")
    assert isinstance(saved, int) and isinstance(labels, int)
    if layout != store.layout:
        raise IndexCorrupt(f"{HNSW_FILE} predates a compaction of {DATABASE}")
    if saved > store.generation or labels > space.next_label:
        raise IndexCorrupt(f"{HNSW_FILE} claims a state {DATABASE} never had "
                           f"(generation {saved} > {store.generation} or {labels} labels > {space.next_label})")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise IndexCorrupt(f"{HNSW_FILE} is unreadable ({exc})") from exc
    if digest != manifest.get("index_sha256"):
        raise IndexCorrupt(f"{HNSW_FILE} is corrupted or half written (sha256 mismatch)")
    index = hnswlib.Index(space="ip", dim=space.dim)
    try:
        index.load_index(str(path), max_elements=int(max(space.next_label, 64) * OPEN_HEADROOM))
    except Exception as exc:  # hnswlib raises RuntimeError on a bad file
        raise IndexCorrupt(f"{HNSW_FILE} cannot be loaded ({exc})") from exc
    if index.element_count != labels:
        raise IndexCorrupt(f"{HNSW_FILE} has {index.element_count} elements, its manifest says {labels}")
    index.set_num_threads(1)
    space.graph = index
    store.saver.saved_generation = saved
    present = _check_graph(store)
    lacking = int(np.count_nonzero(space.live[: space.next_label] & ~present))
    if saved < store.generation:
        _repair(store, present, f"{HNSW_FILE} was {store.generation - saved} update(s) behind {DATABASE}")
    elif lacking:
        _repair(store, present, f"{HNSW_FILE} lacked {lacking} live functions of {DATABASE} at the same "
                                f"generation (written by two processes at once)")
        store.saver.save_locked()  # the file on disk is wrong for its generation: fix it now


def _check_graph(store: IndexStore) -> np.ndarray:
    """Which labels the freshly loaded graph holds (a bool per label), after checking that
    it belongs to this database: every label of the graph is a function of SQLite, and a
    sample of the live ones have their stored vector and are not marked deleted.  Raises
    :class:`IndexCorrupt` otherwise (a rebuild).

    Why more than the generation: a graph written by processes racing each other (or
    copied from another folder) can carry the right generation and element count over
    other functions; the checks cost a few milliseconds at 100k functions."""
    space = store.space
    size = space.next_label
    ids = np.asarray(space.graph.get_ids_list(), dtype=np.int64)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
        raise IndexCorrupt(f"{HNSW_FILE} holds labels that {DATABASE} never had")
    known = np.zeros(size, dtype=bool)
    cursor = store.db.execute("SELECT label FROM functions")
    while rows := cursor.fetchmany(65536):
        known[np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))] = True
    if not known[ids].all():
        raise IndexCorrupt(f"{HNSW_FILE} holds {int((~known[ids]).sum())} labels that are not "
                           f"functions of {DATABASE}")
    present = np.zeros(size, dtype=bool)
    present[ids] = True
    both = np.flatnonzero(space.live[:size] & present)
    if both.size:
        sample = np.unique(both[np.linspace(0, both.size - 1, min(both.size, GRAPH_CHECK_SAMPLE)).astype(np.int64)])
        try:
            stored = np.asarray(space.graph.get_items(sample), dtype=np.float32).reshape(sample.size, -1)
        except RuntimeError as exc:  # "Label not found": a live function marked deleted
            raise IndexCorrupt(f"{HNSW_FILE} marks live functions of {DATABASE} deleted ({exc})") from exc
        if stored.shape != (sample.size, space.dim) or not np.allclose(stored, space.vectors[sample], atol=1e-5):
            raise IndexCorrupt(f"{HNSW_FILE} holds other vectors than {DATABASE} under the same labels")
    return present


def _repair(store: IndexStore, present: np.ndarray, why: str) -> None:
    """Bring a graph up to SQLite: labels are never reused and a label's vector never
    changes, so the difference is exactly the live labels the graph lacks (``present``:
    what it holds) and the labels deleted since."""
    space = store.space
    missing = np.flatnonzero(space.live[: space.next_label] & ~present[: space.next_label])
    if missing.size:
        space.reserve(int(space.graph.element_count) + int(missing.size))
        space.graph.add_items(space.vectors[missing], missing)
    deleted = [row[0] for row in store.db.execute("SELECT label FROM functions WHERE deleted = 1")]
    for label in deleted:
        space.delete_from_graph(label)
    store.repaired = (f"{why}: added {missing.size} functions from the stored vectors, re-marked "
                      f"{len(deleted)} deleted ones")
    log.info("workspace index %s: %s", store.dir, store.repaired)
    store.saver.unsaved += int(missing.size) + 1
    store.saver.schedule()


def rebuild_graph(store: IndexStore) -> None:
    """A fresh graph from the live functions and the vector cache (compacts the labels,
    so the saved graph is useless afterwards: saved at once); files whose vectors are
    missing from the cache are re-indexed next run."""
    db, space = store.db, store.space
    with db:
        rows = db.execute(
            "SELECT f.label, f.path, f.qualname, f.name, f.start_line, f.start_char, f.end_line, "
            "f.end_char, f.snippet, f.content_hash, f.name_terms, f.terms, v.vector FROM functions f "
            "LEFT JOIN vectors v ON v.content_hash = f.content_hash "
            "WHERE f.deleted = 0 ORDER BY f.label").fetchall()
        lost = {row[1] for row in rows if row[12] is None or len(row[12]) != 4 * space.dim}
        kept = [row for row in rows if row[1] not in lost]
        db.execute("DELETE FROM functions")
        for path in lost:
            db.execute("DELETE FROM files WHERE path = ?", (path,))
        db.executemany(f"INSERT INTO functions ({FUNCTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       [(i, *row[1:12]) for i, row in enumerate(kept)])
        store.bump_generation()
        store.layout += 1
        db.execute("INSERT OR REPLACE INTO state VALUES ('layout', ?)", (str(store.layout),))
    space.reset(len(kept))
    index = new_graph(space.dim, len(space.live))
    if kept:
        vectors = np.frombuffer(b"".join(row[12] for row in kept), dtype=np.float32).reshape(-1, space.dim)
        space.vectors[: len(kept)] = vectors
        space.live[: len(kept)] = True
        index.add_items(vectors, np.arange(len(kept)))
    space.live_count = len(kept)
    space.graph = index
    store.lookup = None
    store.saver.save_locked()
