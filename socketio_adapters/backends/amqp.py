"""AMQP 0-9-1 backend (RabbitMQ) through aio-pika.

Features
    Broadcasts go to a fanout exchange, ``{channel}``; payloads for one node go to a
    direct exchange, ``{channel}#nodes``, with the node's uid as routing key. Each node
    consumes from its own exclusive, auto-delete queue, bound to both; the broker
    deletes it with the node's connection, so a dead node's queue does not live on
    collecting copies, and a payload for a node that is gone is dropped by the broker.

    Each listener attempt opens a plain connection (not aio-pika's robust one) and
    declares the exchanges, a queue with a fresh name and its bindings; when the
    connection or the channel closes the attempt ends and the shared backoff runs it
    again, so everything is declared anew after a broker restart. Publishing uses its
    own connection (RabbitMQ's advice: flow control on a publisher must not stall its
    consumer), opened on first use and again after it is lost. A batch is written
    without waiting per message and followed by one no-op round trip on the same
    channel, so ``publish`` returns once the broker has routed the whole batch (the
    manager's room changes rely on that); with ``confirm=true`` it waits for publisher
    confirms instead (all messages of the batch in flight at once), which also
    reports messages the broker could not take. Deliveries are acknowledged in groups
    with at most ``prefetch`` outstanding, so a slow node makes its queue grow on the
    broker instead of in its own memory.

Connection string
    ``amqp://[user[:password]@]host[:port][/vhost]`` or ``amqps://...`` (TLS). The
    default vhost is ``/`` (an empty path, or ``%2F``).

Options
    ``channel`` and ``connect_timeout`` (see the base backend; the channel must not
    start with ``amq.``, which RabbitMQ reserves); ``prefetch`` (default ``1000``)
    unacknowledged deliveries per node; ``confirm`` (default ``false``) publisher
    confirms; ``heartbeat`` (default ``20`` seconds, ``0`` disables it), which also
    bounds how long the broker keeps the queue of a node whose host vanished without
    closing its socket; and, passed to aiormq, ``name`` (the connection name RabbitMQ
    shows), ``cafile``, ``capath``, ``certfile``, ``keyfile`` and ``no_verify_ssl``
    (for ``amqps``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from yarl import URL

from ..errors import AdapterError, ConfigurationError
from ..options import Option, parse_bool, positive_int
from .base import Backend, Capabilities, Outgoing

__all__ = ["AmqpBackend"]

MAX_MESSAGE_SIZE = 128 * 1024 * 1024
"""RabbitMQ's default ``max_message_size`` (134217728 bytes since 3.8)."""

_CLOSE_TIMEOUT = 2.0
_PASS_THROUGH = ("name", "cafile", "capath", "certfile", "keyfile", "no_verify_ssl")


def _heartbeat(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected whole seconds from 0 to 65535")
    seconds = int(value)
    if not 0 <= seconds <= 65535:
        raise ValueError("expected whole seconds from 0 to 65535")
    return seconds


def _text(value: Any) -> str:
    return str(value)


class ConnectionLost(aiormq.exceptions.AMQPConnectionError):
    """The broker connection (or the consuming channel) closed under the listener."""


class PublishRefused(AdapterError):
    """The broker answered a publisher confirm with a nack."""


class AmqpBackend(Backend):
    """Moves bytes over RabbitMQ exchanges and one exclusive queue per node."""

    name: ClassVar[str] = "amqp"
    extra: ClassVar[str | None] = "amqp"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=MAX_MESSAGE_SIZE)
    options: ClassVar[tuple[Option, ...]] = (
        Option("prefetch", positive_int, 1000,
               "deliveries a node may hold unacknowledged (basic.qos)"),
        Option("confirm", parse_bool, False,
               "wait for publisher confirms on every batch"),
        Option("heartbeat", _heartbeat, 20, "AMQP heartbeat in seconds, 0 disables it"),
        *(Option(name, _text, None, "passed to aiormq") for name in _PASS_THROUGH),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        aiormq.exceptions.AMQPConnectionError,
        aiormq.exceptions.ChannelInvalidStateError,  # its connection closed under it
        ConnectionError, asyncio.TimeoutError, OSError)

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        if self.channel.startswith("amq."):
            raise ConfigurationError(
                f"bad value {self.channel!r} for option 'channel' of {self.name} backend: "
                "names starting with 'amq.' are reserved by the broker")
        self.prefetch: int = self.settings["prefetch"]
        self.confirm: bool = self.settings["confirm"]
        query = {"heartbeat": str(self.settings["heartbeat"])}
        query.update({name: self.settings[name] for name in _PASS_THROUGH
                      if self.settings[name] is not None})
        self._connect_url = URL(url).update_query(query)
        self.broadcast_exchange = self.channel
        self.direct_exchange = f"{self.channel}#nodes"
        self._attempts = 0
        self._publisher: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._publish_lock = asyncio.Lock()

    def node_queue(self, uid: str, attempt: int) -> str:
        """A fresh name per connection: the queue of a connection the broker has not
        yet seen die (a half-open socket) cannot lock the new one out."""
        return f"{self.channel}#{uid}.{attempt}"

    async def _connect(self) -> AbstractConnection:
        return await aio_pika.connect(self._connect_url,
                                      timeout=self.settings["connect_timeout"])

    async def _declare_exchanges(self, channel: AbstractChannel) -> tuple[
            aio_pika.abc.AbstractExchange, aio_pika.abc.AbstractExchange]:
        broadcast = await channel.declare_exchange(
            self.broadcast_exchange, aio_pika.ExchangeType.FANOUT, durable=False)
        direct = await channel.declare_exchange(
            self.direct_exchange, aio_pika.ExchangeType.DIRECT, durable=False)
        return broadcast, direct

    # ---------------------------------------------------------------- listening

    async def _run(self, ready: Callable[[], None]) -> None:
        inbox: asyncio.Queue[DeliveredMessage | BaseException] = asyncio.Queue()

        def lost(_: Any, exc: BaseException | None = None) -> None:
            inbox.put_nowait(ConnectionLost(f"closed: {exc!r}" if exc else "closed"))

        async def received(message: DeliveredMessage) -> None:
            inbox.put_nowait(message)  # aiormq runs this in a task per delivery, in order

        connection = await self._connect()
        try:
            connection.close_callbacks.add(lost)
            channel = await connection.channel(publisher_confirms=False)
            channel.close_callbacks.add(lost)
            await channel.set_qos(prefetch_count=self.prefetch)
            broadcast, direct = await self._declare_exchanges(channel)
            self._attempts += 1
            queue = await channel.declare_queue(
                self.node_queue(self.node_id, self._attempts), durable=False,
                exclusive=True, auto_delete=True)
            await queue.bind(broadcast)
            await queue.bind(direct, routing_key=self.node_id)
            # the hot path talks to aiormq's channel: no per-message wrapper object
            raw = await channel.get_underlay_channel()
            await raw.basic_consume(queue.name, received, no_ack=False)
            ready()
            await self._consume(inbox, raw)
        finally:
            connection.close_callbacks.discard(lost)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT)

    async def _consume(self, inbox: asyncio.Queue[DeliveredMessage | BaseException],
                       raw: aiormq.abc.AbstractChannel) -> None:
        dispatch, get = self._dispatch, inbox.get
        ack_every = max(1, self.prefetch // 2)
        timeout = self.settings["connect_timeout"]
        unacked = 0
        while True:
            item = await get()
            if isinstance(item, BaseException):
                raise item
            await dispatch(item.body)
            unacked += 1
            if unacked >= ack_every or inbox.empty():
                tag = item.delivery_tag
                if tag is not None:  # always set on a basic.deliver
                    # bounded: a dead socket leaves aiormq's write queue full
                    await asyncio.wait_for(raw.basic_ack(tag, multiple=True), timeout)
                unacked = 0

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
        if not self._opened:
            raise ConnectionLost(f"{self.name} backend is not open")
        connection = self._publisher
        if connection is None or not _alive(connection):
            self._publisher = None
            self._publish_channel = None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT)
            connection = await self._connect()
            self._publisher = connection
        channel = await connection.channel(publisher_confirms=self.confirm)
        await self._declare_exchanges(channel)
        self._publish_channel = channel
        return channel

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if not batch:
            return
        raw = await self._publishing_channel()
        # a dead socket leaves aiormq's bounded write queue full: bound every wait, the
        # timeout is a connection error and the outbox retries
        timeout = self.settings["connect_timeout"]
        routes = [(self.broadcast_exchange, "") if target is None
                  else (self.direct_exchange, target) for target, _ in batch]
        if self.confirm:
            results = await asyncio.gather(*(
                raw.basic_publish(payload, exchange=exchange, routing_key=key,
                                  timeout=timeout)
                for (exchange, key), (_, payload) in zip(routes, batch, strict=True)))
            refused = sum(not isinstance(r, aiormq.spec.Basic.Ack) for r in results)
            if refused:
                raise PublishRefused(f"broker refused {refused} of {len(batch)} messages")
            return
        for (exchange, key), (_, payload) in zip(routes, batch, strict=True):
            await raw.basic_publish(payload, exchange=exchange, routing_key=key,
                                    timeout=timeout, wait=False)
        # One round trip for the whole batch: the broker handles a channel's commands
        # in order, so once this no-op is answered every message above has been routed
        # to its queues, and nothing another node publishes from now on can overtake
        # them (the manager's room changes rely on that).
        await raw.basic_qos(prefetch_count=0, timeout=timeout)

    async def _close(self) -> None:
        async with self._publish_lock:
            connection, self._publisher = self._publisher, None
            self._publish_channel = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT)


def _alive(connection: AbstractConnection) -> bool:
    transport = connection.transport
    return (transport is not None and not connection.is_closed
            and not transport.connection.is_closed)
