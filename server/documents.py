"""Open documents, kept in sync with the editor, parsed only within ``maxFileSize``.

Why a document over the limit is kept as bare text (:class:`~pathfusion.server.positions.TextBuffer`)
instead of a parsed :class:`~pathfusion.server.parsing.Document`: tree-sitter holds the interpreter
while it parses (it does not release the GIL), so parsing a 5 MB one-line buffer on the
event loop held every request for ~3 s — on opening and again after each keystroke — and a
worker thread would hold them just the same.  The server offers nothing for such a file
anyway (``maxFileSize``: "larger files are neither indexed nor analysed").  Its text is still
kept in sync — a splice of bytes, no parse — so that when it shrinks back under the limit (or
the limit is raised) it is parsed once, from the editor's text, and analysed again.

A change is applied text-only whenever the document could pass the limit with it (its size
plus the inserted bytes), so a large paste into a small document is never parsed either.
"""

from __future__ import annotations

from collections.abc import Sequence

from lsprotocol import types

from .parsing import Document
from .positions import Position, TextBuffer


def sized(doc: TextBuffer, limit: int) -> TextBuffer:
    """``doc`` as a parsed :class:`Document` when it is within ``limit`` bytes, else as a
    bare :class:`TextBuffer` (the same object when it already is the right kind)."""
    if len(doc.source) > limit:
        if isinstance(doc, Document):
            return TextBuffer(doc.text, uri=doc.uri, version=doc.version)
        return doc
    if not isinstance(doc, Document):
        return Document(doc.text, uri=doc.uri, version=doc.version)
    return doc


def apply_changes(
    doc: TextBuffer, changes: Sequence[types.TextDocumentContentChangeEvent], version: int, limit: int
) -> TextBuffer:
    """Apply ``didChange``'s content changes in order; returns the document to keep (see
    :func:`sized`), at ``version``."""
    for change in changes:
        grown = len(doc.source) + len(change.text.encode("utf-8", errors="surrogatepass"))
        if isinstance(doc, Document) and grown > limit:
            doc = TextBuffer(doc.text, uri=doc.uri, version=doc.version)
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = change.range.start, change.range.end
            doc.apply_change(Position(start.line, start.character), Position(end.line, end.character), change.text)
        else:
            doc.replace(change.text)
    doc.version = version
    return sized(doc, limit)
