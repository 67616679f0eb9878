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

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
import socketio
from aiohttp import web

from conformance.brokers import LocalBroker, available
from socketio_adapters import create_backend, create_manager
from socketio_adapters.backends.redis import RedisBackend
from socketio_adapters.backends.redis.calls import PendingCalls
from socketio_adapters.backends.redis.resp import PipelineError, RawConnection, command
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


# ------------------------------------------------------ commands on the connection


async def test_commands_sent_on_the_connection_get_their_replies_among_the_messages(
        pool: aioredis.ConnectionPool) -> None:
    """With RESP3 a pipeline on the subscriber connection gets its replies, in
    order, while the messages around them are delivered as before: the listener task
    is handed none of them. The node's own copy of what it published comes in the
    stream before the reply to its PUBLISH, so it is delivered first."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        reads = listener.reads
        assert reads is not None and reads.takes_calls
        replies = await asyncio.wait_for(reads.pipeline(
            [command(b"PING"), command(b"PUBLISH", b"ch", b"own"),
             command(b"PUBLISH", b"nobody", b"x")]), WAIT)
        assert replies == [b"PONG", 1, 0]
        assert deliver.seen == [b"own"]  # before the reply that ended the wait
        await _publish(pool, b"1")
        await deliver.until(2)
        assert deliver.seen == [b"own", b"1"] and listener.others == []
        assert not reads.calls


async def test_an_error_reply_to_a_command_is_raised_with_every_reply(
        pool: aioredis.ConnectionPool) -> None:
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        reads = listener.reads
        assert reads is not None
        with pytest.raises(PipelineError, match="wrong number of arguments") as raised:
            await asyncio.wait_for(reads.pipeline(
                [command(b"PUBLISH", b"ch", b"a"), command(b"PUBLISH", b"ch")]), WAIT)
        assert raised.value.replies[0] == 1 and len(raised.value.replies) == 2
        await deliver.until(1)
        assert deliver.seen == [b"a"] and listener.others == []


async def test_a_delivery_that_waits_for_a_reply_gets_it(
        pool: aioredis.ConnectionPool) -> None:
    """A delivery that sends a command and waits for its reply (as a handler that
    emits and waits for the broker would): the connection is read on while the
    listener has the replies, the reply ends the wait, and the messages that came
    meanwhile are delivered after it, in order."""
    deliver = Deliveries()
    got: list[object] = []
    reads_of: list[SubscriberReads] = []

    async def calls_and_waits(payload: bytes) -> None:
        if payload == b"call":
            got.append(await reads_of[0].pipeline(
                [command(b"PING"), command(b"PUBLISH", b"ch", b"meanwhile")]))
        await deliver(payload)

    async with listening(pool, calls_and_waits) as listener:
        assert listener.reads is not None
        reads_of.append(listener.reads)
        await _publish(pool, b"call", b"after")
        await deliver.until(3)
        assert got == [[b"PONG", 1]]
        assert deliver.seen == [b"call", b"after", b"meanwhile"]
        assert not listener.reads.calls and not listener.task.done()  # type: ignore[union-attr]
        await _publish(pool, b"later")  # the callback delivers again
        await deliver.until(4)
        assert deliver.seen[3:] == [b"later"]


async def test_a_delivery_that_waits_for_the_reply_read_with_it_gets_it(
        pool: aioredis.ConnectionPool) -> None:
    """The node's own copy and its PUBLISH's reply come in one read: a delivery of
    that copy which waits for the publish (an emit queued behind it) gets the reply
    from that same read, not when more bytes come."""
    box: list[asyncio.Future[list[Any]]] = []

    async def waits_for_the_publish(payload: bytes) -> None:
        if payload == b"own":
            await asyncio.shield(box[0])

    async with listening(pool, waits_for_the_publish) as listener:
        reads = listener.reads
        assert reads is not None
        box.append(asyncio.ensure_future(
            reads.pipeline([command(b"PUBLISH", b"ch", b"own")])))
        assert await asyncio.wait_for(asyncio.shield(box[0]), WAIT) == [1]


async def test_a_keep_alive_ping_is_taken_off_the_connection(
        pool: aioredis.ConnectionPool) -> None:
    """A PING nobody waits for (the silence watch's): its answer is not handed to the
    listener task, and a pipeline after it gets its own replies. An error that comes
    before its answer (a room subscription's, sent before it) is not the PING's: it
    goes to the listener, as before."""
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        reads = listener.reads
        raw = listener.raw
        assert reads is not None and raw is not None
        reads.ping()
        replies = await asyncio.wait_for(reads.pipeline([command(b"ECHO", b"x")]), WAIT)
        assert replies == [b"x"] and listener.others == [] and not reads.calls
        raw.write(command(b"SUBSCRIBE"))  # refused: wrong number of arguments
        reads.ping()
        await _publish(pool, b"after")  # comes after both answers
        await deliver.until(1)
        assert isinstance(listener.others[0], hiredis.ReplyError)
        assert listener.others[1:] in ([], [b"task delivered"]) and not reads.calls


async def test_a_lost_connection_fails_the_commands_waiting(
        pool: aioredis.ConnectionPool) -> None:
    deliver = Deliveries()
    async with listening(pool, deliver) as listener:
        reads = listener.reads
        assert reads is not None
        # BLPOP holds the reply back; the connection is killed meanwhile
        waiting = asyncio.ensure_future(reads.pipeline([command(b"BLPOP", b"nothing", b"0")]))
        await asyncio.sleep(0.05)
        admin = await RawConnection.open(pool)
        try:
            assert await admin.call(b"CLIENT", b"KILL", b"TYPE", b"pubsub") == 1
        finally:
            await admin.close()
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(waiting, WAIT)
        assert not reads.takes_calls


async def test_with_resp2_a_subscribed_connection_takes_no_commands(
        redis_broker: LocalBroker) -> None:
    """RESP2 refuses commands on a subscribed connection: a node publishes on its
    own connection then."""
    pool = aioredis.ConnectionPool.from_url(redis_broker.url, protocol=2)
    try:
        async with listening(pool, Deliveries()) as listener:
            assert listener.reads is not None and not listener.reads.takes_calls
    finally:
        await pool.disconnect()


def test_pending_calls_take_replies_in_order_and_never_a_push() -> None:
    async def run() -> None:
        calls = PendingCalls()
        assert not calls.take(b"PONG")  # none waiting
        first = calls.add(2)
        calls.add_ping()
        last = calls.add(1)
        assert not calls.take([b"message", b"ch", b"x"])
        assert calls.take(b"PONG") and calls.take(1) and first.result() == [b"PONG", 1]
        assert not calls.take(hiredis.ReplyError("ERR not the PING's"))
        assert calls.take([b"pong", b""]) and not last.done() and calls.take(7)
        assert last.result() == [7] and not calls
        waiting = calls.add(1)
        calls.fail(ConnectionError("gone"))
        with pytest.raises(ConnectionError):
            waiting.result()
        with pytest.raises(ValueError):
            calls.add(0)
    asyncio.run(run())


async def test_a_node_publishes_on_its_subscriber_connection(
        redis_broker: LocalBroker) -> None:
    """A node's publishes go on its subscriber connection (no second connection is
    opened) and reach the other node; while a room subscription waits for Redis's
    reply they go on a publishing connection of their own, in order all the same."""
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    more = asyncio.Event()

    def deliver_to(name: str) -> Callable[[bytes], Coroutine[Any, Any, None]]:
        async def deliver(payload: bytes) -> None:
            got[name].append(payload)
            more.set()
        return deliver

    async def until(name: str, count: int) -> None:
        async def seen() -> None:
            while len(got[name]) < count:
                more.clear()
                await more.wait()
        await asyncio.wait_for(seen(), WAIT)

    nodes = [create_backend(redis_broker.url, channel="calls") for _ in range(2)]
    a, b = nodes
    assert isinstance(a, RedisBackend)
    try:
        await b.start("b", deliver_to("b"))
        await a.start("a", deliver_to("a"))
        await a.send([(None, b"1"), ("b", b"2")])
        await until("b", 2)
        assert got["b"] == [b"1", b"2"] and got["a"] == [b"1"]  # its own copy too
        assert a._publisher is None
        await asyncio.gather(a._subscribe_rooms(["k"]), a.send([(None, b"3")]))
        assert a._publisher is not None
        await a.send([(None, b"4")])
        await until("b", 4)
        assert got["b"] == [b"1", b"2", b"3", b"4"]
    finally:
        for node in nodes:
            await node.stop()
