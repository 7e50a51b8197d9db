"""The language server (docs/design.md §8): hover name suggestions, rename code actions and
semantic search over the workspace index.

This module creates the server, registers a short handler for each LSP message — each
delegates to the module of its feature — and runs it (``python -m pathfusion.server.lsp``,
``pathfusion serve``).  Where the rest is:

* :mod:`pathfusion.server.lsp_server` — the session's state (documents, settings, models, pools,
  indexes) and its protocol (UTF-16 positions only);
* :mod:`pathfusion.server.lsp_worker` — snapshot → worker → drop if stale, the one way a request's work
  leaves the event loop;
* :mod:`pathfusion.server.lsp_convert` — every conversion to and from LSP (ranges, UTF-16, uris, text
  edits, Markdown, symbols);
* :mod:`pathfusion.server.lsp_settings`, :mod:`pathfusion.server.lsp_models` — the settings, and the models loaded
  for them;
* :mod:`pathfusion.server.feature_hover`, :mod:`pathfusion.server.feature_rename`, :mod:`pathfusion.server.feature_search`,
  :mod:`pathfusion.server.feature_index` — the features.

Ending: ``shutdown`` stops the indexing run (at its next batch) and saves the indexes;
when the connection ends without it (the client closed the pipe or died), :func:`serve`
does the same and exits by itself instead of waiting for a run nobody will see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from lsprotocol import types

from . import feature_hover, feature_rename, feature_search, lsp_settings
from .documents import apply_changes
from .feature_hover import naming_sources
from .feature_index import file_events
from .feature_rename import RENAME_KIND, compute_rename
from .feature_search import merge_results, search_args
from .lsp_convert import symbol_kind, text_edits, uri_path
from .lsp_server import EXIT_TIMEOUT_S, PathfusionServer
from .lsp_worker import Snapshot
from .positions import TextBuffer
from .settings import Settings

__all__ = [  # and, from their modules, the names that tests import from here
    "PathfusionServer", "Snapshot", "compute_rename", "main", "merge_results", "naming_sources",
    "resolve_code_action", "search_args", "serve", "server", "symbol_kind", "text_edits",
]

log = logging.getLogger(__name__)

STATUS_COMMAND = "pathfusion.status"
SEARCH_COMMAND = "pathfusion.search"
REINDEX_COMMAND = "pathfusion.reindex"

server = PathfusionServer()


# -- lifecycle & settings ----------------------------------------------------------------------
@server.feature(types.INITIALIZE)
def initialize(ls: PathfusionServer, params: types.InitializeParams) -> None:
    lsp_settings.initialize(ls, params)
    # Load code2vec now, in the background, so that the first hover does not wait for all
    # of it (a hover arriving meanwhile waits on the same lock instead of loading it
    # twice; settings pulled on ``initialized`` that name another folder reload it).
    ls.background(ls.get_model())


@server.feature(types.INITIALIZED)
async def initialized(ls: PathfusionServer, params: types.InitializedParams) -> None:
    await lsp_settings.pull_settings(ls)
    ls.background(ls.get_model())  # a no-op unless the pulled settings name other models
    ls.start_indexing()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: PathfusionServer, params: types.DidChangeConfigurationParams) -> None:
    await lsp_settings.configuration_changed(ls, params)
    if ls.indexes.key is not None:
        ls.start_indexing()  # reopens only when the folders, models or index settings changed


@server.feature(types.SHUTDOWN)
async def shutdown(ls: PathfusionServer, params: None) -> None:
    """Stop indexing (the run stops after its current batch) and save the indexes before
    answering, so that the client's ``exit`` finds nothing left to do."""
    ls.shutdown_requested = True
    ls.stop_indexing()
    await ls.indexes.wait_async(EXIT_TIMEOUT_S)
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
    if ls.indexes.key is not None:
        ls.start_indexing()


# -- document sync -----------------------------------------------------------------------------
@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: PathfusionServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.keep_document(TextBuffer(item.text, uri=item.uri, version=item.version))
    ls.background(feature_hover.prefetch_naming(ls, item.uri))


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: PathfusionServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.documents.get(params.text_document.uri)
    if doc is not None:
        ls.keep_document(apply_changes(doc, params.content_changes, params.text_document.version,
                                       ls.settings.max_file_size))


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: PathfusionServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.forget_document(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE, types.SaveOptions(include_text=False))
async def did_save(ls: PathfusionServer, params: types.DidSaveTextDocumentParams) -> None:
    path = uri_path(params.text_document.uri)
    if path:
        await ls.indexes.update_paths([path])


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
async def did_change_watched_files(ls: PathfusionServer, params: types.DidChangeWatchedFilesParams) -> None:
    await ls.indexes.update_paths(*file_events(params))


# -- features ----------------------------------------------------------------------------------
@server.feature(types.TEXT_DOCUMENT_HOVER)
async def hover(ls: PathfusionServer, params: types.HoverParams) -> types.Hover | None:
    with ls.foreground.request():
        return await feature_hover.hover(ls, params)


@server.feature(types.WORKSPACE_SYMBOL)
async def workspace_symbol_search(
    ls: PathfusionServer, params: types.WorkspaceSymbolParams
) -> list[types.WorkspaceSymbol]:
    return await feature_search.symbols(ls, params.query)


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[RENAME_KIND], resolve_provider=True),
)
async def code_action(ls: PathfusionServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    with ls.foreground.request():
        return await feature_rename.code_actions(ls, params)


@server.feature(types.CODE_ACTION_RESOLVE)
async def resolve_code_action(ls: PathfusionServer, action: types.CodeAction) -> types.CodeAction:
    return await feature_rename.resolve(ls, action)


@server.command(STATUS_COMMAND)
async def status_command(ls: PathfusionServer, *args: Any) -> dict[str, Any]:
    await ls.get_model()
    data = ls.status()
    data["index"] = await asyncio.get_running_loop().run_in_executor(ls.executor, ls.indexes.status)
    return data


@server.command(SEARCH_COMMAND)
async def search_command(ls: PathfusionServer, *args: Any) -> list[dict[str, Any]]:
    return await feature_search.search_command(ls, args)


@server.command(REINDEX_COMMAND)
async def reindex_command(ls: PathfusionServer, *args: Any) -> dict[str, Any]:
    """Re-sync every folder (with progress); answers when the run ends."""
    await ls.start_indexing(force=True)
    return await asyncio.get_running_loop().run_in_executor(ls.executor, ls.indexes.status)


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
    """``python -m pathfusion.server.lsp``: the same arguments and the same ``--tcp`` rule as ``pathfusion serve``."""
    from .cli_base import CliError, add_serve_arguments, check_serve_arguments

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
