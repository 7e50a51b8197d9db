"""The workspace index (design §8 "Index" and "Search", §10 corrupted index, cancellation).

Every function of the workspace's files (see :mod:`server.workspace`) is embedded **as
written** — name, signature, docstring and body, design §2 — and stored in an hnswlib index
(inner product on L2-normalised vectors = cosine) next to a SQLite database of metadata.

Where and what (never inside the workspace)::

    <user cache dir>/pathfusion/<sha256(workspace root)[:16]>/   ($PATHFUSION_CACHE_DIR replaces
        manifest.json   {"format", "model_id", "embedder", "dim",  the first part)
                         "extractor_version", "root", "generation", "index_sha256", "labels"}
        meta.sqlite     files(path, mtime_ns, size, content_hash)
                        functions(label = hnswlib label, path, qualname, name, start/end
                                  line/char (LSP, UTF-16), snippet, content_hash, deleted)
                        vectors(content_hash → float32 blob)   the embedding cache
                        state(key, value)                        schema, generation
        index.bin       hnswlib's own format (no pickle anywhere)

**Source of truth.**  SQLite holds everything, vectors included; ``index.bin`` is derived
from it.  So when ``index.bin`` is missing, half written, fails its sha256 (recorded in the
manifest, checked *before* hnswlib reads the file) or belongs to an older generation (the
process died between the SQLite commit and the index save), it is rebuilt from the cached
vectors without embedding anything.  When SQLite itself is unreadable (``quick_check``
fails, wrong schema) or the manifest is missing, unreadable or names another model, the
folder is wiped and everything is re-embedded.  Each case is logged with its reason and
kept in :attr:`WorkspaceIndex.rebuild_reason`.

**Writes** are atomic: SQLite changes happen in transactions, ``index.bin`` and
``manifest.json`` are written to a temp file in the same folder and ``os.replace``-d.

**Incremental updates.**  A file whose (mtime, size) is unchanged is not read; one whose
content hash is unchanged is not parsed.  A changed file is parsed; each function's text is
hashed and looked up in the vector cache, so only new or edited functions are embedded.  A
function whose text did not change keeps its hnswlib label (only its position is updated);
others are ``mark_deleted`` and new labels are added (``resize_index`` grows the index).
Deleted labels are compacted away when they outnumber the live ones.

**Search** is hybrid: the query's embedding k-NN (cosine in [-1, 1]) plus a lexical score:
a query that *is* a function's name or qualified name (exactly, or ignoring case) adds
:data:`EXACT_BONUS` (so exact identifier matches always rank first); an identifier query
inside a longer name (``scanstring`` in ``py_scanstring``) adds :data:`SUBTOKEN_BONUS` ×
the share of the name it covers; otherwise query words that match subtokens of a function's
name (``load config`` ↔ ``load_config``; ``parsing`` ↔ ``parse``, prefixes differing by ≤ 3
letters) add :data:`SUBTOKEN_BONUS` × (share of the name's subtokens matched) × (share of the
query's words, stop words left out, matched) — so a long natural-language query that merely
mentions ``json`` does not promote every ``json_*`` function.

**Threads.**  Every public method may be called from a worker thread; one lock guards the
SQLite connection and the hnswlib index, and is *not* held while embedding, so searches
run between the batches of a long indexing run.  Indexing runs are serialised.
Cancellation (``cancelled()`` returning True, polled between batches) stops after the
current batch: what was committed is saved, the rest is indexed by the next run.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from .atomic import write_atomic
from .embedder import Embedder
from .models import sha256_file
from .parsing import Document, FunctionInfo, SourceError, decode_source
from .paths import EXTRACTOR_VERSION, split_subtokens
from .workspace import WorkspaceFilter, discover

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
"""Bumped when the files' layout or what is embedded changes (forces a full rebuild)."""
SCHEMA_VERSION = "1"
ENV_CACHE_DIR = "PATHFUSION_CACHE_DIR"
MANIFEST = "manifest.json"
DATABASE = "meta.sqlite"
HNSW_FILE = "index.bin"
SNIPPET_CHARS = 300
SNIPPET_LINES = 8
EXACT_BONUS = 2.0
CASELESS_BONUS = 1.5
SUBTOKEN_BONUS = 0.3
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
EMBED_BATCH = 32
"""Functions embedded between two cancellation checks / commits."""

STOP_WORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "from", "with", "by", "is",
    "it", "its", "this", "that", "as", "at", "be", "into", "all", "each", "every", "given",
})
"""Query words that never count as name matches."""

Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    content_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS functions (
    label INTEGER PRIMARY KEY, path TEXT NOT NULL, qualname TEXT NOT NULL, name TEXT NOT NULL,
    start_line INTEGER NOT NULL, start_char INTEGER NOT NULL,
    end_line INTEGER NOT NULL, end_char INTEGER NOT NULL,
    snippet TEXT NOT NULL, content_hash TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS functions_path ON functions(path) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS vectors (content_hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
"""


class IndexCorrupt(Exception):
    """A part of the stored index cannot be used; the message says which and why."""


def cache_root() -> Path:
    """``$PATHFUSION_CACHE_DIR``, else the user cache directory of pathfusion."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pathfusion"))


def index_dir_for(root: Path | str) -> Path:
    """The folder holding the index of workspace ``root``."""
    key = hashlib.sha256(str(Path(os.path.abspath(Path(root).expanduser()))).encode()).hexdigest()[:16]
    return cache_root() / key


def model_identity(embedder: Embedder) -> str:
    """What must match for stored vectors to be reusable."""
    return f"{embedder.model_id}|dim={embedder.dim}|{EXTRACTOR_VERSION}|index-format={INDEX_FORMAT}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def snippet_of(source: str) -> str:
    """The first lines of a function (at most :data:`SNIPPET_LINES` lines, 300 chars)."""
    lines = source.splitlines()[:SNIPPET_LINES]
    text = "\n".join(line.rstrip() for line in lines)
    if len(text) > SNIPPET_CHARS:
        cut = text.rfind("\n", 0, SNIPPET_CHARS)
        text = text[: cut if cut > 0 else SNIPPET_CHARS]
    return text


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SearchResult:
    """One ranked function (design §8 ``pathfusion.search``); :meth:`to_json` is stable."""

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
        """``{uri, range, name, qualname, score, snippet, path, line}``."""
        data = asdict(self)
        data.pop("label")
        data["score"] = round(float(self.score), 6)
        data["line"] = self.line
        return data


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
    """Functions embedded by this run (new or edited text)."""
    cached: int = 0
    """Functions of changed files whose vector came from the cache."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False
    rebuild_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        data["seconds"] = round(self.seconds, 3)
        data["functions_per_second"] = round(self.functions_per_second, 1)
        return data

    @property
    def functions_per_second(self) -> float:
        return (self.embedded + self.cached) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Pending:
    """A parsed file waiting for its vectors."""

    path: str
    mtime_ns: int
    size: int
    content_hash: str
    functions: list[tuple[FunctionInfo, str]]
    """(function, hash of its embedded text)"""


# --------------------------------------------------------------------------- the index


class WorkspaceIndex:
    """The index of one workspace root for one embedder.  Open with :meth:`open`."""

    def __init__(self, root: Path | str, embedder: Embedder, *, exclude: Iterable[str] = (),
                 max_file_size: int = 1_000_000, index_dir: Path | str | None = None) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.embedder = embedder
        self.exclude = tuple(exclude)
        self.max_file_size = int(max_file_size)
        self.dir = Path(index_dir) if index_dir is not None else index_dir_for(self.root)
        self.model_id = model_identity(embedder)
        self.dim = int(embedder.dim)
        self.rebuild_reason: str | None = None
        self._lock = threading.RLock()
        self._run_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._hnsw: Any = None
        self._generation = 0
        self._names: dict[int, tuple[str, str, tuple[str, ...]]] | None = None
        self._lookup: _NameLookup | None = None

    @classmethod
    def open(cls, root: Path | str, embedder: Embedder, **kwargs: Any) -> WorkspaceIndex:
        """Open (or create, or rebuild) the stored index; see the module docstring."""
        index = cls(root, embedder, **kwargs)
        index._open()
        return index

    @classmethod
    def from_settings(cls, root: Path | str, embedder: Embedder, settings: Any) -> WorkspaceIndex:
        """:meth:`open` with ``exclude`` and ``max_file_size`` of a :class:`server.settings.Settings`."""
        return cls.open(root, embedder, exclude=getattr(settings, "exclude", ()),
                        max_file_size=getattr(settings, "max_file_size", 1_000_000))

    # -- opening -------------------------------------------------------------------------------
    def _open(self) -> None:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                manifest = self._check_manifest()
                self._open_db()
            except IndexCorrupt as exc:
                self._wipe(str(exc))
                manifest = None
                self._open_db()
            try:
                self._load_hnsw(manifest)
            except IndexCorrupt as exc:
                self._note_rebuild(f"{exc}; rebuilding it from the cached vectors")
                self._rebuild_hnsw()

    def _note_rebuild(self, reason: str) -> None:
        log.warning("workspace index %s: %s", self.dir, reason)
        self.rebuild_reason = reason

    def _check_manifest(self) -> dict[str, Any]:
        path = self.dir / MANIFEST
        if not path.exists():
            if (self.dir / DATABASE).exists() or (self.dir / HNSW_FILE).exists():
                raise IndexCorrupt(f"{MANIFEST} is missing")
            raise IndexCorrupt("no index yet")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"{MANIFEST} is unreadable ({exc})") from exc
        if manifest.get("format") != INDEX_FORMAT:
            raise IndexCorrupt(f"index format {manifest.get('format')!r} is not {INDEX_FORMAT}")
        if manifest.get("model_id") != self.model_id:
            raise IndexCorrupt(f"the model changed ({manifest.get('model_id')!r} → {self.model_id!r}); "
                               f"re-embedding everything")
        return manifest

    def _wipe(self, reason: str) -> None:
        if reason != "no index yet":
            self._note_rebuild(f"{reason}; rebuilding the index")
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        for name in (DATABASE, DATABASE + "-journal", DATABASE + "-wal", DATABASE + "-shm",
                     HNSW_FILE, MANIFEST):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        self._names = None

    def _open_db(self) -> None:
        path = self.dir / DATABASE
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            row = db.execute("PRAGMA quick_check").fetchone()
            if not row or row[0] != "ok":
                raise IndexCorrupt(f"{DATABASE} failed its integrity check ({row[0] if row else '?'})")
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM state WHERE key='schema'").fetchone()
            if version is None:
                with db:
                    if db.execute("SELECT count(*) FROM files").fetchone()[0]:
                        raise IndexCorrupt(f"{DATABASE} has no schema version")
                    db.execute("INSERT INTO state VALUES ('schema', ?)", (SCHEMA_VERSION,))
                    db.execute("INSERT OR REPLACE INTO state VALUES ('generation', '0')")
            elif version[0] != SCHEMA_VERSION:
                raise IndexCorrupt(f"{DATABASE} schema {version[0]} is not {SCHEMA_VERSION}")
            gen = db.execute("SELECT value FROM state WHERE key='generation'").fetchone()
            self._generation = int(gen[0]) if gen else 0
        except IndexCorrupt:
            if db is not None:
                db.close()
            raise
        except (sqlite3.Error, ValueError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            raise IndexCorrupt(f"{DATABASE} is unreadable ({exc})") from exc
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the workspace index is closed")
        return self._db

    def _new_hnsw(self, capacity: int) -> Any:
        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=max(capacity, 64), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M)
        index.set_num_threads(1)
        return index

    def _load_hnsw(self, manifest: dict[str, Any] | None) -> None:
        labels = self.db.execute("SELECT count(*), coalesce(max(label) + 1, 0) FROM functions").fetchone()
        if manifest is None:
            if labels[0]:
                raise IndexCorrupt("no manifest for the stored functions")
            self._hnsw = self._new_hnsw(64)
            self._save()
            return
        path = self.dir / HNSW_FILE
        if not path.is_file():
            raise IndexCorrupt(f"{HNSW_FILE} is missing")
        if manifest.get("generation") != self._generation:
            raise IndexCorrupt(f"{HNSW_FILE} is older than {DATABASE} (an update was interrupted)")
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise IndexCorrupt(f"{HNSW_FILE} is unreadable ({exc})") from exc
        if digest != manifest.get("index_sha256"):
            raise IndexCorrupt(f"{HNSW_FILE} is corrupted or half written (sha256 mismatch)")
        if manifest.get("labels") != labels[1]:
            raise IndexCorrupt(f"{HNSW_FILE} holds {manifest.get('labels')} labels, {DATABASE} {labels[1]}")
        index = hnswlib.Index(space="ip", dim=self.dim)
        try:
            index.load_index(str(path), max_elements=max(int(labels[1]), 64))
        except Exception as exc:  # hnswlib raises RuntimeError on a bad file
            raise IndexCorrupt(f"{HNSW_FILE} cannot be loaded ({exc})") from exc
        if index.element_count != labels[1]:
            raise IndexCorrupt(f"{HNSW_FILE} has {index.element_count} elements, {DATABASE} {labels[1]}")
        index.set_num_threads(1)
        self._hnsw = index

    def _rebuild_hnsw(self) -> None:
        """A fresh hnswlib index from the live functions and the vector cache (compacts the
        labels); files whose vectors are missing from the cache are re-indexed next run."""
        db = self.db
        with db:
            rows = db.execute(
                "SELECT f.label, f.path, f.qualname, f.name, f.start_line, f.start_char, f.end_line, "
                "f.end_char, f.snippet, f.content_hash, v.vector FROM functions f "
                "LEFT JOIN vectors v ON v.content_hash = f.content_hash "
                "WHERE f.deleted = 0 ORDER BY f.label").fetchall()
            lost = {row[1] for row in rows if row[10] is None or len(row[10]) != 4 * self.dim}
            kept = [row for row in rows if row[1] not in lost]
            db.execute("DELETE FROM functions")
            for path in lost:
                db.execute("DELETE FROM files WHERE path = ?", (path,))
            db.executemany("INSERT INTO functions VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                           [(i, *row[1:10]) for i, row in enumerate(kept)])
            self._bump_generation()
        index = self._new_hnsw(len(kept) + 64)
        if kept:
            vectors = np.stack([np.frombuffer(row[10], dtype=np.float32) for row in kept])
            index.add_items(vectors, np.arange(len(kept)))
        self._hnsw = index
        self._names = None
        self._save()

    def _bump_generation(self) -> None:
        self._generation += 1
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('generation', ?)", (str(self._generation),))

    def _save(self) -> None:
        """``index.bin`` then ``manifest.json``, each atomically (lock held)."""
        path = self.dir / HNSW_FILE
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{HNSW_FILE}.", suffix=".tmp")
        os.close(fd)
        try:
            self._hnsw.save_index(tmp)
            digest = sha256_file(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        labels = self.db.execute("SELECT coalesce(max(label) + 1, 0) FROM functions").fetchone()[0]
        manifest = {
            "format": INDEX_FORMAT, "model_id": self.model_id, "embedder": self.embedder.model_id,
            "dim": self.dim, "extractor_version": EXTRACTOR_VERSION, "root": str(self.root),
            "generation": self._generation, "index_sha256": digest, "labels": labels,
        }
        write_atomic(self.dir / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._hnsw = None

    def __enter__(self) -> WorkspaceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- status ----------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(files, live functions) in the index."""
        with self._lock:
            files = self.db.execute("SELECT count(*) FROM files").fetchone()[0]
            functions = self.db.execute("SELECT count(*) FROM functions WHERE deleted = 0").fetchone()[0]
            return int(files), int(functions)

    def status(self) -> dict[str, Any]:
        """For ``pathfusion.status``: where the index is, what it holds, the last rebuild."""
        files, functions = self.counts()
        return {"root": str(self.root), "dir": str(self.dir), "model_id": self.model_id,
                "files": files, "functions": functions, "rebuild_reason": self.rebuild_reason}

    def indexed_paths(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self.db.execute("SELECT path FROM files ORDER BY path")]

    # -- indexing --------------------------------------------------------------------------------
    def sync(self, progress: Progress | None = None, cancelled: Cancelled | None = None) -> IndexStats:
        """Bring the index up to date with the workspace: discover every file, index the
        changed ones, drop the vanished or newly ignored ones."""
        start = time.perf_counter()
        found = discover(self.root, self.exclude, self.max_file_size, cancelled=cancelled)
        if cancelled is not None and cancelled():
            stats = self._finish(IndexStats(cancelled=True), start)
            return stats
        wanted = {str(path) for path in found.files}
        gone = [path for path in self.indexed_paths() if path not in wanted]
        stats = self._index(sorted(wanted), gone, progress, cancelled, start, trust_stat=True)
        stats.skipped[:0] = [(str(path), reason) for path, reason in found.skipped]
        return stats

    def update_files(self, paths: Iterable[Path | str], progress: Progress | None = None,
                     cancelled: Cancelled | None = None) -> IndexStats:
        """Re-index ``paths`` (saved or watched files).  A path that no longer exists or
        that the workspace rules now exclude is removed from the index."""
        start = time.perf_counter()
        rules = WorkspaceFilter(self.root, self.exclude, self.max_file_size)
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
        with self._run_lock, self._lock:
            removed = self._remove(absolute)
            if removed:
                self._commit_and_save()
            return removed

    def rebuild(self, progress: Progress | None = None, cancelled: Cancelled | None = None) -> IndexStats:
        """Forget everything (vector cache included) and index the workspace again."""
        with self._run_lock, self._lock:
            self._wipe("rebuild requested")
            self._open_db()
            self._load_hnsw(None)
        return self.sync(progress, cancelled)

    def _remove(self, paths: Sequence[str]) -> int:
        """Mark the functions of ``paths`` deleted (lock held, inside no transaction)."""
        removed = 0
        db = self.db
        with db:
            for path in paths:
                labels = [row[0] for row in db.execute(
                    "SELECT label FROM functions WHERE path = ? AND deleted = 0", (path,))]
                for label in labels:
                    self._mark_deleted(label)
                db.execute("UPDATE functions SET deleted = 1 WHERE path = ?", (path,))
                removed += db.execute("DELETE FROM files WHERE path = ?", (path,)).rowcount
            if removed:
                self._bump_generation()
        self._names = None
        return removed

    def _mark_deleted(self, label: int) -> None:
        with contextlib.suppress(RuntimeError):  # already deleted
            self._hnsw.mark_deleted(int(label))

    def _commit_and_save(self) -> None:
        total, live = self.db.execute(
            "SELECT count(*), coalesce(sum(deleted = 0), 0) FROM functions").fetchone()
        if total - live > max(live, 256):
            self._rebuild_hnsw()  # compacts the deleted labels, saves
        else:
            self._save()

    def _index(self, paths: Sequence[str], gone: Sequence[str], progress: Progress | None,
               cancelled: Cancelled | None, start: float, *, trust_stat: bool) -> IndexStats:
        stats = IndexStats()
        with self._run_lock:
            with self._lock:
                stats.removed = self._remove(gone) if gone else 0
                known = {row[0]: (row[1], row[2], row[3]) for row in self.db.execute(
                    "SELECT path, mtime_ns, size, content_hash FROM files")}
            total = len(paths)
            pending: list[_Pending] = []
            waiting = 0
            if progress is not None:
                progress(0, total)
            for path in paths:
                if cancelled is not None and cancelled():
                    stats.cancelled = True
                    break
                stats.scanned += 1
                item = self._read(path, known.get(path), stats, trust_stat)
                if item is not None:
                    pending.append(item)
                    waiting += len(item.functions)
                if waiting >= EMBED_BATCH:
                    self._flush(pending, stats)
                    pending, waiting = [], 0
                    if progress is not None:
                        progress(stats.scanned, total)
                elif not pending and progress is not None and stats.scanned % 50 == 0:
                    progress(stats.scanned, total)
            if pending and not stats.cancelled:
                self._flush(pending, stats)
            if progress is not None and not stats.cancelled:
                progress(total, total)
            with self._lock:
                if stats.removed or stats.changed or stats.cancelled:
                    self._commit_and_save()
            return self._finish(stats, start)

    def _finish(self, stats: IndexStats, start: float) -> IndexStats:
        stats.files, stats.functions = self.counts()
        stats.seconds = time.perf_counter() - start
        stats.rebuild_reason = self.rebuild_reason
        return stats

    def _read(self, path: str, known: tuple[int, int, str] | None, stats: IndexStats,
              trust_stat: bool) -> _Pending | None:
        """The file's functions when it changed since it was indexed, else None.  With
        ``trust_stat`` an unchanged (mtime, size) means unchanged content (``sync``); explicit
        updates (saves) always compare the content hash."""
        try:
            st = os.stat(path)
            if (trust_stat and known is not None and known[0] == st.st_mtime_ns
                    and known[1] == st.st_size):
                return None
            with open(path, "rb") as fh:
                data = fh.read(self.max_file_size + 1)
        except OSError as exc:
            stats.skipped.append((path, f"unreadable ({exc.strerror or exc})"))
            return None
        digest = hashlib.sha256(data).hexdigest()
        if known is not None and known[2] == digest:
            with self._lock, self.db:
                self.db.execute("UPDATE files SET mtime_ns = ?, size = ? WHERE path = ?",
                                (st.st_mtime_ns, st.st_size, path))
            return None
        functions: list[tuple[FunctionInfo, str]] = []
        if len(data) > self.max_file_size:
            stats.skipped.append((path, f"larger than {self.max_file_size} bytes"))
        else:
            try:
                doc = Document(decode_source(data, origin=path), uri=Path(path).as_uri())
                functions = [(func, text_hash(func.source)) for func in doc.functions()]
            except SourceError as exc:
                stats.skipped.append((path, str(exc)))
        stats.changed += 1
        return _Pending(path, st.st_mtime_ns, st.st_size, digest, functions)

    def _flush(self, pending: list[_Pending], stats: IndexStats) -> None:
        """Embed what the cache lacks (lock not held), then store the files (one transaction)."""
        hashes = {h for item in pending for _, h in item.functions}
        with self._lock:
            cached = self._cached_vectors(hashes)
        texts: dict[str, str] = {}
        for item in pending:
            for func, h in item.functions:
                if h not in cached:
                    texts.setdefault(h, func.source)
        fresh: dict[str, np.ndarray] = {}
        if texts:
            keys = list(texts)
            vectors = np.asarray(self.embedder.embed([texts[k] for k in keys]), dtype=np.float32)
            if vectors.shape != (len(keys), self.dim):
                raise ValueError(f"embedder returned shape {vectors.shape}, expected {(len(keys), self.dim)}")
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
            fresh = dict(zip(keys, vectors, strict=True))
        with self._lock:
            self._store(pending, cached, fresh, stats)

    def _cached_vectors(self, hashes: set[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        items = list(hashes)
        for start in range(0, len(items), 500):
            chunk = items[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for digest, blob in self.db.execute(
                    f"SELECT content_hash, vector FROM vectors WHERE content_hash IN ({marks})", chunk):
                if len(blob) == 4 * self.dim:
                    found[digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _store(self, pending: list[_Pending], cached: dict[str, np.ndarray],
               fresh: dict[str, np.ndarray], stats: IndexStats) -> None:
        db = self.db
        new_labels: list[int] = []
        new_vectors: list[np.ndarray] = []
        deleted: list[int] = []
        with db:
            next_label = db.execute("SELECT coalesce(max(label) + 1, 0) FROM functions").fetchone()[0]
            db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                           [(h, v.astype(np.float32).tobytes()) for h, v in fresh.items()])
            for item in pending:
                old: dict[str, list[int]] = {}
                for label, digest in db.execute(
                        "SELECT label, content_hash FROM functions WHERE path = ? AND deleted = 0 "
                        "ORDER BY label", (item.path,)):
                    old.setdefault(digest, []).append(label)
                counted: set[str] = set()
                for func, digest in item.functions:
                    if digest in fresh and digest not in counted:
                        stats.embedded += 1
                        counted.add(digest)
                    else:
                        stats.cached += 1
                    row = (item.path, func.qualname, func.name, func.span.start.line,
                           func.span.start.character, func.span.end.line, func.span.end.character,
                           snippet_of(func.source), digest)
                    reuse = old.get(digest)
                    if reuse:
                        label = reuse.pop(0)
                        db.execute("UPDATE functions SET path=?, qualname=?, name=?, start_line=?, "
                                   "start_char=?, end_line=?, end_char=?, snippet=?, content_hash=? "
                                   "WHERE label = ?", (*row, label))
                        continue
                    label = next_label
                    next_label += 1
                    db.execute("INSERT INTO functions VALUES (?,?,?,?,?,?,?,?,?,?,0)", (label, *row))
                    new_labels.append(label)
                    new_vectors.append(fresh[digest] if digest in fresh else cached[digest])
                for labels in old.values():
                    deleted.extend(labels)
                if deleted:
                    marks = ",".join("?" * len(deleted))
                    db.execute(f"UPDATE functions SET deleted = 1 WHERE label IN ({marks})", deleted)
                db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                           (item.path, item.mtime_ns, item.size, item.content_hash))
                for label in deleted:
                    self._mark_deleted(label)
                deleted = []
            self._bump_generation()
            if new_labels:
                needed = next_label
                capacity = self._hnsw.get_max_elements()
                if needed > capacity:
                    self._hnsw.resize_index(max(needed, capacity * 2))
                self._hnsw.add_items(np.stack(new_vectors), np.asarray(new_labels, dtype=np.int64))
        self._names = None

    # -- search ----------------------------------------------------------------------------------
    def _name_table(self) -> dict[int, tuple[str, str, tuple[str, ...]]]:
        if self._names is None:
            self._names = {label: (name, qualname, split_subtokens(name)) for label, name, qualname
                           in self.db.execute("SELECT label, name, qualname FROM functions WHERE deleted = 0")}
            self._lookup = None
        return self._names

    def _name_lookup(self) -> _NameLookup:
        table = self._name_table()
        if self._lookup is None:
            self._lookup = _NameLookup(table)
        return self._lookup

    def embed_query(self, text: str) -> np.ndarray:
        vector = np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _knn(self, vector: np.ndarray, k: int, live: int) -> dict[int, float]:
        if live == 0 or k <= 0:
            return {}
        k = min(k, live)
        # ef 200: recall@10 0.999 at 100k functions (benchmarks/search_index.py measured
        # 0.988 at ef 50, 0.999 at ef 100); the old 1000 cost ~10x more for nothing.
        self._hnsw.set_ef(max(2 * k, 100, min(live, 200)))
        try:
            labels, distances = self._hnsw.knn_query(vector.reshape(1, -1), k=k)
        except RuntimeError:  # fewer reachable live elements than k (many deletions)
            labels, distances = self._hnsw.knn_query(vector.reshape(1, -1), k=max(1, k // 2))
        return {int(label): 1.0 - float(dist) for label, dist in zip(labels[0], distances[0], strict=True)}

    def _vector_scores(self, vector: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
        labels = list(labels)
        if not labels:
            return {}
        stored = np.asarray(self._hnsw.get_items(labels), dtype=np.float32)
        return {label: float(score) for label, score in zip(labels, stored @ vector, strict=True)}

    def search(self, query: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` best functions for ``query`` (hybrid ranking, see the module docstring)."""
        query = query.strip()
        if not query or k <= 0:
            return []
        vector = self.embed_query(query)
        words = re.findall(r"[A-Za-z_][\w.]*|\d+", query)
        exact_form = re.fullmatch(r"[A-Za-z_][\w.]*", query) is not None
        query_tokens = {token for word in words for token in split_subtokens(word)} - STOP_WORDS
        with self._lock:
            _, live = self.counts()
            scores = self._knn(vector, max(4 * k, 50), live)
            lexical: dict[int, float] = {}
            table = self._name_table()
            lookup = self._name_lookup()
            # A function outside the k-NN set scores at most the lowest k-NN score plus its
            # bonus, so it can reach the top k only with a bonus of at least ``need``
            # (bonuses only raise the k-th score, so ``need`` from vector scores alone is a
            # safe bound).  When even SUBTOKEN_BONUS falls short, subtoken matches matter
            # only inside the k-NN set.  Neither shortcut changes the ranking (given an
            # exact k-NN); both spare scoring thousands of common-subtoken names.
            need = _needed_bonus(scores, k)
            candidates = lookup.name_candidates(query, exact_form) | set(scores)
            if need <= SUBTOKEN_BONUS:
                candidates |= lookup.token_candidates(query_tokens)
            for label in candidates:
                bonus = lexical_bonus(query, exact_form, query_tokens, *table[label])
                if bonus:
                    lexical[label] = bonus
            missing = [label for label, bonus in lexical.items() if label not in scores and bonus >= need]
            scores.update(self._vector_scores(vector, missing))
            ranked = sorted(((score + lexical.get(label, 0.0), label) for label, score in scores.items()),
                            key=lambda item: (-item[0], item[1]))[:k]
            return self._results(ranked)

    def similar(self, target: np.ndarray | str | tuple[Path | str, str] | SearchResult,
                k: int = 10) -> list[SearchResult]:
        """The ``k`` functions most similar to ``target``: a vector, a function's source text
        (embedded as the index does), a ``(path, qualname)`` of an indexed function or a
        :class:`SearchResult` (the function itself is left out of its own results)."""
        exclude: set[int] = set()
        with self._lock:
            if isinstance(target, SearchResult):
                target = (target.path, target.qualname)
            if isinstance(target, tuple):
                path, qualname = target
                row = self.db.execute(
                    "SELECT label FROM functions WHERE path = ? AND qualname = ? AND deleted = 0 "
                    "ORDER BY label LIMIT 1", (str(Path(os.path.abspath(path))), qualname)).fetchone()
                if row is None:
                    return []
                exclude.add(int(row[0]))
                vector = np.asarray(self._hnsw.get_items([row[0]]), dtype=np.float32)[0]
            elif isinstance(target, str):
                vector = None
            else:
                vector = np.asarray(target, dtype=np.float32).reshape(-1)
        if vector is None:
            vector = self.embed_query(str(target))
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with self._lock:
            _, live = self.counts()
            scores = self._knn(vector, k + len(exclude), live)
            ranked = sorted(((score, label) for label, score in scores.items() if label not in exclude),
                            key=lambda item: (-item[0], item[1]))[:k]
            return self._results(ranked)

    def _results(self, ranked: Sequence[tuple[float, int]]) -> list[SearchResult]:
        results = []
        for score, label in ranked:
            row = self.db.execute(
                "SELECT path, qualname, name, start_line, start_char, end_line, end_char, snippet "
                "FROM functions WHERE label = ? AND deleted = 0", (label,)).fetchone()
            if row is None:
                continue
            path, qualname, name, sl, sc, el, ec, snippet = row
            results.append(SearchResult(
                uri=Path(path).as_uri(),
                range={"start": {"line": sl, "character": sc}, "end": {"line": el, "character": ec}},
                name=name, qualname=qualname, score=float(score), snippet=snippet, path=path,
                label=int(label)))
        return results


def _needed_bonus(scores: dict[int, float], k: int) -> float:
    """The bonus a function outside the k-NN set needs to reach the top ``k``: the k-th
    vector score minus the lowest one (-inf when the k-NN set is not larger than k)."""
    if len(scores) <= k:
        return float("-inf")
    ordered = sorted(scores.values(), reverse=True)
    return ordered[k - 1] - ordered[-1]


def lexical_bonus(query: str, exact_form: bool, query_tokens: set[str],
                  name: str, qualname: str, tokens: tuple[str, ...]) -> float:
    """The lexical part of a function's score for a query (module docstring: ranking)."""
    if exact_form and query in (name, qualname):
        return EXACT_BONUS
    if exact_form and query.lower() in (name.lower(), qualname.lower()):
        return CASELESS_BONUS
    if exact_form and len(query) >= 4 and query.lower() in name.lower():
        return SUBTOKEN_BONUS * len(query) / len(name)
    if query_tokens and tokens:
        name_hits = sum(1 for token in tokens if _token_match(token, query_tokens))
        if name_hits:
            query_hits = sum(1 for token in query_tokens if _token_match(token, set(tokens)))
            return SUBTOKEN_BONUS * (name_hits / len(tokens)) * (query_hits / len(query_tokens))
    return 0.0


class _NameLookup:
    """Which functions can get a lexical bonus for a query, without scanning every name.

    Why: the hybrid ranking used to test every indexed name on every query (≈ 7 µs each,
    0.7 s at 100k functions).  The candidates found here are exactly the labels for which
    that test could give a non-zero bonus — exact and case-insensitive name/qualname
    matches, substrings of ≥ 4 characters (one ``str.find`` pass over all names joined),
    and names with a subtoken that :func:`_token_match` pairs with a query token (equal, or
    sharing the first 4 letters with a prefix relation) — so the ranking is unchanged.
    """

    def __init__(self, table: dict[int, tuple[str, str, tuple[str, ...]]]) -> None:
        self.exact: dict[str, list[int]] = {}
        self.caseless: dict[str, list[int]] = {}
        self.by_token: dict[str, list[int]] = {}
        self.by_prefix: dict[str, set[str]] = {}
        self.order: list[int] = []
        starts: list[int] = []
        parts: list[str] = []
        position = 0
        for label, (name, qualname, tokens) in table.items():
            for key in {name, qualname}:
                self.exact.setdefault(key, []).append(label)
            for key in {name.lower(), qualname.lower()}:
                self.caseless.setdefault(key, []).append(label)
            for token in set(tokens):
                self.by_token.setdefault(token, []).append(label)
                if len(token) >= 4:
                    self.by_prefix.setdefault(token[:4], set()).add(token)
            lowered = name.lower()
            self.order.append(label)
            starts.append(position)
            parts.append(lowered)
            position += len(lowered) + 1
        self.starts = starts
        self.haystack = "\n".join(parts)

    def candidates(self, query: str, exact_form: bool, query_tokens: set[str]) -> set[int]:
        return self.name_candidates(query, exact_form) | self.token_candidates(query_tokens)

    def name_candidates(self, query: str, exact_form: bool) -> set[int]:
        """Exact, case-insensitive and substring matches of an identifier-like query."""
        found: set[int] = set()
        if exact_form:
            found.update(self.exact.get(query, ()))
            found.update(self.caseless.get(query.lower(), ()))
            if len(query) >= 4:
                needle = query.lower()
                at = self.haystack.find(needle)
                while at >= 0:
                    found.add(self.order[bisect.bisect_right(self.starts, at) - 1])
                    at = self.haystack.find(needle, at + 1)
        return found

    def token_candidates(self, query_tokens: set[str]) -> set[int]:
        """Names with a subtoken that :func:`_token_match` pairs with a query token."""
        found: set[int] = set()
        for query_token in query_tokens:
            found.update(self.by_token.get(query_token, ()))
            if len(query_token) >= 4:
                for token in self.by_prefix.get(query_token[:4], ()):
                    if abs(len(token) - len(query_token)) <= 3 and (
                        token.startswith(query_token) or query_token.startswith(token)
                    ):
                        found.update(self.by_token[token])
        return found


def _token_match(token: str, others: set[str]) -> bool:
    """Equal, or one a prefix of the other differing by ≤ 3 letters (``parse`` ~ ``parsing``,
    ``load`` ~ ``loads``/``loader``, not ``scan`` ~ ``scanstring``)."""
    if token in others:
        return True
    if len(token) < 4:
        return False
    return any(len(q) >= 4 and abs(len(q) - len(token)) <= 3
               and (q.startswith(token) or token.startswith(q)) for q in others)
