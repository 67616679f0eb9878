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
    # margins of more than half a second: a loop stall on a busy machine is no failure
    deadline = TaskDeadline(1.0)
    try:
        await asyncio.sleep(1.05)  # idle past the deadline: no wait, nothing ends
        for _ in range(3):  # three waits of 0.4 s, each within 1 s, 1.2 s in all
            assert await _within(deadline, _after(0.4, "x")) == "x"
    finally:
        deadline.cancel()


async def test_activity_moves_the_deadline_on() -> None:
    touched = time.monotonic()

    def since() -> float:
        return touched

    deadline = TaskDeadline(1.0, since)
    waiting = asyncio.ensure_future(_within(deadline, asyncio.Event().wait()))
    try:
        for _ in range(6):  # active every 0.25 s: the wait lives on past 1 s
            await asyncio.sleep(0.25)
            touched = time.monotonic()
            assert not waiting.done()
        began = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await waiting
        assert time.monotonic() - began > 0.5  # 1 s after the last activity
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


async def test_a_cancellation_in_the_same_turn_as_the_expiry_goes_through() -> None:
    """Server shutdown cancels a session's task just as its wait expires: the task
    ends cancelled, not with a TimeoutError that its reader would take for silence."""
    seen: list[str] = []

    async def waiter() -> None:
        deadline = TaskDeadline(0.05)
        try:
            with deadline:
                await asyncio.sleep(10)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise
        finally:
            deadline.cancel()

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0)  # the wait has begun, its timer is due in 0.05 s
    asyncio.get_running_loop().call_later(0.06, task.cancel)
    time.sleep(0.1)  # noqa: ASYNC251 - block the loop: both timers are due in its next turn
    # Python 3.11+ counts a task's cancellations; 3.10 makes the two one, which the
    # deadline takes for its own (TaskDeadline's documented 3.10 behaviour)
    counted = hasattr(task, "cancelling")
    with pytest.raises(asyncio.CancelledError if counted else asyncio.TimeoutError):
        await task
    assert seen == ["CancelledError" if counted else "TimeoutError"]


async def test_after_a_timeout_the_deadline_serves_the_next_wait() -> None:
    deadline = TaskDeadline(0.05)
    try:
        for _ in range(2):  # the timer that fired is armed again for the next wait
            began = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):  # the deadline's, not the guard's
                await asyncio.wait_for(_within(deadline, asyncio.Event().wait()), 5)
            assert time.monotonic() - began < 2.5
        assert await _within(deadline, _after(0.01, "a")) == "a"
    finally:
        deadline.cancel()
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    assert cancelling is None or cancelling() == 0


async def test_a_swallowed_expiry_leaves_no_cancellation_behind() -> None:
    """Code under the deadline that catches its cancellation and returns: the task
    keeps no pending cancellation, and a later cancellation is not a timeout."""

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "slept"

    deadline = TaskDeadline(0.05)
    try:
        assert await _within(deadline, stubborn()) == "kept going"
        cancelling = getattr(asyncio.current_task(), "cancelling", None)
        assert cancelling is None or cancelling() == 0
        with deadline:  # somebody else's cancellation, on the same deadline
            waiting = asyncio.ensure_future(asyncio.Event().wait())
            asyncio.get_running_loop().call_later(0.01, waiting.cancel)
            with pytest.raises(asyncio.CancelledError):
                await waiting
    finally:
        deadline.cancel()
