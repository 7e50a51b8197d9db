"""LSP line ends and positions (server/positions.py), and the Document built on them:
``\\n``, ``\\r\\n`` and a lone ``\\r`` all end a line; nothing else does."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathfusion.server.lsp import text_edits
from pathfusion.server.parsing import Document, Position
from pathfusion.server.positions import (
    TextBuffer,
    lf_view,
    line_start,
    split_lines,
    strip_line_end,
    utf16_to_index,
)


def reference_offset(text: str, line: int, character: int) -> int:
    """str index of an LSP position, written independently of the server (BMP text)."""
    lines = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)
    if line >= len(lines):
        return len(text)
    content = lines[line].rstrip("\r\n")
    return sum(len(part) for part in lines[:line]) + max(0, min(character, len(content)))


def test_split_lines_counts_exactly_the_lsp_line_ends() -> None:
    assert split_lines("a\rb\r\nc\nd") == ["a\r", "b\r\n", "c\n", "d"]
    assert split_lines("\r\r\n\n") == ["\r", "\r\n", "\n"]
    assert split_lines("") == []
    assert split_lines("a\x0bb\x0cc\x1cd\x85e\u2028f") == ["a\x0bb\x0cc\x1cd\x85e\u2028f"]
    assert [strip_line_end(line) for line in split_lines("a\rb\r\nc\nd")] == ["a", "b", "c", "d"]
    assert line_start(split_lines("a\rb"), 5) == (1, 1)
    assert line_start(split_lines("a\rb\r"), 5) == (2, 0)
    assert utf16_to_index("é😀x", 3) == 2 and utf16_to_index("abc", -4) == 0 and utf16_to_index("abc", 99) == 3


def test_text_buffer_positions_on_every_line_end() -> None:
    text = "ab\rcd\r\nef\ngh"
    buf = TextBuffer(text)
    assert buf.lf_source == b"ab\ncd\r\nef\ngh" and lf_view(b"\r\r\n\r") == b"\n\r\n\n"
    assert buf.line_starts == [0, 3, 7, 10]
    assert [buf.offset_at(Position(line, 99)) for line in range(4)] == [2, 5, 9, 12]  # before the line end
    assert buf.offset_at(Position(9, 0)) == len(buf.source)
    assert buf.position_at(4) == Position(1, 1) and buf.position_at(12) == Position(3, 2)


def test_text_edits_on_cr_only_text() -> None:
    old = "def f():\r    return 1\r\rx = f()\r"
    new = old.replace("f(", "g(")
    edits = text_edits(old, new)
    assert [e.range.start.line for e in edits] == [0, 3]
    buf = TextBuffer(old)
    for edit in reversed(edits):
        buf.apply_change(Position(edit.range.start.line, edit.range.start.character),
                         Position(edit.range.end.line, edit.range.end.character), edit.new_text)
    assert buf.text == new


LINE_ENDS = ["\n", "\r", "\r\n"]
FRAGMENTS = ["def ", "f(", "):", "    ", "return x", "class C:", "é", "'''", "#", "@d", "x = 1", ":", "(", ")",
             *LINE_ENDS, *LINE_ENDS]
SAMPLE = "import os\r\r\ndef top(a):\r    return a\n\nclass Box:\r\n    def m(self):\r        pass\r"


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[int, int, int, int, str]]:
    return [(draw(st.integers(0, 12)), draw(st.integers(0, 20)), draw(st.integers(0, 3)), draw(st.integers(0, 20)),
             "".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=4))))
            for _ in range(draw(st.integers(1, 12)))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits())
def test_incremental_edits_with_mixed_line_ends_match_a_fresh_parse(
    steps: list[tuple[int, int, int, int, str]],
) -> None:
    """The text follows the editor's (LSP) line rules, and the incrementally edited tree
    equals a fresh parse — also when an edit turns a lone \\r into half of a \\r\\n."""
    doc = Document(SAMPLE)
    expected = SAMPLE
    for line, char, extra, end_char, new_text in steps:
        start = Position(line, char)
        end = Position(line + extra, end_char)
        i = reference_offset(expected, start.line, start.character)
        j = max(i, reference_offset(expected, end.line, end.character))
        expected = expected[:i] + new_text + expected[j:]
        doc.apply_change(start, end, new_text)
        assert doc.text == expected
        assert doc.lf_source == lf_view(doc.source)
    fresh = Document(doc.text)
    assert str(doc.tree.root_node) == str(fresh.tree.root_node)
    assert doc.functions() == fresh.functions()
    assert len(doc.line_starts) == len(split_lines(doc.text)) + (doc.text == "" or doc.text.endswith(("\r", "\n")))


def test_cr_only_file_has_the_functions_of_its_lf_twin() -> None:
    lf = "import os\n\n\ndef top(a):\n    '''Doc.'''\n    return a\n\n\nclass Box:\n    def m(self):\n        pass\n"
    cr = lf.replace("\n", "\r")
    for text in (cr, lf.replace("\n", "\r\n")):
        got, want = Document(text).functions(), Document(lf).functions()
        assert [(f.qualname, f.span.start, f.span.end, f.name_span.start, f.docstring) for f in got] == \
            [(f.qualname, f.span.start, f.span.end, f.name_span.start, f.docstring) for f in want]
    top = Document(cr).functions()[0]
    assert top.source == "def top(a):\r    '''Doc.'''\r    return a"  # as written
    assert "Doc." not in top.source_without_docstring
