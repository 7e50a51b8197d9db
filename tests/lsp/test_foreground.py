"""Requests first (server/foreground.py): while a hover or code action is in flight,
background work waits — bounded — before its next unit; it goes on at once when none is."""

from __future__ import annotations

import asyncio
import threading
import time

from pathfusion.server.foreground import Foreground


def test_background_threads_wait_for_requests_in_flight() -> None:
    foreground = Foreground()
    assert not foreground.busy and foreground.wait_idle(0.0)
    waited: list[float] = []

    def background() -> None:
        started = time.monotonic()
        foreground.wait_idle(5.0)
        waited.append(time.monotonic() - started)

    with foreground.request():
        with foreground.request():  # two requests at once: idle only after both
            assert foreground.busy
        assert foreground.busy and not foreground.wait_idle(0.05)  # bounded: gives up after its timeout
        worker = threading.Thread(target=background)
        worker.start()
        time.sleep(0.2)
        assert worker.is_alive()  # still waiting for the request
    worker.join(2.0)
    assert not worker.is_alive() and 0.15 < waited[0] < 2.0
    assert not foreground.busy


def test_a_failing_request_does_not_leave_background_work_waiting() -> None:
    foreground = Foreground()
    try:
        with foreground.request():
            raise RuntimeError("the handler failed")
    except RuntimeError:
        pass
    assert not foreground.busy and foreground.wait_idle(0.0)


async def test_background_coroutines_wait_without_blocking_the_loop() -> None:
    foreground = Foreground()
    order: list[str] = []

    async def request() -> None:
        with foreground.request():
            await asyncio.sleep(0.1)
            order.append("request done")

    async def prefetch() -> None:
        await asyncio.sleep(0.01)  # starts while the request is in flight
        assert await foreground.idle(2.0)
        order.append("prefetch")

    await asyncio.gather(request(), prefetch())
    assert order == ["request done", "prefetch"]
    with foreground.request():
        started = time.monotonic()
        assert not await foreground.idle(0.05)  # bounded
        assert time.monotonic() - started < 1.0
