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

    Connection state recovery: the durable log is a stream queue, ``{channel}#log``,
    appended to through the default exchange in the same batches. The consecutive log
    entries of one batch travel as one stream message, a frame of at most
    ``frame_cap`` bytes and ``LOG_FRAME_ENTRIES`` entries (a ``sio-entries`` header
    gives their count; a lone or oversized entry travels as itself), so aiormq's cost
    per message is paid per frame. A log offset is ``"{S}.{i}"``: ``S`` the stream
    offset of the message plus one, ``i`` the entry's index in it. A listener finds
    the end of the log by appending a marker (an empty message that is never
    delivered) and reading up to it from the last chunk, then consumes the stream from
    the offset after it; after a reconnect it resumes at the message of its position
    and skips the entries of it already delivered. RabbitMQ trims the stream by age
    (``x-max-age`` from the manager's retention) and size (``log_max_bytes``) in whole
    segments, so ``read_log`` also enforces the retention (a timestamp header on every
    message) and the maximum length (counted in entries while reading, markers
    included). Sessions are one durable queue per session id,
    ``{channel}#session#{pid}``, holding at most one message that expires with the
    session; ``basic.get`` without ack takes it atomically.

Connection string
    ``amqp://[user[:password]@]host[:port][/vhost]`` or ``amqps://...`` (TLS). The
    default vhost is ``/`` (an empty path, or ``%2F``).

Options
    ``channel`` and ``connect_timeout`` (see the base backend; the channel must not
    start with ``amq.``, which RabbitMQ reserves); ``prefetch`` (default ``1000``)
    unacknowledged deliveries per node; ``confirm`` (default ``false``) publisher
    confirms; ``heartbeat`` (default ``20`` seconds, ``0`` disables it), which also
    bounds how long the broker keeps the queue of a node whose host vanished without
    closing its socket; ``log_max_bytes`` (default 1 GiB) size cap of the log stream,
    for recovery; and, passed to aiormq, ``name`` (the connection name RabbitMQ
    shows), ``cafile``, ``capath``, ``certfile``, ``keyfile`` and ``no_verify_ssl``
    (for ``amqps``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, cast

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from yarl import URL

from ..chunks import log_entries_of, pack_log_entries
from ..errors import AdapterError, ConfigurationError
from ..options import Option, parse_bool, positive_int
from .base import LOG, Backend, Capabilities, LogSettings, Outgoing, log_runs

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


_OFFSET = re.compile(r"([1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,5})")
_OFFSET_HEADER = "x-stream-offset"
"""Where RabbitMQ puts a stream delivery's offset (0, 1, 2, ... with no gaps)."""
_TIME_HEADER = "sio-time"
"""When a log entry was appended, in milliseconds since the epoch (for ``retention``)."""
_MARKER_HEADER = "sio-marker"
"""Set on the marker a listener appends at start to find the end of the log; markers
are positions in the log but are never delivered as entries."""
_ENTRIES_HEADER = "sio-entries"
"""Set on a message that holds several log entries (a frame): how many."""
_SESSION_GRACE_MS = 1000
"""How much longer than its record a session queue lives (``x-expires``)."""
_QUEUE_NAME_LIMIT = 255
_AHEAD_WAIT = 1.0
"""How long read_log waits for an entry after this node's position to show up."""
_WATCH_SECONDS = 2.0
"""How often a listener checks that the broker did not cancel its consumers."""


def log_offset(stream_offset: int, index: int) -> str:
    """The log offset (``"1.0"``, ``"1.1"``, ``"2.0"``, ...) of entry ``index`` of the
    stream message at ``stream_offset``."""
    return f"{stream_offset + 1}.{index}"


def stream_offset(offset: str) -> tuple[int, int] | None:
    """The stream offset and entry index of a log offset, or None if ``offset`` is
    not one (whether that entry exists is for the stream to say)."""
    match = _OFFSET.fullmatch(offset)
    if match is None:
        return None
    value = int(match[1]) - 1
    if value >= 1 << 63:  # RabbitMQ's offsets are signed 64-bit
        return None
    return value, int(match[2])


def log_entries(headers: dict[str, Any] | None, body: bytes) -> list[bytes] | None:
    """The log entries of a stream message (see :func:`chunks.log_entries_of`), or
    None for a marker; the count travels in the ``sio-entries`` header."""
    headers = headers or {}
    if _MARKER_HEADER in headers:
        return None
    count = headers.get(_ENTRIES_HEADER)
    valid = isinstance(count, int) and not isinstance(count, bool)
    return log_entries_of(body, count if valid else None)


def stream_arguments(retention: float, max_bytes: int) -> dict[str, Any]:
    """The stream's declare arguments: RabbitMQ trims whole segments by age and size,
    so segments are an eighth of the size cap (at least 1 MiB)."""
    return {"x-queue-type": "stream",
            "x-max-age": f"{max(1, math.ceil(retention))}s",
            "x-max-length-bytes": max_bytes,
            "x-stream-max-segment-size-bytes": max(1 << 20, max_bytes // 8)}


def _delivery_offset(message: DeliveredMessage) -> int | None:
    value = (message.header.properties.headers or {}).get(_OFFSET_HEADER)
    return value if isinstance(value, int) else None


def _entries(message: DeliveredMessage) -> list[bytes] | None:
    return log_entries(message.header.properties.headers, message.body)


class ConnectionLost(aiormq.exceptions.AMQPConnectionError):
    """The broker connection (or the consuming channel) closed under the listener."""


class PublishRefused(AdapterError):
    """The broker answered a publisher confirm with a nack."""


class AmqpBackend(Backend):
    """Moves bytes over RabbitMQ exchanges and one exclusive queue per node."""

    name: ClassVar[str] = "amqp"
    extra: ClassVar[str | None] = "amqp"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=MAX_MESSAGE_SIZE, durable_log=True, session_store=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("prefetch", positive_int, 1000,
               "deliveries a node may hold unacknowledged (basic.qos)"),
        Option("confirm", parse_bool, False,
               "wait for publisher confirms on every batch"),
        Option("heartbeat", _heartbeat, 20, "AMQP heartbeat in seconds, 0 disables it"),
        Option("log_max_bytes", positive_int, 1 << 30,
               "size cap of the log stream (x-max-length-bytes), for recovery"),
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
        self._write_lock = asyncio.Lock()
        self.log_stream = f"{self.channel}#log"
        self._log_next: int | None = None
        """Stream offset the live log reader resumes at (None: it never started)."""
        self._log_skip = 0
        """Entries of the message at ``_log_next`` already delivered."""

    def node_queue(self, uid: str, attempt: int) -> str:
        """A fresh name per connection: the queue of a connection the broker has not
        yet seen die (a half-open socket) cannot lock the new one out."""
        return f"{self.channel}#{uid}.{attempt}"

    def session_queue(self, pid: str) -> str:
        """The queue that holds the session record of ``pid``."""
        return f"{self.channel}#session#{pid}"

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
        watch: asyncio.Task[None] | None = None
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
            log_raw = None
            if self.log is not None:
                log_channel = await connection.channel(publisher_confirms=False)
                log_channel.close_callbacks.add(lost)
                log_raw = await log_channel.get_underlay_channel()
                await self._follow_log(connection, log_raw, received)
            # the hot path talks to aiormq's channel: no per-message wrapper object
            raw = await channel.get_underlay_channel()
            await raw.basic_consume(queue.name, received, no_ack=False)
            ready()
            watch = asyncio.create_task(_watch_consumers(
                [c for c in (raw, log_raw) if c is not None], inbox))
            await self._consume(inbox, log_raw)
        finally:
            if watch is not None:
                watch.cancel()
            connection.close_callbacks.discard(lost)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), _CLOSE_TIMEOUT)

    async def _consume(self, inbox: asyncio.Queue[DeliveredMessage | BaseException],
                       log_raw: aiormq.abc.AbstractChannel | None) -> None:
        dispatch, get, log_entry = self._dispatch, inbox.get, self._log_entry
        ack_every = max(1, self.prefetch // 2)
        timeout = self.settings["connect_timeout"]
        unacked: dict[aiormq.abc.AbstractChannel, int] = {}  # channel: its last tag
        count = 0
        while True:
            item = await get()
            if isinstance(item, BaseException):
                raise item
            if item.channel is log_raw:
                await log_entry(item)
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

    # ---------------------------------------------------------------- the log stream

    async def _declare_log(self, connection: AbstractConnection) -> None:
        """Declare the log stream; nodes configured differently share the first one's
        settings (RabbitMQ refuses to redeclare a queue with other arguments)."""
        log = self.log
        assert log is not None
        arguments = stream_arguments(log.retention, self.settings["log_max_bytes"])
        try:
            async with self._side_channel(connection) as channel:
                await channel.queue_declare(self.log_stream, durable=True,
                                            arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self.logger.warning("%s: the log stream %r exists with other settings, "
                                "which stay in force (%s)", self.name, self.log_stream, exc)
            async with self._side_channel(connection) as channel:
                await channel.queue_declare(self.log_stream, passive=True)

    async def _follow_log(self, connection: AbstractConnection,
                          raw: aiormq.abc.AbstractChannel,
                          received: Callable[[DeliveredMessage], Any]) -> None:
        """Start the live log reader: the first time after the last entry, later
        after the last position; both found by appending a marker (see _log_end)."""
        await self._declare_log(connection)
        await raw.basic_qos(prefetch_count=self.prefetch)
        try:
            last, marker = await self._log_end(raw)
            resume = self._log_next
            if resume is None:
                self.log_position = last
                resume, self._log_skip = marker + 1, 0
            elif marker < resume or (marker == resume and self._log_skip):
                # the position is past the end: the log is new
                self.logger.warning(
                    "%s: the log stream %r ends before this node's position %s (the "
                    "broker lost its data); reading the new log from its start",
                    self.name, self.log_stream, self.log_position)
                resume, self._log_skip = 0, 0
            self._log_next = resume
            # an explicit offset: nothing appended since the marker can be missed
            await raw.basic_consume(self.log_stream, received, no_ack=False,
                                    arguments={_OFFSET_HEADER: resume})
        except aiormq.exceptions.AMQPChannelError as exc:
            # a stream takes a moment to come back after a broker restart
            raise ConnectionLost(f"log stream not available: {exc}") from exc

    async def _log_end(self, raw: aiormq.abc.AbstractChannel) -> tuple[str | None, int]:
        """Append a marker and read the log from its last chunk up to the marker:
        the log offset of the entry before the marker (None: the log was empty) and
        the stream offset of the marker. Entries are read from an explicit offset only: RabbitMQ
        holds back a reader whose offset is past the end until the log reaches it."""
        found: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

        async def received(message: DeliveredMessage) -> None:
            found.put_nowait(message)

        token = secrets.token_hex(8)
        timeout = self.settings["connect_timeout"]
        ok = await raw.basic_consume(self.log_stream, received, no_ack=False,
                                     arguments={_OFFSET_HEADER: "last"}, timeout=timeout)
        await raw.basic_publish(b"", routing_key=self.log_stream, timeout=timeout,
                                properties=aiormq.spec.Basic.Properties(headers={
                                    _MARKER_HEADER: token, _TIME_HEADER: _now_ms()}))
        last: str | None = None
        while True:
            message = await asyncio.wait_for(found.get(), timeout)
            if message.delivery_tag is not None:  # the last chunk may exceed prefetch
                await raw.basic_ack(message.delivery_tag, multiple=True)
            offset = _delivery_offset(message)
            if offset is None:
                continue
            if (message.header.properties.headers or {}).get(_MARKER_HEADER) == token:
                break
            entries = _entries(message)
            if entries:
                last = log_offset(offset, len(entries) - 1)
        if ok.consumer_tag is not None:
            await raw.basic_cancel(ok.consumer_tag, timeout=timeout)
        return last, offset

    async def _log_entry(self, message: DeliveredMessage) -> None:
        """Deliver the entries of one message of the live reader, in order, skipping
        those delivered before a reconnect (markers only move it on)."""
        offset, expected = _delivery_offset(message), self._log_next
        if offset is None or expected is None:
            return
        skip = self._log_skip
        if offset != expected:  # it was away longer than the broker kept entries
            self.logger.warning("%s: log messages from stream offset %d to %d were "
                                "trimmed before this node read them", self.name,
                                expected, offset - 1)
            skip = 0
        entries = _entries(message)
        if entries is not None:
            # the position moves before each entry is handed over (as log_position)
            self._log_next = offset
            deliver = self._deliver_entry
            for index in range(skip, len(entries)):
                self._log_skip = index + 1
                await deliver(log_offset(offset, index), entries[index])
        self._log_next, self._log_skip = offset + 1, 0

    async def read_log(self, after: str, upto: str | None) -> list[tuple[str, bytes]] | None:
        log = self.log
        start = stream_offset(after)
        end = None if upto is None else stream_offset(upto)
        if log is None or start is None or end is None:
            return None
        # every message after the one holding ``after``, up to the one holding
        # ``upto``, holds at least one entry (or a marker): too many messages is
        # already too many entries
        if end[0] - start[0] >= log.max_length or start[0] > end[0] + log.max_length:
            return None
        connection = await self._publisher_connection()
        async with self._side_channel(connection) as channel:
            try:
                return await asyncio.wait_for(
                    self._read_stream(channel, start, end, log),
                    self.settings["connect_timeout"])
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None  # the stream is gone

    async def _read_stream(self, channel: aiormq.abc.AbstractChannel,
                           start: tuple[int, int], end: tuple[int, int],
                           log: LogSettings) -> list[tuple[str, bytes]] | None:
        """The entries after ``start`` up to ``end`` (both stream offset and index),
        read from the message holding ``start``; None when ``start`` names no entry
        (any longer), or when ``max_length`` entries or more follow it."""
        inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

        async def received(message: DeliveredMessage) -> None:
            inbox.put_nowait(message)

        (first_offset, first_index), (last_offset, last_index) = start, end
        await channel.basic_qos(prefetch_count=self.prefetch)
        await channel.basic_consume(self.log_stream, received, no_ack=False,
                                    arguments={_OFFSET_HEADER: first_offset})
        try:
            # ahead of this node: RabbitMQ waits at the end for a message that may
            # not come
            first = await (inbox.get() if first_offset <= last_offset
                           else asyncio.wait_for(inbox.get(), _AHEAD_WAIT))
        except asyncio.TimeoutError:
            return None
        # RabbitMQ starts at the first message it still has when ``start`` was trimmed
        if _delivery_offset(first) != first_offset or _older_than(first, log.retention):
            return None
        items = _entries(first)
        if items is None or first_index >= len(items):
            return None  # a marker, or past the entries of that message
        if start >= end:
            return []  # at or ahead of this node's position: nothing to read up to it
        stop = last_index + 1 if first_offset == last_offset else len(items)
        entries = [(log_offset(first_offset, index), items[index])
                   for index in range(first_index + 1, min(stop, len(items)))]
        count = len(entries)  # entries after ``start``, markers counted too
        ack_every = max(1, self.prefetch // 2)
        offset, seen = first_offset, 1
        while offset < last_offset and count < log.max_length:
            message = await inbox.get()
            delivered = _delivery_offset(message)
            if delivered is None or delivered > last_offset:
                break
            offset, seen = delivered, seen + 1
            items = _entries(message)
            if items is None:
                count += 1
            else:
                stop = last_index + 1 if offset == last_offset else len(items)
                for index in range(min(stop, len(items))):
                    entries.append((log_offset(offset, index), items[index]))
                count += min(stop, len(items))
            if seen % ack_every == 0 and message.delivery_tag is not None:
                await channel.basic_ack(message.delivery_tag, multiple=True)
        if count >= log.max_length:
            return None
        return entries

    # ---------------------------------------------------------------- sessions

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        name = self.session_queue(pid)
        ms = max(1, math.ceil(ttl * 1000))
        # one message at most: a new record pushes the old one out (x-max-length)
        arguments: dict[str, Any] = {"x-max-length": 1, "x-expires": ms}
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, expiration=str(ms))
        timeout = self.settings["connect_timeout"]
        connection = await self._publisher_connection()
        try:
            async with self._side_channel(connection, confirms=True) as channel:
                await channel.queue_declare(name, durable=True, arguments=arguments)
                reply = await channel.basic_publish(data, routing_key=name,
                                                    properties=properties, timeout=timeout)
        except aiormq.exceptions.ChannelPreconditionFailed:
            # kept before with another ttl: replace the queue along with its record
            async with self._side_channel(connection, confirms=True) as channel:
                await channel.queue_delete(name)
                await channel.queue_declare(name, durable=True, arguments=arguments)
                reply = await channel.basic_publish(data, routing_key=name,
                                                    properties=properties, timeout=timeout)
        if not isinstance(reply, aiormq.spec.Basic.Ack):
            raise PublishRefused(f"broker refused the session of {pid!r}")

    async def take_session(self, pid: str) -> bytes | None:
        name = self.session_queue(pid)
        if len(name.encode()) > _QUEUE_NAME_LIMIT:
            return None
        connection = await self._publisher_connection()
        async with self._side_channel(connection) as channel:
            timeout = self.settings["connect_timeout"]
            try:
                # a missing queue first answers a passive declare: a basic.get on it
                # would work as well, but makes aiormq log an unretrieved future
                await channel.queue_declare(name, passive=True, timeout=timeout)
                # a get without ack removes the message: of several takers one gets it
                message = await channel.basic_get(name, no_ack=True, timeout=timeout)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None  # never saved, or expired with its queue
        if not isinstance(message.delivery, aiormq.spec.Basic.GetOk):
            return None
        return message.body

    @contextlib.asynccontextmanager
    async def _side_channel(self, connection: AbstractConnection, confirms: bool = False,
                            ) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A short-lived channel: an error the broker answers with (a missing queue,
        other arguments) closes only this channel."""
        transport = connection.transport
        if transport is None:
            raise ConnectionLost(f"{self.name} publishing connection is closed")
        channel = await transport.connection.channel(publisher_confirms=confirms)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), _CLOSE_TIMEOUT)

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

    async def _publisher_connection(self) -> AbstractConnection:
        """The publishing connection, also used to read the log and for sessions."""
        connection = self._publisher
        if connection is not None and _alive(connection):
            return connection
        async with self._publish_lock:
            return await self._open_publisher()

    async def _open_publisher(self) -> AbstractConnection:
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
        return connection

    async def _open_publishing_channel(self) -> AbstractChannel:
        connection = await self._open_publisher()
        if self.log is not None:  # publishing to a missing queue drops the message
            await self._declare_log(connection)
        channel = await connection.channel(publisher_confirms=self.confirm)
        await self._declare_exchanges(channel)
        self._publish_channel = channel
        return channel

    def _route(self, target: str | None) -> tuple[str, str]:
        if target is None:
            return self.broadcast_exchange, ""
        return self.direct_exchange, target  # log entries: see _messages

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if not batch:
            return
        raw = await self._publishing_channel()
        # a dead socket leaves aiormq's bounded write queue full: bound every wait, the
        # timeout is a connection error and the outbox retries
        timeout = self.settings["connect_timeout"]
        messages = self._messages(batch)
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

    def _messages(self, batch: Sequence[Outgoing]) -> list[
            tuple[str, str, bytes, aiormq.spec.Basic.Properties | None]]:
        """The broker messages of ``batch``, in order: each run of consecutive log
        entries becomes as few stream messages as ``pack_log_entries`` allows."""
        out: list[tuple[str, str, bytes, aiormq.spec.Basic.Properties | None]] = []
        now = _now_ms()
        for target, payloads in log_runs(batch):
            if target != LOG:
                exchange, key = self._route(target)
                out.append((exchange, key, payloads[0], None))
                continue
            if self.log is None:
                raise RuntimeError("a log entry was sent but enable_log() was not called")
            for body, count in pack_log_entries(payloads, self.frame_cap):
                headers: dict[str, Any] = {_TIME_HEADER: now}
                if count > 1:
                    headers[_ENTRIES_HEADER] = count
                # the default exchange routes to the stream
                out.append(("", self.log_stream, body,
                            aiormq.spec.Basic.Properties(headers=headers)))
        return out

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


async def _watch_consumers(channels: Sequence[aiormq.abc.AbstractChannel],
                           inbox: asyncio.Queue[DeliveredMessage | BaseException]) -> None:
    """End the listener when the broker cancels one of its consumers (its queue or
    stream was deleted), which aiormq accepts without telling anyone."""
    while True:
        await asyncio.sleep(_WATCH_SECONDS)
        if not all(cast(aiormq.Channel, c).consumers for c in channels):
            inbox.put_nowait(ConnectionLost("the broker cancelled a consumer"))
            return


def _now_ms() -> int:
    return int(time.time() * 1000)


def _older_than(message: DeliveredMessage, seconds: float) -> bool:
    stamp = (message.header.properties.headers or {}).get(_TIME_HEADER)
    return isinstance(stamp, int) and stamp < _now_ms() - seconds * 1000
