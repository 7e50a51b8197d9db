"""Throughput of parsing + path-context extraction on the installed standard library.

Runs on one core (one process), over every ``.py`` file under ``sysconfig``'s stdlib
directory (site-packages excluded), and prints files/s, functions/s, MB/s and contexts per
function; writes the same numbers as JSON.

    python benchmarks/extract.py [--root DIR] [--limit N] [--json benchmarks/results/extract.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import print_rows, save_json
from pathfusion.server.parsing import Document, SourceError, decode_source
from pathfusion.server.paths import MAX_CONTEXTS, context_space


def stdlib_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        files.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return files


def run(root: Path, limit: int | None) -> dict[str, object]:
    files = stdlib_files(root)[:limit]
    blobs: list[tuple[Path, bytes]] = [(path, path.read_bytes()) for path in files]
    total_bytes = sum(len(data) for _, data in blobs)
    functions = 0
    contexts_all: list[int] = []
    contexts_kept: list[int] = []
    skipped = 0
    parse_time = 0.0
    start = time.perf_counter()
    for path, data in blobs:
        try:
            text = decode_source(data, origin=str(path))
        except SourceError:
            skipped += 1
            continue
        t0 = time.perf_counter()
        doc = Document(text)
        parse_time += time.perf_counter() - t0
        for func in doc.functions():
            space = context_space(func.node, doc.source, func.name)
            contexts_all.append(space.total)
            contexts_kept.append(len(space.sample(MAX_CONTEXTS)))
            functions += 1
    elapsed = time.perf_counter() - start
    return {
        "root": str(root),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count_used": 1,
        "files": len(blobs) - skipped,
        "files_skipped": skipped,
        "functions": functions,
        "megabytes": round(total_bytes / 1e6, 2),
        "seconds": round(elapsed, 3),
        "parse_seconds": round(parse_time, 3),
        "files_per_s": round((len(blobs) - skipped) / elapsed, 1),
        "functions_per_s": round(functions / elapsed, 1),
        "mb_per_s": round(total_bytes / 1e6 / elapsed, 2),
        "parse_only_mb_per_s": round(total_bytes / 1e6 / parse_time, 2) if parse_time else None,
        "contexts_per_function_before_sampling": {
            "mean": round(statistics.fmean(contexts_all), 1) if contexts_all else 0,
            "median": statistics.median(contexts_all) if contexts_all else 0,
        },
        "contexts_per_function_kept": {
            "mean": round(statistics.fmean(contexts_kept), 1) if contexts_kept else 0,
            "median": statistics.median(contexts_kept) if contexts_kept else 0,
            "share_at_cap": round(sum(1 for c in contexts_kept if c == 200) / max(1, functions), 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "extract.json"
    )
    args = parser.parse_args(argv)
    result = run(args.root, args.limit)
    print_rows(result.items())
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
