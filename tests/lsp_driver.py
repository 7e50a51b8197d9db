"""A minimal LSP client over a server subprocess's pipes, shared by the fuzz test
(``tests/lsp/test_fuzz.py``), ``benchmarks/fuzz.py`` and ``benchmarks/soak.py``.

Why not pytest-lsp's client: a fuzzer must send bodies that are not valid UTF-8 or JSON,
see the answers the server gives them (``id: null``) and tell "no answer" from "an error
answer"; the benchmarks run without pytest.  This client frames messages itself
(``Content-Length``), answers the server's own requests (``workspace/configuration`` with the
given settings, anything else with ``null``) and keeps the last notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVER_COMMAND = (sys.executable, "-m", "pathfusion", "serve", "--stdio")


class Unanswered(Exception):
    """A request got no answer within its timeout (the server is alive but silent)."""


class ServerDied(Exception):
    """The server process ended while a request waited for its answer."""


@dataclass
class Answer:
    """A response: ``error`` is the JSON-RPC error object, else ``result`` holds the result."""

    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class RawLspClient:
    """JSON-RPC 2.0 over a subprocess's stdin/stdout (the LSP base protocol)."""

    def __init__(self, proc: asyncio.subprocess.Process, settings: dict[str, Any] | None = None) -> None:
        self.proc = proc
        self.settings = settings or {}
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[Answer]] = {}
        self.orphans: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        """Responses whose id is null or unknown (the answers to undecodable bodies)."""
        self.notifications: deque[dict[str, Any]] = deque(maxlen=500)
        self.malformed: list[bytes] = []
        """Frames from the server that were not JSON (a protocol violation; kept for the report)."""
        self._write_lock = asyncio.Lock()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(
        cls, command: Sequence[str] = SERVER_COMMAND, *, env: dict[str, str] | None = None,
        cwd: Path | str = ROOT, stderr_path: Path | None = None, settings: dict[str, Any] | None = None,
    ) -> RawLspClient:
        """Start ``command`` (default: this repository's server over stdio).  Its stderr goes
        to ``stderr_path`` (else is discarded): a pipe nobody reads would block the server."""
        stderr: Any = asyncio.subprocess.DEVNULL
        handle = None
        if stderr_path is not None:
            handle = open(stderr_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            stderr = handle
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=str(cwd), env={**os.environ, **(env or {})},
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                limit=1 << 24)
        finally:
            if handle is not None:
                handle.close()
        return cls(proc, settings)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- sending -------------------------------------------------------------------------------
    async def send_body(self, body: bytes) -> None:
        """Frame and send ``body`` as is (it need not be JSON, nor UTF-8)."""
        assert self.proc.stdin is not None
        async with self._write_lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            with contextlib.suppress(ConnectionError):
                await self.proc.stdin.drain()

    async def _send(self, message: dict[str, Any]) -> None:
        await self.send_body(json.dumps(message).encode("utf-8", errors="surrogatepass"))

    async def notify(self, method: str, params: Any = None) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def request(self, method: str, params: Any = None, timeout: float = 30.0) -> Answer:
        """Send a request and wait for its answer.  Raises :class:`Unanswered` after
        ``timeout`` seconds and :class:`ServerDied` when the process ends meanwhile."""
        self.next_id += 1
        rid = self.next_id
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        try:
            await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            return await self._wait(future, f"{method} (id {rid})", timeout)
        finally:
            self.pending.pop(rid, None)

    async def raw_request(self, body: bytes, timeout: float = 30.0) -> dict[str, Any]:
        """Send a body the server cannot read (not UTF-8, not JSON) and wait for the answer
        it gives such bodies: a response with ``id: null``."""
        while not self.orphans.empty():
            self.orphans.get_nowait()
        await self.send_body(body)
        future = asyncio.ensure_future(self.orphans.get())
        try:
            return await self._wait(future, "an undecodable body", timeout)
        finally:
            future.cancel()

    async def _wait(self, future: asyncio.Future[Any], what: str, timeout: float) -> Any:
        done, _ = await asyncio.wait({future, self._reader}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        if self._reader in done or not self.alive:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
            raise ServerDied(f"{what}: the server exited (status {self.proc.returncode})")
        raise Unanswered(f"{what}: no answer in {timeout} s")

    # -- receiving -----------------------------------------------------------------------------
    async def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = await stream.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                continue
            try:
                body = await stream.readexactly(length)
            except asyncio.IncompleteReadError:
                return
            try:
                message = json.loads(body)
            except ValueError:
                self.malformed.append(body[:200])
                continue
            if not isinstance(message, dict):
                self.malformed.append(body[:200])
            elif "method" in message and "id" in message:
                await self._answer_server(message)
            elif "method" in message:
                self.notifications.append(message)
            else:
                rid = message.get("id")
                future = self.pending.get(rid) if isinstance(rid, int) else None
                answer = Answer(result=message.get("result"), error=message.get("error"))
                if future is not None and not future.done():
                    future.set_result(answer)
                else:
                    self.orphans.put_nowait(message)

    async def _answer_server(self, message: dict[str, Any]) -> None:
        result: Any = None
        if message["method"] == "workspace/configuration":
            items = (message.get("params") or {}).get("items") or []
            result = [self.settings for _ in items]
        await self._send({"jsonrpc": "2.0", "id": message["id"], "result": result})

    # -- lifecycle -----------------------------------------------------------------------------
    async def initialize(self, root: Path, timeout: float = 60.0) -> Answer:
        """``initialize`` (VS Code-like capabilities, the settings as initializationOptions)
        then ``initialized``."""
        answer = await self.request("initialize", {
            "processId": os.getpid(), "rootUri": root.as_uri(),
            "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
            "capabilities": {"workspace": {"configuration": True, "workspaceFolders": True},
                             "window": {"workDoneProgress": True},
                             "textDocument": {"hover": {"contentFormat": ["markdown"]},
                                              "codeAction": {"resolveSupport": {"properties": ["edit"]}}}},
            "initializationOptions": self.settings,
        }, timeout)
        await self.notify("initialized", {})
        return answer

    async def close(self, timeout: float = 15.0) -> int | None:
        """``shutdown`` + ``exit`` when the server lives, then wait for it (kill after
        ``timeout``); returns its exit status."""
        if self.alive:
            with contextlib.suppress(Unanswered, ServerDied, ConnectionError):
                await self.request("shutdown", None, timeout)
                await self.notify("exit", None)
            with contextlib.suppress(ConnectionError, OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return self.proc.returncode


def text_document_item(uri: str, text: str, version: int = 1) -> dict[str, Any]:
    return {"textDocument": {"uri": uri, "languageId": "python", "version": version, "text": text}}


def position(line: int, character: int) -> dict[str, int]:
    return {"line": line, "character": character}


def lsp_range(start: tuple[int, int], end: tuple[int, int]) -> dict[str, dict[str, int]]:
    return {"start": position(*start), "end": position(*end)}
