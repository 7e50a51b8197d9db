"""Search through the language server: start it with a models folder, wait for the
workspace index, run commands (the LSP search tests and the hover's similar functions)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities


async def initialize(client: LanguageClient, root: Path, models_dir: Path, **options: Any) -> None:
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
        initialization_options={"modelsDir": str(models_dir), "hoverMinConfidence": 1.0, "device": "cpu",
                                **options},
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
