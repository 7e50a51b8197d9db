"""Tree-sitter documents and the functions they contain.

Why a document object and not a parse function: the language server receives small
incremental edits (LSP ``textDocument/didChange``), and re-parsing a large file from scratch
on every keystroke would waste the budget we have for the model.  tree-sitter can reuse the
previous tree when it is told which bytes changed, so :class:`Document` turns LSP content
changes (UTF-16 line/character positions) into tree edits (UTF-8 byte offsets and points).

Every traversal in this module is iterative: deeply nested code (thousands of levels) must
never raise ``RecursionError``.
"""

from __future__ import annotations

import ast
import codecs
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import tree_sitter_python
from tree_sitter import Language, Node, Parser, Point, Tree

from .positions import Position, TextBuffer

PY_LANGUAGE = Language(tree_sitter_python.language())

#: Node types that can contain a function definition.  Everything else is an expression or
#: a simple statement, which we do not need to descend into when listing functions
#: (lambdas are not functions for us).  ``ERROR`` is included so that definitions inside a
#: region tree-sitter could not parse are still found.
_CONTAINER_TYPES = frozenset(
    {
        "module",
        "block",
        "decorated_definition",
        "function_definition",
        "class_definition",
        "if_statement",
        "elif_clause",
        "else_clause",
        "for_statement",
        "while_statement",
        "try_statement",
        "except_clause",
        "except_group_clause",
        "finally_clause",
        "with_statement",
        "match_statement",
        "case_clause",
        "ERROR",
    }
)

_CODING_RE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
_BINARY_PROBE = 8192


class SourceError(ValueError):
    """A file that cannot be read as Python source (binary, undecodable)."""


class BinaryFileError(SourceError):
    """The file holds NUL bytes: it is not text."""


class EncodingError(SourceError):
    """The file is neither UTF-8 nor in the encoding its PEP 263 cookie declares."""


def decode_source(data: bytes, *, origin: str = "<bytes>") -> str:
    """Decode file bytes the way Python itself would (BOM, PEP 263 cookie, else UTF-8).

    Raises a :class:`SourceError` with a message naming ``origin`` instead of returning
    garbage, so that callers can skip the file and say why.
    """
    if b"\x00" in data[:_BINARY_PROBE]:
        raise BinaryFileError(f"{origin}: binary file (contains NUL bytes)")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    encoding = "utf-8"
    for line in data.split(b"\n", 2)[:2]:
        match = _CODING_RE.match(line)
        if match:
            encoding = match.group(1).decode("ascii")
            break
    try:
        return data.decode(encoding)
    except LookupError as exc:
        raise EncodingError(f"{origin}: unknown encoding {encoding!r} in coding cookie") from exc
    except UnicodeDecodeError as exc:
        raise EncodingError(
            f"{origin}: not valid {encoding} (byte {exc.start}: {exc.reason})"
        ) from exc


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a document in both coordinate systems we need."""

    start_byte: int
    end_byte: int
    start: Position
    end: Position


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """One ``def`` of a document, with what the features and the editor need of it."""

    name: str
    qualname: str
    span: Span
    """The whole definition, decorators included."""
    name_span: Span
    decorators: tuple[str, ...]
    docstring: str | None
    is_async: bool
    source: str
    """The definition's text (decorators included), exactly as written."""
    source_without_docstring: str
    node: Node = field(compare=False, repr=False, hash=False)
    """The ``function_definition`` node (or ``decorated_definition`` when decorated)."""

    @property
    def line_count(self) -> int:
        return self.span.end.line - self.span.start.line + 1

    @property
    def search_text(self) -> str:
        """What the search model embeds and BM25 indexes for this function: :func:`search_text`."""
        return search_text(self.source, self.qualname)


def enclosing_class(qualname: str) -> str | None:
    """The class a function is defined in directly (``A.B.m`` → ``B``); ``None`` for a
    module-level function and for one nested in a function (``f.<locals>.g``)."""
    parts = qualname.split(".")
    return parts[-2] if len(parts) >= 2 and parts[-2] != "<locals>" else None


def search_text(code: str, qualname: str) -> str:
    """The text that stands for a function in search: its definition as written (``code``,
    with or without the docstring), headed by ``class C:`` when it is a method of ``C``.

    Why the header: a method's docstring is written in its class's terms ("Return the
    current file position." is ``BZ2File.tell``'s; "Remove and return an item without
    blocking" is ``Queue.get_nowait``'s, whose body is ``return self.get(block=False)``), and
    without the class the code does not say what it is about.  With the same encoder, the
    header lifted validation MRR from 0.847 to 0.865 (hybrid) and 0.841 to 0.856 (dense),
    docs/results.md.  Training packs, evaluation and the server all build the text here, so
    that the encoder learns, is measured on and serves one convention (a change to it bumps
    :data:`pathfusion.server.index_files.INDEX_FORMAT`, so that stored indexes re-embed).  Anonymised code
    (:mod:`pathfusion.model_export.anonymise`) goes without it: the class name is an identifier.
    """
    owner = enclosing_class(qualname)
    return f"class {owner}:\n    {code}" if owner else code


def _parser() -> Parser:
    return Parser(PY_LANGUAGE)


def parse_bytes(source: bytes, old_tree: Tree | None = None) -> Tree:
    """Parse UTF-8 bytes (optionally reusing an edited old tree)."""
    parser = _parser()
    return parser.parse(source, old_tree) if old_tree is not None else parser.parse(source)


RESCAN_CHARS = frozenset("'\"\\#{}")
"""Characters whose insertion or removal makes :meth:`Document.apply_change` parse afresh.

Why: tree-sitter-python (0.25) lexes strings and comments with its external scanner, and
its incremental reparse can reuse subtrees that a new quote changes the meaning of — e.g.
``'''`` typed inside one function body and again two lines further leaves the first
function ending before the string (Hypothesis found it; ``tests/parsing/test_parsing.py``
keeps the example), while a fresh parse sees the string.  A fresh parse of a typical file
costs a few milliseconds (``benchmarks/extract.py``), and only keystrokes that type or
delete a quote, a backslash, a ``#`` or a brace (f-string interpolation), or type next to a
quote, pay it."""
RESCAN_BYTES = frozenset(ord(char) for char in RESCAN_CHARS)


class Document(TextBuffer):
    """A Python source text and its tree-sitter tree, kept in sync under edits.

    The text bookkeeping (LSP positions, line ends) is :class:`~pathfusion.server.positions.TextBuffer`'s;
    the tree is parsed from its LF view, so that a file with CR-only line ends has the same
    lines for tree-sitter as for the editor.
    """

    def __init__(self, text: str, uri: str = "", version: int = 0) -> None:
        super().__init__(text, uri=uri, version=version)
        self.tree = parse_bytes(self.lf_source)

    def span_of(self, start_byte: int, end_byte: int) -> Span:
        return Span(start_byte, end_byte, self.position_at(start_byte), self.position_at(end_byte))

    # -- edits ------------------------------------------------------------------------
    def replace(self, text: str, version: int | None = None) -> None:
        """Replace the whole text (a full-document LSP change)."""
        super().replace(text, version)
        self.tree = parse_bytes(self.lf_source)

    def apply_change(
        self, start: Position, end: Position, new_text: str, version: int | None = None
    ) -> None:
        """Apply one incremental LSP content change and update the tree incrementally —
        except when the change inserts or removes a character of :data:`RESCAN_BYTES`: then
        the tree is parsed afresh (see there)."""
        old_source = self.source
        edit = self.splice(start, end, new_text)
        # the removed bytes, and the old bytes on either side (a prefix letter typed before a
        # quote turns a string into an f-string or a raw one)
        touched = old_source[max(edit.start_byte - 1, 0):edit.old_end_byte + 1]
        if any(byte in RESCAN_BYTES for byte in touched) or any(char in RESCAN_CHARS for char in new_text):
            self.tree = parse_bytes(self.lf_source)
        else:
            self.tree.edit(
                start_byte=edit.start_byte,
                old_end_byte=edit.old_end_byte,
                new_end_byte=edit.new_end_byte,
                start_point=Point(*edit.start_point),
                old_end_point=Point(*edit.old_end_point),
                new_end_point=Point(*edit.new_end_point),
            )
            self.tree = parse_bytes(self.lf_source, self.tree)
        if version is not None:
            self.version = version

    # -- functions --------------------------------------------------------------------
    def functions(self) -> list[FunctionInfo]:
        """Every function definition of the document, in source order."""
        return list(iter_functions(self))

    def function_at(self, position: Position) -> FunctionInfo | None:
        """The innermost function whose name or ``def`` line holds ``position``.

        Why only the name and the ``def`` line: hovering inside a body is about the code
        there, not about the function's name.
        """
        best: FunctionInfo | None = None
        for func in iter_functions(self):
            header_line = func.name_span.start.line
            if position.line == header_line or (
                func.name_span.start <= position <= func.name_span.end
            ):
                best = func
        return best


def _node_text(source: bytes, node: Node) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8", errors="replace")


def docstring_node(func_node: Node) -> Node | None:
    """The string statement that is the docstring of ``func_node``'s body, if any."""
    body = func_node.child_by_field_name("body")
    if body is None:
        return None
    for child in body.named_children:
        if child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_child_count == 1:
            expr = child.named_children[0]
            if expr.type in ("string", "concatenated_string"):
                return child
        return None
    return None


DOCSTRING_CACHE_ENTRIES = 1024
DOCSTRING_CACHED_LENGTH = 4096
"""Docstring literals longer than this (characters) are evaluated without the cache: the
cache is keyed by the literal, and a language server sees a new one at every keystroke in a
docstring, so its size must be bounded in bytes, not only in entries."""


def _evaluate_docstring(literal: str) -> str:
    """The cleaned value of a docstring literal (cached for literals of ordinary length)."""
    if len(literal) > DOCSTRING_CACHED_LENGTH:
        return _evaluate_docstring_uncached(literal)
    return _evaluate_docstring_cached(literal)


def _evaluate_docstring_uncached(literal: str) -> str:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = literal.strip("\"'rRuUbBfF")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return inspect.cleandoc(str(value))


_evaluate_docstring_cached = lru_cache(maxsize=DOCSTRING_CACHE_ENTRIES)(_evaluate_docstring_uncached)


def _strip_span(source: bytes, start: int, end: int, body_only: bool) -> str:
    """Text of ``source`` with ``[start, end)`` removed, keeping it valid Python.

    Whole lines are removed when the docstring stands on lines of its own; a body that held
    only the docstring gets ``...`` so that the result still parses.
    """
    line_start = source.rfind(b"\n", 0, start) + 1
    line_end = source.find(b"\n", end)
    line_end = len(source) if line_end < 0 else line_end + 1
    own_lines = (
        not source[line_start:start].strip() and not source[end:line_end].strip(b" \t\r\n;")
    )
    if body_only:
        return (source[:start] + b"..." + source[end:]).decode("utf-8", errors="replace")
    if own_lines:
        return (source[:line_start] + source[line_end:]).decode("utf-8", errors="replace")
    tail = source[end:]
    if tail.startswith(b";"):
        tail = tail[1:]
    return (source[:start] + tail).decode("utf-8", errors="replace")


def iter_functions(doc: Document) -> Iterator[FunctionInfo]:
    """Yield the functions of ``doc`` in source order, with Python-style qualified names."""
    source = doc.source
    # Stack of (node, qualname prefix).  Children are pushed in reverse for source order.
    stack: list[tuple[Node, str]] = [(doc.tree.root_node, "")]
    while stack:
        node, prefix = stack.pop()
        node_type = node.type
        child_prefix = prefix
        if node_type == "function_definition":
            info = _function_info(doc, node, prefix)
            if info is not None:
                yield info
                child_prefix = info.qualname + ".<locals>."
        elif node_type == "class_definition":
            name_node = node.child_by_field_name("name")
            if name_node is not None:
                child_prefix = prefix + _node_text(source, name_node) + "."
        for child in reversed(node.named_children):
            if child.type in _CONTAINER_TYPES:
                stack.append((child, child_prefix))


def _function_info(doc: Document, node: Node, prefix: str) -> FunctionInfo | None:
    source = doc.source
    name_node = node.child_by_field_name("name")
    if name_node is None or name_node.is_missing or name_node.start_byte == name_node.end_byte:
        return None
    name = _node_text(source, name_node)
    outer = node.parent if node.parent is not None and node.parent.type == "decorated_definition" else None
    root = outer if outer is not None else node
    decorators: tuple[str, ...] = ()
    if outer is not None:
        decorators = tuple(
            _node_text(source, child)[1:].strip()
            for child in outer.named_children
            if child.type == "decorator"
        )
    is_async = any(child.type == "async" for child in node.children[:2])
    start, end = root.start_byte, root.end_byte
    text = source[start:end].decode("utf-8", errors="replace")
    doc_node = docstring_node(node)
    docstring: str | None = None
    without = text
    if doc_node is not None:
        docstring = _evaluate_docstring(_node_text(source, doc_node))
        body = node.child_by_field_name("body")
        body_only = body is not None and body.named_child_count == 1
        local = doc.lf_source[start:end]  # whole lines of a CR-only file too (its \r become \n)
        without = _strip_span(
            local, doc_node.start_byte - start, doc_node.end_byte - start, body_only
        )
    return FunctionInfo(
        name=name,
        qualname=prefix + name,
        span=doc.span_of(start, end),
        name_span=doc.span_of(name_node.start_byte, name_node.end_byte),
        decorators=decorators,
        docstring=docstring,
        is_async=is_async,
        source=text,
        source_without_docstring=without,
        node=root,
    )
