"""Which files of a workspace are indexed (design §8 "Index", §10 symlink loops, unreadable files).

Rules, in the order they are applied to every directory entry:

1. **Default skips** — directories named in :data:`SKIP_DIRS` (``.git``, ``.venv``, ``venv``,
   ``node_modules``, ``site-packages``, ``__pycache__``, ``.tox``, ``build``, ``dist``, a few
   tool caches) and every directory that holds a ``pyvenv.cfg`` (a virtual environment,
   whatever its name).  The workspace root itself is never skipped by these rules.
2. **.gitignore** — every ``.gitignore`` from the root down to the entry's directory (plus
   ``.git/info/exclude`` at the root), with git's semantics through pathspec's
   ``GitIgnoreSpec`` (gitwildmatch): patterns are relative to the directory of their file, a
   deeper file's decision overrides a shallower one, ``!pattern`` re-includes, ``dir/``
   matches directories only, and nothing inside an ignored directory can be re-included
   (the walk does not enter it, as git does).
3. **exclude globs** (``pathfusion.exclude``) — gitwildmatch patterns matched against the
   path relative to the root (``generated/``, ``*_pb2.py``, ``tests/**``, ``/setup.py``).
4. Only regular ``*.py`` files; files larger than ``max_file_size`` bytes are skipped.
5. **Symlinks** are followed, but every directory is entered at most once by its real path
   (a loop or a second link to the same folder is skipped and reported); a file reached
   twice through links is indexed once; broken links are reported.
6. Unreadable directories and files (permission denied, vanished during the walk) are
   skipped and reported, never raised.

The walk is iterative (deep trees cannot raise ``RecursionError``) and sorted, so the result
is deterministic.  :func:`discover` returns the files and the skipped ``(path, reason)``
pairs; :class:`WorkspaceFilter` answers the same question for one path (a saved or watched
file), for the index's incremental updates.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

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


def _compile(lines: Iterable[str]) -> pathspec.PathSpec | None:
    lines = [line for line in lines if line.strip()]
    if not lines:
        return None
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except Exception:  # a malformed pattern must not stop the walk; keep the valid ones
        good = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
                good.append(line)
            except Exception:
                continue
        return pathspec.GitIgnoreSpec.from_lines(good) if good else None


def _read_spec(path: Path) -> pathspec.PathSpec | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return _compile(text.splitlines())


class WorkspaceFilter:
    """The rules of the module docstring for one root; caches the ``.gitignore`` files read."""

    def __init__(self, root: Path | str, exclude: Iterable[str] = (), max_file_size: int = 1_000_000) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self.max_file_size = int(max_file_size)
        self.exclude = _compile(exclude)
        self._specs: dict[str, pathspec.PathSpec | None] = {}
        info = self.root / ".git" / "info" / "exclude"
        self._info_exclude = _read_spec(info) if info.is_file() else None

    # -- .gitignore ------------------------------------------------------------------------
    def _spec(self, rel_dir: str) -> pathspec.PathSpec | None:
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
        candidate = rel + "/" if is_dir else rel
        decision: bool | None = None
        if self._info_exclude is not None:
            result = self._info_exclude.check_file(candidate)
            if result.include is not None:
                decision = result.include
        for depth in range(len(parts)):  # root's .gitignore first, the deepest last (wins)
            base = "/".join(parts[:depth])
            spec = self._spec(base)
            if spec is None:
                continue
            local = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(local)
            if result.include is not None:
                decision = result.include
        return bool(decision)

    def excluded(self, rel: str, is_dir: bool) -> bool:
        if self.exclude is None:
            return False
        return bool(self.exclude.match_file(rel + "/" if is_dir else rel))

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
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            rel_dir = "/".join(parts[:depth])
            reason = self.dir_reason(self.root / rel_dir, rel_dir)
            if reason is not None:
                return f"inside a skipped directory ({reason})"
        reason = self.file_reason(rel)
        if reason is not None:
            return reason
        return _file_problem(self.root / rel, self.max_file_size)


def _file_problem(path: Path, max_file_size: int) -> str | None:
    """None when ``path`` is a readable regular file within the size limit."""
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
             cancelled: Callable[[], bool] | None = None) -> Discovery:
    """Every ``*.py`` file of the workspace ``root`` that the rules above keep.

    Raises :class:`WorkspaceError` only when ``root`` itself is not a readable directory.
    ``cancelled`` is polled once per directory; when it returns True the walk stops and
    returns what it found so far.
    """
    rules = WorkspaceFilter(root, exclude, max_file_size)
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
            problem = _file_problem(path, rules.max_file_size)
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
