"""Indexing throughput with the real embedder vs the embedder alone, and one-edit updates
(docs/performance.md).

Takes the first standard-library files (sorted paths, ``site-packages`` and tests left out)
until they hold at least ``--functions`` functions, copies them into a temporary workspace,
then, with the shipped int8 MiniLM (``models/embedder``, onnxruntime, its default threads,
one process):

1. **embedder alone**: ``embedder.embed`` over the search text of every (distinct) function
   of those files (a method under its class's header), exactly the texts the index embeds —
   functions/s; alternated, twice each, with the same functions' sources alone (the texts
   of index format 1), so that the header's cost is measured against a peer in the same run;
2. **index**: ``WorkspaceIndex.sync`` of the workspace into an empty index folder
   (discovery, reading, parsing, hashing, embedding, SQLite, hnswlib, atomic saves) —
   functions/s, and its ratio to (1);
3. **update after one edit**: ``--edits`` times, a comment is appended to the ``def`` line
   of one function of one file and ``WorkspaceIndex.update_files([file])`` is timed (one
   function re-embedded, the file's other functions reuse their cached vectors) — p50/max;
   then the deferred save of the graph that those updates left for later (``flush``).

Also the RSS that loading the embedder adds and the latency of embedding a short query.

    HF_HUB_OFFLINE=1 python benchmarks/indexing.py [--functions 2000] [--edits 7] \\
        [--models models] [--json benchmarks/results/indexing.json]

Runtime ≈ 2 × functions / 100 s on the 2-core dev machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from pathfusion.server.embedder import load_embedder  # noqa: E402
from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex, text_hash  # noqa: E402
from pathfusion.server.parsing import Document, SourceError, decode_source  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pick_files(root: Path, want: int) -> tuple[list[Path], list[tuple[str, str]]]:
    """Stdlib files (sorted) until ``want`` functions; returns (files, (search text, source) of
    each function with a distinct search text)."""
    files: list[Path] = []
    texts: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "__pycache__", "test", "tests", "idlelib"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath, name)
            data = path.read_bytes()
            if len(data) > 1_000_000:
                continue
            try:
                doc = Document(decode_source(data, origin=str(path)))
            except SourceError:
                continue
            funcs = list(doc.functions())
            if not funcs:
                continue
            files.append(path)
            for func in funcs:
                texts.setdefault(text_hash(func.search_text), (func.search_text, func.source))
            if len(texts) >= want:
                return files, list(texts.values())
    return files, list(texts.values())


def edit_one(path: Path, n: int) -> bool:
    """Append a comment to the n-th single-line ``def …:`` of ``path``; False if none."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    defs = [i for i, line in enumerate(lines)
            if line.lstrip().startswith("def ") and line.rstrip().endswith(":")]
    if not defs:
        return False
    i = defs[n % len(defs)]
    lines[i] = lines[i].rstrip("\r\n") + f"  # bench edit {n}\n"
    path.write_text("".join(lines), encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=7)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "indexing.json")
    args = parser.parse_args(argv)

    files, pairs = pick_files(args.stdlib, args.functions)
    texts = [searched for searched, _ in pairs]
    plain = [source for _, source in pairs]
    work = Path(tempfile.mkdtemp(prefix="pf-bench-indexing-"))
    try:
        ws = work / "ws"
        for path in files:
            dest = ws / path.relative_to(args.stdlib)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)

        rss0 = rss_mb()
        t0 = time.perf_counter()
        embedder = load_embedder("onnx", args.models)
        load_s = time.perf_counter() - t0
        embedder.embed(["def warm_up(x):\n    return x\n"])
        rss_embedder = rss_mb() - rss0
        query_ms = []
        for q in ("read the configuration file", "parse header", "split_words", "open a socket",
                  "json decode", "walk the tree", "compress data", "format a date", "quote url", "sort"):
            t = time.perf_counter()
            embedder.embed([q])
            query_ms.append(1e3 * (time.perf_counter() - t))

        print(f"{len(files)} files, {len(texts)} distinct functions; embedding them alone …", flush=True)
        rounds: dict[str, list[float]] = {"search text": [], "source alone": []}
        for _ in range(2):
            for what, batch in (("source alone", plain), ("search text", texts)):
                t0 = time.perf_counter()
                embedder.embed(batch)
                rounds[what].append(time.perf_counter() - t0)
                print(f"  embedder alone, {what}: {rounds[what][-1]:.1f} s, "
                      f"{len(batch) / rounds[what][-1]:.1f} functions/s", flush=True)
        embed_s = min(rounds["search text"])
        embed_fps = len(texts) / embed_s
        plain_fps = len(plain) / min(rounds["source alone"])

        t0 = time.perf_counter()
        index = WorkspaceIndex.open(ws, EmbedderSearchModel(embedder), index_dir=work / "index")
        stats = index.sync()
        sync_s = time.perf_counter() - t0
        _, live = index.counts()
        sync_fps = stats.embedded / sync_s
        print(f"  index sync: {sync_s:.1f} s, {stats.embedded} embedded, {live} live functions, "
              f"{sync_fps:.1f} embedded functions/s", flush=True)

        candidates = [p for p in sorted(ws.rglob("*.py"))]
        edit_ms: list[float] = []
        edit_embedded: list[int] = []
        edit_files: list[str] = []
        n = 0
        for path in candidates:
            if len(edit_ms) >= args.edits:
                break
            if not edit_one(path, n):
                continue
            t = time.perf_counter()
            st = index.update_files([path])
            edit_ms.append(1e3 * (time.perf_counter() - t))
            edit_embedded.append(st.embedded)
            edit_files.append(f"{path.relative_to(ws)} ({st.embedded + st.cached} functions)")
            n += 1
        t = time.perf_counter()
        flushed = index.flush()
        flush_ms = 1e3 * (time.perf_counter() - t)
        index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "indexing", "python": platform.python_version(), "cpus": os.cpu_count(),
        "command": "python benchmarks/indexing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "embedder": embedder.model_id, "embedder_path": str(getattr(embedder, "path", "")),
        "one_text_per_run": bool(getattr(embedder, "one_per_run", False)),
        "files": len(files), "functions": len(texts), "embedder_load_s": round(load_s, 2),
        "embedder_rss_mb": round(rss_embedder, 1),
        "query_embed_ms": {"p50": round(statistics.median(query_ms), 2), "max": round(max(query_ms), 2)},
        "embedder_alone_s": round(embed_s, 2), "embedder_functions_per_s": round(embed_fps, 1),
        "methods_under_class_header": sum(searched != source for searched, source in pairs),
        "embedder_functions_per_s_source_alone": round(plain_fps, 1),
        "embedder_rounds_s": {k: [round(v, 2) for v in vs] for k, vs in rounds.items()},
        "sync_s": round(sync_s, 2), "sync_embedded": stats.embedded, "sync_live_functions": live,
        "sync_functions_per_s": round(sync_fps, 1),
        "sync_over_embedder": round(sync_fps / embed_fps, 3),
        "update_one_edit_ms": {"p50": round(statistics.median(edit_ms), 1) if edit_ms else None,
                               "max": round(max(edit_ms), 1) if edit_ms else None,
                               "all": [round(v, 1) for v in edit_ms]},
        "update_embedded_per_edit": edit_embedded, "update_files": edit_files,
        "deferred_graph_save_ms": round(flush_ms, 1) if flushed else None,
    }
    print()
    rows = [("files / distinct functions", f"{len(files)} / {len(texts)}"),
            ("embedder load (s)", result["embedder_load_s"]),
            ("embedder RSS (MB)", result["embedder_rss_mb"]),
            ("query embedding p50 (ms)", result["query_embed_ms"]["p50"]),
            ("embedder alone (functions/s)", result["embedder_functions_per_s"]),
            ("  same functions, source alone (functions/s)", result["embedder_functions_per_s_source_alone"]),
            ("WorkspaceIndex.sync (functions/s)", result["sync_functions_per_s"]),
            ("sync / embedder", result["sync_over_embedder"]),
            ("update_files after one edit p50 (ms)", result["update_one_edit_ms"]["p50"]),
            ("update_files after one edit max (ms)", result["update_one_edit_ms"]["max"]),
            ("functions re-embedded per edit", edit_embedded),
            ("deferred graph save after the edits (ms)", result["deferred_graph_save_ms"])]
    print_rows(rows)
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
