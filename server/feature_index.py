"""The life cycle of the workspace indexes (docs/design.md §8 "Index"): one
:class:`~pathfusion.server.index.WorkspaceIndex` per workspace folder, opened, synced, updated,
reported and closed.

The indexes are opened on ``initialized`` with the search model of the settings
(:meth:`ModelHub.search_model <pathfusion.server.runtime.ModelHub.search_model>`, over the embedder
and the code2vec model that naming uses, :mod:`pathfusion.server.lsp_models`) and synced with a cancellable
``window/workDoneProgress``.  ``workspace/didChangeWorkspaceFolders`` closes the removed
folders' indexes and opens and syncs the added ones; the other folders keep theirs.

Why one dedicated thread: indexing runs and incremental updates (``didSave``,
``didChangeWatchedFiles``, watched dynamically for ``**/*.py``) are serialised on it, so an
edit arriving during indexing waits for the run instead of racing it, and a long run never
starves hovers of the shared pool.  Searches run on the shared pool against the index's own
lock (:mod:`pathfusion.server.feature_search`).  Without an embedder the user is warned once and the
search features answer empty.

Ending: ``shutdown`` stops the indexing run (at its next batch) and saves the indexes; when
the connection ends without it, :meth:`~pathfusion.server.lsp_server.PathfusionServer.finish` does the
same.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from .index import WorkspaceIndex
from .lsp_convert import uri_path
from .lsp_models import models_dir
from .workspace import is_inside

if TYPE_CHECKING:
    from .lsp_server import PathfusionServer

log = logging.getLogger(__name__)

WATCH_REGISTRATION_ID = "pathfusion-watch-py"
SKIPPED_IN_STATUS = 50
"""Skipped files (path, reason) listed per folder in ``pathfusion.status``."""


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


def file_events(params: types.DidChangeWatchedFilesParams) -> tuple[list[str], list[str]]:
    """The (changed, deleted) local paths of ``didChangeWatchedFiles``."""
    changed: list[str] = []
    deleted: list[str] = []
    for event in params.changes:
        path = uri_path(event.uri)
        if path:
            (deleted if event.type == types.FileChangeType.Deleted else changed).append(path)
    return changed, deleted


class Indexes:
    """The folders' indexes of one server and their runs."""

    def __init__(self, ls: PathfusionServer) -> None:
        self.ls = ls
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathfusion-index")
        """Runs (sync, updates) and openings, one at a time."""
        self.folders: dict[str, FolderIndex] = {}
        self.key: tuple[Any, ...] | None = None
        """What the indexes were last asked to be for (:meth:`_key`); None before ``initialized``."""
        self._folders_key: tuple[Any, ...] | None = None
        self._task: asyncio.Task[None] | None = None
        self._cancel_run: threading.Event | None = None
        self._watching = False
        self.jobs: set[concurrent.futures.Future[Any]] = set()
        """The indexing thread's pending and running jobs, which the exit waits for."""

    def _key(self) -> tuple[Any, ...]:
        """(folders, then everything an opened index depends on)."""
        s = self.ls.settings
        return (tuple(self.ls.workspace_roots()), models_dir(s), s.llm_backend, s.llm_model_path,
                s.device, s.fusion_variant, s.exclude, s.max_file_size, s.follow_external_symlinks)

    async def on_index_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the indexing thread (serialised with every run), keeping its
        future so that the exit can wait for it (:meth:`wait`).  It starts once no hover or
        code action is in flight (bounded wait, :mod:`pathfusion.server.foreground`)."""
        foreground = self.ls.foreground

        def after_requests() -> Any:
            foreground.wait_idle()
            return fn(*args)

        future = self.executor.submit(after_requests)
        self.jobs.add(future)
        future.add_done_callback(self.jobs.discard)
        return await asyncio.wrap_future(future)

    # -- opening and syncing --------------------------------------------------------------------
    def start(self, force: bool = False) -> asyncio.Task[None]:
        """(Re)open the indexes when the folders or the settings they depend on changed and
        bring them up to date; ``force`` re-syncs anyway (a running run is cancelled)."""
        key = self._key()
        if not force and key == self.key and self._task is not None:
            return self._task
        if self._cancel_run is not None:
            self._cancel_run.set()
        self.key = key
        task = self.ls.background(self._reindex(key, self._task, force))
        self._task = task
        return task

    async def _reindex(self, key: tuple[Any, ...], previous: asyncio.Task[None] | None, force: bool) -> None:
        if previous is not None and not previous.done():
            with contextlib.suppress(Exception):  # logged by the run itself
                await previous
        if key != self.key or self.ls.closing.is_set():
            return  # superseded meanwhile
        # code2vec first: the first hover waits for it, and loading the embedder and
        # indexing beside it on two cores made that wait 50 % longer
        with contextlib.suppress(Exception):
            await self.ls.get_model()
        opened: list[FolderIndex] = []
        if key != self._folders_key:
            opened = await self._open_folders(key)
        if not self._watching and any(f.index is not None for f in self.folders.values()):
            self._watching = True  # only an index needs file events
            self.ls.background(self.register_watcher())
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
        roots = key[0]
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
        models, settings = self.ls.models, self.ls.settings
        embedder = await models.shared_embedder(settings)
        if embedder is None:
            for folder in opened:
                folder.state, folder.error = "off", models.embedder_error
            self.ls.warn_once(f"semantic search is off: {models.embedder_error}")
            return []
        # one search model for every folder (the hub's, for these settings): a search over
        # several folders encodes its query once (:func:`pathfusion.server.feature_search.search`)
        model = await models.search(settings, self.on_index_thread)
        for folder in opened:
            try:
                folder.index = await self.on_index_thread(WorkspaceIndex.from_settings, folder.root, model, settings)
            except Exception as exc:  # unwritable cache dir, ...
                folder.state, folder.error = "error", f"cannot open the index: {exc}"
                self.ls.warn_once(f"cannot index {folder.root}: {exc}")
        return [folder for folder in opened if folder.index is not None]

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
        progress = Progress(self.ls)
        future = await progress.begin("pathfusion: indexing")

        def cancelled() -> bool:
            return cancel.is_set() or self.ls.closing.is_set() or (future is not None and future.cancelled())

        def checkpoint() -> bool:
            """The indexing thread asks between files and batches: also where a hover or a
            code action in flight goes first."""
            self.ls.foreground.wait_idle()
            return cancelled()

        functions = 0
        stopped = False
        for position, folder in enumerate(folders):
            if stopped or cancelled():
                stopped = True
                folder.state = "cancelled"
                continue
            report = progress.callback(loop, position, len(folders))
            assert folder.index is not None
            try:
                stats = await self.on_index_thread(folder.index.sync, report, checkpoint)
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
        progress.end("cancelled" if stopped else f"{functions} functions indexed")

    # -- files --------------------------------------------------------------------------------
    def folder_of(self, path: str) -> FolderIndex | None:
        """The folder (innermost) whose root holds ``path``."""
        best: FolderIndex | None = None
        for root, folder in self.folders.items():
            if is_inside(path, root) and (best is None or len(root) > len(best.root)):
                best = folder
        return best

    def ready_folder_of(self, uri: str) -> tuple[str, FolderIndex] | None:
        """The absolute path of the document ``uri`` and its folder, when the folder's index
        is ready."""
        path = uri_path(uri)
        if path is None:
            return None
        path = os.path.abspath(path)
        folder = self.folder_of(path)
        if folder is None or folder.index is None or folder.state != "ready":
            return None
        return path, folder

    async def update_paths(self, changed: Sequence[str], deleted: Sequence[str] = ()) -> None:
        """Re-index saved/changed files and drop deleted ones (serialised with the runs)."""
        if self.ls.closing.is_set():
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

    async def register_watcher(self) -> None:
        """Ask for ``**/*.py`` change events where the client can register them dynamically."""
        caps = self.ls.client_capabilities.workspace
        watched = caps.did_change_watched_files if caps is not None else None
        if watched is None or not watched.dynamic_registration:
            return
        try:
            await self.ls.client_register_capability_async(types.RegistrationParams(registrations=[
                types.Registration(
                    id=WATCH_REGISTRATION_ID, method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                    register_options=types.DidChangeWatchedFilesRegistrationOptions(
                        watchers=[types.FileSystemWatcher(glob_pattern="**/*.py")]))]))
        except Exception as exc:  # didSave still keeps the index up to date
            log.info("cannot register the file watcher: %s", exc)

    # -- status and the end ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``index`` of ``pathfusion.status``; runs off the loop."""
        models = self.ls.models
        return {
            "embedder": models.embedder.model_id if models.embedder is not None else None,
            "search_model": models.search_model.model_id if models.search_model is not None else None,
            "embedder_error": models.embedder_error,
            "folders": [folder.status() for folder in list(self.folders.values())],
        }

    def stop(self) -> None:
        """Make the running run stop at its next cancellation check and drop the queued
        jobs (any thread; the caller sets ``closing``)."""
        if self._cancel_run is not None:
            self._cancel_run.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def wait(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the indexing thread's jobs to end."""
        jobs = list(self.jobs)
        if jobs:
            concurrent.futures.wait(jobs, timeout=timeout)

    async def wait_async(self, timeout: float) -> None:
        """:meth:`wait`, without holding the loop."""
        jobs = [asyncio.wrap_future(job) for job in list(self.jobs)]
        if jobs:
            await asyncio.wait(jobs, timeout=timeout)

    def close(self) -> None:
        """Save (when they lag behind SQLite) and close every folder's index."""
        for folder in list(self.folders.values()):
            if folder.index is not None:
                try:
                    folder.index.close()
                except Exception as exc:  # the exit must go on
                    log.warning("closing the index of %s failed: %s", folder.root, exc)


class Progress:
    """One server-created, cancellable ``window/workDoneProgress`` (nothing where the client
    cannot show one)."""

    def __init__(self, ls: PathfusionServer) -> None:
        self.ls = ls
        self.token: str | None = None

    async def begin(self, title: str) -> Any:
        """Create and begin the progress; returns its cancellation future (None without)."""
        caps = self.ls.client_capabilities.window
        if not (caps is not None and caps.work_done_progress):
            return None
        token = f"pathfusion-index-{uuid.uuid4().hex}"
        try:
            await self.ls.work_done_progress.create_async(token)
        except Exception as exc:  # the client refused: index without progress
            log.warning("window/workDoneProgress/create failed: %s", exc)
            return None
        self.ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, cancellable=True, percentage=0))
        self.token = token
        return self.ls.work_done_progress.tokens.get(token)

    def _report(self, token: str, percentage: int, message: str) -> None:
        self.ls.work_done_progress.report(token, types.WorkDoneProgressReport(
            percentage=percentage, message=message, cancellable=True))

    def callback(self, loop: asyncio.AbstractEventLoop, position: int,
                 count: int) -> Callable[[int, int], None] | None:
        """A callback for a worker thread that reports the percentage of the ``position``-th
        of ``count`` folders (when it changes)."""
        token = self.token
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
                loop.call_soon_threadsafe(self._report, token, percentage, f"{done}/{total} files")

        return progress

    def end(self, message: str) -> None:
        if self.token is None:
            return
        self.ls.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
        self.ls.work_done_progress.tokens.pop(self.token, None)
