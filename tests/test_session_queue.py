"""An engine.io session's queue (socketio_adapters/session_queue.py): behaves as an
unbounded ``asyncio.Queue``, and a session accepted by ``socketio_adapters.AsyncServer``
gets one, its OPEN packet kept."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import socketio
from engineio.async_socket import AsyncSocket

from conformance.cluster import Node, eventually
from socketio_adapters.polling import cap_polls_for
from socketio_adapters.session_queue import SessionQueue, lighten_queue


class _Server:
    ping_interval = 25
    ping_timeout = 20

    def create_queue(self) -> asyncio.Queue[Any]:
        return asyncio.Queue()


async def test_items_come_out_in_order_and_get_nowait_raises_when_empty() -> None:
    queue: SessionQueue[int] = SessionQueue()
    assert queue.empty() and not queue.full() and queue.qsize() == 0
    for i in range(3):
        await queue.put(i)
    assert queue.qsize() == 3
    assert [queue.get_nowait(), await queue.get(), queue.get_nowait()] == [0, 1, 2]
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_getters_wait_and_are_served_in_the_order_they_came() -> None:
    queue: SessionQueue[str] = SessionQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await asyncio.wait_for(first, 1) == "a"
    assert await asyncio.wait_for(second, 1) == "b"


async def test_a_cancelled_getter_leaves_the_item_to_the_next() -> None:
    queue: SessionQueue[str] = SessionQueue()
    cancelled = asyncio.ensure_future(queue.get())
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes the first getter...
    cancelled.cancel()  # ...cancelled before it runs: the second gets the item
    assert await asyncio.wait_for(waiting, 1) == "x"
    assert cancelled.cancelled()
    assert queue.empty()


async def test_join_waits_for_every_item_to_be_done() -> None:
    queue: SessionQueue[int] = SessionQueue()
    await asyncio.wait_for(queue.join(), 1)  # nothing unfinished
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        queue.task_done()


async def test_an_accepted_session_gets_one_with_its_open_packet() -> None:
    socket = AsyncSocket(_Server(), "sid")
    socket.queue.put_nowait("open")
    cap_polls_for(socket, {"HTTP_USER_AGENT": "Mozilla/5.0"})
    assert isinstance(socket.queue, SessionQueue)
    assert socket.queue.get_nowait() == "open"
    lighten_queue(socket)  # already one: left as it is
    assert socket.queue.empty()


async def test_a_real_server_s_sessions_use_it_on_both_transports() -> None:
    node = Node("memory://session-queue", forwarding=True)
    await node.start()
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(2)]
    got: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for k, client in enumerate(clients):
        client.on("e", lambda i, k=k: got.put_nowait((k, i)))
    try:
        for client, transport in zip(clients, ("websocket", "polling"), strict=True):
            await client.connect(node.url, transports=[transport], wait_timeout=10)
        sockets = list(node.sio.eio.sockets.values())
        assert len(sockets) == 2
        assert all(isinstance(s.queue, SessionQueue) for s in sockets)
        for i in range(20):
            await node.sio.emit("e", i)
        received = sorted([await asyncio.wait_for(got.get(), 10) for _ in range(40)])
        assert received == sorted((k, i) for k in range(2) for i in range(20))
        await eventually(lambda: all(c.connected for c in clients), True,
                         "both clients still connected")
    finally:
        for client in clients:
            await client.disconnect()
        await node.stop()


async def _steps(queue: Any, seed: int) -> list[Any]:
    """A seeded mix of puts, waiting and cancelled gets, task_done and joins, and what
    each step left (the log of what every waiter got, and the size)."""
    pick = random.Random(seed)
    log: list[Any] = []
    waiters: list[asyncio.Task[None]] = []
    getters: list[asyncio.Task[None]] = []

    async def get(n: int) -> None:
        try:
            log.append(("got", n, await queue.get()))
        except asyncio.CancelledError:
            log.append(("cancelled", n))
            raise

    async def join(n: int) -> None:
        await queue.join()
        log.append(("joined", n))

    for item in range(40):
        step = pick.randrange(7)
        if step == 0:
            getters.append(asyncio.ensure_future(get(len(getters))))
        elif step == 1:
            queue.put_nowait(item)
        elif step == 2:
            await queue.put(item)
        elif step == 3:
            try:
                log.append(("now", queue.get_nowait()))
            except asyncio.QueueEmpty:
                log.append(("empty",))
        elif step == 4:
            live = [t for t in getters if not t.done()]
            if live:
                pick.choice(live).cancel()  # perhaps woken already: its item goes on
        elif step == 5:
            try:
                queue.task_done()
            except ValueError:
                log.append(("too many",))
        else:
            waiters.append(asyncio.ensure_future(join(len(waiters))))
        for _ in range(pick.randrange(3)):
            await asyncio.sleep(0)
        log.append((queue.qsize(), queue.empty()))
    for task in getters + waiters:
        task.cancel()
    await asyncio.gather(*getters, *waiters, return_exceptions=True)
    return log


async def test_it_does_what_an_unbounded_asyncio_queue_does_step_for_step() -> None:
    for seed in range(300):
        assert await _steps(SessionQueue(), seed) == await _steps(asyncio.Queue(), seed), seed
