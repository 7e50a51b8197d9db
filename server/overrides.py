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
derives from (by simple name, transitively) or that derive from it, and the bases it imports
— from the standard library, the project's other files or installed packages — or names
from :mod:`builtins`, read from their source, never imported
(:mod:`pathfusion.server.base_classes`).  On the modules above, none of the 53 remains (each
module read from its file, so that ``asyncio``'s relative imports resolve).  Subclasses in the
project's other files are looked for after this, by :mod:`pathfusion.server.subclasses`
(:meth:`pathfusion.server.rename_safety.ModuleNames.fixed_by`).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator

from .base_classes import ModulePath, class_members, member_names, resolve_base, through_branches


def classes_by_name(tree: ast.Module) -> dict[str, list[ast.ClassDef]]:
    """Every class of a module (nested ones included) by its simple name."""
    classes: dict[str, list[ast.ClassDef]] = {}
    for node in statements(tree.body):
        if isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, []).append(node)
    return classes


def hierarchy_member(own: ast.ClassDef, classes: dict[str, list[ast.ClassDef]], imports: dict[str, tuple[str, str]],
                     name: str, bound: Callable[[str], bool], path: ModulePath) -> str | None:
    """``Class.name`` of another class's member that fixes the name of the method ``name``
    of the class ``own`` (:func:`method_class`), or None (free to rename as far as can be
    read).  ``classes``: :func:`classes_by_name` of its module; ``imports``: its
    :func:`~pathfusion.server.base_classes.imports_of`; ``bound(n)``: whether the module binds
    ``n`` itself (then a base named ``n`` is not the builtin); ``path``: where its imports
    are looked for."""
    for other in _ancestors(own, classes) + _descendants(own, classes):
        if name in member_names(other):
            return f"{other.name}.{name}"
    return next((f"{owner}.{name}" for owner, members in inherited_members(own, classes, imports, bound, path)
                 if name in members), None)


def method_class(classes: dict[str, list[ast.ClassDef]], name: str, def_line: int) -> ast.ClassDef | None:
    """The class whose body defines the method ``name`` on 1-based ``def_line``, or None."""
    return next((node for nodes in classes.values() for node in nodes
                 if any(isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == name and s.lineno == def_line
                        for s in through_branches(node.body))), None)


def inherited_members(node: ast.ClassDef, classes: dict[str, list[ast.ClassDef]], imports: dict[str, tuple[str, str]],
                      bound: Callable[[str], bool], path: ModulePath) -> Iterator[tuple[str, frozenset[str]]]:
    """(``module.Class``, its members) of each base of ``node`` and of its ancestors in the
    file that another module defines (or :mod:`builtins`: ``Exception``), as far as they
    can be read from ``path``."""
    for cls in [node, *_ancestors(node, classes)]:
        for found in external_bases(cls, classes, imports, bound):
            members = class_members(*found, path)
            if members is not None:
                yield (found[1] if found[0] == "builtins" else f"{found[0]}.{found[1]}"), members


def external_bases(node: ast.ClassDef, classes: dict[str, list[ast.ClassDef]], imports: dict[str, tuple[str, str]],
                   bound: Callable[[str], bool]) -> Iterator[tuple[str, str]]:
    """(module, class) of each base of ``node`` that is not a class of its file: imported
    or builtin (``builtins``), as :func:`~pathfusion.server.base_classes.resolve_base`
    names them; a base the module assigns itself, or an expression, is left out."""
    for base in node.bases:
        if isinstance(base, ast.Name) and (base.id in classes or (base.id not in imports and bound(base.id))):
            continue  # a class of the file (read by the caller), or a name the module assigns
        found = resolve_base(base, imports, set(classes), None)
        if found is not None:
            yield found


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


def base_names(node: ast.ClassDef) -> list[str]:
    """The bases of a class named by a simple name (``A`` or ``A[T]``, not ``mod.A``)."""
    bases = [base.value if isinstance(base, ast.Subscript) else base for base in node.bases]
    return [base.id for base in bases if isinstance(base, ast.Name)]


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
