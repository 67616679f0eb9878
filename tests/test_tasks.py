"""``within``: ``asyncio.wait_for`` without the lost cancellation of Python < 3.12,
and the Redis listener that depends on it (a cancelled listener ends, even when a
reply arrived in the same loop turn: a Redis Cluster node whose log reader met MOVED
cancelled its subscriber so, and waited for it forever). Both tests of a cancellation
that meets a result fail with ``asyncio.wait_for`` on Python 3.10 and 3.11."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from socketio_adapters.tasks import within


async def _cancelled_as_it_completes(wait: Callable[[Awaitable[int]], Any]) -> bool:
    """Whether a task looping on ``wait(future)`` ends when it is cancelled in the
    very turn in which its future completed."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    futures: list[asyncio.Future[int]] = [first, loop.create_future()]  # 2nd: never

    async def read() -> int:
        return await futures.pop(0)

    async def reader() -> None:
        while True:  # as a listener: reads on until it is cancelled
            await wait(read())

    task = asyncio.ensure_future(reader())
    for _ in range(5):
        await asyncio.sleep(0)
    first.set_result(1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1)
    if not done:
        task.cancel()  # a second cancellation reaches it
        await asyncio.wait({task}, timeout=1)
        return False
    return task.cancelled()


async def test_a_cancellation_that_meets_the_result_is_kept() -> None:
    assert await _cancelled_as_it_completes(lambda read: within(read, 10))


async def test_within_returns_raises_and_times_out() -> None:
    async def value() -> str:
        return "ok"

    async def fail() -> None:
        raise KeyError("boom")

    assert await within(value(), 1) == "ok"
    assert await within(value(), None) == "ok"
    with pytest.raises(KeyError):
        await within(fail(), 1)
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(asyncio.TimeoutError):
        await within(never, 0.01)
    assert never.cancelled(), "the work is cancelled on a timeout, as by wait_for"


async def test_a_cancelled_caller_cancels_the_work() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(within(never, 10))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert never.cancelled()
