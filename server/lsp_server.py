"""The state of one editor session: :class:`PathfusionServer` (open documents, settings,
models, worker pools, the workspace indexes) and the protocol it speaks.

Why the features are elsewhere: each is a module of plain functions that take the server
(:mod:`pathfusion.server.feature_hover`, :mod:`pathfusion.server.feature_rename`, :mod:`pathfusion.server.feature_search`,
:mod:`pathfusion.server.feature_index`, :mod:`pathfusion.server.lsp_settings`), and :mod:`pathfusion.server.lsp` registers a
short handler for each.  What they share lives here: the documents and their snapshots, the
pools and the one way work leaves the loop (:meth:`PathfusionServer.on_snapshot`), the
models (:mod:`pathfusion.server.lsp_models`), and the end of the session.

Positions are UTF-16 (the LSP default): :class:`PathfusionProtocol` removes the client's
other position encodings from ``initialize`` so that the server never negotiates another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol.language_server import lsp_method

from . import feature_hover
from .code2vec import Predictor, Suggestion
from .documents import sized
from .feature_index import Indexes
from .foreground import Foreground
from .lsp_convert import uri_path
from .lsp_models import Models
from .lsp_worker import Snapshot, WorkerDocuments, run_on_snapshot
from .parsing import Document
from .positions import TextBuffer
from .protocol import RobustProtocol, start_io, start_tcp
from .settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

NAME = "pathfusion"
VERSION = "0.1.0"
EXIT_TIMEOUT_S = 5.0
"""After the connection ends, how long the indexing thread may take to stop at its next
cancellation check before the process exits without it."""


class _GuardedWriter:
    """pygls' writer, made quiet once the client is gone.

    Why: a client that dies leaves a broken pipe, and pygls logs every failed write with a
    traceback (and raises into whatever sent it: a progress report, a warning).  The first
    failure is logged once; later messages are dropped — the end of the input stream then
    ends the server (:func:`pathfusion.server.lsp.serve`).
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
    """Speaks UTF-16 positions only (what :class:`~pathfusion.server.parsing.Document` uses), and
    writes through :class:`_GuardedWriter`; answers every request and forgets finished
    messages (:class:`~pathfusion.server.protocol.RobustProtocol`)."""

    def set_writer(self, writer: Any, include_headers: bool = True) -> None:
        super().set_writer(_GuardedWriter(writer), include_headers)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        if params.capabilities.general is not None:
            params.capabilities.general.position_encodings = None
        return (yield from super().lsp_initialize(params))


class PathfusionServer(LanguageServer):
    """Documents, settings and the models of one editor session."""

    def __init__(self, models_dir: str | None = None, max_workers: int = 2) -> None:
        super().__init__(NAME, VERSION, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=PathfusionProtocol)
        self.documents: dict[str, TextBuffer] = {}
        """Open documents: a parsed :class:`Document` within ``maxFileSize``, else bare text
        (:mod:`pathfusion.server.documents`)."""
        self._oversized: set[str] = set()
        self.base_settings = Settings(models_dir=models_dir)
        self.settings = self.base_settings
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pathfusion")
        """The shared pool: hovers, suggestions, searches, model loading."""
        self.rename_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathfusion-rename")
        """jedi renames, one at a time and never on the pool (:data:`~pathfusion.server.feature_rename.RENAME_TIMEOUT_S`)."""
        self.documents_for_workers = WorkerDocuments()
        self.foreground = Foreground()
        """Hovers and code actions in flight: indexing and prefetch wait for them (:mod:`pathfusion.server.foreground`)."""
        self.models = Models(self.executor, self.warn_once)
        self.indexes = Indexes(self)
        """The workspace folders' indexes; runs on their own thread (:mod:`pathfusion.server.feature_index`)."""
        self._reported: set[str] = set()
        self.closing = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shutdown_requested = False
        self.exit_code: int | None = None
        """Set by the ``exit`` notification (0 after ``shutdown``, else 1, as LSP says)."""

    # -- transport: pygls' start functions with the message loop of pathfusion.server.protocol ---------
    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        start_io(self, stdin, stdout)

    def start_tcp(self, host: str, port: int) -> None:
        start_tcp(self, host, port)

    # -- what every feature uses -----------------------------------------------------------
    def warn_once(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        if message in self._reported:
            return
        self._reported.add(message)
        log.warning("%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"pathfusion: {message}"))

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
            path = uri_path(uri)
            if path:
                root = os.path.abspath(path)
                if root not in roots:
                    roots.append(root)
        return roots

    async def get_model(self) -> Predictor | None:
        """The naming model for the current settings (:meth:`~pathfusion.server.lsp_models.Models.naming`)."""
        return await self.models.naming(self.settings)

    def start_indexing(self, force: bool = False) -> asyncio.Task[None]:
        """:meth:`~pathfusion.server.feature_index.Indexes.start`."""
        return self.indexes.start(force)

    # -- documents ---------------------------------------------------------------------------
    def keep_document(self, doc: TextBuffer) -> TextBuffer:
        """Store ``doc`` as ``maxFileSize`` wants it (:func:`~pathfusion.server.documents.sized`: parsed
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

    def forget_document(self, uri: str) -> None:
        """``didClose``: the server keeps nothing of a closed document."""
        self.documents.pop(uri, None)
        self._oversized.discard(uri)
        self.documents_for_workers.drop(uri)

    def snapshot(self, uri: str) -> Snapshot | None:
        """What a worker may see of the document ``uri``; None when it is not open or not
        analysed (over ``maxFileSize``)."""
        doc = self.documents.get(uri)
        if doc is None:
            return None
        doc = self.keep_document(doc)  # the limit may have changed since the last edit
        if not isinstance(doc, Document):
            return None
        return Snapshot(uri, doc.version, doc.text, doc.tree.copy())

    def is_current(self, snapshot: Snapshot) -> bool:
        doc = self.documents.get(snapshot.uri)
        return doc is not None and doc.version == snapshot.version

    async def on_snapshot(self, snapshot: Snapshot, fn: Callable[..., T], *args: Any,
                          executor: Executor | None = None, timeout: float | None = None) -> T | None:
        """``fn(snapshot, *args)`` on the pool (or ``executor``); None when the document
        moved on meanwhile (:func:`~pathfusion.server.lsp_worker.run_on_snapshot`)."""
        return await run_on_snapshot(executor or self.executor, self.is_current, snapshot, fn, *args,
                                     timeout=timeout)

    async def suggestion_for(
        self, uri: str, position: types.Position
    ) -> tuple[Snapshot, Suggestion, types.Range] | None:
        """:func:`~pathfusion.server.feature_hover.suggestion_for` (the code actions' suggestions)."""
        return await feature_hover.suggestion_for(self, uri, position)

    # -- status --------------------------------------------------------------------------------
    def _document_status(self, doc: TextBuffer) -> dict[str, Any]:
        entry: dict[str, Any] = {"uri": doc.uri, "version": doc.version}
        if not isinstance(doc, Document):
            entry["skipped"] = (f"{len(doc.source):,} bytes, over pathfusion.maxFileSize "
                                f"({self.settings.max_file_size:,})")
        return entry

    def status(self) -> dict[str, Any]:
        """``pathfusion.status`` but its ``index`` (:meth:`~pathfusion.server.feature_index.Indexes.status`)."""
        return {
            "name": NAME,
            "version": VERSION,
            **self.models.status(self.settings),
            "settings": self.settings.to_dict(),
            "documents": [self._document_status(doc) for _, doc in sorted(self.documents.items())],
        }

    # -- the end -------------------------------------------------------------------------------
    def stop_indexing(self) -> None:
        """Make the running indexing run stop at its next cancellation check, and drop the
        queued jobs of every pool (any thread)."""
        self.closing.set()
        self.indexes.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.rename_executor.shutdown(wait=False, cancel_futures=True)

    def close_indexes(self) -> None:
        """Save (when they lag behind SQLite) and close every folder's index."""
        self.indexes.close()

    def finish(self, timeout: float = EXIT_TIMEOUT_S) -> None:
        """After the connection ended — ``exit``, or the client closed the pipe or died:
        stop indexing, wait (at most ``timeout``) for the indexing thread to reach its next
        cancellation check, save and close the indexes.  Why here and not at interpreter
        exit: the pools' threads are joined then, and a run that nobody cancelled would
        keep a server without a client alive until the run ends."""
        self.stop_indexing()
        self.indexes.wait(timeout)
        self.close_indexes()
