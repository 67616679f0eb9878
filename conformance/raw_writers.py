"""Raw writers: foreign bytes written straight to the places a backend uses on its
broker, with the broker's own client library (or, for ``local://``, its hub's socket
protocol; for ``memory://``, its in-process bus), never through a manager.

Each writer knows where the product writes from the product's own naming (a backend
object made from the cluster's URL, never started) and writes:

- :meth:`RawWriter.broadcast`: to what every node receives (channel, exchange,
  subject, topic, NOTIFY channel);
- :meth:`RawWriter.direct`: to what one node receives (its channel, routing key,
  subject, its uid in a header, its NOTIFY channel);
- :meth:`RawWriter.log`: into the durable log (stream, stream queue, JetStream
  stream, log topic, log table).

Each returns how many malformed messages every receiving node must count for what it
wrote beyond the payloads given (the foreign forms only that broker has: a NOTIFY
text in another format, a stream entry without the product's field, ...).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgpack

from socketio_adapters import create_backend
from socketio_adapters.backends.base import LOG, Backend

__all__ = ["RawWriter", "raw_writer"]


class RawWriter:
    """Writes foreign payloads to one cluster's channels and log."""

    def __init__(self, broker_url: str, node_url: str) -> None:
        self.broker_url = broker_url
        self.names: Any = create_backend(node_url)
        """The product's names for this cluster (a backend that is never started)."""

    async def open(self) -> None:
        pass

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        raise NotImplementedError

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        raise NotImplementedError

    async def log(self, payloads: Sequence[bytes]) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class MemoryWriter(RawWriter):
    """The in-process bus: a backend of the same hub, publishing raw bytes."""

    async def open(self) -> None:
        self.bus: Backend = self.names
        self.bus.enable_log(None, 60.0, 10_000)
        await self.bus.start(f"foreign-{secrets.token_hex(4)}", None)

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        await self.bus.publish([(None, p) for p in payloads])
        return 0

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        await self.bus.publish([(uid, p) for p in payloads])
        return 0

    async def log(self, payloads: Sequence[bytes]) -> int:
        await self.bus.publish([(LOG, p) for p in payloads])
        return 0

    async def close(self) -> None:
        await self.bus.stop()


class LocalWriter(RawWriter):
    """The hub's Unix socket, in its frame protocol (msgpack arrays)."""

    HELLO, PUBLISH, APPEND, SYNC, REPLY = 1, 2, 3, 6, 13

    async def open(self) -> None:
        path = str(self.names.folder.socket_path)
        self.reader, self.writer = await asyncio.open_unix_connection(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        await self._send([self.HELLO, f"foreign-{secrets.token_hex(4)}", False, None,
                          False, None])
        await self._next()  # the welcome
        # bytes that are no frame, and a frame with a message that is no bytes: the
        # hub closes those connections, and the nodes never see them
        for junk in (b"\xc1 not a frame", msgpack.packb([self.PUBLISH, None, "text"])):
            _, other = await asyncio.open_unix_connection(path)
            other.write(junk)
            await other.drain()
            other.close()

    async def _send(self, *frames: list[Any]) -> None:
        self.writer.write(b"".join(msgpack.packb(f, use_bin_type=True) for f in frames))
        await self.writer.drain()

    async def _next(self) -> list[Any]:
        while True:
            for item in self.unpacker:
                return list(item)
            data = await asyncio.wait_for(self.reader.read(1 << 16), 10)
            if not data:
                raise ConnectionResetError("the hub closed the raw writer's connection")
            self.unpacker.feed(data)

    async def _synced(self, *frames: list[Any]) -> int:
        """Send ``frames``, then wait until the hub handled them."""
        rid = secrets.randbelow(1 << 30)
        await self._send(*frames, [self.SYNC, rid])
        while (await self._next())[:2] != [self.REPLY, rid]:
            pass
        return 0

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        return await self._synced(*([self.PUBLISH, None, p] for p in payloads))

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        return await self._synced(*([self.PUBLISH, uid, p] for p in payloads))

    async def log(self, payloads: Sequence[bytes]) -> int:
        return await self._synced(*([self.APPEND, p] for p in payloads))

    async def close(self) -> None:
        self.writer.close()


class RedisWriter(RawWriter):
    """redis-py: PUBLISH to the channels, XADD to the log's stream."""

    async def open(self) -> None:
        import redis.asyncio

        self.client: redis.asyncio.Redis | redis.asyncio.RedisCluster = (
            redis.asyncio.from_url(self.broker_url))

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            await self.client.publish(self.names.broadcast_channel, payload)
        return 0

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            await self.client.publish(self.names.node_channel(uid), payload)
        return 0

    async def log(self, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            await self.client.xadd(self.names.log_key, {"p": payload})
        # entries another client wrote: another field, and two fields
        await self.client.xadd(self.names.log_key, {"x": b"\x93\x01\x02\x03"})
        await self.client.xadd(self.names.log_key, {"a": b"1", "p": b"\xc1"})
        return 2

    async def close(self) -> None:
        await self.client.aclose()


class RedisClusterWriter(RedisWriter):
    """redis-py's cluster client: (S)PUBLISH on the node that owns the channel's slot
    (PUBLISH where the nodes SUBSCRIBE, with ``sharded=false``), XADD routed by key."""

    async def open(self) -> None:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        from socketio_adapters.backends.redis.cluster import parse_cluster_url

        seeds, username, password = parse_cluster_url(self.broker_url.split("?", 1)[0])
        self.cluster = RedisCluster(
            startup_nodes=[ClusterNode(seed.host, seed.port) for seed in seeds],
            username=username, password=password)
        await self.cluster.initialize()
        self.client = self.cluster  # XADD: RedisWriter.log, routed by the cluster client

    async def _publish(self, channel: str, payloads: Sequence[bytes]) -> int:
        node = self.cluster.get_node_from_key(channel)
        verb = "SPUBLISH" if self.names.sharded else "PUBLISH"
        for payload in payloads:
            await self.cluster.execute_command(verb, channel, payload, target_nodes=node)
        return 0

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        return await self._publish(self.names.broadcast_channel, payloads)

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        return await self._publish(self.names.node_channel(uid), payloads)


class AmqpWriter(RawWriter):
    """aio-pika: to the fanout and direct exchanges, and to the log's stream queue."""

    async def open(self) -> None:
        import aio_pika

        self.aio_pika = aio_pika
        self.connection = await aio_pika.connect(self.broker_url)
        self.channel = await self.connection.channel()

    async def _publish(self, exchange: str, key: str, payloads: Sequence[bytes]) -> int:
        target = (self.channel.default_exchange if not exchange
                  else await self.channel.get_exchange(exchange, ensure=False))
        for payload in payloads:
            await target.publish(self.aio_pika.Message(
                payload, headers={"sio-time": "not a time", "foreign": True}),
                routing_key=key)
        return 0

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        return await self._publish(self.names.names.broadcast_exchange, "", payloads)

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        return await self._publish(self.names.names.direct_exchange, uid, payloads)

    async def log(self, payloads: Sequence[bytes]) -> int:
        return await self._publish("", self.names.names.log_stream, payloads)

    async def close(self) -> None:
        await self.connection.close()


class NatsWriter(RawWriter):
    """nats-py: core NATS to the subjects, JetStream to the log's stream."""

    async def open(self) -> None:
        import nats

        self.nc = await nats.connect(self.broker_url, connect_timeout=10)
        self.js = self.nc.jetstream()

    async def _publish(self, subject: str, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            await self.nc.publish(subject, payload)
        await self.nc.flush()
        return 0

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        return await self._publish(self.names.names.broadcast_subject, payloads)

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        return await self._publish(self.names.node_subject(uid), payloads)

    async def log(self, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            await self.js.publish(self.names.names.log_subject, payload,
                                  headers={"Foreign": "yes"})
        return 0

    async def close(self) -> None:
        await self.nc.close()


class KafkaWriter(RawWriter):
    """aiokafka: records on the topic (one node's by its header) and the log topic,
    tombstones (no value) included."""

    async def open(self) -> None:
        import aiokafka  # type: ignore[import-untyped]

        self.producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=urlsplit(self.broker_url).netloc)
        await self.producer.start()

    async def _send(self, topic: str, payloads: Sequence[bytes | None],
                    headers: list[tuple[str, bytes]] | None = None,
                    partition: int | None = None) -> None:
        for payload in payloads:
            await self.producer.send_and_wait(topic, payload, key=b"foreign",
                                              headers=headers, partition=partition)

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        await self._send(self.names.topic, [*payloads, None])
        return 1

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        await self._send(self.names.topic, payloads, headers=[("to", uid.encode())])
        return 0

    async def log(self, payloads: Sequence[bytes]) -> int:
        await self._send(self.names.log_topic, [*payloads, None], partition=0)
        return 1

    async def close(self) -> None:
        await self.producer.stop()


class PostgresWriter(RawWriter):
    """asyncpg: NOTIFY on the channels (the product's inline form, and texts in no
    form of it), rows in the log table with its wake-up, rows in the session table."""

    FOREIGN_TEXTS = ("hello", "0@999999999", "1:!!!not base64", "zz:")

    async def open(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        self.conn = await asyncpg.connect(self.broker_url)

    async def _notify(self, channel: str, payloads: Sequence[bytes]) -> int:
        texts = [f"{i:x}:{base64.b64encode(p).decode()}" for i, p in enumerate(payloads)]
        texts += self.FOREIGN_TEXTS
        for text in texts:
            await self.conn.execute("SELECT pg_notify($1, $2)", channel, text)
        return len(self.FOREIGN_TEXTS)

    async def broadcast(self, payloads: Sequence[bytes]) -> int:
        return await self._notify(self.names.broadcast_channel, payloads)

    async def direct(self, uid: str, payloads: Sequence[bytes]) -> int:
        return await self._notify(self.names.node_channel(uid), payloads)

    async def log(self, payloads: Sequence[bytes]) -> int:
        table = _quoted(self.names.log_table)
        await self.conn.execute(f"INSERT INTO {table} (data) SELECT unnest($1::bytea[])",
                                list(payloads))
        await self.conn.execute("SELECT pg_notify($1, 'not an id')",
                                self.names.log_channel)
        last = await self.conn.fetchval(f"SELECT max(id) FROM {table}")
        await self.conn.execute("SELECT pg_notify($1, $2)", self.names.log_channel,
                                str(last))
        sessions = self.names.sessions_table
        if await self.conn.fetchval("SELECT to_regclass($1)", _quoted(sessions)):
            await self.conn.execute(
                f"INSERT INTO {_quoted(sessions)} (pid, data, expires) "
                "VALUES ($1, $2, now() + interval '1 minute')",
                f"foreign-{secrets.token_hex(4)}", b"\xc1 no session")
        return 0

    async def close(self) -> None:
        await self.conn.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


WRITERS: dict[str, Callable[[str, str], RawWriter]] = {
    "memory": MemoryWriter,
    "local": LocalWriter,
    "redis": RedisWriter,
    "redis-cluster": RedisClusterWriter,
    "amqp": AmqpWriter,
    "nats": NatsWriter,
    "kafka": KafkaWriter,
    "postgres": PostgresWriter,
}
"""Writers by the name of the backend (``Backend.name``)."""


async def raw_writer(broker_url: str, node_url: str) -> RawWriter:
    """An open writer for the cluster at ``node_url`` (``broker_url``: the broker's
    own URL, without the product's options)."""
    kind = create_backend(node_url).name
    writer = WRITERS[kind](broker_url, node_url)
    await writer.open()
    return writer
