"""What every test that applies a rename checks of the result.

Why more than "the text was replaced": a rename to a name that is already bound (``json``
under ``import json``) replaces the text just as well and breaks the module.  So the renamed
files must still compile, and pyflakes must report nothing new — after mapping the new name
back to the old one in its messages, so that a message that merely mentions the renamed
function (``'load_config' imported but unused`` → ``'read_file' imported but unused``) is
not counted as new, while a redefinition or shadowing that the rename created is.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Mapping

from pyflakes.checker import Checker


def pyflakes_messages(source: str, filename: str = "<renamed>", rename: tuple[str, str] | None = None) -> Counter[str]:
    """pyflakes' messages of ``source`` as ``"line: text"`` (a multiset).  With ``rename``
    ``(old, new)``, message arguments equal to ``new`` read as ``old``."""
    checker = Checker(ast.parse(source, filename=filename), filename=filename)
    found: Counter[str] = Counter()
    for message in checker.messages:
        args = tuple(rename[0] if rename is not None and arg == rename[1] else arg
                     for arg in message.message_args)
        found[f"{message.lineno}: {type(message).__name__}: {message.message % args}"] += 1
    return found


def assert_clean_rename(before: Mapping[str, str], after: Mapping[str, str], old: str, new: str) -> None:
    """Every file of ``after`` compiles, and none has a pyflakes message that its version in
    ``before`` (same key) did not have."""
    for name, text in after.items():
        try:
            compile(text, name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise AssertionError(f"{name} no longer compiles after renaming {old} → {new}: {exc}\n{text}") from exc
        new_messages = pyflakes_messages(text, name, (old, new)) - pyflakes_messages(before.get(name, ""), name)
        assert not new_messages, (
            f"renaming {old} → {new} made pyflakes report in {name}: {sorted(new_messages)}\n{text}")
