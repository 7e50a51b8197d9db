"""Mutation fuzzing of the language server through a real LSP client, shared by the bounded
test in the suite (``tests/lsp/test_fuzz.py``) and the long runs of ``benchmarks/fuzz.py``.

Each *buffer* is a real Python file of the standard library, mutated (byte ranges deleted,
inserted, duplicated; astral characters and the separators LSP does *not* count as line ends;
CR, CRLF and mixed line ends; huge lines and deep nesting; truncation), opened in the server
and then driven with a seeded sequence of actions: incremental edits (sometimes past the end
of a line or of the document, sometimes a whole-document change), hovers and code actions at
random positions (sometimes out of range, sometimes negative or ≥ 2³¹, which no LSP type
admits), ``codeAction/resolve``, ``workspace/symbol`` and ``pathfusion.search`` queries (lone
surrogates included), and bodies the server cannot decode (not UTF-8, not JSON, not JSON-RPC).

Checked for every request: an answer within the timeout — a result, or an error where the
request was invalid (``-32602``, or ``-32700``/``-32600`` with ``id: null`` for an undecodable
body); an internal error (``-32603``) is a failure too.  Checked for every buffer: the server
is alive, and its copy of the document equals the client's — the client keeps its own copy,
edited with LSP's rules (written here, independently of the server), and at the end the hover
on each ``def`` line of the edited document must equal the hover on the same line of a fresh
document opened with the client's text.

Why one module of ~550 lines: the generator of buffers and edits, the client that sends them
and the oracle that judges the answers must agree on every detail of the document model;
split, each part would need the others' internals.

A failing buffer is returned as a :class:`Case`: its seed, its text and the exact messages
sent, so that :func:`replay` sends them again to a fresh server.
"""

from __future__ import annotations

import json
import random
import re
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.lsp_driver import RawLspClient, ServerDied, Unanswered

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MAX_POSITION = 2**31 - 1
"""The largest line or character an LSP ``uinteger`` admits."""
ASTRAL = "😀𝔘𠀀🐍𝕏"
ODD = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\ufeff", "\u200d", "\u202e", "\u0301", "é", "\t",
       "\x00", "\\", "'", '"', "#", ":", "(", ")", "[", "]", "{", "}", "\\\n"]
"""Characters that stress positions and the parser: the separators LSP does *not* count as
line ends (Python's ``str.splitlines`` does), BOM, joiners, combining marks, NUL.  No
unbalanced triple quote: it would turn the rest of a buffer into one string, and leave the
end-of-buffer check (hovers on ``def`` lines) nothing to compare."""
SNIPPETS = ["def f(x):\n    return x\n", "class C:\n    def m(self): pass\n", "async def g():\n    await h()\n",
            "@dec\ndef d(): ...\n", "lambda: 0", "if x:\n", "    ", "return ", "'''doc'''", "x = [", "])", "def ",
            "import os\n", "print(", "😀", "\r", "\n", "\r\n"]
WORDS = ["read", "config", "parse", "json", "load", "file", "decode", "http", "email", "split", "😀", "é"]
UNDECODABLE = [
    b'{"jsonrpc": "2.0", "id": 1, "method": "textDocument/hover", "params": {"x": "\xc3\x28"}}',
    b"\xff\xfe\xfd", b"\xed\xa0\x80", b"{", b"not json", b"[]", b"[1, 2]", b"null", b'"text"', b"{}",
    b'{"jsonrpc": "1.0", "id": 3, "method": "x"}', b'{"jsonrpc": "2.0", "id": [1], "method": "x"}',
    b'{"jsonrpc": "2.0", "id": 4, "method": 5}', b'{"jsonrpc": "2.0", "id": 6, "params": NaN}',
    b"[" * 100_000,
]


# -- the corpus and its mutations -------------------------------------------------------------------
def corpus_files(max_bytes: int = 60_000, root: Path = STDLIB, min_bytes: int = 500) -> list[Path]:
    """Python files of the standard library of ``min_bytes`` to ``max_bytes`` (sorted: a
    seed picks the same file on every machine with the same Python)."""
    files = []
    for path in sorted(root.rglob("*.py")):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if min_bytes <= size <= max_bytes and "site-packages" not in path.parts:
            files.append(path)
    return files


def random_text(rng: random.Random) -> str:
    """A short insertion: code, odd characters, line ends, astral characters."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.5:
            parts.append(rng.choice(SNIPPETS))
        elif kind < 0.75:
            parts.append(rng.choice(ODD))
        elif kind < 0.9:
            parts.append(rng.choice(ASTRAL) * rng.randint(1, 3))
        else:
            parts.append("".join(chr(rng.randint(0x20, 0x2FF)) for _ in range(rng.randint(1, 8))))
    return "".join(parts)


def _eol_mix(text: str, rng: random.Random) -> str:
    lines = re.split(r"\r\n|\r|\n", text)
    style = rng.random()
    if style < 0.35:
        return "\r".join(lines)
    if style < 0.6:
        return "\r\n".join(lines)
    out = [lines[0]]
    for line in lines[1:]:
        out.append(rng.choice(("\n", "\r", "\r\n")))
        out.append(line)
    return "".join(out)


def mutate(data: bytes, rng: random.Random, huge_line: int = 100_000) -> str:
    """``data`` with 1-4 random mutations, decoded (undecodable bytes become U+FFFD, so the
    result never holds a lone surrogate)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        size = len(buf)
        a = rng.randint(0, size)
        b = min(size, a + rng.randint(0, max(1, size // 10)))
        if kind < 0.2:  # delete a range
            del buf[a:b]
        elif kind < 0.35:  # duplicate a range elsewhere
            buf[rng.randint(0, size):rng.randint(0, size)] = bytes(buf[a:b])
        elif kind < 0.5:  # random bytes (invalid UTF-8 included)
            buf[a:a] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 16)))
        elif kind < 0.7:  # characters and snippets
            buf[a:a] = random_text(rng).encode("utf-8")
        elif kind < 0.8:  # a huge line, or deep nesting
            n = rng.randint(1_000, max(1_000, huge_line))
            line = rng.choice([f"x = '{'a' * n}'", "y = " + "(" * min(n, 20_000) + "1" + ")" * min(n, 20_000),
                               "z = [" + "1, " * (n // 3) + "]", "#" + "😀" * (n // 4)])
            buf[a:a] = (line + "\n").encode("utf-8")
        elif kind < 0.87:  # truncate
            del buf[a:]
        else:  # line ends: CR only, CRLF, or a mix
            text = _eol_mix(buf.decode("utf-8", errors="replace"), rng)
            buf = bytearray(text.encode("utf-8"))
    return buf.decode("utf-8", errors="replace")


# -- the client's own copy of a document (LSP's rules, independent of the server) --------------------
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def _units(text: str) -> int:
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


class Mirror:
    """The editor's copy of a document: LSP line ends, UTF-16 characters; a line past the end
    is the end of the text, a character past a line's end is that end."""

    def __init__(self, text: str) -> None:
        self.text = text

    def lines(self) -> list[str]:
        return _LINE.findall(self.text)

    def content(self, line: str) -> str:
        return line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith(("\r", "\n")) else line

    def offset(self, line: int, character: int) -> int:
        lines = self.lines()
        if line >= len(lines):
            return len(self.text)
        start = sum(len(x) for x in lines[:line])
        units = 0
        for index, char in enumerate(self.content(lines[line])):
            if units >= character:
                return start + index
            units += 2 if ord(char) > 0xFFFF else 1
        return start + len(self.content(lines[line]))

    def apply(self, start: tuple[int, int], end: tuple[int, int], new: str) -> None:
        i = self.offset(*start)
        j = max(i, self.offset(*end))
        self.text = self.text[:i] + new + self.text[j:]

    def position(self, rng: random.Random, out_of_range: float = 0.1) -> tuple[int, int]:
        """A position on a character boundary (UTF-16), else past a line's end or the
        document's end."""
        lines = self.lines()
        if not lines or rng.random() < out_of_range:
            return rng.choice([(len(lines) + rng.randint(0, 5), rng.randint(0, 5)),
                               (rng.randint(0, max(0, len(lines) - 1)), rng.randint(0, 10_000)),
                               (MAX_POSITION, MAX_POSITION)])
        line = rng.randrange(len(lines))
        content = self.content(lines[line])
        index = rng.randint(0, len(content))
        return line, _units(content[:index])

    def def_lines(self, limit: int) -> list[tuple[int, int]]:
        """(line, character) of the names of up to ``limit`` ``def`` lines, spread over
        the document."""
        found = []
        for number, line in enumerate(self.lines()):
            match = re.match(r"[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)", line)
            if match:
                found.append((number, _units(line[: match.start(1)])))
        if len(found) <= limit:
            return found
        step = len(found) / limit
        return [found[int(i * step)] for i in range(limit)]


# -- the run ------------------------------------------------------------------------------------------
@dataclass
class FuzzConfig:
    buffers: int = 200
    seed: int = 0
    actions: tuple[int, int] = (4, 10)
    """Actions per buffer (min, max)."""
    timeout: float = 30.0
    """Seconds an answer may take."""
    max_file_bytes: int = 30_000
    huge_line: int = 100_000
    resolve_limit: int = 40_000
    """codeAction/resolve (a jedi rename) only on documents up to this many characters."""


@dataclass
class Case:
    """One buffer's run: enough to replay it (:func:`replay`)."""

    seed: int
    index: int
    source: str
    root: str
    text: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    """What was sent, in order: ``{"kind": "notify"|"request"|"raw", ...}``."""
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FuzzStats:
    buffers: int = 0
    requests: int = 0
    notifications: int = 0
    undecodable_bodies: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Error answers by code (expected ones included: invalid params, parse errors)."""
    unanswered: int = 0
    crashes: int = 0
    internal_errors: int = 0
    unexpected_errors: int = 0
    desyncs: int = 0
    sync_checks: int = 0
    """Hovers on ``def`` lines compared between an edited document and its fresh twin
    (with a hover to compare: not None)."""
    failed_buffers: int = 0
    wall_s: float = 0.0

    def ok(self) -> bool:
        return not (self.unanswered or self.crashes or self.internal_errors or self.unexpected_errors
                    or self.desyncs)


class Fuzzer:
    """Drives one server (restarted when it dies) through the buffers of a :class:`FuzzConfig`."""

    def __init__(self, config: FuzzConfig, root: Path, start_client: Callable[[], Any],
                 files: list[Path] | None = None) -> None:
        self.config = config
        self.root = root
        self.start_client = start_client
        self.files = files if files is not None else corpus_files(config.max_file_bytes)
        self.stats = FuzzStats()
        self.client: RawLspClient | None = None
        self.case: Case | None = None

    # -- plumbing ---------------------------------------------------------------------------------
    async def ensure_client(self) -> RawLspClient:
        if self.client is None or not self.client.alive:
            if self.client is not None:
                await self.client.close()
            self.client = await self.start_client()
            await self.client.initialize(self.root)
        return self.client

    def fail(self, message: str) -> None:
        assert self.case is not None
        self.case.failures.append(message)

    async def notify(self, method: str, params: Any) -> None:
        assert self.case is not None and self.client is not None
        self.case.messages.append({"kind": "notify", "method": method, "params": params})
        self.stats.notifications += 1
        await self.client.notify(method, params)

    async def request(self, method: str, params: Any, expect_error: bool = False) -> Any:
        """Send a request; check that it is answered, with an error exactly when
        ``expect_error`` (-32602); returns the result (None on error or failure)."""
        assert self.case is not None and self.client is not None
        self.case.messages.append({"kind": "request", "method": method, "params": params})
        self.stats.requests += 1
        try:
            answer = await self.client.request(method, params, self.config.timeout)
        except Unanswered as exc:
            self.stats.unanswered += 1
            self.fail(str(exc))
            return None
        except ServerDied as exc:
            self.stats.crashes += 1
            self.fail(str(exc))
            raise
        if answer.error is not None:
            code = str(answer.error.get("code"))
            self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
            if code == "-32603":
                self.stats.internal_errors += 1
                self.fail(f"{method}: internal error {answer.error.get('message')}")
            elif not expect_error or code != "-32602":
                self.stats.unexpected_errors += 1
                self.fail(f"{method}: unexpected error {answer.error}")
            return None
        if expect_error:
            self.stats.unexpected_errors += 1
            self.fail(f"{method}: a result for invalid params {params}")
        return answer.result

    async def undecodable(self, body: bytes) -> None:
        assert self.case is not None and self.client is not None
        self.case.messages.append({"kind": "raw", "body": body.hex()})
        self.stats.undecodable_bodies += 1
        self.stats.requests += 1
        try:
            reply = await self.client.raw_request(body, self.config.timeout)
        except Unanswered as exc:
            self.stats.unanswered += 1
            self.fail(str(exc))
            return
        except ServerDied as exc:
            self.stats.crashes += 1
            self.fail(str(exc))
            raise
        code = str((reply.get("error") or {}).get("code"))
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        if code not in ("-32700", "-32600"):
            self.stats.unexpected_errors += 1
            self.fail(f"undecodable body {body[:40]!r}: answered {reply}")

    # -- one buffer -------------------------------------------------------------------------------
    async def run_buffer(self, index: int) -> Case:
        """Mutate, open, drive and check one buffer; returns its case (failures empty when
        all went well)."""
        rng = random.Random(f"{self.config.seed}:{index}")
        source = rng.choice(self.files)
        text = mutate(source.read_bytes(), rng, self.config.huge_line)
        self.case = case = Case(self.config.seed, index, str(source), str(self.root), text)
        self.stats.buffers += 1
        try:
            await self.ensure_client()
            await self.drive(rng, text, f"{self.root.as_uri()}/fuzz_{index}.py")
        except ServerDied:
            pass
        if case.failures:
            self.stats.failed_buffers += 1
        return case

    async def drive(self, rng: random.Random, text: str, uri: str) -> None:
        mirror = Mirror(text)
        version = 1
        await self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": version, "text": text}})
        in_sync = True
        for _ in range(rng.randint(*self.config.actions)):
            kind = rng.random()
            if kind < 0.3:
                version += 1
                in_sync = await self.edit(rng, mirror, uri, version) and in_sync
            elif kind < 0.5:
                line, character = self.position(rng, mirror)
                await self.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                          "position": {"line": line, "character": character}},
                                   expect_error=not valid(line, character))
            elif kind < 0.68:
                await self.code_action(rng, mirror, uri)
            elif kind < 0.8:
                await self.search(rng)
            elif kind < 0.88:
                await self.undecodable(rng.choice(UNDECODABLE))
            else:
                line, character = self.position(rng, mirror)
                await self.request("textDocument/hover", {"textDocument": {"uri": rng.choice(
                    [uri, uri + "x", "untitled:Untitled-1", "file:///%ZZ", "::"])},
                    "position": {"line": line, "character": character}},
                    expect_error=not valid(line, character))
        if in_sync:
            await self.check_sync(mirror, uri)
        await self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def position(self, rng: random.Random, mirror: Mirror) -> tuple[int, int]:
        if rng.random() < 0.08:
            return rng.choice([(-1, 0), (0, -1), (MAX_POSITION + 1, 0), (0, 2**40), (-(2**40), 5)])
        return mirror.position(rng)

    async def edit(self, rng: random.Random, mirror: Mirror, uri: str, version: int) -> bool:
        """One didChange; returns False when it was invalid (the server drops it)."""
        if rng.random() < 0.05:  # invalid: the client's copy and the server's part ways
            await self.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": {"line": -1, "character": 0},
                                              "end": {"line": 0, "character": 0}}, "text": "x"}]})
            return False
        changes: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.08:
                new = mutate(mirror.text.encode("utf-8"), rng, self.config.huge_line)
                mirror.text = new
                changes.append({"text": new})
                continue
            start = mirror.position(rng, out_of_range=0.15)
            end = start
            if rng.random() < 0.6:
                end = mirror.position(rng, out_of_range=0.15)
                if end < start:
                    start, end = end, start
            new = random_text(rng) if rng.random() < 0.7 else ""
            mirror.apply(start, end, new)
            changes.append({"range": {"start": {"line": start[0], "character": start[1]},
                                      "end": {"line": end[0], "character": end[1]}}, "text": new})
        await self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                     "contentChanges": changes})
        return True

    async def code_action(self, rng: random.Random, mirror: Mirror, uri: str) -> None:
        start, end = self.position(rng, mirror), self.position(rng, mirror)
        if rng.random() < 0.5:
            defs = mirror.def_lines(20)
            if defs:
                start = end = rng.choice(defs)
        actions = await self.request("textDocument/codeAction", {
            "textDocument": {"uri": uri},
            "range": {"start": {"line": start[0], "character": start[1]},
                      "end": {"line": end[0], "character": end[1]}},
            "context": {"diagnostics": []}}, expect_error=not (valid(*start) and valid(*end)))
        if actions and len(mirror.text) <= self.config.resolve_limit and rng.random() < 0.3:
            action = dict(rng.choice(actions))
            if rng.random() < 0.3 and isinstance(action.get("data"), dict):
                action["data"] = {**action["data"], "line": rng.choice([-1, 10**9, MAX_POSITION]),
                                  "character": rng.choice([-5, 10**6])}
            await self.request("codeAction/resolve", action)

    async def search(self, rng: random.Random) -> None:
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))
        if rng.random() < 0.3:
            query += rng.choice(["\ud800", "\udfff", "a\udc80b", "\ud83d"])
        if rng.random() < 0.5:
            await self.request("workspace/symbol", {"query": query})
            return
        arguments: Any = [{"query": query, "k": rng.choice([1, 5, 0, 500])}]
        invalid = rng.random() < 0.2
        if invalid:
            arguments = rng.choice([[3], [{"query": 5}], [{"query": "x", "k": "many"}], [{"k": 2}]])
        await self.request("workspace/executeCommand", {"command": "pathfusion.search", "arguments": arguments},
                           expect_error=invalid)

    async def check_sync(self, mirror: Mirror, uri: str) -> None:
        """The hover on every ``def`` line (up to 5) of the edited document must equal the
        hover on a fresh document holding the client's copy — and, when that copy has lone
        CR line ends, the hover on a twin whose lone CRs are LFs (same lines, same
        characters, same bytes but for the line ends), which catches a server that splits
        lines otherwise.  (CRLF is left alone: tree-sitter's error recovery may differ on a
        broken text when its line ends are a byte longer, which is no desynchronisation.)"""
        defs = mirror.def_lines(5)
        if not defs:
            return
        twins = {"fresh": mirror.text}
        lf_text = re.sub(r"\r(?!\n)", "\n", mirror.text)
        if lf_text != mirror.text:
            twins["lf"] = lf_text
        for name, text in twins.items():
            await self.notify("textDocument/didOpen", {"textDocument": {
                "uri": f"{uri[:-3]}_{name}.py", "languageId": "python", "version": 1, "text": text}})
        for line, character in defs:
            position = {"line": line, "character": character}
            got = await self.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": position})
            for name in twins:
                want = await self.request("textDocument/hover", {
                    "textDocument": {"uri": f"{uri[:-3]}_{name}.py"}, "position": position})
                self.stats.sync_checks += want is not None
                if got != want:
                    self.stats.desyncs += 1
                    self.fail(f"desync at {line}:{character}: edited {str(got)[:300]} != {name} twin "
                              f"{str(want)[:300]}")
                    break
            else:
                continue
            break
        for name in twins:
            await self.notify("textDocument/didClose", {"textDocument": {"uri": f"{uri[:-3]}_{name}.py"}})

    # -- all buffers ------------------------------------------------------------------------------
    async def run(self, on_case: Callable[[Case], None] | None = None,
                  deadline: float | None = None) -> FuzzStats:
        """Every buffer of the configuration (until ``deadline``, a ``time.monotonic()``);
        ``on_case`` sees each failing case."""
        started = time.monotonic()
        try:
            for index in range(self.config.buffers):
                if deadline is not None and time.monotonic() > deadline:
                    break
                case = await self.run_buffer(index)
                if case.failures and on_case is not None:
                    on_case(case)
        finally:
            self.stats.wall_s = round(time.monotonic() - started, 1)
            if self.client is not None:
                code = await self.client.close()
                if code not in (0, None):
                    self.stats.crashes += 1
        return self.stats


def valid(line: int, character: int) -> bool:
    """Whether an LSP ``Position`` admits these numbers."""
    return 0 <= line <= MAX_POSITION and 0 <= character <= MAX_POSITION


async def replay(case: dict[str, Any], root: Path, start_client: Callable[[], Any],
                 timeout: float = 30.0) -> list[str]:
    """Send a recorded case's messages to a fresh server (its workspace root replaced by
    ``root``); returns what went wrong (unanswered requests, a death)."""
    problems: list[str] = []
    client = await start_client()
    try:
        await client.initialize(root)
        for message in case["messages"]:
            if message["kind"] == "raw":
                try:
                    await client.raw_request(bytes.fromhex(message["body"]), timeout)
                except Unanswered as exc:
                    problems.append(str(exc))
                continue
            params = json.loads(json.dumps(message["params"]).replace(
                json.dumps(Path(case["root"]).as_uri())[1:-1], json.dumps(root.as_uri())[1:-1]))
            if message["kind"] == "notify":
                await client.notify(message["method"], params)
                continue
            try:
                answer = await client.request(message["method"], params, timeout)
            except Unanswered as exc:
                problems.append(str(exc))
                continue
            if answer.error is not None and answer.error.get("code") == -32603:
                problems.append(f"{message['method']}: internal error {answer.error.get('message')}")
    except ServerDied as exc:
        problems.append(str(exc))
    finally:
        code = await client.close()
        if code not in (0, None):
            problems.append(f"the server exited with status {code}")
    return problems
