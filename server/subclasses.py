"""Subclasses in the project's other files: a method one of them overrides keeps its name.

Why: the commonest shape of a plugin system is a base class whose methods other files
override (``base.py``: ``class Exporter: def write(self, rows): raise NotImplementedError``;
``csv_exporter.py``: ``class CsvExporter(Exporter): def write(self, rows): …``).  Renamed in
the base, ``write`` is edited with its calls (jedi), the overrides keep the old name, and
every subclass silently stops overriding.  Of 631 methods that only subclasses override in
13 installed packages, 259 are overridden in other files only; 201 of those are now found
(the rest: subclasses outside the package measured), ``python -m
pathfusion.model_export.override_offers --packages …`` (docs/results.md).

How, without parsing the whole project on a hover: each ``*.py`` file of the project (the
indexer's rules, :func:`pathfusion.server.workspace.discover`; the list walked again every
:data:`LIST_S`) is scanned once for its ``class`` headers and import aliases (regular
expressions; kept while the file's size and modification time hold).  Of a file whose header
names the class (or an alias of it), only the imports and that class's block are parsed, and
its base is resolved as an import would resolve it (:mod:`pathfusion.server.base_classes`:
relative imports, re-exports, aliases): a same-named class of another module is not taken for
a subclass.  Subclasses of subclasses are followed.  This runs on a thread of its own; a hover
waits a few milliseconds for it (:func:`project_subclasses`).  The project is the folder
:func:`~pathfusion.server.base_classes.origin_of` finds by its markers; a document outside it
(an installed package's file) is not looked at.  The subclasses' members also tell a rename
that a subclass would override (:mod:`pathfusion.server.rename_safety`).
"""

from __future__ import annotations

import ast
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from .base_classes import (
    Origin,
    Stamp,
    defining_class,
    imports_of,
    member_names,
    origin_of,
    parsed,
    resolve_base,
    source_stamp,
    through_branches,
)
from .workspace import WorkspaceError, discover

MAX_FILES = 20_000
"""The largest project scanned (more files: subclasses elsewhere are not looked for)."""
MAX_CLASSES = 500
"""How many subclasses, transitively, are read at most for one class."""
REFRESH_S = 1.0
"""How often the project's files are checked for changes (one ``stat`` each)."""
LIST_S = 30.0
"""How often the project's folders are walked again for new files (a walk of a 20,000-file
project takes ≈ 0.1 s of the background thread)."""
_HEADER_RE = re.compile(rb"^[ \t]*class[ \t]+(\w+)[ \t]*\(([^)]*)\)", re.MULTILINE)
_ALIAS_RE = re.compile(rb"\b(\w+)[ \t]+as[ \t]+(\w+)")
"""``import … Name as Other``: a subclass's header may name the base by its alias."""
_WORD_RE = re.compile(r"\w+")
_IMPORT_RE = re.compile(r"[ \t]*(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]")
"""An import statement at any depth: module level and inside ``if``/``try`` blocks (a few
inside functions come too, harmless: they only add names)."""
_CLASS_RE = re.compile(r"class[ \t]+(\w+)")
_LOCK = threading.RLock()

Subclass = tuple[tuple[str, str], frozenset[str]]
"""((module, class), the names its body binds)."""


@dataclass(frozen=True)
class _Headers:
    """What the scan of one file keeps: its ``class Name(bases)`` headers (the words of
    the bases) and its import aliases (name → the names it is imported as)."""

    classes: list[tuple[str, frozenset[str]]]
    aliases: dict[str, frozenset[str]]


@dataclass
class _Project:
    """The class headers of one project's files, inverted: which classes name a word in
    their bases.  Rebuilt when a file changes (checked every :data:`REFRESH_S`; the file
    list every :data:`LIST_S`)."""

    root: str
    files: list[Path] = field(default_factory=list)
    listed: float = -1e9
    refreshed: float = -1e9
    scanned: dict[Path, tuple[Stamp, _Headers]] = field(default_factory=dict)
    by_word: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)
    found: dict[tuple[str, str], list[Subclass]] = field(default_factory=dict)
    """Every subclass of (module, class), transitively, for the current headers."""

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self.listed >= LIST_S:
            self.files = _project_files(self.root)
            self.listed = now
        if now - self.refreshed < REFRESH_S:
            return
        self.refreshed = now
        scanned: dict[Path, tuple[Stamp, _Headers]] = {}
        for file in self.files:
            stamp = source_stamp(file)
            if stamp is None:
                continue
            hit = self.scanned.get(file)
            scanned[file] = hit if hit is not None and hit[0] == stamp else (stamp, _headers(file))
        if scanned.keys() == self.scanned.keys() and all(scanned[f] is self.scanned[f] for f in scanned):
            return
        self.scanned, self.found = scanned, {}
        self.by_word, self.aliases = {}, {}
        for file, (_, headers) in scanned.items():
            for name, words in headers.classes:
                for word in words:
                    self.by_word.setdefault(word, []).append((file, name))
            for name, aliases in headers.aliases.items():
                self.aliases.setdefault(name, set()).update(aliases)

    def subclasses(self, module: str, cls: str) -> list[Subclass]:
        """Every class of the project that derives from ``module.cls``, transitively."""
        key = (module, cls)
        if key not in self.found:
            found: list[Subclass] = []
            todo, seen = [key], {key}
            while todo and len(seen) <= MAX_CLASSES:
                base = todo.pop()
                for word in {base[1], *self.aliases.get(base[1], ())}:
                    for file, name in self.by_word.get(word, ()):
                        sub = _subclass(file, name, base)
                        if sub is not None and sub[0] not in seen:
                            seen.add(sub[0])
                            found.append(sub)
                            todo.append(sub[0])
            self.found[key] = found
        return self.found[key]


class NotRead:
    """The answer of a lookup that ran out of its time: the subclasses are still being read."""


NOT_READ = NotRead()


def overriding_subclass(origin: Origin, module: str, cls: str, name: str,
                        budget_s: float | None = None) -> str | NotRead | None:
    """``module.Sub.name`` of a class in another file of the project of ``origin`` that
    derives from ``module.cls`` (transitively) and defines ``name``; None when none does
    (:func:`project_subclasses` for ``budget_s``)."""
    found = project_subclasses(origin, module, cls, budget_s)
    if isinstance(found, NotRead):
        return found
    return next((f"{sub[0]}.{sub[1]}.{name}" for sub, members in found if name in members), None)


def project_subclasses(origin: Origin, module: str, cls: str, budget_s: float | None = None) -> list[Subclass] | NotRead:
    """The classes of the project of ``origin`` that derive from ``module.cls``, transitively.

    ``budget_s``: how long to wait (a hover: the reading goes on in the background, on a
    thread of its own; meanwhile the last answer, or :data:`NOT_READ` before the first); None:
    as long as it takes (a rename about to be applied)."""
    if origin.project is None:
        return []
    key = (origin.project, module, cls)
    if budget_s is None:
        return _subclasses_of(*key)
    with _PENDING_LOCK:
        last = _LAST.get(key)
    if last is not None and time.monotonic() - last[0] < REFRESH_S:
        return last[1]
    try:
        return _submit(key).result(timeout=budget_s)
    except FutureTimeout:
        return last[1] if last is not None else NOT_READ


def scan_project(origin: Origin, classes: list[tuple[str, str]]) -> None:
    """Start reading the project's class headers and the subclasses of ``classes`` ((module,
    class) of the document) on the background thread: a hover then finds them read.  Returns
    at once."""
    if origin.project is not None:
        for module, cls in classes:
            _submit((origin.project, module, cls))


def _submit(key: tuple[str, str, str]) -> Future[list[Subclass]]:
    """The pending or a new background lookup of ``key`` (a finished one is run again: its
    files may have changed, and a lookup with nothing changed costs a dictionary read)."""
    with _PENDING_LOCK:
        pending = _PENDING.get(key)
        if pending is not None and not pending.done():
            return pending
        if not _WORKER:
            _WORKER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="pathfusion-subclasses"))
        future = _PENDING[key] = _WORKER[0].submit(_subclasses_of, *key)
        while len(_PENDING) > 256:
            _PENDING.pop(next(iter(_PENDING)))
        return future


def _subclasses_of(root: str, module: str, cls: str) -> list[Subclass]:
    with _LOCK:
        project = _project(root)
        project.refresh()
        found = project.subclasses(module, cls)
    with _PENDING_LOCK:
        _LAST[(root, module, cls)] = (time.monotonic(), found)
        while len(_LAST) > 1024:
            _LAST.pop(next(iter(_LAST)))
    return found


def _project(root: str) -> _Project:
    found = _PROJECTS.get(root)
    if found is None:
        found = _PROJECTS[root] = _Project(root)
        while len(_PROJECTS) > 8:
            _PROJECTS.popitem(last=False)
    return found


def _subclass(file: Path, name: str, base: tuple[str, str]) -> Subclass | None:
    """((module, class), members) of the top-level class ``name`` of ``file`` when one of its
    bases resolves to ``base``.  Only the file's import statements and that class's block are
    parsed (:func:`_outline`): a project's subclasses of a popular base are hundreds of large
    files (transformers' models: 0.02–0.04 s each to parse whole)."""
    origin = origin_of(str(file))
    module = origin.module
    outline = _outline(file) if module else None
    if module is None or outline is None or name not in outline.blocks:
        return None
    imports, local = outline.imports(origin.package), set(outline.blocks)
    node = outline.node(name) or _whole_file_class(file, module, name)
    if node is None:
        return None
    for expr in node.bases:
        found = resolve_base(expr, imports, local, module)
        if found is not None and defining_class(*found, origin.path) == base:
            return (module, name), frozenset(member_names(node))
    return None


def _whole_file_class(file: Path, module: str, name: str) -> ast.ClassDef | None:
    """The class parsed with its whole file: its block alone did not parse (a string in it
    with lines at column 0 ends the block early)."""
    tree, _ = parsed(file, module)
    body = tree.body if tree is not None else []
    return next((s for s in through_branches(body) if isinstance(s, ast.ClassDef) and s.name == name), None)


@dataclass
class _Outline:
    """A file's import statements and where each top-level class's block lies (lines
    ``[start, end)``; the block is read again and parsed on demand: kept as text, a large
    project's blocks would hold most of its source in memory)."""

    file: Path
    import_source: str
    blocks: dict[str, tuple[int, int]]
    _imports: dict[str | None, dict[str, tuple[str, str]]] = field(default_factory=dict)

    def imports(self, package: str | None) -> dict[str, tuple[str, str]]:
        if package not in self._imports:
            try:
                tree = ast.parse(self.import_source)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                tree = ast.Module(body=[], type_ignores=[])
            self._imports[package] = imports_of(tree, package)
        return self._imports[package]

    def node(self, name: str) -> ast.ClassDef | None:
        start, end = self.blocks[name]
        try:
            lines = self.file.read_bytes().decode("utf-8").splitlines()
            tree = ast.parse("\n".join(lines[start:end]))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        found = tree.body[0] if tree.body else None
        return found if isinstance(found, ast.ClassDef) else None


def _outline(file: Path) -> _Outline | None:
    """The :class:`_Outline` of ``file``, kept while its stamp holds."""
    stamp = source_stamp(file)
    if stamp is None:
        return None
    hit = _OUTLINES.get(file)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        text = file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.splitlines()
    imports = [_IMPORT_RE.match(line) for line in lines]
    statements: list[str] = []
    blocks: dict[str, tuple[int, int]] = {}
    for index, line in enumerate(lines):
        found = imports[index]
        if found is not None:
            statements.append(_logical_line(lines, index).strip())
        elif line.startswith("class "):
            header = _CLASS_RE.match(line)
            if header is not None:
                end = next((k for k in range(index + 1, len(lines)) if lines[k][:1] not in ("", " ", "\t", "#", ")")),
                           len(lines))
                blocks[header.group(1)] = (index, end)
    outline = _Outline(file, "\n".join(statements), blocks)
    _OUTLINES[file] = (stamp, outline)
    while len(_OUTLINES) > 4096:
        _OUTLINES.popitem(last=False)
    return outline


def _logical_line(lines: list[str], index: int) -> str:
    """The import statement starting on ``lines[index]``, through its parentheses or
    backslashes."""
    text = lines[index]
    depth = text.count("(") - text.count(")")
    while (depth > 0 or text.endswith("\\")) and index + 1 < len(lines):
        index += 1
        text = text.rstrip("\\") + " " + lines[index].strip()
        depth += lines[index].count("(") - lines[index].count(")")
    return text


def _project_files(project: str) -> list[Path]:
    try:
        found = discover(project).files
    except WorkspaceError:
        found = []
    return found if len(found) <= MAX_FILES else []


def _headers(file: Path) -> _Headers:
    """The ``class Name(bases)`` headers of ``file`` and its import aliases."""
    try:
        text = file.read_bytes()
    except OSError:
        return _NONE
    classes = [(m.group(1).decode("utf-8", "replace"), frozenset(_WORD_RE.findall(m.group(2).decode("utf-8", "replace"))))
               for m in _HEADER_RE.finditer(text)]
    aliases: dict[str, set[str]] = {}
    for m in _ALIAS_RE.finditer(text) if classes else ():
        aliases.setdefault(m.group(1).decode("utf-8", "replace"), set()).add(m.group(2).decode("utf-8", "replace"))
    return _Headers(classes, {name: frozenset(names) for name, names in aliases.items()})


_PROJECTS: OrderedDict[str, _Project] = OrderedDict()
_PENDING: dict[tuple[str, str, str], Future[list[Subclass]]] = {}
_LAST: dict[tuple[str, str, str], tuple[float, list[Subclass]]] = {}
"""The last answer for (project, module, class) and when it was computed."""
_PENDING_LOCK = threading.Lock()
_WORKER: list[ThreadPoolExecutor] = []
_OUTLINES: OrderedDict[Path, tuple[Stamp, _Outline]] = OrderedDict()
_NONE = _Headers([], {})
