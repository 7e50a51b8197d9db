"""Long mutation-fuzzing runs of the language server (docs/reliability.md): ``--buffers`` mutated
standard-library buffers through a real LSP client — the fuzzer of the test suite
(:mod:`tests.fuzzing`), with more buffers, larger files and longer lines.

Writes a JSON summary to ``--json`` (default ``benchmarks/results/fuzz.json``): buffers,
requests (undecodable bodies included), error answers by code, unanswered requests, crashes,
internal errors, desynchronised documents, wall time.  Every failing buffer is kept under
``--failures`` (default ``benchmarks/results/fuzz-failures/``) as ``<seed>-<index>.json``:
its text and the exact messages sent; ``--replay FILE`` sends them again to a fresh server.

    python benchmarks/fuzz.py [--buffers 10000] [--seed 0] [--models models]
    python benchmarks/fuzz.py --replay benchmarks/results/fuzz-failures/0-123.json

Needs the shipped ``models/`` (code2vec naming, MiniLM search); the server is restarted
after a crash, which is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from tests.fuzzing import Case, FuzzConfig, Fuzzer, replay  # noqa: E402
from tests.lsp_driver import RawLspClient  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = {
    "lib.py": "import json\n\n\ndef load_config(path):\n    with open(path) as fh:\n        return json.loads(fh.read())\n",
    "app.py": "from lib import load_config\n\n\ndef main():\n    return load_config('x.json')\n",
}


def client_factory(args: argparse.Namespace, work: Path) -> Any:
    settings = {"modelsDir": str(args.models), "fusionVariant": args.fusion_variant, "device": "cpu",
                "hoverMinConfidence": 1.0}

    async def start() -> RawLspClient:
        return await RawLspClient.start(settings=settings, stderr_path=work / "server.log", env={
            "PATHFUSION_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})

    return start


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="pf-fuzz-"))
    ws = work / "ws"
    ws.mkdir()
    for name, text in WORKSPACE.items():
        (ws / name).write_text(text)
    start = client_factory(args, work)
    try:
        if args.replay is not None:
            case = json.loads(args.replay.read_text())
            problems = await replay(case, ws, start, timeout=args.timeout)
            print(f"replayed {args.replay}: buffer {case['index']} of seed {case['seed']} ({case['source']})")
            print(f"recorded failures: {case['failures']}")
            print("now: " + ("; ".join(problems) if problems else "every request answered, no crash"))
            return 1 if problems else 0
        config = FuzzConfig(buffers=args.buffers, seed=args.seed, timeout=args.timeout,
                            max_file_bytes=args.max_file_bytes, huge_line=args.huge_line)
        fuzzer = Fuzzer(config, ws, start)
        args.failures.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []

        def keep(case: Case) -> None:
            path = args.failures / f"{case.seed}-{case.index}.json"
            path.write_text(json.dumps(case.to_json(), indent=1) + "\n")
            kept.append(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
            print(f"buffer {case.index}: {case.failures[:2]} -> {path}", flush=True)

        started = time.monotonic()

        async def report() -> None:
            while True:
                await asyncio.sleep(30)
                s = fuzzer.stats
                print(f"{s.buffers}/{args.buffers} buffers, {s.requests} requests, {s.unanswered} unanswered, "
                      f"{s.crashes} crashes, {time.monotonic() - started:.0f} s", flush=True)

        reporter = asyncio.get_running_loop().create_task(report())
        try:
            stats = await fuzzer.run(on_case=keep)
        finally:
            reporter.cancel()
        result = {
            "benchmark": "fuzz", "python": platform.python_version(), "cpus": os.cpu_count(),
            "command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:]),
            "seed": args.seed, "models": str(args.models), "fusion_variant": args.fusion_variant,
            "max_file_bytes": args.max_file_bytes, "huge_line": args.huge_line,
            **{k: v for k, v in vars(stats).items()},
            "failures_kept": kept,
            "server_log_tail": (work / "server.log").read_text(errors="replace")[-2000:]
            if (work / "server.log").exists() else "",
        }
        print_rows([("buffers", stats.buffers), ("requests", stats.requests),
                    ("undecodable bodies", stats.undecodable_bodies), ("error answers", stats.errors),
                    ("unanswered", stats.unanswered), ("crashes", stats.crashes),
                    ("internal errors", stats.internal_errors), ("unexpected errors", stats.unexpected_errors),
                    ("desynchronised documents", stats.desyncs), ("def-line hovers compared", stats.sync_checks),
                    ("wall time (s)", stats.wall_s)], width=26)
        save_json(result, args.json)
        return 0 if stats.ok() else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--fusion-variant", default="code2vec")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds an answer may take")
    parser.add_argument("--max-file-bytes", type=int, default=100_000, help="largest seed file")
    parser.add_argument("--huge-line", type=int, default=2_000_000, help="longest inserted line (characters)")
    parser.add_argument("--json", type=Path, default=RESULTS / "fuzz.json")
    parser.add_argument("--failures", type=Path, default=RESULTS / "fuzz-failures")
    parser.add_argument("--replay", type=Path, help="a kept failing case to send again")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
