"""CPU latency per function of every variant, the way the editor pays it (one function at a
time, one thread): the LLM embedding of the masked source, the code2vec contexts + graph,
and the fusion graph; plus one query through each variant's query encoder.

    python benchmarks/fusion_latency.py [--functions 200] [--json benchmarks/results/fusion_latency.json]

The functions are the first ``--functions`` naming-eligible functions of the standard
library's ``json``, ``email`` and ``http`` packages (real code, not seen in training).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import print_rows, save_json
from pathfusion.server.code2vec import Code2VecModel
from pathfusion.server.embedder import OnnxEmbedder
from pathfusion.server.fusion import FusionRuntime
from pathfusion.server.models import default_models_dir, load_manifest
from pathfusion.server.parsing import Document
from pathfusion.server.paths import MAX_CONTEXTS, context_space, mask_source


def sample_functions(limit: int) -> list[tuple[str, list[str]]]:
    """(masked source, contexts) of up to ``limit`` stdlib functions of ≥ 3 lines."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[tuple[str, list[str]]] = []
    for package in ("json", "email", "http"):
        for path in sorted((root / package).rglob("*.py")):
            doc = Document(path.read_text(encoding="utf-8", errors="replace"))
            for func in doc.functions():
                if func.line_count < 3 or func.name.startswith("__"):
                    continue
                contexts = [c.to_text() for c in context_space(func.node, doc.source, func.name).sample(MAX_CONTEXTS)]
                out.append((mask_source(func.source, func.name), contexts))
                if len(out) >= limit:
                    return out
    return out


def _timed(fn: Callable[[Any], object], items: Sequence[Any]) -> list[float]:
    """Milliseconds of ``fn(item)`` for each item."""
    times = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - started) * 1000)
    return times


def variant_latency(runtime: FusionRuntime, llm: np.ndarray, code: np.ndarray) -> tuple[float, float]:
    """p50 ms of the fusion graph for one function, and of one query."""
    if runtime.variant == "code2vec":  # shipped for search only (names come from code2vec's head)
        graph = _timed(lambda i: runtime.search_vectors(llm[i:i + 1], code[i:i + 1]), range(len(llm)))
    else:
        graph = _timed(lambda i: runtime.naming(llm[i:i + 1], code[i:i + 1], 5), range(len(llm)))
    queries = _timed(lambda q: runtime.query_vectors([q]),
                     ["read a json file", "parse the http header", "send an email message"] * 10)
    return statistics.median(graph), statistics.median(queries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--functions", type=int, default=200)
    parser.add_argument("--models", type=Path, default=default_models_dir())
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/fusion_latency.json"))
    args = parser.parse_args()
    functions = sample_functions(args.functions)
    embedder = OnnxEmbedder.load(args.models, threads=1)
    code2vec = Code2VecModel.load(args.models, threads=1)
    variants = list(load_manifest(args.models, verify=False)["models"].get("fusion", {}).get("variants", {}))
    llm_ms = _timed(lambda f: embedder.embed([f[0]]), functions)
    c2v_ms = _timed(lambda f: code2vec.code_vectors([f[1]]), functions)
    naming_ms = _timed(lambda f: code2vec.predict([f[1]], top_k=5), functions)
    llm = np.asarray(embedder.embed([f[0] for f in functions[:50]]), dtype=np.float32)
    code = code2vec.code_vectors([f[1] for f in functions[:50]])
    result: dict[str, object] = {"functions": len(functions), "threads": 1,
                                 "llm_embed_ms_p50": statistics.median(llm_ms),
                                 "code2vec_ms_p50": statistics.median(c2v_ms)}
    per_function: dict[str, float] = {"code2vec_naming": statistics.median(naming_ms)}
    fusion_ms: dict[str, float] = {}
    query_ms: dict[str, float] = {}
    for variant in variants:
        runtime = FusionRuntime.load(embedder, code2vec, args.models, variant, "cpu")
        fusion_ms[variant], query_ms[variant] = variant_latency(runtime, llm, code)
        uses_llm = variant != "code2vec"
        per_function[variant] = ((statistics.median(llm_ms) if uses_llm else 0.0)
                                 + statistics.median(c2v_ms) + fusion_ms[variant])
    result.update({"fusion_graph_ms_p50": fusion_ms, "query_ms_p50": query_ms, "ms_per_function": per_function})
    print_rows([(k, v) for k, v in result.items()])
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
