"""``@overload`` stubs stand for their implementation (:mod:`pathfusion.server.overloads`)."""

from __future__ import annotations

from pathfusion.server.overloads import is_overload, listed_functions, stand_in_for, stand_ins
from pathfusion.server.parsing import Document

SOURCE = '''\
import typing
import typing as t
from typing import overload


@overload
def get(key: int) -> int: ...
@typing.overload
def get(key: str) -> str: ...
def get(key):
    """Read the value stored under a key."""
    return STORE[key]


class Proto(typing.Protocol):
    @t.overload
    def load(self, raw: bytes) -> int: ...
    @t.overload
    def load(self, raw: str) -> str: ...

    def save(self) -> None:
        @overload
        def inner(x: int) -> int: ...
        def inner(x):
            return x


@functools.cache
def plain(x):
    return x
'''


def test_stubs_stand_for_the_implementation_after_them() -> None:
    functions = Document(SOURCE).functions()
    by_line = {f.span.start.line + 1: f for f in functions}
    assert [(f.qualname, is_overload(f)) for f in functions] == [
        ("get", True), ("get", True), ("get", False), ("Proto.load", True), ("Proto.load", True),
        ("Proto.save", False), ("Proto.save.<locals>.inner", True), ("Proto.save.<locals>.inner", False),
        ("plain", False)]
    mapped = {f.span.start.line + 1: s.span.start.line + 1 for f, s in zip(functions, stand_ins(functions), strict=True)}
    # the two stubs of get → the implementation (line 10); a Protocol's stubs without one →
    # the first of them; a nested function's stub → its own implementation; the rest → itself
    assert mapped == {6: 10, 8: 10, 10: 10, 16: 16, 18: 16, 21: 21, 22: 24, 24: 24, 28: 28}
    assert [f.span.start.line + 1 for f in listed_functions(functions)] == [10, 16, 21, 24, 28]
    assert stand_in_for(by_line[8], functions) is by_line[10]
    assert stand_in_for(by_line[28], functions) is by_line[28]


def test_a_name_redefined_after_its_implementation_keeps_each_part() -> None:
    """Stubs after an implementation wait for the next one; the last stubs without one stand
    for the first stub of their own run, not for a stub already taken by the earlier one."""
    text = ("@overload\ndef f(x: int) -> int: ...\ndef f(x):\n    return x\n"
            "@overload\ndef f(x: str) -> str: ...\n@overload\ndef f(x: bytes) -> bytes: ...\n")
    functions = Document(text).functions()
    starts = [s.span.start.line + 1 for s in stand_ins(functions)]
    assert starts == [3, 3, 5, 5]
    assert [f.span.start.line + 1 for f in listed_functions(functions)] == [3, 5]


def test_only_the_decorator_named_overload_counts() -> None:
    text = ("@overloaded\ndef a(): ...\n@my.overload_all\ndef b(): ...\n@typing_extensions.overload\ndef c(): ...\n"
            "@dispatch.overload(int)\ndef d(x): ...\n")
    assert [is_overload(f) for f in Document(text).functions()] == [False, False, True, True]
