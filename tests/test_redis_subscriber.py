"""The subscriber connection's reads (socketio_adapters.backends.redis.subscriber)
against a real redis-server: messages delivered from the read callback, in order even
when one delivery has to wait; the other replies, errors and a lost connection handed
to the listener task; writes and closing unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

pytest.importorskip("redis")

import redis.asyncio as aioredis
import redis.exceptions
import socketio
from aiohttp import web

from conformance.brokers import LocalBroker, available
from socketio_adapters import create_manager
from socketio_adapters.backends.redis.resp import RawConnection, command
from socketio_adapters.backends.redis.subscriber import SubscriberReads
from socketio_adapters.deadline import TaskDeadline

pytestmark = [pytest.mark.broker, pytest.mark.skipif(
    not available("redis"), reason="redis-server not installed: scripts/install-brokers.sh redis")]

WAIT = 5.0
"""Longest wait for something that comes at once (a bound, not a figure)."""


@pytest.fixture
async def pool(redis_broker: LocalBroker) -> AsyncIterator[aioredis.ConnectionPool]:
    pool = aioredis.ConnectionPool.from_url(redis_broker.url)
    yield pool
    await pool.disconnect()


class Deliveries:
    """A deliver function that records payloads; one named ``hold`` waits for
    :meth:`release`."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.gate = asyncio.Event()
        self.held = asyncio.Event()
        self.more = asyncio.Event()
        self.on_hold: Callable[[], object] | None = None
        """Called as ``hold``'s delivery starts waiting, in that turn."""

    async def __call__(self, payload: bytes) -> None:
        self.seen.append(payload)
        if payload == b"fail":
            raise ValueError("a delivery failed")
        if payload == b"hold":
            self.held.set()
            if self.on_hold is not None:
                self.on_hold()
            await self.gate.wait()
            self.seen.append(b"hold done")
        self.more.set()

    async def until(self, count: int) -> None:
        async def seen() -> None:
            while len(self.seen) < count:
                self.more.clear()
                await self.more.wait()
        await asyncio.wait_for(seen(), WAIT)


class Listener:
    """What the backend's listener task does: makes the reads and subscribes, then
    handles the replies it is handed (the messages among them marked in
    ``others`` too)."""

    def __init__(self, deliver: Callable[[bytes], Coroutine[Any, Any, None]]) -> None:
        self.deliver = deliver
        self.others: list[object] = []
        self.heard: list[int] = []
        self.subscribed = asyncio.Event()
        self.raw: RawConnection | None = None
        self.reads: SubscriberReads | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, pool: aioredis.ConnectionPool, *channels: bytes) -> None:
        self.task = asyncio.ensure_future(self._run(pool, channels))
        await asyncio.wait_for(self.subscribed.wait(), WAIT)

    async def _run(self, pool: aioredis.ConnectionPool, channels: tuple[bytes, ...]
                   ) -> None:
        raw = self.raw = await RawConnection.open(pool)
        reads = self.reads = SubscriberReads(raw, self.deliver,
                                             lambda: self.heard.append(1))
        raw.write(command(b"SUBSCRIBE", *channels))
        await raw.drain()
        confirmed: list[Any] = []
        while len(confirmed) < len(channels):
            confirmed.extend(await reads.replies())
        assert [r[0] for r in confirmed] == [b"subscribe"] * len(channels)
        self.subscribed.set()
        try:
            while True:
                for reply in await reads.replies():
                    if isinstance(reply, list) and reply[0] == b"message":
                        self.others.append(b"task delivered")
                        await self.deliver(reply[2])
                    else:
                        self.others.append(reply)
        finally:
            reads.stop()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.raw is not None:
            await asyncio.wait_for(self.raw.close(), WAIT)


@contextlib.asynccontextmanager
async def listening(pool: aioredis.ConnectionPool,
                    deliver: Callable[[bytes], Coroutine[Any, Any, None]],
                    *channels: bytes) -> AsyncIterator[Listener]:
    """A :class:`Listener` subscribed to ``channels`` (``ch`` when none), stopped
    after."""
    listener = Listener(deliver)
    await listener.start(pool, *(channels or (b"ch",)))
    try:
        yield listener
    finally:
        await listener.stop()


async def _publish(pool: aioredis.ConnectionPool, *payloads: bytes,
                   channel: bytes = b"ch") -> None:
    publisher = await RawConnection.open(pool)
    try:
        await publisher.pipeline(*(command(b"PUBLISH", channel, p) for p in payloads))
    finally:
        await publisher.close()


async def test_messages_are_delivered_without_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """The read callback delivers messages (the listener task is handed none), and
    calls heard()."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        await asyncio.sleep(0)  # the listener gives the reads back to the callback
        listener.heard.clear()
        await _publish(pool, b"1", b"2", b"3")
        await deliver.until(3)
        assert deliver.seen == [b"1", b"2", b"3"]
        assert listener.others == []
        assert listener.heard


async def test_a_delivery_runs_as_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """As when the listener read the connection and ran each delivery itself: the
    listener is the current task in a delivery, before and after it waits, and a
    deadline there (``asyncio.timeout`` on 3.11+) cancels the delivery's wait, not
    the listener."""
    deliver = Deliveries()
    seen: list[tuple[object, object]] = []

    async def deadline_inside(payload: bytes) -> None:
        before = asyncio.current_task()
        deadline = TaskDeadline(0.05)
        try:
            with deadline:
                await asyncio.Event().wait()  # never set: the deadline ends it
        except asyncio.TimeoutError:
            seen.append((before, asyncio.current_task()))
        finally:
            deadline.cancel()
        await deliver(payload)

    async with listening(pool, deadline_inside) as listener:
        await _publish(pool, b"1", b"2")
        await deliver.until(2)
        assert seen == [(listener.task, listener.task)] * 2
        assert deliver.seen == [b"1", b"2"] and not listener.task.done()  # type: ignore[union-attr]


async def test_a_delivery_that_waits_holds_back_the_ones_after_it(
        pool: aioredis.ConnectionPool) -> None:
    """The messages after a delivery that waits are delivered after it ends, in order
    (by the task, then by the callback again), including one that came meanwhile."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        await _publish(pool, b"1", b"hold", b"2")
        await asyncio.wait_for(deliver.held.wait(), WAIT)
        await _publish(pool, b"3")  # arrives while the held delivery waits
        await asyncio.sleep(0.05)
        assert deliver.seen == [b"1", b"hold"]
        deliver.gate.set()
        await deliver.until(5)
        assert deliver.seen == [b"1", b"hold", b"hold done", b"2", b"3"]
        assert b"task delivered" in listener.others  # "2": it waited in the parser
        await _publish(pool, b"4")
        await deliver.until(6)
        assert deliver.seen[5:] == [b"4"]
        assert not listener.task.done()  # type: ignore[union-attr]


async def test_cancelling_the_listener_cancels_a_delivery_that_waits(
        pool: aioredis.ConnectionPool) -> None:
    """Cancelled in the turn the callback handed it a delivery that waits (a node
    that stops), the listener cancels that delivery too, as it did when it ran it."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        task = listener.task
        assert task is not None
        deliver.on_hold = task.cancel  # in the turn the callback hands the delivery over
        await _publish(pool, b"hold")
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT)
        assert task.cancelled()
    deliver.gate.set()
    await asyncio.sleep(0.05)
    assert deliver.seen == [b"hold"]


async def test_a_failed_delivery_is_raised_to_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """Its error ends the listener (the backend reconnects); the message after it is
    not delivered by the callback meanwhile."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        await _publish(pool, b"fail", b"after")
        with pytest.raises(ValueError, match="a delivery failed"):
            await asyncio.wait_for(asyncio.shield(listener.task), WAIT)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert deliver.seen == [b"fail"]


async def test_other_replies_and_writes_go_through_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """A PING's answer and a later subscription's confirmation come to the task, in
    order with the messages around them; writes and their drain still work."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        raw = listener.raw
        assert raw is not None
        await _publish(pool, b"1")
        await deliver.until(1)
        raw.write(command(b"PING") + command(b"SUBSCRIBE", b"other"))
        await raw.drain()
        await _publish(pool, b"2", channel=b"other")
        await deliver.until(2)
        assert deliver.seen == [b"1", b"2"]
        # "2" was delivered by the callback; a PING's answer is PONG in RESP3
        others = listener.others
        assert len(others) == 2 and others[0] in (b"PONG", [b"pong", b""])
        assert others[1] == [b"subscribe", b"other", 2]


async def test_a_connection_redis_drops_ends_the_reads_and_closes(
        pool: aioredis.ConnectionPool) -> None:
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:  # its close sees the connection gone
        admin = await RawConnection.open(pool)
        try:
            assert await admin.call(b"CLIENT", b"KILL", b"TYPE", b"pubsub") == 1
        finally:
            await admin.close()
        with pytest.raises(redis.exceptions.ConnectionError, match="redis closed"):
            await asyncio.wait_for(asyncio.shield(listener.task), WAIT)  # type: ignore[arg-type]


async def test_bytes_that_are_no_resp_end_the_reads(
        pool: aioredis.ConnectionPool) -> None:
    """A reply Redis never sends (a proxy's garbage) ends the reads with a clear error
    and drops the connection."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        assert listener.reads is not None
        listener.reads.data_received(b"!not resp\r\n")
        with pytest.raises(redis.exceptions.ConnectionError, match="bad reply from redis"):
            await asyncio.wait_for(asyncio.shield(listener.task), WAIT)  # type: ignore[arg-type]
        assert deliver.seen == []


async def test_a_disconnect_handler_reached_from_a_delivery_runs_in_a_task(
        redis_broker: LocalBroker) -> None:
    """``disconnect_sockets()`` from node a: node b's disconnect handler, awaited
    inline by python-socketio from the delivery, runs in a task (a deadline works
    there, as ``asyncio.timeout`` does), to its end, and node a gets b's answer."""
    nodes = [create_manager(redis_broker.url, channel="sub-disconnect",
                            heartbeat_interval=0.2, heartbeat_timeout=2.0)
             for _ in range(2)]
    sio = socketio.AsyncServer(client_manager=nodes[1], async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    connected, ended = asyncio.Event(), asyncio.Event()
    tasks: list[object] = []

    async def on_connect(sid: str, environ: Any) -> None:
        connected.set()

    async def on_disconnect(sid: str, *reason: Any) -> None:
        tasks.append(asyncio.current_task())
        deadline = TaskDeadline(2)
        try:
            with deadline:
                await asyncio.sleep(0)
        finally:
            deadline.cancel()
        ended.set()

    sio.on("connect", on_connect)
    sio.on("disconnect", on_disconnect)
    client = socketio.AsyncClient(reconnection=False)
    try:
        for node in nodes:
            await node.start()
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
        await asyncio.wait_for(connected.wait(), WAIT)
        await asyncio.wait_for(nodes[0].disconnect_sockets(), WAIT)
        await asyncio.wait_for(ended.wait(), WAIT)
        assert len(tasks) == 1 and tasks[0] is not None
    finally:
        await client.disconnect()
        await runner.cleanup()
        for node in nodes:
            await node.stop()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() and uncancel(), "
                    "what asyncio.timeout takes its cancellation back with, are 3.11+")
async def test_a_deadline_that_expires_as_a_delivery_is_handed_over_is_its_own(
        pool: aioredis.ConnectionPool) -> None:
    """A delivery whose deadline has passed when it starts waiting cancels the
    listener in the very turn the callback hands the delivery over: the delivery
    gets its timeout, takes the cancellation back, and the listener goes on (as when
    it ran the delivery itself), delivering the next message."""
    deliver = Deliveries()
    outcome: list[str] = []

    async def expired_at_once(payload: bytes) -> None:
        task = asyncio.current_task()
        assert task is not None
        before = task.cancelling()  # type: ignore[attr-defined]
        try:
            task.cancel()  # what a deadline already past does, from its first step
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if task.uncancel() > before:  # type: ignore[attr-defined]  # pragma: no cover
                raise
            outcome.append("timed out")
        await deliver(payload)

    async with listening(pool, expired_at_once) as listener:
        await _publish(pool, b"1", b"2")
        await deliver.until(2)
        assert outcome == ["timed out", "timed out"] and deliver.seen == [b"1", b"2"]
        assert listener.task is not None and not listener.task.done()
