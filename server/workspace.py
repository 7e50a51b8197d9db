"""Which files of a workspace are indexed (docs/design.md §8 "Index"; §10: symlink loops,
unreadable files).

Rules, in the order they are applied to every directory entry:

1. **Default skips** — directories named in :data:`SKIP_DIRS` (``.git``, ``.venv``, ``venv``,
   ``node_modules``, ``site-packages``, ``__pycache__``, ``.tox``, ``build``, ``dist``, a few
   tool caches) and every directory that holds a ``pyvenv.cfg`` (a virtual environment,
   whatever its name).  The workspace root itself is never skipped by these rules.
2. **.gitignore** — every ``.gitignore`` from the root down to the entry's directory (plus
   ``.git/info/exclude`` at the root), with git's semantics (:class:`GitIgnore`): patterns
   are relative to the directory of their file, a deeper file's decision overrides a
   shallower one, the last matching line of a file wins, ``!pattern`` re-includes, ``dir/``
   matches directories only, and nothing inside an ignored directory can be re-included
   (the walk does not enter it, as git does).
3. **exclude globs** (``pathfusion.exclude``) — the same patterns, matched against the path
   relative to the root (``generated/``, ``*_pb2.py``, ``tests/**``, ``/setup.py``).
4. Only regular ``*.py`` files; files larger than ``max_file_size`` bytes are skipped.
5. **Symlinks** are followed while they stay inside the root (by real path): a link that
   leads outside it — a link to ``/`` would walk the whole file system — is skipped and
   reported, unless ``follow_external_symlinks`` (the ``followExternalSymlinks`` setting)
   says otherwise.  Every directory is entered at most once by its real path (a loop or a
   second link to the same folder is skipped and reported); a file reached twice through
   links is indexed once; broken links are reported.
6. Unreadable directories and files (permission denied, vanished during the walk) are
   skipped and reported, never raised.

**Why a matcher of its own** (not pathspec, which translated each pattern into one Python
regular expression): a backtracking regex engine takes exponential time on patterns such as
``*a*a*a*a*a*a*a*a*a*a*a*a*b`` against a 36-letter name made of ``a`` — one ``.gitignore`` line
froze the server for minutes.  :func:`glob_regex` still compiles to ``re`` (C speed on the
common patterns), but in a form without nested choices: every run of text between two
``*`` is matched at its *first* occurrence and never reconsidered (a lookahead that captures
plus a back-reference, the atomic group of Python < 3.11), and so is every run of segments
between two ``**``.  For glob patterns the first occurrence is always a right choice, so the
answers are git's and the time is O(pattern × path).

The walk is iterative (deep trees cannot raise ``RecursionError``) and sorted, so the result
is deterministic.  :func:`discover` returns the files and the skipped ``(path, reason)``
pairs; :class:`WorkspaceFilter` answers the same question for one path (a saved or watched
file), for the index's incremental updates.

Why one module of ~540 lines: which files a workspace index holds is one decision — the
.gitignore matcher, excludes, virtual-environment and size rules, symlink policy — and the
rules interact (a file is indexed only when all agree), so they are read and tested
together.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "node_modules", "site-packages", "__pycache__",
    ".tox", ".nox", "build", "dist", ".eggs", ".mypy_cache", ".pytest_cache", ".ruff_cache",
})
"""Directory names never entered (below the root)."""
VENV_MARKER = "pyvenv.cfg"
GITIGNORE = ".gitignore"


class WorkspaceError(Exception):
    """The workspace root cannot be walked (missing, not a directory)."""


@dataclass
class Discovery:
    """What :func:`discover` found."""

    root: Path
    files: list[Path] = field(default_factory=list)
    """Absolute paths (under ``root`` as walked, links not resolved), sorted."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Paths left out for a reason worth telling the user (not the ignored or excluded
    ones, which are the user's own choice, nor the default skips)."""
    ignored: int = 0
    """Entries left out by .gitignore, exclude globs or the default skips."""


# --------------------------------------------------------------------------- gitignore patterns


class GlobError(ValueError):
    """A pattern that git never matches (an unterminated ``[``, a trailing backslash)."""


_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v", "upper": "A-Z", "xdigit": "0-9A-Fa-f",
}
"""``[[:name:]]`` classes of git's wildmatch, as ``re`` class contents (ASCII, like git)."""
_STAR = object()
"""A ``*`` in the tokens of one segment."""
_GLOBSTAR = "**"
"""A whole segment ``**`` in the segments of a pattern."""


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """The ``re`` equivalent of the bracket expression opening at ``pattern[start]`` and the
    index after it.  Never matches ``/`` (git's wildmatch in path mode)."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] in "!^"
    i += negate
    items: list[str] = []
    first = True
    while True:
        if i >= n:
            raise GlobError(f"unterminated [ in {pattern!r}")
        char = pattern[i]
        if char == "]" and not first:
            i += 1
            break
        first = False
        if char == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2:end] if end >= 0 else ""
            if name not in _POSIX_CLASSES:
                raise GlobError(f"unknown character class in {pattern!r}")
            items.append(_POSIX_CLASSES[name])
            i = end + 2
            continue
        if char == "\\":
            i += 1
            if i >= n:
                raise GlobError(f"trailing backslash in {pattern!r}")
            char = pattern[i]
        i += 1
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            high = pattern[i + 1]
            i += 2
            if high == "\\":
                if i >= n:
                    raise GlobError(f"trailing backslash in {pattern!r}")
                high, i = pattern[i], i + 1
            if char <= high:  # git matches nothing for a reversed range
                items.append(f"{re.escape(char)}-{re.escape(high)}")
            continue
        items.append(re.escape(char))
    if negate:
        return "[^/" + "".join(items) + "]", i
    return ("(?!/)[" + "".join(items) + "]", i) if items else ("(?!)", i)


def _segment_tokens(segment: str) -> list[object]:
    """``*`` as :data:`_STAR`, everything else as ``re`` text (one token per glob item)."""
    tokens: list[object] = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        if char == "*":
            if not tokens or tokens[-1] is not _STAR:  # "**" inside a segment is one "*"
                tokens.append(_STAR)
            i += 1
        elif char == "?":
            tokens.append("[^/]")
            i += 1
        elif char == "[":
            text, i = _bracket(segment, i)
            tokens.append(text)
        else:
            if char == "\\":
                i += 1
                if i >= n:
                    raise GlobError(f"trailing backslash in {segment!r}")
                char = segment[i]
            tokens.append(re.escape(char))
            i += 1
    return tokens


def _segment_regex(segment: str, names: Iterable[int]) -> str:
    """``re`` text matching one path segment (no ``/``) against a glob segment.

    The text between two stars is found at its first occurrence and kept (``(?=(?P<gN>…))``
    then ``(?P=gN)``: the group cannot be re-entered); only the last star backtracks, over
    one segment, against text of fixed length.  ``names`` numbers the groups."""
    chunks: list[list[str]] = [[]]
    for token in _segment_tokens(segment):
        if token is _STAR:
            chunks.append([])
        else:
            chunks[-1].append(str(token))
    texts = ["".join(chunk) for chunk in chunks]
    if len(texts) == 1:
        return texts[0]
    parts = [texts[0]]
    numbers = iter(names)
    for middle in texts[1:-1]:
        name = f"g{next(numbers)}"
        parts.append(f"(?=(?P<{name}>[^/]*?{middle}))(?P={name})")
    parts.append("[^/]*" + texts[-1])
    return "".join(parts)


def glob_regex(pattern: str) -> tuple[re.Pattern[str], bool]:
    """A gitignore pattern (without ``!`` and trailing ``/``) as a compiled regex and whether
    it is anchored.  An anchored pattern (a ``/`` at its start or middle) matches ``"/" +
    path`` relative to its ``.gitignore``; another one matches a name (the last segment).

    ``**`` segments: leading ``**/`` = any directories, ``/**/`` = zero or more directories,
    trailing ``/**`` = everything inside.  Like the stars of a segment, a run of segments
    after a ``**`` is matched at its first occurrence (the module docstring says why).
    Raises :class:`GlobError` for patterns git never matches."""
    names = itertools.count()
    anchored = "/" in pattern
    segments = [part for part in pattern.split("/") if part]
    if not anchored:
        return re.compile(_segment_regex(pattern, names), re.DOTALL), False
    elements: list[str] = []
    for segment in segments:  # "**/**" is one "**"
        if segment == _GLOBSTAR and elements and elements[-1] == _GLOBSTAR:
            continue
        elements.append(segment)
    parts: list[str] = []
    run: list[str] = []
    after_globstar = False

    def close_run(last: bool) -> None:
        text = "".join("/" + item for item in run)
        if not after_globstar:
            parts.append(text)
        elif last:
            parts.append("(?:/[^/]+)*" + text)
        else:
            name = f"g{next(names)}"
            parts.append(f"(?=(?P<{name}>(?:/[^/]+)*?{text}(?=/|\\Z)))(?P={name})")
        run.clear()

    for element in elements:
        if element == _GLOBSTAR:
            if run or not after_globstar:
                close_run(last=False)
            after_globstar = True
        else:
            run.append(_segment_regex(element, names))
    if run or not elements:
        close_run(last=True)
    elif elements[-1] == _GLOBSTAR:
        parts.append("(?:/[^/]+)+")  # trailing "/**": at least one thing inside
    return re.compile("".join(parts), re.DOTALL), True


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    anchored: bool
    negated: bool
    dir_only: bool


def _rule(line: str) -> _Rule | None:
    """One ``.gitignore`` line as a rule; None for blank lines and comments.  Raises
    :class:`GlobError` for patterns git never matches."""
    if line.startswith("#"):
        return None
    end = len(line)
    while end and line[end - 1] == " ":  # trailing spaces go, unless escaped ("\\ ")
        backslashes = len(line[:end - 1]) - len(line[:end - 1].rstrip("\\"))
        if backslashes % 2:
            break
        end -= 1
    line = line[:end]
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/") if dir_only else line
    if not line:
        return None
    regex, anchored = glob_regex(line)
    return _Rule(regex, anchored, negated, dir_only)


class GitIgnore:
    """The lines of one ``.gitignore`` (or of the exclude globs); :meth:`check` answers in
    O(pattern × path) per line, whatever the patterns (module docstring)."""

    def __init__(self, lines: Iterable[str]) -> None:
        rules: list[_Rule] = []
        for line in lines:
            try:
                rule = _rule(line.rstrip("\r\n"))
            except GlobError:  # git never matches it; it must not stop the walk
                continue
            if rule is not None:
                rules.append(rule)
        self.rules = tuple(reversed(rules))
        """Last line first: the last matching line decides."""

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check(self, rel: str, is_dir: bool) -> bool | None:
        """True: ``rel`` (POSIX, relative to the file's folder) is ignored, False: a ``!``
        line re-includes it, None: no line matches.  Only ``rel`` itself is matched, not its
        parents: the walk checks each directory before it enters it."""
        name = rel.rsplit("/", 1)[-1]
        path = "/" + rel
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.fullmatch(path if rule.anchored else name) is not None:
                return not rule.negated
        return None


def _compile(lines: Iterable[str]) -> GitIgnore | None:
    spec = GitIgnore(lines)
    return spec if spec else None


def _read_spec(path: Path) -> GitIgnore | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return _compile(text.splitlines())


# --------------------------------------------------------------------------- the rules


def is_inside(real: str, real_root: str) -> bool:
    """Whether the path ``real`` is ``real_root`` or below it (both absolute, same form:
    both real paths, or both as written)."""
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


class WorkspaceFilter:
    """The rules of the module docstring for one root; caches the ``.gitignore`` files read."""

    def __init__(self, root: Path | str, exclude: Iterable[str] = (), max_file_size: int = 1_000_000, *,
                 follow_external_symlinks: bool = False) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.real_root = os.path.realpath(self.root)
        self.follow_external_symlinks = follow_external_symlinks
        self.max_file_size = int(max_file_size)
        self.exclude = _compile(exclude)
        self._specs: dict[str, GitIgnore | None] = {}
        info = self.root / ".git" / "info" / "exclude"
        self._info_exclude = _read_spec(info) if info.is_file() else None

    # -- .gitignore ------------------------------------------------------------------------
    def _spec(self, rel_dir: str) -> GitIgnore | None:
        """The ``.gitignore`` of directory ``rel_dir`` ("" = root), cached."""
        if rel_dir not in self._specs:
            folder = self.root / rel_dir if rel_dir else self.root
            gitignore = folder / GITIGNORE
            self._specs[rel_dir] = _read_spec(gitignore) if gitignore.is_file() else None
        return self._specs[rel_dir]

    def gitignored(self, rel: str, is_dir: bool) -> bool:
        """Whether the ``.gitignore`` files of the entry's ancestors ignore it (``rel`` is
        relative to the root, POSIX separators).  Ancestors are assumed not ignored."""
        parts = rel.split("/")
        decision: bool | None = None
        if self._info_exclude is not None:
            decision = self._info_exclude.check(rel, is_dir)
        for depth in range(len(parts)):  # root's .gitignore first, the deepest last (wins)
            base = "/".join(parts[:depth])
            spec = self._spec(base)
            if spec is None:
                continue
            result = spec.check("/".join(parts[depth:]), is_dir)
            if result is not None:
                decision = result
        return bool(decision)

    def excluded(self, rel: str, is_dir: bool) -> bool:
        if self.exclude is None:
            return False
        return bool(self.exclude.check(rel, is_dir))

    def escapes(self, path: Path | str) -> bool:
        """Whether ``path`` leads outside the root through a symlink (and the rules say not
        to follow such links)."""
        if self.follow_external_symlinks:
            return False
        try:
            return not is_inside(os.path.realpath(path), self.real_root)
        except OSError:
            return True

    # -- one entry ---------------------------------------------------------------------------
    def dir_reason(self, path: Path, rel: str) -> str | None:
        """Why the directory ``path`` (``rel`` to the root) is not entered, or None."""
        if path.name in SKIP_DIRS:
            return "default skip"
        try:
            if (path / VENV_MARKER).exists():
                return "virtual environment"
        except OSError:
            pass
        if self.gitignored(rel, True):
            return "gitignored"
        if self.excluded(rel, True):
            return "excluded"
        return None

    def file_reason(self, rel: str) -> str | None:
        """Why the ``.py`` file ``rel`` is ignored by the user's rules, or None."""
        if self.gitignored(rel, False):
            return "gitignored"
        if self.excluded(rel, False):
            return "excluded"
        return None

    def relative(self, path: Path | str) -> str | None:
        """``path`` relative to the root (POSIX), or None when it lies outside."""
        absolute = os.path.abspath(Path(path).expanduser())
        try:
            rel = os.path.relpath(absolute, self.root)
        except ValueError:  # another drive on Windows
            return None
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return None
        return Path(rel).as_posix()

    def check(self, path: Path | str) -> str | None:
        """Why the single file ``path`` is not indexed (None: it is).  Checks every ancestor
        directory as :func:`discover` would, then the file itself (existence, size, access).
        """
        rel = self.relative(path)
        if rel is None:
            return "outside the workspace"
        if not rel.endswith(".py"):
            return "not a .py file"
        if self.escapes(self.root / rel):
            return "outside the workspace (through a symlink)"
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            rel_dir = "/".join(parts[:depth])
            reason = self.dir_reason(self.root / rel_dir, rel_dir)
            if reason is not None:
                return f"inside a skipped directory ({reason})"
        reason = self.file_reason(rel)
        if reason is not None:
            return reason
        return file_problem(self.root / rel, self.max_file_size)


def file_problem(path: Path, max_file_size: int) -> str | None:
    """None when ``path`` is a readable regular file within the size limit, else why not
    (shared by discovery and the rename path, :mod:`pathfusion.server.rename_files`)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "broken symlink" if path.is_symlink() else "no such file"
    except OSError as exc:
        return f"cannot stat ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > max_file_size:
        return f"larger than {max_file_size} bytes ({st.st_size})"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def discover(root: Path | str, exclude: Iterable[str] = (), max_file_size: int = 1_000_000, *,
             cancelled: Callable[[], bool] | None = None, follow_external_symlinks: bool = False) -> Discovery:
    """Every ``*.py`` file of the workspace ``root`` that the rules above keep.

    Raises :class:`WorkspaceError` only when ``root`` itself is not a readable directory.
    ``cancelled`` is polled once per directory; when it returns True the walk stops and
    returns what it found so far.  ``follow_external_symlinks`` also follows the links that
    lead outside ``root`` (rule 5).
    """
    rules = WorkspaceFilter(root, exclude, max_file_size, follow_external_symlinks=follow_external_symlinks)
    root_path = rules.root
    if not root_path.exists():
        raise WorkspaceError(f"{root_path}: no such directory")
    if not root_path.is_dir():
        raise WorkspaceError(f"{root_path}: not a directory")
    found = Discovery(root=root_path)
    seen_dirs: set[str] = set()
    links: list[Path] = []
    stack: list[tuple[Path, str]] = [(root_path, "")]
    while stack:
        if cancelled is not None and cancelled():
            break
        folder, rel_dir = stack.pop()
        try:
            real = os.path.realpath(folder)
        except OSError as exc:
            found.skipped.append((folder, f"cannot resolve ({exc})"))
            continue
        if real in seen_dirs:
            found.skipped.append((folder, "symlink loop or second link to a visited directory"))
            continue
        seen_dirs.add(real)
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except PermissionError:
            found.skipped.append((folder, "permission denied"))
            continue
        except OSError as exc:
            found.skipped.append((folder, f"cannot list ({exc.strerror or exc})"))
            continue
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_link = entry.is_symlink()
            except OSError:
                is_dir, is_link = False, True
            if is_link and (is_dir or entry.name.endswith(".py")) and rules.escapes(path):
                found.skipped.append((path, "symlink to outside the workspace"))
                continue
            if is_dir:
                reason = rules.dir_reason(path, rel)
                if reason is None:
                    subdirs.append((path, rel))
                else:
                    found.ignored += 1
                continue
            if not entry.name.endswith(".py"):
                continue
            if rules.file_reason(rel) is not None:
                found.ignored += 1
                continue
            problem = file_problem(path, rules.max_file_size)
            if problem is not None:
                found.skipped.append((path, problem))
                continue
            (links if is_link else found.files).append(path)
        stack.extend(reversed(subdirs))
    if links:  # a file reached through a link is indexed once, by its first plain path
        seen_files = {os.path.realpath(path) for path in found.files}
        for path in sorted(links):
            real_file = os.path.realpath(path)
            if real_file in seen_files:
                found.skipped.append((path, "second link to an indexed file"))
            else:
                seen_files.add(real_file)
                found.files.append(path)
    found.files.sort()
    return found
