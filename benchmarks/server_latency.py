"""Hover latency through the real language server over stdio (docs/performance.md).

Starts ``python -m pathfusion serve --models DIR`` as a subprocess and talks LSP to it with a
minimal hand-written JSON-RPC client (Content-Length framing over the pipes; server
requests such as ``workspace/configuration`` are answered with defaults).  The workspace is
a temporary folder holding a copy of one real standard-library file (default
``argparse.py``), so the server indexes only that file; the index lives in a temporary
``PATHFUSION_CACHE_DIR``.

* **cold**: ``initialize`` → ``initialized`` → ``didOpen`` → the first ``textDocument/hover``
  on a function name; its latency includes loading the naming model (and competing with the
  embedder load / indexing started by ``initialized``).  Also reported: time from process
  start to that hover's answer.
* **warm**: after ``pathfusion.status`` reports the folder ``ready``, ``--hovers`` hovers on
  the names of different functions of the file (cycling), p50/p95/max — these include the
  "similar functions" k-NN of the index;
* **new file**: the first hover on a second file (``--second-file``, default ``inspect.py``)
  opened once the server is warm — no worker has listed its functions yet;
* **after an edit**: ``--edits`` times, a line is inserted at the top of the first file
  (``didChange``, a new version) and a function name is hovered at once.

Needs a naming model in the models folder (the generative naming head, or code2vec);
without one the script says so and exits with status 2.

    HF_HUB_OFFLINE=1 python benchmarks/server_latency.py [--models models] [--hovers 100] \\
        [--file /usr/lib/python3.11/argparse.py] [--json benchmarks/results/server_latency.json]

Runtime: well under a minute (bounded by ``--timeout`` per request and for indexing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402


class Client:
    """JSON-RPC 2.0 over a subprocess's stdin/stdout (LSP base protocol)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise ValueError("the server process needs stdin and stdout pipes")
        self.proc = proc
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self.next_id = 0
        self.responses: dict[int, queue.Queue] = {}
        self.lock = threading.Lock()
        self.notifications: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        with self.lock:
            self.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.stdin.flush()

    def _read(self) -> None:
        stream = self.stdout
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length is None:
                continue
            message = json.loads(stream.read(length))
            if "id" in message and "method" in message:  # a request from the server
                result = None
                if message["method"] == "workspace/configuration":
                    result = [None for _ in message.get("params", {}).get("items", [])]
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": result})
            elif "id" in message:
                q = self.responses.get(message["id"])
                if q is not None:
                    q.put(message)
            else:
                self.notifications.append(message)

    def request(self, method: str, params: object, timeout: float) -> dict:
        self.next_id += 1
        rid = self.next_id
        q: queue.Queue = queue.Queue()
        self.responses[rid] = q
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        try:
            message = q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{method}: no answer in {timeout} s") from None
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result")

    def notify(self, method: str, params: object) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})


def function_names(text: str) -> list[tuple[int, int, str]]:
    """(line, character, name) of every ``def`` name (the file is ASCII: chars = UTF-16 units)."""
    out = []
    for i, line in enumerate(text.splitlines()):
        m = re.match(r"(\s*)(?:async\s+)?def\s+(\w+)", line)
        if m:
            out.append((i, line.index(m.group(2), len(m.group(1))), m.group(2)))
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--file", type=Path, default=Path(sysconfig.get_paths()["stdlib"]) / "argparse.py")
    parser.add_argument("--hovers", type=int, default=100)
    parser.add_argument("--edits", type=int, default=20, help="hovers each right after an edit")
    parser.add_argument("--second-file", type=Path,
                        default=Path(sysconfig.get_paths()["stdlib"]) / "inspect.py",
                        help="opened once the server is warm, hovered once")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "server_latency.json")
    parser.add_argument("--skip-model-check", action="store_true",
                        help="run even without a naming model (tests the plumbing; hovers then show only "
                             "similar functions, so the numbers are NOT the hover latency of docs/performance.md)")
    args = parser.parse_args(argv)

    manifest = args.models / "manifest.json"
    listed = json.loads(manifest.read_text()).get("models", {}) if manifest.is_file() else {}
    has_code2vec = (args.models / "code2vec").is_dir() and "code2vec" in listed
    naming_model = "naming head" if "naming" in listed else "code2vec" if has_code2vec else None
    if naming_model is None and not args.skip_model_check:
        print(f"{manifest} lists no naming model (naming head or code2vec), so hovers cannot be "
              f"measured. Export one (`pathfusion export naming` or `pathfusion export code2vec`) "
              f"and run this again.", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="pf-bench-hover-"))
    proc = None
    try:
        ws = work / "ws"
        ws.mkdir()
        target = ws / args.file.name
        shutil.copyfile(args.file, target)
        text = target.read_text(encoding="utf-8")
        names = function_names(text)
        env = dict(os.environ, PATHFUSION_CACHE_DIR=str(work / "cache"), HF_HUB_OFFLINE="1")
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pathfusion", "serve", "--models", str(args.models)],
                                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(work / "server.log", "wb"))  # noqa: SIM115
        client = Client(proc)
        uri = target.as_uri()
        t0 = time.perf_counter()
        client.request("initialize", {"processId": os.getpid(), "rootUri": ws.as_uri(),
                                      "workspaceFolders": [{"uri": ws.as_uri(), "name": "ws"}],
                                      "capabilities": {}}, args.timeout)
        init_ms = 1e3 * (time.perf_counter() - t0)
        client.notify("initialized", {})
        client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                "version": 1, "text": text}})
        # the first function that can get suggestions (a dunder never does: it would time
        # only the wait for the model)
        line, char, _ = next(n for n in names if not (n[2].startswith("__") and n[2].endswith("__")))
        t0 = time.perf_counter()
        cold = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                     "position": {"line": line, "character": char}},
                              args.timeout)
        cold_ms = 1e3 * (time.perf_counter() - t0)
        since_start_ms = 1e3 * (time.perf_counter() - started)

        deadline = time.time() + args.timeout
        state = None
        while time.time() < deadline:
            status = client.request("workspace/executeCommand",
                                    {"command": "pathfusion.status", "arguments": []}, args.timeout)
            folders = (status.get("index") or {}).get("folders") or []
            state = folders[0]["state"] if folders else None
            if state in ("ready", "error"):
                break
            time.sleep(0.2)
        index_wait_s = time.perf_counter() - t0

        warm: list[float] = []
        answered = 0
        for i in range(args.hovers):
            line, char, _ = names[(i + 1) % len(names)]
            t = time.perf_counter()
            result = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                           "position": {"line": line, "character": char}},
                                    args.timeout)
            warm.append(1e3 * (time.perf_counter() - t))
            answered += result is not None
        # a file opened once the server is warm (model loaded): its first hover lists the
        # functions of a document no worker has seen yet
        second = ws / args.second_file.name
        shutil.copyfile(args.second_file, second)
        second_text = second.read_text(encoding="utf-8")
        second_names = function_names(second_text)
        client.notify("textDocument/didOpen", {"textDocument": {"uri": second.as_uri(), "languageId": "python",
                                                                "version": 1, "text": second_text}})
        line, char, _ = second_names[len(second_names) // 2]
        t = time.perf_counter()
        client.request("textDocument/hover", {"textDocument": {"uri": second.as_uri()},
                                              "position": {"line": line, "character": char}}, args.timeout)
        new_file_ms = 1e3 * (time.perf_counter() - t)
        # after an edit (a new version: the worker view is rebuilt from the edited tree)
        after_edit: list[float] = []
        for i in range(args.edits):
            client.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": 2 + i},
                "contentChanges": [{"range": {"start": {"line": 0, "character": 0},
                                              "end": {"line": 0, "character": 0}},
                                    "text": f"# edit {i}\n"}]})
            line, char, _ = names[(7 * i + 3) % len(names)]
            t = time.perf_counter()
            client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": {"line": line + i + 1, "character": char}},
                           args.timeout)
            after_edit.append(1e3 * (time.perf_counter() - t))
        client.request("shutdown", None, args.timeout)
        client.notify("exit", None)
        proc.wait(timeout=10)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        log_tail = (work / "server.log").read_text(errors="replace")[-2000:] if (work / "server.log").exists() else ""
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "server_latency", "python": platform.python_version(), "cpus": os.cpu_count(),
        "command": "python benchmarks/server_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "code2vec_present": has_code2vec, "naming_model": naming_model, "file": str(args.file), "functions_in_file": len(names), "initialize_ms": round(init_ms, 1),
        "cold_hover_ms": round(cold_ms, 1), "cold_hover_answered": cold is not None,
        "process_start_to_first_hover_ms": round(since_start_ms, 1),
        "index_state": state, "index_wait_s": round(index_wait_s, 2),
        "warm_hover_ms": {"p50": pct(warm, 50), "p95": pct(warm, 95), "max": round(max(warm), 2),
                          "n": len(warm), "answered": answered},
        "first_hover_new_file_ms": round(new_file_ms, 1), "second_file": str(args.second_file),
        "hover_after_edit_ms": {"p50": pct(after_edit, 50), "p95": pct(after_edit, 95),
                                "max": round(max(after_edit), 2), "n": len(after_edit)},
        "server_log_tail": log_tail,
    }
    rows = [("functions in file", len(names)), ("initialize (ms)", result["initialize_ms"]),
            ("cold hover (ms)", result["cold_hover_ms"]),
            ("process start → first hover (ms)", result["process_start_to_first_hover_ms"]),
            ("index state / wait (s)", f"{state} / {result['index_wait_s']}"),
            ("warm hover p50 (ms)", result["warm_hover_ms"]["p50"]),
            ("warm hover p95 (ms)", result["warm_hover_ms"]["p95"]),
            ("warm hovers answered", f"{answered}/{len(warm)}"),
            ("first hover, newly opened file (ms)", result["first_hover_new_file_ms"]),
            ("hover right after an edit p50 (ms)", result["hover_after_edit_ms"]["p50"]),
            ("hover right after an edit p95 (ms)", result["hover_after_edit_ms"]["p95"])]
    print_rows(rows, width=36)
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
