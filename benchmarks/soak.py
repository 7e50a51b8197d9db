"""Memory soak of the language server (docs/reliability.md): edits, hovers, searches and
renames through a real LSP client for ``--minutes``, the server's RSS sampled from
``/proc/<pid>/status`` every ``--sample-s`` seconds.

The workspace is a temporary copy of a few standard-library modules (``--files``), indexed
by the server at start (``PATHFUSION_CACHE_DIR`` in the same temporary folder).  The client
keeps its own copy of the open documents and drives, in a fixed seeded cycle:

* **edit** — an incremental ``didChange``: a function with a fresh name appended or the
  oldest such function removed, a comment line inserted or removed (fresh identifiers and
  function texts — what a growing cache would keep — while the documents stay the same
  size: at most :data:`KEPT` soak functions and comments each);
* **hover** on the name of a random function of an open document;
* **search** — ``pathfusion.search`` and ``workspace/symbol`` with a fresh query each time;
* **rename** — ``textDocument/codeAction`` on a function name, then ``codeAction/resolve`` of
  the first action (jedi's workspace rename; the edit is applied to the client's copy and
  sent as a ``didChange``);
* **save** — the client's copy written to disk and ``didSave`` (the index updates the file).

The summary (``--json``, default ``benchmarks/results/soak.json``) holds every sample
(seconds, MB), the operation counts, unanswered requests, and the growth over the last 2/3
of the run: the difference of the median RSS of the first and the last minute of that
window, and a least-squares slope (MB/min).

    python benchmarks/soak.py [--minutes 30] [--models models] [--fusion-variant default] \\
        [--ops edit:4,hover:4,search:2,rename:1,save:1] [--server-env KEY=VALUE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from tests.lsp_driver import (  # noqa: E402
    RawLspClient,
    ServerDied,
    Unanswered,
    lsp_range,
    position,
    text_document_item,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
DEFAULT_FILES = ("json/decoder.py", "json/encoder.py", "textwrap.py", "shlex.py", "csv.py")
WORDS = ("read", "write", "parse", "load", "config", "file", "json", "string", "split", "join",
         "token", "quote", "escape", "decode", "encode", "line", "wrap", "indent", "number", "list")
KEPT = 3
"""Soak functions and soak comment lines kept per document at most."""
OPS = "edit:4,hover:4,search:2,rename:1,save:1"
DEF_RE = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)", re.M)


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (VmRSS), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def growth(samples: list[tuple[float, float]], window_s: float = 60.0) -> dict[str, Any]:
    """Growth of RSS over the last 2/3 of the run: median of the window's last ``window_s``
    minus the median of its first ``window_s``, and the least-squares slope (MB/min)."""
    if len(samples) < 4:
        return {"mb": None, "slope_mb_per_min": None, "from_s": None}
    end = samples[-1][0]
    start = end / 3
    tail = [(t, v) for t, v in samples if t >= start]
    first = [v for t, v in tail if t <= start + window_s]
    last = [v for t, v in tail if t >= end - window_s]
    xs = [t / 60 for t, _ in tail]
    ys = [v for _, v in tail]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return {"mb": round(statistics.median(last) - statistics.median(first), 2),
            "slope_mb_per_min": round(slope, 3), "from_s": round(start, 1), "to_s": round(end, 1)}


def apply_edit(text: str, start: tuple[int, int], end: tuple[int, int], new: str) -> str:
    """Apply one LSP edit to an ASCII, LF-only text (UTF-16 offsets = characters)."""
    lines = text.split("\n")

    def offset(line: int, character: int) -> int:
        if line >= len(lines):
            return len(text)
        return sum(len(x) + 1 for x in lines[:line]) + min(character, len(lines[line]))

    return text[: offset(*start)] + new + text[offset(*end):]


class Soak:
    """The client side of the soak: documents, operation cycle, RSS samples."""

    def __init__(self, client: RawLspClient, ws: Path, rng: random.Random, timeout: float) -> None:
        self.client = client
        self.ws = ws
        self.rng = rng
        self.timeout = timeout
        self.docs: dict[str, tuple[Path, str, int]] = {}
        self.counts: dict[str, int] = {}
        self.unanswered: list[str] = []
        self.errors: list[str] = []
        self.serial = 0

    async def request(self, method: str, params: Any) -> Any:
        self.counts[method] = self.counts.get(method, 0) + 1
        try:
            answer = await self.client.request(method, params, self.timeout)
        except Unanswered as exc:
            self.unanswered.append(str(exc))
            return None
        if answer.error is not None and len(self.errors) < 50:
            self.errors.append(f"{method}: {answer.error}")
        return answer.result

    async def open(self, path: Path) -> None:
        text = path.read_text()
        uri = path.as_uri()
        self.docs[uri] = (path, text, 1)
        await self.client.notify("textDocument/didOpen", text_document_item(uri, text))

    async def change(self, uri: str, start: tuple[int, int], end: tuple[int, int], new: str) -> None:
        path, text, version = self.docs[uri]
        version += 1
        self.docs[uri] = (path, apply_edit(text, start, end, new), version)
        await self.client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": lsp_range(start, end), "text": new}]})
        self.counts["didChange"] = self.counts.get("didChange", 0) + 1

    def names(self, uri: str) -> list[tuple[int, int, str]]:
        text = self.docs[uri][1]
        out = []
        for match in DEF_RE.finditer(text):
            line = text.count("\n", 0, match.start(1))
            character = match.start(1) - (text.rfind("\n", 0, match.start(1)) + 1)
            out.append((line, character, match.group(1)))
        return out

    async def edit(self) -> None:
        """One edit that keeps the workload stationary: the soak's own functions and comment
        lines come and go (at most :data:`KEPT` of each per document), so that what grows is
        the server, not the documents."""
        uri = self.rng.choice(list(self.docs))
        text = self.docs[uri][1]
        lines = text.split("\n")
        self.serial += 1
        functions = [i for i, line in enumerate(lines) if line.startswith("def soak_")]
        comments = [i for i, line in enumerate(lines) if line.startswith("# soak ")]
        if self.rng.random() < 0.5:
            if len(functions) >= KEPT:  # remove the oldest soak function (def line + body)
                line = functions[0]
                await self.change(uri, (line, 0), (line + 2, 0), "")
            else:  # a new function with a fresh name, appended
                name = "soak_" + "_".join(self.rng.sample(WORDS, 2)) + f"_{self.serial}"
                body = f"def {name}(value, count={self.serial}):\n    return str(value) * count\n"
                end = len(lines) - 1
                await self.change(uri, (end, len(lines[end])), (end, len(lines[end])),
                                  ("\n" if lines[end] else "") + body)
        elif len(comments) >= KEPT:
            line = self.rng.choice(comments)
            await self.change(uri, (line, 0), (line + 1, 0), "")
        else:
            line = self.rng.randrange(len(lines))
            await self.change(uri, (line, 0), (line, 0), f"# soak {self.serial}\n")

    async def hover(self) -> None:
        uri = self.rng.choice(list(self.docs))
        names = self.names(uri)
        if names:
            line, character, _ = self.rng.choice(names)
            await self.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                      "position": position(line, character + 1)})

    async def search(self) -> None:
        self.serial += 1
        query = " ".join(self.rng.sample(WORDS, 3)) + f" {self.serial}"
        await self.request("workspace/executeCommand", {"command": "pathfusion.search",
                                                        "arguments": [{"query": query, "k": 5}]})
        await self.request("workspace/symbol", {"query": self.rng.choice(WORDS) + str(self.serial)})

    async def rename(self) -> None:
        uri = self.rng.choice(list(self.docs))
        names = [n for n in self.names(uri) if not n[2].startswith("__")]
        if not names:
            return
        line, character, _ = self.rng.choice(names)
        actions = await self.request("textDocument/codeAction", {
            "textDocument": {"uri": uri}, "range": lsp_range((line, character), (line, character)),
            "context": {"diagnostics": []}})
        if not actions:
            return
        resolved = await self.request("codeAction/resolve", actions[0])
        edit = (resolved or {}).get("edit") or {}
        changes = edit.get("documentChanges") or []
        if len(changes) == 1 and changes[0]["textDocument"]["uri"] == uri:
            # apply the rename to the open document, last edit first (the edits are in order)
            for item in reversed(changes[0]["edits"]):
                rng = item["range"]
                await self.change(uri, (rng["start"]["line"], rng["start"]["character"]),
                                  (rng["end"]["line"], rng["end"]["character"]), item["newText"])

    async def save(self) -> None:
        uri = self.rng.choice(list(self.docs))
        path, text, _ = self.docs[uri]
        path.write_text(text)
        await self.client.notify("textDocument/didSave", {"textDocument": {"uri": uri}})
        self.counts["didSave"] = self.counts.get("didSave", 0) + 1


def parse_ops(spec: str) -> list[tuple[str, int]]:
    """``"edit:4,hover:4"`` → ``[("edit", 4), ("hover", 4)]`` (the operation mix)."""
    ops = []
    for item in spec.split(","):
        name, _, weight = item.partition(":")
        if name not in ("edit", "hover", "search", "rename", "save"):
            raise SystemExit(f"unknown operation {name!r} in --ops")
        ops.append((name, int(weight or 1)))
    return ops


async def wait_indexed(client: RawLspClient, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        answer = await client.request("workspace/executeCommand",
                                      {"command": "pathfusion.status", "arguments": []}, 60)
        folders = ((answer.result or {}).get("index") or {}).get("folders") or []
        state = folders[0]["state"] if folders else None
        if state in ("ready", "error", "off", "cancelled"):
            return state
        await asyncio.sleep(0.5)
    return state


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pf-soak-"))
    ws = work / "ws"
    ws.mkdir()
    for rel in args.files:
        src = STDLIB / rel
        shutil.copyfile(src, ws / rel.replace("/", "_"))
    settings = {"modelsDir": str(args.models), "fusionVariant": args.fusion_variant,
                "hoverMinConfidence": 1.0, "device": "cpu"}
    env = {"PATHFUSION_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    env.update(item.split("=", 1) for item in args.server_env)
    client = await RawLspClient.start(
        env=env,
        stderr_path=work / "server.log", settings=settings)
    rng = random.Random(args.seed)
    soak = Soak(client, ws, rng, args.timeout)
    samples: list[tuple[float, float]] = []
    died = None
    started = time.monotonic()
    try:
        await client.initialize(ws)
        index_state = await wait_indexed(client, args.timeout * 10)
        for path in sorted(ws.glob("*.py"))[: args.open]:
            await soak.open(path)
        started = time.monotonic()
        deadline = started + 60 * args.minutes
        next_sample = started
        ops = [getattr(soak, name) for name, weight in parse_ops(args.ops) for _ in range(weight)]
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_sample:
                value = rss_mb(client.pid)
                if value is None:
                    break
                samples.append((round(now - started, 1), round(value, 2)))
                next_sample += args.sample_s
            await rng.choice(ops)()
            if args.pause > 0:
                await asyncio.sleep(args.pause)
    except ServerDied as exc:
        died = str(exc)
    finally:
        final = rss_mb(client.pid)
        code = await client.close()
    log_tail = (work / "server.log").read_text(errors="replace")[-3000:]
    shutil.rmtree(work, ignore_errors=True)
    if final is not None:
        samples.append((round(time.monotonic() - started, 1), round(final, 2)))
    return {
        "benchmark": "soak", "python": platform.python_version(), "cpus": os.cpu_count(),
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "minutes": args.minutes, "seed": args.seed, "ops": args.ops, "settings": settings, "files": list(args.files),
        "index_state": index_state if died is None else None,
        "operations": soak.counts, "unanswered": len(soak.unanswered),
        "unanswered_examples": soak.unanswered[:10], "errors": soak.errors[:10],
        "server_died": died, "exit_code": code,
        "rss_mb": {"start": samples[0][1] if samples else None, "end": samples[-1][1] if samples else None,
                   "max": max(v for _, v in samples) if samples else None},
        "growth_last_two_thirds": growth(samples),
        "samples": samples, "server_log_tail": log_tail,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--fusion-variant", default="default")
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES),
                        help="standard-library files (relative to the stdlib) copied into the workspace")
    parser.add_argument("--open", type=int, default=3, help="documents opened by the client")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between operations")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--ops", default=OPS, help=f"the operation mix, name:weight (default {OPS})")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the server (e.g. PYTHONTRACEMALLOC=1)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    g = result["growth_last_two_thirds"]
    print_rows([("minutes", args.minutes), ("operations", sum(result["operations"].values())),
                ("unanswered", result["unanswered"]), ("server died", result["server_died"]),
                ("RSS start / end / max (MB)",
                 f"{result['rss_mb']['start']} / {result['rss_mb']['end']} / {result['rss_mb']['max']}"),
                ("growth over the last 2/3 (MB)", g["mb"]),
                ("slope over the last 2/3 (MB/min)", g["slope_mb_per_min"])], width=34)
    save_json(result, args.json)
    return 0 if result["server_died"] is None and result["unanswered"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
