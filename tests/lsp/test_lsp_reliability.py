"""Reliability through the real server process (docs/reliability.md): CR-only line ends, big
open buffers, invalid requests and bodies, and the protocol's per-message bookkeeping.
pytest-lsp's client and fixtures come from ``tests/lsp/conftest.py``; the requests a
well-behaved client cannot send (negative positions, bodies that are not UTF-8 or JSON) go
through :class:`tests.lsp_driver.RawLspClient`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import LanguageClient

from tests.helpers.lsp import (
    LIB,
    NAME_END,
    NAME_LINE,
    NAME_START,
    apply_edits,
    code_actions,
    hover,
    initialize,
    open_doc,
    options,
)
from tests.lsp_driver import ROOT, RawLspClient, lsp_range, position, text_document_item

SHIPPED_MODELS = ROOT / "models"


def change(client: LanguageClient, uri: str, version: int, start: tuple[int, int], end: tuple[int, int],
           text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=start[0], character=start[1]),
                              end=types.Position(line=end[0], character=end[1])),
            text=text)]))


def hover_value(found: types.Hover | None) -> tuple[str, types.Range | None] | None:
    if found is None:
        return None
    assert isinstance(found.contents, types.MarkupContent)
    return found.contents.value, found.range


# -- item 4: CR-only line ends ---------------------------------------------------------------
async def test_cr_only_document_behaves_like_lf(
    client: LanguageClient, models_dir: Path, workspace: Path
) -> None:
    await initialize(client, workspace, options(models_dir))
    cr_text = LIB.replace("\n", "\r")
    (workspace / "cr.py").write_bytes(cr_text.encode())
    (workspace / "lf.py").write_text(LIB)
    lf = open_doc(client, workspace / "lf.py", text=LIB)
    cr = open_doc(client, workspace / "cr.py", text=cr_text)

    want = hover_value(await hover(client, lf, NAME_LINE, NAME_START + 1))
    assert want is not None
    assert hover_value(await hover(client, cr, NAME_LINE, NAME_START + 1)) == want
    lf_titles = [a.title for a in await code_actions(client, lf, NAME_LINE, NAME_START)]
    assert lf_titles and [a.title for a in await code_actions(client, cr, NAME_LINE, NAME_START)] == lf_titles

    # incremental edits on CR lines: delete "import json" and its blank line, insert a
    # comment line, and turn a lone \r into \r\n (the line count must not change)
    for uri, eol in ((lf, "\n"), (cr, "\r")):
        change(client, uri, 2, (0, 0), (2, 0), "")
        change(client, uri, 3, (0, 0), (0, 0), f"# note{eol}")
        change(client, uri, 4, (1, 0), (1, 0), "\n" if eol == "\r" else "")
    cr_client = "# note\r\n" + "\r".join(LIB.split("\n")[2:])
    want = hover_value(await hover(client, lf, NAME_LINE - 1, NAME_START + 1))
    assert want is not None
    assert hover_value(await hover(client, cr, NAME_LINE - 1, NAME_START + 1)) == want
    assert await hover(client, cr, NAME_LINE, 4) is None  # the body, not the def line

    # the rename's edits, applied to the editor's copy, rename the function and nothing else
    actions = await code_actions(client, cr, NAME_LINE - 1, NAME_START)
    assert actions and isinstance(actions[0].data, dict)
    new_name = actions[0].data["new_name"]
    resolved = await client.code_action_resolve_async(actions[0])
    assert resolved.disabled is None, resolved.disabled
    assert resolved.edit is not None and resolved.edit.document_changes
    mine = [c for c in resolved.edit.document_changes
            if isinstance(c, types.TextDocumentEdit) and c.text_document.uri == cr]
    assert len(mine) == 1
    assert apply_edits(cr_client, mine[0].edits) == cr_client.replace("def load_config(", f"def {new_name}(")


# -- item 5: big open buffers ----------------------------------------------------------------
async def test_big_buffer_neither_blocks_nor_is_analysed(
    client: LanguageClient, models_dir: Path, workspace: Path
) -> None:
    await initialize(client, workspace, options(models_dir))
    lib = open_doc(client, workspace / "lib.py")
    assert await hover(client, lib, NAME_LINE, NAME_START) is not None  # the model is loaded
    big_text = "x = [" + "1, " * 1_700_000 + "]\n"  # 5.1 MB on one line
    big = open_doc(client, workspace / "big.py", text=big_text)
    delays = []
    for version in range(2, 6):
        started = time.perf_counter()
        assert await hover(client, lib, NAME_LINE, NAME_START) is not None
        delays.append(time.perf_counter() - started)
        change(client, big, version, (0, 5), (0, 5), "2, ")  # a keystroke in the big buffer
    started = time.perf_counter()
    assert await hover(client, lib, NAME_LINE, NAME_START) is not None
    delays.append(time.perf_counter() - started)
    assert max(delays) <= 1.0, delays

    # above maxFileSize: not analysed, said once, shown in the status
    assert await hover(client, big, 0, 0) is None
    assert await code_actions(client, big, 0, 0) == []
    said = [m for m in client.messages if "maxFileSize" in m.message and "big.py" in m.message]
    assert len(said) == 1, [m.message for m in client.messages]
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="pathfusion.status", arguments=[]))
    assert isinstance(info, dict)
    entry = next(d for d in info["documents"] if d["uri"] == big)
    assert entry["version"] == 5 and "maxFileSize" in entry["skipped"]

    # back under the limit: analysed again, from the text kept in sync meanwhile
    change(client, big, 6, (0, 0), (1, 0), LIB + "\n")
    found = await hover(client, big, NAME_LINE, NAME_START)
    assert found is not None and found.range == types.Range(
        start=types.Position(line=NAME_LINE, character=NAME_START),
        end=types.Position(line=NAME_LINE, character=NAME_END))


# -- item 7: invalid requests and bodies ---------------------------------------------------------
@pytest_asyncio.fixture
async def raw(models_dir: Path, workspace: Path, tmp_path: Path) -> AsyncIterator[RawLspClient]:
    lsp = await RawLspClient.start(stderr_path=tmp_path / "server.log", settings=options(models_dir),
                                   env={"PATHFUSION_CACHE_DIR": str(tmp_path / "cache")})
    await lsp.initialize(workspace)
    yield lsp
    assert lsp.alive, "the server died"
    await lsp.close()


def hover_params(uri: str, line: int, character: int) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}, "position": position(line, character)}


async def test_invalid_requests_get_an_answer(raw: RawLspClient, workspace: Path, tmp_path: Path) -> None:
    uri = (workspace / "lib.py").as_uri()
    await raw.notify("textDocument/didOpen", text_document_item(uri, LIB))
    ok = await raw.request("textDocument/hover", hover_params(uri, NAME_LINE, NAME_START), 30)
    assert ok.ok and ok.result is not None

    # positions outside the document: a result (LSP clamps them), never silence
    for line, character in ((500, 0), (NAME_LINE, 10_000), (2**31 - 1, 2**31 - 1)):
        answer = await raw.request("textDocument/hover", hover_params(uri, line, character), 10)
        assert answer.ok, (line, character, answer.error)
    answer = await raw.request("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": lsp_range((900, 3), (2, 0)), "context": {"diagnostics": []}}, 10)
    assert answer.ok
    for data in ({"uri": uri, "version": 1, "line": 10**12, "character": -5, "new_name": "x"},
                 {"uri": uri, "version": 1, "line": -1, "character": 0, "new_name": "x"},
                 "not an object"):
        answer = await raw.request("codeAction/resolve", {"title": "t", "data": data}, 10)
        assert answer.ok and answer.result["disabled"] is not None, answer

    # positions no LSP type admits: an invalid-params error for that request
    for line, character in ((-1, 0), (NAME_LINE, -5), (2**31, 0)):
        answer = await raw.request("textDocument/hover", hover_params(uri, line, character), 10)
        assert answer.error is not None and answer.error["code"] == -32602, (line, character, answer)
    answer = await raw.request("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": lsp_range((-3, 0), (0, 0)), "context": {"diagnostics": []}}, 10)
    assert answer.error is not None and answer.error["code"] == -32602
    answer = await raw.request("textDocument/hover", "not params", 10)
    assert answer.error is not None and answer.error["code"] == -32602
    answer = await raw.request("workspace/executeCommand", {"command": "pathfusion.search", "arguments": [3]}, 10)
    assert answer.error is not None and answer.error["code"] == -32602
    # a notification no type admits is dropped, and the document stays usable
    await raw.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                                "contentChanges": [{"range": lsp_range((-1, 0), (0, 0)), "text": "x"}]})

    # bodies that are not UTF-8 or not JSON-RPC: an error with id null
    bodies = {
        b'{"jsonrpc": "2.0", "id": 90, "method": "textDocument/hover", "params": {"x": "\xc3\x28"}}': -32700,
        b"\xff\xfe{}": -32700,
        b"not json": -32700,
        b'{"jsonrpc": "2.0", "id": 91, "method": "textDocument/hover", "params": {"n": NaN}}': -32700,
        b"[1, 2]": -32600,
        b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "textDocument/hover"}': -32600,
    }
    for body, code in bodies.items():
        reply = await raw.raw_request(body, 10)
        assert reply["id"] is None and reply["error"]["code"] == code, (body, reply)
    reply_to = await raw.raw_request(b'{"jsonrpc": "2.0", "id": 92, "method": 7}', 10)
    assert reply_to["id"] == 92 and reply_to["error"]["code"] == -32600

    ok = await raw.request("textDocument/hover", hover_params(uri, NAME_LINE, NAME_START), 10)
    assert ok.ok and ok.result is not None
    await asyncio.sleep(0.2)
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert raw.malformed == []


@pytest.mark.skipif(not (SHIPPED_MODELS / "embedder").is_dir(), reason="needs the shipped MiniLM embedder")
async def test_search_query_with_lone_surrogates_is_sanitised(workspace: Path, tmp_path: Path) -> None:
    settings = {"modelsDir": str(SHIPPED_MODELS), "device": "cpu"}
    lsp = await RawLspClient.start(settings=settings, stderr_path=tmp_path / "server.log",
                                   env={"PATHFUSION_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    try:
        await lsp.initialize(workspace)
        for _ in range(600):
            status = await lsp.request("workspace/executeCommand", {"command": "pathfusion.status"}, 30)
            folders = status.result["index"]["folders"]
            if folders and folders[0]["state"] not in ("opening", "indexing"):
                break
            await asyncio.sleep(0.2)
        assert folders[0]["state"] == "ready", folders

        async def search(query: str) -> tuple[Any, Any]:
            found = await lsp.request("workspace/executeCommand", {
                "command": "pathfusion.search", "arguments": [{"query": query, "k": 3}]}, 30)
            symbols = await lsp.request("workspace/symbol", {"query": query}, 30)
            assert found.ok and symbols.ok
            return found.result, symbols.result

        clean = await search("load \ufffd config")
        assert clean[0] and clean[1]
        assert await search("load \ud800 config") == clean  # a lone surrogate: replaced by U+FFFD
        assert await search("load \udfff config") == clean
        assert "failed" not in (tmp_path / "server.log").read_text()
    finally:
        await lsp.close()


# -- item 8: per-message bookkeeping -------------------------------------------------------------
def _talk_to(ls: Any, models_dir: Path) -> list[bytes]:
    """Point the server instance ``ls`` at ``models_dir`` and collect what it writes."""
    from pathfusion.server.settings import Settings

    sent: list[bytes] = []

    class Writer:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def close(self) -> None:
            pass

    ls.protocol.set_writer(Writer())
    ls.settings = ls.base_settings = Settings(models_dir=str(models_dir))
    return sent


async def test_protocol_forgets_finished_messages(models_dir: Path) -> None:
    """pygls keeps the future of every notification handled by a generator or coroutine, and
    of every command's inner handler, until the process ends: the server must not."""
    from pathfusion.server.lsp import server as ls  # the features are registered on this instance
    sent = _talk_to(ls, models_dir)
    messages = [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"processId": None, "rootUri": None, "capabilities": {}}},
                {"jsonrpc": "2.0", "method": "initialized", "params": {}},
                {"jsonrpc": "2.0", "method": "textDocument/didOpen",
                 "params": text_document_item("file:///x/lib.py", LIB)}]
    for version in range(2, 40):
        messages.append({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": "file:///x/lib.py", "version": version},
            "contentChanges": [{"range": lsp_range((0, 0), (0, 0)), "text": "#\n"}]}})
        messages.append({"jsonrpc": "2.0", "method": "textDocument/didSave",
                         "params": {"textDocument": {"uri": "file:///x/lib.py"}}})
        messages.append({"jsonrpc": "2.0", "id": version, "method": "workspace/executeCommand",
                         "params": {"command": "pathfusion.search", "arguments": [{"query": "x"}]}})
    for message in messages:
        ls.protocol.handle_message(ls.protocol.structure_message(json.loads(json.dumps(message))))
        await asyncio.sleep(0)
    for _ in range(200):
        if len([s for s in sent if b'"result"' in s]) >= 39:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert len([s for s in sent if b'"result"' in s]) >= 39
    assert len(ls.protocol._request_futures) == 0, len(ls.protocol._request_futures)


async def test_a_handler_cancelled_at_exit_logs_no_error(models_dir: Path) -> None:
    """``initialized`` waits for the client's settings; when the server ends first, the
    cancelled wait must end the message quietly, not as an "Exception in callback" with a
    traceback in the user's log."""
    from pathfusion.server.lsp import server as ls

    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    sent = _talk_to(ls, models_dir)
    for message in ({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"processId": None, "rootUri": None,
                                "capabilities": {"workspace": {"configuration": True}}}},
                    {"jsonrpc": "2.0", "method": "initialized", "params": {}}):
        ls.protocol.handle_message(ls.protocol.structure_message(json.loads(json.dumps(message))))
        await asyncio.sleep(0)
    for _ in range(100):  # the server asks for its settings; the client never answers
        if any(b"workspace/configuration" in s for s in sent):
            break
        await asyncio.sleep(0.02)
    assert any(b"workspace/configuration" in s for s in sent)
    pending = [f for f in ls.protocol._request_futures.values() if not f.done()]
    handlers = [f for f in pending if isinstance(f, asyncio.Task)]
    messages = [f for f in pending if not isinstance(f, asyncio.Task)]  # what the generator serves
    assert handlers and messages
    for task in handlers:  # what the end of the process does to the tasks still running
        task.cancel()
    await asyncio.sleep(0.1)
    assert errors == [] and all(f.cancelled() for f in messages)
