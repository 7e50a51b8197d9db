"""LSP positions over a text: line breaks, UTF-16 offsets and byte offsets, in one place.

Why a module of its own: LSP counts exactly three line ends — ``\\n``, ``\\r\\n`` and a lone
``\\r`` — and measures characters in UTF-16 code units.  Splitting on ``\\n`` alone puts
every line of a CR-only file on line 0, so an incremental edit lands in the wrong place
and the server's copy of the document drifts from the editor's; Python's
``str.splitlines`` is wrong the other way (it also breaks at ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``,
``\\x85``, U+2028 and U+2029).  The document sync (:class:`TextBuffer`, the base of
:class:`pathfusion.server.parsing.Document`), the edits the server sends back
(:func:`split_lines`, :func:`line_start`) and the rename's column (:func:`utf16_to_index`)
all convert through here, so they agree with the editor and with each other.

tree-sitter's Python grammar ends a line at ``\\n`` only (a lone ``\\r`` is whitespace to
it), so :class:`TextBuffer` also keeps an "LF view" of its bytes — every lone ``\\r``
replaced by ``\\n``, same length, same offsets — which is what gets parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_LONE_CR_RE = re.compile(rb"\r(?!\n)")
_CR, _LF = 0x0D, 0x0A


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """An LSP position: zero-based line and UTF-16 code unit offset."""

    line: int
    character: int


@dataclass(frozen=True, slots=True)
class ByteEdit:
    """One replacement in byte offsets of the LF view, and the (row, column) points
    tree-sitter's ``Tree.edit`` wants."""

    start_byte: int
    old_end_byte: int
    new_end_byte: int
    start_point: tuple[int, int]
    old_end_point: tuple[int, int]
    new_end_point: tuple[int, int]


# -- str level ---------------------------------------------------------------------------------
def split_lines(text: str) -> list[str]:
    """The lines of ``text`` with their line ends (the last one may have none); ``[]`` for
    an empty text."""
    return _LINE_RE.findall(text)


def strip_line_end(line: str) -> str:
    """``line`` without its line end (one of ``\\r\\n``, ``\\r``, ``\\n``)."""
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\r", "\n")):
        return line[:-1]
    return line


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def utf16_to_index(line: str, character: int) -> int:
    """Code point index in ``line`` of a UTF-16 offset, clamped to ``[0, len(line)]`` (LSP:
    a character past the end of a line means its end)."""
    if character <= 0:
        return 0
    if line.isascii():
        return min(character, len(line))
    units = 0
    for index, char in enumerate(line):
        if units >= character:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(line)


def line_start(lines: list[str], index: int) -> tuple[int, int]:
    """(line, character) of the start of line ``index`` of :func:`split_lines` output; past
    the last line, the end of the text."""
    if index < len(lines):
        return index, 0
    if not lines:
        return 0, 0
    last = lines[-1]
    if last.endswith(("\r", "\n")):
        return len(lines), 0
    return len(lines) - 1, utf16_len(last)


# -- bytes level -------------------------------------------------------------------------------
def lf_view(source: bytes) -> bytes:
    """``source`` with every lone ``\\r`` replaced by ``\\n`` (same length, same offsets)."""
    if b"\r" not in source:
        return source
    return _LONE_CR_RE.sub(b"\n", source)


class TextBuffer:
    """A text, its UTF-8 bytes and their LF view, addressed by LSP positions.

    ``text`` is exactly what the editor has (line ends included); ``source`` is its UTF-8
    encoding (lone surrogates pass through, as editors may send them); ``lf_source`` is the
    LF view that line starts and tree-sitter points are computed on.
    """

    uri: str
    version: int
    text: str
    source: bytes
    lf_source: bytes

    def __init__(self, text: str, uri: str = "", version: int = 0) -> None:
        self.uri = uri
        self.version = version
        self._set_text(text)

    def _set_text(self, text: str) -> None:
        self.text = text
        self.source = text.encode("utf-8", errors="surrogatepass")
        self.lf_source = lf_view(self.source)
        self._line_starts: list[int] | None = None

    @property
    def line_starts(self) -> list[int]:
        """Byte offset of the start of every line (computed lazily, cached per text)."""
        if self._line_starts is None:
            starts = [0]
            find = self.lf_source.find
            pos = find(b"\n")
            while pos >= 0:
                starts.append(pos + 1)
                pos = find(b"\n", pos + 1)
            self._line_starts = starts
        return self._line_starts

    def line_bounds(self, line: int) -> tuple[int, int]:
        """Byte offsets of the start and end of ``line``'s content (its line end excluded)."""
        starts = self.line_starts
        start = starts[line]
        if line + 1 >= len(starts):
            return start, len(self.source)
        end = starts[line + 1] - 1  # the \n of the LF view: a \n, or the \r of a lone \r
        if end > start and self.source[end] == _LF and self.source[end - 1] == _CR:
            end -= 1
        return start, end

    def offset_at(self, position: Position) -> int:
        """Byte offset of an LSP position.  Out of range, as editors do: a line past the end
        is the end of the text, a character past a line's end is that end (never inside its
        line end), a negative one its start."""
        if position.line < 0:
            return 0
        if position.line >= len(self.line_starts):
            return len(self.source)
        start, end = self.line_bounds(position.line)
        line = self.source[start:end]
        if line.isascii():
            return start + max(0, min(position.character, len(line)))
        text = line.decode("utf-8", errors="surrogatepass")
        index = utf16_to_index(text, position.character)
        return start + len(text[:index].encode("utf-8", errors="surrogatepass"))

    def position_at(self, offset: int) -> Position:
        """LSP position (UTF-16 character) of a byte offset."""
        starts = self.line_starts
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        prefix = self.source[starts[lo] : offset]
        if prefix.isascii():
            return Position(lo, len(prefix))
        try:  # a lone surrogate the editor sent is one UTF-16 unit for it too
            text = prefix.decode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError:  # an offset inside a character (never a node boundary)
            text = prefix.decode("utf-8", errors="replace")
        return Position(lo, utf16_len(text))

    def point_at(self, offset: int) -> tuple[int, int]:
        """tree-sitter's (row, byte column) of a byte offset, on the LF view."""
        view = self.lf_source
        row = view.count(b"\n", 0, offset)
        return row, offset - (view.rfind(b"\n", 0, offset) + 1)

    def replace(self, text: str, version: int | None = None) -> None:
        """Replace the whole text (a full-document LSP change)."""
        self._set_text(text)
        if version is not None:
            self.version = version

    def splice(self, start: Position, end: Position, new_text: str) -> ByteEdit:
        """Apply one incremental LSP change to the text; returns the edit of the LF view.

        An ``end`` before ``start`` is an empty range at ``start``.  Why the edit may begin
        one byte before the change: whether a ``\\r`` is a line end of its own depends on the
        byte after it, so a change right after a ``\\r`` can turn it into (or out of) the
        first half of a ``\\r\\n`` — a byte that tree-sitter must be told has changed.
        """
        start_byte = self.offset_at(start)
        old_end_byte = max(start_byte, self.offset_at(end))
        edit_start = start_byte - 1 if start_byte > 0 and self.source[start_byte - 1] == _CR else start_byte
        start_point = self.point_at(edit_start)
        old_end_point = self.point_at(old_end_byte)
        inserted = new_text.encode("utf-8", errors="surrogatepass")
        old_view = self.lf_source
        new_source = self.source[:start_byte] + inserted + self.source[old_end_byte:]
        new_end_byte = start_byte + len(inserted)
        if old_view is self.source and b"\r" not in inserted and edit_start == start_byte:
            self.lf_source = new_source  # no lone \r before, none can appear: the view is the text
        else:
            # only the bytes from edit_start to the end of the insertion can change in the
            # view; the byte after them is the unchanged old one (its successor is too)
            tail = new_source[edit_start : new_end_byte + 1]
            middle = lf_view(tail)[: new_end_byte - edit_start]
            self.lf_source = old_view[:edit_start] + middle + old_view[old_end_byte:]
        self.source = new_source
        self.text = new_source.decode("utf-8", errors="surrogatepass")
        self._line_starts = None
        return ByteEdit(edit_start, old_end_byte, new_end_byte, start_point, old_end_point,
                        self.point_at(new_end_byte))

    def apply_change(self, start: Position, end: Position, new_text: str, version: int | None = None) -> None:
        """Apply one incremental LSP content change."""
        self.splice(start, end, new_text)
        if version is not None:
            self.version = version
