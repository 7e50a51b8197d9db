"""Fixtures of the language-server tests: the real server process under pytest-lsp, the
two-file workspace of :mod:`tests.helpers.lsp` and the tiny code2vec model."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.helpers.lsp import APP, LIB


@pytest.fixture
def models_dir(code2vec_models: Path) -> Path:
    """The tiny code2vec models folder (shared by the session: read only)."""
    return code2vec_models


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "lib.py").write_text(LIB)
    (root / "app.py").write_text(APP)
    return root


@pytest_asyncio.fixture
async def client() -> AsyncIterator[LanguageClient]:
    config = ClientServerConfig(server_command=[sys.executable, "-m", "pathfusion", "serve", "--stdio"])
    lsp_client = await config.start()
    assert isinstance(lsp_client, LanguageClient)
    yield lsp_client
    await lsp_client.shutdown_session()
    await lsp_client.stop()
