"""The Redis subscriber's silence watch: a PING after an interval of silence, the
connection closed (with a reason) after another one with no answer, nothing while
replies come. The whole path on a real redis-server behind a proxy that goes silent
is conformance/test_half_open.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from socketio_adapters.backends.redis.resp import RawConnection, SilenceWatch

PING = b"*1\r\n$4\r\nPING\r\n"


class _Connection:
    """What the watch uses of a connection: a write, and an abort."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.times: list[float] = []
        """When each write, then the abort, happened (loop time)."""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.times.append(asyncio.get_running_loop().time())

    def abort(self) -> None:
        self.aborted = True
        self.times.append(asyncio.get_running_loop().time())


def _watch(connection: _Connection, interval: float) -> SilenceWatch:
    return SilenceWatch(cast(RawConnection, cast(Any, connection)), interval)


async def _until(predicate: Any, timeout: float = 5.0) -> float:
    """Wait until ``predicate()``; return the loop time it was first seen true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)
    return loop.time()


async def test_silence_brings_a_ping_then_the_connection_is_closed() -> None:
    connection = _Connection()
    loop = asyncio.get_running_loop()
    started = loop.time()
    watch = _watch(connection, 0.2)
    try:
        await _until(lambda: bool(connection.written))
        assert connection.written == [PING]
        assert not connection.aborted and watch.failure is None
        await _until(lambda: connection.aborted)
        pinged, closed = connection.times
        assert pinged - started >= 0.2  # not before an interval of silence
        assert closed - pinged >= 0.2  # the answer had an interval to come
        assert watch.failure is not None
        assert "no answer to PING within 0.2s" in str(watch.failure)
        assert connection.written == [PING]
    finally:
        watch.stop()


async def test_a_connection_that_hears_anything_is_left_alone() -> None:
    connection = _Connection()
    watch = _watch(connection, 0.1)
    try:
        for _ in range(12):
            watch.heard()
            await asyncio.sleep(0.03)
        assert connection.written == [] and not connection.aborted
    finally:
        watch.stop()


async def test_an_answer_to_the_ping_starts_the_count_again() -> None:
    connection = _Connection()
    watch = _watch(connection, 0.1)
    try:
        await _until(lambda: bool(connection.written))
        watch.heard()  # PONG
        answered = asyncio.get_running_loop().time()
        await _until(lambda: connection.aborted)  # silent from then on
        first, second, closed = connection.times
        assert connection.written == [PING, PING]
        assert second - answered >= 0.1  # a new interval of silence before asking
        assert closed - second >= 0.1
    finally:
        watch.stop()
