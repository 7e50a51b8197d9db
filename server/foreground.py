"""Requests the user waits on come first: background work yields to them.

Why: the server has two cores for everything.  A hover right after the editor starts, or
right after an edit, used to share them with the workspace's indexing (the embedder over
every function) and with the prefetch of an opened file's names — the first hover of a
session took 280 ms of work that costs 60 ms alone.  While a hover or a code-action request
is in flight (:meth:`Foreground.request`, entered on the event loop), the indexing thread
waits before its next batch (:meth:`Foreground.wait_idle`) and the prefetch before its next
function (:meth:`Foreground.idle`).  Each wait is bounded (:data:`MAX_YIELD_S`), so a stream
of requests slows background work down but never stops it; work already running is not
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

MAX_YIELD_S = 1.0
"""The longest one unit of background work waits for requests to end."""
POLL_S = 0.005


class Foreground:
    """How many user requests are in flight.  Counted on the event loop's thread only; read
    from any thread through an event."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Event()
        self._idle.set()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Around a request's handler, on the event loop (an ``async`` handler may await inside)."""
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def wait_idle(self, timeout: float = MAX_YIELD_S) -> bool:
        """On a background thread: wait until no request is in flight (at most ``timeout``
        seconds); True when none is."""
        return self._idle.wait(timeout)

    async def idle(self, timeout: float = MAX_YIELD_S) -> bool:
        """On the event loop: the same wait, without blocking the loop."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        return not self.busy
