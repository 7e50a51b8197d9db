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
