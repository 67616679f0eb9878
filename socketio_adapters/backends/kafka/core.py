"""The Kafka backend's pub/sub core: one topic every node reads in full by manual
assignment, a producer started on first use, and the listener with its health checks
(the log's live reader runs in the same consumer)."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from ..base import LOG, Capabilities, Destination, Outgoing, RoomTarget
from .clients import FRAMING
from .gaps import GAP_PAUSE, Contiguity
from .log import KafkaLog
from .topics import TopicChanged, describe, ensure_topic, open_watch

__all__ = ["TARGET_HEADER", "KafkaBackend", "in_time_order", "partition_for", "target_of"]

TARGET_HEADER = "to"
"""The header naming the one node a record is for."""
_POLL_SECONDS = 0.25
"""Longest wait for records before the listener looks at its broker connection."""
UNKNOWN_ERROR_GRACE = 5.0
"""Seconds during which a produce answered with UNKNOWN_SERVER_ERROR (-1) is retried
as a connection error (see :meth:`KafkaBackend.publish`)."""


def target_of(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    """The node uid a record is addressed to, or None for every node."""
    for name, value in headers or ():
        if name == TARGET_HEADER:
            return value
    return None


def partition_for(target: str | None, own: str, partitions: Sequence[int]) -> int:
    """The partition of a record of node ``own`` for ``target`` (None: every node),
    among the topic's ``partitions`` (sorted). The first one carries what every node
    must read in the one order the broker accepted it: records for every node, and a
    node's records to itself (the markers of ordered emits, which must come back after
    every broadcast accepted before them). A record for one other node goes to one of
    the others, chosen by the target's uid (murmur2, as Kafka's default partitioner),
    so every record for that node keeps its order."""
    if target is None or target == own or len(partitions) == 1:
        return partitions[0]
    rest = partitions[1:]
    return int(rest[(murmur2(target.encode()) & 0x7FFFFFFF) % len(rest)])


def in_time_order(partitions: Iterable[list[Any]]) -> Iterable[Any]:
    """Records of several partitions merged by timestamp, each partition's in order."""
    lists = [records for records in partitions if records]
    if len(lists) == 1:
        return lists[0]
    return heapq.merge(*lists, key=lambda record: record.timestamp)


class KafkaBackend(KafkaLog):
    """Moves bytes over one Kafka topic that every node reads without a group; keeps
    the durable log in a topic of one partition."""

    name: ClassVar[str] = "kafka"
    extra: ClassVar[str | None] = "kafka"
    capabilities: ClassVar[Capabilities] = Capabilities(direct=False, max_payload=None,
                                                        durable_log=True)

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._producer: Any = None
        self._producer_lock = asyncio.Lock()
        self._unknown_since: float | None = None
        """When produce requests began to fail with UNKNOWN_SERVER_ERROR."""

    # ---------------------------------------------------------------- publishing

    async def _started_producer(self) -> Any:
        """The producer, started on first use (so an emitter starts without a broker,
        and publishing retries through the outbox until one answers)."""
        async with self._producer_lock:
            if self._producer is None:
                producer = aiokafka.AIOKafkaProducer(
                    **self._client_options(), acks=1, enable_idempotence=False,
                    linger_ms=self.settings["linger_ms"],
                    max_request_size=self.settings["max_message_size"] + FRAMING)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        producer = await self._started_producer()
        appends = self.log is not None and any(target == LOG for target, _ in batch)
        if appends:
            await self._ready_to_append()
        try:
            key = self.node_id.encode()
            partitions = (sorted(await producer.partitions_for(self.topic))
                          if any(target != LOG for target, _ in batch) else [])
            if len(batch) == 1:
                await (await self._send(producer, key, partitions, *batch[0]))
            else:
                futures = [await self._send(producer, key, partitions, target, payload)
                           for target, payload in batch]
                results = await asyncio.gather(*futures, return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        except Exception as exc:
            if appends:  # the broker may have lost the log topic: create it again
                self._log_topic_ready = False
            if isinstance(exc, aiokafka.errors.UnknownError):
                self._retry_unknown(exc)
            raise
        self._unknown_since = None

    def _retry_unknown(self, exc: BaseException) -> None:
        """Raise a connection error (the outbox retries it) for an UNKNOWN_SERVER_ERROR
        answer during its first :data:`UNKNOWN_ERROR_GRACE` seconds: tansu answers it
        to every produce for a moment after a topic it lost (a restart of its memory
        storage) is created again, having taken records for the missing topic before.
        A broker that goes on answering it refuses the message (dropped)."""
        now = time.monotonic()
        if self._unknown_since is None:
            self._unknown_since = now
        if now - self._unknown_since < UNKNOWN_ERROR_GRACE:
            raise aiokafka.errors.KafkaConnectionError(
                f"the broker answered UNKNOWN_SERVER_ERROR ({exc}); retrying") from exc

    async def _send(self, producer: Any, key: bytes, partitions: Sequence[int],
                    target: Destination, payload: bytes) -> Any:
        """Queue one record in the producer; the future of its delivery. The key is
        the sender's uid (a node skips its own broadcasts by it), the partition is
        chosen by :func:`partition_for`."""
        if isinstance(target, RoomTarget):  # routes_rooms is False: never sent here
            raise TypeError("the kafka backend does not route rooms")
        if target == LOG:  # one log entry, one record, of the log's one partition
            return await producer.send(self.log_topic, payload, partition=0)
        headers = None if target is None else [(TARGET_HEADER, target.encode())]
        return await producer.send(self.topic, payload, key=key, headers=headers,
                                   partition=partition_for(target, self.node_id, partitions))

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    # ---------------------------------------------------------------- receiving

    async def _run(self, ready: Callable[[], None]) -> None:
        lost = asyncio.Event()
        watch = await open_watch(self.hosts, self._client_options(),
                                 lambda: self._broker_lost(lost),
                                 self.connection_errors)
        consumer = self._consumer()
        reads_log = self.log is not None and self.log.deliver is not None
        try:
            partitions = await ensure_topic(
                watch, self._client_options(), self.topic, self.settings["partitions"],
                self.settings["replication_factor"])
            if reads_log:
                await self._ensure_log_topic(watch)
            await consumer.start()
            assigned = [aiokafka.TopicPartition(self.topic, p) for p in partitions]
            consumer.assign([*assigned, self._log_tp] if reads_log else assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:  # look the end offsets up now, not on the first fetch
                await consumer.position(tp)
            if reads_log:
                await self._start_log(consumer)
            ready()
            await self._listen(watch, lost, consumer, assigned, reads_log)
        except aiokafka.errors.OffsetOutOfRangeError as exc:
            raise TopicChanged(f"a partition restarted its offsets ({exc})") from exc
        finally:
            watch.close()
            await self._stop_consumer(consumer)

    def _broker_lost(self, lost: asyncio.Event) -> None:
        lost.set()
        # a broker that lost its data (tansu in memory) acknowledges records for a
        # topic it no longer has and drops them: make the next append create it first
        self._log_topic_ready = False

    async def _listen(self, watch: Any, lost: asyncio.Event, consumer: Any,
                      assigned: list[Any], reads_log: bool) -> None:
        interval = self.settings["health_interval"]
        poll_ms = int(min(interval, _POLL_SECONDS) * 1000)
        own = self.node_id.encode()
        dispatch = self._dispatch
        next_check = time.monotonic() + interval
        orders = {tp: Contiguity() for tp in assigned}  # see .gaps
        while True:
            fetched = await consumer.getmany(timeout_ms=poll_ms)
            entries = fetched.pop(self._log_tp, None) if reads_log else None
            if fetched:
                fetched = await self._without_holes(consumer, orders, fetched)
            for record in in_time_order(fetched.values()):
                to = target_of(record.headers)
                if to != own and (to is not None or record.key == own):
                    continue  # for another node, or our own broadcast
                value = record.value
                await dispatch(b"" if value is None else value)
            if lost.is_set():  # log records fetched now may come from a log that
                # restarted at offset 0: the next _run looks at the log first
                raise aiokafka.errors.KafkaConnectionError(
                    f"connection to the broker at {watch.host}:{watch.port} closed")
            if entries:
                await self._feed_log(consumer, entries)
            if time.monotonic() >= next_check:
                await self._check(watch, consumer, assigned, reads_log)
                next_check = time.monotonic() + interval

    async def _without_holes(self, consumer: Any, orders: dict[Any, Contiguity],
                             fetched: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
        """The records of each channel partition up to a hole in its offsets; the
        consumer reads again from the missing one (see :mod:`.gaps`)."""
        now = time.monotonic()
        taken: dict[Any, list[Any]] = {}
        holes = False
        for tp, records in fetched.items():
            order = orders[tp]
            lost = order.lost
            taken[tp], again = order.readable(records, now)
            if order.lost != lost:
                self._channel_lost += 1
                self.logger.warning(
                    "kafka: a record of partition %d of topic %r never became readable "
                    "after a later one did (%ss): lost for this node", tp.partition,
                    self.topic, order.wait)
            if again:
                consumer.seek(tp, order.expected)
                holes = True
        if holes:
            await asyncio.sleep(GAP_PAUSE)
        return taken

    async def _check(self, watch: Any, consumer: Any, assigned: list[Any],
                     reads_log: bool) -> None:
        """Raise when a topic vanished, changed its partitions or went back."""
        found = await describe(watch, self.topic)
        if found is None:
            raise TopicChanged(f"topic {self.topic!r} is gone (the broker lost it)")
        if len(found) != len(assigned):
            raise TopicChanged(f"topic {self.topic!r} now has {len(found)} partitions, "
                               f"not {len(assigned)}")
        # positions first: records fetched meanwhile move the position on, past an end
        # read before them. The end is the one the last fetch reported (tansu's
        # ListOffsets answers the start of the last batch + 1, short of a batch of
        # several records); ListOffsets only for a partition not fetched yet.
        positions = {tp: await consumer.position(tp) for tp in assigned}
        unfetched = [tp for tp in assigned if consumer.highwater(tp) is None]
        ends = await consumer.end_offsets(unfetched) if unfetched else {}
        for tp in assigned:
            position = positions[tp]
            end = consumer.highwater(tp)
            if end is None:
                end = ends[tp]
            if end < position:
                raise TopicChanged(f"partition {tp.partition} of topic {self.topic!r} "
                                   f"ends at {end}, before our position {position}")
        if reads_log:
            await self._check_log(watch, consumer)
