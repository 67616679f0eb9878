"""The raw client libraries, without Socket.IO, for the ``raw`` scenario of
:mod:`benchmarks.bench_cross_node`: one publisher process, one subscriber process,
small msgpack payloads.

Each broker kind has one :class:`RawClient` subclass in :data:`RAW_CLIENTS`. A publisher
sends either one message at a time, awaited (``publish``: the ``each`` variant and the
latency runs), or in chunks of :data:`BATCH` handed to the library together
(``publish_batch``, then ``drain`` once at the end: the batched variant, named by
``batch_variant``). A subscriber's ``subscribe`` returns once its subscription is live,
so that nothing published afterwards is missed.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aio_pika
import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]
import asyncpg  # type: ignore[import-untyped]
import msgpack
import nats
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

__all__ = ["BATCH", "RAW_CLIENTS", "OnMessage", "RawClient", "raw_client"]

BATCH = 512
"""Messages per chunk in the batched variant."""

OnMessage = Callable[[bytes], None]
"""Called with each payload the subscriber receives."""


class RawClient(abc.ABC):
    """One connection of a raw client library to the broker at ``url``."""

    library: ClassVar[str]
    """What the table calls the client and its operation, e.g. ``redis-py PUBLISH``."""
    batch_variant: ClassVar[str]
    """Name of the batched variant (``raw_<name>`` in the results)."""
    batch_label: ClassVar[str]
    """How the batched variant sends, for the table."""
    each_label: ClassVar[str] = "awaited each"
    """How the awaited-each variant sends, for the table."""

    def __init__(self, url: str, channel: str) -> None:
        self.url = url
        self.channel = channel

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection (and declare what publishing needs)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; must not raise."""

    @abc.abstractmethod
    async def publish(self, payload: bytes) -> None:
        """Publish one payload and wait for the library's call to return."""

    @abc.abstractmethod
    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        """Hand ``payloads`` to the library together (pipelined, buffered, ...)."""

    async def drain(self) -> None:  # noqa: B027 - optional: most batches end complete
        """After the last batch: wait until the library has sent everything."""

    @abc.abstractmethod
    async def subscribe(self, on_message: OnMessage) -> None:
        """Subscribe; return once the subscription is live."""

    @classmethod
    def labels(cls) -> dict[str, str]:
        """Scenario key -> table label of both variants."""
        return {"raw_each": f"raw {cls.library}, {cls.each_label}",
                f"raw_{cls.batch_variant}": f"raw {cls.library}, {cls.batch_label}"}


class RedisRaw(RawClient):
    library = "redis-py PUBLISH"
    batch_variant = "pipeline"
    batch_label = f"pipelined x{BATCH}"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel)
        self.redis: aioredis.Redis | None = None
        self._reader: asyncio.Task[None] | None = None

    def _client(self) -> aioredis.Redis:
        if self.redis is None:
            raise RuntimeError("redis client not connected")
        return self.redis

    async def connect(self) -> None:
        self.redis = aioredis.Redis.from_url(self.url)
        await self.redis.ping()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()

    async def publish(self, payload: bytes) -> None:
        await self._client().publish(self.channel, payload)

    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        pipe = self._client().pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(self.channel, payload)
        await pipe.execute()

    async def subscribe(self, on_message: OnMessage) -> None:
        pubsub = self._client().pubsub()
        await pubsub.subscribe(self.channel)
        while True:  # the confirmation proves the subscription is live
            message = await pubsub.get_message(timeout=5.0)
            if message is not None and message["type"] == "subscribe":
                break
        self._reader = asyncio.create_task(self._read(pubsub, on_message), name="raw-sub")

    @staticmethod
    async def _read(pubsub: Any, on_message: OnMessage) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    on_message(message["data"])
        finally:
            await pubsub.aclose()


class NatsRaw(RawClient):
    library = "nats-py publish"
    batch_variant = "buffered"
    batch_label = "buffered, one flush"
    each_label = "flush each"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel)
        self.nc: NatsClient | None = None

    def _client(self) -> NatsClient:
        if self.nc is None:
            raise RuntimeError("nats client not connected")
        return self.nc

    async def connect(self) -> None:
        self.nc = await nats.connect(self.url, max_reconnect_attempts=0)

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5)

    async def publish(self, payload: bytes) -> None:
        """Publish and flush (a PING/PONG round trip), so each one is awaited."""
        await self._client().publish(self.channel, payload)
        await self._client().flush()

    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        nc = self._client()
        for payload in payloads:
            await nc.publish(self.channel, payload)  # into nats-py's write buffer

    async def drain(self) -> None:
        await self._client().flush()

    async def subscribe(self, on_message: OnMessage) -> None:
        async def callback(msg: Msg) -> None:
            on_message(msg.data)

        await self._client().subscribe(self.channel, cb=callback)
        await self._client().flush()  # the server has the SUB


class AmqpRaw(RawClient):
    library = "aio-pika publish"
    batch_variant = "gather"
    batch_label = f"gathered x{BATCH}"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel)
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None

    async def connect(self) -> None:
        self.connection = await aio_pika.connect(self.url)
        channel = await self.connection.channel()
        self.exchange = await channel.declare_exchange(
            self.channel, aio_pika.ExchangeType.FANOUT, auto_delete=True)

    def _exchange(self) -> aio_pika.abc.AbstractExchange:
        if self.exchange is None:
            raise RuntimeError("aio-pika not connected")
        return self.exchange

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 5)

    async def publish(self, payload: bytes) -> None:
        await self._exchange().publish(aio_pika.Message(payload), routing_key="")

    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        exchange = self._exchange()
        await asyncio.gather(*(exchange.publish(aio_pika.Message(p), routing_key="")
                               for p in payloads))

    async def subscribe(self, on_message: OnMessage) -> None:
        if self.connection is None:
            raise RuntimeError("aio-pika not connected")
        channel = await self.connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(self._exchange())

        async def callback(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            on_message(message.body)

        await queue.consume(callback, no_ack=True)


class KafkaRaw(RawClient):
    library = "aiokafka"
    batch_variant = "send"
    batch_label = f"send x{BATCH}, await futures"
    each_label = "send_and_wait each"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel)
        self.bootstrap = url.removeprefix("kafka://").rstrip("/")
        self.producer: Any = None
        self.consumer: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await self._create_topic()
        self.producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=False)
        await self.producer.start()

    async def _create_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.channel, 1, 1)])
        except aiokafka.errors.TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), 5)

    async def publish(self, payload: bytes) -> None:
        await self.producer.send_and_wait(self.channel, payload)

    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        futures = [await self.producer.send(self.channel, p) for p in payloads]
        await asyncio.gather(*futures)

    async def subscribe(self, on_message: OnMessage) -> None:
        self.consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=100)
        await self.consumer.start()
        partition = aiokafka.TopicPartition(self.channel, 0)
        self.consumer.assign([partition])
        await self.consumer.seek_to_end(partition)
        await self.consumer.position(partition)  # fixed before the publisher starts
        self._reader = asyncio.create_task(self._read(on_message), name="raw-sub")

    async def _read(self, on_message: OnMessage) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    on_message(record.value)


class PostgresRaw(RawClient):
    library = "asyncpg pg_notify"
    batch_variant = "unnest"
    batch_label = f"one SELECT pg_notify x{BATCH}"

    EACH = "SELECT pg_notify($1, $2)"
    MANY = "SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel)
        self.conn: Any = None

    async def connect(self) -> None:
        self.conn = await asyncpg.connect(self.url)

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 5)

    async def publish(self, payload: bytes) -> None:
        await self.conn.execute(self.EACH, self.channel, base64.b64encode(payload).decode())

    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        texts = [base64.b64encode(p).decode() for p in payloads]
        await self.conn.execute(self.MANY, self.channel, texts)

    async def subscribe(self, on_message: OnMessage) -> None:
        def callback(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            on_message(base64.b64decode(payload))

        await self.conn.add_listener(self.channel, callback)  # LISTEN has returned


class UnixSocketRaw(RawClient):
    """``local://`` has no broker: its floor is one Unix domain socket from the
    publisher straight to the subscriber (no hub between them), msgpack frames."""

    library = "Unix domain socket"
    batch_variant = "joined"
    batch_label = f"one write of {BATCH} frames"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel)
        folder = urlsplit(url).path
        self.path = os.path.join(folder, f"raw-{channel}.sock")
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.AbstractServer | None = None

    async def connect(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()

    async def _writer(self) -> asyncio.StreamWriter:
        if self.writer is None:
            _, self.writer = await asyncio.open_unix_connection(self.path)
        return self.writer

    async def publish(self, payload: bytes) -> None:
        writer = await self._writer()
        writer.write(msgpack.packb(payload))
        await writer.drain()

    async def publish_batch(self, payloads: Sequence[bytes]) -> None:
        writer = await self._writer()
        writer.write(b"".join(msgpack.packb(p) for p in payloads))
        await writer.drain()

    async def subscribe(self, on_message: OnMessage) -> None:
        async def serve(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            unpacker = msgpack.Unpacker()
            while data := await reader.read(1 << 16):
                unpacker.feed(data)
                for payload in unpacker:
                    on_message(payload)

        self.server = await asyncio.start_unix_server(serve, path=self.path)


RAW_CLIENTS: dict[str, type[RawClient]] = {
    "redis": RedisRaw, "nats": NatsRaw, "rabbitmq": AmqpRaw, "kafka": KafkaRaw,
    "postgres": PostgresRaw, "local": UnixSocketRaw,
}


def raw_client(backend: str, url: str, channel: str) -> RawClient:
    return RAW_CLIENTS[backend](url, channel)
