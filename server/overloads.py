"""``@overload`` stubs stand for the function they declare, not for themselves.

Why: a stub (``@typing.overload def get(key: int) -> int: ...``) is one signature of a
function whose code is its implementation, the definition of the same name that follows the
stubs.  Listed as functions of their own they crowded out what users look for: pygls's
``lsp/_capabilities.py`` declares ``get_capability`` 599 times, and the search "look up a
client capability by field name" listed six stubs first and the implementation — the one
with a body and a docstring — 454th; a hover over a stub named the function after ``...``
(its body) and offered other names than a hover over the implementation two lines below,
although renaming either renames them all.

So search indexes the implementation only, and names are suggested for it wherever the
cursor is: the stubs of a name stand for the first definition of that name after them that
is not a stub.  Stubs without one (a ``Protocol``'s, a type stub's) stand for the first of
them, so the function stays findable once.  Everything else stands for itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from .parsing import FunctionInfo


def is_overload(func: FunctionInfo) -> bool:
    """Decorated with ``overload`` however it was imported (``@overload``,
    ``@typing.overload``, ``@t.overload``, ``@typing_extensions.overload``)."""
    return any(decorator.split("(", 1)[0].strip().rsplit(".", 1)[-1] == "overload"
               for decorator in func.decorators)


def stand_ins(functions: Sequence[FunctionInfo]) -> list[FunctionInfo]:
    """For each of ``functions`` (one document's, in source order) the definition that
    stands for it: itself, or for an overload stub its implementation (see the module)."""
    result = list(functions)
    waiting: dict[str, list[int]] = {}
    """qualname → the stubs (positions) not yet followed by their implementation"""
    for position, func in enumerate(functions):
        if is_overload(func):
            waiting.setdefault(func.qualname, []).append(position)
            continue
        for stub in waiting.pop(func.qualname, ()):
            result[stub] = func
    for stubs in waiting.values():
        for stub in stubs:
            result[stub] = functions[stubs[0]]
    return result


def listed_functions(functions: Sequence[FunctionInfo]) -> list[FunctionInfo]:
    """The functions that stand for themselves: what search indexes and what gets names."""
    return [func for func, stand_in in zip(functions, stand_ins(functions), strict=True) if stand_in is func]


def stand_in_for(func: FunctionInfo, functions: Sequence[FunctionInfo]) -> FunctionInfo:
    """The definition that stands for ``func``, one of ``functions`` (its document's)."""
    for candidate, stand_in in zip(functions, stand_ins(functions), strict=True):
        if candidate is func or candidate == func:
            return stand_in
    return func
