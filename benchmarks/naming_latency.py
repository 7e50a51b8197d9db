"""Warm latency of one function's name suggestions with the generative naming head.

For real functions of a standard-library file (default ``argparse.py``), measured in the same
run and interleaved, on one onnxruntime thread each (the server's setting for the head; the
embedder gets its own threads there, see ``server/runtime.py``):

* **encoder**: the embedder's token states of the masked function (the head's memory);
* **fusion** (a fusion head only): the function's path contexts extracted from the masked
  source and the fusion graph run over them and the token states;
* **suggest**: what a hover pays without the cache — encoder + beam search (beam 5, the
  hover's ``candidate_count(5)`` = 10 names) with the current name scored in the same run
  (:meth:`pathfusion.server.name_generator.NameGenerator.names`; each function is asked once, and the
  warm-up asks for another count, so nothing comes from the generator's cache).

Prints p50/p95/max per kind and writes JSON.

    HF_HUB_OFFLINE=1 python benchmarks/naming_latency.py [--models models] [--file F] [--functions 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pathfusion.server.code2vec import is_dunder  # noqa: E402
from pathfusion.server.embedder import OnnxEmbedder  # noqa: E402
from pathfusion.server.name_generator import NameGenerator, source_text  # noqa: E402
from pathfusion.server.parsing import Document  # noqa: E402
from pathfusion.server.paths import mask_source, name_label  # noqa: E402
from pathfusion.server.rename_safety import candidate_count  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "max_ms": round(float(a.max()), 2), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--file", type=Path, default=Path(sysconfig.get_paths()["stdlib"]) / "argparse.py")
    parser.add_argument("--functions", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the embedder")
    parser.add_argument("--top-k", type=int, default=candidate_count(5), help="names asked for (a hover's)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "naming_latency.json")
    args = parser.parse_args(argv)
    embedder = OnnxEmbedder.load(args.models, device="cpu", threads=args.threads)
    generator = NameGenerator.load(args.models, embedder, "cpu", threads=1)
    doc = Document(args.file.read_text(encoding="utf-8"))
    functions = [f for f in doc.functions() if not is_dunder(f.name)][: args.functions]
    if not functions:
        print(f"no functions in {args.file}", file=sys.stderr)
        return 2
    work = [(mask_source(f.source, f.name), name_label(f.name)) for f in functions]
    generator.names(work[0][0], args.top_k + 1, work[0][1])  # warm-up (another cache key)
    encoder: list[float] = []
    fusion: list[float] = []
    suggest: list[float] = []
    for masked, label in work:
        started = time.perf_counter()
        ids, states = embedder.token_states(source_text(masked))
        encoder.append((time.perf_counter() - started) * 1000)
        if generator.fusion is not None:
            started = time.perf_counter()
            generator.fusion.fuse(ids, states, masked)
            fusion.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        generator.names(masked, args.top_k, label)
        suggest.append((time.perf_counter() - started) * 1000)
    result = {"file": str(args.file), "functions": len(work), "embedder_threads": args.threads, "top_k": args.top_k,
              "naming_head": generator.model_id, "embedder": embedder.model_id, "machine": platform.machine(),
              "reads": generator.info["reads"], "encoder": percentiles(encoder),
              **({"fusion": percentiles(fusion)} if fusion else {}), "suggest": percentiles(suggest)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
