"""Event handlers started at once (socketio_adapters/eager.py): a handler that does not
wait makes no task; one that waits goes on in a task, cancellable, in its own context;
its errors reach the loop as a task's would; and AsyncServer starts a client's events
this way, in order, with acks, while coroutine handlers (before Python 3.12) keep
their own task and the plain handlers of the client's next events wait for it to
start."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import pytest
import socketio

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.eager import EAGER_TASKS, Continuation, start_eagerly, step_as

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
    # a task takes a context from Python 3.11; on 3.10 the rest runs in a copy of
    # the caller's context, not the one its first step set VAR in (documented)
    rest_sees = "inside" if sys.version_info >= (3, 11) else "outside"
    assert steps == ["first", f"after the wait, {rest_sees}"]
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
    """Cancelled in the same turn as it started: what the coroutine, already at its
    first wait, waits for is cancelled, and the coroutine gets the cancellation there
    once that has ended (as for a task that waits on another)."""
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
    """An error nobody read reaches the loop when its future is dropped, as a task's
    does, without waiting for the cycle collector; one that was read does not."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def broken(what: str) -> None:
        raise ValueError(what)

    async def handler_like(what: str) -> None:
        await broken(what)

    with _no_cycle_collector():
        try:
            future = start_eagerly(handler_like("read"))
            assert future.done() and isinstance(future.exception(), ValueError)
            unread = start_eagerly(handler_like("unread"))
            assert unread.done()
            del unread, future
        finally:
            loop.set_exception_handler(previous)
    assert [str(c.get("exception")) for c in reported] == ["unread"]


@contextmanager
def _no_cycle_collector() -> Iterator[None]:
    """The cycle collector off meanwhile: what is freed is freed by its count."""
    gc.collect()
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


async def test_a_cancellation_before_the_first_step_waits_for_the_awaited_task() -> None:
    """Cancelled in the turn it started, waiting on a task: the task it waits on is
    cancelled and the coroutine resumes once that one has ended (its cleanup done), as
    a task that waits on another does."""
    log: list[str] = []

    async def inner() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # a cleanup that takes a while
            log.append("inner cleaned up")
            raise

    async def outer(waited: asyncio.Task[None]) -> None:
        try:
            await waited
        except asyncio.CancelledError:
            log.append(f"outer cancelled, inner done: {waited.done()}")
            raise

    waited = asyncio.ensure_future(inner())
    await asyncio.sleep(0)  # inner waits
    future = start_eagerly(outer(waited))
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert log == ["inner cleaned up", "outer cancelled, inner done: True"]


async def test_a_cancellation_the_awaited_task_swallows_gives_its_result() -> None:
    """Cancelled before its first step, waiting on a task that catches the
    cancellation and returns: the coroutine gets that result, as in a task."""
    async def inner() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "inner kept going"
        return "woke"

    async def outer(waited: asyncio.Task[str]) -> str:
        return f"outer got: {await waited}"

    waited = asyncio.ensure_future(inner())
    await asyncio.sleep(0)
    future = start_eagerly(outer(waited))
    future.cancel()
    assert await future == "outer got: inner kept going"


@pytest.mark.skipif(EAGER_TASKS, reason="from Python 3.12 start_eagerly is asyncio's own "
                    "eager task: there is no continuing coroutine of ours to throw into")
@pytest.mark.parametrize("thrown", [
    (asyncio.CancelledError,), (asyncio.CancelledError(),),
    (asyncio.CancelledError, asyncio.CancelledError(), None)],
    ids=["the class", "an instance", "the class and an instance"])
async def test_a_cancellation_thrown_in_any_form_before_the_first_step_waits(
        thrown: tuple[Any, ...]) -> None:
    """``throw`` takes an exception or its class (asyncio throws an instance): either
    way, before the first step, the continuing coroutine cancels what it waits for
    and hands it to the task to wait on, not the cancellation at once."""
    waited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waiting() -> None:
        await waited

    future = start_eagerly(waiting())
    assert isinstance(future, asyncio.Task)
    assert future.get_coro().throw(*thrown) is waited
    assert waited.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await future  # its first step finds what it waits for cancelled: so is it


async def test_the_continuing_task_shows_the_handler_in_its_repr_and_stack() -> None:
    """The task that goes on with a handler reads as the handler's in its repr, its
    stack and what a debugger reads of its coroutine."""
    gate = asyncio.Event()

    async def handler_like() -> None:
        await gate.wait()

    future = start_eagerly(handler_like())
    assert isinstance(future, asyncio.Task)
    await asyncio.sleep(0)  # its first step has run: it waits on the gate
    assert "handler_like() running at" in repr(future), repr(future)
    assert [f.f_code.co_name for f in future.get_stack()] == ["handler_like"]
    coro: Any = future.get_coro()
    assert coro.__name__ == "handler_like" and coro.__qualname__.endswith(".handler_like")
    assert coro.cr_code is handler_like.__code__ and not coro.cr_running
    assert coro.cr_frame.f_code is handler_like.__code__
    assert getattr(coro.cr_await, "__qualname__", "") == "Event.wait"
    gate.set()
    await future


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


@asynccontextmanager
async def _polling(base: str) -> AsyncIterator[Callable[..., Coroutine[Any, Any, None]]]:
    """A raw engine.io long-polling client connected to ``/``; it POSTs socket.io
    packets, several in one payload, which the server handles in one loop turn."""
    async with aiohttp.ClientSession() as http:
        url = base + "/socket.io/?EIO=4&transport=polling"
        opened = await (await http.get(url)).text()
        url += "&sid=" + json.loads(opened[1:])["sid"]

        async def post(*packets: str) -> None:
            answer = await http.post(url, data="\x1e".join(packets))
            assert (await answer.text()).lower() == "ok"

        await post("40")
        assert (await (await http.get(url)).text()).startswith("40")
        yield post


async def test_a_client_s_events_start_in_order_when_coroutine_and_plain_handlers_mix(
        ) -> None:
    """A coroutine handler's task, not started yet, comes before the client's next
    event, whose plain handler waits for its turn in a task too; the count of tasks
    not started is left empty, also for a session that ends meanwhile."""
    sio = _server()
    order: list[str] = []

    async def coroutine_handler(sid: str) -> None:  # its effect before any wait
        order.append("a")

    sio.on("a", coroutine_handler)
    sio.on("b", lambda sid: order.append("b"))
    async with served(sio) as base:
        async with _polling(base) as post:
            await post('42["a"]', '42["b"]', '42["a"]', '42["b"]')
            await _until(lambda: len(order) == 4)
            assert order == ["a", "b", "a", "b"]
            await post('42["b"]', '42["a"]', '42["b"]', '41')  # and it leaves
            await _until(lambda: len(order) == 7)
        assert order[4:] == ["b", "a", "b"]
        assert sio._unstarted == {}


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_an_error_in_a_plain_handler_reaches_the_loop_at_once() -> None:
    """As python-socketio's task's does: once, in the handler's loop turn (before a
    callback the handler queued runs), not when the cycle collector runs."""
    sio = _server()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    next_turn: list[list[str]] = []

    def broken(sid: str) -> None:
        loop.call_soon(lambda: next_turn.append([str(c.get("exception")) for c in reported]))
        raise ValueError("boom")

    sio.on("boom", broken)
    with _no_cycle_collector():
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        try:
            async with served(sio) as base:
                async with _polling(base) as post:
                    await post('42["boom"]')
                    await _until(lambda: bool(next_turn))
                    for _ in range(5):
                        await asyncio.sleep(0)
        finally:
            loop.set_exception_handler(previous)
    assert next_turn == [["boom"]]
    assert [(c["message"], str(c["exception"])) for c in reported] == [
        ("Task exception was never retrieved", "boom")]


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


# ------------------------------------------------------------ steps of another task

STEP_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("STEP_VAR", default="unset")


async def _stepped_from_a_callback(coro: Coroutine[Any, Any, None]
                                   ) -> tuple[asyncio.Future[None], Continuation[None]]:
    """``coro``'s first step run from a loop callback as a step of a task that waits
    meanwhile (as the Redis subscriber's reads do); that task and the rest."""
    loop = asyncio.get_running_loop()
    holder = asyncio.ensure_future(asyncio.sleep(10))
    handed: asyncio.Future[Continuation[None] | None] = loop.create_future()
    loop.call_soon(lambda: handed.set_result(step_as(holder, coro)))
    rest = await handed
    assert rest is not None
    return holder, rest


async def test_a_step_as_a_waiting_task_sees_it_current_and_it_awaits_the_rest() -> None:
    """step_as, from a callback while ``task`` waits: the first step runs with
    ``task`` current; the rest, awaited by ``task``, runs in the first step's
    context; a coroutine that finishes at once leaves nothing; an error of the first
    step is raised there."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, object, str]] = []
    gate = loop.create_future()
    handed: asyncio.Future[Any] = loop.create_future()

    async def delivery(name: str, wait: bool) -> str:
        STEP_VAR.set(name)
        seen.append((name, asyncio.current_task(), STEP_VAR.get()))
        if wait:
            await gate
            seen.append((name + " after", asyncio.current_task(), STEP_VAR.get()))
        if name == "bad":
            raise ValueError("first step")
        return name

    async def waiting_task() -> str:
        rest = await handed
        return str(await rest)

    task = asyncio.ensure_future(waiting_task())
    await asyncio.sleep(0)

    def callback() -> None:
        assert step_as(task, delivery("quick", False)) is None
        with pytest.raises(ValueError, match="first step"):
            step_as(task, delivery("bad", False))
        handed.set_result(step_as(task, delivery("slow", True)))

    loop.call_soon(callback)
    await asyncio.sleep(0.01)
    assert STEP_VAR.get() == "unset"  # each step ran in a context of its own
    gate.set_result(None)
    assert await asyncio.wait_for(task, 1) == "slow"
    assert seen == [("quick", task, "quick"), ("bad", task, "bad"), ("slow", task, "slow"),
                    ("slow after", task, "slow")]


async def test_a_rest_cancelled_before_it_is_awaited_gets_the_cancellation() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    outcome: list[str] = []

    async def delivery() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            outcome.append("cancelled at its wait")
            raise

    holder, rest = await _stepped_from_a_callback(delivery())
    rest.cancel()
    assert gate.cancelled()

    async def await_it() -> None:
        await rest

    with pytest.raises(asyncio.CancelledError):
        await await_it()
    assert outcome == ["cancelled at its wait"]
    holder.cancel()


async def test_a_step_as_a_done_or_busy_task_is_refused_and_closes_the_coroutine() -> None:
    """No step runs as a finished task (its deadlines would never fire) or from inside
    a running task; the coroutine is closed either way (no "never awaited")."""
    closed: list[str] = []

    async def delivery(name: str) -> None:
        try:
            await asyncio.sleep(0)
        finally:
            closed.append(name)

    done = asyncio.ensure_future(asyncio.sleep(0))
    await done
    first = delivery("done")
    first.send(None)  # started, so that closing it runs its finally
    with pytest.raises(RuntimeError, match="it is done"):
        step_as(done, first)
    other = asyncio.ensure_future(asyncio.sleep(10))
    second = delivery("busy")
    second.send(None)
    with pytest.raises(RuntimeError):
        step_as(other, second)  # from inside this test's running task
    other.cancel()
    assert closed == ["done", "busy"]


async def test_a_closed_rest_cleans_up_in_its_own_context() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    async def delivery() -> None:
        token = STEP_VAR.set("mine")
        try:
            await loop.create_future()
        finally:
            seen.append(STEP_VAR.get())
            STEP_VAR.reset(token)  # a ValueError in another context

    holder, rest = await _stepped_from_a_callback(delivery())
    rest.close()
    assert seen == ["mine"] and STEP_VAR.get() == "unset"
    holder.cancel()
