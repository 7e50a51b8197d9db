"""The members of standard-library classes, read from their source without importing it.

Why: a method that overrides one of a base class keeps its name (:mod:`pathfusion.server.overrides`),
and the bases users derive from most are the standard library's — ``threading.Thread.run``,
``unittest.TestCase.setUp``, ``http.server.BaseHTTPRequestHandler.do_GET``,
``ast.NodeVisitor.visit``, ``logging.Handler.emit``.  Their source ships with the interpreter,
so the class is found by parsing the module's file (following re-exports such as
``json/__init__.py``'s ``from .encoder import JSONEncoder``) and its bases the same way,
without running anything: importing arbitrary modules from a language server is not an
option (``antigravity`` opens a browser).  A class implemented in C (``_io._BufferedIOBase``) is
read from the module object only when the interpreter has already loaded it.

A class that cannot be read this way (another package, a C module not loaded) is unknown
(``None``): the caller then cannot tell, and says so.
"""

from __future__ import annotations

import ast
import builtins
import sys
import sysconfig
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

MAX_DEPTH = 12
"""How many re-exports and bases deep a class is followed."""
_LOCK = threading.Lock()


def is_stdlib(module: str) -> bool:
    return module.partition(".")[0] in sys.stdlib_module_names


def class_members(module: str, name: str) -> frozenset[str] | None:
    """Every member of the standard-library class ``module.name``, inherited ones included;
    None when it cannot be read (not the standard library, no such class, a C class whose
    module is not loaded)."""
    if not is_stdlib(module):
        return None
    with _LOCK:  # the caches below are filled from worker threads
        return _members(module, name, MAX_DEPTH)


@lru_cache(maxsize=256)
def _members(module: str, name: str, depth: int) -> frozenset[str] | None:
    if depth <= 0 or not is_stdlib(module):
        return None
    tree = _tree(module)
    if tree is None:
        return _loaded_members(module, name)
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef) and statement.name == name:
            return _class_body_members(module, statement, depth)
    target = _module_imports(module).get(name)
    if target is not None:
        return _members(target[0], target[1], depth - 1)
    for statement in through_branches(tree.body):  # ``from .protocols import *`` (asyncio's __init__)
        if isinstance(statement, ast.ImportFrom) and any(alias.name == "*" for alias in statement.names):
            source = _absolute(statement, module)
            found = _members(source, name, depth - 1) if source is not None else None
            if found is not None:
                return found
    return None


def _class_body_members(module: str, node: ast.ClassDef, depth: int) -> frozenset[str] | None:
    names = member_names(node)
    tree = _tree(module)
    imported = _module_imports(module)
    local = {s.name for s in tree.body if isinstance(s, ast.ClassDef)} if tree is not None else set()
    for base in node.bases:
        found = resolve_base(base, imported, local, module)
        if found is None:
            continue  # an expression or a name that is no class we can read: its members stay unknown
        inherited = _members(found[0], found[1], depth - 1)
        if inherited is not None:
            names |= inherited
    return frozenset(names)


def resolve_base(base: ast.expr, imported: dict[str, tuple[str, str]], local: set[str],
                 module: str | None) -> tuple[str, str] | None:
    """(module, class name) that the base expression ``base`` names, read from the imports
    ``imported`` (:func:`imports_of`) and the classes ``local`` of ``module`` (None: the
    user's module, whose own classes the caller reads itself); builtins as ``builtins``."""
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
    if head is None or head[1] != "":
        return None  # only ``import a.b [as c]`` names a module; ``from a import b`` names b's member
    return ".".join([head[0], *dotted[:-1]]), dotted[-1]


def imports_of(tree: ast.Module, module: str | None) -> dict[str, tuple[str, str]]:
    """What each module-level name an import binds stands for: ``(module, member)`` for
    ``from m import member [as name]``, ``(module, "")`` for ``import module [as name]``
    (``import a.b`` binds ``a``).  Relative imports resolve against ``module`` (a package
    path), and not at all in the user's module (None)."""
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
            source = _absolute(statement, module)
            if source is None:
                continue
            for alias in statement.names:
                if alias.name != "*":
                    found[alias.asname or alias.name] = (source, alias.name)
    return found


def _absolute(statement: ast.ImportFrom, module: str | None) -> str | None:
    if not statement.level:
        return statement.module
    if module is None:
        return None
    package = module if _is_package(module) else module.rpartition(".")[0]
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


@lru_cache(maxsize=256)
def _source(module: str) -> Path | None:
    root = Path(sysconfig.get_paths()["stdlib"])
    relative = Path(*module.split("."))
    for candidate in (root / relative / "__init__.py", root.joinpath(relative).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_package(module: str) -> bool:
    path = _source(module)
    return path is not None and path.name == "__init__.py"


@lru_cache(maxsize=64)
def _module_imports(module: str) -> dict[str, tuple[str, str]]:
    """:func:`imports_of` a standard-library module, read once (callers only read it)."""
    tree = _tree(module)
    return imports_of(tree, module) if tree is not None else {}


@lru_cache(maxsize=64)
def _tree(module: str) -> ast.Module | None:
    path = _source(module)
    if path is None:
        return None
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


def _loaded_members(module: str, name: str) -> frozenset[str] | None:
    """A class of a C module the interpreter has already loaded (``_io``, ``builtins``)."""
    found = sys.modules.get(module)
    value = getattr(found, name, None) if found is not None else None
    return frozenset(dir(value)) if isinstance(value, type) else None
