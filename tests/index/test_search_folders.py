"""A search over several workspace folders (:func:`pathfusion.server.feature_search.search`) encodes
its query once — the folders' indexes share one search model — and ranks as searching
each folder with :meth:`WorkspaceIndex.search` and merging did."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pathfusion.server.feature_index import FolderIndex
from pathfusion.server.feature_search import merge_results, search
from pathfusion.server.index import WorkspaceIndex

FOLDERS = {
    "a": {"config.py": "def load_config(path):\n    return json.load(open(path))\n\n\n"
                       "def save_config(path, data):\n    json.dump(data, open(path, 'w'))\n"},
    "b": {"settings.py": "def load_settings(path):\n    return read(path)\n\n\n"
                         "def parse_settings(text):\n    return dict(line.split('=') for line in text)\n",
          "net.py": "def download_file(url, target):\n    urlretrieve(url, target)\n"},
}


class CountingModel:
    """A SearchModel of hashed texts that counts the queries it encodes."""

    model_id = "counting"
    dim = 16

    def __init__(self) -> None:
        self.queries: list[str] = []

    def _vector(self, text: str) -> np.ndarray:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vector / np.linalg.norm(vector)

    def encode_functions(self, functions: Sequence[Any]) -> np.ndarray:
        return np.stack([self._vector(f.source) for f in functions])

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries.extend(texts)
        return np.stack([self._vector(t) for t in texts])


@pytest.fixture
def indexes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    model = CountingModel()
    opened = []
    for name, files in FOLDERS.items():
        root = tmp_path / name
        root.mkdir()
        for file, text in files.items():
            (root / file).write_text(text)
        index = WorkspaceIndex.open(root, model)
        index.sync()
        opened.append(index)
    yield model, opened
    for index in opened:
        index.close()


def test_two_folders_encode_the_query_once_and_rank_as_before(indexes: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pathfusion.server.ranking.RELEVANCE_FLOOR", float("-inf"))  # random vectors: keep every result
    model, opened = indexes
    folders = {str(index.root): FolderIndex(str(index.root), index, "ready") for index in opened}
    with ThreadPoolExecutor(max_workers=2) as executor:
        ls = SimpleNamespace(indexes=SimpleNamespace(folders=folders), executor=executor)
        got = asyncio.run(search(ls, "  load settings ", 4))  # type: ignore[arg-type]
    assert model.queries == ["load settings"]  # once, for both folders
    model.queries.clear()
    before = merge_results([index.search("load settings", 4) for index in opened], 4)
    assert len(model.queries) == 2  # what the server did before: once per folder
    assert got == before and {r.path.split("/")[-2] for r in got} == {"a", "b"}
    assert [r.score for r in got] == [r.score for r in before]


def test_search_with_the_vector_given_is_the_same_search(indexes: Any) -> None:
    _, opened = indexes
    index = opened[1]
    vector = index.embed_query("download a file")
    assert index.search(" download a file ", 3, vector) == index.search("download a file", 3)
    assert index.search("   ", 3, vector) == [] and index.search("x", 0, vector) == []


def test_results_below_the_relevance_floor_are_not_shown(indexes: Any) -> None:
    """What users see (``pathfusion.search``, ``workspace/symbol``: merge_results) leaves out
    the functions scoring below the floor; the raw index search keeps them."""
    from pathfusion.server.ranking import RELEVANCE_FLOOR

    _, opened = indexes
    raw = [index.search("load settings", 10) for index in opened]
    scores = sorted(r.score for results in raw for r in results)
    assert scores[0] < RELEVANCE_FLOOR <= scores[-1]  # random vectors: some of each
    shown = merge_results(raw, 10)
    assert shown and all(r.score >= RELEVANCE_FLOOR for r in shown)
    assert len(shown) == sum(1 for s in scores if s >= RELEVANCE_FLOOR)
