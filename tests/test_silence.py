"""The silence watch of the listening connections (Redis, Postgres): a call after
each interval of silence, none while something is heard, the count starting again
after anything heard. The whole path on real brokers behind a proxy that goes
silent is conformance/test_half_open.py."""

from __future__ import annotations

import asyncio
from typing import Any

from socketio_adapters.backends.silence import SilenceWatch


class _Calls:
    """The watch's calls: how many intervals each said, and when (loop time)."""

    def __init__(self) -> None:
        self.intervals: list[int] = []
        self.times: list[float] = []

    def __call__(self, intervals: int) -> None:
        self.intervals.append(intervals)
        self.times.append(asyncio.get_running_loop().time())


async def _until(predicate: Any, timeout: float = 5.0) -> float:
    """Wait until ``predicate()``; return the loop time it was first seen true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)
    return loop.time()


async def test_each_interval_of_silence_is_told_with_its_count() -> None:
    calls = _Calls()
    started = asyncio.get_running_loop().time()
    watch = SilenceWatch(0.2, calls)
    try:
        await _until(lambda: len(calls.intervals) == 2)
        assert calls.intervals == [1, 2]
        first, second = calls.times
        assert first - started >= 0.2  # not before an interval of silence
        assert second - first >= 0.2  # the broker had an interval to answer
    finally:
        watch.stop()


async def test_a_connection_that_hears_anything_is_left_alone() -> None:
    calls = _Calls()
    watch = SilenceWatch(0.1, calls)
    try:
        for _ in range(12):
            watch.heard()
            await asyncio.sleep(0.03)
        assert calls.intervals == []
    finally:
        watch.stop()


async def test_an_answer_starts_the_count_again() -> None:
    calls = _Calls()
    watch = SilenceWatch(0.1, calls)
    try:
        await _until(lambda: bool(calls.intervals))
        watch.heard()  # the answer to the first call's question
        answered = asyncio.get_running_loop().time()
        await _until(lambda: len(calls.intervals) == 3)  # silent from then on
        assert calls.intervals == [1, 1, 2]
        assert calls.times[1] - answered >= 0.1  # a new interval of silence first
        assert calls.times[2] - calls.times[1] >= 0.1
    finally:
        watch.stop()


async def test_a_stopped_watch_calls_no_more() -> None:
    calls = _Calls()
    watch = SilenceWatch(0.05, calls)
    watch.stop()
    await asyncio.sleep(0.2)
    assert calls.intervals == []
