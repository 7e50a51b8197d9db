"""The members of the classes a module's classes derive from, read from source, never imported.

Why: a method that overrides one of a base class keeps its name, and a method must not be
renamed onto a base's member (:mod:`pathfusion.server.overrides`).  The bases users derive
from live in three places: the standard library (``threading.Thread.run``,
``unittest.TestCase.setUp``), the project's other files (``from .base import Plugin``) and
installed packages (``torch.nn.Module.forward``, ``django.views.View.get``).  Their source is
on disk, so a class is found by parsing its module's file — following re-exports such as
``json/__init__.py``'s ``from .encoder import JSONEncoder`` and star imports — and its bases
the same way, without running anything: importing arbitrary modules from a language server
is not an option (``antigravity`` opens a browser, a project's module may start a server).

Where a module is looked for (:class:`ModulePath`, :func:`origin_of`): the directory above
the document's top package, the project's directory and its ``src/`` (found by
``pyproject.toml``, ``setup.py``, ``setup.cfg`` or ``.git``), the ``site-packages`` of a virtual
environment in the project folder (``.venv``, ``venv``…), then the server's ``sys.path`` —
the interpreter the editor runs the server with is the project's (the VS Code client takes the
Python extension's active one), so its entries hold the standard library and the project's
installed packages.  A ``.pyi`` stub stands in where a package ships no ``.py``.  A class
implemented in C (``_io._BufferedIOBase``) is read from the module object only when the
interpreter has already loaded it.

Files change while the server runs (the user edits ``base.py``): parsed trees and answers
are kept with the size and modification time of every file they read and recomputed when
one differs; a module that was not found is looked for again after :data:`RECHECK_S`.
Only regular files up to :data:`MAX_SOURCE_BYTES` are read (a link to ``/dev/zero`` is not).

A class that cannot be read (a C module not loaded, a base computed by an expression) is
unknown (``None``): the caller then cannot tell, and says so.
"""

from __future__ import annotations

import ast
import builtins
import os
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from .workspace import WorkspaceFilter

MAX_DEPTH = 12
"""How many re-exports and bases deep a class is followed."""
MAX_SOURCE_BYTES = 4_000_000
"""The largest module file read (torch's ``_C/__init__.pyi``, the largest of its kind, is ≈ 0.5 MB)."""
RECHECK_S = 5.0
"""How long a module that was not found, or an answer that needed one, is kept."""
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
VIRTUAL_ENVIRONMENTS = (".venv", "venv", "env", ".env")
_CACHE_SIZE = 512
_LOCK = threading.RLock()
"""The caches below are filled from worker threads (the analysis thread, the rename thread)."""

K = TypeVar("K")
V = TypeVar("V")
Stamp = tuple[int, int]
"""A file's (modification time in ns, size): read again when it changes."""


@dataclass(frozen=True)
class ModulePath:
    """The directories a module is looked for in, in order (what ``sys.path`` is to an import)."""

    roots: tuple[str, ...]

    @staticmethod
    def environment() -> ModulePath:
        """The server's ``sys.path``: the standard library and the installed packages."""
        return ModulePath(_environment_roots())

    def find(self, module: str) -> Path | None:
        """The source file of ``module`` (a package's ``__init__``), or None."""
        if not all(part.isidentifier() for part in module.split(".")):
            return None
        key = (self.roots, module)
        with _LOCK:
            hit = _FOUND.get(key)
            if hit is not None:
                found, when = hit
                if found is not None and source_stamp(found) is not None:
                    return found
                if found is None and time.monotonic() - when < RECHECK_S:
                    return None
            found = self._search(module)
            _remember(_FOUND, key, (found, time.monotonic()))
            return found

    def _search(self, module: str) -> Path | None:
        relative = Path(*module.split("."))
        for root in self.roots:
            base = Path(root, relative)
            for candidate in (base / "__init__.py", base.with_suffix(".py"), base / "__init__.pyi", base.with_suffix(".pyi")):
                if source_stamp(candidate) is not None:
                    return candidate
        return None


@dataclass(frozen=True)
class Origin:
    """Where a document's module sits: what its relative imports mean (``package``, as
    ``__package__``; None outside a package or for a document without a file), where its
    imports are looked for, its own dotted name, and the project folder it belongs to (None:
    none found, or the file is not one the indexer would keep, such as an installed package's)."""

    package: str | None
    path: ModulePath = field(default_factory=ModulePath.environment)
    module: str | None = None
    project: str | None = None


@lru_cache(maxsize=4096)  # a project's files, when its subclasses are looked for
def origin_of(file: str | None) -> Origin:
    """The :class:`Origin` of the document at ``file`` (None: an unsaved document, whose
    imports are looked for on ``sys.path`` only)."""
    environment = _environment_roots()
    if file is None:
        return Origin(None, ModulePath(environment))
    here = Path(os.path.abspath(file))
    parts = [] if here.name == "__init__.py" else [here.stem]
    folder = here.parent
    while source_stamp(folder / "__init__.py") is not None and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    roots = [str(folder)]
    project = next((up for up in [here.parent, *here.parent.parents][:20]
                    if any((up / marker).exists() for marker in PROJECT_MARKERS)), None)
    if project is not None:
        roots += [str(project), str(project / "src"), *project_environments(project)]
    roots += environment
    package = ".".join(parts if here.name == "__init__.py" else parts[:-1]) or None
    path = ModulePath(tuple(dict.fromkeys(r for r in roots if os.path.isdir(r))))
    kept = project is not None and _kept_by_indexer(project, here)
    return Origin(package, path, ".".join(parts) or None, str(project) if kept else None)


def project_environments(project: Path) -> list[str]:
    """The ``site-packages`` of the project's own virtual environments (``.venv``, ``venv``,
    ``env``, ``.env`` holding a ``pyvenv.cfg``).  Why, beside ``sys.path``: a server installed
    on its own (pipx, an editor's bundled environment) does not run in the project's
    environment, whose installed packages hold the bases (Django's ``View``)."""
    found: list[str] = []
    for name in VIRTUAL_ENVIRONMENTS:
        folder = project / name
        if (folder / "pyvenv.cfg").is_file():
            found += sorted(str(site) for site in folder.glob("lib/python3*/site-packages") if site.is_dir())
            found += [str(site) for site in [folder / "Lib" / "site-packages"] if site.is_dir()]  # Windows
    return found


def _kept_by_indexer(project: Path, file: Path) -> bool:
    """The indexer's rules (.gitignore, no virtual environments): the project's own files."""
    return WorkspaceFilter(project).check(file) is None


def _environment_roots() -> tuple[str, ...]:
    return tuple(dict.fromkeys(os.path.abspath(entry or os.curdir) for entry in sys.path
                               if os.path.isdir(entry or os.curdir)))


# -- classes and their members -------------------------------------------------------------------
@dataclass
class _Answer:
    members: frozenset[str] | None
    read: list[tuple[Path, Stamp]]
    missed: bool
    """Whether a module was not found (the answer is then kept :data:`RECHECK_S` only)."""
    when: float


def class_members(module: str, name: str, path: ModulePath | None = None) -> frozenset[str] | None:
    """Every member of the class ``module.name``, inherited ones included, looked for on
    ``path`` (default: the server's ``sys.path``); None when it cannot be read (no such
    module or class, a C class whose module is not loaded)."""
    path = path if path is not None else ModulePath.environment()
    key = (module, name, path.roots)
    with _LOCK:
        hit = _ANSWERS.get(key)
        if hit is not None and _still_valid(hit):
            return hit.members
        answer = _Answer(None, [], False, time.monotonic())
        answer.members = _Reading(path, answer).members(module, name, MAX_DEPTH)
        _remember(_ANSWERS, key, answer)
        return answer.members


def defining_class(module: str, name: str, path: ModulePath | None = None) -> tuple[str, str] | None:
    """(module, name) of the ``class`` statement that ``module.name`` stands for, through
    re-exports and aliases (``app.Plugin`` → ``app.base.Plugin``); None when not found."""
    path = path if path is not None else ModulePath.environment()
    with _LOCK:
        return _Reading(path, _Answer(None, [], False, 0.0)).definition(module, name, MAX_DEPTH)


def parsed(file: Path, module: str) -> tuple[ast.Module | None, dict[str, tuple[str, str]]]:
    """The tree of ``file`` read as ``module`` and its imports, kept while it is unchanged."""
    with _LOCK:
        source = _source(file, module)
        return (source.tree, source.imports()) if source is not None else (None, {})


def _still_valid(answer: _Answer) -> bool:
    if answer.missed and time.monotonic() - answer.when >= RECHECK_S:
        return False
    return all(source_stamp(path) == stamp for path, stamp in answer.read)


@dataclass(frozen=True)
class _Unread:
    """A class whose module has no source to read (maybe a C module the interpreter loaded)."""

    module: str
    name: str


@dataclass
class _Reading:
    """One lookup's walk through modules, recording what it read.  Each (module, name) is
    looked up once per walk: star imports re-export one another (torch's ``__init__``), and
    without that, a name that none of them defines would be looked for along every path."""

    path: ModulePath
    answer: _Answer
    visited: set[tuple[str, str]] = field(default_factory=set)

    def members(self, module: str, name: str, depth: int) -> frozenset[str] | None:
        found = self._follow(module, name, depth)
        if isinstance(found, _Unread):
            return _loaded_members(found.module, found.name)
        return self._class_body_members(*found) if found is not None else None

    def definition(self, module: str, name: str, depth: int) -> tuple[str, str] | None:
        found = self._follow(module, name, depth)
        return (found[0].module, found[1].name) if isinstance(found, tuple) else None

    def _follow(self, module: str, name: str, depth: int) -> tuple[_Source, ast.ClassDef, int] | _Unread | None:
        """The ``class`` statement that ``module.name`` stands for (with the depth left),
        through re-exports, aliases and star imports; :class:`_Unread` when a module on the
        way has no source (a C module)."""
        if depth <= 0 or (module, name) in self.visited:
            return None
        self.visited.add((module, name))
        source = self._module(module)
        if source is None:
            return _Unread(module, name)
        if source.tree is None:
            return None
        node = source.classes().get(name)
        if node is not None:
            return source, node, depth
        target = source.imports().get(name)
        if target is None and name in source.aliases():  # ``PreTrainedTokenizer = PythonBackend``
            target = resolve_base(source.aliases()[name], source.imports(), set(source.classes()), source.module)
        if target is not None:
            return self._follow(target[0], target[1], depth - 1)
        for statement in through_branches(source.tree.body):  # ``from .protocols import *`` (asyncio's __init__)
            if isinstance(statement, ast.ImportFrom) and any(alias.name == "*" for alias in statement.names):
                star = _absolute(statement, source.package)
                found = self._follow(star, name, depth - 1) if star is not None else None
                if isinstance(found, tuple) or (found is not None and _loaded_members(found.module, found.name)):
                    return found  # a class, or one of a loaded C module's (``from _socket import *``)
        return None

    def _class_body_members(self, source: _Source, node: ast.ClassDef, depth: int) -> frozenset[str]:
        names = member_names(node)
        local = set(source.classes())
        for base in node.bases:
            found = resolve_base(base, source.imports(), local, source.module)
            if found is None:
                continue  # an expression or a name that is no class we can read: its members stay unknown
            inherited = self.members(found[0], found[1], depth - 1)
            if inherited is not None:
                names |= inherited
        return frozenset(names)

    def _module(self, module: str) -> _Source | None:
        file = self.path.find(module)
        source = _source(file, module) if file is not None else None
        if source is None:
            self.answer.missed = True
            return None
        self.answer.read.append((source.file, source.stamp))
        return source


@dataclass
class _Source:
    """One parsed module file."""

    file: Path
    module: str
    stamp: Stamp
    tree: ast.Module | None
    _classes: dict[str, ast.ClassDef] | None = None
    _imports: dict[str, tuple[str, str]] | None = None
    _aliases: dict[str, ast.expr] | None = None

    @property
    def package(self) -> str:
        return self.module if self.file.stem == "__init__" else self.module.rpartition(".")[0]

    def classes(self) -> dict[str, ast.ClassDef]:
        """The module's top-level classes (through ``if``/``try`` blocks) by name."""
        if self._classes is None:
            body = through_branches(self.tree.body) if self.tree is not None else iter(())
            self._classes = {s.name: s for s in body if isinstance(s, ast.ClassDef)}
        return self._classes

    def aliases(self) -> dict[str, ast.expr]:
        """Module-level ``Name = other`` and ``Name = module.other``: another name for a class."""
        if self._aliases is None:
            body = through_branches(self.tree.body) if self.tree is not None else iter(())
            self._aliases = {s.targets[0].id: s.value for s in body
                             if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                             and isinstance(s.value, ast.Name | ast.Attribute)}
        return self._aliases

    def imports(self) -> dict[str, tuple[str, str]]:
        if self._imports is None:
            self._imports = imports_of(self.tree, self.package or None) if self.tree is not None else {}
        return self._imports


def _source(file: Path, module: str) -> _Source | None:
    """``file`` parsed, from the cache while its stamp holds."""
    stamp = source_stamp(file)
    if stamp is None:
        return None
    key = (file, module)
    hit = _SOURCES.get(key)
    if hit is not None and hit.stamp == stamp:
        _SOURCES.move_to_end(key)
        return hit
    try:
        tree: ast.Module | None = ast.parse(file.read_bytes())
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    found = _Source(file, module, stamp, tree)
    _remember(_SOURCES, key, found)
    return found


def source_stamp(path: Path) -> Stamp | None:
    """(mtime, size) of a regular file no larger than :data:`MAX_SOURCE_BYTES`, else None."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_SOURCE_BYTES:
        return None
    return found.st_mtime_ns, found.st_size


def _remember(cache: OrderedDict[K, V], key: K, value: V) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


_FOUND: OrderedDict[tuple[tuple[str, ...], str], tuple[Path | None, float]] = OrderedDict()
_SOURCES: OrderedDict[tuple[Path, str], _Source] = OrderedDict()
_ANSWERS: OrderedDict[tuple[str, str, tuple[str, ...]], _Answer] = OrderedDict()


def _loaded_members(module: str, name: str) -> frozenset[str] | None:
    """A class of a C module the interpreter has already loaded (``_io``, ``builtins``);
    not of a module loaded from Python source (what the server imported itself is no
    guide to the project's copy, which was not found)."""
    found = sys.modules.get(module)
    if found is None or str(getattr(found, "__file__", None) or "").endswith((".py", ".pyc", ".pyi")):
        return None
    value = getattr(found, name, None)
    return frozenset(dir(value)) if isinstance(value, type) else None


# -- reading a module's statements -------------------------------------------------------------
def resolve_base(base: ast.expr, imported: dict[str, tuple[str, str]], local: set[str],
                 module: str | None) -> tuple[str, str] | None:
    """(module, class name) that the base expression ``base`` names, read from the imports
    ``imported`` (:func:`imports_of`) and the classes ``local`` of ``module`` (None: the
    user's module, whose own classes the caller reads itself); builtins as ``builtins``."""
    if isinstance(base, ast.Subscript):
        base = base.value  # ``Generic[T]``, ``Base[int]``: the class is the subscripted one
    if isinstance(base, ast.Name):
        if base.id in imported:
            return imported[base.id]
        if module is not None and base.id in local:
            return module, base.id
        if base.id not in local and isinstance(getattr(builtins, base.id, None), type):
            return "builtins", base.id
        return None
    dotted: list[str] = []
    node: ast.expr = base
    while isinstance(node, ast.Attribute):
        dotted.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or not dotted:
        return None
    dotted.reverse()
    head = imported.get(node.id)
    if head is None:
        return None
    if head[1] != "":  # ``from a import b``: ``b.C`` is the class C of the module a.b, if b is one
        return ".".join([head[0], head[1], *dotted[:-1]]), dotted[-1]
    return ".".join([head[0], *dotted[:-1]]), dotted[-1]


def imports_of(tree: ast.Module, package: str | None) -> dict[str, tuple[str, str]]:
    """What each module-level name an import binds stands for: ``(module, member)`` for
    ``from m import member [as name]``, ``(module, "")`` for ``import module [as name]``
    (``import a.b`` binds ``a``).  Relative imports resolve against ``package`` (the
    module's ``__package__``), and not at all without one."""
    found: dict[str, tuple[str, str]] = {}
    for statement in through_branches(tree.body):
        if isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname:
                    found[alias.asname] = (alias.name, "")
                else:
                    top = alias.name.partition(".")[0]
                    found[top] = (top, "")
        elif isinstance(statement, ast.ImportFrom):
            source = _absolute(statement, package)
            if source is None:
                continue
            for alias in statement.names:
                if alias.name != "*":
                    found[alias.asname or alias.name] = (source, alias.name)
    return found


def _absolute(statement: ast.ImportFrom, package: str | None) -> str | None:
    if not statement.level:
        return statement.module
    if not package:
        return None
    parts = package.split(".")
    if statement.level - 1 >= len(parts):
        return None
    base = ".".join(parts[:len(parts) - (statement.level - 1)])
    return f"{base}.{statement.module}" if statement.module else base


def through_branches(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` and of the ``if`` and ``try`` blocks in it, not of nested
    functions or classes: what binds a module's names (``try: from _x import *``) or a class's
    members (``if sys.platform == …: def …``)."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.Try):
            for block in (statement.body, statement.orelse, getattr(statement, "finalbody", [])):
                yield from through_branches(block)
            for handler in getattr(statement, "handlers", None) or ():
                yield from through_branches(handler.body)


def member_names(node: ast.ClassDef) -> set[str]:
    """The names a class body binds: its methods, nested classes and class attributes."""
    names: set[str] = set()
    for statement in through_branches(node.body):
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.add(statement.target.id)
    return names
