"""The AMQP backend's pub/sub core: one exclusive queue per node bound to a fanout
and a direct exchange, the listener and its consume loop, and publishing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.abc import DeliveredMessage

from ...options import Option, parse_bool, positive_int
from ..base import LOG, Capabilities, Outgoing, RoomTarget
from .connection import CLOSE_TIMEOUT, CONNECTION_OPTIONS, ConnectionLost, PublishRefused, now_ms
from .log import LOG_OPTIONS, AmqpLog
from .naming import MAX_MESSAGE_SIZE, TIME_HEADER, room_routing_key
from .sessions import AmqpSessions

__all__ = ["AmqpBackend", "WireMessage"]

_WATCH_SECONDS = 2.0
"""How often a listener checks that the broker did not cancel its consumers."""

WireMessage = tuple[str, str, bytes, "aiormq.spec.Basic.Properties | None"]
"""A message as the broker gets it: exchange, routing key, body, properties."""


class AmqpBackend(AmqpLog, AmqpSessions):
    """Moves bytes over RabbitMQ exchanges and one exclusive queue per node."""

    name: ClassVar[str] = "amqp"
    extra: ClassVar[str | None] = "amqp"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=MAX_MESSAGE_SIZE, durable_log=True, session_store=True,
        routes_rooms=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("prefetch", positive_int, 1000,
               "deliveries a node may hold unacknowledged (basic.qos)"),
        Option("confirm", parse_bool, False,
               "wait for publisher confirms on every batch"),
        *CONNECTION_OPTIONS,
        *LOG_OPTIONS,
    )
    log_packs: ClassVar[bool] = True

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.prefetch: int = self.settings["prefetch"]
        self.confirm: bool = self.settings["confirm"]
        self._attempts = 0
        self._write_lock = asyncio.Lock()
        self._bound: tuple[AbstractQueue, AbstractExchange] | None = None
        """The listener's queue and the direct exchange, while it listens: room keys
        are bound and unbound there."""

    async def _declare_exchanges(self, channel: AbstractChannel) -> tuple[
            AbstractExchange, AbstractExchange]:
        broadcast = await channel.declare_exchange(
            self.names.broadcast_exchange, aio_pika.ExchangeType.FANOUT, durable=False)
        direct = await channel.declare_exchange(
            self.names.direct_exchange, aio_pika.ExchangeType.DIRECT, durable=False)
        return broadcast, direct

    # ---------------------------------------------------------------- listening

    async def _run(self, ready: Callable[[], None]) -> None:
        inbox: asyncio.Queue[DeliveredMessage | BaseException] = asyncio.Queue()

        def lost(_: Any, exc: BaseException | None = None) -> None:
            inbox.put_nowait(ConnectionLost(f"closed: {exc!r}" if exc else "closed"))

        async def received(message: DeliveredMessage) -> None:
            inbox.put_nowait(message)  # aiormq runs this in a task per delivery, in order

        connection = await self._connect()
        watch: asyncio.Task[None] | None = None
        try:
            connection.close_callbacks.add(lost)
            channel = await connection.channel(publisher_confirms=False)
            channel.close_callbacks.add(lost)
            await channel.set_qos(prefetch_count=self.prefetch)
            broadcast, direct = await self._declare_exchanges(channel)
            self._attempts += 1
            queue = await channel.declare_queue(
                self.names.node_queue(self.node_id, self._attempts), durable=False,
                exclusive=True, auto_delete=True)
            await queue.bind(broadcast)
            await queue.bind(direct, routing_key=self.node_id)
            log_raw = None
            if self.log is not None:
                log_channel = await connection.channel(publisher_confirms=False)
                log_channel.close_callbacks.add(lost)
                log_raw = await log_channel.get_underlay_channel()
                await self._follow_log(connection, log_raw, received)
            # the hot path talks to aiormq's channel: no per-message wrapper object
            raw = await channel.get_underlay_channel()
            await raw.basic_consume(queue.name, received, no_ack=False)
            await self._subscribe_every_room(  # a new queue: bind every room key
                lambda keys: self._bind_rooms(queue, direct, keys, True))
            self._bound = queue, direct
            ready()
            watch = asyncio.create_task(_watch_consumers(
                [c for c in (raw, log_raw) if c is not None], inbox))
            await self._consume(inbox, log_raw)
        finally:
            self._bound = None
            if watch is not None:
                watch.cancel()
            connection.close_callbacks.discard(lost)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)

    @staticmethod
    async def _bind_rooms(queue: AbstractQueue, exchange: AbstractExchange,
                          keys: Sequence[str], bind: bool) -> None:
        """Bind (or unbind) the room keys' routing keys to the node's queue; each
        returns on the broker's bind-ok (unbind-ok)."""
        for key in keys:
            if bind:
                await queue.bind(exchange, routing_key=room_routing_key(key))
            else:
                await queue.unbind(exchange, routing_key=room_routing_key(key))

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        bound = self._bound
        if bound is not None:  # else the listener binds every key when back
            await self._bind_rooms(*bound, keys, True)

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        bound = self._bound
        if bound is not None:
            await self._bind_rooms(*bound, keys, False)

    async def _consume(self, inbox: asyncio.Queue[DeliveredMessage | BaseException],
                       log_raw: aiormq.abc.AbstractChannel | None) -> None:
        """Dispatch pub/sub deliveries and feed log ones, one at a time, in order;
        acknowledge in groups."""
        dispatch, get, feed_log = self._dispatch, inbox.get, self._feed_log
        ack_every = max(1, self.prefetch // 2)
        timeout = self.settings["connect_timeout"]
        unacked: dict[aiormq.abc.AbstractChannel, int] = {}  # channel: its last tag
        count = 0
        while True:
            item = await get()
            if isinstance(item, BaseException):
                raise item
            if item.channel is log_raw:
                await feed_log(item)
            else:
                await dispatch(item.body)
            tag = item.delivery_tag
            if tag is not None:  # always set on a basic.deliver
                unacked[item.channel] = tag
            count += 1
            if count >= ack_every or inbox.empty():
                for channel, last in unacked.items():
                    # bounded: a dead socket leaves aiormq's write queue full
                    await asyncio.wait_for(channel.basic_ack(last, multiple=True), timeout)
                unacked.clear()
                count = 0

    # ---------------------------------------------------------------- publishing

    async def _publishing_channel(self) -> aiormq.Channel:
        channel = self._publish_channel
        if channel is None or channel.is_closed:
            async with self._publish_lock:
                channel = self._publish_channel
                if channel is None or channel.is_closed:
                    channel = await self._open_publishing_channel()
        # aiormq's own class: its basic_publish can queue frames without waiting
        return cast(aiormq.Channel, await channel.get_underlay_channel())

    async def _open_publishing_channel(self) -> AbstractChannel:
        connection = await self._open_publisher()
        if self.log is not None:  # publishing to a missing queue drops the message
            await self._declare_log(connection)
        channel = await connection.channel(publisher_confirms=self.confirm)
        await self._declare_exchanges(channel)
        self._publish_channel = channel
        return channel

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if not batch:
            return
        # opening the channel is bounded too: a connect can hang on a dead path, and
        # aiormq may not give up on cancellation, so the attempt is abandoned, not
        # awaited, at the bound
        task = asyncio.ensure_future(self._publish(batch))
        done, _ = await asyncio.wait({task}, timeout=2 * self.settings["connect_timeout"])
        try:
            if not done:
                task.cancel()
                task.add_done_callback(_consume)
                raise asyncio.TimeoutError
            if task.cancelled():  # aiormq cancels what waits on a connection it closed
                raise ConnectionLost("the publishing connection closed")
            await task
        except asyncio.TimeoutError:
            # no answer in time: the publishing connection may be half-open (a NAT or
            # balancer dropped it), and would stay so: drop it, the retry opens anew
            self._drop_publisher()
            raise ConnectionLost(
                f"the broker did not answer within {self.settings['connect_timeout']}s: "
                "publishing connection dropped") from None

    def _drop_publisher(self) -> None:
        connection, self._publisher = self._publisher, None
        self._publish_channel = None
        transport = getattr(connection, "transport", None) if connection else None
        writer = getattr(transport, "writer", None)
        if writer is not None:
            writer.transport.abort()

    async def _publish(self, batch: Sequence[Outgoing]) -> None:
        raw = await self._publishing_channel()
        # a dead socket leaves aiormq's bounded write queue full: bound every wait, the
        # timeout is a connection error and the outbox retries
        timeout = self.settings["connect_timeout"]
        messages = self.messages(batch)
        if self.confirm:
            results = await asyncio.gather(*(
                raw.basic_publish(payload, exchange=exchange, routing_key=key,
                                  properties=props, timeout=timeout)
                for exchange, key, payload, props in messages))
            refused = sum(not isinstance(r, aiormq.spec.Basic.Ack) for r in results)
            if refused:
                raise PublishRefused(
                    f"broker refused {refused} of {len(messages)} messages")
            return

        async def write() -> None:
            async with self._write_lock:  # concurrent batches must not interleave
                for exchange, key, payload, props in messages:
                    await raw.basic_publish(payload, exchange=exchange, routing_key=key,
                                            properties=props, wait=False)
            # One round trip for the whole batch: the broker handles a channel's
            # commands in order, so once this no-op is answered every message above
            # has been routed to its queues, and nothing another node publishes from
            # now on can overtake them (the manager's room changes rely on that).
            await raw.basic_qos(prefetch_count=0)

        # one bound for the batch: a timeout per message costs a task per message
        await asyncio.wait_for(write(), timeout)

    def messages(self, batch: Sequence[Outgoing]) -> list[WireMessage]:
        """The broker messages of ``batch``, in order: broadcasts to the fanout
        exchange, payloads for one node to the direct exchange, and each log record
        to the stream through the default exchange, with its append time."""
        out: list[WireMessage] = []
        now = now_ms()
        for target, payload in batch:
            if target is None:
                out.append((self.names.broadcast_exchange, "", payload, None))
            elif isinstance(target, RoomTarget):
                out.append((self.names.direct_exchange, room_routing_key(target.key),
                            payload, None))
            elif target != LOG:
                out.append((self.names.direct_exchange, target, payload, None))
            elif self.log is None:
                raise RuntimeError("a log entry was sent but enable_log() was not called")
            else:
                out.append(("", self.names.log_stream, payload,
                            aiormq.spec.Basic.Properties(headers={TIME_HEADER: now})))
        return out


async def _watch_consumers(channels: Sequence[aiormq.abc.AbstractChannel],
                           inbox: asyncio.Queue[DeliveredMessage | BaseException]) -> None:
    """End the listener when the broker cancels one of its consumers (its queue or
    stream was deleted), which aiormq accepts without telling anyone."""
    while True:
        await asyncio.sleep(_WATCH_SECONDS)
        if not all(cast(aiormq.Channel, c).consumers for c in channels):
            inbox.put_nowait(ConnectionLost("the broker cancelled a consumer"))
            return


def _consume(task: asyncio.Future[None]) -> None:
    """Retrieve the outcome of an abandoned publish."""
    if not task.cancelled():
        task.exception()
