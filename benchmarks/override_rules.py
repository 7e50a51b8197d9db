"""What the class-hierarchy rules cost a hover (docs/performance.md).

A hover checks the method under the cursor against its class hierarchy
(:mod:`pathfusion.server.overrides`): bases read from other modules
(:mod:`pathfusion.server.base_classes`) and subclasses in the project's other files
(:mod:`pathfusion.server.subclasses`).  This times :func:`pathfusion.server.rename_safety.clashes`
for every method of one module of a large project, the way the server runs it: the analysis
thread's warm-up first (``read_bases``: the bases' modules parsed; it starts the reading of the
project's class headers and of the module's classes' subclasses in the background, whose time
is ``subclasses_s``), then each method's check as a hover makes it.  The peer in the same run is the same module read without a
project (no subclass scan), so the difference is what the project scan adds.

    python benchmarks/override_rules.py [--project DIR] [--module FILE] [--json benchmarks/results/override_rules.json]

Defaults: the installed ``transformers`` package as the project (2,912 files here) and its
``modeling_utils.py``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from pathfusion.server.base_classes import Origin, origin_of
from pathfusion.server.feature_hover import SUBCLASS_WAIT_S
from pathfusion.server.parsing import Document, FunctionInfo
from pathfusion.server.rename_safety import ModuleNames, clashes
from pathfusion.server.subclasses import project_subclasses


def main() -> int:
    default = importlib.util.find_spec("transformers")
    folder = Path(default.origin).parent if default is not None and default.origin else None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=folder)
    parser.add_argument("--module", type=Path, default=folder / "modeling_utils.py" if folder else None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.project is None or args.module is None:
        parser.error("no --project/--module given and transformers is not installed")
    text = args.module.read_text(encoding="utf-8")
    methods = [f for f in Document(text).functions() if f.qualname.count(".") == 1]
    served = replace(origin_of(str(args.module)), project=str(args.project))
    results = {"project": str(args.project), "module": str(args.module), "methods": len(methods),
               "project_files": sum(1 for _ in args.project.rglob("*.py"))}
    for label, origin in (("without project scan", replace(served, project=None)), ("as served", served)):
        results[label] = _time(text, methods, origin)
        print(label, json.dumps(results[label]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _time(text: str, methods: list[FunctionInfo], origin: Origin) -> dict[str, float]:
    """The analysis thread's warm-up (bases; the subclass reading it starts in the
    background, waited for here: ``subclasses_s``), then each method's check as a hover
    makes it (waiting :data:`~pathfusion.server.feature_hover.SUBCLASS_WAIT_S` at most)."""
    start = time.perf_counter()
    names = ModuleNames(text)
    names.read_bases(origin)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    tree = names.tree()
    for node in tree.body if tree is not None and origin.module else ():
        if isinstance(node, ast.ClassDef):
            project_subclasses(origin, origin.module or "", node.name, None)
    subclasses = time.perf_counter() - start
    timings, fixed = [], 0
    for func in methods:
        start = time.perf_counter()
        found = clashes(text, func, ["brand_new_name"], origin, SUBCLASS_WAIT_S)
        timings.append((time.perf_counter() - start) * 1000)
        fixed += bool(found)
    timings.sort()
    return {"warm_up_s": round(warm_up, 3), "subclasses_s": round(subclasses, 3),
            "check_ms_p50": round(statistics.median(timings), 3),
            "check_ms_p95": round(timings[int(0.95 * (len(timings) - 1))], 3),
            "check_ms_max": round(timings[-1], 3), "methods_kept": fixed}


if __name__ == "__main__":
    raise SystemExit(main())
