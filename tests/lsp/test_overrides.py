"""A method whose name its class hierarchy fixes is not offered a rename
(:mod:`pathfusion.server.overrides`, applied by :func:`pathfusion.server.rename_safety.clashes`)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from lsprotocol import types

from pathfusion.server import subclasses
from pathfusion.server.base_classes import origin_of
from pathfusion.server.code2vec import Suggestion
from pathfusion.server.feature_hover import hover_markdown
from pathfusion.server.feature_rename import RenameRefused, compute_rename
from pathfusion.server.lsp_worker import Snapshot
from pathfusion.server.parsing import Document, FunctionInfo, Position
from pathfusion.server.rename_safety import clashes, safe_suggestion
from pathfusion.server.settings import Settings

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


def method_in(text: str, qualname: str) -> FunctionInfo:
    return next(f for f in Document(text).functions() if f.qualname == qualname)


def func(qualname: str) -> FunctionInfo:
    return method_in(MODULE, qualname)


def reason(qualname: str) -> str | None:
    found = clashes(MODULE, func(qualname), ["brand_new_name"])
    return found.get("brand_new_name")


def test_overrides_in_the_file_keep_their_names_both_ways() -> None:
    assert reason("UDPServer.server_activate") == (
        "`Server.server_activate` has the same name in the class hierarchy: renamed, one would no longer override the other")
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
    safe = safe_suggestion(suggestion, MODULE, method, top_k=5)
    assert safe.suggestions == [("server_activate", "server|activate", 0.2)] and safe.current_rank == 1
    # the hover says why instead of showing nothing (the model preferred `listen`)
    assert hover_markdown(safe, 0.0) == ("**pathfusion** — `server_activate` keeps its name: `Server.server_activate` "
                                         "has the same name in the class hierarchy: renamed, one would no longer override the other.")
    free = safe_suggestion(replace(suggestion, qualname="UDPServer.send", name="send", current_label="send"), MODULE,
                           func("UDPServer.send"), top_k=5)
    assert free.kept is None and hover_markdown(free, 0.0) is not None and "keeps its name" not in (
        hover_markdown(free, 0.0) or "")


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
    def why(qualname: str) -> str | None:
        return clashes(STDLIB_BASES, method_in(STDLIB_BASES, qualname), ["brand_new_name"]).get("brand_new_name")

    assert "`socketserver.BaseRequestHandler.handle`" in (why("Handler.handle") or "")
    assert "`threading.Thread.run`" in (why("Worker.run") or "")
    assert "`json.JSONEncoder.default`" in (why("Encoder.default") or "")
    assert "`asyncio.Protocol.data_received`" in (why("Echo.data_received") or "")
    assert why("Handler.reply") is None  # no base has it
    assert why("Page.get") is None and why("Local.activate") is None  # not read: another package, a relative import


def test_class_members_follow_bases_and_loaded_c_classes() -> None:
    from pathfusion.server.base_classes import class_members

    handler = class_members("http.server", "BaseHTTPRequestHandler")
    assert handler is not None and {"handle", "handle_one_request", "send_response"} <= handler  # its own and its base's
    assert "send_head" not in handler  # SimpleHTTPRequestHandler's, a subclass
    buffered = class_members("io", "BufferedIOBase")  # io.py derives it from _io's C class
    assert buffered is not None and {"writable", "seekable", "read"} <= buffered
    assert class_members("django.views", "View") is None and class_members("json", "NoSuchClass") is None


# -- bases in the project's other files and in installed packages -------------------------------
BASE = '''\
class Plugin:
    def activate(self):
        return None

    def describe(self):
        return "plugin"

    def helper(self):
        return None


class Unrelated:
    def describe(self):
        return None
'''

LOUDER = '''\
from app.plugins.echo import Loud as Base


class Louder(Base):
    def helper(self):
        return 2
'''

ECHO = '''\
import threading

from ..base import Plugin
from app import base


class Echo(Plugin):
    def activate(self):
        return self.reply()

    def reply(self):
        return "echo"


class Loud(base.Plugin):
    def describe(self):
        return "LOUD"


class Worker(threading.Thread):
    def process(self):
        return 1
'''

FAKE = '''\
from app.base import Plugin
from fancylib import View


class Fake(Plugin):
    def activate(self):
        return None


class Page(View):
    def get(self, request):
        return None

    def render(self):
        return None
'''


def _project(tmp_path: Path) -> Path:
    """A src-layout project: ``app.base`` and ``app.plugins.echo``, a test beside ``src``,
    and an installed package ``fancylib`` (a star re-export) in a directory of its own."""
    (tmp_path / "proj" / "src" / "app" / "plugins").mkdir(parents=True)
    (tmp_path / "proj" / "tests").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    for folder in ("src/app", "src/app/plugins"):
        (tmp_path / "proj" / folder / "__init__.py").write_text("")
    (tmp_path / "proj" / "src" / "app" / "base.py").write_text(BASE)
    (tmp_path / "proj" / "src" / "app" / "plugins" / "echo.py").write_text(ECHO)
    (tmp_path / "proj" / "tests" / "test_fake.py").write_text(FAKE)
    (tmp_path / "proj" / "src" / "app" / "plugins" / "louder.py").write_text(LOUDER)
    (tmp_path / "site" / "fancylib").mkdir(parents=True)
    (tmp_path / "site" / "fancylib" / "__init__.py").write_text("from ._views import *\n")
    (tmp_path / "site" / "fancylib" / "_views.py").write_text("class View:\n    def get(self, request):\n        pass\n")
    return tmp_path / "proj"


def _why(file: Path, qualname: str, name: str = "brand_new_name") -> str | None:
    text = file.read_text()
    return clashes(text, method_in(text, qualname), [name], origin_of(str(file))).get(name)


def test_bases_in_the_project_and_installed_packages_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    echo = project / "src" / "app" / "plugins" / "echo.py"
    fake = project / "tests" / "test_fake.py"
    assert origin_of(str(echo)).package == "app.plugins"
    # a relative import, a module imported from the package, the src layout seen from tests/
    assert "`app.base.Plugin.activate`" in (_why(echo, "Echo.activate") or "")
    assert "`app.base.Plugin.describe`" in (_why(echo, "Loud.describe") or "")
    assert "`app.base.Plugin.activate`" in (_why(fake, "Fake.activate") or "")
    assert "`fancylib.View.get`" in (_why(fake, "Page.get") or "")  # an installed package, through its re-export
    assert _why(echo, "Echo.reply") is None and _why(fake, "Page.render") is None  # no base has them
    # without a file, relative imports mean nothing: the method stays renamable
    text = echo.read_text()
    assert clashes(text, method_in(text, "Echo.activate"), ["brand_new_name"]) == {}


def test_a_method_is_not_renamed_onto_a_member_of_a_base_in_another_module(tmp_path: Path) -> None:
    echo = _project(tmp_path) / "src" / "app" / "plugins" / "echo.py"
    assert _why(echo, "Echo.reply", "describe") == (
        "a member of the base class `app.base.Plugin`: renamed so, it would override it")
    assert "`threading.Thread`" in (_why(echo, "Worker.process", "start") or "")  # it would replace Thread.start
    assert _why(echo, "Worker.process", "process_all") is None


def test_a_base_edited_on_disk_is_read_again(tmp_path: Path) -> None:
    project = _project(tmp_path)
    echo, base = project / "src" / "app" / "plugins" / "echo.py", project / "src" / "app" / "base.py"
    assert _why(echo, "Echo.reply") is None
    base.write_text(BASE.replace("\n\nclass Unrelated", "\n    def reply(self):\n        return None\n\n\nclass Unrelated"))
    os.utime(base, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # a later mtime, whatever the clock's grain
    assert "`app.base.Plugin.reply`" in (_why(echo, "Echo.reply") or "")


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    project = _project(tmp_path)
    echo, base = project / "src" / "app" / "plugins" / "echo.py", project / "src" / "app" / "base.py"
    base.unlink()
    os.mkfifo(base)  # a read would block forever
    assert _why(echo, "Echo.activate") is None
    base.unlink()
    base.symlink_to("/dev/zero")  # a read would never end
    assert _why(echo, "Echo.activate") is None


def test_a_method_that_subclasses_in_other_files_override_keeps_its_name(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Subclasses are found in the project's other files by what their bases resolve to
    (relative imports, aliases, subclasses of subclasses), not by a class's simple name."""
    monkeypatch.setattr(subclasses, "REFRESH_S", 0.0)  # files checked for changes at each lookup
    project = _project(tmp_path)
    base = project / "src" / "app" / "base.py"
    assert origin_of(str(base)).project == str(project)
    assert _why(base, "Plugin.activate") in ("`app.plugins.echo.Echo.activate` has the same name in the class "
                                             "hierarchy: renamed, one would no longer override the other",
                                             "`tests.test_fake.Fake.activate` has the same name in the class "
                                             "hierarchy: renamed, one would no longer override the other")
    assert "`app.plugins.louder.Louder.helper`" in (_why(base, "Plugin.helper") or "")  # Louder(Loud(Plugin)), aliased
    assert "`app.plugins.echo.Loud.describe`" in (_why(base, "Plugin.describe") or "")
    assert _why(base, "Unrelated.describe") is None  # no subclass anywhere, though other classes have `describe`
    (project / "src" / "app" / "plugins" / "louder.py").unlink()
    assert _why(base, "Plugin.helper") is None  # the subclass is gone


def test_a_hover_does_not_wait_for_the_subclasses(tmp_path: Path) -> None:
    """A hover waits ``budget_s`` at most: meanwhile the method is offered nothing, with the
    reason; the reading goes on in the background and the next hover has the answer."""
    base = _project(tmp_path) / "src" / "app" / "base.py"
    text = base.read_text()
    method = method_in(text, "Plugin.helper")
    origin = origin_of(str(base))
    with subclasses._LOCK:  # the background reading cannot finish while the hover asks
        assert clashes(text, method, ["brand_new_name"], origin, budget_s=0.0) == {
            "brand_new_name": "its subclasses in the project's other files are still being read"}
    assert "`app.plugins.louder.Louder.helper`" in clashes(text, method, ["brand_new_name"], origin, budget_s=10.0)[
        "brand_new_name"]


def test_applying_a_rename_of_an_overridden_method_is_refused(tmp_path: Path) -> None:
    """The code action's resolve (the rename about to be applied) checks the hierarchy across
    the project's files too, waiting for the subclasses: jedi would rename the base's method
    and its calls, not ``Echo.activate``."""
    project = _project(tmp_path)
    base = project / "src" / "app" / "base.py"
    text = base.read_text()
    snapshot = Snapshot(base.as_uri(), 1, text)
    with pytest.raises(RenameRefused, match="one would no longer override the other"):
        compute_rename(snapshot, Position(1, 9), "brand_new_name", [str(project)], Settings(), {})
    edit = compute_rename(snapshot, Position(12, 9), "other_name", [str(project)], Settings(), {})  # Unrelated.describe
    changes = [c for c in edit.document_changes or [] if isinstance(c, types.TextDocumentEdit)]
    assert [c.text_document.uri for c in changes] == [base.as_uri()]


def test_odd_paths_give_an_origin_without_failing(tmp_path: Path) -> None:
    missing = origin_of(str(tmp_path / "gone" / "x.py"))
    assert missing.module == "x" and missing.package is None and missing.project is None
    (tmp_path / "my-pkg").mkdir()
    (tmp_path / "my-pkg" / "__init__.py").write_text("")
    (tmp_path / "my-pkg" / "mod.py").write_text("from .base import Plugin\n\nclass P(Plugin):\n    def run(self):\n        pass\n")
    odd = origin_of(str(tmp_path / "my-pkg" / "mod.py"))
    assert odd.package == "my-pkg"  # not a module name Python could import: nothing is looked for
    assert _why(tmp_path / "my-pkg" / "mod.py", "P.run") is None


def test_a_method_is_not_renamed_onto_a_member_of_a_subclass_in_another_file(tmp_path: Path) -> None:
    base = _project(tmp_path) / "src" / "app" / "base.py"
    base.write_text(BASE.replace("\n\nclass Unrelated", "\n    def setup(self):\n        return None\n\n\nclass Unrelated"))
    assert _why(base, "Plugin.setup") is None  # no subclass defines it
    assert _why(base, "Plugin.setup", "reply") == (
        "a member of the subclass `app.plugins.echo.Echo`: renamed so, it would be overridden")
    assert _why(base, "Plugin.setup", "render") is None


def test_the_projects_own_virtual_environment_is_read(tmp_path: Path) -> None:
    """A server that does not run in the project's environment (pipx) still reads the bases
    installed there."""
    project = _project(tmp_path)
    site = project / ".venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (project / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "site" / "fancylib").rename(site / "fancylib")
    assert "`fancylib.View.get`" in (_why(project / "tests" / "test_fake.py", "Page.get") or "")
