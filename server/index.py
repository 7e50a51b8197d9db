"""The workspace index (design §8 "Index" and "Search", §10 corrupted index, cancellation).

Every function of the workspace's files (see :mod:`server.workspace`) is turned into a unit
vector by a :class:`SearchModel` — today the LLM embedder over the function **as written**
(name, signature, docstring and body, design §2) — and stored in an hnswlib index (inner
product on L2-normalised vectors = cosine) next to a SQLite database of metadata.

Where and what (never inside the workspace)::

    <user cache dir>/pathfusion/<sha256(workspace root)[:16]>/   ($PATHFUSION_CACHE_DIR replaces
        manifest.json   {"format", "model_id", "search_model",     the first part)
                         "dim", "extractor_version", "root", "generation", "layout",
                         "index_sha256", "labels"}
        meta.sqlite     files(path, mtime_ns, size, content_hash)
                        functions(label = hnswlib label, path, qualname, name, start/end
                                  line/char (LSP, UTF-16), snippet, content_hash, deleted)
                        vectors(content_hash → float32 blob)   the vector cache
                        state(key, value)            schema, generation, layout, model_id
        index.bin       hnswlib's own format (no pickle anywhere)
        write.lock      held while a process changes any of the above (see "Processes")
        sync.lock       held by the process running a full sync

**Source of truth.**  SQLite holds everything, vectors included; every change is one SQLite
transaction that bumps ``generation``.  ``index.bin`` (the hnswlib graph) is derived from it
and saved *lazily*: rewriting and hashing it on every save of a file cost 350 ms at 100k
functions, so a small update only schedules a save (:data:`AUTOSAVE_DELAY_S` later, one save
for all the changes meanwhile); a full :meth:`WorkspaceIndex.sync` that changed anything, a
run that changed at least :data:`SAVE_AFTER_CHANGES` labels, a compaction,
:meth:`WorkspaceIndex.flush` and :meth:`WorkspaceIndex.close` save at once.  The manifest records the ``generation`` (and compaction ``layout``) the saved graph
reflects.  Labels are never reused and a label's vector never changes (a function whose
text changes gets a new label), so a graph that is a few generations behind is **repaired**
on open: the live labels it lacks are added from the stored vectors, the labels deleted
since are marked deleted (:attr:`WorkspaceIndex.repaired` says so).  Nothing is re-embedded.

The generation alone cannot prove that the graph matches: processes that wrote one index
at once (before the locks below) left a manifest at the database's generation over a graph
holding none of its functions.  So every open also **checks** the graph against SQLite: its
labels must all be functions of SQLite, a sample of its vectors must equal the stored ones
(and not be marked deleted), and a live function the graph lacks is added as by a repair.

When ``index.bin`` is missing, half written or fails its sha256 (checked *before* hnswlib
reads the file), predates a compaction, claims a state SQLite never had or fails that
check, it is rebuilt from the cached vectors, again without embedding anything; so is a
lost or unreadable manifest, when SQLite's ``state`` says the stored vectors come from this
very model.  When SQLite itself is unreadable (``quick_check`` fails, wrong schema), the
manifest names another model, or neither tells which model made the stored vectors, the
folder is wiped and everything is re-embedded.  Each case is logged with its reason and kept
in :attr:`WorkspaceIndex.rebuild_reason`.

**Writes** are atomic: SQLite changes happen in transactions, ``index.bin`` and
``manifest.json`` are written to a temp file in the same folder and ``os.replace``-d.

**In memory.**  Besides the hnswlib graph (used for the k-NN), every live vector is kept in
a float32 matrix whose rows are the labels, loaded from SQLite on open: scoring a candidate
is a row look-up (one matrix product for all of them) instead of ``hnswlib.get_items``
(≈ 47 µs per vector).  At 100k functions of 384 dims this is 154 MB.

**Incremental updates.**  A file whose (mtime, size) is unchanged is not read; one whose
content hash is unchanged is not parsed.  A changed file is parsed; each function's text is
hashed and looked up in the vector cache, so only new or edited functions are encoded.  A
function whose text did not change keeps its label (only its position is updated); others
are ``mark_deleted`` and new labels are added.  Deleted labels are compacted away when they
outnumber the live ones.

**Search** is hybrid: the query's vector k-NN (cosine in [-1, 1]) plus a lexical score:
a query that *is* a function's name or qualified name (exactly, or ignoring case) adds
:data:`EXACT_BONUS` (so exact identifier matches always rank first); an identifier query
inside a longer name (``scanstring`` in ``py_scanstring``) adds :data:`SUBTOKEN_BONUS` ×
the share of the name it covers; otherwise query words that match subtokens of a function's
name (``load config`` ↔ ``load_config``; ``parsing`` ↔ ``parse``, prefixes differing by ≤ 3
letters) add :data:`SUBTOKEN_BONUS` × (share of the name's subtokens matched) × (share of the
query's words, stop words left out, matched) — so a long natural-language query that merely
mentions ``json`` does not promote every ``json_*`` function.  :func:`lexical_bonus` is the
definition; :class:`_NameLookup` computes the same numbers for all names at once (numpy
over inverted lists), which is what makes search fast at 100k functions.

**Threads.**  Every public method may be called from a worker thread; one lock guards the
SQLite connection, the graph and the matrix, and is *not* held while encoding, so searches
run between the batches of a long indexing run.  Indexing runs are serialised.  A lazy save
holds the lock only while hnswlib writes the temp file, not while it is hashed.

**Processes.**  Several processes may open one index at once (two editor windows, the server
and ``pathfusion index``); each keeps its own graph and matrix in memory, so they follow one
protocol (:class:`server.locks.ProcessLock`, an OS file lock that dies with its holder):

* every change — a commit to SQLite, a graph save with its temp file, a compaction, the
  repairs and rebuilds of an open — happens while holding ``write.lock``, for a moment;
* whoever takes it first **catches up** with what the others committed (SQLite's
  ``generation`` moved): the new live labels are added to its matrix and graph from the
  stored vectors, the deleted ones removed; a compaction or a replaced database file means
  a reopen.  Labels are allocated after that, so two writers never take the same label;
* a read (search, status) checks the generation first — one SQLite look-up — and catches
  up the same way when another process moved it;
* a full :meth:`WorkspaceIndex.sync` holds ``sync.lock`` for its whole run, so a second
  indexer does not embed the same files again: it waits for its turn (with a message,
  cancellable) or, with ``wait=False``, returns at once with :attr:`IndexStats.busy` set —
  the index stays searchable meanwhile.  Saves of single files (:meth:`update_files`) do not
  wait for it; they commit between the other run's batches.

Temp files exist only while their writer holds ``write.lock``, so an open, which holds it,
removes every temp file it finds: they are the leftovers of a killed save.
Cancellation (``cancelled()`` returning True, polled between batches) stops after the
current batch: what was committed stays, the rest is indexed by the next run.
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import hnswlib
import numpy as np

from .atomic import write_atomic
from .embedder import Embedder
from .locks import ProcessLock
from .models import sha256_file
from .parsing import Document, FunctionInfo, SourceError, decode_source
from .paths import EXTRACTOR_VERSION, split_subtokens
from .snippets import snippet_parts
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
SUBTOKEN_BONUS = 0.5
"""Weight of the share of name subtokens a query mentions; 0.5 has the best validation MRR
of {0, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2} (`python -m model_export.tune_ranking`,
docs/results.md)."""
PRIVATE_PENALTY = 0.0
"""Subtracted from the score of a private helper (``_name``, not a dunder): when a public
function and its private helper score alike, the public one is what a query describes.
Chosen on validation by ``python -m model_export.tune_ranking`` (docs/results.md)."""
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
EMBED_BATCH = 32
"""Functions encoded between two cancellation checks / commits."""
AUTOSAVE_DELAY_S = 30.0
"""A small change saves the graph this many seconds later (one save for every change
meanwhile); until then a reopen repairs the older graph from SQLite."""
SAVE_AFTER_CHANGES = 1000
"""A run that added or deleted at least this many labels saves the graph when it ends:
re-adding that many on the next open would cost about as much as the save (≈ 0.7 ms per
vector at 100k functions)."""
GROWTH = 1.25
"""Capacity growth of the matrix and the graph (doubling would waste 150 MB at 100k)."""
SCORE_CHUNK = 512
"""Rows gathered at a time to score search candidates (a buffer that stays in cache)."""
EXPAND_CANDIDATES = 1000
EXPAND_FACTOR = 8
"""A search with more than EXPAND_CANDIDATES lexical candidates that might reach the top k
widens its k-NN set EXPAND_FACTOR times (see :meth:`WorkspaceIndex.search`)."""
OPEN_HEADROOM = 1.0625
"""Room for this much growth in the matrix and the graph as opened, before a resize."""
WRITE_LOCK = "write.lock"
"""Held by the process changing the stored index (module docstring, "Processes")."""
SYNC_LOCK = "sync.lock"
"""Held by the process running a full sync."""
GRAPH_CHECK_SAMPLE = 64
"""Live labels whose vectors in the opened graph are compared with the stored ones."""

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


class ManifestLost(IndexCorrupt):
    """``manifest.json`` is missing or unreadable while SQLite may still be fine."""


class _StaleView(Exception):
    """Another process compacted the labels while a search read them: search again."""


# --------------------------------------------------------------------------- search models


@runtime_checkable
class SearchModel(Protocol):
    """What turns functions and queries into the vectors the index searches.

    Why a protocol of its own (not :class:`~server.embedder.Embedder`): a fusion model
    encodes a function from more than its text (its code2vec paths too), and encodes a
    query differently from a function.  The index only relies on this: both methods return
    float32 ``[n, dim]`` rows of unit length, and a function's vector depends on nothing but
    the function's own text — the vector cache is keyed by the hash of ``func.source``.
    """

    @property
    def model_id(self) -> str:
        """Identity of the vector space: stored vectors are reused only under the same id."""
        ...

    @property
    def dim(self) -> int: ...

    def encode_functions(self, functions: Sequence[FunctionInfo]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbedderSearchModel:
    """The LLM embedder alone: a function is its source as written, a query its text.

    Reproduces the index's vectors from before :class:`SearchModel` existed bit for bit
    (same texts, same normalisation), so existing indexes stay valid.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def encode_functions(self, functions: Sequence[FunctionInfo]) -> np.ndarray:
        if not functions:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.embedder.embed([func.source for func in functions]), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        return np.stack([row / max(float(np.linalg.norm(row)), 1e-12) for row in vectors])


def as_search_model(model: SearchModel | Embedder) -> SearchModel:
    """``model`` itself, or a bare embedder wrapped in :class:`EmbedderSearchModel` (so the
    callers that predate :class:`SearchModel` keep working)."""
    if isinstance(model, SearchModel):
        return model
    return EmbedderSearchModel(model)


def search_model_from_settings(settings: Any, embedder: Embedder, code2vec: Any = None) -> SearchModel:
    """The search model the settings ask for — the one place where the server and the CLI
    pick it, so that they index and query in the same space.

    ``pathfusion.fusionVariant`` (``settings.fusion_variant``; ``default`` = the manifest's
    best variant) picks the fusion graph and query encoder of the models folder
    (:func:`server.fusion.search_runtime`).  A folder without a fusion export, or an
    embedder of another width than the fusions were trained on (a ``transformers`` model),
    gives :class:`EmbedderSearchModel`: the LLM embedding of function and query alone.
    """
    from .code2vec import Code2VecModel
    from .fusion import search_runtime
    from .models import ModelError

    models_dir = getattr(settings, "models_dir", None)
    device = getattr(settings, "device", "auto")
    try:
        model = code2vec if code2vec is not None else Code2VecModel.load(models_dir, device=device)
        runtime = search_runtime(model, embedder, getattr(settings, "fusion_variant", "default"), models_dir, device)
    except ModelError as exc:
        log.warning("search uses the LLM embedder alone: %s", exc)
        return EmbedderSearchModel(embedder)
    return runtime if runtime is not None else EmbedderSearchModel(embedder)


def _hash_or_remove(tmp: str) -> str:
    """sha256 of a freshly written temp graph; the temp file is removed if hashing fails."""
    try:
        return sha256_file(Path(tmp))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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


def model_identity(model: SearchModel | Embedder) -> str:
    """What must match for stored vectors to be reusable."""
    return f"{model.model_id}|dim={model.dim}|{EXTRACTOR_VERSION}|index-format={INDEX_FORMAT}"


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


def _unit_rows(vectors: Any, count: int, dim: int, what: str) -> np.ndarray:
    """``vectors`` as float32 ``[count, dim]`` unit rows; raises ValueError on a wrong shape
    or non-finite values.  Rows already of unit length are left bit for bit as they are."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (count, dim):
        raise ValueError(f"{what} returned shape {array.shape}, expected {(count, dim)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} returned non-finite values")
    norms = np.linalg.norm(array, axis=1)
    off = np.abs(norms - 1.0) > 1e-3
    if off.any():
        array = array.copy()
        array[off] /= np.maximum(norms[off], 1e-12)[:, None]
    return array


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
        """``{uri, range, name, qualname, score, snippet, signature, summary, path, line}``
        (``signature``: the ``def`` line on one line; ``summary``: the docstring's first line)."""
        data = asdict(self)
        data.pop("label")
        data["score"] = round(float(self.score), 6)
        data["signature"], data["summary"] = snippet_parts(self.snippet)
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


@dataclass
class _Pending:
    """A parsed file waiting for its vectors."""

    path: str
    mtime_ns: int
    size: int
    content_hash: str
    functions: list[tuple[FunctionInfo, str]]
    """(function, hash of its source text)"""


_Row = tuple[str, str, str, int, int, int, int, str, str]
"""(path, qualname, name, start line, start char, end line, end char, snippet, content hash)"""


# --------------------------------------------------------------------------- the index


class WorkspaceIndex:
    """The index of one workspace root for one search model.  Open with :meth:`open`."""

    def __init__(self, root: Path | str, model: SearchModel | Embedder, *, exclude: Iterable[str] = (),
                 max_file_size: int = 1_000_000, index_dir: Path | str | None = None,
                 autosave_s: float | None = AUTOSAVE_DELAY_S, follow_external_symlinks: bool = False) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.model = as_search_model(model)
        self.exclude = tuple(exclude)
        self.max_file_size = int(max_file_size)
        self.follow_external_symlinks = bool(follow_external_symlinks)
        """Index files that symlinks lead to outside the root (:mod:`server.workspace`)."""
        self.dir = Path(index_dir) if index_dir is not None else index_dir_for(self.root)
        self.model_id = model_identity(self.model)
        self.dim = int(self.model.dim)
        self.autosave_s = autosave_s
        """Seconds from a small change to the lazy save of the graph; None: only
        :meth:`flush`, :meth:`close` and large runs save it."""
        self.rebuild_reason: str | None = None
        self.repaired: str | None = None
        """How the graph was brought up to date from SQLite on open, if it had to be."""
        self._lock = threading.RLock()
        self._run_lock = threading.Lock()
        self._save_lock = threading.Lock()
        # Lock order: _run_lock, _save_lock, _syncing, _writer, _lock (never the other way).
        self._writer = ProcessLock(self.dir / WRITE_LOCK)
        self._syncing = ProcessLock(self.dir / SYNC_LOCK)
        self._db: sqlite3.Connection | None = None
        self._db_file: tuple[int, int] | None = None
        """(device, inode) of the database file opened: another process may replace it."""
        self._hnsw: Any = None
        self._generation = 0
        self._layout = 0
        self._saved_generation = -1
        """The generation that ``index.bin`` on disk reflects."""
        self._unsaved = 0
        """Labels added or deleted since the graph was last captured for saving."""
        self._timer: threading.Timer | None = None
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)
        self._live_count = 0
        self._next_label = 0
        self._lookup: _NameLookup | None = None
        self._gather: np.ndarray | None = None

    @classmethod
    def open(cls, root: Path | str, model: SearchModel | Embedder, **kwargs: Any) -> WorkspaceIndex:
        """Open (or create, repair or rebuild) the stored index; see the module docstring."""
        index = cls(root, model, **kwargs)
        index._open()
        return index

    @classmethod
    def from_settings(cls, root: Path | str, model: SearchModel | Embedder, settings: Any) -> WorkspaceIndex:
        """:meth:`open` with ``exclude``, ``max_file_size`` and ``follow_external_symlinks`` of a
        :class:`server.settings.Settings`."""
        return cls.open(root, model, exclude=getattr(settings, "exclude", ()),
                        max_file_size=getattr(settings, "max_file_size", 1_000_000),
                        follow_external_symlinks=getattr(settings, "follow_external_symlinks", False))

    # -- opening -------------------------------------------------------------------------------
    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with self._writer.hold(on_wait=self._waiting_for("changing")), self._lock:
                self._open_locked()
        except BaseException:
            self._close_files()
            raise

    def _open_locked(self) -> None:
        """Open, repair or rebuild what is stored (``write.lock`` and the lock held)."""
        self._remove_temps()
        lost: str | None = None
        try:
            manifest: dict[str, Any] | None = self._check_manifest()
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
            self._load_vectors()
            if lost is not None and self._next_label:
                raise IndexCorrupt(lost)
            self._load_hnsw(manifest)
        except IndexCorrupt as exc:
            self._note_rebuild(f"{exc}; rebuilding it from the cached vectors" if lost is None else
                               f"{exc}; rebuilding {HNSW_FILE} and {MANIFEST} from the vectors "
                               f"stored in {DATABASE}")
            self._rebuild_hnsw()

    def _waiting_for(self, what: str) -> Callable[[str], None]:
        """An ``on_wait`` callback that says, once, whom this process waits for."""
        def say(holder: str) -> None:
            log.warning("workspace index of %s: waiting for %s, which is %s it", self.root, holder, what)
        return say

    def _note_rebuild(self, reason: str) -> None:
        log.warning("workspace index %s: %s", self.dir, reason)
        self.rebuild_reason = reason

    def _remove_temps(self) -> None:
        """Temp files of saves that a killed process never finished (``write.lock`` held:
        a live writer keeps it while its temp file exists, so every one found is stale)."""
        for path in self.dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
                log.info("workspace index %s: removed %s, left by a killed save", self.dir, path.name)

    def _check_manifest(self) -> dict[str, Any]:
        path = self.dir / MANIFEST
        if not path.exists():
            if (self.dir / DATABASE).exists() or (self.dir / HNSW_FILE).exists():
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
        self._hnsw = None
        self._lookup = None
        self._saved_generation = -1
        self._unsaved = 0
        self._reset_vectors(0)

    def _open_db(self, trusted: bool = True) -> None:
        """Open SQLite (creating it when new).  ``trusted``: the manifest vouches that the
        stored vectors come from this model, so a database that predates ``state.model_id``
        may record it; without that (a lost manifest) only the recorded id can tell."""
        path = self.dir / DATABASE
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
                    db.execute("INSERT OR REPLACE INTO state VALUES ('model_id', ?)", (self.model_id,))
            elif version[0] != SCHEMA_VERSION:
                raise IndexCorrupt(f"{DATABASE} schema {version[0]} is not {SCHEMA_VERSION}")
            state = dict(db.execute(
                "SELECT key, value FROM state WHERE key IN ('generation', 'layout', 'model_id')"))
            stored_model = state.get("model_id")
            if stored_model is None:
                if not trusted:
                    raise IndexCorrupt(f"{DATABASE} does not record which model made its vectors")
                with db:
                    db.execute("INSERT OR REPLACE INTO state VALUES ('model_id', ?)", (self.model_id,))
            elif stored_model != self.model_id:
                raise IndexCorrupt(f"the model changed ({stored_model!r} → {self.model_id!r}); "
                                   f"re-embedding everything")
            self._generation = int(state.get("generation", 0))
            self._layout = int(state.get("layout", 0))
            st = os.stat(path)
        except IndexCorrupt:
            if db is not None:
                db.close()
            raise
        except (sqlite3.Error, ValueError, OSError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            raise IndexCorrupt(f"{DATABASE} is unreadable ({exc})") from exc
        self._db = db
        self._db_file = (st.st_dev, st.st_ino)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the workspace index is closed")
        return self._db

    # -- other processes (module docstring, "Processes") -------------------------------------
    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """``write.lock``, then the lock, with this process caught up with every commit of
        the others: what a change must hold (never taken with the lock already held)."""
        with self._writer.hold(on_wait=self._waiting_for("changing")), self._lock:
            self._refresh_locked()
            yield

    def _fresh(self) -> None:
        """Before a read: catch up when another process committed since this one looked.
        Costs one SQLite look-up when nobody did; must not be called with the lock held."""
        with self._lock:
            if not self._behind():
                return
        with self._writing():
            pass

    def _behind(self) -> bool:
        """Whether the stored index moved since this process last looked (lock held)."""
        if self._db is None:
            return False
        try:
            st = os.stat(self.dir / DATABASE)
        except OSError:
            return True
        if (st.st_dev, st.st_ino) != self._db_file:
            return True
        row = self._db.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
        return row is None or int(row[0]) != self._generation

    def _refresh_locked(self) -> None:
        """Catch up with what other processes committed (``write.lock`` and the lock held, so
        nothing changes meanwhile): new and deleted labels are applied to the graph, the
        matrix and the name look-up; a compaction (new ``layout``) or a database file
        replaced by a wipe means reopening everything."""
        if self._db is None or not self._behind():
            return
        try:
            st = os.stat(self.dir / DATABASE)
            state = dict(self._db.execute("SELECT key, value FROM state WHERE key IN ('generation', 'layout')"))
        except (OSError, sqlite3.Error, ValueError):
            st, state = None, {}
        if st is None or (st.st_dev, st.st_ino) != self._db_file or int(state.get("layout", 0)) != self._layout:
            log.info("workspace index %s: another process rebuilt it; reopening", self.dir)
            self._db.close()
            self._db = None
            self._hnsw = None
            self._lookup = None
            self.rebuild_reason = self.repaired = None
            self._open_locked()
            return
        self._catch_up(int(state.get("generation", 0)))

    def _catch_up(self, generation: int) -> None:
        """Apply the commits of other processes up to ``generation`` (same layout, locks held).

        Labels are never reused within a layout and a label's vector never changes, so the
        difference is the live labels from :attr:`_next_label` on and the labels deleted
        since; renames of kept labels only show in the name look-up, which is rebuilt."""
        db = self.db
        size = 4 * self.dim
        rows = db.execute(
            "SELECT f.label, v.vector FROM functions f LEFT JOIN vectors v ON v.content_hash = f.content_hash "
            "WHERE f.deleted = 0 AND f.label >= ? ORDER BY f.label", (self._next_label,)).fetchall()
        usable = [(label, blob) for label, blob in rows if blob is not None and len(blob) == size]
        if len(usable) < len(rows):
            log.warning("workspace index %s: %d functions another process indexed have no stored vector",
                        self.dir, len(rows) - len(usable))
        gone = [label for (label,) in db.execute(
            "SELECT label FROM functions WHERE deleted = 1 AND label < ?", (self._next_label,))
                if label < len(self._live) and self._live[label]]
        next_label = max(self._next_label,
                         int(db.execute("SELECT coalesce(max(label) + 1, 0) FROM functions").fetchone()[0]))
        for label in gone:
            self._hnsw_delete(label)
            self._live[label] = False
        self._live_count -= len(gone)
        self._reserve(next_label)
        if usable:
            labels = np.fromiter((label for label, _ in usable), dtype=np.int64, count=len(usable))
            vectors = np.frombuffer(b"".join(blob for _, blob in usable), dtype=np.float32).reshape(-1, self.dim)
            self._vectors[labels] = vectors
            self._live[labels] = True
            self._live_count += len(usable)
            self._hnsw.add_items(vectors, labels)
        self._next_label = next_label
        self._generation = generation
        self._lookup = None
        self._disk_graph_current()
        log.info("workspace index %s: caught up with another process (%d functions added, %d deleted)",
                 self.dir, len(usable), len(gone))

    # -- the in-memory matrix --------------------------------------------------------------------
    def _reset_vectors(self, labels: int, headroom: float = GROWTH) -> None:
        capacity = int(labels * headroom) + 64
        self._vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        self._live = np.zeros(capacity, dtype=bool)
        self._live_count = 0
        self._next_label = labels

    def _reserve(self, labels: int) -> None:
        """Room for labels below ``labels`` in the matrix and in the graph."""
        if labels > len(self._live):
            capacity = max(labels, int(len(self._live) * GROWTH) + 64)
            vectors = np.zeros((capacity, self.dim), dtype=np.float32)
            vectors[: len(self._vectors)] = self._vectors
            live = np.zeros(capacity, dtype=bool)
            live[: len(self._live)] = self._live
            self._vectors, self._live = vectors, live
        if self._hnsw is not None:
            capacity = self._hnsw.get_max_elements()
            if labels > capacity:
                self._hnsw.resize_index(max(labels, int(capacity * GROWTH) + 64))

    def _load_vectors(self) -> None:
        """Every live function's vector from SQLite into the matrix, in chunks: the blobs of
        100k functions at once would be 154 MB of short-lived bytes objects, whose memory
        the allocator keeps (RSS) long after they are freed."""
        next_label = int(self.db.execute("SELECT coalesce(max(label) + 1, 0) FROM functions").fetchone()[0])
        self._reset_vectors(next_label, headroom=OPEN_HEADROOM)
        cursor = self.db.execute(
            "SELECT f.label, v.vector FROM functions f LEFT JOIN vectors v ON v.content_hash = f.content_hash "
            "WHERE f.deleted = 0")
        size = 4 * self.dim
        live = 0
        while rows := cursor.fetchmany(4096):
            if any(blob is None or len(blob) != size for _, blob in rows):
                lost = sum(1 for _, blob in rows if blob is None or len(blob) != size)
                raise IndexCorrupt(f"{lost} indexed functions have no cached vector in {DATABASE}")
            labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            self._vectors[labels] = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(-1, self.dim)
            self._live[labels] = True
            live += len(rows)
        self._live_count = live

    # -- the graph -------------------------------------------------------------------------------
    def _new_hnsw(self, capacity: int) -> Any:
        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=max(capacity, 64), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M)
        index.set_num_threads(1)
        return index

    def _load_hnsw(self, manifest: dict[str, Any] | None) -> None:
        """The saved graph, repaired when SQLite moved on since it was saved."""
        if manifest is None:
            if self._next_label:
                raise IndexCorrupt("no manifest for the stored functions")
            self._hnsw = self._new_hnsw(64)
            self._save_locked()
            return
        path = self.dir / HNSW_FILE
        if not path.is_file():
            raise IndexCorrupt(f"{HNSW_FILE} is missing")
        saved, labels, layout = manifest.get("generation"), manifest.get("labels"), manifest.get("layout", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (saved, labels, layout)):
            raise IndexCorrupt(f"{MANIFEST} does not say which state of {DATABASE} {HNSW_FILE} holds")
        assert isinstance(saved, int) and isinstance(labels, int)
        if layout != self._layout:
            raise IndexCorrupt(f"{HNSW_FILE} predates a compaction of {DATABASE}")
        if saved > self._generation or labels > self._next_label:
            raise IndexCorrupt(f"{HNSW_FILE} claims a state {DATABASE} never had "
                               f"(generation {saved} > {self._generation} or {labels} labels > {self._next_label})")
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise IndexCorrupt(f"{HNSW_FILE} is unreadable ({exc})") from exc
        if digest != manifest.get("index_sha256"):
            raise IndexCorrupt(f"{HNSW_FILE} is corrupted or half written (sha256 mismatch)")
        index = hnswlib.Index(space="ip", dim=self.dim)
        try:
            index.load_index(str(path), max_elements=int(max(self._next_label, 64) * OPEN_HEADROOM))
        except Exception as exc:  # hnswlib raises RuntimeError on a bad file
            raise IndexCorrupt(f"{HNSW_FILE} cannot be loaded ({exc})") from exc
        if index.element_count != labels:
            raise IndexCorrupt(f"{HNSW_FILE} has {index.element_count} elements, its manifest says {labels}")
        index.set_num_threads(1)
        self._hnsw = index
        self._saved_generation = saved
        present = self._check_graph()
        lacking = int(np.count_nonzero(self._live[: self._next_label] & ~present))
        if saved < self._generation:
            self._repair(present, f"{HNSW_FILE} was {self._generation - saved} update(s) behind {DATABASE}")
        elif lacking:
            self._repair(present, f"{HNSW_FILE} lacked {lacking} live functions of {DATABASE} at the same "
                                  f"generation (written by two processes at once)")
            self._save_locked()  # the file on disk is wrong for its generation: fix it now

    def _check_graph(self) -> np.ndarray:
        """Which labels the freshly loaded graph holds (a bool per label), after checking that
        it belongs to this database (lock held): every label of the graph is a function of
        SQLite, and a sample of the live ones have their stored vector and are not marked
        deleted.  Raises :class:`IndexCorrupt` otherwise (a rebuild).

        Why more than the generation: a graph written by processes racing each other (or
        copied from another folder) can carry the right generation and element count over
        other functions; the checks cost a few milliseconds at 100k functions."""
        size = self._next_label
        ids = np.asarray(self._hnsw.get_ids_list(), dtype=np.int64)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise IndexCorrupt(f"{HNSW_FILE} holds labels that {DATABASE} never had")
        known = np.zeros(size, dtype=bool)
        cursor = self.db.execute("SELECT label FROM functions")
        while rows := cursor.fetchmany(65536):
            known[np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))] = True
        if not known[ids].all():
            raise IndexCorrupt(f"{HNSW_FILE} holds {int((~known[ids]).sum())} labels that are not "
                               f"functions of {DATABASE}")
        present = np.zeros(size, dtype=bool)
        present[ids] = True
        both = np.flatnonzero(self._live[:size] & present)
        if both.size:
            sample = np.unique(both[np.linspace(0, both.size - 1, min(both.size, GRAPH_CHECK_SAMPLE)).astype(np.int64)])
            try:
                stored = np.asarray(self._hnsw.get_items(sample), dtype=np.float32).reshape(sample.size, -1)
            except RuntimeError as exc:  # "Label not found": a live function marked deleted
                raise IndexCorrupt(f"{HNSW_FILE} marks live functions of {DATABASE} deleted ({exc})") from exc
            if stored.shape != (sample.size, self.dim) or not np.allclose(stored, self._vectors[sample], atol=1e-5):
                raise IndexCorrupt(f"{HNSW_FILE} holds other vectors than {DATABASE} under the same labels")
        return present

    def _repair(self, present: np.ndarray, why: str) -> None:
        """Bring a graph up to SQLite (lock held): labels are never reused and a label's
        vector never changes, so the difference is exactly the live labels the graph lacks
        (``present``: what it holds) and the labels deleted since."""
        missing = np.flatnonzero(self._live[: self._next_label] & ~present[: self._next_label])
        if missing.size:
            self._reserve(int(self._hnsw.element_count) + int(missing.size))
            self._hnsw.add_items(self._vectors[missing], missing)
        deleted = [row[0] for row in self.db.execute("SELECT label FROM functions WHERE deleted = 1")]
        for label in deleted:
            self._hnsw_delete(label)
        self.repaired = (f"{why}: added {missing.size} functions from the stored vectors, re-marked "
                         f"{len(deleted)} deleted ones")
        log.info("workspace index %s: %s", self.dir, self.repaired)
        self._unsaved += int(missing.size) + 1
        self._schedule_save()

    def _rebuild_hnsw(self) -> None:
        """A fresh graph from the live functions and the vector cache (compacts the labels,
        so the saved graph is useless afterwards: saved at once); files whose vectors are
        missing from the cache are re-indexed next run."""
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
            self._layout += 1
            db.execute("INSERT OR REPLACE INTO state VALUES ('layout', ?)", (str(self._layout),))
        self._reset_vectors(len(kept))
        index = self._new_hnsw(len(self._live))
        if kept:
            vectors = np.frombuffer(b"".join(row[10] for row in kept), dtype=np.float32).reshape(-1, self.dim)
            self._vectors[: len(kept)] = vectors
            self._live[: len(kept)] = True
            index.add_items(vectors, np.arange(len(kept)))
        self._live_count = len(kept)
        self._hnsw = index
        self._lookup = None
        self._save_locked()

    def _bump_generation(self) -> None:
        self._generation += 1
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('generation', ?)", (str(self._generation),))

    def _hnsw_delete(self, label: int) -> None:
        with contextlib.suppress(RuntimeError):  # already deleted
            self._hnsw.mark_deleted(int(label))

    # -- saving ----------------------------------------------------------------------------------
    def _write_graph(self) -> tuple[str, dict[str, Any]]:
        """The graph into a temp file, and the state it reflects (lock held)."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{HNSW_FILE}.", suffix=".tmp")
        os.close(fd)
        try:
            self._hnsw.save_index(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        state = {"generation": self._generation, "labels": int(self._hnsw.element_count),
                 "layout": self._layout}
        self._unsaved = 0
        return tmp, state

    def _install(self, tmp: str, state: dict[str, Any], digest: str) -> None:
        """``index.bin`` then ``manifest.json``, each atomically (lock held)."""
        try:
            os.replace(tmp, self.dir / HNSW_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        manifest = {
            "format": INDEX_FORMAT, "model_id": self.model_id, "search_model": self.model.model_id,
            "dim": self.dim, "extractor_version": EXTRACTOR_VERSION, "root": str(self.root),
            **state, "index_sha256": digest,
        }
        write_atomic(self.dir / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        self._saved_generation = int(state["generation"])

    def _save_locked(self) -> None:
        """Save the graph now, hashing it under the lock (opening, compaction)."""
        tmp, state = self._write_graph()
        self._install(tmp, state, _hash_or_remove(tmp))

    def flush(self) -> bool:
        """Save the graph if it lags behind SQLite; True if it saved.  The lock is held while
        hnswlib writes the temp file, not while it is hashed, so searches go on meanwhile;
        ``write.lock`` is held throughout (the temp file must not outlive it, see "Processes").
        Must not be called with the lock or ``write.lock`` held."""
        if self._db is None:  # closed: do not take (and reopen) the lock file
            return False
        with self._save_lock, self._writer.hold(on_wait=self._waiting_for("changing")):
            with self._lock:
                if self._db is None or self._hnsw is None:
                    return False
                self._refresh_locked()
                if self._saved_generation == self._generation or self._disk_graph_current():
                    return False
                graph, db = self._hnsw, self._db
                tmp, state = self._write_graph()
            digest = _hash_or_remove(tmp)
            with self._lock:
                if self._hnsw is not graph or self._db is not db or self._saved_generation >= state["generation"]:
                    with contextlib.suppress(OSError):  # a rebuild or a wipe replaced the graph meanwhile
                        os.unlink(tmp)
                    return False
                self._install(tmp, state, digest)
                return True

    def _disk_graph_current(self) -> bool:
        """Whether the saved graph already reflects this state (another process saved it after
        the changes this one caught up with); notes it if so (lock held)."""
        try:
            manifest = json.loads((self.dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        current = (isinstance(manifest, dict) and manifest.get("model_id") == self.model_id
                   and manifest.get("generation") == self._generation and manifest.get("layout", 0) == self._layout)
        if current:
            self._saved_generation = self._generation
        return current

    def _schedule_save(self) -> None:
        """One lazy save :attr:`autosave_s` from now for every change until then (lock held)."""
        if self.autosave_s is None or (self._timer is not None and self._timer.is_alive()):
            return
        timer = threading.Timer(self.autosave_s, self._autosave)
        timer.daemon = True  # a save interrupted by the exit is repaired on the next open
        timer.name = "pathfusion-index-save"
        self._timer = timer
        timer.start()

    def _autosave(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a full disk must not kill the thread silently
            log.warning("workspace index %s: saving %s failed: %s", self.dir, HNSW_FILE, exc)

    def close(self) -> None:
        """Save the graph if needed, then release everything."""
        if self._db is not None:
            try:
                self.flush()
            except Exception as exc:  # a full disk: the next open repairs the older graph
                log.warning("workspace index %s: saving %s failed: %s", self.dir, HNSW_FILE, exc)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._db is not None:
                self._db.close()
                self._db = None
            self._hnsw = None
            self._lookup = None
        self._close_files()

    def _close_files(self) -> None:
        self._writer.close()
        self._syncing.close()

    def __enter__(self) -> WorkspaceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- status ----------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(files, live functions) in the index."""
        with self._lock:
            files = self.db.execute("SELECT count(*) FROM files").fetchone()[0]
            return int(files), self._live_count

    def status(self) -> dict[str, Any]:
        """For ``pathfusion.status``: where the index is, what it holds, the last rebuild."""
        self._fresh()
        files, functions = self.counts()
        return {"root": str(self.root), "dir": str(self.dir), "model_id": self.model_id,
                "files": files, "functions": functions, "rebuild_reason": self.rebuild_reason,
                "repaired": self.repaired, "graph_saved": self._saved_generation == self._generation}

    def indexed_paths(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self.db.execute("SELECT path FROM files ORDER BY path")]

    # -- indexing --------------------------------------------------------------------------------
    def sync(self, progress: Progress | None = None, cancelled: Cancelled | None = None, *,
             wait: bool = True) -> IndexStats:
        """Bring the index up to date with the workspace: discover every file, index the
        changed ones, drop the vanished or newly ignored ones.  Also builds the name look-up,
        so that the first search does not pay for it.

        When another process is running a sync of the same folder, this one waits for it to
        end (saying so in the log; ``cancelled`` still stops it) and then finds little left
        to do; with ``wait=False`` it returns at once, indexing nothing, with
        :attr:`IndexStats.busy` saying who is indexing (the index is searchable meanwhile)."""
        start = time.perf_counter()
        with self._indexing_lock(wait=wait, cancelled=cancelled) as holder:
            if holder is not None:
                self._fresh()
                stats = IndexStats(cancelled=wait, busy=None if wait else holder)
                return self._finish(stats, start)
            found = discover(self.root, self.exclude, self.max_file_size, cancelled=cancelled,
                             follow_external_symlinks=self.follow_external_symlinks)
            if cancelled is not None and cancelled():
                stats = self._finish(IndexStats(cancelled=True), start)
                return stats
            wanted = {str(path) for path in found.files}
            gone = [path for path in self.indexed_paths() if path not in wanted]
            stats = self._index(sorted(wanted), gone, progress, cancelled, start, trust_stat=True,
                                save=True)
            stats.skipped[:0] = [(str(path), reason) for path, reason in found.skipped]
            if not stats.cancelled:
                with self._lock:
                    self._name_lookup().warm()
            return stats

    @contextlib.contextmanager
    def _indexing_lock(self, wait: bool = True, cancelled: Cancelled | None = None) -> Iterator[str | None]:
        """``sync.lock`` for a whole run: yields None once held, else (not waiting, or
        cancelled while waiting) who holds it."""
        if not self._syncing.acquire(blocking=wait, cancelled=cancelled, on_wait=self._waiting_for("indexing")):
            yield self._syncing.holder()
            return
        try:
            yield None
        finally:
            self._syncing.release()

    def update_files(self, paths: Iterable[Path | str], progress: Progress | None = None,
                     cancelled: Cancelled | None = None) -> IndexStats:
        """Re-index ``paths`` (saved or watched files).  A path that no longer exists or
        that the workspace rules now exclude is removed from the index."""
        start = time.perf_counter()
        rules = WorkspaceFilter(self.root, self.exclude, self.max_file_size,
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
        with self._run_lock:
            with self._writing():
                removed = self._remove(absolute)
                save_now = self._after_change() if removed else False
            if save_now:
                self.flush()
            return removed

    def rebuild(self, progress: Progress | None = None, cancelled: Cancelled | None = None) -> IndexStats:
        """Forget everything (vector cache included) and index the workspace again."""
        with self._run_lock, self._writer.hold(on_wait=self._waiting_for("changing")), self._lock:
            self._wipe("rebuild requested")
            self._open_db()
            self._load_hnsw(None)
        return self.sync(progress, cancelled)

    def _remove(self, paths: Sequence[str]) -> int:
        """Mark the functions of ``paths`` deleted (lock held, inside no transaction)."""
        removed = 0
        labels: list[int] = []
        db = self.db
        with db:
            for path in paths:
                labels.extend(row[0] for row in db.execute(
                    "SELECT label FROM functions WHERE path = ? AND deleted = 0", (path,)))
                db.execute("UPDATE functions SET deleted = 1 WHERE path = ? AND deleted = 0", (path,))
                removed += db.execute("DELETE FROM files WHERE path = ?", (path,)).rowcount
            if removed or labels:
                self._bump_generation()
        for label in labels:
            self._forget(label)
        return removed

    def _forget(self, label: int) -> None:
        """A deleted label leaves the graph, the matrix and the name look-up (lock held)."""
        self._hnsw_delete(label)
        if label < len(self._live) and self._live[label]:
            self._live[label] = False
            self._live_count -= 1
        if self._lookup is not None:
            self._lookup.remove(label)
        self._unsaved += 1

    def _after_change(self) -> bool:
        """Compact, or decide when to save, after a committed change (lock held); True when
        the caller should :meth:`flush` once it released the lock."""
        deleted = self._next_label - self._live_count
        if deleted > max(self._live_count, 256):
            self._rebuild_hnsw()  # compacts the deleted labels, saves
            return False
        if self._unsaved >= SAVE_AFTER_CHANGES:
            return True
        self._schedule_save()
        return False

    def _index(self, paths: Sequence[str], gone: Sequence[str], progress: Progress | None,
               cancelled: Cancelled | None, start: float, *, trust_stat: bool,
               save: bool = False) -> IndexStats:
        """Remove ``gone``, (re-)index ``paths``; with ``save`` (a full sync) the graph is
        saved at the end when anything changed, else only after large changes."""
        stats = IndexStats()
        with self._run_lock:
            with self._writing():
                stats.removed = self._remove(gone) if gone else 0
                known = self._known_files(paths)
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
            with self._writing():
                if stats.removed or stats.changed or stats.cancelled:
                    save_now = self._after_change() or save
            if save_now:
                self.flush()
            return self._finish(stats, start)

    def _known_files(self, paths: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        """(mtime, size, content hash) of the indexed ``paths`` (lock held); a save asks
        for one file, not for the thousand rows of every file."""
        query = "SELECT path, mtime_ns, size, content_hash FROM files"
        if not paths:
            return {}
        if len(paths) > 500:
            return {row[0]: (row[1], row[2], row[3]) for row in self.db.execute(query)}
        marks = ",".join("?" * len(paths))
        return {row[0]: (row[1], row[2], row[3])
                for row in self.db.execute(f"{query} WHERE path IN ({marks})", list(paths))}

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

    def _flush(self, pending: list[_Pending], stats: IndexStats, cancelled: Cancelled | None = None) -> bool:
        """Encode what the cache lacks (lock not held), then store the files (one
        transaction); False when cancelled first.

        The encoding runs :data:`EMBED_BATCH` functions at a time with a cancellation check
        in between, so that one file with thousands of functions cannot hold up a cancel or
        a disconnect for minutes; the vectors of a cancelled flush go to the vector cache
        (the next run reuses them), its files are left for the next run.
        """
        hashes = {h for item in pending for _, h in item.functions}
        with self._lock:
            cached = self._cached_vectors(hashes)
        todo: dict[str, FunctionInfo] = {}
        for item in pending:
            for func, h in item.functions:
                if h not in cached:
                    todo.setdefault(h, func)
        fresh: dict[str, np.ndarray] = {}
        keys = list(todo)
        for start in range(0, len(keys), EMBED_BATCH):
            if start and cancelled is not None and cancelled():
                with self._writing(), self.db:
                    self.db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                                        [(h, v.tobytes()) for h, v in fresh.items()])
                return False
            chunk = keys[start:start + EMBED_BATCH]
            vectors = _unit_rows(self.model.encode_functions([todo[k] for k in chunk]), len(chunk), self.dim,
                                 "the search model")
            fresh.update(zip(chunk, vectors, strict=True))
        with self._writing():
            self._store(pending, cached, fresh, stats)
        return True

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
        """Write the files' functions (one transaction), then apply the same change to the
        graph, the matrix and the name look-up (lock held)."""
        db = self.db
        next_label = self._next_label
        added: list[tuple[int, _Row, np.ndarray]] = []
        renamed: list[tuple[int, _Row]] = []
        deleted: list[int] = []
        with db:
            db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                           [(h, v.astype(np.float32).tobytes()) for h, v in fresh.items()])
            for item in pending:
                old: dict[str, list[tuple[int, _Row]]] = {}
                for label, *columns in db.execute(
                        "SELECT label, path, qualname, name, start_line, start_char, end_line, end_char, "
                        "snippet, content_hash FROM functions WHERE path = ? AND deleted = 0 ORDER BY label",
                        (item.path,)):
                    row: _Row = tuple(columns)
                    old.setdefault(row[8], []).append((label, row))
                counted: set[str] = set()
                for func, digest in item.functions:
                    if digest in fresh and digest not in counted:
                        stats.embedded += 1
                        counted.add(digest)
                    else:
                        stats.cached += 1
                    new: _Row = (item.path, func.qualname, func.name, func.span.start.line,
                                 func.span.start.character, func.span.end.line, func.span.end.character,
                                 snippet_of(func.source), digest)
                    reuse = old.get(digest)
                    if reuse:
                        label, previous = reuse.pop(0)
                        if previous != new:  # moved (or renamed by its class): same text, same vector
                            db.execute("UPDATE functions SET path=?, qualname=?, name=?, start_line=?, "
                                       "start_char=?, end_line=?, end_char=?, snippet=?, content_hash=? "
                                       "WHERE label = ?", (*new, label))
                            if previous[1] != new[1]:
                                renamed.append((label, new))
                        continue
                    label = next_label
                    next_label += 1
                    db.execute("INSERT INTO functions VALUES (?,?,?,?,?,?,?,?,?,?,0)", (label, *new))
                    added.append((label, new, fresh[digest] if digest in fresh else cached[digest]))
                gone = [label for entries in old.values() for label, _ in entries]
                if gone:
                    marks = ",".join("?" * len(gone))
                    db.execute(f"UPDATE functions SET deleted = 1 WHERE label IN ({marks})", gone)
                    deleted.extend(gone)
                db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                           (item.path, item.mtime_ns, item.size, item.content_hash))
            self._bump_generation()
        for label in deleted:
            self._forget(label)
        if added:
            labels = np.fromiter((label for label, _, _ in added), dtype=np.int64, count=len(added))
            vectors = np.stack([vector for _, _, vector in added]).astype(np.float32, copy=False)
            self._reserve(next_label)
            self._vectors[labels] = vectors
            self._live[labels] = True
            self._live_count += len(added)
            self._hnsw.add_items(vectors, labels)
            self._unsaved += len(added)
        self._next_label = next_label
        if self._lookup is not None:
            for label, row in renamed:
                self._lookup.add(label, row[2], row[1])
            for label, row, _ in added:
                self._lookup.add(label, row[2], row[1])

    # -- search ----------------------------------------------------------------------------------
    def _name_lookup(self) -> _NameLookup:
        """The name look-up, built from SQLite once and then kept up to date (lock held)."""
        if self._lookup is None:
            self._lookup = _NameLookup.from_rows(
                self.db.execute("SELECT label, name, qualname FROM functions WHERE deleted = 0"))
        return self._lookup

    def _name_table(self) -> dict[int, tuple[str, str, tuple[str, ...]]]:
        """label → (name, qualname, subtokens of the name) of every live function."""
        with self._lock:
            return self._name_lookup().table

    def embed_query(self, text: str) -> np.ndarray:
        """The unit vector of a query (the search model's query side)."""
        return _unit_rows(self.model.encode_queries([text]), 1, self.dim, "the search model")[0]

    def _knn(self, vector: np.ndarray, k: int, live: int, ef: int | None = None) -> dict[int, float]:
        """hnswlib's ``k`` nearest live labels and their cosine (lock held)."""
        if live == 0 or k <= 0:
            return {}
        k = min(k, live)
        # ef 200: recall@10 0.999 at 100k functions (benchmarks/search_index.py measured
        # 0.988 at ef 50, 0.999 at ef 100); the old 1000 cost ~10x more for nothing.
        self._hnsw.set_ef(ef if ef is not None else max(2 * k, 100, min(live, 200)))
        try:
            labels, distances = self._hnsw.knn_query(vector.reshape(1, -1), k=k)
        except RuntimeError:  # fewer reachable live elements than k (many deletions)
            return self._exact_knn(vector, k)
        return {int(label): 1.0 - float(dist) for label, dist in zip(labels[0], distances[0], strict=True)}

    def _exact_knn(self, vector: np.ndarray, k: int) -> dict[int, float]:
        """The ``k`` best live labels by brute force over the matrix (lock held): what a
        search falls back to when the graph cannot return ``k`` neighbours, instead of
        failing (≈ 20 ms at 100k functions)."""
        scores = self._vectors[: self._next_label] @ vector
        scores[~self._live[: self._next_label]] = -np.inf
        k = min(k, self._live_count)
        if k <= 0:
            return {}
        top = np.argpartition(-scores, k - 1)[:k]
        return {int(label): float(scores[label]) for label in top}

    def _scores(self, vector: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Cosine of ``vector`` with the stored vectors of ``labels`` (float64; lock held:
        the buffer is shared).

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
                np.take(self._vectors, part, axis=0, out=rows)
                np.matmul(rows, vector, out=out[start:start + part.size])
        return out.astype(np.float64)

    def search(self, query: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` best functions for ``query`` (hybrid ranking, see the module docstring)."""
        query = query.strip()
        if not query or k <= 0:
            return []
        vector = self.embed_query(query)
        for _ in range(3):
            self._fresh()
            with contextlib.suppress(_StaleView):
                return self._search(query, vector, k)
        return []

    def _search(self, query: str, vector: np.ndarray, k: int) -> list[SearchResult]:
        exact_form, query_tokens = query_features(query)
        with self._lock:
            live = self._live_count
            lookup = self._name_lookup()
            labels, bonus = lookup.bonuses(query, exact_form, query_tokens)
            dense = np.zeros(max(len(lookup.n_tokens), self._next_label), dtype=np.float64)
            dense[labels] = bonus
            # A function outside the k-NN set scores at most the lowest k-NN score plus its
            # bonus, so it can reach the top k only with a bonus of at least ``need`` (the
            # k-th k-NN score minus the lowest: bonuses only raise the k-th total).  This
            # does not change the ranking (given an exact k-NN) and spares the vector
            # scores of the names whose bonus is too small.  When thousands of names still
            # qualify (a common subtoken), a k-NN set 8x larger lowers its lowest score, and
            # so raises ``need``, for far less than scoring them.
            width = max(4 * k, 50)
            knn, knn_scores, keep = self._knn_set(vector, width, live, None, labels, bonus, k)
            if int(keep.sum()) > EXPAND_CANDIDATES and live > width:
                wide = min(live, EXPAND_FACTOR * width)
                knn, knn_scores, keep = self._knn_set(vector, wide, live, max(wide, 200), labels, bonus, k)
            outside = labels[keep]
            all_labels = np.concatenate([knn, outside])
            totals = np.concatenate([knn_scores + dense[knn] + lookup.priors(knn),
                                     self._scores(vector, outside) + bonus[keep] + lookup.priors(outside)])
            order = np.lexsort((all_labels, -totals))[:k]
            return self._results([(float(totals[i]), int(all_labels[i])) for i in order])

    def _knn_set(self, vector: np.ndarray, width: int, live: int, ef: int | None, labels: np.ndarray,
                 bonus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k-NN labels, their scores, and which lexical ``labels`` outside them can still
        reach the top ``k`` (lock held)."""
        knn = np.fromiter(self._knn(vector, width, live, ef), dtype=np.int64)
        knn_scores = self._scores(vector, knn)
        keep = (bonus >= _needed_bonus(knn_scores, k)) & ~np.isin(labels, knn)
        return knn, knn_scores, keep

    def similar(self, target: np.ndarray | str | tuple[Path | str, str] | SearchResult,
                k: int = 10) -> list[SearchResult]:
        """The ``k`` functions most similar to ``target``: a vector, a query text (encoded as
        a query), a ``(path, qualname)`` of an indexed function or a :class:`SearchResult`
        (the function itself is left out of its own results)."""
        exclude: set[int] = set()
        self._fresh()
        with self._lock:
            if isinstance(target, SearchResult):
                target = (target.path, target.qualname)
            if isinstance(target, tuple):
                path, qualname = target
                row = self.db.execute(
                    "SELECT label FROM functions WHERE path = ? AND qualname = ? AND deleted = 0 "
                    "ORDER BY label LIMIT 1", (str(Path(os.path.abspath(path))), qualname)).fetchone()
                if row is None or not self._live[int(row[0])]:
                    return []
                exclude.add(int(row[0]))
                vector = self._vectors[int(row[0])].copy()
            elif isinstance(target, str):
                vector = None
            else:
                vector = np.asarray(target, dtype=np.float32).reshape(-1)
        if vector is None:
            vector = self.embed_query(str(target))
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with self._lock, contextlib.suppress(_StaleView):
            labels = np.fromiter((label for label in self._knn(vector, k + len(exclude), self._live_count)
                                  if label not in exclude), dtype=np.int64)
            scores = self._scores(vector, labels)
            order = np.lexsort((labels, -scores))[:k]
            return self._results([(float(scores[i]), int(labels[i])) for i in order])
        return []  # another process compacted the index meanwhile: its labels changed

    def _results(self, ranked: Sequence[tuple[float, int]]) -> list[SearchResult]:
        """The rows of the ranked labels (one query), in the given order (lock held); raises
        :class:`_StaleView` when another process renumbered the labels meanwhile."""
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        db = self.db
        db.execute("BEGIN")  # one snapshot for the layout and the rows
        try:
            layout = db.execute("SELECT value FROM state WHERE key = 'layout'").fetchone()
            if int(layout[0] if layout else 0) != self._layout:
                raise _StaleView  # another process compacted since _fresh(): labels mean other rows
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


def _needed_bonus(scores: np.ndarray, k: int) -> float:
    """The bonus a function outside the k-NN set needs to reach the top ``k``: the k-th
    vector score minus the lowest one (-inf when the k-NN set is not larger than k)."""
    if len(scores) <= k:
        return float("-inf")
    ordered = np.sort(scores)[::-1]
    return float(ordered[k - 1] - ordered[-1])


def query_features(query: str) -> tuple[bool, set[str]]:
    """What the lexical ranking reads from a query: whether it is spelled like an identifier
    (``exact_form``: exact and substring name matches apply) and its subtokens minus stop
    words.  Shared by :meth:`WorkspaceIndex.search` and ``pathfusion eval search``."""
    words = re.findall(r"[A-Za-z_][\w.]*|\d+", query)
    exact_form = re.fullmatch(r"[A-Za-z_][\w.]*", query) is not None
    return exact_form, {token for word in words for token in split_subtokens(word)} - STOP_WORDS


def is_private(name: str) -> bool:
    """A private helper's name: one leading underscore or more, not a dunder."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__") and len(name) > 4)


def name_prior(name: str) -> float:
    """The ranking's prior for a function by its name (:data:`PRIVATE_PENALTY`)."""
    return -PRIVATE_PENALTY if is_private(name) else 0.0


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
    """:func:`lexical_bonus` for every live name at once, kept up to date label by label.

    Why: testing every name on every query cost ≈ 7 µs per function (0.7 s at 100k), and
    scoring the ≈ 10k names that share a common subtoken with a query one by one still
    cost ≈ 100 ms.  Here exact and case-insensitive names and qualnames are dict look-ups,
    substrings one ``re`` pass over every lower-cased name joined by newlines, and the
    subtoken bonus is numpy over inverted lists (subtoken → {label: occurrences}): the
    name-side hits are a weighted ``bincount`` over the lists of the subtokens that match a
    query token, the query-side hits one ``bincount`` per query token.  The arithmetic is
    that of :func:`lexical_bonus`, in the same order, so the numbers are identical
    (``tests/test_index_lexical.py`` checks it).

    Updates are incremental (an edit must not cost a rebuild at 100k functions): a removed
    label leaves the dicts and lists at once; its line in the joined names stays as a dead
    entry (skipped when found) until dead entries outnumber the live ones.
    """

    def __init__(self, table: dict[int, tuple[str, str, tuple[str, ...]]] | None = None) -> None:
        table = table or {}
        self.table: dict[int, tuple[str, str, tuple[str, ...]]] = dict(table)
        self.exact: dict[str, set[int]] = {}
        self.caseless: dict[str, set[int]] = {}
        self.postings: dict[str, dict[int, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        size = max(table, default=-1) + 65
        self.n_tokens = np.zeros(size, dtype=np.float64)
        self.name_len = np.zeros(size, dtype=np.float64)
        self.private = np.zeros(size, dtype=np.float64)
        # The bulk of a 100k-function index is built here in one pass (≈ 3x faster than
        # add() per label: no per-label array writes, prefixes once per distinct subtoken).
        exact, caseless, postings = self.exact, self.caseless, self.postings
        for label, (name, qualname, tokens) in table.items():
            exact.setdefault(name, set()).add(label)
            if qualname != name:
                exact.setdefault(qualname, set()).add(label)
            lowered, lowered_qualname = name.lower(), qualname.lower()
            caseless.setdefault(lowered, set()).add(label)
            if lowered_qualname != lowered:
                caseless.setdefault(lowered_qualname, set()).add(label)
            for token in tokens:
                posting = postings.setdefault(token, {})
                posting[label] = posting.get(label, 0) + 1
        if table:
            labels = np.fromiter(table, dtype=np.int64, count=len(table))
            self.n_tokens[labels] = np.fromiter((len(row[2]) for row in table.values()), dtype=np.float64,
                                                count=len(table))
            self.name_len[labels] = np.fromiter((len(row[0]) for row in table.values()), dtype=np.float64,
                                                count=len(table))
            self.private[labels] = np.fromiter((is_private(row[0]) for row in table.values()), dtype=np.float64,
                                               count=len(table))
        self.by_prefix: dict[str, set[str]] = {}
        for token in postings:
            if len(token) >= 4:
                self.by_prefix.setdefault(token[:4], set()).add(token)
        # the joined names: entry i starts at starts[i] and belongs to label order[i];
        # entry_of[label] is its live entry (-1: none)
        self._haystack = ""
        self._starts = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._entry_of = np.full(size, -1, dtype=np.int64)
        self._alive = 0
        self._pending: dict[int, str] = {label: row[0].lower() for label, row in table.items()}

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, str, str]]) -> _NameLookup:
        """From ``(label, name, qualname)`` rows."""
        return cls({label: (name, qualname, split_subtokens(name)) for label, name, qualname in rows})

    def _grow(self, size: int) -> None:
        if size > len(self.n_tokens):
            capacity = max(size, int(len(self.n_tokens) * GROWTH) + 64)
            for attr, fill in (("n_tokens", 0), ("name_len", 0), ("private", 0), ("_entry_of", -1)):
                old = getattr(self, attr)
                new = np.full(capacity, fill, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, attr, new)

    # -- updates ---------------------------------------------------------------------------------
    def add(self, label: int, name: str, qualname: str, tokens: tuple[str, ...] | None = None) -> None:
        """Add ``label`` (or replace what it was)."""
        if label in self.table:
            self.remove(label)
        tokens = split_subtokens(name) if tokens is None else tokens
        self.table[label] = (name, qualname, tokens)
        for key in {name, qualname}:
            self.exact.setdefault(key, set()).add(label)
        for key in {name.lower(), qualname.lower()}:
            self.caseless.setdefault(key, set()).add(label)
        counts: dict[str, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        for token, count in counts.items():
            self.postings.setdefault(token, {})[label] = count
            self._arrays.pop(token, None)
            if len(token) >= 4:
                self.by_prefix.setdefault(token[:4], set()).add(token)
        self._grow(label + 1)
        self.n_tokens[label] = len(tokens)
        self.name_len[label] = len(name)
        self.private[label] = float(is_private(name))
        self._pending[label] = name.lower()

    def remove(self, label: int) -> None:
        row = self.table.pop(label, None)
        if row is None:
            return
        name, qualname, tokens = row
        for index, keys in ((self.exact, {name, qualname}), (self.caseless, {name.lower(), qualname.lower()})):
            for key in keys:
                labels = index.get(key)
                if labels is not None:
                    labels.discard(label)
                    if not labels:
                        del index[key]
        for token in set(tokens):
            posting = self.postings.get(token)
            if posting is not None:
                posting.pop(label, None)
                if not posting:
                    del self.postings[token]
            self._arrays.pop(token, None)
        if self._entry_of[label] >= 0:
            self._entry_of[label] = -1
            self._alive -= 1
        self.private[label] = 0.0
        self._pending.pop(label, None)

    def priors(self, labels: np.ndarray) -> np.ndarray:
        """:func:`name_prior` of ``labels`` (live labels of the table)."""
        return -PRIVATE_PENALTY * self.private[labels]

    def _names_text(self) -> str:
        """The joined lower-cased names, with the pending additions appended (or rebuilt
        when dead entries outnumber the live ones)."""
        if len(self._order) - self._alive > max(len(self.table), 1024):
            self._haystack, self._alive = "", 0
            self._starts, self._order = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            self._entry_of[:] = -1
            self._pending = {label: row[0].lower() for label, row in self.table.items()}
        if self._pending:
            labels = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
            lengths = np.fromiter((len(part) + 1 for part in self._pending.values()), dtype=np.int64,
                                  count=len(self._pending))
            first = len(self._haystack) + 1 if self._haystack else 0
            starts = first + np.concatenate([[0], np.cumsum(lengths)[:-1]])
            joined = "\n".join(self._pending.values())
            self._haystack = f"{self._haystack}\n{joined}" if self._haystack else joined
            self._entry_of[labels] = len(self._order) + np.arange(len(labels))
            self._starts = np.concatenate([self._starts, starts])
            self._order = np.concatenate([self._order, labels])
            self._alive += len(labels)
            self._pending = {}
        return self._haystack

    def warm(self) -> None:
        """Do now what the first query would (join the names)."""
        self._names_text()

    # -- look-ups --------------------------------------------------------------------------------
    def _substring_labels(self, needle: str) -> np.ndarray:
        """Live labels whose lower-cased name contains ``needle`` (no newline in it, so a
        match never spans two names; ``re`` finds them in C, numpy maps them to labels)."""
        haystack = self._names_text()
        positions = np.fromiter((match.start() for match in re.finditer(re.escape(needle), haystack)),
                                dtype=np.int64)
        if positions.size == 0:
            return positions
        entries = np.unique(np.searchsorted(self._starts, positions, side="right") - 1)
        labels = self._order[entries]
        return labels[self._entry_of[labels] == entries]

    def _matching_tokens(self, query_token: str) -> list[str]:
        """Indexed subtokens that :func:`_token_match` pairs with ``query_token`` (equal, or
        ≥ 4 letters, a prefix of one another, lengths within 3; such pairs share their first
        4 letters)."""
        found = [query_token] if query_token in self.postings else []
        if len(query_token) >= 4:
            for token in self.by_prefix.get(query_token[:4], ()):
                if token != query_token and token in self.postings and abs(len(token) - len(query_token)) <= 3 \
                        and (token.startswith(query_token) or query_token.startswith(token)):
                    found.append(token)
        return found

    def _posting(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, occurrences as float64) of ``token``, cached until it changes."""
        arrays = self._arrays.get(token)
        if arrays is None:
            posting = self.postings[token]
            arrays = (np.fromiter(posting.keys(), dtype=np.int64, count=len(posting)),
                      np.fromiter(posting.values(), dtype=np.float64, count=len(posting)))
            self._arrays[token] = arrays
        return arrays

    def token_bonuses(self, query_tokens: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels, bonus) of the subtoken rule of :func:`lexical_bonus` for every name
        sharing a (prefix-)matching subtoken with the query."""
        per_query = {q: self._matching_tokens(q) for q in query_tokens}
        matched = {token for tokens in per_query.values() for token in tokens}
        if not matched:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        postings = [self._posting(token) for token in matched]
        size = len(self.n_tokens)
        name_hits = np.bincount(np.concatenate([labels for labels, _ in postings]),
                                weights=np.concatenate([counts for _, counts in postings]), minlength=size)
        per_token = [np.unique(np.concatenate([self._posting(t)[0] for t in tokens]))
                     for tokens in per_query.values() if tokens]
        query_hits = np.bincount(np.concatenate(per_token), minlength=size)
        labels = np.flatnonzero(name_hits)
        bonus = SUBTOKEN_BONUS * (name_hits[labels] / self.n_tokens[labels]) \
            * (query_hits[labels] / len(query_tokens))
        return labels.astype(np.int64), bonus

    def bonuses(self, query: str, exact_form: bool, query_tokens: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels, bonus) of every live name with a non-zero :func:`lexical_bonus`, each
        label once; the rules apply in :func:`lexical_bonus`'s order (a later, stronger rule
        replaces an earlier one's value)."""
        labels = np.zeros(0, dtype=np.int64)
        bonus = np.zeros(0, dtype=np.float64)
        if query_tokens:
            labels, bonus = self.token_bonuses(query_tokens)
        if not exact_form:
            return labels, bonus
        lowered = query.lower()
        if len(query) >= 4:
            found = self._substring_labels(lowered)
            if found.size:
                keep = ~np.isin(labels, found)
                labels = np.concatenate([labels[keep], found])
                bonus = np.concatenate([bonus[keep], SUBTOKEN_BONUS * len(query) / self.name_len[found]])
        exact = self.exact.get(query, set())
        override = {label: EXACT_BONUS for label in exact}
        override.update({label: CASELESS_BONUS for label in self.caseless.get(lowered, ()) if label not in exact})
        if override:
            found = np.fromiter(override, dtype=np.int64, count=len(override))
            keep = ~np.isin(labels, found)
            labels = np.concatenate([labels[keep], found])
            bonus = np.concatenate([bonus[keep], np.fromiter(override.values(), dtype=np.float64,
                                                              count=len(override))])
        return labels, bonus

    def candidates(self, query: str, exact_form: bool, query_tokens: set[str]) -> set[int]:
        """Every label with a non-zero bonus for the query."""
        labels, _ = self.bonuses(query, exact_form, query_tokens)
        return {int(label) for label in labels}


def _token_match(token: str, others: set[str]) -> bool:
    """Equal, or one a prefix of the other differing by ≤ 3 letters (``parse`` ~ ``parsing``,
    ``load`` ~ ``loads``/``loader``, not ``scan`` ~ ``scanstring``)."""
    if token in others:
        return True
    if len(token) < 4:
        return False
    return any(len(q) >= 4 and abs(len(q) - len(token)) <= 3
               and (q.startswith(token) or token.startswith(q)) for q in others)
