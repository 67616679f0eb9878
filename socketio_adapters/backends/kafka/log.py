"""The Kafka log driver: a topic, ``log_topic``, with one partition, so every node
sees one order; one entry per record. A record's key is its partition offset and its
timestamp (ms), so offsets read ``"1041-1717171717171.0"``: the timestamp tells a
record from the one that took its partition offset after a broker lost the log and
counted from 0 again. See docs/backends/kafka.md for the design."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.admin import NewTopic  # type: ignore[import-untyped]

from ...errors import ConfigurationError
from ...storage import DeliverLog, LogRecord, RecordKey
from .clients import KafkaClients
from .gaps import GAP_PAUSE, Contiguity
from .topics import (
    REFUSED_CONFIG,
    TopicChanged,
    create_topic,
    describe,
    raise_unless_created,
    valid_topic,
)

__all__ = ["KafkaLog", "record_body", "record_key"]

_FETCH_POLL_MS = 50
"""How often a read of the log looks whether the broker reported its end."""


def record_key(record: Any) -> RecordKey:
    """The log key of a consumer record: its partition offset and its timestamp."""
    return int(record.offset), int(record.timestamp)


def record_body(record: Any) -> bytes:
    value: bytes | None = record.value
    return b"" if value is None else value


class KafkaLog(KafkaClients):
    """The durable log part of :class:`KafkaBackend`."""

    log_key_parts: ClassVar[int] = 2

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._log_tp = aiokafka.TopicPartition(self.log_topic, 0)
        self._log_topic_ready = False
        """Whether this node created (or found) the log topic since its last failure."""
        self._log_topic_lock = asyncio.Lock()
        self._log_order = Contiguity()
        """Holes in the offsets of the log records the listener is given."""
        self._channel_lost = 0
        """Holes in the channel partitions given up on (see :mod:`.gaps`)."""
        self._log_generation = 0
        """Which log the reader follows, as far as this node can tell (see
        :meth:`_log_identity`)."""

    def enable_log(self, deliver: DeliverLog | None, retention: float, max_length: int,
                   cache_bytes: int = 0) -> None:
        if not valid_topic(self.log_topic) or self.log_topic == self.topic:
            raise ConfigurationError(
                f"bad log topic {self.log_topic!r} for the kafka backend: 1 to 249 "
                "letters, digits, '.', '_' or '-', not the channel's topic (set option "
                "'log_topic')")
        super().enable_log(deliver, retention, max_length, cache_bytes)

    # ------------------------------------------------------------------ the topic

    async def _ensure_log_topic(self, watch: Any) -> None:
        if await describe(watch, self.log_topic) is None:
            await self._create_log_topic()
            if await describe(watch, self.log_topic) is None:
                raise TopicChanged(f"log topic {self.log_topic!r} not visible after it "
                                   "was created")
        self._log_topic_ready = True

    async def _ready_to_append(self) -> None:
        """Create the log topic before an append, unless this node made sure of it since
        its broker connection last closed (every append passes the lock, so none
        overtakes a waiting one)."""
        async with self._log_topic_lock:
            if not self._log_topic_ready:
                await self._create_log_topic()
                self._log_topic_ready = True

    async def _create_log_topic(self) -> None:
        """Create the log topic (one partition, so one order) when it is missing, with
        the log's retention where the broker takes the configs."""
        log = self.log
        if log is None:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        ms = str(max(1, round(log.retention * 1000)))
        replicas = self.settings["replication_factor"]
        options = self._client_options()
        code = await create_topic(options, NewTopic(
            self.log_topic, 1, replicas, topic_configs={"retention.ms": ms, "segment.ms": ms}))
        if code in REFUSED_CONFIG:
            self.logger.warning("the broker refused retention.ms and segment.ms for log "
                                "topic %r; creating it with the broker's defaults",
                                self.log_topic)
            code = await create_topic(options, NewTopic(self.log_topic, 1, replicas))
        raise_unless_created(code, self.log_topic)

    # ---------------------------------------------------------------- following

    async def _start_log(self, consumer: Any) -> None:
        """Seek the listener's consumer where the log reader starts: the record of its
        position (included), or the start of the log."""
        tp = self._log_tp
        self._log_order.restart()
        last = await self._last_record(consumer)
        start = self.log_reader.restart(last, await self._log_identity(consumer, last))
        if start is None:
            await consumer.seek_to_beginning(tp)
            return
        # a record retention deleted meanwhile: from the first one left (feed() warns)
        begin = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, max(start[0], begin))

    async def _last_record(self, consumer: Any) -> tuple[RecordKey, bytes] | None:
        tp = self._log_tp
        end = (await consumer.end_offsets([tp]))[tp]
        if end <= 0:
            return None
        consumer.seek(tp, end - 1)  # tansu answers the last batch's start + 1: read it all
        records = await self._fetch(consumer, end - 1)
        if not records:
            return None
        return record_key(records[-1]), record_body(records[-1])

    async def _log_identity(self, consumer: Any,
                            last: tuple[RecordKey, bytes] | None) -> int:
        """A number that changes when the record at the reader's position has another
        timestamp now: the broker lost the log and the new one grew past the position
        (a shorter one, the reader tells by itself)."""
        position = self.log_reader.position
        if position is None or last is None or last[0][0] < position.key[0]:
            return self._log_generation
        offset = position.key[0]
        found: RecordKey | None = last[0]
        if last[0][0] != offset:
            consumer.seek(self._log_tp, offset)
            records = await self._fetch(consumer, offset, max_records=1)
            found = record_key(records[0]) if records else None
        if found is not None and found[0] == offset and found != position.key:
            self._log_generation += 1
        return self._log_generation

    async def _feed_log(self, consumer: Any, records: Sequence[Any]) -> None:
        """Hand the listener's log records to the reader in offset order: when a
        record comes before an earlier one is readable, read again from the missing
        one (see :mod:`.gaps`)."""
        order = self._log_order
        lost = order.lost
        records, again = order.readable(records, time.monotonic())
        if order.lost != lost:
            self.logger.warning(
                "kafka: a record of log topic %r never became readable after a later "
                "one did (%ss): its entries are lost for this node's clients",
                self.log_topic, order.wait)
        feed = self.log_reader.feed
        for record in records:
            key = record_key(record)
            await feed(key, record_body(record), key[1])
        if again:
            consumer.seek(self._log_tp, order.expected)
            await asyncio.sleep(GAP_PAUSE)

    @property
    def skipped_records(self) -> int:
        """Records of the log or the channel never given to the listener though a
        later one was (logged): messages this node did not get."""
        return self._log_order.lost + self._channel_lost

    async def _check_log(self, watch: Any, consumer: Any) -> None:
        """Raise when the log topic vanished or ends before the reader's position."""
        if await describe(watch, self.log_topic) is None:
            raise TopicChanged(f"log topic {self.log_topic!r} is gone (the broker lost it)")
        # the end a fetch reported: tansu's ListOffsets answers the last batch's start
        end, position = consumer.highwater(self._log_tp), await consumer.position(self._log_tp)
        if end is not None and end < position:
            raise TopicChanged(f"log topic {self.log_topic!r} ends at {end}, before our "
                               f"position {position}")

    # ---------------------------------------------------------------- reading back

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        stop = last[0]
        if first > last:  # the record at first alone
            stop, limit = first[0], 1
        tp = self._log_tp
        consumer = self._consumer()
        try:
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, first[0])
            out: list[LogRecord] = []
            records = await self._fetch(consumer, first[0])
            while records:
                for record in records:
                    if first[0] <= record.offset <= stop:
                        key = record_key(record)
                        out.append(LogRecord(key, record_body(record), key[1]))
                        if len(out) >= limit:
                            return out
                after = records[-1].offset
                if after >= min(stop, (consumer.highwater(tp) or 0) - 1):
                    break
                records = await self._fetch(consumer, after + 1)
            return out
        finally:
            await self._stop_consumer(consumer)

    async def _fetch(self, consumer: Any, at: int, max_records: int | None = None
                     ) -> list[Any] | None:
        """The next records of the log partition, whose position is ``at``; None when
        the log ends at or before ``at`` (or starts after it)."""
        tp = self._log_tp
        deadline = time.monotonic() + self.settings["request_timeout_ms"] / 1000
        while True:
            try:
                fetched = await consumer.getmany(tp, timeout_ms=_FETCH_POLL_MS,
                                                 max_records=max_records)
            except aiokafka.errors.OffsetOutOfRangeError:
                return None
            records: list[Any] | None = fetched.get(tp)
            if records:
                return records
            end = consumer.highwater(tp)
            if end is not None and end <= at:
                return None
            if time.monotonic() >= deadline:
                raise aiokafka.errors.KafkaTimeoutError(
                    f"no answer to a fetch from log topic {self.log_topic!r} at offset {at}")
