"""Kafka backend: one topic that every node reads in full, through aiokafka.

Features
    All nodes share one topic, named after ``channel``. Every node reads every
    partition of it by manual assignment (no consumer group, so no rebalances and no
    group join delay), starting at the end of the log: ``start()`` returns only once
    its position on every partition is fixed, so nothing published after that is
    missed. The topic is created when missing (with ``partitions`` and
    ``replication_factor``). A node keys each of its messages with its uid, so all of
    them land in one partition and every other node receives them in order; records
    fetched together from several partitions are handed over in timestamp order.
    Kafka has no cheap per-node destination, so a payload for one node goes to the
    same topic with a ``to`` header and the other nodes drop it unread
    (``capabilities.direct`` is false). Payloads over ``max_message_size`` are sent
    in chunks. The listener keeps a connection of its own to a broker and, every
    ``health_interval`` seconds, asks over it for the topic's metadata (without
    auto-creation) and end offsets. When that connection closes, or the topic
    vanished, changed its partition count or ends before the node's position (a
    broker that lost its log), the listener ends with a connection error and the
    shared supervisor creates the topic, assigns every partition and seeks to the
    end again. What was published while a node was away is not replayed.

    Durable log (for connection state recovery): a second topic, ``log_topic``,
    with exactly one partition, so every node sees one order. Each entry is a
    record; its offset string is ``"<partition offset>-<record timestamp ms>"``, so
    that an entry is never mistaken for the one that got its partition offset after
    a broker lost its data and counted from 0 again. The listener reads the log
    partition with the same consumer, from the entry after its last position; after
    a reconnect it first checks that this entry is still there (same offset and
    timestamp), else it warns and reads the log from its start. ``read_log`` uses a
    short-lived consumer and enforces ``retention`` (by record timestamp) and
    ``max_length`` itself; the topic is created with ``retention.ms`` and
    ``segment.ms`` set to the retention, which is what bounds its storage on Kafka.
    Sessions are kept in the log by the manager (``session_store`` is false).

Connection string
    ``kafka://host[:port][,host2[:port2]...]`` (bootstrap servers; port 9092 by
    default; IPv6 hosts in brackets). ``kafka://user:password@host:port`` gives SASL
    credentials (percent-encoded), used with ``security_protocol=SASL_PLAINTEXT`` or
    ``SASL_SSL``.

Options
    ``channel`` (the topic name: letters, digits, ``.``, ``_``, ``-``) and
    ``connect_timeout`` (see the base backend); ``partitions`` (default ``1``) and
    ``replication_factor`` (default ``1``), used only when the topic is created;
    ``linger_ms`` (default ``1``), how long the producer waits to batch messages;
    ``max_message_size`` (default ``1000000`` bytes), the largest record before
    chunking, which must fit the broker's ``message.max.bytes``; ``health_interval``
    (default ``1`` second); ``request_timeout_ms`` (default ``10000``);
    ``fetch_max_wait_ms`` (default ``100``); ``client_id``; ``security_protocol``
    (``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``), ``sasl_mechanism``
    (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``), ``ssl_cafile``,
    ``ssl_certfile``, ``ssl_keyfile``; ``log_topic`` (default: the channel followed
    by ``.log``), the durable log's topic, created with one partition when missing.
"""

from __future__ import annotations

import asyncio
import heapq
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.conn import create_conn  # type: ignore[import-untyped]
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]

from ..errors import ConfigurationError
from ..options import Option, non_empty_str, positive_float, positive_int
from ..tasks import settle
from .base import LOG, Backend, Capabilities, DeliverLog, Outgoing

__all__ = ["KafkaBackend", "TopicChanged", "format_offset", "parse_bootstrap", "parse_offset"]

DEFAULT_PORT = 9092
TARGET_HEADER = "to"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_FRAMING = 64 * 1024
"""Room for record and batch headers on top of the largest payload."""
_TOPIC_ALREADY_EXISTS = 36
_POLL_SECONDS = 0.25
"""Longest wait for records before the listener looks at its broker connection."""
_STOP_SECONDS = 5.0
_FETCH_POLL_MS = 50
"""How often a read of the log looks whether the broker reported its end."""
_LOG_SUFFIX = ".log"
_OFFSET = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
_INT64_MAX = (1 << 63) - 1
_REFUSED_CONFIG = {40, 44}
"""INVALID_CONFIG, POLICY_VIOLATION: the broker will not take the log topic's configs."""


class TopicChanged(ConnectionError):
    """The topic vanished or changed its partitions: subscribe again from scratch."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def parse_bootstrap(url: str) -> tuple[list[str], Credentials | None]:
    """``host:port`` strings and the SASL credentials of a ``kafka://`` URL."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed kafka URL: {exc}") from None
    if parts.scheme.lower() != "kafka":
        raise ConfigurationError(f"not a kafka:// URL: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            "a kafka URL is kafka://host[:port][,host2[:port2]...]; the topic is the "
            f"'channel' option, not a path (got {url!r})")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    credentials = None
    if at:
        user, colon, password = userinfo.partition(":")
        if not user or not colon:
            raise ConfigurationError("kafka URL credentials must be user:password@")
        credentials = Credentials(unquote(user), unquote(password))
    servers = [_host_port(item.strip()) for item in hostlist.split(",")]
    return servers, credentials


def _host_port(item: str) -> str:
    if not item:
        raise ConfigurationError("empty host in the kafka URL's server list")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"bad IPv6 host in the kafka URL: {item!r}")
        port_text = rest[1:] if rest else ""
        host = f"[{host}]"
    else:
        host, _, port_text = item.partition(":")
        if not host or ":" in port_text:
            raise ConfigurationError(
                f"bad host in the kafka URL: {item!r} (IPv6 addresses go in brackets)")
    if not port_text:
        return f"{host}:{DEFAULT_PORT}"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"bad port in the kafka URL: {item!r}")
    return f"{host}:{int(port_text)}"


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number >= 0")
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number >= 0")
    return number


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().upper()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text
    return parse


def _optional_str(value: Any) -> str | None:
    return None if value is None else non_empty_str(value)


def format_offset(offset: int, timestamp: int) -> str:
    """A log entry's offset string: its partition offset and its record timestamp
    (ms). The timestamp tells an entry from the one that took its partition offset
    after the broker lost the log and counted from 0 again."""
    return f"{offset}-{timestamp}"


def parse_offset(text: str) -> tuple[int, int] | None:
    """``(partition offset, timestamp)`` of an offset string, or None when malformed."""
    match = _OFFSET.fullmatch(text)
    if match is None:
        return None
    offset, timestamp = int(match[1]), int(match[2])
    if offset > _INT64_MAX or timestamp > _INT64_MAX:
        return None
    return offset, timestamp


def _retriable_errors() -> tuple[type[BaseException], ...]:
    """aiokafka's errors that say "try again later" (its ``retriable`` flag)."""
    found = [cls for cls in vars(aiokafka.errors).values()
             if isinstance(cls, type) and issubclass(cls, aiokafka.errors.KafkaError)
             and getattr(cls, "retriable", False)]
    return (*found, aiokafka.errors.KafkaTimeoutError, OSError)


class KafkaBackend(Backend):
    """Moves bytes over one Kafka topic that every node reads without a group."""

    name: ClassVar[str] = "kafka"
    extra: ClassVar[str | None] = "kafka"
    capabilities: ClassVar[Capabilities] = Capabilities(direct=False, max_payload=None,
                                                        durable_log=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("partitions", positive_int, 1, "partitions of the topic when it is created"),
        Option("replication_factor", positive_int, 1,
               "replication factor of the topic when it is created"),
        Option("linger_ms", _non_negative_int, 1, "producer batching delay (ms)"),
        Option("max_message_size", positive_int, 1_000_000,
               "largest record before chunking (fit the broker's message.max.bytes)"),
        Option("health_interval", positive_float, 1.0,
               "seconds between checks of the broker and the topic"),
        Option("request_timeout_ms", positive_int, 10_000, "timeout of a broker request"),
        Option("fetch_max_wait_ms", _non_negative_int, 100,
               "how long the broker may hold a fetch that has no data"),
        Option("client_id", non_empty_str, "socketio-adapters", "client id shown by the broker"),
        Option("security_protocol", _one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
               "PLAINTEXT", "how to talk to the brokers"),
        Option("sasl_mechanism", _one_of("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), "PLAIN",
               "SASL mechanism (credentials come from the URL)"),
        Option("ssl_cafile", _optional_str, None, "CA bundle for SSL"),
        Option("ssl_certfile", _optional_str, None, "client certificate for SSL"),
        Option("ssl_keyfile", _optional_str, None, "client key for SSL"),
        Option("log_topic", _optional_str, None,
               "topic of the durable log (default: the channel + '.log')"),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = _retriable_errors()

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.servers, self._credentials = parse_bootstrap(url)
        if not _TOPIC.fullmatch(self.channel):
            raise ConfigurationError(
                f"bad value {self.channel!r} for option 'channel' of kafka backend: a "
                "Kafka topic name is 1 to 249 letters, digits, '.', '_' or '-'")
        self.topic = self.channel
        protocol: str = self.settings["security_protocol"]
        if self._credentials is not None and not protocol.startswith("SASL"):
            raise ConfigurationError(
                "the kafka URL has credentials: set option 'security_protocol' to "
                "SASL_PLAINTEXT or SASL_SSL")
        if protocol.startswith("SASL") and self._credentials is None:
            raise ConfigurationError(
                f"option 'security_protocol' is {protocol}: put user:password@ in the URL")
        self.message_limit = self.settings["max_message_size"]
        self._producer: Any = None
        self._producer_lock = asyncio.Lock()
        self.log_topic: str = self.settings["log_topic"] or self.topic + _LOG_SUFFIX
        self._log_tp = aiokafka.TopicPartition(self.log_topic, 0)
        self._log_topic_ready = False
        """Whether this node created (or found) the log topic since its last failure."""
        self._log_topic_lock = asyncio.Lock()
        self._log_next: int | None = None
        """Where the live reader resumes while it has no position (empty log)."""

    def enable_log(self, deliver: DeliverLog | None, retention: float, max_length: int) -> None:
        if not _TOPIC.fullmatch(self.log_topic) or self.log_topic == self.topic:
            raise ConfigurationError(
                f"bad log topic {self.log_topic!r} for the kafka backend: 1 to 249 "
                "letters, digits, '.', '_' or '-', not the channel's topic (set option "
                "'log_topic')")
        super().enable_log(deliver, retention, max_length)

    def _client_options(self) -> dict[str, Any]:
        """What the producer, the consumer and the admin client share."""
        s = self.settings
        options: dict[str, Any] = {
            "bootstrap_servers": self.servers, "client_id": s["client_id"],
            "request_timeout_ms": s["request_timeout_ms"],
            "security_protocol": s["security_protocol"],
        }
        if s["security_protocol"] in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(
                cafile=s["ssl_cafile"], certfile=s["ssl_certfile"], keyfile=s["ssl_keyfile"])
        if self._credentials is not None:
            options.update(sasl_mechanism=s["sasl_mechanism"],
                           sasl_plain_username=self._credentials.username,
                           sasl_plain_password=self._credentials.password)
        return options

    # ---------------------------------------------------------------- publishing

    async def _started_producer(self) -> Any:
        """The producer, started on first use (so an emitter starts without a broker,
        and publishing retries through the outbox until one answers)."""
        async with self._producer_lock:
            if self._producer is None:
                producer = aiokafka.AIOKafkaProducer(
                    **self._client_options(), acks=1, enable_idempotence=False,
                    linger_ms=self.settings["linger_ms"],
                    max_request_size=self.settings["max_message_size"] + _FRAMING)
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
        if appends:  # every append passes the lock, so none overtakes a waiting one
            async with self._log_topic_lock:
                if not self._log_topic_ready:
                    await self._create_log_topic()
                    self._log_topic_ready = True
        try:
            key = self.node_id.encode()
            if len(batch) == 1:
                await (await self._send(producer, key, *batch[0]))
                return
            futures = [await self._send(producer, key, target, payload)
                       for target, payload in batch]
            results = await asyncio.gather(*futures, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except Exception:
            if appends:  # the broker may have lost the log topic: create it again
                self._log_topic_ready = False
            raise

    async def _send(self, producer: Any, key: bytes, target: str | None, payload: bytes
                    ) -> Any:
        """Queue one record in the producer; the future of its delivery."""
        if target == LOG:
            return await producer.send(self.log_topic, payload, partition=0)
        return await producer.send(self.topic, payload, key=key, headers=_headers(target))

    async def _close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    # ---------------------------------------------------------------- receiving

    def _consumer(self) -> Any:
        """A consumer without a group, assigned by hand, that never resets offsets."""
        return aiokafka.AIOKafkaConsumer(
            **self._client_options(), group_id=None, enable_auto_commit=False,
            auto_offset_reset="none", fetch_max_wait_ms=self.settings["fetch_max_wait_ms"],
            max_partition_fetch_bytes=max(1 << 20, self.settings["max_message_size"]
                                          + _FRAMING))

    async def _run(self, ready: Callable[[], None]) -> None:
        lost = asyncio.Event()
        watch = await self._watch(lost)
        consumer = self._consumer()
        reads_log = self.log is not None and self.log.deliver is not None
        try:
            partitions = await self._ensure_topic(watch)
            if reads_log:
                await self._ensure_log_topic(watch)
            await consumer.start()
            assigned = [aiokafka.TopicPartition(self.topic, p) for p in partitions]
            consumer.assign([*assigned, self._log_tp] if reads_log else assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:  # look the end offsets up now, not on the first fetch
                await consumer.position(tp)
            if reads_log:
                await self._position_log(consumer)
            ready()
            await self._listen(watch, lost, consumer, assigned, reads_log)
        except aiokafka.errors.OffsetOutOfRangeError as exc:
            raise TopicChanged(f"a partition restarted its offsets ({exc})") from exc
        finally:
            watch.close()
            await self._stop_consumer(consumer)

    async def _stop_consumer(self, consumer: Any) -> None:
        """Stop a consumer; aiokafka's stop() may raise the CancelledError of its own
        fetch task after a broker closed the connection, which must not end ours."""
        await settle(consumer.stop(), _STOP_SECONDS, self.logger, "stopping a kafka consumer")

    async def _watch(self, lost: asyncio.Event) -> Any:
        """A connection of our own to a broker, for metadata: when it closes, the
        broker went away (and may come back without our topic), so ``lost`` is set."""
        options = {k: v for k, v in self._client_options().items() if k != "bootstrap_servers"}
        failures = []
        errors: tuple[type[BaseException], ...] = (*self.connection_errors,
                                                   asyncio.TimeoutError)
        for server in self.servers:
            host, _, port = server.rpartition(":")
            try:
                return await create_conn(host.strip("[]"), int(port), **options,
                                         on_close=lambda *_: self._broker_lost(lost))
            except errors as exc:
                failures.append(f"{server}: {type(exc).__name__}: {exc}")
        raise aiokafka.errors.KafkaConnectionError(
            f"no Kafka broker answered ({'; '.join(failures)})")

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
        while True:
            fetched = await consumer.getmany(timeout_ms=poll_ms)
            entries = fetched.pop(self._log_tp, None) if reads_log else None
            for record in _in_time_order(fetched.values()):
                if record.key == own:
                    continue  # our own message
                to = _target(record.headers)
                if to is not None and to != own:
                    continue  # addressed to another node
                value = record.value
                await dispatch(b"" if value is None else value)
            if lost.is_set():  # log records fetched now may come from a log that
                # restarted at offset 0: the next _run checks the position first
                raise aiokafka.errors.KafkaConnectionError(
                    f"connection to the broker at {watch.host}:{watch.port} closed")
            for record in entries or ():
                value = record.value
                await self._deliver_entry(format_offset(record.offset, record.timestamp),
                                          b"" if value is None else value)
            if time.monotonic() >= next_check:
                await self._check(watch, consumer, assigned, reads_log)
                next_check = time.monotonic() + interval

    async def _check(self, watch: Any, consumer: Any, assigned: list[Any],
                     reads_log: bool) -> None:
        """Raise when a topic vanished, changed its partitions or went back."""
        found = await self._describe(watch, self.topic)
        if found is None:
            raise TopicChanged(f"topic {self.topic!r} is gone (the broker lost it)")
        if len(found) != len(assigned):
            raise TopicChanged(f"topic {self.topic!r} now has {len(found)} partitions, "
                               f"not {len(assigned)}")
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            position = await consumer.position(tp)
            if ends[tp] < position:
                raise TopicChanged(f"partition {tp.partition} of topic {self.topic!r} "
                                   f"ends at {ends[tp]}, before our position {position}")
        if not reads_log:
            return
        if await self._describe(watch, self.log_topic) is None:
            raise TopicChanged(f"log topic {self.log_topic!r} is gone (the broker lost it)")
        # the end a fetch reported: tansu's ListOffsets answers the last batch's start
        end, position = consumer.highwater(self._log_tp), await consumer.position(self._log_tp)
        if end is not None and end < position:
            raise TopicChanged(f"log topic {self.log_topic!r} ends at {end}, before our "
                               f"position {position}")

    async def _describe(self, watch: Any, topic: str) -> list[int] | None:
        """The topic's partition numbers, or None when it does not exist (asking
        without creating it, which a broker would do with its own defaults)."""
        response = await watch.send(MetadataRequest([topic], allow_auto_topic_creation=False))
        for found in response.to_object()["topics"]:
            if found["topic"] != topic:
                continue
            code = found["error_code"]
            if code == aiokafka.errors.UnknownTopicOrPartitionError.errno:
                return None
            if code:
                raise aiokafka.errors.for_code(code)(f"metadata of topic {topic!r}")
            return sorted(p["partition"] for p in found["partitions"]) or None
        return None

    async def _ensure_topic(self, watch: Any) -> list[int]:
        """Create the topic when it is missing; its partition numbers."""
        found = await self._describe(watch, self.topic)
        if found:
            return found
        code = await self._create_topic(NewTopic(
            self.topic, self.settings["partitions"], self.settings["replication_factor"]))
        _raise_unless_created(code, self.topic)
        found = await self._describe(watch, self.topic)
        if not found:
            raise TopicChanged(f"topic {self.topic!r} not visible after it was created")
        return found

    async def _create_topic(self, topic: Any) -> int:
        """Ask the broker to create ``topic`` (a NewTopic); its error code."""
        admin = AIOKafkaAdminClient(**self._client_options())
        try:
            await admin.start()
            response = await admin.create_topics([topic])
        finally:
            await admin.close()
        codes = [int(error[1]) for error in response.topic_errors]
        return next((code for code in codes if code), 0)

    # ---------------------------------------------------------------- durable log

    async def _ensure_log_topic(self, watch: Any) -> None:
        if await self._describe(watch, self.log_topic) is None:
            await self._create_log_topic()
            if await self._describe(watch, self.log_topic) is None:
                raise TopicChanged(f"log topic {self.log_topic!r} not visible after it "
                                   "was created")
        self._log_topic_ready = True

    async def _create_log_topic(self) -> None:
        """Create the log topic (one partition, so one order) when it is missing, with
        the log's retention where the broker takes the configs."""
        log = self.log
        if log is None:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        ms = str(max(1, round(log.retention * 1000)))
        replicas = self.settings["replication_factor"]
        code = await self._create_topic(NewTopic(
            self.log_topic, 1, replicas, topic_configs={"retention.ms": ms, "segment.ms": ms}))
        if code in _REFUSED_CONFIG:
            self.logger.warning("the broker refused retention.ms and segment.ms for log "
                                "topic %r; creating it with the broker's defaults",
                                self.log_topic)
            code = await self._create_topic(NewTopic(self.log_topic, 1, replicas))
        _raise_unless_created(code, self.log_topic)

    async def _position_log(self, consumer: Any) -> None:
        """Seek the live reader: on the first start to the end of the log (fixing
        ``log_position`` to its last entry), later right after ``log_position`` if
        that entry is still there, else (the broker lost or trimmed it) to the start."""
        tp = self._log_tp
        if self.log_position is None:
            if self._log_next is None:  # first start: at the last entry, if any
                end = (await consumer.end_offsets([tp]))[tp]
                records = None
                if end > 0:  # tansu answers the last batch's start + 1: read it all
                    consumer.seek(tp, end - 1)
                    records = await self._fetch(consumer, end - 1)
                if records:
                    last = records[-1]
                    self.log_position = format_offset(last.offset, last.timestamp)
                    return
                self._log_next = end
            consumer.seek(tp, self._log_next)
            return
        wanted = parse_offset(self.log_position)
        if wanted is not None:
            consumer.seek(tp, wanted[0])
            records = await self._fetch(consumer, wanted[0], max_records=1)
            if records and (records[0].offset, records[0].timestamp) == wanted:
                return  # the consumer stands right after it
        self.logger.warning(
            "log entry %s is no longer in log topic %r (the broker lost or trimmed its "
            "log): reading on from the start of the log", self.log_position, self.log_topic)
        await consumer.seek_to_beginning(tp)
        self._log_next = await consumer.position(tp)
        self.log_position = None

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

    async def read_log(self, after: str, upto: str | None) -> list[tuple[str, bytes]] | None:
        start = parse_offset(after)
        stop = None if upto is None else parse_offset(upto)
        log = self.log
        if start is None or stop is None:
            return None
        if log is not None and start[1] < (time.time() - log.retention) * 1000:
            return None  # older than the retention, whether or not still stored
        consumer = self._consumer()
        try:
            await consumer.start()
            consumer.assign([self._log_tp])
            consumer.seek(self._log_tp, start[0])
            records = await self._fetch(consumer, start[0])
            if not records or (records[0].offset, records[0].timestamp) != start:
                return None
            end = max(consumer.highwater(self._log_tp) or 0, stop[0] + 1)
            if log is not None and start[0] < end - log.max_length:
                return None  # more than max_length entries behind the end
            entries: list[tuple[str, bytes]] = []
            while records:
                entries.extend((format_offset(r.offset, r.timestamp),
                                b"" if r.value is None else r.value)
                               for r in records if start[0] < r.offset <= stop[0])
                last = records[-1].offset
                if last >= min(stop[0], (consumer.highwater(self._log_tp) or 0) - 1):
                    break
                records = await self._fetch(consumer, last + 1)
            return entries
        finally:
            await self._stop_consumer(consumer)


def _raise_unless_created(code: int, topic: str) -> None:
    if code and code != _TOPIC_ALREADY_EXISTS:
        raise aiokafka.errors.for_code(code)(f"could not create topic {topic!r}")


def _headers(target: str | None) -> list[tuple[str, bytes]] | None:
    return None if target is None else [(TARGET_HEADER, target.encode())]


def _target(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    for name, value in headers or ():
        if name == TARGET_HEADER:
            return value
    return None


def _in_time_order(partitions: Iterable[list[Any]]) -> Iterable[Any]:
    """Records of several partitions merged by timestamp, each partition's in order."""
    lists = [records for records in partitions if records]
    if len(lists) == 1:
        return lists[0]
    return heapq.merge(*lists, key=lambda record: record.timestamp)
