"""A deadline on a task's waits (socketio_adapters/deadline.py): a wait in time
returns what it awaited, one past the deadline raises TimeoutError and leaves no
cancellation on the task, activity moves the deadline, somebody else's cancellation
goes through, and many waits make no task and share one timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from socketio_adapters.deadline import TaskDeadline

T = TypeVar("T")


async def _after(seconds: float, value: str) -> str:
    await asyncio.sleep(seconds)
    return value


async def _within(deadline: TaskDeadline, awaitable: Awaitable[T]) -> T:
    with deadline:
        return await awaitable


async def test_a_wait_in_time_returns_what_it_awaited() -> None:
    deadline = TaskDeadline(0.5)
    try:
        assert await _within(deadline, _after(0.01, "a")) == "a"
        assert await _within(deadline, _after(0.01, "b")) == "b"
    finally:
        deadline.cancel()


async def test_a_wait_past_the_deadline_raises_timeout_and_leaves_no_cancellation() -> None:
    deadline = TaskDeadline(0.05)
    began = time.monotonic()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await _within(deadline, asyncio.Event().wait())
    finally:
        deadline.cancel()
    assert 0.04 < time.monotonic() - began < 1.0
    cancelling = getattr(asyncio.current_task(), "cancelling", None)  # Python 3.11+
    assert cancelling is None or cancelling() == 0
    await asyncio.sleep(0.01)  # the task goes on waiting normally


async def test_the_deadline_counts_from_each_wait_s_start() -> None:
    deadline = TaskDeadline(0.1)
    try:
        await asyncio.sleep(0.15)  # idle past the deadline: no wait, nothing ends
        for _ in range(3):  # three waits of 0.06 s, each within 0.1 s
            assert await _within(deadline, _after(0.06, "x")) == "x"
    finally:
        deadline.cancel()


async def test_activity_moves_the_deadline_on() -> None:
    touched = time.monotonic()

    def since() -> float:
        return touched

    deadline = TaskDeadline(0.1, since)
    waiting = asyncio.ensure_future(_within(deadline, asyncio.Event().wait()))
    try:
        for _ in range(4):  # active every 0.05 s: the wait lives on past 0.1 s
            await asyncio.sleep(0.05)
            touched = time.monotonic()
            assert not waiting.done()
        began = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await waiting
        assert time.monotonic() - began > 0.05  # 0.1 s after the last activity
    finally:
        deadline.cancel()
        waiting.cancel()


async def test_somebody_else_s_cancellation_goes_through() -> None:
    deadline = TaskDeadline(5)
    waiting = asyncio.ensure_future(_within(deadline, asyncio.Event().wait()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    deadline.cancel()


async def test_many_waits_make_no_task_and_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    scheduled = loop._scheduled  # type: ignore[attr-defined]  # the loop's timers
    timers = len(scheduled)
    tasks = len(asyncio.all_tasks())
    deadline = TaskDeadline(5)
    try:
        for _ in range(100):
            event = asyncio.Event()
            loop.call_soon(event.set)
            await _within(deadline, event.wait())
            assert len(asyncio.all_tasks()) == tasks
        assert len(scheduled) == timers + 1
    finally:
        deadline.cancel()
