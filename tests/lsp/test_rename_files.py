"""The rename code action reads only what the indexer would, through the real server:
regular files inside the workspace under ``maxFileSize`` (:mod:`pathfusion.server.rename_files`).

Given the workspace itself, jedi's project walk reads every ``*.py`` entry of it: a symlink
to ``/dev/zero`` (memory grows without bound), a FIFO (the worker blocks forever, and a
second rename blocks the other worker: hover and search stop too), a file over the size
limit, and links leading out of the workspace, whose targets the rename then edits.  The server
here runs under an address-space limit, so that a regression ends in a MemoryError rather
than in a machine out of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from pathfusion.server import feature_rename
from pathfusion.server.lsp import PathfusionServer, Snapshot, compute_rename, resolve_code_action
from pathfusion.server.parsing import Document, Position
from pathfusion.server.rename_files import read_text, regular_file_problem
from pathfusion.server.settings import Settings
from tests.helpers.lsp import (
    APP,
    LIB,
    NAME_LINE,
    NAME_START,
    apply_edits,
    code_actions,
    hover,
    initialize,
    open_doc,
    options,
    status,
)
from tests.rename_checks import assert_clean_rename

ADDRESS_SPACE_LIMIT = 2 << 30
MAX_FILE_SIZE = 20_000
RESOLVE_LIMIT_S = 10.0
"""The target is 2 s (measured figures: docs/reliability.md); this bound leaves room for a
loaded test machine, and is still finite where a FIFO read by jedi would block forever."""
RESPONSIVE_LIMIT_S = 5.0
USER = "from lib import load_config\n\n\nsettings = load_config('y.json')\n"
"""A module that uses the renamed function: a rename that reads it edits it."""

SERVER = (
    "import resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT}))\n"
    "from pathfusion.server.cli import with_default_command\n"
    "sys.exit(with_default_command(['serve', '--stdio']))\n"
)


@pytest_asyncio.fixture
async def guarded_client() -> AsyncIterator[LanguageClient]:
    config = ClientServerConfig(server_command=[sys.executable, "-c", SERVER])
    lsp_client = await config.start()
    assert isinstance(lsp_client, LanguageClient)
    yield lsp_client
    await lsp_client.shutdown_session()
    await lsp_client.stop()


def _dev_zero(ws: Path, outside: Path) -> None:
    (ws / "zero.py").symlink_to("/dev/zero")


def _fifo(ws: Path, outside: Path) -> None:
    os.mkfifo(ws / "fifo.py")


def _big(ws: Path, outside: Path) -> None:
    (ws / "big.py").write_text(USER + ("#" * 79 + "\n") * (MAX_FILE_SIZE // 80 + 10))
    assert (ws / "big.py").stat().st_size > MAX_FILE_SIZE


def _link_out(ws: Path, outside: Path) -> None:
    (outside / "other.py").write_text(USER)
    (ws / "other.py").symlink_to(outside / "other.py")


def _dir_link_out(ws: Path, outside: Path) -> None:
    (outside / "pkg").mkdir()
    (outside / "pkg" / "user.py").write_text(USER)
    (ws / "pkg").symlink_to(outside / "pkg", target_is_directory=True)


SPECIAL: dict[str, Callable[[Path, Path], None]] = {
    "symlink to /dev/zero": _dev_zero,
    "fifo named *.py": _fifo,
    "file over maxFileSize": _big,
    "symlink out of the workspace": _link_out,
    "directory symlink out of the workspace": _dir_link_out,
}


def _unblock_fifos(ws: Path) -> None:
    """Give a reader blocked on a FIFO of ``ws`` its end of file (a regression must not
    leave the server unable to exit)."""
    for path in ws.glob("*.py"):
        if path.is_fifo():
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("case", list(SPECIAL))
async def test_rename_skips_special_files(
    guarded_client: LanguageClient, models_dir: Path, tmp_path: Path, case: str
) -> None:
    client = guarded_client
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (ws / "lib.py").write_text(LIB)
    (ws / "app.py").write_text(APP)
    SPECIAL[case](ws, outside)
    try:
        await initialize(client, ws, options(models_dir, maxFileSize=MAX_FILE_SIZE))
        uri = open_doc(client, ws / "lib.py")
        actions = await code_actions(client, uri, NAME_LINE, NAME_START)
        assert len(actions) >= 2
        started = time.monotonic()
        # two renames at once: before, they held both workers of the pool
        resolving = [asyncio.ensure_future(client.code_action_resolve_async(a)) for a in actions[:2]]
        found = await asyncio.wait_for(hover(client, uri, NAME_LINE, NAME_START), RESPONSIVE_LIMIT_S)
        assert found is not None, "hover answers while renames are computed"
        resolved = await asyncio.wait_for(asyncio.gather(*resolving), RESOLVE_LIMIT_S)
        elapsed = time.monotonic() - started
        for action in resolved:
            assert action.disabled is None, (case, action.disabled)
            assert action.edit is not None and action.edit.document_changes
            uris = {c.text_document.uri for c in action.edit.document_changes
                    if isinstance(c, types.TextDocumentEdit)}
            assert uris == {uri, (ws / "app.py").as_uri()}, (case, uris)
            assert isinstance(action.data, dict)
            changes = {c.text_document.uri: c for c in action.edit.document_changes
                       if isinstance(c, types.TextDocumentEdit)}
            new_name = action.data["new_name"]
            assert_clean_rename(
                {"lib.py": LIB, "app.py": APP},
                {"lib.py": apply_edits(LIB, changes[uri].edits),
                 "app.py": apply_edits(APP, changes[(ws / "app.py").as_uri()].edits)},
                "load_config", new_name)
        # still responsive afterwards
        assert await asyncio.wait_for(hover(client, uri, NAME_LINE, NAME_START), RESPONSIVE_LIMIT_S)
        await asyncio.wait_for(status(client), RESPONSIVE_LIMIT_S)
        print(f"{case}: two renames resolved in {elapsed:.2f} s")
    finally:
        _unblock_fifos(ws)


# -- in process: a rename that never ends cannot take the hovers' workers ----------------------
async def test_a_stuck_rename_is_bounded_and_leaves_the_pool_free(monkeypatch: pytest.MonkeyPatch) -> None:
    from pygls.workspace import Workspace

    ls = PathfusionServer()
    ls.protocol._workspace = Workspace(None)
    doc = Document(LIB, uri="file:///nowhere/lib.py", version=1)
    ls.documents[doc.uri] = doc
    stuck = threading.Event()

    def blocked(*args: object, **kwargs: object) -> types.WorkspaceEdit:
        stuck.wait(30)
        return types.WorkspaceEdit()

    monkeypatch.setattr(feature_rename, "RENAME_TIMEOUT_S", 0.5)
    monkeypatch.setattr(feature_rename, "compute_rename", blocked)
    action = types.CodeAction(title="Rename", data={
        "uri": doc.uri, "version": 1, "line": NAME_LINE, "character": NAME_START, "new_name": "read_settings"})
    try:
        started = time.monotonic()
        first, second = await asyncio.gather(resolve_code_action(ls, action), resolve_code_action(ls, action))
        assert time.monotonic() - started < 5
        for result in (first, second):
            assert result.edit is None and result.disabled is not None
            assert "longer than" in result.disabled.reason or "still" in result.disabled.reason
        # both pool workers are free for hovers meanwhile
        loop = asyncio.get_running_loop()
        answers = await asyncio.wait_for(asyncio.gather(
            loop.run_in_executor(ls.executor, lambda: 1), loop.run_in_executor(ls.executor, lambda: 2)), 2)
        assert answers == [1, 2]
    finally:
        stuck.set()
        ls.stop_indexing()
        ls.executor.shutdown(wait=True)


# -- units -------------------------------------------------------------------------------------
def test_read_text_never_blocks_and_keeps_the_limit(tmp_path: Path) -> None:
    """What the rename reads of another file is read without blocking (a FIFO swapped in
    after the check is refused at once) and within the size limit."""
    fifo = tmp_path / "swapped.py"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        read_text(fifo, MAX_FILE_SIZE)
    assert time.monotonic() - started < 1
    big = tmp_path / "big.py"
    big.write_text("x" * 100)
    with pytest.raises(OSError, match="larger than"):
        read_text(big, 99)
    assert read_text(big, 100) == "x" * 100
    real_root = os.path.realpath(tmp_path / "ws")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "out.py").symlink_to(big)
    assert regular_file_problem(tmp_path / "ws" / "out.py", real_root, MAX_FILE_SIZE) == "outside the workspace"
    (tmp_path / "ws" / "zero.py").symlink_to("/dev/zero")
    assert regular_file_problem(tmp_path / "ws" / "zero.py", real_root, MAX_FILE_SIZE) == "outside the workspace"
    (tmp_path / "ws" / "in.py").write_text("pass\n")
    assert regular_file_problem(tmp_path / "ws" / "in.py", real_root, MAX_FILE_SIZE) is None


def test_a_document_without_a_file_renames_within_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An untitled buffer has no folder: jedi gets an empty mirror (before, jedi's default
    project walked the server's working directory)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere.py").write_text("from x import load_config\nload_config(2)\n")
    text = "def load_config(p):\n    return p\n\n\nx = load_config(1)\n"
    edit = compute_rename(Snapshot("untitled:Untitled-1", 1, text), Position(0, 4), "read_settings", [],
                          Settings(), {})
    [change] = edit.document_changes or []
    assert isinstance(change, types.TextDocumentEdit) and change.text_document.uri == "untitled:Untitled-1"
    assert apply_edits(text, change.edits) == text.replace("load_config", "read_settings")
