"""The subscriber connection's reads (socketio_adapters.backends.redis.subscriber)
against a real redis-server: messages delivered from the read callback, in order even
when one delivery has to wait; the other replies, errors and a lost connection handed
to the listener task; writes and closing unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("redis")

import redis.asyncio as aioredis
import redis.exceptions

from conformance.brokers import LocalBroker, available, broker_for
from socketio_adapters.backends.redis.resp import RawConnection, command
from socketio_adapters.backends.redis.subscriber import SubscriberReads

pytestmark = [pytest.mark.broker, pytest.mark.skipif(
    not available("redis"), reason="redis-server not installed: scripts/install-brokers.sh redis")]

WAIT = 5.0
"""Longest wait for something that comes at once (a bound, not a figure)."""


@pytest.fixture(scope="module")
def redis_broker() -> Iterator[LocalBroker]:
    broker = broker_for("redis")
    broker.start()
    yield broker
    broker.stop()


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

    async def __call__(self, payload: bytes) -> None:
        self.seen.append(payload)
        if payload == b"fail":
            raise ValueError("a delivery failed")
        if payload == b"hold":
            self.held.set()
            await self.gate.wait()
            self.seen.append(b"hold done")
        self.more.set()

    async def until(self, count: int) -> None:
        async def seen() -> None:
            while len(self.seen) < count:
                self.more.clear()
                await self.more.wait()
        await asyncio.wait_for(seen(), WAIT)


async def _subscribed(pool: aioredis.ConnectionPool, deliver: Deliveries,
                      *channels: bytes) -> tuple[RawConnection, SubscriberReads, list[int]]:
    raw = await RawConnection.open(pool)
    heard: list[int] = []
    reads = SubscriberReads(raw, deliver, lambda: heard.append(1))
    raw.write(command(b"SUBSCRIBE", *channels))
    await raw.drain()
    confirmed: list[object] = []
    while len(confirmed) < len(channels):
        confirmed.extend(await asyncio.wait_for(reads.replies(), WAIT))
    assert [r[0] for r in confirmed] == [b"subscribe"] * len(channels)  # type: ignore[index]
    return raw, reads, heard


async def _publish(pool: aioredis.ConnectionPool, *payloads: bytes,
                   channel: bytes = b"ch") -> None:
    publisher = await RawConnection.open(pool)
    try:
        await publisher.pipeline(*(command(b"PUBLISH", channel, p) for p in payloads))
    finally:
        await publisher.close()


async def _listen(reads: SubscriberReads, deliver: Deliveries, others: list[object]) -> None:
    """What the backend's listener task does with the replies it is handed (the
    messages among them are marked in ``others`` too)."""
    while True:
        for reply in await reads.replies():
            if isinstance(reply, list) and reply[0] == b"message":
                others.append(b"task delivered")
                await deliver(reply[2])
            else:
                others.append(reply)


async def test_messages_are_delivered_without_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """The read callback delivers messages (the listener task is handed none), and
    calls heard()."""
    deliver = Deliveries()
    raw, reads, heard = await _subscribed(pool, deliver, b"ch")
    others: list[object] = []
    listener = asyncio.ensure_future(_listen(reads, deliver, others))
    try:
        await asyncio.sleep(0)  # the listener gives the reads back to the callback
        heard.clear()
        await _publish(pool, b"1", b"2", b"3")
        await deliver.until(3)
        assert deliver.seen == [b"1", b"2", b"3"]
        assert others == []
        assert heard
    finally:
        listener.cancel()
        await raw.close()


async def test_a_delivery_that_waits_holds_back_the_ones_after_it(
        pool: aioredis.ConnectionPool) -> None:
    """The messages after a delivery that waits are delivered after it ends, in order
    (by the task, then by the callback again), including one that came meanwhile."""
    deliver = Deliveries()
    raw, reads, _ = await _subscribed(pool, deliver, b"ch")
    others: list[object] = []
    listener = asyncio.ensure_future(_listen(reads, deliver, others))
    try:
        await _publish(pool, b"1", b"hold", b"2")
        await asyncio.wait_for(deliver.held.wait(), WAIT)
        await _publish(pool, b"3")  # arrives while the held delivery waits
        await asyncio.sleep(0.05)
        assert deliver.seen == [b"1", b"hold"]
        deliver.gate.set()
        await deliver.until(5)
        assert deliver.seen == [b"1", b"hold", b"hold done", b"2", b"3"]
        assert b"task delivered" in others  # "2" at least: it waited in the parser
        await _publish(pool, b"4")
        await deliver.until(6)
        assert deliver.seen[5:] == [b"4"]
        assert not listener.done()
    finally:
        listener.cancel()
        await raw.close()


async def test_a_failed_delivery_is_raised_to_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """Its error ends the listener (the backend reconnects); the message after it is
    not delivered by the callback meanwhile."""
    deliver = Deliveries()
    raw, reads, _ = await _subscribed(pool, deliver, b"ch")
    listener = asyncio.ensure_future(_listen(reads, deliver, []))
    try:
        await _publish(pool, b"fail", b"after")
        with pytest.raises(ValueError, match="a delivery failed"):
            await asyncio.wait_for(listener, WAIT)
        await asyncio.sleep(0.05)
        assert deliver.seen == [b"fail"]
    finally:
        listener.cancel()
        await raw.close()


async def test_other_replies_and_writes_go_through_the_listener_task(
        pool: aioredis.ConnectionPool) -> None:
    """A PING's answer and a later subscription's confirmation come to the task, in
    order with the messages around them; writes and their drain still work."""
    deliver = Deliveries()
    raw, reads, _ = await _subscribed(pool, deliver, b"ch")
    others: list[object] = []
    listener = asyncio.ensure_future(_listen(reads, deliver, others))
    try:
        await _publish(pool, b"1")
        await deliver.until(1)
        raw.write(command(b"PING") + command(b"SUBSCRIBE", b"other"))
        await raw.drain()
        await _publish(pool, b"2", channel=b"other")
        await deliver.until(2)
        assert deliver.seen == [b"1", b"2"]
        # "2" was delivered by the callback; a PING's answer is PONG in RESP3
        assert len(others) == 2 and others[0] in (b"PONG", [b"pong", b""])
        assert others[1] == [b"subscribe", b"other", 2]
    finally:
        listener.cancel()
        await raw.close()


async def test_a_connection_redis_drops_ends_the_reads_and_closes(
        pool: aioredis.ConnectionPool) -> None:
    deliver = Deliveries()
    raw, reads, _ = await _subscribed(pool, deliver, b"ch")
    listener = asyncio.ensure_future(_listen(reads, deliver, []))
    admin = await RawConnection.open(pool)
    try:
        assert await admin.call(b"CLIENT", b"KILL", b"TYPE", b"pubsub") == 1
    finally:
        await admin.close()
    with pytest.raises(redis.exceptions.ConnectionError, match="redis closed"):
        await asyncio.wait_for(listener, WAIT)
    await asyncio.wait_for(raw.close(), WAIT)  # redis-py's close sees the connection gone


async def test_bytes_that_are_no_resp_end_the_reads(
        pool: aioredis.ConnectionPool) -> None:
    """A reply Redis never sends (a proxy's garbage) ends the reads with a clear error
    and drops the connection."""
    deliver = Deliveries()
    raw, reads, _ = await _subscribed(pool, deliver, b"ch")
    listener = asyncio.ensure_future(_listen(reads, deliver, []))
    try:
        reads.data_received(b"!not resp\r\n")
        with pytest.raises(redis.exceptions.ConnectionError, match="bad reply from redis"):
            await asyncio.wait_for(listener, WAIT)
        assert deliver.seen == []
    finally:
        listener.cancel()
        await asyncio.wait_for(raw.close(), WAIT)
