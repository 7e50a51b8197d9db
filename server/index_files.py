"""The files of a workspace index: what is stored where, and how each one is opened and checked.

Where and what (never inside the workspace)::

    <user cache dir>/pathfusion/<sha256(workspace root)[:16]>/   ($PATHFUSION_CACHE_DIR replaces
        manifest.json   {"format", "model_id", "search_model",     the first part)
                         "dim", "extractor_version", "root", "generation", "layout",
                         "index_sha256", "labels"}
        meta.sqlite     files(path, mtime_ns, size, content_hash)
                        functions(label = hnswlib label, path, qualname, name, start/end
                                  line/char (LSP, UTF-16), snippet, content_hash, deleted,
                                  name_terms, terms)   terms: what BM25 reads
                        lexicon(name_terms, terms)   FTS5 over functions (pathfusion.server.lexical)
                        vectors(content_hash → float32 blob)   the vector cache
                        state(key, value)            schema, generation, layout, model_id
        index.bin       hnswlib's own format (no pickle anywhere)
        write.lock      held while a process changes any of the above (:mod:`pathfusion.server.index_store`)
        sync.lock       held by the process running a full sync

**Writes** are atomic: SQLite changes happen in transactions, ``index.bin`` and
``manifest.json`` are written to a temp file in the same folder and ``os.replace``-d
(:mod:`pathfusion.server.index_saving`).  Temp files exist only while their writer holds
``write.lock``, so an open, which holds it, removes every temp file it finds
(:func:`remove_temps`): they are the leftovers of a killed save.

Why a module of its own: these checks decide between reusing, repairing and rebuilding an
index (:meth:`pathfusion.server.index_store.IndexStore.open`); keeping them apart from the in-memory
state makes each failure one :class:`IndexCorrupt` that says which file failed and why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, NamedTuple

from .lexical import LEXICON_SQL
from .models import sha256_file
from .paths import EXTRACTOR_VERSION
from .search_model import SearchModel

log = logging.getLogger("pathfusion.server.index")  # one logger for everything the index says

INDEX_FORMAT = 2
"""Bumped when the files' layout or what is embedded changes (forces a full rebuild).
2: methods are embedded under their class's header (:func:`pathfusion.server.parsing.search_text`)."""
LISTING_VERSION = "2"
"""Bumped when which definitions a file contributes changes, not how one is embedded: a sync
then re-reads every file once, its vectors coming from the cache (:func:`relist_files`).
2: ``@overload`` stubs stand for their implementation (:mod:`pathfusion.server.overloads`)."""
SCHEMA_VERSION = "2"
"""2: ``functions`` holds the BM25 terms and ``lexicon`` indexes them (an index of schema 1
is rebuilt)."""
MANIFEST = "manifest.json"
DATABASE = "meta.sqlite"
HNSW_FILE = "index.bin"
WRITE_LOCK = "write.lock"
"""Held by the process changing the stored index (:mod:`pathfusion.server.index_store`, "Processes")."""
SYNC_LOCK = "sync.lock"
"""Held by the process running a full sync."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    content_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS functions (
    label INTEGER PRIMARY KEY, path TEXT NOT NULL, qualname TEXT NOT NULL, name TEXT NOT NULL,
    start_line INTEGER NOT NULL, start_char INTEGER NOT NULL,
    end_line INTEGER NOT NULL, end_char INTEGER NOT NULL,
    snippet TEXT NOT NULL, content_hash TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    name_terms TEXT NOT NULL DEFAULT '', terms TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS functions_path ON functions(path) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS vectors (content_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
"""
FUNCTION_COLUMNS = ("label, path, qualname, name, start_line, start_char, end_line, end_char, snippet, "
                    "content_hash, name_terms, terms")
"""The columns an insert into ``functions`` names (``deleted`` keeps its default, 0)."""


class IndexCorrupt(Exception):
    """A part of the stored index cannot be used; the message says which and why."""


class ManifestLost(IndexCorrupt):
    """``manifest.json`` is missing or unreadable while SQLite may still be fine."""


class OpenedDatabase(NamedTuple):
    """What :func:`open_database` found."""

    connection: sqlite3.Connection
    generation: int
    layout: int
    file_id: tuple[int, int]
    """(device, inode) of the database file opened: another process may replace it."""


def model_identity(model: SearchModel) -> str:
    """What must match for stored vectors to be reusable."""
    return f"{model.model_id}|dim={model.dim}|{EXTRACTOR_VERSION}|index-format={INDEX_FORMAT}"


def remove_temps(folder: Path) -> None:
    """Temp files of saves that a killed process never finished (``write.lock`` held:
    a live writer keeps it while its temp file exists, so every one found is stale)."""
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
            log.info("workspace index %s: removed %s, left by a killed save", folder, path.name)


def read_manifest(folder: Path, model_id: str) -> dict[str, Any]:
    """The manifest of an index made by the model ``model_id``; raises :class:`ManifestLost`
    when it is missing or unreadable beside other files (SQLite may still tell which model
    made its vectors), :class:`IndexCorrupt` when there is no index yet or it is another
    format's or model's."""
    path = folder / MANIFEST
    if not path.exists():
        if (folder / DATABASE).exists() or (folder / HNSW_FILE).exists():
            raise ManifestLost(f"{MANIFEST} is missing")
        raise IndexCorrupt("no index yet")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise ManifestLost(f"{MANIFEST} is unreadable ({exc})") from exc
    if manifest.get("format") != INDEX_FORMAT:
        raise IndexCorrupt(f"index format {manifest.get('format')!r} is not {INDEX_FORMAT}")
    if manifest.get("model_id") != model_id:
        raise IndexCorrupt(f"the model changed ({manifest.get('model_id')!r} → {model_id!r}); "
                           f"re-embedding everything")
    return manifest


def wipe_files(folder: Path) -> None:
    """Delete the stored index (the lock files stay: removing one that another process may
    lock is unsafe)."""
    for name in (DATABASE, DATABASE + "-journal", DATABASE + "-wal", DATABASE + "-shm",
                 HNSW_FILE, MANIFEST):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def database_file_id(folder: Path) -> tuple[int, int]:
    """(device, inode) of the database file now (raises OSError when there is none)."""
    st = os.stat(folder / DATABASE)
    return st.st_dev, st.st_ino


def open_database(folder: Path, model_id: str, trusted: bool = True) -> OpenedDatabase:
    """Open SQLite (creating it when new).  ``trusted``: the manifest vouches that the
    stored vectors come from this model, so a database that predates ``state.model_id``
    may record it; without that (a lost manifest) only the recorded id can tell.  Raises
    :class:`IndexCorrupt` for a database that fails its check, has another schema or holds
    another model's vectors."""
    path = folder / DATABASE
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        row = db.execute("PRAGMA quick_check").fetchone()
        if not row or row[0] != "ok":
            raise IndexCorrupt(f"{DATABASE} failed its integrity check ({row[0] if row else '?'})")
        # WAL + synchronous=NORMAL: a commit appends to the log without an fsync (the
        # rollback journal's two fsyncs were 18 ms of a 50 ms one-edit update).  A crash
        # keeps the database consistent; a power cut may lose the last commits, which
        # the next sync re-indexes (the files on disk are the real source).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM state WHERE key='schema'").fetchone()
        if version is None:
            with db:
                if db.execute("SELECT count(*) FROM files").fetchone()[0]:
                    raise IndexCorrupt(f"{DATABASE} has no schema version")
                db.execute("INSERT INTO state VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.execute("INSERT OR REPLACE INTO state VALUES ('generation', '0')")
                db.execute("INSERT OR REPLACE INTO state VALUES ('model_id', ?)", (model_id,))
        elif version[0] != SCHEMA_VERSION:
            raise IndexCorrupt(f"{DATABASE} schema {version[0]} is not {SCHEMA_VERSION}")
        db.executescript(LEXICON_SQL)  # after the version check: it needs schema 2's columns
        state = dict(db.execute(
            "SELECT key, value FROM state WHERE key IN ('generation', 'layout', 'model_id')"))
        stored_model = state.get("model_id")
        if stored_model is None:
            if not trusted:
                raise IndexCorrupt(f"{DATABASE} does not record which model made its vectors")
            with db:
                db.execute("INSERT OR REPLACE INTO state VALUES ('model_id', ?)", (model_id,))
        elif stored_model != model_id:
            raise IndexCorrupt(f"the model changed ({stored_model!r} → {model_id!r}); "
                               f"re-embedding everything")
        generation = int(state.get("generation", 0))
        layout = int(state.get("layout", 0))
        file_id = database_file_id(folder)
    except IndexCorrupt:
        if db is not None:
            db.close()
        raise
    except (sqlite3.Error, ValueError, OSError) as exc:
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        raise IndexCorrupt(f"{DATABASE} is unreadable ({exc})") from exc
    return OpenedDatabase(db, generation, layout, file_id)


def relist_files(db: sqlite3.Connection) -> int:
    """Mark every indexed file as changed when the index was listed under another
    :data:`LISTING_VERSION` (then record this one); returns how many were marked.

    Why not a new :data:`INDEX_FORMAT`: that wipes the vectors and re-embeds every function
    (a hundred thousand take the CPU half an hour), while a new listing only needs the files
    parsed again — the functions kept find their vectors by the hash of their text.  A file
    whose re-reading a cancelled sync did not reach stays marked for the next one."""
    row = db.execute("SELECT value FROM state WHERE key = 'listing'").fetchone()
    if row is not None and row[0] == LISTING_VERSION:
        return 0
    with db:
        marked = db.execute("UPDATE files SET mtime_ns = -1, content_hash = ''").rowcount
        db.execute("INSERT OR REPLACE INTO state VALUES ('listing', ?)", (LISTING_VERSION,))
    return marked


def hash_or_remove(tmp: str) -> str:
    """sha256 of a freshly written temp graph; the temp file is removed if hashing fails."""
    try:
        return sha256_file(Path(tmp))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
