"""Cold start: process start → first hover answered, pathfusion beside jedi-language-server.

Why side by side: a user compares the new server with the one they already run; and these
machines are noisy, so the two servers are started alternately in the same run on the same
workspace and file, and the ratio of their medians is the number that matters (the target:
pathfusion ≤ 0.8 × jedi-language-server).

Each run: a temporary workspace holding a copy of one standard-library file (default
``argparse.py``); the server is spawned, then
``initialize`` → ``initialized`` → ``didOpen`` → ``textDocument/hover`` on the name of the
file's first public function, sent as soon as ``initialize`` is answered (what an editor
does).  Reported per server: process start → ``initialize`` answered, and process start →
first hover answered (median, min, max over ``--runs``), and whether that hover had content.
For pathfusion the first hover includes loading the naming model; indexing starts on
``initialized`` and competes with it, as in real use.  Both servers run with bytecode
caching on (as installed packages are), and an untimed first start of each fills the OS
file cache and the ``__pycache__`` folders.

Caches, the same for both servers: **kept** (the headline, every start after the first on a
user's machine) — one cache folder per benchmark run, filled by the untimed start
(``XDG_CACHE_HOME``: jedi's and parso's caches; ``PATHFUSION_CACHE_DIR``: pathfusion's index
folders and its record of verified model files); **fresh** (the first start after an
install) — new, empty cache folders for every start.  Both are measured and reported.

    .venv/bin/python benchmarks/cold_start.py [--runs 7] [--file /usr/lib/python3.11/argparse.py] \\
        [--json benchmarks/results/cold_start.json]

Needs ``jedi-language-server`` (the ``dev`` extra); without it only pathfusion is timed and
the script says so.  Runtime: about ``runs × 3`` seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from benchmarks.server_latency import Client, function_names  # noqa: E402

PATHFUSION = [sys.executable, "-m", "pathfusion", "serve", "--stdio"]
JEDI_SCRIPT = Path(sys.executable).with_name("jedi-language-server")


def first_public_function(text: str) -> tuple[int, int]:
    """(line, character) of the first ``def`` whose name does not start with ``_``."""
    for line, character, name in function_names(text):
        if not name.startswith("_"):
            return line, character
    raise ValueError("the file has no public function")


def one_start(command: list[str], source: Path, timeout: float, caches: Path | None = None) -> dict[str, Any]:
    """Spawn ``command`` on a fresh copy of ``source``; times to ``initialize`` and first hover.
    ``caches``: the folder of the servers' caches (None: new and empty for this start)."""
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        target = workspace / source.name
        shutil.copy2(source, target)
        text = target.read_text(encoding="utf-8")
        line, character = first_public_function(text)
        cache = caches if caches is not None else Path(tmp) / "cache"
        env = {**os.environ, "PATHFUSION_CACHE_DIR": str(cache / "pathfusion"), "XDG_CACHE_HOME": str(cache / "xdg"),
               "HF_HUB_OFFLINE": "1"}
        # Bytecode as on a user's machine (pip compiles installed packages; an editable
        # checkout compiles on first import): PYTHONDONTWRITEBYTECODE would recompile
        # pathfusion's sources on every start while jedi-language-server's are compiled.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=str(ROOT), env=env)
        try:
            client = Client(proc)
            root = workspace.as_uri()
            client.request("initialize", {
                "processId": os.getpid(), "rootUri": root,
                "workspaceFolders": [{"uri": root, "name": "ws"}],
                "capabilities": {"textDocument": {"hover": {"contentFormat": ["markdown", "plaintext"]}}},
            }, timeout)
            initialized = time.perf_counter() - started
            client.notify("initialized", {})
            uri = target.as_uri()
            client.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": "python", "version": 1, "text": text}})
            answer = client.request("textDocument/hover", {
                "textDocument": {"uri": uri}, "position": {"line": line, "character": character}}, timeout)
            hovered = time.perf_counter() - started
            try:
                client.request("shutdown", None, 10)
                client.notify("exit", None)
            except (TimeoutError, RuntimeError, OSError):
                pass
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"initialize_s": initialized, "first_hover_s": hovered, "hover_has_content": answer is not None}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    hovers = [run["first_hover_s"] for run in runs]
    inits = [run["initialize_s"] for run in runs]
    return {
        "first_hover_ms": {"median": round(1000 * statistics.median(hovers), 1),
                           "min": round(1000 * min(hovers), 1), "max": round(1000 * max(hovers), 1)},
        "initialize_ms": {"median": round(1000 * statistics.median(inits), 1)},
        "hovers_with_content": sum(run["hover_has_content"] for run in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    default_file = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--file", type=Path, default=default_file)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    servers = {"pathfusion": PATHFUSION}
    if JEDI_SCRIPT.is_file():
        servers["jedi-language-server"] = [str(JEDI_SCRIPT)]
    else:
        print(f"jedi-language-server not found at {JEDI_SCRIPT} (install the dev extra); timing pathfusion only")
    result: dict[str, Any] = {"file": str(args.file), "runs": args.runs, "python": platform.python_version(),
                              "cpus": os.cpu_count()}
    rows: list[tuple[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cold-start-caches-") as kept:
        for mode in ("kept", "fresh"):
            caches = {name: Path(kept) / name if mode == "kept" else None for name in servers}
            for name, command in servers.items():  # once untimed: the OS file cache, .pyc files, kept caches
                one_start(command, args.file, args.timeout, caches[name])
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for _ in range(args.runs):  # alternate, so both see the same background load
                for name, command in servers.items():
                    runs[name].append(one_start(command, args.file, args.timeout, caches[name]))
            part: dict[str, Any] = {"servers": {name: summary(values) for name, values in runs.items()}}
            rows += [(f"{mode} caches: {name} first hover (median ms)", data["first_hover_ms"]["median"])
                     for name, data in part["servers"].items()]
            rows += [(f"{mode} caches: {name} initialize (median ms)", data["initialize_ms"]["median"])
                     for name, data in part["servers"].items()]
            if "jedi-language-server" in runs:
                ratio = (part["servers"]["pathfusion"]["first_hover_ms"]["median"]
                         / part["servers"]["jedi-language-server"]["first_hover_ms"]["median"])
                part["ratio_first_hover"] = round(ratio, 3)
                # Each pathfusion start beside the jedi-language-server start right after it:
                # the machine's load drifts between pairs more than within one.
                paired = statistics.median(a["first_hover_s"] / b["first_hover_s"] for a, b in
                                           zip(runs["pathfusion"], runs["jedi-language-server"], strict=True))
                part["paired_ratio_first_hover"] = round(paired, 3)
                rows.append((f"{mode} caches: pathfusion / jedi-language-server (medians; paired)",
                             f"{ratio:.2f}×; {paired:.2f}×"))
            result[f"{mode}_caches"] = part
    print_rows(rows)
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
