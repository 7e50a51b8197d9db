"""``@overload`` stubs in the workspace index and the hover (:mod:`pathfusion.server.overloads`):
search lists the implementation once, an index listed before stubs stood for their
implementation is re-read without re-embedding, and a hover over a stub names the
implementation."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pathfusion.server.index import DATABASE, EmbedderSearchModel, WorkspaceIndex
from tests.helpers.index import FakeEmbedder

MODULE = '''\
from typing import overload


@overload
def fetch(key: int) -> int: ...
@overload
def fetch(key: str) -> str: ...
def fetch(key):
    """Read the value stored under a key."""
    return STORE[key]


def other(x):
    return x + 1
'''


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "mod.py").write_text(MODULE)
    return folder


def indexed(index: WorkspaceIndex) -> list[tuple[str, int]]:
    return sorted((r.qualname, r.line) for r in index.search("fetch a value", k=10))


def test_search_lists_the_implementation_not_its_stubs(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.sync().embedded == 2
        assert indexed(index) == [("fetch", 8), ("other", 13)]
        assert [t for t in embedder.texts if "def fetch" in t] == [MODULE[MODULE.index("def fetch(key):"):
                                                                          MODULE.index("\n\n\ndef other")]]


def test_an_index_listed_with_its_stubs_is_re_read_once_without_embedding(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index that an earlier version filled with every stub (listing 1) drops them at
    the next sync: its files are parsed again and the kept functions' vectors reused."""
    with monkeypatch.context() as patch:
        patch.setattr("pathfusion.server.index_batch.listed_functions", lambda functions: list(functions))
        with WorkspaceIndex.open(workspace, EmbedderSearchModel(FakeEmbedder())) as index:
            index.sync()
            assert indexed(index) == [("fetch", 4), ("fetch", 6), ("fetch", 8), ("other", 13)]
            folder = index.dir
    with sqlite3.connect(folder / DATABASE) as db:
        db.execute("UPDATE state SET value = '1' WHERE key = 'listing'")
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        stats = index.sync()
        assert (stats.changed, stats.embedded, stats.cached, embedder.texts) == (1, 0, 2, [])
        assert indexed(index) == [("fetch", 8), ("other", 13)]
        again = index.sync()
        assert (again.changed, again.embedded) == (0, 0)


def test_a_hover_over_a_stub_names_the_implementation() -> None:
    """Every stub and the implementation get the same suggestions: the implementation's
    (the model sees its body), for the range of the name under the cursor."""
    from pathfusion.server.feature_hover import suggestion_at
    from pathfusion.server.lsp_worker import Snapshot
    from pathfusion.server.parsing import Position

    asked: list[str] = []

    class Model:
        def predict(self, functions: Sequence[Any], top_k: int = 5,
                    sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
            asked.extend(sources or [])
            return [[("read|value", 0.6)] if "STORE[key]" in source else [("stub|name", 0.6)]
                    for source in sources or []]

    snapshot = Snapshot("file:///x/mod.py", 1, MODULE)
    for line in (4, 6, 7):
        found = suggestion_at(snapshot, Position(line, 5), Model(), 5)
        assert found is not None
        suggestion, name_range = found
        assert (suggestion.qualname, suggestion.line, suggestion.suggestions) == ("fetch", 8, [("read_value", "read|value", 0.6)])
        assert name_range.start.line == line
    assert asked and all("STORE[key]" in source for source in asked)
