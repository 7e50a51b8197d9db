"""The language server (design §8): hover name suggestions, rename code actions and
semantic search over the workspace index.

Why the handlers are thin and the work is elsewhere: the event loop only keeps the
documents in sync and answers; every model call, parse for a request and jedi refactoring
runs in a thread pool on an immutable :class:`Snapshot` (uri, version, text and a copy of
the loop's syntax tree), and a result computed for a version that is no longer the
document's is dropped.  The loop's :class:`~server.parsing.Document` objects are never
touched by a worker thread; workers share one :class:`SnapshotDocument` per document version
(:class:`WorkerDocuments`), so repeated hovers neither re-parse nor re-list the functions.

Models are loaded lazily, on the first request that needs one, and again when
``modelsDir`` or ``device`` change.  A folder that cannot be used is reported once with
``window/showMessage``; the features then answer nothing until the settings change.

The workspace index (:class:`~server.index.WorkspaceIndex`, one per workspace folder) is
opened on ``initialized`` with the search model of the settings
(:func:`~server.index.search_model_from_settings` over the embedder of the same models
folder as the code2vec model) and synced with a cancellable ``window/workDoneProgress``.
``workspace/didChangeWorkspaceFolders`` closes the removed folders' indexes and opens and
syncs the added ones; the other folders keep theirs.  Indexing runs and
incremental updates (``didSave``, ``didChangeWatchedFiles``, watched dynamically for
``**/*.py``) are serialised on a single dedicated thread, so an edit arriving during indexing
waits for the run instead of racing it, and hovers keep the shared pool; searches
(``pathfusion.search``, ``workspace/symbol``, "Similar functions" in the hover) run on the
shared pool against the index's own lock.  Without an embedder the user is warned once and
the search features answer empty.

Ending: ``shutdown`` stops the indexing run (at its next batch) and saves the indexes;
when the connection ends without it (the client closed the pipe or died), :meth:`serve`
does the same and exits by itself instead of waiting for a run nobody will see.

Positions are UTF-16 (the LSP default): the server removes the client's other position
encodings from ``initialize`` so that it never negotiates another one.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import difflib
import keyword
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol.language_server import lsp_method
from pygls.uris import from_fs_path, to_fs_path

from .code2vec import Code2VecModel, Predictor, Suggestion, is_dunder, suggest_for_document
from .documents import apply_changes, sized
from .embedder import Embedder, load_embedder
from .fusion import FusionPredictor, naming_predictor
from .index import SearchModel, SearchResult, WorkspaceIndex, search_model_from_settings
from .models import ModelError, default_models_dir
from .parsing import Document, FunctionInfo, Position
from .paths import mask_source
from .positions import TextBuffer, line_start, split_lines, strip_line_end, utf16_to_index
from .protocol import RobustProtocol, start_io, start_tcp, well_formed
from .rename_files import MIRRORS, RenameFiles, RenameFilesError, read_text, regular_file_problem
from .rename_safety import (
    candidate_count,
    clashes,
    compiles,
    identifiers,
    name_problem,
    safe_suggestion,
)
from .settings import SECTION, Settings
from .workspace import is_inside

log = logging.getLogger(__name__)

NAME = "pathfusion"
VERSION = "0.1.0"
STATUS_COMMAND = "pathfusion.status"
SEARCH_COMMAND = "pathfusion.search"
REINDEX_COMMAND = "pathfusion.reindex"
SIMILAR_IN_HOVER = 3
WATCH_REGISTRATION_ID = "pathfusion-watch-py"
SYMBOL_RESULTS = 20
RENAME_KIND = types.CodeActionKind.RefactorRewrite
SKIPPED_IN_STATUS = 50
"""Skipped files (path, reason) listed per folder in ``pathfusion.status``."""
EXIT_TIMEOUT_S = 5.0
"""After the connection ends, how long the indexing thread may take to stop at its next
cancellation check before the process exits without it."""
WORKER_DOCUMENTS = 16


@dataclass(frozen=True)
class Snapshot:
    """What a worker thread may see of a document."""

    uri: str
    version: int
    text: str
    tree: Any = field(default=None, compare=False, repr=False)
    """A copy of the loop's tree-sitter tree of ``text`` (None: parse ``text``).  Copying is
    O(1) and is what tree-sitter asks for before a tree is used on another thread; it spares
    every request a full parse (25 ms for ``argparse.py``)."""


class SnapshotDocument(Document):
    """A worker's read-only view of a :class:`Snapshot`.

    Why a subclass: a hover needs the function under the cursor, not a new parse and two
    full listings of the document's functions (that was 50 of the 55 ms of a warm hover on
    ``argparse.py``).  The tree comes from the snapshot, and :meth:`functions` is computed
    once per version and shared by every request on it (:class:`WorkerDocuments`);
    ``lock`` serialises the requests that read the tree.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        if snapshot.tree is None:
            super().__init__(snapshot.text, uri=snapshot.uri, version=snapshot.version)
        else:
            self.uri = snapshot.uri
            self.version = snapshot.version
            self._set_text(snapshot.text)
            self.tree = snapshot.tree
        self._functions: list[FunctionInfo] | None = None
        self.lock = threading.Lock()

    def functions(self) -> list[FunctionInfo]:
        if self._functions is None:
            self._functions = super().functions()
        return list(self._functions)

    def function_at(self, position: Position) -> FunctionInfo | None:
        """As :meth:`Document.function_at`, over the listed functions: they come in source
        order, so none after ``position``'s line can hold it."""
        best: FunctionInfo | None = None
        for func in self.functions():
            if func.span.start.line > position.line:
                break
            if position.line == func.name_span.start.line or func.name_span.start <= position <= func.name_span.end:
                best = func
        return best

    def apply_change(self, start: Position, end: Position, new_text: str, version: int | None = None) -> None:
        raise TypeError("a snapshot document is read-only")

    def replace(self, text: str, version: int | None = None) -> None:
        raise TypeError("a snapshot document is read-only")


class WorkerDocuments:
    """The latest :class:`SnapshotDocument` of each recently used uri, for worker threads."""

    def __init__(self, size: int = WORKER_DOCUMENTS) -> None:
        self.size = size
        self._docs: OrderedDict[str, SnapshotDocument] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, snapshot: Snapshot) -> SnapshotDocument:
        with self._lock:
            doc = self._docs.get(snapshot.uri)
            if doc is not None and doc.version == snapshot.version and doc.text == snapshot.text:
                self._docs.move_to_end(snapshot.uri)
                return doc
        doc = SnapshotDocument(snapshot)
        with self._lock:
            self._docs[snapshot.uri] = doc
            self._docs.move_to_end(snapshot.uri)
            while len(self._docs) > self.size:
                self._docs.popitem(last=False)
        return doc

    def drop(self, uri: str) -> None:
        with self._lock:
            self._docs.pop(uri, None)


# -- pure functions run in worker threads ---------------------------------------------------
def suggestion_at(
    snapshot: Snapshot, position: Position, model: Predictor, top_k: int,
    documents: WorkerDocuments | None = None,
) -> tuple[Suggestion, types.Range] | None:
    """The suggestions for the function whose name or ``def`` line holds ``position``,
    with the range of its name; None elsewhere, for dunders and without contexts.

    Names that the rename would make clash with a binding of the module are left out
    (:mod:`server.rename_safety`), so the model is asked for more than ``top_k``."""
    doc = documents.get(snapshot) if documents is not None else SnapshotDocument(snapshot)
    with doc.lock:
        func = doc.function_at(position)
        if func is None:
            return None
        line = func.name_span.start.line + 1
        suggestions = suggest_for_document(doc, model, top_k=candidate_count(top_k), line=line)
    for suggestion in suggestions:
        if suggestion.qualname == func.qualname:
            suggestion = safe_suggestion(suggestion, snapshot.text, func, top_k)
        if suggestion.qualname == func.qualname and suggestion.suggestions:
            span = func.name_span
            return suggestion, types.Range(
                start=types.Position(line=span.start.line, character=span.start.character),
                end=types.Position(line=span.end.line, character=span.end.character),
            )
    return None


def hover_markdown(suggestion: Suggestion, min_confidence: float) -> str | None:
    """The hover text, or None when the current name is the confident top suggestion."""
    if not suggestion.suggestions:
        return None
    top_prob = suggestion.suggestions[0][2]
    if suggestion.current_rank == 1 and top_prob >= min_confidence:
        return None
    current = code_span(suggestion.name)
    lines = [f"**pathfusion** — suggested names for {current}", ""]
    for rank, (name, label, prob) in enumerate(suggestion.suggestions, start=1):
        mark = " ← current" if label == suggestion.current_label else ""
        lines.append(f"{rank}. {code_span(name)} — {prob * 100:.1f}%{mark}")
    lines.append("")
    if suggestion.current_rank is None:
        lines.append(f"Current name {current}: not in the top {len(suggestion.suggestions)}.")
    else:
        lines.append(f"Current name {current}: rank {suggestion.current_rank}.")
    return "\n".join(lines)


def _line_position(lines: list[str], index: int) -> types.Position:
    """The position of the start of line ``index`` (the end of the text past the end)."""
    line, character = line_start(lines, index)
    return types.Position(line=line, character=character)


def text_edits(old: str, new: str) -> list[types.TextEdit]:
    """Minimal line-level edits turning ``old`` into ``new`` (non-overlapping, in order);
    lines split as the editor splits them (``\n``, ``\r\n`` and ``\r``, server/positions.py)."""
    a, b = split_lines(old), split_lines(new)
    edits: list[types.TextEdit] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append(types.TextEdit(
            range=types.Range(start=_line_position(a, i1), end=_line_position(a, i2)),
            new_text="".join(b[j1:j2]),
        ))
    return edits


class RenameRefused(Exception):
    """The rename cannot be computed; the message is the action's disabled reason."""


_JEDI_LOCK = threading.Lock()
RENAME_TIMEOUT_S = 20.0
"""How long a code action resolve waits for its rename.  Why a bound: jedi runs on its own
thread (never the pool's, so hovers and searches go on meanwhile), and a rename that hangs
all the same — a file swapped for a FIFO after it was checked — must still be answered."""


def rename_root(path: str | None, roots: Sequence[str]) -> str | None:
    """The folder a rename of the file ``path`` may touch: the innermost workspace folder
    that holds it, else the file's own directory (None for a document without a path)."""
    if path is None:
        return None
    absolute = os.path.abspath(path)
    inside = [root for root in roots if is_inside(absolute, os.path.abspath(root))]
    return max(inside, key=len) if inside else os.path.dirname(absolute)


def compute_rename(
    snapshot: Snapshot,
    position: Position,
    new_name: str,
    roots: Sequence[str],
    settings: Settings,
    open_documents: dict[str, tuple[str, int]],
    documents: WorkerDocuments | None = None,
) -> types.WorkspaceEdit:
    """The checked workspace edit of a rename code action (the rename thread).

    ``new_name`` is checked against the document's bindings first (the action may come from
    an older offer, or from a client that made it up: :mod:`server.rename_safety`), then
    jedi renames over the workspace's mirror (:mod:`server.rename_files`), and the other
    files it edits are checked for the name last."""
    problem = name_problem(new_name)
    if problem is not None:
        raise RenameRefused(f"cannot rename to `{new_name}`: it is {problem}")
    doc = documents.get(snapshot) if documents is not None else SnapshotDocument(snapshot)
    with doc.lock:
        func = doc.function_at(position)
    if func is not None and new_name != func.name:
        reason = clashes(snapshot.text, func, [new_name]).get(new_name)
        if reason is not None:
            raise RenameRefused(f"cannot rename to `{new_name}`: it is {reason}")
    path = to_fs_path(snapshot.uri) if snapshot.uri.startswith("file:") else None
    root = rename_root(path, roots)
    try:
        files = MIRRORS.prepare(root, settings.exclude, settings.max_file_size) if root is not None \
            else MIRRORS.empty()
    except RenameFilesError as exc:
        raise RenameRefused(str(exc)) from exc
    return jedi_rename(snapshot, position, new_name, files, open_documents, settings.max_file_size)


def jedi_rename(
    snapshot: Snapshot,
    position: Position,
    new_name: str,
    files: RenameFiles,
    open_documents: dict[str, tuple[str, int]],
    max_file_size: int,
) -> types.WorkspaceEdit:
    """The workspace edit renaming the symbol at ``position`` (jedi: definition and every
    reference in the files of ``files``, which is all jedi may read).  ``open_documents``
    maps the real paths of open documents to (text, version)."""
    import jedi

    path = to_fs_path(snapshot.uri) if snapshot.uri.startswith("file:") else None
    script_path = files.mirror_path(path)
    lines = split_lines(snapshot.text)
    line_text = lines[position.line] if position.line < len(lines) else ""
    column = utf16_to_index(strip_line_end(line_text), position.character)
    try:
        with _JEDI_LOCK:
            script = jedi.Script(code=snapshot.text, path=script_path, project=files.project(script_path))
            refactoring = script.rename(position.line + 1, column, new_name=new_name)
            changed = [(p, c.get_new_code()) for p, c in refactoring.get_changed_files().items()]
    except Exception as exc:  # jedi raises RefactoringError and, on odd code, others
        raise RenameRefused(f"jedi cannot rename here: {exc}") from exc
    real_root = os.path.realpath(files.root)
    changes: list[types.TextDocumentEdit] = []
    for file, new_code in sorted(changed, key=lambda item: str(item[0])):
        version: int | None
        if file is None or (script_path is not None and (
                os.path.abspath(file) == str(script_path)
                or os.path.realpath(file) == os.path.realpath(script_path))):
            uri, old, version, name = snapshot.uri, snapshot.text, snapshot.version, None
        else:
            target = files.workspace_path(file)
            if target is None:
                raise RenameRefused(f"the rename would edit {file}, which is not a file of the workspace")
            problem = regular_file_problem(target, real_root, max_file_size)
            if problem is not None:
                raise RenameRefused(f"the rename would edit {target.name}: {problem}")
            try:
                old = read_text(target, max_file_size)
            except (OSError, UnicodeDecodeError) as exc:
                raise RenameRefused(f"cannot read {target.name}: {exc}") from exc
            uri = from_fs_path(str(target)) or target.as_uri()
            name = os.path.relpath(target, files.root)
            version = None
            real = os.path.realpath(target)
            if real in open_documents:
                open_text, version = open_documents[real]
                if open_text != old:
                    raise RenameRefused(f"{target.name} has unsaved changes; save it and retry")
            if new_name in identifiers(old):  # what the rename does there: see rename_safety
                raise RenameRefused(f"cannot rename to `{new_name}`: it is already used in {name}, "
                                    "which the rename edits")
        if compiles(old) and not compiles(new_code):
            raise RenameRefused(f"the renamed {name or 'document'} would not compile")
        edits = text_edits(old, new_code)
        if edits:
            changes.append(types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                edits=list(edits),
            ))
    if not changes:
        raise RenameRefused("jedi found nothing to rename")
    return types.WorkspaceEdit(document_changes=changes)


# -- the workspace index (design §8 "Search", "Index") -------------------------------------------
@dataclass
class FolderIndex:
    """The index of one workspace folder and the state of its indexing runs.  ``state`` is
    ``opening`` → ``indexing`` → ``ready`` (or ``error``; ``cancelled`` after a cancelled run,
    whose partial index still answers searches)."""

    root: str
    index: WorkspaceIndex | None = None
    state: str = "opening"
    error: str | None = None
    last_run: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """Runs off the loop (reads SQLite)."""
        data: dict[str, Any] = {"root": self.root, "state": self.state, "error": self.error,
                                "files": 0, "functions": 0, "rebuild_reason": None,
                                "last_run": self.last_run}
        if self.index is not None:
            try:
                data.update(self.index.status())
            except Exception as exc:  # a closed or broken index must not break the status
                data["error"] = data["error"] or f"cannot read the index: {exc}"
            data["root"] = self.root
        return data


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
    """The ``k`` best results of several folders (by score; ties by path and line)."""
    merged = [result for results in per_folder for result in results]
    merged.sort(key=lambda r: (-r.score, r.path, r.line))
    return merged[:k]


def symbol_kind(qualname: str) -> types.SymbolKind:
    """Method for a function defined in a class body, Function otherwise."""
    parent, _, _ = qualname.rpartition(".")
    return types.SymbolKind.Method if parent and not parent.endswith("<locals>") else types.SymbolKind.Function


def lsp_range(data: dict[str, dict[str, int]]) -> types.Range:
    return types.Range(
        start=types.Position(line=data["start"]["line"], character=data["start"]["character"]),
        end=types.Position(line=data["end"]["line"], character=data["end"]["character"]))


def workspace_symbol(result: SearchResult) -> types.WorkspaceSymbol:
    parent, _, _ = result.qualname.rpartition(".")
    return types.WorkspaceSymbol(
        name=result.name, kind=symbol_kind(result.qualname),
        location=types.Location(uri=result.uri, range=lsp_range(result.range)),
        container_name=parent or None)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~|#&])")
_URI_UNSAFE = {ord(c): f"%{ord(c):02X}" for c in " ()<>"}


def markdown_text(text: str) -> str:
    """``text`` shown as written in Markdown: ``__repr__`` is not bold "repr", ``<locals>``
    not an HTML tag."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def code_span(text: str) -> str:
    """``text`` as a Markdown code span (a fence longer than any run of backticks in it)."""
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall(r"`+", text)) + 1)
    return f"{fence} {text} {fence}"


def similar_markdown(results: Sequence[SearchResult]) -> str:
    lines = ["**Similar functions**", ""]
    for result in results:
        target = result.uri.translate(_URI_UNSAFE)  # a ")" or a space would end the link
        lines.append(f"- [{markdown_text(result.qualname)}]({target}#L{result.line}) — {result.score:.2f}")
    return "\n".join(lines)


def function_at(snapshot: Snapshot, position: Position,
                documents: WorkerDocuments | None = None) -> tuple[str, types.Range] | None:
    """The qualname and name range of the function whose name or ``def`` line holds
    ``position`` (worker thread)."""
    doc = documents.get(snapshot) if documents is not None else SnapshotDocument(snapshot)
    with doc.lock:
        func = doc.function_at(position)
    if func is None:
        return None
    span = func.name_span
    return func.qualname, types.Range(
        start=types.Position(line=span.start.line, character=span.start.character),
        end=types.Position(line=span.end.line, character=span.end.character))


# -- the server ------------------------------------------------------------------------------
class _GuardedWriter:
    """pygls' writer, made quiet once the client is gone.

    Why: a client that dies leaves a broken pipe, and pygls logs every failed write with a
    traceback (and raises into whatever sent it: a progress report, a warning).  The first
    failure is logged once; later messages are dropped — the end of the input stream then
    ends the server (:func:`serve`).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lost = False

    def write(self, data: bytes) -> Any:
        if self.lost:
            return None
        try:
            return self.inner.write(data)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:  # ValueError: closed file
            self.lost = True
            log.warning("the client is gone (%s); dropping what the server still had to say",
                        type(exc).__name__)
            return None

    def close(self) -> Any:
        with contextlib.suppress(OSError, ValueError):
            return self.inner.close()
        return None


class PathfusionProtocol(RobustProtocol):
    """Speaks UTF-16 positions only (what :class:`~server.parsing.Document` uses), and
    writes through :class:`_GuardedWriter`; answers every request and forgets finished
    messages (:class:`~server.protocol.RobustProtocol`)."""

    def set_writer(self, writer: Any, include_headers: bool = True) -> None:
        super().set_writer(_GuardedWriter(writer), include_headers)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        if params.capabilities.general is not None:
            params.capabilities.general.position_encodings = None
        return (yield from super().lsp_initialize(params))


PREFETCH_LIMIT = 500
"""Functions of one opened document whose naming embeddings are computed ahead of hovers."""


def naming_sources(text: str) -> list[str]:
    """The masked sources (what a fusion's LLM sees) of the functions of ``text`` that get
    suggestions (dunder methods never do)."""
    return [mask_source(f.source, f.name) for f in Document(text).functions() if not is_dunder(f.name)]


class PathfusionServer(LanguageServer):
    """Documents, settings and the model of one editor session."""

    def __init__(self, models_dir: str | None = None, max_workers: int = 2) -> None:
        super().__init__(NAME, VERSION, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=PathfusionProtocol)
        self.documents: dict[str, TextBuffer] = {}
        """Open documents: a parsed :class:`Document` within ``maxFileSize``, else bare text
        (:mod:`server.documents`)."""
        self._oversized: set[str] = set()
        self.base_settings = Settings(models_dir=models_dir)
        self.settings = self.base_settings
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pathfusion")
        self.rename_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathfusion-rename")
        """jedi renames, one at a time and never on the pool (:data:`RENAME_TIMEOUT_S`)."""
        self.model: Predictor | None = None
        """What suggests names: code2vec or a fusion variant (:func:`server.fusion.naming_predictor`)."""
        self.code2vec: Code2VecModel | None = None
        self.model_key: tuple[Any, ...] | None = None
        self.model_error: str | None = None
        self._model_lock: asyncio.Lock | None = None
        self._reported: set[str] = set()
        # the workspace index: runs (sync, updates) are serialised on their own thread, so
        # that a long indexing run never starves hovers of the shared pool
        self.index_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathfusion-index")
        self.folders: dict[str, FolderIndex] = {}
        self.embedder: Embedder | None = None
        self.embedder_key: tuple[Any, ...] | None = None
        self.embedder_error: str | None = None
        self.search_model: SearchModel | None = None
        self.index_key: tuple[Any, ...] | None = None
        self._folders_key: tuple[Any, ...] | None = None
        self._index_task: asyncio.Task[None] | None = None
        self._cancel_run: threading.Event | None = None
        self.closing = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watching = False
        self._index_jobs: set[concurrent.futures.Future[Any]] = set()
        self.documents_for_workers = WorkerDocuments()
        self.shutdown_requested = False
        self.exit_code: int | None = None
        """Set by the ``exit`` notification (0 after ``shutdown``, else 1, as LSP says)."""

    # -- transport: pygls' start functions with the message loop of server.protocol ---------
    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        start_io(self, stdin, stdout)

    def start_tcp(self, host: str, port: int) -> None:
        start_tcp(self, host, port)

    # -- messages & settings ---------------------------------------------------------------
    def warn_once(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        if message in self._reported:
            return
        self._reported.add(message)
        log.warning("%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"pathfusion: {message}"))

    def apply_settings(self, data: Any, base: Settings | None = None) -> None:
        self.settings = Settings.from_dict(data, base=base or self.base_settings)
        for warning in self.settings.warnings:
            self.warn_once(warning)

    def supports_configuration(self) -> bool:
        caps = self.client_capabilities.workspace
        return bool(caps is not None and caps.configuration)

    async def pull_settings(self) -> None:
        if not self.supports_configuration():
            return
        try:
            result = await self.workspace_configuration_async(types.ConfigurationParams(
                items=[types.ConfigurationItem(section=SECTION)]))
        except Exception as exc:  # a client error must not stop the server
            log.warning("workspace/configuration failed: %s", exc)
            return
        value = result[0] if result else None
        if value is not None:
            self.apply_settings(value)

    # -- model -------------------------------------------------------------------------------
    def _models_dir(self) -> str:
        return str(Path(self.settings.models_dir).expanduser()) if self.settings.models_dir \
            else str(default_models_dir())

    async def get_model(self) -> Predictor | None:
        """The naming model for the current settings (loaded off the loop), or None.

        ``pathfusion.fusionVariant`` picks it: code2vec alone, or a fusion variant, which
        also needs the LLM embedder — loaded here and shared with the index.  A fusion that
        cannot be loaded (no export, another embedder) falls back to code2vec with a warning.
        """
        s = self.settings
        models_dir = self._models_dir()
        key = (models_dir, s.device, s.fusion_variant, s.llm_backend, s.llm_model_path)
        if key == self.model_key:
            return self.model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if key == self.model_key:
                return self.model
            loop = asyncio.get_running_loop()
            model: Predictor | None = None
            error = None
            try:
                code2vec = await loop.run_in_executor(
                    self.executor, lambda: Code2VecModel.load(models_dir, device=s.device))
                self.code2vec = model = code2vec
            except ModelError as exc:
                error = str(exc)
            except Exception as exc:  # onnxruntime and the file system raise their own types
                error = f"cannot load the models in {models_dir}: {exc}"
            if model is not None and s.fusion_variant != "code2vec":
                try:
                    embedder = await self._shared_embedder(models_dir, s.llm_backend, s.llm_model_path, s.device)
                    if embedder is None:
                        raise ModelError(f"the LLM embedder cannot be loaded: {self.embedder_error}")
                    model = await loop.run_in_executor(
                        self.executor,
                        lambda: naming_predictor(code2vec, embedder, s.fusion_variant, models_dir, s.device))
                except Exception as exc:  # ModelError, EmbedderError, onnxruntime's own
                    self.warn_once(f"name suggestions use code2vec alone: {exc}")
            self.model, self.model_key, self.model_error = model, key, error
            if error is not None:
                self.warn_once(f"name suggestions are off: {error}")
            return model

    async def _shared_embedder(self, models_dir: str | None, backend: str, model_path: str | None,
                               device: str) -> Embedder | None:
        """The LLM embedder for these settings, loaded once and shared by naming and the
        index; None when it cannot be loaded (the reason in ``embedder_error``, also kept
        per settings so that a broken model is not reloaded on every request)."""
        key = (models_dir, backend, model_path, device)
        if key != self.embedder_key:
            loop = asyncio.get_running_loop()
            try:
                self.embedder = await loop.run_in_executor(
                    self.executor, lambda: load_embedder(backend, models_dir, model_path, device))
                self.embedder_error = None
            except Exception as exc:  # EmbedderError, onnxruntime's and the file system's own
                self.embedder, self.embedder_error = None, str(exc)
            self.embedder_key = key
            self.search_model = None  # its vectors came from the previous embedder
        return self.embedder

    # -- workspace index -----------------------------------------------------------------------
    def background(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task whose reference is kept until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def workspace_roots(self) -> list[str]:
        """The local workspace folders (else the root), as absolute paths."""
        uris = [folder.uri for folder in self.workspace.folders.values()]
        if not uris and self.workspace.root_uri:
            uris = [self.workspace.root_uri]
        roots: list[str] = []
        for uri in uris:
            path = to_fs_path(uri) if uri.startswith("file:") else None
            if path:
                root = os.path.abspath(path)
                if root not in roots:
                    roots.append(root)
        return roots

    def _index_key(self) -> tuple[Any, ...]:
        """(folders, then everything an opened index depends on)."""
        s = self.settings
        return (tuple(self.workspace_roots()), self._models_dir(), s.llm_backend, s.llm_model_path,
                s.device, s.fusion_variant, s.exclude, s.max_file_size, s.follow_external_symlinks)

    async def on_index_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the indexing thread (serialised with every run), keeping its
        future so that the exit can wait for it (:meth:`finish`)."""
        future = self.index_executor.submit(fn, *args)
        self._index_jobs.add(future)
        future.add_done_callback(self._index_jobs.discard)
        return await asyncio.wrap_future(future)

    def start_indexing(self, force: bool = False) -> asyncio.Task[None]:
        """(Re)open the indexes when the folders or the settings they depend on changed and
        bring them up to date; ``force`` re-syncs anyway (a running run is cancelled)."""
        key = self._index_key()
        if not force and key == self.index_key and self._index_task is not None:
            return self._index_task
        if self._cancel_run is not None:
            self._cancel_run.set()
        self.index_key = key
        task = self.background(self._reindex(key, self._index_task, force))
        self._index_task = task
        return task

    async def _reindex(self, key: tuple[Any, ...], previous: asyncio.Task[None] | None, force: bool) -> None:
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception):  # logged by the run itself
                await previous
        if key != self.index_key or self.closing.is_set():
            return  # superseded meanwhile
        # code2vec first: the first hover waits for it, and loading the embedder and
        # indexing beside it on two cores made that wait 50 % longer
        with contextlib.suppress(Exception):
            await self.get_model()
        opened: list[FolderIndex] = []
        if key != self._folders_key:
            opened = await self._open_folders(key)
        if not self._watching and any(f.index is not None for f in self.folders.values()):
            self._watching = True  # only an index needs file events
            self.background(self.register_watcher())
        # the folders just opened, and those whose run a newer request cancelled (or the
        # user did: a folder change resumes them); everything on pathfusion.reindex
        await self._sync_all([f for f in self.folders.values()
                              if force or f in opened or f.state not in ("ready", "error", "off")])

    async def _open_folders(self, key: tuple[Any, ...]) -> list[FolderIndex]:
        """Open the indexes of ``key``'s folders; returns the folders opened.

        When only the folders changed (``workspace/didChangeWorkspaceFolders``), the removed
        ones are closed (their graph saved) and the added ones opened: the others keep
        their index.  Any other change reopens every folder with the new settings.
        """
        roots, models_dir, backend, model_path, device = key[:5]
        same_settings = self._folders_key is not None and key[1:] == self._folders_key[1:]
        keep = {root: folder for root, folder in self.folders.items() if same_settings and root in roots}
        for root, folder in self.folders.items():
            if root not in keep and folder.index is not None:
                await self.on_index_thread(folder.index.close)
        self.folders = {root: keep.get(root) or FolderIndex(root) for root in roots}
        self._folders_key = key
        opened = [folder for root, folder in self.folders.items() if root not in keep]
        if not opened:
            return []
        embedder = await self._shared_embedder(models_dir, backend, model_path, device)
        if embedder is None:
            for folder in opened:
                folder.state, folder.error = "off", self.embedder_error
            self.warn_once(f"semantic search is off: {self.embedder_error}")
            return []
        settings = self.settings
        if self.search_model is None or not same_settings:
            self.search_model = await self.on_index_thread(search_model_from_settings, settings, embedder,
                                                           self.code2vec)
        model = self.search_model
        for folder in opened:
            try:
                folder.index = await self.on_index_thread(WorkspaceIndex.from_settings, folder.root, model, settings)
            except Exception as exc:  # unwritable cache dir, ...
                folder.state, folder.error = "error", f"cannot open the index: {exc}"
                self.warn_once(f"cannot index {folder.root}: {exc}")
        return [folder for folder in opened if folder.index is not None]

    def _supports_progress(self) -> bool:
        caps = self.client_capabilities.window
        return bool(caps is not None and caps.work_done_progress)

    async def _begin_progress(self, title: str) -> tuple[str | None, Any]:
        """A server-created, cancellable progress token and its cancellation future."""
        if not self._supports_progress():
            return None, None
        token = f"pathfusion-index-{uuid.uuid4().hex}"
        try:
            await self.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: index without progress
            log.warning("window/workDoneProgress/create failed: %s", exc)
            return None, None
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, cancellable=True, percentage=0))
        return token, self.work_done_progress.tokens.get(token)

    def _report_progress(self, token: str, percentage: int, message: str) -> None:
        self.work_done_progress.report(token, types.WorkDoneProgressReport(
            percentage=percentage, message=message, cancellable=True))

    def _end_progress(self, token: str | None, message: str) -> None:
        if token is None:
            return
        self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        self.work_done_progress.tokens.pop(token, None)

    async def _sync_all(self, folders: Sequence[FolderIndex]) -> None:
        """Sync ``folders`` one after the other under one cancellable progress."""
        folders = [folder for folder in folders if folder.index is not None]
        if not folders:
            return
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        self._cancel_run = cancel
        for folder in folders:
            folder.state = "indexing"
        token, future = await self._begin_progress("pathfusion: indexing")

        def cancelled() -> bool:
            return cancel.is_set() or self.closing.is_set() or (future is not None and future.cancelled())

        functions = 0
        stopped = False
        for position, folder in enumerate(folders):
            if stopped or cancelled():
                stopped = True
                folder.state = "cancelled"
                continue
            progress = self._progress_callback(loop, token, position, len(folders))
            assert folder.index is not None
            try:
                stats = await self.on_index_thread(folder.index.sync, progress, cancelled)
            except Exception as exc:  # WorkspaceError (folder gone), OSError, embedder errors
                log.warning("indexing %s failed: %s", folder.root, exc)
                folder.state, folder.error = "error", f"indexing failed: {exc}"
                continue
            run = stats.to_json()
            run["skipped_files"] = run["skipped"][:SKIPPED_IN_STATUS]  # [{"path", "reason"}]
            run["skipped"] = len(stats.skipped)
            folder.last_run, folder.error = run, None
            functions += stats.functions
            if stats.cancelled:
                folder.state, stopped = "cancelled", True
            else:
                folder.state = "ready"
        if self._cancel_run is cancel:
            self._cancel_run = None
        self._end_progress(token, "cancelled" if stopped else f"{functions} functions indexed")

    def _progress_callback(self, loop: asyncio.AbstractEventLoop, token: str | None, position: int,
                           count: int) -> Callable[[int, int], None] | None:
        """A callback for a worker thread that reports percentages (when they change)."""
        if token is None:
            return None
        last = [-1]

        def progress(done: int, total: int) -> None:
            share = done / total if total > 0 else 1.0
            percentage = min(100, int(100 * (position + share) / count))
            if percentage == last[0]:
                return
            last[0] = percentage
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server is exiting
                loop.call_soon_threadsafe(self._report_progress, token, percentage, f"{done}/{total} files")

        return progress

    def folder_of_uri_ready(self, uri: str) -> bool:
        if not uri.startswith("file:"):
            return False
        folder = self.folder_of(os.path.abspath(to_fs_path(uri) or ""))
        return folder is not None and folder.index is not None and folder.state == "ready"

    def folder_of(self, path: str) -> FolderIndex | None:
        """The folder (innermost) whose root holds ``path``."""
        best: FolderIndex | None = None
        for root, folder in self.folders.items():
            if is_inside(path, root) and (best is None or len(root) > len(best.root)):
                best = folder
        return best

    async def update_paths(self, changed: Sequence[str], deleted: Sequence[str] = ()) -> None:
        """Re-index saved/changed files and drop deleted ones (serialised with the runs)."""
        if self.closing.is_set():
            return
        groups: dict[str, tuple[list[str], list[str]]] = {}
        for paths, slot in ((changed, 0), (deleted, 1)):
            for path in paths:
                folder = self.folder_of(os.path.abspath(path))
                if folder is not None and folder.index is not None:
                    groups.setdefault(folder.root, ([], []))[slot].append(path)
        for root, (update, remove) in groups.items():
            index = self.folders[root].index
            if index is None:
                continue
            try:
                if remove:
                    await self.on_index_thread(index.remove_files, remove)
                if update:
                    await self.on_index_thread(index.update_files, update)
            except Exception as exc:  # a closed index (settings changed meanwhile), OSError
                log.warning("updating the index of %s failed: %s", root, exc)

    async def search(self, query: str, k: int) -> list[SearchResult]:
        """Every folder's best ``k`` functions for ``query``, merged by score.  Lone
        surrogates (ill-formed UTF-16 an editor may send, e.g. half an emoji) become U+FFFD:
        the rest of the query still searches, where the tokenizer would refuse all of it."""
        query = well_formed(query).strip()
        if not query or k <= 0:
            return []
        loop = asyncio.get_running_loop()
        per_folder: list[list[SearchResult]] = []
        for folder in list(self.folders.values()):
            if folder.index is None:
                continue
            try:
                per_folder.append(await loop.run_in_executor(self.executor, folder.index.search, query, k))
            except Exception as exc:  # a closed index, an embedder failure
                log.warning("search in %s failed: %s", folder.root, exc)
        return merge_results(per_folder, k)

    async def similar_for(self, snapshot: Snapshot, qualname: str) -> list[SearchResult]:
        """Up to :data:`SIMILAR_IN_HOVER` functions similar to ``qualname`` of the document
        (as indexed), when its folder's index is ready."""
        if not snapshot.uri.startswith("file:"):
            return []
        path = os.path.abspath(to_fs_path(snapshot.uri) or "")
        folder = self.folder_of(path)
        if folder is None or folder.index is None or folder.state != "ready":
            return []
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.executor, folder.index.similar, (path, qualname), SIMILAR_IN_HOVER)
        except Exception as exc:
            log.warning("similar functions failed: %s", exc)
            return []
        return [r for r in results if not (r.path == path and r.qualname == qualname)]

    def index_status(self) -> dict[str, Any]:
        """Runs off the loop."""
        return {
            "embedder": self.embedder.model_id if self.embedder is not None else None,
            "search_model": self.search_model.model_id if self.search_model is not None else None,
            "embedder_error": self.embedder_error,
            "folders": [folder.status() for folder in list(self.folders.values())],
        }

    async def register_watcher(self) -> None:
        """Ask for ``**/*.py`` change events where the client can register them dynamically."""
        caps = self.client_capabilities.workspace
        watched = caps.did_change_watched_files if caps is not None else None
        if watched is None or not watched.dynamic_registration:
            return
        try:
            await self.client_register_capability_async(types.RegistrationParams(registrations=[
                types.Registration(
                    id=WATCH_REGISTRATION_ID, method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                    register_options=types.DidChangeWatchedFilesRegistrationOptions(
                        watchers=[types.FileSystemWatcher(glob_pattern="**/*.py")]))]))
        except Exception as exc:  # didSave still keeps the index up to date
            log.info("cannot register the file watcher: %s", exc)

    # -- documents ---------------------------------------------------------------------------
    def keep_document(self, doc: TextBuffer) -> TextBuffer:
        """Store ``doc`` as ``maxFileSize`` wants it (:func:`~server.documents.sized`: parsed
        within the limit, bare text above it); say once, while it stays above, why such a
        document gets no suggestions."""
        doc = self.documents[doc.uri] = sized(doc, self.settings.max_file_size)
        if isinstance(doc, Document):
            self._oversized.discard(doc.uri)
        elif doc.uri not in self._oversized:
            self._oversized.add(doc.uri)
            name = doc.uri.rsplit("/", 1)[-1] or doc.uri
            message = (f"pathfusion: {name} is {len(doc.source):,} bytes, over pathfusion.maxFileSize "
                       f"({self.settings.max_file_size:,}): it is not analysed (no name suggestions or "
                       f"rename actions) while it stays that large")
            log.info("%s", message)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=message))
        return doc

    def snapshot(self, uri: str) -> Snapshot | None:
        doc = self.documents.get(uri)
        if doc is None:
            return None
        doc = self.keep_document(doc)  # the limit may have changed since the last edit
        if not isinstance(doc, Document):
            return None
        return Snapshot(uri, doc.version, doc.text, doc.tree.copy())

    async def prefetch_naming(self, uri: str) -> None:
        """Embed the masked sources of an opened document's functions in the background, so
        that hovers find them cached (fusion variants only: code2vec needs no embedding).
        Batches of 8 on the shared pool leave the other worker to hovers meanwhile."""
        snapshot = self.snapshot(uri)
        model = await self.get_model()
        if snapshot is None or not isinstance(model, FusionPredictor):
            return
        loop = asyncio.get_running_loop()
        sources = await loop.run_in_executor(self.executor, naming_sources, snapshot.text)
        for start in range(0, min(len(sources), PREFETCH_LIMIT), 8):
            if self.closing.is_set() or not self.is_current(snapshot):
                return
            await loop.run_in_executor(self.executor, model.prefetch, sources[start:start + 8])

    def is_current(self, snapshot: Snapshot) -> bool:
        doc = self.documents.get(snapshot.uri)
        return doc is not None and doc.version == snapshot.version

    async def suggestion_for(
        self, uri: str, position: types.Position
    ) -> tuple[Snapshot, Suggestion, types.Range] | None:
        """Suggestions at ``position``, computed off the loop; None if the document changed
        meanwhile, or without a model."""
        snapshot = self.snapshot(uri)
        if snapshot is None:
            return None
        model = await self.get_model()
        if model is None:
            return None
        pos = Position(position.line, position.character)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.executor, suggestion_at, snapshot, pos, model, self.settings.top_k,
                self.documents_for_workers)
        except ModelError as exc:
            self.warn_once(f"name suggestions failed: {exc}")
            return None
        if found is None or not self.is_current(snapshot):
            return None
        return snapshot, found[0], found[1]

    def _document_status(self, doc: TextBuffer) -> dict[str, Any]:
        entry: dict[str, Any] = {"uri": doc.uri, "version": doc.version}
        if not isinstance(doc, Document):
            entry["skipped"] = (f"{len(doc.source):,} bytes, over pathfusion.maxFileSize "
                                f"({self.settings.max_file_size:,})")
        return entry

    def status(self) -> dict[str, Any]:
        return {
            "name": NAME,
            "version": VERSION,
            "model_loaded": self.model is not None,
            "model": getattr(self.model, "info", None) if self.model is not None else None,
            "models_dir": self.model_key[0] if self.model_key else self._models_dir(),
            "model_error": self.model_error,
            "settings": self.settings.to_dict(),
            "documents": [self._document_status(doc) for _, doc in sorted(self.documents.items())],
        }

    # -- the end -------------------------------------------------------------------------------
    def stop_indexing(self) -> None:
        """Make the running indexing run stop at its next cancellation check, and drop the
        queued index jobs (any thread)."""
        self.closing.set()
        if self._cancel_run is not None:
            self._cancel_run.set()
        self.index_executor.shutdown(wait=False, cancel_futures=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.rename_executor.shutdown(wait=False, cancel_futures=True)

    def close_indexes(self) -> None:
        """Save (when they lag behind SQLite) and close every folder's index."""
        for folder in list(self.folders.values()):
            if folder.index is not None:
                try:
                    folder.index.close()
                except Exception as exc:  # the exit must go on
                    log.warning("closing the index of %s failed: %s", folder.root, exc)

    def finish(self, timeout: float = EXIT_TIMEOUT_S) -> None:
        """After the connection ended — ``exit``, or the client closed the pipe or died:
        stop indexing, wait (at most ``timeout``) for the indexing thread to reach its next
        cancellation check, save and close the indexes.  Why here and not at interpreter
        exit: the pools' threads are joined then, and a run that nobody cancelled would
        keep a server without a client alive until the run ends."""
        self.stop_indexing()
        jobs = list(self._index_jobs)
        if jobs:
            concurrent.futures.wait(jobs, timeout=timeout)
        self.close_indexes()


server = PathfusionServer()


# -- lifecycle & settings ----------------------------------------------------------------------
@server.feature(types.INITIALIZE)
def initialize(ls: PathfusionServer, params: types.InitializeParams) -> None:
    ls.apply_settings(params.initialization_options)
    ls.base_settings = ls.settings
    # Load code2vec now, in the background, so that the first hover does not wait for all
    # of it (a hover arriving meanwhile waits on the same lock instead of loading it
    # twice; settings pulled on ``initialized`` that name another folder reload it).
    ls.background(ls.get_model())


@server.feature(types.INITIALIZED)
async def initialized(ls: PathfusionServer, params: types.InitializedParams) -> None:
    await ls.pull_settings()
    ls.background(ls.get_model())  # a no-op unless the pulled settings name other models
    ls.start_indexing()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: PathfusionServer, params: types.DidChangeConfigurationParams) -> None:
    if ls.supports_configuration():
        await ls.pull_settings()
    elif params.settings is not None:
        ls.apply_settings(params.settings)
    if ls.index_key is not None:
        ls.start_indexing()  # reopens only when the folders, models or index settings changed


@server.feature(types.SHUTDOWN)
async def shutdown(ls: PathfusionServer, params: None) -> None:
    """Stop indexing (the run stops after its current batch) and save the indexes before
    answering, so that the client's ``exit`` finds nothing left to do."""
    ls.shutdown_requested = True
    ls.stop_indexing()
    jobs = [asyncio.wrap_future(job) for job in list(ls._index_jobs)]
    if jobs:
        await asyncio.wait(jobs, timeout=EXIT_TIMEOUT_S)
    await asyncio.get_running_loop().run_in_executor(None, ls.close_indexes)


@server.feature(types.EXIT)
def exit_notification(ls: PathfusionServer, params: None) -> None:
    ls.exit_code = 0 if ls.shutdown_requested else 1


@server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
async def did_change_workspace_folders(
    ls: PathfusionServer, params: types.DidChangeWorkspaceFoldersParams
) -> None:
    """pygls has already updated ``ls.workspace.folders``: close the removed folders'
    indexes, open and sync the added ones (the other folders keep theirs)."""
    if ls.index_key is not None:
        ls.start_indexing()


# -- document sync -----------------------------------------------------------------------------
@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: PathfusionServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.keep_document(TextBuffer(item.text, uri=item.uri, version=item.version))
    ls.background(ls.prefetch_naming(item.uri))


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: PathfusionServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.documents.get(params.text_document.uri)
    if doc is None:
        return
    ls.keep_document(apply_changes(doc, params.content_changes, params.text_document.version,
                                   ls.settings.max_file_size))


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: PathfusionServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.documents.pop(params.text_document.uri, None)
    ls._oversized.discard(params.text_document.uri)
    ls.documents_for_workers.drop(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
async def did_save(ls: PathfusionServer, params: types.DidSaveTextDocumentParams) -> None:
    uri = params.text_document.uri
    path = to_fs_path(uri) if uri.startswith("file:") else None
    if path:
        await ls.update_paths([path])


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
async def did_change_watched_files(ls: PathfusionServer, params: types.DidChangeWatchedFilesParams) -> None:
    changed: list[str] = []
    deleted: list[str] = []
    for event in params.changes:
        path = to_fs_path(event.uri) if event.uri.startswith("file:") else None
        if path:
            (deleted if event.type == types.FileChangeType.Deleted else changed).append(path)
    await ls.update_paths(changed, deleted)


# -- features ----------------------------------------------------------------------------------
@server.feature(types.TEXT_DOCUMENT_HOVER)
async def hover(ls: PathfusionServer, params: types.HoverParams) -> types.Hover | None:
    """Name suggestions, then (when the index is ready) the most similar functions."""
    uri = params.text_document.uri
    found = await ls.suggestion_for(uri, params.position)
    parts: list[str] = []
    name_range: types.Range | None = None
    qualname: str | None = None
    if found is not None:
        _, suggestion, name_range = found
        qualname = suggestion.qualname
        text = hover_markdown(suggestion, ls.settings.hover_min_confidence)
        if text is not None:
            parts.append(text)
    snapshot = ls.snapshot(uri)
    if snapshot is not None and ls.folder_of_uri_ready(uri):
        if qualname is None:
            pos = Position(params.position.line, params.position.character)
            loop = asyncio.get_running_loop()
            located = await loop.run_in_executor(ls.executor, function_at, snapshot, pos, ls.documents_for_workers)
            if located is not None:
                qualname, name_range = located
        if qualname is not None:
            similar = await ls.similar_for(snapshot, qualname)
            if similar and ls.is_current(snapshot):
                parts.append(similar_markdown(similar))
    if not parts:
        return None
    return types.Hover(contents=types.MarkupContent(
        kind=types.MarkupKind.Markdown, value="\n\n---\n\n".join(parts)), range=name_range)


@server.feature(types.WORKSPACE_SYMBOL)
async def workspace_symbol_search(
    ls: PathfusionServer, params: types.WorkspaceSymbolParams
) -> list[types.WorkspaceSymbol]:
    """Semantic search for every LSP editor (the same engine as ``pathfusion.search``)."""
    if not params.query.strip():
        return []
    return [workspace_symbol(result) for result in await ls.search(params.query, SYMBOL_RESULTS)]


def _wants_rename(only: Sequence[str] | None) -> bool:
    if not only:
        return True
    wanted = [str(getattr(kind, "value", kind)) for kind in only]
    return any(RENAME_KIND.value == kind or RENAME_KIND.value.startswith(f"{kind}.") for kind in wanted)


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[RENAME_KIND], resolve_provider=True),
)
async def code_action(ls: PathfusionServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    if not _wants_rename(params.context.only):
        return None
    found = await ls.suggestion_for(params.text_document.uri, params.range.start)
    if found is None:
        return None
    snapshot, suggestion, name_range = found
    actions: list[types.CodeAction] = []
    seen = {suggestion.name}
    for new_name, _label, prob in suggestion.suggestions:
        if new_name in seen or not new_name.isidentifier() or keyword.iskeyword(new_name):
            continue
        seen.add(new_name)
        actions.append(types.CodeAction(
            title=f"Rename `{suggestion.name}` → `{new_name}`",
            kind=RENAME_KIND,
            data={"uri": snapshot.uri, "version": snapshot.version, "line": name_range.start.line,
                  "character": name_range.start.character, "new_name": new_name,
                  "probability": round(prob, 6)},
        ))
    return actions


@server.feature(types.CODE_ACTION_RESOLVE)
async def resolve_code_action(ls: PathfusionServer, action: types.CodeAction) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    try:
        uri, version = str(data["uri"]), int(data["version"])
        position = Position(int(data["line"]), int(data["character"]))
        new_name = str(data["new_name"])
    except (KeyError, TypeError, ValueError):
        action.disabled = types.CodeActionDisabled(reason="not a pathfusion rename action")
        return action
    snapshot = ls.snapshot(uri)
    if snapshot is None or snapshot.version != version:
        action.disabled = types.CodeActionDisabled(
            reason="the document changed since this action was offered; ask again")
        return action
    open_documents = {}
    for doc_uri, doc in ls.documents.items():
        if doc_uri.startswith("file:"):
            open_documents[os.path.realpath(to_fs_path(doc_uri) or "")] = (doc.text, doc.version)
    # the rename's own thread, bounded: a rename never holds the pool of hovers and searches
    try:
        job = ls.rename_executor.submit(compute_rename, snapshot, position, new_name, ls.workspace_roots(),
                                        ls.settings, open_documents, ls.documents_for_workers)
    except RuntimeError:  # the executor is shut down: the server is ending
        action.disabled = types.CodeActionDisabled(reason="the server is shutting down")
        return action
    try:
        edit = await asyncio.wait_for(asyncio.wrap_future(job), RENAME_TIMEOUT_S)
    except RenameRefused as exc:
        action.disabled = types.CodeActionDisabled(reason=str(exc))
        return action
    except asyncio.TimeoutError:
        action.disabled = types.CodeActionDisabled(
            reason=f"the rename took longer than {RENAME_TIMEOUT_S:.0f} s; try again later")
        return action
    if not ls.is_current(snapshot):
        action.disabled = types.CodeActionDisabled(
            reason="the document changed while the rename was computed; ask again")
        return action
    action.edit = edit
    return action


@server.command(STATUS_COMMAND)
async def status_command(ls: PathfusionServer, *args: Any) -> dict[str, Any]:
    await ls.get_model()
    data = ls.status()
    data["index"] = await asyncio.get_running_loop().run_in_executor(ls.executor, ls.index_status)
    return data


@server.command(SEARCH_COMMAND)
async def search_command(ls: PathfusionServer, *args: Any) -> list[dict[str, Any]]:
    """``{"query": str, "k": int}`` → ``[{uri, range, name, qualname, score, snippet}]``."""
    try:
        query, k = search_args(args)
    except ValueError as exc:
        raise JsonRpcInvalidParams(str(exc)) from exc
    results = await ls.search(query, k)
    keys = ("uri", "range", "name", "qualname", "score", "snippet", "signature", "summary")
    return [{key: value for key, value in result.to_json().items() if key in keys} for result in results]


@server.command(REINDEX_COMMAND)
async def reindex_command(ls: PathfusionServer, *args: Any) -> dict[str, Any]:
    """Re-sync every folder (with progress); answers when the run ends."""
    await ls.start_indexing(force=True)
    return await asyncio.get_running_loop().run_in_executor(ls.executor, ls.index_status)


# -- entry -------------------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    """Run the server until the client disconnects (``exit``, or the end of its pipe), then
    stop the background work and exit — by itself, within :data:`EXIT_TIMEOUT_S` plus the
    time it takes to save the indexes."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="pathfusion %(levelname)s %(name)s: %(message)s")
    if args.models is not None:
        server.base_settings = server.settings = Settings(models_dir=str(args.models))
    try:
        if args.tcp is not None:
            server.start_tcp(*args.tcp)
        else:
            server.start_io()
    finally:
        if args.tcp is None:
            _detach_stdout()
        server.finish()
    code = server.exit_code if server.exit_code is not None else 0
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if stuck:  # a worker that ignored the cancellation: do not wait for it at interpreter exit
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        for thread in stuck:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in stuck):
            log.warning("exiting with %d worker thread(s) still busy", sum(t.is_alive() for t in stuck))
            logging.shutdown()
            os._exit(code)
    return code


def _detach_stdout() -> None:
    """Point stdout at /dev/null once the client is gone, so that flushing what pygls left
    in the buffer at exit cannot raise BrokenPipeError (a traceback on stderr)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.lsp``: the same arguments and the same ``--tcp`` rule as ``pathfusion serve``."""
    from .cli import CliError, add_serve_arguments, check_serve_arguments

    parser = argparse.ArgumentParser(prog="pathfusion serve", description="the pathfusion language server")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_serve_arguments(args)
    except CliError as exc:
        print(f"pathfusion serve: error: {exc}", file=sys.stderr)
        return 1
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
