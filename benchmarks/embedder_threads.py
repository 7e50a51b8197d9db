"""Embedder throughput by onnxruntime thread count, on an idle machine and beside a busy core.

Why: the server shares two cores between hovers, indexing and the editor; the embedder's
intra-op thread count (``pathfusion.server.runtime.THREADS``) decides whether indexing uses both cores
when they are free and how badly it suffers when the other one is busy.  Each setting is
measured in the same run, alternating, on the same texts: the source of ``--functions``
functions of the standard library, embedded in length-sorted batches of 32 (what the index
does), and one short query (what a search does).  "busy" runs a nice-0 ``while True: pass``
process beside it.

    .venv/bin/python benchmarks/embedder_threads.py [--functions 240] [--repeats 2] \\
        [--models models] [--json benchmarks/results/embedder_threads.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from pathfusion.server.embedder import OnnxEmbedder  # noqa: E402
from pathfusion.server.parsing import Document  # noqa: E402

SETTINGS: dict[str, int | None] = {"1 thread": 1, "2 threads": 2, "onnxruntime default": None}


def function_sources(stdlib: Path, count: int) -> list[str]:
    sources: list[str] = []
    for path in sorted((stdlib / "json").glob("*.py")) + sorted((stdlib / "email").glob("*.py")):
        sources += [f.source for f in Document(path.read_text(encoding="utf-8")).functions()]
        if len(sources) >= count:
            break
    return sources[:count]


def rate(embedder: OnnxEmbedder, texts: list[str]) -> float:
    started = time.perf_counter()
    embedder.embed(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - started)


def query_ms(embedder: OnnxEmbedder, runs: int = 40) -> float:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        embedder.embed([f"read the configuration file {i}"])
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "embedder_threads.json")
    args = parser.parse_args(argv)
    texts = function_sources(Path(sysconfig.get_paths()["stdlib"]), args.functions)
    embedders = {name: OnnxEmbedder.load(args.models, device="cpu", threads=threads)
                 for name, threads in SETTINGS.items()}
    model_id = next(iter(embedders.values())).model_id
    result: dict[str, Any] = {"model": model_id, "functions": len(texts), "cpus": os.cpu_count(),
                              "repeats": args.repeats, "conditions": {}}
    for condition in ("idle", "busy"):
        busy = None
        if condition == "busy":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            rows: dict[str, dict[str, Any]] = {name: {"functions_per_s": []} for name in embedders}
            for embedder in embedders.values():  # warm-up
                rate(embedder, texts[:32])
            for _ in range(args.repeats):
                for name, embedder in embedders.items():
                    rows[name]["functions_per_s"].append(round(rate(embedder, texts), 1))
            for name, embedder in embedders.items():
                rows[name]["query_p50_ms"] = round(query_ms(embedder), 2)
            result["conditions"][condition] = rows
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print_rows([(f"{condition}: {name}", f"{data['functions_per_s']} functions/s, query p50 {data['query_p50_ms']} ms")
                for condition, rows in result["conditions"].items() for name, data in rows.items()], width=34)
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
