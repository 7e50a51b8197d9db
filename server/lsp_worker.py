"""How a request's work leaves the event loop: snapshot → worker → drop if stale.

Why: the event loop only keeps the documents in sync and answers; every model call, parse
for a request and jedi refactoring runs in a thread pool on an immutable :class:`Snapshot`
(uri, version, text and a copy of the loop's syntax tree), and a result computed for a
version that is no longer the document's is dropped.  :func:`run_on_snapshot` is that path,
written once for every feature.  The loop's :class:`~pathfusion.server.parsing.Document` objects are
never touched by a worker thread; workers share one :class:`SnapshotDocument` per document
version (:class:`WorkerDocuments`), so repeated hovers neither re-parse nor re-list the
functions.

Cancellation: a request that the client cancels has its coroutine cancelled by pygls, which
cancels the worker's future — at once when the work has not started yet; work that has
started runs to its end and its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .parsing import Document, FunctionInfo, Position

T = TypeVar("T")

WORKER_DOCUMENTS = 16
"""Uris whose latest :class:`SnapshotDocument` the workers keep."""


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


def worker_document(snapshot: Snapshot, documents: WorkerDocuments | None) -> SnapshotDocument:
    """The shared view of ``snapshot`` (a fresh one without ``documents``)."""
    return documents.get(snapshot) if documents is not None else SnapshotDocument(snapshot)


def locate_function(snapshot: Snapshot, position: Position,
                    documents: WorkerDocuments | None = None) -> tuple[SnapshotDocument, FunctionInfo | None]:
    """The view of ``snapshot`` and the function whose name or ``def`` line holds
    ``position`` in it (worker thread)."""
    doc = worker_document(snapshot, documents)
    with doc.lock:
        return doc, doc.function_at(position)


class WorkersClosed(Exception):
    """The pool no longer takes work: the server is ending."""


async def run_on_snapshot(
    executor: Executor,
    is_current: Callable[[Snapshot], bool],
    snapshot: Snapshot,
    fn: Callable[..., T],
    *args: Any,
    timeout: float | None = None,
) -> T | None:
    """``fn(snapshot, *args)`` on ``executor``; None when the document moved on meanwhile
    (``is_current(snapshot)`` is false once it returns).

    Raises what ``fn`` raises, :class:`WorkersClosed` when the executor is shut down and
    ``asyncio.TimeoutError`` after ``timeout`` seconds (the work, if started, runs on and its
    result is dropped)."""
    try:
        future = executor.submit(fn, snapshot, *args)
    except RuntimeError as exc:  # cannot schedule new futures after shutdown
        raise WorkersClosed(str(exc)) from exc
    result = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    return result if is_current(snapshot) else None
