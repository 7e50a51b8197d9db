"""The workspace index (docs/design.md §8 "Index"/"Search", §10 corrupted index, cancellation).

Why one file of ~480 lines: these tests share the fake embedder and the index fixtures;
the other index concerns have their own files (lexical, concurrency, snippets, workspace).

Mechanics (incremental updates, corruption, cancellation) use a deterministic hash-based
fake embedder; search quality and the CLI use the real all-MiniLM-L6-v2 int8 ONNX graph
(the int8-only models folder of tests/conftest.py, made once per session)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pathfusion.server.cli import main
from pathfusion.server.index import (
    DATABASE,
    HNSW_FILE,
    MANIFEST,
    SYNC_LOCK,
    WRITE_LOCK,
    EmbedderSearchModel,
    WorkspaceIndex,
    index_dir_for,
)
from pathfusion.server.index_graph import rebuild_graph
from tests.helpers.index import FakeEmbedder
from tests.helpers.models import EmbedderExport

os.environ["HF_HUB_OFFLINE"] = "1"


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


def names(results: list) -> list[str]:
    return [r.qualname for r in results]


# ----------------------------------------------------------------------------- mechanics


def test_build_layout_and_exact_match(workspace: Path, cache_dir: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        stats = index.sync()
        assert (stats.files, stats.functions, stats.embedded, stats.cached) == (3, 6, 6, 0)
        assert index.dir == index_dir_for(workspace) and index.dir.parent == cache_dir
        # SQLite runs in WAL mode: its log files exist while the index is open
        assert {p.name for p in index.dir.iterdir()} - {f"{DATABASE}-wal", f"{DATABASE}-shm"} == \
            {DATABASE, HNSW_FILE, MANIFEST, WRITE_LOCK, SYNC_LOCK}
        first = index.search("is_prime", k=3)[0]
        assert first.qualname == "is_prime" and first.score > 1  # exact bonus 2 + cosine
        assert first.uri == (workspace / "mathutil.py").as_uri()
        assert first.range == {"start": {"line": 5, "character": 0}, "end": {"line": 8, "character": 58}}
        assert first.snippet.startswith("def is_prime(n):") and len(first.snippet) <= 300
        assert names(index.search("Stats.mean", k=1)) == ["Stats.mean"]
        assert "hidden" not in names(index.search("hidden", k=10))
        again = index.sync()
        assert (again.changed, again.embedded) == (0, 0)
    # log checkpointed; the lock files stay (removing one another process may lock is unsafe)
    assert {p.name for p in index.dir.iterdir()} == {DATABASE, HNSW_FILE, MANIFEST, WRITE_LOCK, SYNC_LOCK}
    manifest = json.loads((index.dir / MANIFEST).read_text())
    assert manifest["model_id"].startswith("fake|dim=32|") and manifest["root"] == str(workspace)
    with sqlite3.connect(index.dir / DATABASE) as db:  # stored vectors, never pickles
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 6


def test_incremental_update_and_delete(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
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
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        before = [r.to_json() for r in index.search("read the settings", k=5)]
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is None
        assert index.sync().embedded == 0
        assert [r.to_json() for r in index.search("read the settings", k=5)] == before
        assert embedder.texts == ["read the settings"]
        similar = index.similar((workspace / "config.py", "load_config"), k=3)
        assert len(similar) == 3 and "load_config" not in names(similar)


def test_corrupt_index_bin_rebuilt_from_cache(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        before = names(index.search("is_prime", k=6))
        folder = index.dir
    data = (folder / HNSW_FILE).read_bytes()
    (folder / HNSW_FILE).write_bytes(data[: len(data) // 2])  # half written
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is not None and "index.bin" in index.rebuild_reason
        assert index.sync().embedded == 0 and index.counts() == (3, 6)
        assert names(index.search("is_prime", k=6)) == before
    (folder / HNSW_FILE).unlink()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert "missing" in (index.rebuild_reason or "")
        assert index.search("is_prime", k=1)[0].qualname == "is_prime"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "manifest"])
def test_corrupt_database_or_manifest_full_rebuild(workspace: Path, damage: str) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
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
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is not None
        stats = index.sync()
        # an unreadable manifest loses nothing: SQLite says which model made its vectors
        assert stats.embedded == (0 if damage == "manifest" else 6) and index.counts() == (3, 6)
        assert index.search("is_prime", k=1)[0].qualname == "is_prime"


def test_model_change_rebuilds(workspace: Path) -> None:
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(FakeEmbedder("model-a"))) as index:
        index.sync()
    other = FakeEmbedder("model-b")
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(other)) as index:
        assert "model changed" in (index.rebuild_reason or "")
        assert index.sync().embedded == 6 and len(other.texts) == 6


def test_a_method_is_embedded_under_its_class_and_re_embedded_when_the_class_is_renamed(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        mean = [t for t in embedder.texts if "def mean" in t]
        assert mean == ["class Stats:\n    def mean(self, values):\n        return sum(values) / len(values)"]
        assert any(t.startswith("def is_prime(n):") for t in embedder.texts)
        embedder.texts.clear()
        path = workspace / "mathutil.py"
        path.write_text(path.read_text().replace("class Stats:", "class Statistics:"))
        stats = index.update_files([path])
        # the method's text changed with its class; the module-level functions' did not
        assert stats.embedded == 1 and stats.cached == 2
        assert embedder.texts == [mean[0].replace("class Stats:", "class Statistics:")]
        assert names(index.search("Statistics.mean", k=1)) == ["Statistics.mean"]


def test_an_index_of_the_previous_format_is_rebuilt(workspace: Path) -> None:
    """Format 1 embedded a method without its class: its vectors must not be reused."""
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(FakeEmbedder())) as index:
        index.sync()
        folder = index.dir
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["format"] = 1
    (folder / MANIFEST).write_text(json.dumps(manifest))
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert "index format 1" in (index.rebuild_reason or "")
        assert index.sync().embedded == 6


def test_cancel_leaves_usable_index(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pathfusion.server.indexing.EMBED_BATCH", 1)  # commit after every file
    embedder = FakeEmbedder()

    def cancelled() -> bool:
        return len(embedder.texts) >= 2  # after the first file (config.py, 2 functions) was committed

    progress: list[tuple[int, int]] = []
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        stats = index.sync(progress=lambda d, t: progress.append((d, t)), cancelled=cancelled)
        assert stats.cancelled and 0 < stats.files < 3
        assert progress[0] == (0, 3)
        partial = index.counts()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is None and index.counts() == partial
        stats = index.sync()
        assert not stats.cancelled and index.counts() == (3, 6)
        assert stats.embedded == 6 - partial[1]


def test_interrupted_update_is_repaired(workspace: Path) -> None:
    """SQLite committed but index.bin not saved (the process died): the older graph is
    repaired from the stored vectors (added and deleted functions), nothing re-embedded."""
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        folder = index.dir
        stale = (folder / HNSW_FILE).read_bytes(), (folder / MANIFEST).read_bytes()
        (workspace / "extra.py").write_text("def extra_function():\n    return 42\n")
        (workspace / "net" / "http.py").unlink()
        index.sync()
        expected = [r.to_json() for r in index.search("extra_function", k=6)]
    (folder / HNSW_FILE).write_bytes(stale[0])
    (folder / MANIFEST).write_bytes(stale[1])
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is None
        assert "behind" in (index.repaired or "") and "added 1 functions" in (index.repaired or "")
        assert [r.to_json() for r in index.search("extra_function", k=6)] == expected
        assert "download_file" not in names(index.search("download_file", k=10))
        assert index.sync().embedded == 0 and embedder.texts == ["extra_function", "download_file"]
    manifest = json.loads((folder / MANIFEST).read_text())
    with sqlite3.connect(folder / DATABASE) as db:  # close() saved the repaired graph
        generation = int(db.execute("SELECT value FROM state WHERE key='generation'").fetchone()[0])
    assert manifest["generation"] == generation


def test_small_updates_save_the_graph_lazily(workspace: Path) -> None:
    """A one-file update commits SQLite only; the graph is saved by flush/close/the timer,
    and a reopen before that (a crash) repairs it to the same results."""
    embedder = FakeEmbedder()
    index = WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder), autosave_s=None)
    index.sync()
    folder = index.dir
    saved = (folder / HNSW_FILE).stat().st_mtime_ns, (folder / MANIFEST).read_bytes()
    path = workspace / "mathutil.py"
    path.write_text(path.read_text().replace("def reverse_words(sentence):", "def count_vowels(sentence):"))
    assert index.update_files([path]).embedded == 1
    assert ((folder / HNSW_FILE).stat().st_mtime_ns, (folder / MANIFEST).read_bytes()) == saved
    assert index.status()["graph_saved"] is False
    expected = [r.to_json() for r in index.search("count vowels", k=6)]
    # a second process opens the folder as a crash would leave it: repaired, same answers
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder), autosave_s=None) as other:
        assert other.repaired is not None and other.rebuild_reason is None
        assert [r.to_json() for r in other.search("count vowels", k=6)] == expected
    # closing, the other one saved the repaired graph of this very generation: nothing to do
    assert index.flush() is False and index.status()["graph_saved"] is True
    path.write_text(path.read_text().replace("def count_vowels(sentence):", "def count_letters(sentence):"))
    index.update_files([path])
    expected = [r.to_json() for r in index.search("count letters", k=6)]
    assert index.status()["graph_saved"] is False
    assert index.flush() is True and index.flush() is False
    assert index.status()["graph_saved"] is True
    index.close()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.repaired is None and index.rebuild_reason is None
        assert [r.to_json() for r in index.search("count letters", k=6)] == expected


def test_autosave_timer_saves_after_a_small_update(workspace: Path) -> None:
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder), autosave_s=0.2) as index:
        index.sync()
        (workspace / "extra.py").write_text("def extra_function():\n    return 42\n")
        index.update_files([workspace / "extra.py"])
        assert index.status()["graph_saved"] is False
        for _ in range(100):
            if index.status()["graph_saved"]:
                break
            time.sleep(0.05)
        assert index.status()["graph_saved"] is True


def test_compaction_invalidates_an_older_graph(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels are renumbered by a compaction: a graph saved before it is rebuilt, not repaired."""
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        folder = index.dir
        stale = (folder / HNSW_FILE).read_bytes(), (folder / MANIFEST).read_bytes()
        monkeypatch.setattr(index.store, "after_change", lambda: (rebuild_graph(index.store), False)[1])
        (workspace / "net" / "http.py").unlink()
        index.sync()
        expected = [r.to_json() for r in index.search("is_prime", k=5)]
    (folder / HNSW_FILE).write_bytes(stale[0])
    (folder / MANIFEST).write_bytes(stale[1])
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert "compaction" in (index.rebuild_reason or "")
        assert [r.to_json() for r in index.search("is_prime", k=5)] == expected


def test_memory_matches_sqlite_after_updates(workspace: Path) -> None:
    """The in-memory matrix, the graph and the name look-up follow every change."""
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        index.search("warm the name look-up", k=1)
        path = workspace / "mathutil.py"
        path.write_text(path.read_text().replace("class Stats:", "class Averages:")
                        .replace("return sum(values)", "return 1.0 * sum(values)"))
        index.update_files([path])
        (workspace / "config.py").unlink()
        index.update_files([workspace / "config.py"])
        rows = index.db.execute(
            "SELECT f.label, f.name, f.qualname, v.vector FROM functions f JOIN vectors v "
            "ON v.content_hash = f.content_hash WHERE f.deleted = 0").fetchall()
        live = {label for label, *_ in rows}
        assert set(np.flatnonzero(index.store.space.live)) == live and index.counts()[1] == len(live)
        for label, name, qualname, blob in rows:
            assert np.array_equal(index.store.space.vectors[label], np.frombuffer(blob, dtype=np.float32))
            assert index.ranker.name_table()[label][:2] == (name, qualname)
        assert set(index.ranker.name_table()) == live
        assert names(index.search("Averages.mean", k=1)) == ["Averages.mean"]
        assert "Stats.mean" not in names(index.search("Stats.mean", k=10))
        assert "load_config" not in names(index.search("load_config", k=10))


class HashModel:
    """A :class:`pathfusion.server.index.SearchModel` that sees FunctionInfo objects, not texts."""

    model_id = "hash-model"
    dim = 16

    def __init__(self) -> None:
        self.functions: list[str] = []

    def _vector(self, text: str) -> np.ndarray:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        vector = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return vector / np.linalg.norm(vector)

    def encode_functions(self, functions: Sequence[Any]) -> np.ndarray:
        self.functions.extend(f.qualname for f in functions)
        return np.stack([self._vector(f.name) for f in functions])

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts])


def test_search_model_protocol_and_embedder_wrapper(workspace: Path) -> None:
    from pathfusion.server.index import (
        SearchModel,
        model_identity,
        search_model_from_settings,
    )
    from pathfusion.server.settings import Settings

    model = HashModel()
    assert isinstance(model, SearchModel)
    with WorkspaceIndex.open(workspace, model) as index:
        assert index.sync().embedded == 6 and sorted(model.functions)[:2] == ["Stats.mean", "download_file"]
        assert index.model_id == model_identity(model) and index.model_id.startswith("hash-model|dim=16|")
        # the query vector equals the function's vector (both hash the name): cosine 1 + exact
        # bonus 2 + the best BM25 match's full BM25 weight
        from pathfusion.server.lexical import BM25_WEIGHT
        assert index.search("is_prime", k=1)[0].score == pytest.approx(3.0 + BM25_WEIGHT, abs=1e-5)
    embedder = FakeEmbedder()
    wrapped = search_model_from_settings(Settings(), embedder)
    assert isinstance(wrapped, EmbedderSearchModel) and not isinstance(embedder, SearchModel)
    # the wrapper of the LLM embedder alone reproduces its vectors exactly
    with WorkspaceIndex.open(workspace, wrapped) as index:
        assert "model changed" in (index.rebuild_reason or "")  # another model id than hash-model
        index.sync()
        text = (workspace / "mathutil.py").read_text()
        source = text[text.index("def is_prime"):text.index("def reverse_words")].rstrip()
        label = index.search("is_prime", k=1)[0].label
        assert np.array_equal(index.store.space.vectors[label], embedder.embed([source])[0])
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is None and index.sync().embedded == 0


def test_bad_files_in_the_workspace_are_skipped_with_a_reason(workspace: Path) -> None:
    """Design §10: binary, non-UTF-8 and oversized files are reported, never fatal."""
    (workspace / "blob.py").write_bytes(b"\x7fELF\x00\x01\x02\x00" * 10)
    (workspace / "latin.py").write_bytes("def caf\u00e9():\n    return '\u00e9'\n".encode("latin-1"))
    (workspace / "empty.py").write_text("")
    (workspace / "huge.py").write_text("def big():\n    return 1\n" + "# padding\n" * 200)
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(FakeEmbedder()), max_file_size=1000) as index:
        stats = index.sync()
        reasons = {Path(path).name: reason for path, reason in stats.skipped}
        assert "binary" in reasons["blob.py"]
        assert "utf-8" in reasons["latin.py"]
        assert "larger than 1000 bytes" in reasons["huge.py"]
        assert "empty.py" not in reasons and index.counts() == (6, 6)  # empty.py indexed, 0 functions
        assert index.search("big", k=1)[0].name != "big"


# ----------------------------------------------------------------------------- real MiniLM


@pytest.fixture(scope="module")
def models(minilm_int8: EmbedderExport) -> Path:
    """The int8-only MiniLM models folder (shared: read only)."""
    return minilm_int8.models


@pytest.fixture(scope="module")
def minilm(models: Path) -> object:
    from pathfusion.server.embedder import OnnxEmbedder

    return OnnxEmbedder.load(models, device="cpu", quantized=True, threads=1)


def test_minilm_search(workspace: Path, minilm: object) -> None:
    embedder = Counting(minilm)
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
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
    (workspace / "extra.py").write_text("def cube(x):\n    return x * x * x\n")
    assert main(["search", "is_prime", "--workspace", str(workspace), "--models", str(models),
                 "--k", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    results = json.loads(out)
    # Not a terminal: the one function of the new file was embedded first, and stderr says so.
    assert re.fullmatch(r"indexed first: 1 function embedded from 1 changed file in \d+\.\d s", err.strip())
    from pathfusion.server.ranking import RELEVANCE_FLOOR
    assert 1 <= len(results) <= 2 and results[0]["qualname"] == "is_prime"
    assert all(r["score"] >= RELEVANCE_FLOOR for r in results)  # the unrelated ones are left out
    assert set(results[0]) == {"uri", "range", "name", "qualname", "score", "snippet", "signature", "summary", "path", "line"}
    assert results[0]["line"] == 6 and results[0]["range"]["start"]["line"] == 5
    assert main(["search", "prime numbers", "--workspace", str(workspace), "--models", str(models)]) == 0
    first = capsys.readouterr().out.splitlines()[0].split()
    assert first[1] == f"{workspace / 'mathutil.py'}:6" and first[2] == "is_prime"
    # Quotes are optional: the words are the query.
    assert main(["search", "prime", "numbers", "--workspace", str(workspace), "--models", str(models)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[2] == "is_prime"
    # A documented function's docstring line is shown under it, indented; an undocumented one
    # has none (the next line is the next result).
    assert main(["search", "load_config", "--workspace", str(workspace), "--models", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[2] == "load_config"
    assert lines[1] == "        Read the settings file (JSON) and return it as a dict."
    assert main(["search", "is_prime", "--workspace", str(workspace), "--models", str(models), "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[2] == "is_prime"
    assert all(re.fullmatch(r" *\d+\.\d{3}  \S+:\d+  \S+", line) for line in lines)  # no docstring lines


def test_cli_search_says_what_went_wrong(workspace: Path, models: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The folder where `pathfusion index DIR` takes it: a clear error, not a search for its path.
    assert main(["search", str(workspace), "prime", "numbers", "--models", str(models)]) == 1
    err = capsys.readouterr().err
    assert f"--workspace {workspace} \"prime numbers\"" in err and len(err.strip().splitlines()) == 1
    # A folder name that is also a word is a query word: `json decoder` beside a json/ package.
    monkeypatch.chdir(workspace.parent)
    assert main(["search", workspace.name, "prime", "--models", str(models), "--json"]) == 0
    capsys.readouterr()
    # With --workspace given, the same words are a query like any other.
    assert main(["search", str(workspace), "prime", "--workspace", str(workspace), "--models", str(models)]) == 0
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["search", "prime", "numbers", "--workspace", str(empty), "--models", str(models)]) == 0
    assert capsys.readouterr().out.strip() == "no results: the workspace has no indexed functions"
    assert main(["search", "migrating zebras cross the savanna at dawn", "--workspace", str(workspace),
                 "--models", str(models)]) == 0
    assert capsys.readouterr().out.strip() == \
        "no results: none of the 6 indexed functions is close enough to the query"
    assert main(["search", "  ", "--workspace", str(workspace), "--models", str(models)]) == 1
    assert "the query is empty" in capsys.readouterr().err


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(tmp_path / "nope"), "--models", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no such directory" in err and "Traceback" not in err
    assert main(["search", "x", "--workspace", str(tmp_path), "--models", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "models folder" in err and "not found" in err and len(err.strip().splitlines()) == 1


def test_cancel_inside_a_large_file_keeps_the_encoded_vectors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One file of 100 functions is encoded in chunks with a cancellation check between
    them: a cancel stops within a chunk, the file is left for the next run, and the next
    run reuses the vectors already encoded."""
    monkeypatch.setattr("pathfusion.server.indexing.EMBED_BATCH", 8)
    root = tmp_path / "big"
    root.mkdir()
    (root / "many.py").write_text("".join(f"def function_{i}(x):\n    return x + {i}\n\n" for i in range(100)))
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(root, EmbedderSearchModel(embedder)) as index:
        stats = index.sync(cancelled=lambda: len(embedder.texts) >= 16)
        assert stats.cancelled and index.counts() == (0, 0) and len(embedder.texts) == 16
        embedder.texts.clear()
        stats = index.sync()
        assert not stats.cancelled and index.counts() == (1, 100)
        assert (stats.embedded, stats.cached, len(embedder.texts)) == (84, 16, 84)
