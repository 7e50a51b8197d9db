"""Conversions between the server's values and LSP's: positions and ranges, uris and
paths, text edits, Markdown, workspace symbols.

Why one module: every feature speaks LSP at its edge, and each conversion has a rule that
is easy to get subtly wrong in one copy of it — positions are UTF-16 code units (the LSP
default: the server removes the client's other position encodings from ``initialize``,
:class:`~pathfusion.server.lsp_server.PathfusionProtocol`, so it never negotiates another one), lines
end at ``\\n``, ``\\r\\n`` or ``\\r`` as in the editor, and a name shown in Markdown must not
turn into formatting.  All of them are pure functions.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import to_fs_path

from .parsing import Span
from .positions import Position, line_start, split_lines, strip_line_end, utf16_to_index

if TYPE_CHECKING:
    from .index import SearchResult


# -- positions, ranges, uris ------------------------------------------------------------------
def to_position(position: types.Position) -> Position:
    """An LSP position as the server's (both UTF-16: no conversion of the character)."""
    return Position(position.line, position.character)


def span_range(span: Span) -> types.Range:
    """The LSP range of a span of a document (its UTF-16 positions)."""
    return types.Range(
        start=types.Position(line=span.start.line, character=span.start.character),
        end=types.Position(line=span.end.line, character=span.end.character))


def lsp_range(data: dict[str, dict[str, int]]) -> types.Range:
    """The LSP range of a range in JSON form (``SearchResult.range``)."""
    return types.Range(
        start=types.Position(line=data["start"]["line"], character=data["start"]["character"]),
        end=types.Position(line=data["end"]["line"], character=data["end"]["character"]))


def code_point_column(text: str, position: Position) -> int:
    """The column of ``position`` in code points, as jedi counts them (LSP counts UTF-16
    code units: a character outside the BMP is two of them)."""
    lines = split_lines(text)
    line_text = lines[position.line] if position.line < len(lines) else ""
    return utf16_to_index(strip_line_end(line_text), position.character)


def uri_path(uri: str) -> str | None:
    """The file system path of a ``file:`` uri; None for any other scheme (``untitled:``)."""
    return to_fs_path(uri) if uri.startswith("file:") else None


# -- text edits -------------------------------------------------------------------------------
def _line_position(lines: list[str], index: int) -> types.Position:
    """The position of the start of line ``index`` (the end of the text past the end)."""
    line, character = line_start(lines, index)
    return types.Position(line=line, character=character)


def text_edits(old: str, new: str) -> list[types.TextEdit]:
    """Minimal line-level edits turning ``old`` into ``new`` (non-overlapping, in order);
    lines split as the editor splits them (``\\n``, ``\\r\\n`` and ``\\r``, server/positions.py)."""
    a, b = split_lines(old), split_lines(new)
    edits: list[types.TextEdit] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append(types.TextEdit(
            range=types.Range(start=_line_position(a, i1), end=_line_position(a, i2)),
            new_text="".join(b[j1:j2]),
        ))
    return edits


# -- Markdown ---------------------------------------------------------------------------------
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~|#&])")
_URI_UNSAFE = {ord(c): f"%{ord(c):02X}" for c in " ()<>"}


def markdown_text(text: str) -> str:
    """``text`` shown as written in Markdown: ``__repr__`` is not bold "repr", ``<locals>``
    not an HTML tag."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def code_span(text: str) -> str:
    """``text`` as a Markdown code span (a fence longer than any run of backticks in it)."""
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall(r"`+", text)) + 1)
    return f"{fence} {text} {fence}"


def link_target(uri: str) -> str:
    """``uri`` as the target of a Markdown link: a ")" or a space would end the link."""
    return uri.translate(_URI_UNSAFE)


# -- symbols ----------------------------------------------------------------------------------
def symbol_kind(qualname: str) -> types.SymbolKind:
    """Method for a function defined in a class body, Function otherwise."""
    parent, _, _ = qualname.rpartition(".")
    return types.SymbolKind.Method if parent and not parent.endswith("<locals>") else types.SymbolKind.Function


def workspace_symbol(result: SearchResult) -> types.WorkspaceSymbol:
    parent, _, _ = result.qualname.rpartition(".")
    return types.WorkspaceSymbol(
        name=result.name, kind=symbol_kind(result.qualname),
        location=types.Location(uri=result.uri, range=lsp_range(result.range)),
        container_name=parent or None)


def workspace_symbols(results: Sequence[SearchResult]) -> list[types.WorkspaceSymbol]:
    return [workspace_symbol(result) for result in results]
