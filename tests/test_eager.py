"""Event handlers started at once (socketio_adapters/eager.py): a handler that does not
wait makes no task; one that waits goes on in a task, cancellable, in its own context;
its errors reach the loop as a task's would; and AsyncServer starts a client's events
this way, in order, with acks, while coroutine handlers (before Python 3.12) keep
their own task."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.eager import EAGER_TASKS, start_eagerly

from .test_websocket_compression import served

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outside")


@asynccontextmanager
async def _counting_tasks() -> AsyncIterator[list[str]]:
    """The names of the coroutines of the tasks made meanwhile on this loop."""
    loop = asyncio.get_running_loop()
    made: list[str] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                **kwargs: Any) -> asyncio.Future[Any]:
        made.append(getattr(coro, "__qualname__", repr(coro)))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        loop.set_task_factory(previous)


async def test_a_coroutine_that_does_not_wait_makes_no_task() -> None:
    async def quick() -> int:
        VAR.set("inside")
        return 7

    async with _counting_tasks() as made:
        future = start_eagerly(quick())
    assert future.done() and future.result() == 7
    assert made == [] or EAGER_TASKS
    assert VAR.get() == "outside"  # it ran in a copy of the context, as a task does


async def test_a_coroutine_that_waits_goes_on_in_a_task_in_its_own_context() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def slow() -> str:
        VAR.set("inside")
        steps.append("first")
        await gate.wait()
        steps.append(f"after the wait, {VAR.get()}")
        await asyncio.sleep(0)  # a bare yield too
        return "done"

    future = start_eagerly(slow())
    assert steps == ["first"] and not future.done()  # the first step ran at once
    gate.set()
    assert await future == "done"
    assert steps == ["first", "after the wait, inside"]
    assert VAR.get() == "outside"


async def test_a_cancelled_wait_is_cancelled_inside_the_coroutine() -> None:
    seen: list[str] = []

    async def waiting() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise
        finally:
            seen.append("finally")

    future = start_eagerly(waiting())
    await asyncio.sleep(0)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert seen == ["cancelled inside", "finally"]


async def test_a_cancellation_before_the_task_s_first_step_reaches_the_wait() -> None:
    """Cancelled in the same turn as it started: the coroutine, already at its first
    wait, gets the cancellation there, and what it waited for is cancelled too (as
    for a task that waits on another)."""
    seen: list[str] = []
    inner = asyncio.ensure_future(asyncio.Event().wait())

    async def waiting() -> None:
        try:
            await inner
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    future = start_eagerly(waiting())
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert seen == ["cancelled inside"]
    assert inner.cancelled()


async def test_a_coroutine_that_catches_the_cancellation_goes_on() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "kept going"
        return "woke"

    future = start_eagerly(stubborn())
    await asyncio.sleep(0)
    future.cancel()
    assert await future == "kept going"


async def test_an_error_in_the_first_step_is_the_future_s_and_reaches_the_loop() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def broken() -> None:
        raise ValueError("boom")

    try:
        future = start_eagerly(broken())
        assert future.done() and isinstance(future.exception(), ValueError)
        unread = start_eagerly(broken())
        assert unread.done()
        del unread, future
        gc.collect()  # nobody read its error: the loop is told, as for a task
    finally:
        loop.set_exception_handler(previous)
    assert any(isinstance(c.get("exception"), ValueError) for c in reported)


# ---------------------------------------------------------------- AsyncServer


def _server() -> AsyncServer:
    manager = create_manager(f"memory://eager-{secrets.token_hex(4)}")
    return AsyncServer(manager, async_mode="aiohttp")


async def _client_sends(sio: AsyncServer, send: Callable[[socketio.AsyncClient],
                                                     Coroutine[Any, Any, None]]) -> None:
    client = socketio.AsyncClient(reconnection=False)
    async with served(sio) as base:
        try:
            await client.connect(base, transports=["websocket"], wait_timeout=5)
            await send(client)
        finally:
            await client.disconnect()


async def test_plain_handlers_make_no_task_run_in_order_and_answer_acks() -> None:
    sio = _server()
    got: list[int] = []
    sio.on("n", lambda sid, i: got.append(i))
    sio.on("double", lambda sid, i: i * 2)
    last = asyncio.Event()
    sio.on("last", lambda sid: last.set())

    async def send(client: socketio.AsyncClient) -> None:
        async with _counting_tasks() as made:
            for i in range(200):
                await client.emit("n", i)
            await client.emit("last")
            await asyncio.wait_for(last.wait(), 5)
            assert await client.call("double", 21, timeout=5) == 42
        handlers = [m for m in made if "_handle_event_internal" in m]
        assert handlers == [] or EAGER_TASKS

    await _client_sends(sio, send)
    assert got == list(range(200))


async def test_a_coroutine_handler_is_its_own_task_and_its_timeout_its_own() -> None:
    sio = _server()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    reader: list[asyncio.Task[Any] | None] = []

    async def handler(sid: str) -> None:
        reader.append(asyncio.current_task())
        try:
            async with asyncio.timeout(0.05):  # type: ignore[attr-defined]  # 3.11+
                await asyncio.Event().wait()
        except TimeoutError:
            outcome.set_result("the handler timed out")

    if not hasattr(asyncio, "timeout"):  # pragma: no cover - Python 3.10
        pytest.skip("asyncio.timeout is Python 3.11+")
    sio.on("wait", handler)
    answered = asyncio.Event()
    sio.on("ping", lambda sid: answered.set())

    async def send(client: socketio.AsyncClient) -> None:
        await client.emit("wait")
        assert await asyncio.wait_for(outcome, 5) == "the handler timed out"
        await client.emit("ping")  # the session's reader was not the one cancelled
        await asyncio.wait_for(answered.wait(), 5)

    await _client_sends(sio, send)
    coro = reader[0].get_coro() if reader[0] is not None else None
    assert "_handle_event_internal" in getattr(coro, "__qualname__", "") or EAGER_TASKS
