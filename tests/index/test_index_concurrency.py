"""Several processes on one workspace index (docs/reliability.md): two indexers on one folder,
stale temp files of killed writers, a lost manifest.

Real processes on real files: the ``pathfusion`` CLI (``python -m pathfusion``) with the shipped
models of the repository, and small Python workers that open the index with the hash-based
fake embedder of ``tests/helpers/index.py``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import pytest

from pathfusion.server.index import (
    DATABASE,
    HNSW_FILE,
    MANIFEST,
    EmbedderSearchModel,
    IndexStats,
    WorkspaceIndex,
    index_dir_for,
)
from pathfusion.server.index_graph import rebuild_graph
from pathfusion.server.locks import ProcessLock
from pathfusion.server.models import sha256_file
from tests.helpers.index import FakeEmbedder, write_workspace

REPO = Path(__file__).resolve().parents[2]
REPO_MODELS = REPO / "models"
needs_models = pytest.mark.skipif(not (REPO_MODELS / "manifest.json").is_file(),
                                  reason="the shipped models/ folder is missing")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(cache))
    return cache


def many_functions(root: Path, files: int = 30, tag: str = "v1") -> set[str]:
    """``files`` modules of three functions each (names carry ``tag``); returns the names."""
    root.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for i in range(files):
        body = []
        for j, (verb, op) in enumerate((("add", "+"), ("scale", "*"), ("shift", "-"))):
            name = f"{verb}_{tag}_{i}"
            names.add(name)
            body.append(f"def {name}(value):\n    \"\"\"{verb} {j} for file {i}.\"\"\"\n"
                        f"    return value {op} {i + j}\n")
        (root / f"module_{i:02d}.py").write_text("\n\n".join(body))
    return names


def cli(*args: str, cache: Path) -> subprocess.Popen[str]:
    """``python -m pathfusion ARGS`` with the shipped models on the CPU, index in ``cache``."""
    env = {**os.environ, "PATHFUSION_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PATHFUSION_MODELS", None)
    command = [sys.executable, "-m", "pathfusion", *args]
    if args[0] in ("index", "search"):
        command += ["--models", str(REPO_MODELS), "--device", "cpu"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[str, str]:
    """The process's (stdout, stderr) once it exited 0 without a traceback."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0 and "Traceback" not in err, (process.args, process.returncode, err[-3000:])
    return out, err


def cli_search_names(workspace: Path, cache: Path, query: str = "value", k: int = 200) -> set[str]:
    out, _ = finish(cli("search", query, "--workspace", str(workspace), "--k", str(k), "--json", cache=cache))
    return {row["qualname"] for row in json.loads(out)}


# ----------------------------------------------------------------------------- the CLI


@needs_models
def test_two_cli_indexers_and_a_search_on_a_fresh_cache(tmp_path: Path) -> None:
    """Fresh cache: two runs at once must leave a graph that holds the live functions (without
    the locks it held none of them at the database's generation, and every later search
    died)."""
    workspace = tmp_path / "ws"
    expected = many_functions(workspace)
    for round_ in range(3):
        cache = tmp_path / f"cache-{round_}"
        runs = [cli("index", str(workspace), "--json", "--quiet", cache=cache) for _ in range(2)]
        runs.append(cli("search", "add a number", "--workspace", str(workspace), "--json", cache=cache))
        for run in runs:
            finish(run)
        assert cli_search_names(workspace, cache) == expected, f"round {round_}"


@needs_models
def test_two_cli_indexers_on_an_existing_index(tmp_path: Path, cache_dir: Path) -> None:
    """Existing index: the second indexer must not take the first one's labels (without the
    locks it died with ``UNIQUE constraint failed: functions.label``)."""
    workspace = tmp_path / "ws"
    many_functions(workspace)
    finish(cli("index", str(workspace), "--quiet", cache=cache_dir))
    for round_ in range(2):
        expected = many_functions(workspace, tag=f"r{round_}")
        runs = [cli("index", str(workspace), "--json", "--quiet", cache=cache_dir) for _ in range(2)]
        for run in runs:
            finish(run)
        assert cli_search_names(workspace, cache_dir) == expected, f"round {round_}"


@needs_models
def test_two_cli_indexers_beside_an_open_index(tmp_path: Path, cache_dir: Path) -> None:
    """Two CLI indexers while a third process (here: this one, as the server would) has the
    index open and syncs it: no error, and afterwards the open index, without reopening, and
    a CLI search both return every function."""
    from pathfusion.server.embedder import load_embedder
    from pathfusion.server.index import search_model_from_settings
    from pathfusion.server.settings import Settings

    workspace = tmp_path / "ws"
    many_functions(workspace)
    settings = Settings(models_dir=str(REPO_MODELS), device="cpu")
    model = search_model_from_settings(settings, load_embedder("onnx", REPO_MODELS, device="cpu"))
    with WorkspaceIndex.open(workspace, model) as server:
        server.sync()
        # the server stays idle while two CLI indexers rewrite the index under it
        expected = many_functions(workspace, tag="cli")
        for run in [cli("index", str(workspace), "--quiet", cache=cache_dir) for _ in range(2)]:
            finish(run)
        assert {r.qualname for r in server.search("value", k=200)} == expected
        # the server indexes too, at the same time as two CLI indexers
        expected = many_functions(workspace, tag="all")
        runs = [cli("index", str(workspace), "--quiet", cache=cache_dir) for _ in range(2)]
        errors: list[BaseException] = []

        def sync() -> None:
            try:
                server.sync()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=sync)
        thread.start()
        for run in runs:
            finish(run)
        thread.join(240)
        assert not errors, errors
        assert {r.qualname for r in server.search("value", k=200)} == expected
        assert server.search("scale_all_7", k=1)[0].qualname == "scale_all_7"
    assert cli_search_names(workspace, cache_dir) == expected


# ----------------------------------------------------------------------------- the graph check


def _graph_file(vectors: np.ndarray, labels: np.ndarray, path: Path) -> None:
    graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
    graph.init_index(max_elements=max(len(labels), 64), ef_construction=200, M=16)
    if len(labels):
        graph.add_items(vectors, labels)
    graph.save_index(str(path))


@pytest.mark.parametrize("graph", ["empty", "foreign"])
def test_a_graph_that_does_not_match_the_database_is_repaired(tmp_path: Path, graph: str) -> None:
    """The state two racing indexers left: a manifest at the database's generation over a
    graph that holds none of its functions (``empty``) or the labels of other vectors
    (``foreign``).  The generation alone cannot tell; the open must, and repair it from the
    stored vectors without embedding anything."""
    workspace = write_workspace(tmp_path / "ws")
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        folder = index.dir
        expected = {r.qualname for r in index.search("anything", k=50)}
    assert len(expected) == 6
    manifest = json.loads((folder / MANIFEST).read_text())
    rng = np.random.default_rng(0)
    if graph == "empty":
        labels = np.zeros(0, dtype=np.int64)
        vectors = np.zeros((0, 32), dtype=np.float32)
    else:
        labels = np.arange(manifest["labels"])
        vectors = rng.standard_normal((len(labels), 32)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    _graph_file(vectors, labels, folder / HNSW_FILE)
    manifest.update(labels=len(labels), index_sha256=sha256_file(folder / HNSW_FILE))
    (folder / MANIFEST).write_text(json.dumps(manifest))
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert (index.repaired or index.rebuild_reason) is not None
        assert {r.qualname for r in index.search("anything", k=50)} == expected
        assert index.search("is_prime", k=1)[0].qualname == "is_prime"
        assert index.sync().embedded == 0
    assert embedder.texts == ["anything", "is_prime"]  # queries only: nothing re-embedded


def test_an_open_index_follows_a_compaction_by_another_process(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction renumbers the labels: an index opened before it must not map its old
    labels to the new rows.  Two objects of one process exclude each other like two
    processes (an OS lock per open file)."""
    workspace = write_workspace(tmp_path / "ws")
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as reader, WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as writer:
        reader.sync()
        assert reader.search("download_file", k=1)[0].qualname == "download_file"
        monkeypatch.setattr(writer.store, "after_change", lambda: (rebuild_graph(writer.store), False)[1])
        (workspace / "config.py").unlink()
        writer.sync()  # labels compacted: download_file now has another label
        results = reader.search("download_file", k=6)
        assert results[0].qualname == "download_file"
        assert {r.qualname for r in results} == {"download_file", "Stats.mean", "is_prime", "reverse_words"}
        assert reader.counts() == (2, 4) and reader.status()["functions"] == 4
        (workspace / "extra.py").write_text("def extra_function():\n    return 42\n")
        reader.update_files([workspace / "extra.py"])  # the reader writes next: no label clash
        assert writer.search("extra_function", k=1)[0].qualname == "extra_function"


def test_an_index_from_before_the_model_record_is_kept(tmp_path: Path) -> None:
    """A database written before ``state.model_id`` existed: with its manifest it is
    adopted as it is; without it nothing says which model made its vectors (re-embedded)."""
    workspace = write_workspace(tmp_path / "ws")
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        folder = index.dir
    with sqlite3.connect(folder / DATABASE) as db:
        db.execute("DELETE FROM state WHERE key = 'model_id'")
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert index.rebuild_reason is None and index.sync().embedded == 0
    with sqlite3.connect(folder / DATABASE) as db:
        assert db.execute("SELECT value FROM state WHERE key = 'model_id'").fetchone()[0] == index.model_id
        db.execute("DELETE FROM state WHERE key = 'model_id'")
    (folder / MANIFEST).unlink()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert "does not record which model" in (index.rebuild_reason or "")
        assert index.sync().embedded == 6


def test_process_lock_excludes_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "some.lock"
    first, second = ProcessLock(path), ProcessLock(path)
    assert first.acquire(blocking=False) and first.acquire(blocking=False)  # re-entrant
    assert not second.acquire(blocking=False)
    first.release()
    assert not second.acquire(blocking=False) and not second.acquire(cancelled=lambda: True)
    first.release()
    assert second.acquire(blocking=False)
    second.release()
    script = (f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\nfrom pathfusion.server.locks import ProcessLock\n"
              f"ProcessLock({str(path)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not second.acquire(blocking=False) and second.holder() == f"process {holder.pid}"
    finally:
        holder.kill()  # kill -9: the OS drops its lock
        holder.wait()
    assert second.acquire(blocking=False)
    second.release()
    second.close()
    first.close()


# ----------------------------------------------------------------------------- small items


WORKER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex
from tests.helpers.index import FakeEmbedder
index = WorkspaceIndex.open({workspace!r}, EmbedderSearchModel(FakeEmbedder()), autosave_s=None)
index.sync()
{body}
"""


def run_worker(body: str, workspace: Path, cache: Path, **kwargs: Any) -> subprocess.Popen[str]:
    """A Python process that opens and syncs the index of ``workspace``, then runs ``body``."""
    script = WORKER.format(repo=str(REPO), workspace=str(workspace), body=textwrap.dedent(body))
    env = {**os.environ, "PATHFUSION_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_temp_file_of_a_writer_killed_during_a_save_is_removed_on_open(tmp_path: Path, cache_dir: Path) -> None:
    """A ``kill -9`` during a graph save leaves its temp file; the next open removes it at
    once, because the writer lock tells a dead writer's file from a live one's."""
    workspace = write_workspace(tmp_path / "ws")
    worker = run_worker("""
        tmp, _ = index.store.saver.write_graph()   # the graph is in its temp file, not yet renamed
        print(tmp, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """, workspace, cache_dir)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == -9, err
    tmp = Path(out.strip())
    assert tmp.is_file() and tmp.parent == index_dir_for(workspace)
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(FakeEmbedder())) as index:
        assert not tmp.exists()
        assert not list(index.dir.glob(".*.tmp"))
        assert index.search("is_prime", k=1)[0].qualname == "is_prime"


def test_a_lost_manifest_is_rebuilt_from_the_stored_vectors(tmp_path: Path) -> None:
    """Losing ``manifest.json`` re-embeds nothing: SQLite still holds every vector (and which
    model made them)."""
    workspace = write_workspace(tmp_path / "ws")
    embedder = FakeEmbedder()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        index.sync()
        folder = index.dir
        expected = [r.to_json() for r in index.search("read the settings", k=6)]
    (folder / MANIFEST).unlink()
    embedder.texts.clear()
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(embedder)) as index:
        assert MANIFEST in (index.rebuild_reason or "")
        assert index.sync().embedded == 0 and index.counts() == (3, 6)
        assert [r.qualname for r in index.search("read the settings", k=6)] == [r["qualname"] for r in expected]
    assert embedder.texts == ["read the settings"]
    assert (folder / MANIFEST).is_file() and (folder / DATABASE).is_file()
    # another model's vectors are not reused, manifest or not
    (folder / MANIFEST).unlink()
    other = FakeEmbedder("other-model")
    with WorkspaceIndex.open(workspace, EmbedderSearchModel(other)) as index:
        assert index.sync().embedded == 6


def test_a_busy_writer_neither_blocks_a_search_nor_crashes_an_indexer(tmp_path: Path, cache_dir: Path) -> None:
    """While another process holds the indexing lock: a search answers from what is committed
    (saying why it did not update the index first), and an indexer waits for its turn."""
    workspace = write_workspace(tmp_path / "ws")
    holder = run_worker("""
        with index.indexer.indexing_lock(wait=True):
            print("holding", flush=True)
            sys.stdin.readline()
        """, workspace, cache_dir, stdin=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "holding"
    try:
        (workspace / "extra.py").write_text("def extra_function():\n    return 42\n")
        with WorkspaceIndex.open(workspace, EmbedderSearchModel(FakeEmbedder())) as index:
            start = time.monotonic()
            stats = index.sync(wait=False)
            assert stats.busy and time.monotonic() - start < 5
            assert "extra_function" not in {r.qualname for r in index.search("extra_function", k=10)}
            assert index.search("is_prime", k=1)[0].qualname == "is_prime"
            waited: list[IndexStats] = []
            thread = threading.Thread(target=lambda: waited.append(index.sync()))
            thread.start()
            time.sleep(1.0)
            assert thread.is_alive()  # waiting for the other process
            holder.stdin.write("\n")
            holder.stdin.flush()
            thread.join(60)
            assert not thread.is_alive() and not waited[0].busy
            assert index.search("extra_function", k=1)[0].qualname == "extra_function"
    finally:
        holder.stdin.close()
        holder.wait(60)
    assert holder.returncode == 0, holder.stderr.read() if holder.stderr else ""
