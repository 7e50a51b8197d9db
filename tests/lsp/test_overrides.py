"""A method whose name its class hierarchy fixes is not offered a rename
(:mod:`pathfusion.server.overrides`, applied by :func:`pathfusion.server.rename_safety.clashes`)."""

from __future__ import annotations

from pathfusion.server.code2vec import Suggestion
from pathfusion.server.parsing import Document
from pathfusion.server.rename_safety import clashes, safe_suggestion

MODULE = '''\
import socketserver
from errors import Exception as Problem


class Server:
    def server_activate(self):
        self.socket.listen(5)

    def serve(self):
        self.server_activate()


class UDPServer(Server):
    def server_activate(self):
        pass

    def send(self, data):
        return self.socket.send(data)


class Quiet(UDPServer):
    if True:
        timeout = 1
    try:
        def close_request(self, request):
            pass
    except NameError:
        pass


class Deeper(Quiet):
    def timeout(self):
        return 2


class Other:
    def server_activate(self):
        return None


class Failure(Exception):
    def with_traceback(self, tb):
        return self

    def describe(self):
        return str(self)


class Local(Problem):
    def with_traceback(self, tb):
        return self


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"ok")
'''


def func(qualname: str) -> object:
    return next(f for f in Document(MODULE).functions() if f.qualname == qualname)


def reason(qualname: str) -> str | None:
    found = clashes(MODULE, func(qualname), ["brand_new_name"])  # type: ignore[arg-type]
    return found.get("brand_new_name")


def test_overrides_in_the_file_keep_their_names_both_ways() -> None:
    assert reason("UDPServer.server_activate") == (
        "`Server.server_activate` has the same name in the class hierarchy: renamed, it would stop overriding")
    assert reason("Server.server_activate") is not None and "`UDPServer.server_activate`" in reason(
        "Server.server_activate")  # a subclass overrides it
    assert reason("Deeper.timeout") is not None and "`Quiet.timeout`" in reason("Deeper.timeout")  # inside an `if`
    # methods no related class has, and a class outside the hierarchy with the same method name
    assert reason("Server.serve") is None and reason("UDPServer.send") is None
    assert reason("Other.server_activate") is None
    assert reason("Quiet.close_request") is None  # inside a `try`: its own, nothing above or below has it


def test_builtin_bases_are_read_but_not_a_name_the_module_binds() -> None:
    assert reason("Failure.with_traceback") is not None and "`Exception.with_traceback`" in reason("Failure.with_traceback")
    assert reason("Failure.describe") is None
    assert reason("Local.with_traceback") is None  # `Problem` is imported, not the builtin


def test_a_fixed_method_is_offered_nothing() -> None:
    method = func("UDPServer.server_activate")
    suggestion = Suggestion("UDPServer.server_activate", "server_activate", 14, "server|activate",
                            [("listen", "listen", 0.5), ("server_activate", "server|activate", 0.2)], 2)
    safe = safe_suggestion(suggestion, MODULE, method, top_k=5)  # type: ignore[arg-type]
    assert safe.suggestions == [("server_activate", "server|activate", 0.2)] and safe.current_rank == 1


STDLIB_BASES = '''\
import socketserver
import threading as th
from json import JSONEncoder
from asyncio import Protocol
from django.views import View
from .base import Plugin


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"ok")

    def reply(self, data):
        self.request.sendall(data)


class Worker(th.Thread):
    def run(self):
        self.work()


class Encoder(JSONEncoder):
    def default(self, o):
        return sorted(o)


class Echo(Protocol):
    def data_received(self, data):
        self.transport.write(data)


class Page(View):
    def get(self, request):
        return None


class Local(Plugin):
    def activate(self):
        return None
'''


def test_standard_library_bases_are_read_from_their_source() -> None:
    """Bases of the standard library are read without importing them, through re-exports
    (``json``'s ``from .encoder import JSONEncoder``, ``asyncio``'s ``from .protocols import *``),
    module aliases and attribute paths; another package's or the project's own are unknown."""
    by_name = {f.qualname: f for f in Document(STDLIB_BASES).functions()}

    def why(qualname: str) -> str | None:
        return clashes(STDLIB_BASES, by_name[qualname], ["brand_new_name"]).get("brand_new_name")

    assert "`socketserver.BaseRequestHandler.handle`" in (why("Handler.handle") or "")
    assert "`threading.Thread.run`" in (why("Worker.run") or "")
    assert "`json.JSONEncoder.default`" in (why("Encoder.default") or "")
    assert "`asyncio.Protocol.data_received`" in (why("Echo.data_received") or "")
    assert why("Handler.reply") is None  # no base has it
    assert why("Page.get") is None and why("Local.activate") is None  # not read: another package, a relative import


def test_class_members_follow_bases_and_loaded_c_classes() -> None:
    from pathfusion.server.stdlib_classes import class_members

    handler = class_members("http.server", "BaseHTTPRequestHandler")
    assert handler is not None and {"handle", "handle_one_request", "send_response"} <= handler  # its own and its base's
    assert "send_head" not in handler  # SimpleHTTPRequestHandler's, a subclass
    buffered = class_members("io", "BufferedIOBase")  # io.py derives it from _io's C class
    assert buffered is not None and {"writable", "seekable", "read"} <= buffered
    assert class_members("django.views", "View") is None and class_members("json", "NoSuchClass") is None
