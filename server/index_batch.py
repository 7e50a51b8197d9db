"""A batch of changed files on its way into the index: read and parsed, then committed.

:mod:`pathfusion.server.indexing` decides which files to look at, when, and when to encode; this
module is what happens to each file: :func:`read_changed` skips an unchanged one (same
(mtime, size) during a sync, same content hash always) and parses a changed one into its
functions, each with the hash of its text — the key of the vector cache
(:func:`cached_vectors`), so that only new or edited functions are encoded.
:func:`commit` stores a batch in one transaction: a function whose text did not change
keeps its label (only its position is updated); others are marked deleted and new labels
are allocated — by the process holding ``write.lock``, caught up with the others
(:mod:`pathfusion.server.index_store`), so two writers never take the same label.

Why a module of its own: the rules of a commit (labels, the vector cache, what moved) read
best without the bookkeeping of runs around them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .index_files import FUNCTION_COLUMNS
from .index_store import IndexStore
from .lexical import function_terms, name_terms
from .overloads import listed_functions
from .parsing import Document, FunctionInfo, SourceError, decode_source

if TYPE_CHECKING:
    from .indexing import IndexStats

SNIPPET_CHARS = 300
SNIPPET_LINES = 8


def text_hash(text: str) -> str:
    """The key of a function's vector in the cache: the sha256 of its text (lone surrogates
    of undecodable source kept, so that every text has one)."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def snippet_of(source: str) -> str:
    """The first lines of a function (at most :data:`SNIPPET_LINES` lines, 300 chars)."""
    lines = source.splitlines()[:SNIPPET_LINES]
    text = "\n".join(line.rstrip() for line in lines)
    if len(text) > SNIPPET_CHARS:
        cut = text.rfind("\n", 0, SNIPPET_CHARS)
        text = text[: cut if cut > 0 else SNIPPET_CHARS]
    return text


@dataclass
class PendingFile:
    """A parsed file waiting for its vectors."""

    path: str
    mtime_ns: int
    size: int
    content_hash: str
    functions: list[tuple[FunctionInfo, str]]
    """(function, hash of its source text)"""


_Row = tuple[str, str, str, int, int, int, int, str, str]
"""(path, qualname, name, start line, start char, end line, end char, snippet, content hash)"""


def read_changed(store: IndexStore, path: str, known: tuple[int, int, str] | None, stats: IndexStats,
                 trust_stat: bool, max_file_size: int) -> PendingFile | None:
    """The file's functions when it changed since it was indexed, else None.  With
    ``trust_stat`` an unchanged (mtime, size) means unchanged content (``sync``); explicit
    updates (saves) always compare the content hash."""
    try:
        st = os.stat(path)
        if (trust_stat and known is not None and known[0] == st.st_mtime_ns
                and known[1] == st.st_size):
            return None
        with open(path, "rb") as fh:
            data = fh.read(max_file_size + 1)
    except OSError as exc:
        stats.skipped.append((path, f"unreadable ({exc.strerror or exc})"))
        return None
    digest = hashlib.sha256(data).hexdigest()
    if known is not None and known[2] == digest:
        with store.lock, store.db:
            store.db.execute("UPDATE files SET mtime_ns = ?, size = ? WHERE path = ?",
                             (st.st_mtime_ns, st.st_size, path))
        return None
    functions: list[tuple[FunctionInfo, str]] = []
    if len(data) > max_file_size:
        stats.skipped.append((path, f"larger than {max_file_size} bytes"))
    else:
        try:
            doc = Document(decode_source(data, origin=path), uri=Path(path).as_uri())
            functions = [(func, text_hash(func.search_text)) for func in listed_functions(doc.functions())]
        except SourceError as exc:
            stats.skipped.append((path, str(exc)))
    stats.changed += 1
    return PendingFile(path, st.st_mtime_ns, st.st_size, digest, functions)


def cached_vectors(store: IndexStore, hashes: set[str]) -> dict[str, np.ndarray]:
    """The stored vectors of the texts hashed ``hashes`` that the cache has (lock held)."""
    found: dict[str, np.ndarray] = {}
    items = list(hashes)
    for start in range(0, len(items), 500):
        chunk = items[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for digest, blob in store.db.execute(
                f"SELECT content_hash, vector FROM vectors WHERE content_hash IN ({marks})", chunk):
            if len(blob) == 4 * store.dim:
                found[digest] = np.frombuffer(blob, dtype=np.float32)
    return found


def commit(store: IndexStore, pending: list[PendingFile], cached: dict[str, np.ndarray],
           fresh: dict[str, np.ndarray], stats: IndexStats) -> None:
    """Write the files' functions (one transaction), then apply the same change to the
    graph, the matrix and the name look-up (lock held)."""
    db = store.db
    next_label = store.space.next_label
    added: list[tuple[int, _Row, np.ndarray]] = []
    renamed: list[tuple[int, _Row]] = []
    deleted: list[int] = []
    with db:
        db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)",
                       [(h, v.astype(np.float32).tobytes()) for h, v in fresh.items()])
        for item in pending:
            old: dict[str, list[tuple[int, _Row]]] = {}
            for label, *columns in db.execute(
                    "SELECT label, path, qualname, name, start_line, start_char, end_line, end_char, "
                    "snippet, content_hash FROM functions WHERE path = ? AND deleted = 0 ORDER BY label",
                    (item.path,)):
                row: _Row = tuple(columns)
                old.setdefault(row[8], []).append((label, row))
            counted: set[str] = set()
            for func, digest in item.functions:
                if digest in fresh and digest not in counted:
                    stats.embedded += 1
                    counted.add(digest)
                else:
                    stats.cached += 1
                new: _Row = (item.path, func.qualname, func.name, func.span.start.line,
                             func.span.start.character, func.span.end.line, func.span.end.character,
                             snippet_of(func.source), digest)
                reuse = old.get(digest)
                if reuse:
                    label, previous = reuse.pop(0)
                    if previous != new:  # moved: same text, same vector
                        db.execute("UPDATE functions SET path=?, qualname=?, name=?, start_line=?, "
                                   "start_char=?, end_line=?, end_char=?, snippet=?, content_hash=?, "
                                   "name_terms=? WHERE label = ?", (*new, name_terms(func.name), label))
                        if previous[1] != new[1]:
                            renamed.append((label, new))
                    continue
                label = next_label
                next_label += 1
                db.execute(f"INSERT INTO functions ({FUNCTION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           (label, *new, name_terms(func.name), function_terms(func.search_text)))
                added.append((label, new, fresh[digest] if digest in fresh else cached[digest]))
            gone = [label for entries in old.values() for label, _ in entries]
            if gone:
                marks = ",".join("?" * len(gone))
                db.execute(f"UPDATE functions SET deleted = 1 WHERE label IN ({marks})", gone)
                deleted.extend(gone)
            db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                       (item.path, item.mtime_ns, item.size, item.content_hash))
        store.bump_generation()
    for label in deleted:
        store.forget(label)
    if added:
        labels = np.fromiter((label for label, _, _ in added), dtype=np.int64, count=len(added))
        vectors = np.stack([vector for _, _, vector in added]).astype(np.float32, copy=False)
        store.space.reserve(next_label)
        store.space.add(labels, vectors)
        store.saver.unsaved += len(added)
    store.space.next_label = next_label
    if store.lookup is not None:
        for label, row in renamed:
            store.lookup.add(label, row[2], row[1])
        for label, row, _ in added:
            store.lookup.add(label, row[2], row[1])
