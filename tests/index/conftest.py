"""Fixtures of the index tests: the small workspace of :mod:`tests.helpers.index`, and for
search through the language server, the real server process under pytest-lsp with its
index in a tmp cache folder."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers.index import write_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return write_workspace(tmp_path / "ws")


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[LanguageClient]:
    """The server; ``client.registrations`` collects what it registers dynamically."""
    env = {**os.environ, "PATHFUSION_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    config = ClientServerConfig(server_command=[sys.executable, "-m", "pathfusion", "serve", "--stdio"],
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
