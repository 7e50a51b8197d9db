"""A method whose name its class hierarchy fixes keeps that name.

Why: a method that overrides one of a base class (``server_activate`` of a ``TCPServer``
subclass, ``_get_default_metavar_for_optional`` of a ``HelpFormatter`` subclass), or that a
subclass overrides, is called by that name from code that knows only the base; renamed, the
base's version runs instead and nothing reports an error.  jedi's rename edits the method and
its references, not the hierarchy.  On 42 modules of the standard library the hover offered
renames for 53 of the 394 methods that override an inherited one (``UDPServer.server_activate``
→ ``listen``, ``_pyio._BufferedIOMixin.seekable`` → ``get``); the base was in the same file for 40
of them.

What is checked, from the module's own AST: the classes of the file that the method's class
derives from (by simple name, transitively) or that derive from it, and the builtin classes
it names as bases (``Exception``, ``dict``: read from :mod:`builtins`, never from imported
code).  A base imported from another module is not resolved — that needs the import system
or jedi's inference on every hover (a cold one took 0.3–0.8 s) — so 13 of the 53 remain
(``io`` subclasses' ``writable``, ``asyncio`` transports).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Iterator


def classes_by_name(tree: ast.Module) -> dict[str, list[ast.ClassDef]]:
    """Every class of a module (nested ones included) by its simple name."""
    classes: dict[str, list[ast.ClassDef]] = {}
    for node in statements(tree.body):
        if isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, []).append(node)
    return classes


def hierarchy_member(classes: dict[str, list[ast.ClassDef]], name: str, def_line: int,
                     bound: Callable[[str], bool]) -> str | None:
    """``Class.name`` of another class's member that fixes the name of the method ``name``
    whose ``def`` is on 1-based ``def_line`` (``classes``: :func:`classes_by_name` of its
    module), or None (not a method, or free to rename).  ``bound(n)``: whether the module
    binds ``n`` itself (then a base named ``n`` is not the builtin)."""
    own = next((node for nodes in classes.values() for node in nodes
                if any(isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == name and s.lineno == def_line
                       for s in _members(node.body))), None)
    if own is None:
        return None
    for other in _ancestors(own, classes) + _descendants(own, classes):
        if name in _member_names(other):
            return f"{other.name}.{name}"
    for base in base_names(own):
        if base not in classes and not bound(base):
            builtin = getattr(builtins, base, None)
            if isinstance(builtin, type) and hasattr(builtin, name):
                return f"{base}.{name}"
    return None


def statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement in ``body``, nested ones included: where a ``class`` can be.  Why not
    ``ast.walk``: it also visits every expression node, ten times as many (≈ 10 ms of a
    hover on a 2,600-line module, paid again after each edit)."""
    for statement in body:
        yield statement
        for field in ("body", "orelse", "finalbody"):
            nested = getattr(statement, field, None)
            if isinstance(nested, list) and nested and isinstance(nested[0], ast.stmt):
                yield from statements(nested)
        for handler in getattr(statement, "handlers", None) or ():
            yield from statements(handler.body)
        for case in getattr(statement, "cases", None) or ():
            yield from statements(case.body)


def _members(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a class body that bind its members: through ``if`` and ``try``,
    not into nested functions or classes."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.Try):
            for block in (statement.body, statement.orelse, getattr(statement, "finalbody", [])):
                yield from _members(block)
            for handler in getattr(statement, "handlers", None) or ():
                yield from _members(handler.body)


def _member_names(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for statement in _members(node.body):
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.add(statement.target.id)
    return names


def base_names(node: ast.ClassDef) -> list[str]:
    """The bases of a class named by a simple name (``A``, not ``mod.A``)."""
    return [base.id for base in node.bases if isinstance(base, ast.Name)]


def _ancestors(start: ast.ClassDef, classes: dict[str, list[ast.ClassDef]]) -> list[ast.ClassDef]:
    return _walk(start, lambda node: [c for name in base_names(node) for c in classes.get(name, ())])


def _descendants(start: ast.ClassDef, classes: dict[str, list[ast.ClassDef]]) -> list[ast.ClassDef]:
    every = [node for nodes in classes.values() for node in nodes]
    return _walk(start, lambda node: [c for c in every if node.name in base_names(c)])


def _walk(start: ast.ClassDef, step: Callable[[ast.ClassDef], list[ast.ClassDef]]) -> list[ast.ClassDef]:
    seen = {id(start)}
    found: list[ast.ClassDef] = []
    todo = [start]
    while todo:
        for other in step(todo.pop()):
            if id(other) not in seen:
                seen.add(id(other))
                found.append(other)
                todo.append(other)
    return found
