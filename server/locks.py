"""Exclusive locks shared by processes: how two indexers (two editor windows, the server and
the CLI) take turns on one workspace index (:mod:`pathfusion.server.index_store`, "Processes").

Why an OS lock on a file and not a lock file that merely exists: the operating system drops
the lock when its holder dies, ``kill -9`` included, so a crash never leaves the index locked
and a held lock always means a live holder.  POSIX uses ``fcntl.flock`` (one lock per open
file description: it also excludes two :class:`ProcessLock` objects of one process), Windows
``msvcrt.locking`` on the file's first byte.  A platform with neither gets a lock that only
excludes the threads of this process, and a warning.

``flock`` does not exclude two threads that share one descriptor, so each lock also has a
re-entrant thread lock: the thread holding it may take it again (nested sections), other
threads wait like other processes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

POLL_S = 0.05
"""Seconds between two attempts while waiting (and between two cancellation checks)."""
NOTICE_S = 1.0
"""A wait for another process longer than this is reported (``on_wait``): the short waits
for another writer's commit are routine, a long one deserves a line in the log."""
_warned = False


def _unlocked(reason: str) -> bool:
    """Go on without a cross-process lock (warned once): better than no index at all."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("%s: processes sharing a workspace index are not kept from writing it "
                    "at the same time", reason)
    return True


def _try_lock(fd: int) -> bool:
    """Take the OS lock of ``fd`` without waiting; False when another holder has it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            return _unlocked(f"file locking failed ({exc})")  # e.g. ENOLCK on some network file systems
        return True
    if msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    return _unlocked("no file locking on this platform")  # pragma: no cover


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    elif msvcrt is not None:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class ProcessLock:
    """An exclusive, re-entrant (per thread) lock on the file ``path``, shared by processes.

    The holder writes its process id into the file (POSIX), so that a waiting process can say
    whom it waits for (:meth:`holder`).  The file itself is never removed: deleting a lock
    file that another process is about to lock would let two holders in.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    # -- taking and releasing ----------------------------------------------------------------
    def acquire(self, blocking: bool = True, *, cancelled: Callable[[], bool] | None = None,
                on_wait: Callable[[str], None] | None = None) -> bool:
        """Take the lock; True once held.  ``blocking=False`` answers at once; otherwise it
        waits until the lock is free or ``cancelled()`` returns True (False then).
        ``on_wait(holder)`` is called once when another process has kept it waiting for
        :data:`NOTICE_S` seconds."""
        if not self._thread_lock.acquire(blocking=False):
            if not blocking:
                return False
            while not self._thread_lock.acquire(timeout=POLL_S):
                if cancelled is not None and cancelled():
                    return False
        if self._depth:  # this thread holds it already
            self._depth += 1
            return True
        notice = time.monotonic() + NOTICE_S
        try:
            while not self._lock_file():
                if not blocking or (cancelled is not None and cancelled()):
                    self._thread_lock.release()
                    return False
                if on_wait is not None and time.monotonic() >= notice:
                    on_wait(self.holder())
                    on_wait = None
                time.sleep(POLL_S)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth = 1
        return True

    def _lock_file(self) -> bool:
        """One attempt at the OS lock (thread lock held); True when taken."""
        for _ in range(3):
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(self._fd):
                return False
            # A lock on a file that was deleted meanwhile (someone cleared the cache folder)
            # excludes nobody: reopen the file that is there now and lock that one.
            try:
                same = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                if fcntl is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, 0)
                        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
                return True
            self._close_fd()
        return False

    def release(self) -> None:
        """Release one level; the OS lock goes with the last one."""
        if self._depth <= 0:
            raise RuntimeError(f"{self.path}: released without being held")
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                _unlock(self._fd)
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def hold(self, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """The lock for the ``with`` block, waiting as long as it takes."""
        self.acquire(on_wait=on_wait)
        try:
            yield
        finally:
            self.release()

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # -- state -------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """Whether this object holds the lock (in any thread)."""
        return self._depth > 0

    def holder(self) -> str:
        """Who holds the lock, as well as the file tells (``process 1234``)."""
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            text = ""
        return f"process {text}" if text.isdigit() else "another process"

    def close(self) -> None:
        """Forget the file (the lock must not be held)."""
        with self._thread_lock:
            if not self._depth:
                self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
