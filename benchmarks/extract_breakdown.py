"""Where extraction time goes: parse, function listing, flattening, counting, writing out.

    python benchmarks/extract_breakdown.py [--limit N] [--json benchmarks/results/extract_breakdown.json]

Each phase is timed separately over the same functions of the installed standard library,
so the shares show what a faster extractor would have to replace.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.extract import stdlib_files
from benchmarks.report import save_json
from pathfusion.server.parsing import Document, SourceError, decode_source
from pathfusion.server.paths import MAX_CONTEXTS, _flatten, context_space


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "extract_breakdown.json")
    args = parser.parse_args(argv)
    texts = []
    for path in stdlib_files(Path(sysconfig.get_paths()["stdlib"]))[: args.limit]:
        try:
            texts.append(decode_source(path.read_bytes()))
        except SourceError:
            continue
    t0 = time.perf_counter()
    docs = [Document(text) for text in texts]
    t1 = time.perf_counter()
    functions = [(doc, f) for doc in docs for f in doc.functions()]
    t2 = time.perf_counter()
    for _, f in functions:
        _flatten(f.node)
    t3 = time.perf_counter()
    spaces = [context_space(f.node, doc.source, f.name) for doc, f in functions]
    t4 = time.perf_counter()
    contexts = sum(len(space.sample(MAX_CONTEXTS)) for space in spaces)
    t5 = time.perf_counter()
    n = len(functions)
    phases = {
        "parse": t1 - t0,
        "list_functions": t2 - t1,
        "flatten_nodes": t3 - t2,
        "count_contexts_incl_flatten": t4 - t3,
        "write_out_contexts": t5 - t4,
    }
    result = {
        "functions": n,
        "contexts_written": contexts,
        "seconds": {k: round(v, 3) for k, v in phases.items()},
        "microseconds_per_function": {k: round(v / n * 1e6, 1) for k, v in phases.items()},
        "functions_per_s_end_to_end": round(n / (t1 - t0 + t2 - t1 + t4 - t3 + t5 - t4), 1),
        "functions_per_s_parse_and_list_only": round(n / (t2 - t0), 1),
    }
    print(json.dumps(result, indent=1))
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
