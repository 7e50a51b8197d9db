"""The files a rename may read: the workspace as the indexer sees it.

Why jedi is not given the workspace folder itself: its project-wide search walks the folder
and reads *every* ``*.py`` entry whole before it looks for the name — a symlink to
``/dev/zero`` (memory grew to 2 GB in 15 s), a FIFO (the read blocks forever), a 300 MB
file, links leading out of the workspace (whose targets the rename then edits) — and its
imports resolve through the folder too.  Its walk cannot be filtered (it is a plain
``os.walk`` of ``Project.path``), so jedi gets a *mirror* instead: a private directory that
holds one symlink per file that :func:`pathfusion.server.workspace.discover` keeps (the indexer's
rules: ``.gitignore``, excludes, no virtual environments, regular files under
``maxFileSize``), each checked again to be a regular file whose real path lies inside the
workspace.  jedi's project is the mirror, its ``sys.path`` the mirror followed by the
environment's own entries minus any inside the workspace, so nothing else of the workspace
is ever opened; the paths jedi reports are mapped back to the workspace's.

One mirror per workspace folder is kept for the life of the process and brought up to date
(links added and removed) before each rename, so its paths stay stable: jedi's and parso's
caches are keyed by path and would otherwise grow with every rename.  Renames are
serialised by the caller (one thread, jedi is not thread-safe), so a mirror is never
updated while jedi reads it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .workspace import discover, file_problem, is_inside

WALK_TIMEOUT_S = 10.0
"""How long the walk of a workspace for a rename may take before the rename is refused
(a partial list of files would leave references unrenamed)."""


class RenameFilesError(Exception):
    """The files of the rename cannot be listed; the message says why, for the user."""


@dataclass
class RenameFiles:
    """The mirror of one workspace folder for one rename."""

    root: Path
    """The workspace folder (absolute, as the editor names it)."""
    mirror: Path
    """The directory jedi sees as its project."""
    files: dict[str, Path] = field(default_factory=dict)
    """Path in the mirror → the workspace path it stands for."""
    by_real: dict[str, Path] = field(default_factory=dict)
    """Real path of a mirrored file → its workspace path."""
    sys_path: list[str] = field(default_factory=list)

    def mirror_path(self, path: str | os.PathLike[str] | None) -> Path | None:
        """Where the workspace file ``path`` lies in the mirror (None: outside the folder)."""
        if path is None:
            return None
        try:
            rel = os.path.relpath(os.path.abspath(path), self.root)
        except ValueError:
            return None
        if rel == os.curdir or rel.split(os.sep, 1)[0] == os.pardir:
            return None
        return self.mirror / rel

    def workspace_path(self, path: str | os.PathLike[str]) -> Path | None:
        """The workspace file that jedi's ``path`` (in the mirror) stands for, or None."""
        text = os.fspath(path)
        found = self.files.get(text) or self.files.get(os.path.abspath(text))
        if found is not None:
            return found
        return self.by_real.get(os.path.realpath(text))

    def project(self, script: Path | None) -> Any:
        """jedi's project over the mirror; ``script`` (in the mirror) adds its folders up to
        the mirror as jedi's own "smart" ``sys.path`` would (folders without
        ``__init__.py``), without jedi's look for buildout scripts above the mirror."""
        import jedi

        extra: list[str] = []
        if script is not None:
            for parent in script.parents:
                if parent == self.mirror or self.mirror not in parent.parents:
                    break
                if not (parent / "__init__.py").is_file():
                    extra.append(str(parent))
        sys_path = [str(self.mirror), *reversed(extra), *self.sys_path]
        return jedi.Project(str(self.mirror), sys_path=sys_path, smart_sys_path=False,
                            load_unsafe_extensions=False)


def regular_file_problem(path: str | os.PathLike[str], real_root: str, max_file_size: int) -> str | None:
    """Why the file ``path`` may not be read by a rename (None: it may): its real path must
    lie inside ``real_root`` and pass discovery's own check (a readable regular file of at
    most ``max_file_size`` bytes, :func:`pathfusion.server.workspace.file_problem`)."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError) as exc:
        return f"cannot resolve ({exc})"
    if not is_inside(real, real_root):
        return "outside the workspace"
    return file_problem(Path(real), max_file_size)


def read_text(path: str | os.PathLike[str], max_file_size: int) -> str:
    """The UTF-8 text of the regular file ``path``, read without ever blocking (a FIFO
    swapped in meanwhile is refused, not waited on) and within ``max_file_size`` bytes.
    Raises OSError or UnicodeDecodeError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        if st.st_size > max_file_size:
            raise OSError(f"{path}: larger than {max_file_size} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > max_file_size:
                raise OSError(f"{path}: larger than {max_file_size} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


class Mirrors:
    """One mirror directory per workspace folder, for the life of the process."""

    def __init__(self) -> None:
        self._base: Path | None = None
        self._lock = threading.Lock()
        self._sys_path: list[str] | None = None

    def _mirror_dir(self, key: str) -> Path:
        """The mirror directory of ``key`` (a workspace folder), created when missing."""
        with self._lock:
            if self._base is None:
                # the real path: jedi may report the mirror's paths resolved
                self._base = Path(os.path.realpath(tempfile.mkdtemp(prefix="pathfusion-rename-")))
                atexit.register(shutil.rmtree, self._base, True)
            base = self._base
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        mirror = base / digest
        mirror.mkdir(exist_ok=True)
        return mirror

    def environment_sys_path(self, exclude: Sequence[str]) -> list[str]:
        """jedi's default environment's ``sys.path`` without ``''`` and without the entries
        inside (or above) the folders ``exclude`` (real paths): an editable install or a
        ``.pth`` file naming the workspace would let imports read its files directly.  The
        server's own environment stays (its interpreter is trusted: it runs the server),
        also when it lies inside the workspace."""
        if self._sys_path is None:
            import jedi

            try:
                paths = list(jedi.get_default_environment().get_sys_path())
            except Exception:  # no usable environment: the interpreter's own modules only
                paths = []
            self._sys_path = [p for p in paths if p]
        trusted = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
        kept = []
        for entry in self._sys_path:
            real = os.path.realpath(entry)
            if any(is_inside(real, prefix) for prefix in trusted) or \
                    not any(is_inside(real, folder) or is_inside(folder, real) for folder in exclude):
                kept.append(entry)
        return kept

    def empty(self) -> RenameFiles:
        """A mirror with no file, for a document that is not a file (jedi renames in its
        text alone, instead of walking the server's working directory)."""
        mirror = self._mirror_dir("<no file>")
        _sync(mirror, {})
        return RenameFiles(root=mirror, mirror=mirror,
                           sys_path=self.environment_sys_path([os.path.realpath(mirror)]))

    def prepare(self, root: Path | str, exclude: Iterable[str], max_file_size: int,
                timeout: float = WALK_TIMEOUT_S) -> RenameFiles:
        """The up-to-date mirror of ``root``: every file the indexer keeps, whose real path
        is a regular file inside ``root``.  Raises :class:`RenameFilesError` when ``root``
        cannot be walked within ``timeout`` seconds."""
        root = Path(os.path.abspath(root))
        real_root = os.path.realpath(root)
        deadline = time.monotonic() + timeout
        late = [False]

        def cancelled() -> bool:
            late[0] = late[0] or time.monotonic() > deadline
            return late[0]

        try:
            found = discover(root, exclude, max_file_size, cancelled=cancelled)
        except Exception as exc:  # WorkspaceError: the folder is gone
            raise RenameFilesError(f"cannot list the files of {root}: {exc}") from exc
        if late[0]:
            raise RenameFilesError(f"listing the files of {root} took longer than {timeout:.0f} s")
        mirror = self._mirror_dir(str(root))
        result = RenameFiles(root=root, mirror=mirror,
                             sys_path=self.environment_sys_path([real_root, os.path.realpath(mirror)]))
        wanted: dict[Path, str] = {}
        for path in found.files:
            if regular_file_problem(path, real_root, max_file_size) is not None:
                continue
            link = result.mirror_path(path)
            if link is None:
                continue
            real = os.path.realpath(path)
            wanted[link] = real
            result.files[str(link)] = path
            result.by_real.setdefault(real, path)
        _sync(mirror, wanted)
        return result


def _sync(mirror: Path, wanted: dict[Path, str]) -> None:
    """Make ``mirror`` hold exactly the symlinks ``wanted`` (link → target) and the
    directories above them."""
    for folder, dirs, files in os.walk(mirror, topdown=False):
        for name in [*files, *dirs]:
            path = Path(folder) / name
            if path.is_symlink():
                with contextlib.suppress(OSError):
                    if wanted.get(path) != os.readlink(path):
                        path.unlink()
            elif name in files:
                with contextlib.suppress(OSError):
                    path.unlink()
            else:
                with contextlib.suppress(OSError):
                    path.rmdir()  # only when empty
    for link, target in wanted.items():
        if link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink(target, link)


MIRRORS = Mirrors()
