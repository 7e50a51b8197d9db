"""Documents, functions and incremental edits."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pathfusion.server.parsing import Document, Position, enclosing_class, search_text

SAMPLE = '''\
import os


@decorator(arg)
def top(a, b=1):
    """Add things.

    Longer text.
    """
    return a + b


class Box:
    def method(self):
        def inner():
            return 1
        return inner

    @staticmethod
    async def fetch_ünïcode(x):
        "One line doc."
        return x

    class Nested:
        def deep(self): return 2
'''


def test_functions_names_and_qualnames() -> None:
    funcs = Document(SAMPLE).functions()
    assert [f.qualname for f in funcs] == [
        "top",
        "Box.method",
        "Box.method.<locals>.inner",
        "Box.fetch_ünïcode",
        "Box.Nested.deep",
    ]
    top, _method, inner, fetch, deep = funcs
    assert top.decorators == ("decorator(arg)",)
    assert top.docstring == "Add things.\n\nLonger text."
    assert '"""' not in top.source_without_docstring
    assert top.source_without_docstring.startswith("@decorator(arg)\ndef top(a, b=1):\n    return a + b")
    assert fetch.is_async and not top.is_async
    assert fetch.decorators == ("staticmethod",)
    assert fetch.docstring == "One line doc."
    assert inner.docstring is None and inner.source_without_docstring == inner.source
    assert deep.line_count == 1


def test_search_text_heads_a_method_with_its_class_only() -> None:
    top, method, inner, fetch, deep = Document(SAMPLE).functions()
    assert top.search_text == top.source  # module level: as written
    assert inner.search_text == inner.source  # a function's local function has no class
    assert method.search_text == "class Box:\n    " + method.source
    assert fetch.search_text.startswith('class Box:\n    @staticmethod\n    async def fetch_ünïcode(x):')
    assert deep.search_text == "class Nested:\n    def deep(self): return 2"  # the innermost class
    assert search_text("def f(): pass", "f.<locals>.C.g") == "class C:\n    def f(): pass"
    assert [enclosing_class(q) for q in ("f", "A.f", "A.B.f", "f.<locals>.g", "A.f.<locals>.g")] == [
        None, "A", "B", None, None]


def test_spans_are_lsp_positions() -> None:
    doc = Document(SAMPLE)
    top = doc.functions()[0]
    assert top.span.start == Position(3, 0)  # the decorator line
    assert top.name_span.start == Position(4, 4) and top.name_span.end == Position(4, 7)
    fetch = doc.functions()[3]
    # "fetch_ünïcode" is 13 UTF-16 units but 15 UTF-8 bytes.
    assert fetch.name_span.end.character - fetch.name_span.start.character == 13
    assert fetch.name_span.end_byte - fetch.name_span.start_byte == 15


def test_utf16_positions_with_astral_characters() -> None:
    doc = Document("x = '😀'; def_ = 1\ndef g():\n    return '😀😀'\n")
    assert doc.offset_at(Position(0, 7)) == len("x = '😀".encode())
    assert doc.position_at(len("x = '😀".encode())) == Position(0, 7)
    assert doc.position_at(len("x = '😀'".encode())) == Position(0, 8)
    func = doc.functions()[0]
    assert func.span.end == Position(2, 17)  # 4 + len("return ") + 1 + 2 * 2 + 1


def test_function_at_name_and_def_line() -> None:
    doc = Document(SAMPLE)
    assert doc.function_at(Position(4, 5)).qualname == "top"  # type: ignore[union-attr]
    assert doc.function_at(Position(14, 12)).qualname == "Box.method.<locals>.inner"  # type: ignore[union-attr]
    assert doc.function_at(Position(9, 8)) is None  # inside the body of top
    assert doc.function_at(Position(0, 0)) is None


def test_docstring_only_body_stays_valid() -> None:
    doc = Document('def f():\n    """Only a docstring here."""\n')
    func = doc.functions()[0]
    assert func.docstring == "Only a docstring here."
    assert Document(func.source_without_docstring).tree.root_node.has_error is False
    assert "..." in func.source_without_docstring


def test_syntax_errors_still_yield_functions() -> None:
    doc = Document("def ok(a):\n    return a\n\ndef half(x):\n    y = (\n\ndef after(b):\n    return b +\n")
    assert doc.tree.root_node.has_error
    assert [f.name for f in doc.functions()] == ["ok", "half", "after"]
    # A header tree-sitter cannot repair swallows what follows, but never crashes.
    broken = Document("def ok(a):\n    return a\n\ndef broken(:\n    x = \n")
    assert next(f.name for f in broken.functions()) == "ok"


# -- incremental edits ------------------------------------------------------------------

def _utf16_index(text: str, line: int, character: int) -> int:
    """str index of an LSP position, computed independently of Document."""
    lines = text.split("\n")
    if line >= len(lines):
        return len(text)
    index = sum(len(part) + 1 for part in lines[:line])
    units = 0
    for offset, char in enumerate(lines[line]):
        if units >= character:
            return index + offset
        units += 2 if ord(char) > 0xFFFF else 1
    return index + len(lines[line])


FRAGMENTS = ["def ", "f(", "):", "\n", "    ", "return x", "class C:\n", "é", "😀", "'''", '"', "#", "@d\n",
             "async ", "x = 1\n", "\n    def g(self):\n        pass\n", ":", "(", ")", "lambda: 0"]


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[int, int, int, int, str]]:
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        steps.append((
            draw(st.integers(0, 30)), draw(st.integers(0, 40)),
            draw(st.integers(0, 3)), draw(st.integers(0, 40)),
            "".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=4))),
        ))
    return steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits())
# tree-sitter-python's own incremental reparse got this one wrong (pathfusion.server.parsing.RESCAN_CHARS)
@example([(9, 4, 0, 4, "'''"), (12, 1, 0, 1, "'''")])
def test_incremental_edits_match_fresh_parse(steps: list[tuple[int, int, int, int, str]]) -> None:
    doc = Document(SAMPLE)
    expected_text = SAMPLE
    for line, char, extra_lines, end_char, new_text in steps:
        lines = expected_text.count("\n") + 1
        start = Position(line % (lines + 1), char)
        end = Position(min(start.line + extra_lines, lines), end_char)
        i = _utf16_index(expected_text, start.line, start.character)
        j = max(i, _utf16_index(expected_text, end.line, end.character))
        if j > i and i > 0 and "\ud800" <= expected_text[i - 1] <= "\udbff":
            continue  # never split a surrogate pair (clients don't)
        expected_text = expected_text[:i] + new_text + expected_text[j:]
        if end < start:
            end = start
        doc.apply_change(start, end, new_text)
        assert doc.text == expected_text
    fresh = Document(doc.text)
    assert doc.functions() == fresh.functions()
    assert str(doc.tree.root_node) == str(fresh.tree.root_node)


def test_full_replace_and_version() -> None:
    doc = Document("def a():\n    pass\n", version=1)
    doc.replace("def b():\n    pass\n", version=2)
    assert doc.version == 2 and [f.name for f in doc.functions()] == ["b"]
    doc.apply_change(Position(0, 4), Position(0, 5), "renamed", version=3)
    assert doc.version == 3 and [f.name for f in doc.functions()] == ["renamed"]
