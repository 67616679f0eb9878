"""The AMQP backend's durable log: a stream queue, ``{channel}#log``.

Each log record is one stream message, appended through the default exchange: a
record's key is its stream offset plus one (offsets ``"1.0"``, ``"2.0"``, ``"2.1"``,
...). Markers, empty messages a listener appends to find the end of the stream, take
a stream offset too but are no records: they are never fed nor read back. See
``docs/backends/amqp.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, DeliveredMessage

from ...options import Option, positive_int
from ..base import LogRecord, RecordKey
from .connection import AmqpConnection, ConnectionLost, now_ms
from .naming import MARKER_HEADER, OFFSET_HEADER, TIME_HEADER

__all__ = ["AHEAD_WAIT", "LOG_OPTIONS", "AmqpLog", "StreamCursor", "record_key",
           "stream_arguments"]

LOG_OPTIONS: tuple[Option, ...] = (
    Option("log_max_bytes", positive_int, 1 << 30,
           "size cap of the log stream (x-max-length-bytes), for recovery"),
)
AHEAD_WAIT = 1.0
"""How long fetch_log waits for a record this node has not seen to show up."""
_SEARCH_SPAN = 64
"""Stream messages read back at first, to find the last record before a marker."""

Record = tuple[RecordKey, bytes]


def stream_arguments(retention: float, max_bytes: int) -> dict[str, Any]:
    """The stream's declare arguments: RabbitMQ trims whole segments by age and size,
    so segments are an eighth of the size cap (at least 1 MiB)."""
    return {"x-queue-type": "stream",
            "x-max-age": f"{max(1, math.ceil(retention))}s",
            "x-max-length-bytes": max_bytes,
            "x-stream-max-segment-size-bytes": max(1 << 20, max_bytes // 8)}


def record_key(headers: Mapping[str, Any] | None) -> RecordKey | None:
    """The key of the log record a stream delivery with these headers holds: its
    stream offset plus one; None for a marker (or a message with no offset)."""
    headers = headers or {}
    offset = headers.get(OFFSET_HEADER)
    if MARKER_HEADER in headers or not isinstance(offset, int) or isinstance(offset, bool):
        return None
    return (offset + 1,)


def _offset(message: DeliveredMessage) -> int | None:
    value = (message.header.properties.headers or {}).get(OFFSET_HEADER)
    return value if isinstance(value, int) else None


class StreamCursor:
    """The deliveries of one consumer of the log stream, in order, acknowledged in
    groups of ``ack_every`` (a stream consumer gets no more than its prefetch
    unacknowledged)."""

    def __init__(self, channel: AbstractChannel, ack_every: int) -> None:
        self.channel = channel
        self.ack_every = ack_every
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._unacked = 0

    async def received(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message)  # aiormq runs this in a task per delivery, in order

    async def next(self, timeout: float | None) -> DeliveredMessage:
        """The next delivery, waiting at most ``timeout`` seconds (None: no limit)."""
        message = await asyncio.wait_for(self._inbox.get(), timeout)
        self._unacked += 1
        tag = message.delivery_tag
        if tag is not None and (self._unacked >= self.ack_every or self._inbox.empty()):
            await self.channel.basic_ack(tag, multiple=True)
            self._unacked = 0
        return message


class AmqpLog(AmqpConnection):
    """The log driver: declare and follow the stream, fetch records back
    (options: :data:`LOG_OPTIONS`; trimming is RabbitMQ's, by age and size)."""

    async def _declare_log(self, connection: AbstractConnection) -> None:
        """Declare the log stream; nodes configured differently share the first one's
        settings (RabbitMQ refuses to redeclare a queue with other arguments)."""
        log = self.log
        if log is None:
            raise RuntimeError("enable_log() was not called")
        stream = self.names.log_stream
        arguments = stream_arguments(log.retention, self.settings["log_max_bytes"])
        try:
            async with self._side_channel(connection) as channel:
                await channel.queue_declare(stream, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self.logger.warning("%s: the log stream %r exists with other settings, "
                                "which stay in force (%s)", self.name, stream, exc)
            async with self._side_channel(connection) as channel:
                await channel.queue_declare(stream, passive=True)

    async def _follow_log(self, connection: AbstractConnection, raw: AbstractChannel,
                          received: Callable[[DeliveredMessage], Any]) -> None:
        """Start the live reader: ask the log reader where, given the last record
        (found by appending a marker, see :meth:`_log_end`), and consume the stream
        from there; :meth:`_feed_log` takes each delivery."""
        try:
            # a stream takes a moment to come back after a broker restart
            await self._declare_log(connection)
            await raw.basic_qos(prefetch_count=self.settings["prefetch"])
            last, marker = await self._log_end(raw)
            reader = self.log_reader
            start = reader.restart(last)
            if start is None:
                # the whole log, unless it holds only markers up to this one
                offset: int | str = "first" if last is not None else marker + 1
            elif last is not None and start == last[0]:
                # at the last record (always, the first time): what it holds beyond
                # the position, then what follows the marker (only markers before it)
                await reader.feed(*last)
                offset = marker + 1
            else:
                offset = start[0] - 1
            # an explicit offset: nothing appended since the marker can be missed
            await raw.basic_consume(self.names.log_stream, received, no_ack=False,
                                    arguments={OFFSET_HEADER: offset})
        except aiormq.exceptions.AMQPChannelError as exc:
            raise ConnectionLost(f"log stream not available: {exc}") from exc

    async def _feed_log(self, message: DeliveredMessage) -> None:
        """Hand one delivery of the live reader to the log reader (not a marker)."""
        headers = message.header.properties.headers or {}
        key = record_key(headers)
        if key is not None:
            stamp = headers.get(TIME_HEADER)
            await self.log_reader.feed(key, message.body,
                                       stamp if isinstance(stamp, int) else None)

    @contextlib.asynccontextmanager
    async def _cursor(self, channel: AbstractChannel,
                      offset: int | str) -> AsyncIterator[StreamCursor]:
        """A consumer of the stream from ``offset`` (a stream offset, or ``first``,
        ``last``...), cancelled after use (the channel's prefetch must be set)."""
        cursor = StreamCursor(channel, max(1, self.settings["prefetch"] // 2))
        timeout = self.settings["connect_timeout"]
        ok = await channel.basic_consume(self.names.log_stream, cursor.received,
                                         no_ack=False, arguments={OFFSET_HEADER: offset},
                                         timeout=timeout)
        yield cursor
        if ok.consumer_tag is not None and not channel.is_closed:
            await channel.basic_cancel(ok.consumer_tag, timeout=timeout)

    async def _log_end(self, raw: AbstractChannel) -> tuple[Record | None, int]:
        """The last record of the log (None: it has none) and the stream offset of
        the marker after it: append a marker and read the stream from its last chunk
        up to that marker (stream offsets only from an
        explicit start: RabbitMQ holds back a reader whose offset is past the end
        until the stream reaches it)."""
        token = secrets.token_hex(8)
        timeout = self.settings["connect_timeout"]
        last: Record | None = None
        first: int | None = None
        async with self._cursor(raw, "last") as cursor:
            await raw.basic_publish(b"", routing_key=self.names.log_stream, timeout=timeout,
                                    properties=aiormq.spec.Basic.Properties(headers={
                                        MARKER_HEADER: token, TIME_HEADER: now_ms()}))
            while True:
                message = await cursor.next(timeout)
                offset = _offset(message)
                if offset is None:
                    continue
                first = offset if first is None else first
                headers = message.header.properties.headers or {}
                if headers.get(MARKER_HEADER) == token:
                    marker = offset
                    break
                key = record_key(headers)
                if key is not None:
                    last = (key, message.body)
        if last is None and first:
            # the last chunk held only markers (other listeners' starts): look further back
            last = await self._last_record_before(raw, first)
        return last, marker

    async def _last_record_before(self, raw: AbstractChannel, end: int) -> Record | None:
        """The last record before stream offset ``end``, reading back further and
        further (markers are rare: a few messages usually do)."""
        timeout = self.settings["connect_timeout"]
        span = _SEARCH_SPAN
        while True:
            begin = max(0, end - span)
            last: Record | None = None
            first: int | None = None
            async with self._cursor(raw, begin) as cursor:
                while True:
                    message = await cursor.next(timeout)
                    offset = _offset(message)
                    if offset is None:
                        continue
                    first = offset if first is None else first
                    if offset >= end:
                        break
                    key = record_key(message.header.properties.headers)
                    if key is not None:
                        last = (key, message.body)
                    if offset == end - 1:
                        break
            # found it, or read from the start of the stream (RabbitMQ starts a reader
            # at its first message when the offset asked for was trimmed)
            if last is not None or begin == 0 or (first is not None and first > begin):
                return last
            span *= 8

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        """The records ``first`` to ``last``, from a consumer on a channel of its own.
        When the stream no longer holds ``first`` (RabbitMQ then starts at the
        oldest message it has), only the record that follows is returned: it tells
        that ``first`` is gone."""
        if first[0] < 1:
            return None
        highest = self.log_reader.highest
        # RabbitMQ waits at the end of a stream for what may never come: a record
        # this node has not seen gets a short wait
        ahead = first > last or highest is None or first > highest
        connection = await self._publisher_connection()
        async with self._side_channel(connection) as channel:
            try:
                return await asyncio.wait_for(
                    self._fetch(channel, first[0] - 1, max(first, last)[0] - 1, limit,
                                ahead),
                    self.settings["connect_timeout"])
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None  # the stream is gone

    async def _fetch(self, channel: AbstractChannel, begin: int, end: int, limit: int,
                     ahead: bool) -> list[LogRecord]:
        """Up to ``limit`` records from stream offset ``begin`` to ``end``."""
        await channel.basic_qos(prefetch_count=self.settings["prefetch"])
        records: list[LogRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AHEAD_WAIT
        async with self._cursor(channel, begin) as cursor:
            while len(records) < limit:
                try:
                    message = await cursor.next(
                        max(0.0, deadline - loop.time()) if ahead else None)
                except asyncio.TimeoutError:
                    break  # not in the stream (yet)
                offset = _offset(message)
                if offset is None:
                    continue
                if offset > end:
                    break
                headers = message.header.properties.headers or {}
                key = record_key(headers)
                if key is not None:
                    stamp = headers.get(TIME_HEADER)
                    records.append(LogRecord(key, message.body,
                                             stamp if isinstance(stamp, int) else None))
                    if offset != begin and len(records) == 1:
                        break  # the record ``first`` is gone (or is a marker)
                if offset >= end:
                    break
        return records
