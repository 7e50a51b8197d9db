"""The workspace index in the language server (docs/design.md §8 "Search", "Index"; §10 cancel,
edits during indexing): pytest-lsp against the real subprocess server, the real int8
all-MiniLM-L6-v2 embedder and a tiny code2vec model, with the index in a tmp cache dir."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from pathfusion.server.feature_search import SIMILAR_FLOOR
from pathfusion.server.lsp import merge_results, search_args, symbol_kind
from tests.helpers.lsp_search import command, initialize, status, wait_for, wait_indexed

SEARCH_KEYS = {"uri", "range", "name", "qualname", "score", "snippet", "signature", "summary"}


async def search(client: LanguageClient, query: str, k: int = 3) -> list[dict[str, Any]]:
    result = await command(client, "pathfusion.search", [{"query": query, "k": k}])
    assert isinstance(result, list)
    return result


def kinds(reports: list[Any]) -> list[str]:
    return [type(r).__name__ for r in reports]


# -- end to end ------------------------------------------------------------------------------
async def test_index_search_symbols_hover_save_reindex(
    client: LanguageClient, search_models: Path, workspace: Path
) -> None:
    await initialize(client, workspace, search_models)
    info = await wait_indexed(client)
    [folder] = info["index"]["folders"]
    assert folder["state"] == "ready" and folder["root"] == str(workspace)
    assert (folder["files"], folder["functions"]) == (3, 6)  # ignored.py is gitignored
    assert "rebuild_reason" in folder and info["index"]["embedder"]

    # the file watcher was registered dynamically
    [watch] = [r for r in client.registrations if r.method == "workspace/didChangeWatchedFiles"]  # type: ignore[attr-defined]
    assert "**/*.py" in str(watch.register_options)

    # progress: begin (cancellable) / report with percentages / end
    [reports] = list(client.progress_reports.values())
    assert kinds(reports)[0] == "WorkDoneProgressBegin" and kinds(reports)[-1] == "WorkDoneProgressEnd"
    assert reports[0].cancellable is True
    percentages = [r.percentage for r in reports if isinstance(r, types.WorkDoneProgressReport)]
    assert percentages and percentages == sorted(percentages) and percentages[-1] == 100

    # pathfusion.search: natural language and exact identifiers, both argument shapes
    found = await search(client, "check whether a number is prime")
    assert found[0]["qualname"] == "is_prime" and set(found[0]) == SEARCH_KEYS
    assert found[0]["uri"] == (workspace / "mathutil.py").as_uri()
    assert found[0]["range"]["start"]["line"] == 5
    assert found[0]["snippet"].startswith("def is_prime(n):") and found[0]["signature"] == "def is_prime(n)"
    found = await command(client, "pathfusion.search", [[{"query": "save_config", "k": 2}]])
    assert len(found) == 2 and found[0]["qualname"] == "save_config"
    assert (await search(client, "average of a list of numbers"))[0]["qualname"] == "Stats.mean"

    # workspace/symbol answers with the same engine
    symbols = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="is_prime"))
    assert symbols and symbols[0].name == "is_prime" and symbols[0].kind == types.SymbolKind.Function
    assert isinstance(symbols[0].location, types.Location)
    assert symbols[0].location.uri == (workspace / "mathutil.py").as_uri()
    symbols = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="mean of values"))
    assert symbols and symbols[0].name == "mean" and symbols[0].kind == types.SymbolKind.Method
    assert symbols[0].container_name == "Stats"
    assert await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="  ")) == []

    # hover: similar functions (links, not the function itself, none below the floor)
    config_uri = (workspace / "config.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=config_uri, language_id="python", version=1, text=(workspace / "config.py").read_text())))
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=config_uri), position=types.Position(line=6, character=6)))
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    similar = hover.contents.value.split("**Similar functions**", 1)[1]
    links = [line for line in similar.splitlines() if line.startswith("- [")]
    assert links[0].startswith(r"- [load\_config](") and "#L1)" in links[0]  # names escaped
    assert r"[save\_config]" not in similar and all(float(link.rsplit(" — ", 1)[1]) >= SIMILAR_FLOOR for link in links)
    # nothing in the workspace is like is_prime: no "similar" line for it
    math_uri = (workspace / "mathutil.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=math_uri, language_id="python", version=1, text=(workspace / "mathutil.py").read_text())))
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=math_uri), position=types.Position(line=5, character=6)))
    assert hover is None or "Similar functions" not in str(hover.contents)

    # save a changed file → the index follows
    path = workspace / "mathutil.py"
    path.write_text(path.read_text().replace("def reverse_words(sentence):", "def count_vowels(sentence):"))
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=math_uri)))

    async def renamed() -> bool:
        return (await search(client, "count_vowels", k=1))[0]["qualname"] == "count_vowels"

    await wait_for(renamed, "the saved file in the index", seconds=30)
    assert all(r["qualname"] != "reverse_words" for r in await search(client, "reverse_words", k=10))

    # watched-file events: a deleted file leaves the index
    (workspace / "net" / "http.py").unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[types.FileEvent(
        uri=(workspace / "net" / "http.py").as_uri(), type=types.FileChangeType.Deleted)]))

    async def deleted() -> bool:
        return (await status(client))["index"]["folders"][0]["files"] == 2

    await wait_for(deleted, "the deleted file to leave the index", seconds=30)

    # pathfusion.reindex: a file written behind the server's back
    (workspace / "extra.py").write_text("def compute_checksum(data):\n    return sum(data) % 256\n")
    result = await command(client, "pathfusion.reindex")
    assert result["folders"][0]["state"] == "ready" and result["folders"][0]["functions"] == 6
    assert (await search(client, "compute_checksum", k=1))[0]["qualname"] == "compute_checksum"
    assert len(client.progress_reports) == 2


async def test_cancelled_indexing_keeps_the_server_alive(
    client: LanguageClient, search_models: Path, workspace: Path
) -> None:
    for number in range(60):
        (workspace / f"gen_{number}.py").write_text("".join(
            f"def function_{number}_{i}(value):\n    return value * {i} + {number}\n\n" for i in range(4)))
    await initialize(client, workspace, search_models)

    def begun() -> str | None:
        for token, reports in client.progress_reports.items():
            if reports and isinstance(reports[0], types.WorkDoneProgressBegin):
                return str(token)
        return None

    token = await wait_for(begun, "the progress begin", seconds=60)
    # an edit arriving during indexing is queued behind the run, never lost or deadlocked
    saved = workspace / "gen_0.py"
    saved.write_text("def edited_during_indexing():\n    return 1\n")
    client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=saved.as_uri())))
    client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
    info = await wait_indexed(client)
    [folder] = info["index"]["folders"]
    assert folder["state"] == "cancelled" and folder["functions"] < 6 + 240
    await wait_for(lambda: kinds(client.progress_reports[token])[-1] == "WorkDoneProgressEnd", "the end")
    # the server still answers, and searches what was indexed
    assert (await status(client))["name"] == "pathfusion"
    assert isinstance(await search(client, "is_prime"), list)

    async def edited() -> bool:
        found = await search(client, "edited_during_indexing", k=1)
        return bool(found) and found[0]["qualname"] == "edited_during_indexing"

    await wait_for(edited, "the edit made during indexing", seconds=30)


async def test_missing_embedder_warns_once_and_answers_empty(
    client: LanguageClient, workspace: Path, tmp_path: Path
) -> None:
    await initialize(client, workspace, tmp_path / "no-models")
    info = await wait_indexed(client)
    assert info["index"]["embedder"] is None and info["index"]["embedder_error"]
    assert info["index"]["folders"][0]["state"] == "off"
    assert await search(client, "is_prime") == []
    assert await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="is_prime")) == []
    warnings = [m for m in client.messages if "semantic search is off" in m.message]
    assert len(warnings) == 1 and warnings[0].type == types.MessageType.Warning


async def test_workspace_folders_added_and_removed(
    client: LanguageClient, search_models: Path, workspace: Path, tmp_path: Path
) -> None:
    """didChangeWorkspaceFolders: an added folder is opened and indexed, a removed one
    closed (its graph saved) and no longer searched; the other folder keeps its index."""
    await initialize(client, workspace, search_models)
    await wait_indexed(client)
    other = tmp_path / "other"
    other.mkdir()
    (other / "geometry.py").write_text("def triangle_area(base, height):\n    return base * height / 2\n")
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(
            added=[types.WorkspaceFolder(uri=other.as_uri(), name="other")], removed=[])))

    async def both_ready() -> dict[str, Any] | None:
        folders = {f["root"]: f for f in (await status(client))["index"]["folders"]}
        ready = len(folders) == 2 and all(f["state"] == "ready" for f in folders.values())
        return folders if ready else None

    folders = await wait_for(both_ready, "the added folder's index", seconds=60)
    assert folders[str(other)]["functions"] == 1
    assert folders[str(workspace)]["last_run"]["scanned"] == 3  # not re-synced by the change
    assert (await search(client, "triangle_area", k=1))[0]["qualname"] == "triangle_area"
    assert (await search(client, "is_prime", k=1))[0]["qualname"] == "is_prime"
    client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
        event=types.WorkspaceFoldersChangeEvent(
            added=[], removed=[types.WorkspaceFolder(uri=workspace.as_uri(), name="ws")])))

    async def removed() -> bool:
        return [f["root"] for f in (await status(client))["index"]["folders"]] == [str(other)]

    await wait_for(removed, "the removed folder to be closed", seconds=30)
    assert all(r["qualname"] != "is_prime" for r in await search(client, "is_prime", k=5))
    assert (await search(client, "triangle_area", k=1))[0]["qualname"] == "triangle_area"


async def test_bad_files_are_skipped_with_reasons_in_status(
    client: LanguageClient, search_models: Path, workspace: Path
) -> None:
    """Design §10 through the server: binary, non-UTF-8 and oversized files in the
    workspace are skipped with a reason the status shows; an empty file is fine; hover on
    an open document over ``maxFileSize`` answers nothing instead of analysing it."""
    (workspace / "blob.py").write_bytes(b"\x7fELF\x00\x01\x02\x00" * 10)
    (workspace / "latin.py").write_bytes("def caf\u00e9():\n    return '\u00e9'\n".encode("latin-1"))
    (workspace / "empty.py").write_text("")
    big = "def big_function():\n    return 1\n" + "# padding\n" * 300
    (workspace / "big.py").write_text(big)
    await initialize(client, workspace, search_models, maxFileSize=2000)
    info = await wait_indexed(client)
    [folder] = info["index"]["folders"]
    assert folder["state"] == "ready" and folder["functions"] == 6
    reasons = {Path(item["path"]).name: item["reason"] for item in folder["last_run"]["skipped_files"]}
    assert folder["last_run"]["skipped"] == len(reasons) == 3
    assert "binary" in reasons["blob.py"] and "utf-8" in reasons["latin.py"]
    assert "larger than 2000" in reasons["big.py"]
    for path, text in ((workspace / "big.py", big), (workspace / "empty.py", "")):
        uri = path.as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))
        assert await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=5))) is None
    assert (await status(client))["model_loaded"] is True  # the server still works


class RawClient:
    """Just enough JSON-RPC over a server subprocess's pipes to start it and then vanish."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        with contextlib.suppress(ValueError, OSError):  # the test closes the pipe
            while True:
                length = 0
                while line := stream.readline():
                    if not line.strip():
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line:
                    return
                self.messages.put(json.loads(stream.read(length)))

    def send(self, method: str, params: Any, request: bool = True) -> int:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return self.next_id

    def request(self, method: str, params: Any, timeout: float = 60.0) -> Any:
        rid = self.send(method, params)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.get("id") == rid and "method" not in message:
                return message.get("result")
        raise AssertionError(f"no answer to {method}")


@pytest.mark.parametrize("how", ["close-stdin", "kill-pipes", "shutdown-exit", "exit-only"])
def test_client_disconnect_during_indexing_ends_the_server(search_models: Path, tmp_path: Path, how: str) -> None:
    """Design §10 "a client that disconnects": the client vanishes while the index is being
    built (2,000 functions: tens of seconds of embedding); the server stops the run, saves
    the graph and exits by itself, quickly, with no traceback.  An orderly ``shutdown`` +
    ``exit`` does the same with exit code 0, a bare ``exit`` with 1 (LSP)."""
    root = tmp_path / "ws"
    root.mkdir()
    for number in range(200):
        (root / f"gen_{number}.py").write_text("".join(
            f"def function_{number}_{i}(value):\n    return value * {i} + {number}\n\n" for i in range(10)))
    cache = tmp_path / "cache"
    env = {**os.environ, "PATHFUSION_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pathfusion", "serve", "--stdio"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        client = RawClient(proc)
        client.request("initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {},
                                      "workspaceFolders": [{"uri": root.as_uri(), "name": "ws"}],
                                      "initializationOptions": {"modelsDir": str(search_models), "device": "cpu"}})
        client.send("initialized", {}, request=False)
        for _ in range(600):
            info = client.request("workspace/executeCommand", {"command": "pathfusion.status", "arguments": []})
            folders = info["index"]["folders"]
            if folders and folders[0]["state"] == "indexing" and folders[0]["functions"] > 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"indexing never got going: {info}")
        start = time.monotonic()
        assert proc.stdin is not None and proc.stdout is not None
        if how == "shutdown-exit":
            assert client.request("shutdown", None, timeout=15) is None
            client.send("exit", None, request=False)
        elif how == "exit-only":
            client.send("exit", None, request=False)
        else:
            proc.stdin.close()
            if how == "kill-pipes":  # the client process died: its end of both pipes is gone
                proc.stdout.close()
        proc.wait(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr is not None else ""
    assert proc.returncode == (1 if how == "exit-only" else 0), stderr
    assert took < 15, f"the server took {took:.1f} s to exit"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    [folder] = [p for p in cache.iterdir() if p.is_dir()]
    manifest = json.loads((folder / "manifest.json").read_text())
    with sqlite3.connect(folder / "meta.sqlite") as db:
        generation = int(db.execute("SELECT value FROM state WHERE key='generation'").fetchone()[0])
        indexed = db.execute("SELECT count(*) FROM functions WHERE deleted = 0").fetchone()[0]
    assert 0 < indexed < 2000  # stopped part way
    assert manifest["generation"] == generation  # the graph was saved on the way out


# -- units -------------------------------------------------------------------------------------
def test_search_args_shapes() -> None:
    assert search_args([{"query": "x", "k": 3}]) == ("x", 3)
    assert search_args([[{"query": "x", "k": 3}]]) == ("x", 3)
    assert search_args([{"query": "x"}]) == ("x", 10)
    assert search_args(["x"]) == ("x", 10)
    for bad in ([], [{"k": 3}], [{"query": "x", "k": "3"}], [{"query": "x", "k": 1.5}], [1, 2]):
        with pytest.raises(ValueError):
            search_args(bad)


def test_symbol_kind_and_merge() -> None:
    assert symbol_kind("f") == types.SymbolKind.Function
    assert symbol_kind("C.f") == types.SymbolKind.Method
    assert symbol_kind("f.<locals>.g") == types.SymbolKind.Function
    assert merge_results([[], []], 3) == []
