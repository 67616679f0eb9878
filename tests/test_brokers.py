"""The broker launchers of conformance/brokers/, against the real brokers.

Each kind whose binary is installed (scripts/install-brokers.sh) is started, answers a
protocol round trip over raw sockets (or its own CLI for Postgres), is restarted on the
same port and answers again, then is stopped, leaving its port closed and no data dir.
When a client library is installed (redis, aio-pika, nats-py, aiokafka, asyncpg) a
second test makes a round trip with it too, and checks what should survive a restart.
Only pytest is required: the library tests skip without their library.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

try:
    from conformance.brokers import (
        HOST,
        KINDS,
        BrokerStartError,
        LocalBroker,
        LocalHubProcess,
        available,
        broker_for,
        listening,
    )
except ImportError:  # pytest run without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conformance.brokers import (
        HOST,
        KINDS,
        BrokerStartError,
        LocalBroker,
        LocalHubProcess,
        available,
        broker_for,
        listening,
    )

pytestmark = pytest.mark.broker


def _kinds() -> list[Any]:
    return [pytest.param(kind, marks=pytest.mark.skipif(
        not available(kind),
        reason=f"{kind} binary not installed: run scripts/install-brokers.sh {kind}"))
        for kind in KINDS]


def _talk(port: int, payload: bytes, done: Callable[[bytes], bool]) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(payload)
        buf = b""
        while not done(buf):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed; got {buf!r}"
            buf += chunk
        return buf


# ------------------------------------------------------------- raw round trips

def _redis(broker: LocalBroker) -> None:
    reply = _talk(broker.port, b"SET sioa:k hello\r\nGET sioa:k\r\n",
                  lambda b: b.count(b"\r\n") >= 3)
    assert reply == b"+OK\r\n$5\r\nhello\r\n"


def _redis_cluster(broker: LocalBroker) -> None:
    # the key's slot is on one master: it answers, the others redirect to it
    replies = {port: _talk(port, b"SET sioa:k hello\r\n", lambda b: b"\r\n" in b)
               for port in getattr(broker, "ports", [])}
    assert len(replies) == 3, replies
    owner = [port for port, reply in replies.items() if reply == b"+OK\r\n"]
    assert len(owner) == 1, replies
    slot = 11304  # CLUSTER KEYSLOT sioa:k
    assert all(reply == b"-MOVED %d %s:%d\r\n" % (slot, HOST.encode(), owner[0])
               for port, reply in replies.items() if port != owner[0]), replies
    info = _talk(owner[0], b"CLUSTER INFO\r\n", lambda b: b"cluster_known_nodes" in b)
    assert b"cluster_state:ok" in info and b"cluster_size:3" in info


def _nats(broker: LocalBroker) -> None:
    reply = _talk(broker.port, b'CONNECT {"verbose":false}\r\nSUB sioa.t 1\r\n'
                  b"PUB sioa.t 5\r\nhello\r\nPING\r\n", lambda b: b"hello\r\n" in b)
    assert b"MSG sioa.t 1 5\r\nhello\r\n" in reply


def _kafka(broker: LocalBroker) -> None:
    # Metadata v0 for all topics: the broker must advertise itself at HOST:port.
    client = b"sioa-test"
    body = struct.pack(">hhih", 3, 0, 7, len(client)) + client + struct.pack(">i", 0)
    reply = _talk(broker.port, struct.pack(">i", len(body)) + body,
                  lambda b: len(b) >= 4 and len(b) >= 4 + struct.unpack(">i", b[:4])[0])
    _, correlation, brokers = struct.unpack(">iii", reply[:12])
    assert (correlation, brokers) == (7, 1), reply
    _, host_len = struct.unpack(">ih", reply[12:18])
    host = reply[18:18 + host_len].decode()
    (port,) = struct.unpack(">i", reply[18 + host_len:22 + host_len])
    assert (host, port) == (HOST, broker.port)


def _amqp_method(payload: bytes) -> bytes:
    return b"\x01\x00\x00" + struct.pack(">I", len(payload)) + payload + b"\xce"


def _shortstr(text: bytes) -> bytes:
    return bytes([len(text)]) + text


def _rabbitmq(broker: LocalBroker) -> None:
    # AMQP 0-9-1 login: Start/Start-Ok (PLAIN guest), Tune/Tune-Ok, Open/Open-Ok.
    def frames(b: bytes) -> list[bytes]:
        out = []
        while len(b) >= 7 and len(b) >= 8 + struct.unpack(">I", b[3:7])[0]:
            size = struct.unpack(">I", b[3:7])[0]
            out.append(b[7:7 + size])
            b = b[8 + size:]
        return out

    with socket.create_connection((HOST, broker.port), timeout=10) as sock:
        def read_method(expected: bytes) -> bytes:
            buf = b""
            while not frames(buf):
                chunk = sock.recv(65536)
                assert chunk, f"connection closed; got {buf!r}"
                buf += chunk
            method = frames(buf)[0]
            assert method[:4] == expected, method
            return method

        sock.sendall(b"AMQP\x00\x00\x09\x01")
        read_method(b"\x00\x0a\x00\x0a")  # Connection.Start
        sock.sendall(_amqp_method(
            b"\x00\x0a\x00\x0b" + struct.pack(">I", 0) + _shortstr(b"PLAIN")
            + struct.pack(">I", 12) + b"\x00guest\x00guest" + _shortstr(b"en_US")))
        tune = read_method(b"\x00\x0a\x00\x1e")  # Connection.Tune
        channel_max, frame_max = struct.unpack(">HI", tune[4:10])
        sock.sendall(_amqp_method(b"\x00\x0a\x00\x1f" + struct.pack(">HIH", channel_max,
                                                                     frame_max, 0)))
        sock.sendall(_amqp_method(b"\x00\x0a\x00\x28" + _shortstr(b"/") + b"\x00\x00"))
        read_method(b"\x00\x0a\x00\x29")  # Connection.Open-Ok


def _postgres(broker: LocalBroker) -> None:
    psql = broker.binary.parent / "psql"
    out = subprocess.run([str(psql), broker.url, "-Atc", "select 41 + 1"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.strip() == "42"


def _hub_socket(broker: LocalBroker) -> str:
    return str(broker.data_dir / "cluster" / "hub.sock")


def _local(broker: LocalBroker) -> None:
    import msgpack

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(_hub_socket(broker))
        sock.sendall(msgpack.packb([1, "raw", True, None, False, None]))  # HELLO
        welcome = msgpack.unpackb(sock.recv(65536))
    assert welcome[0] == 10 and welcome[2] > 0, welcome  # WELCOME from the hub's pid


def _serves(broker: LocalBroker, port: int) -> bool:
    if isinstance(broker, LocalHubProcess):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(_hub_socket(broker))
            except OSError:
                return False
            return True
    return listening(port)


RAW_ROUND_TRIPS: dict[str, Callable[[LocalBroker], None]] = {
    "redis": _redis, "redis-cluster": _redis_cluster, "nats": _nats, "kafka": _kafka,
    "rabbitmq": _rabbitmq, "postgres": _postgres, "local": _local,
}


@pytest.mark.parametrize("kind", _kinds())
def test_start_round_trip_restart_stop(kind: str) -> None:
    broker = broker_for(kind)
    port = broker.port
    try:
        broker.start()
        assert broker.running and _serves(broker, port)
        hub = _hub_socket(broker) if isinstance(broker, LocalHubProcess) else None
        RAW_ROUND_TRIPS[kind](broker)
        data_dir = broker.data_dir
        assert broker.log_path.exists()
        broker.start()  # running already: nothing happens
        broker.restart()
        assert broker.port == port and broker.data_dir == data_dir
        RAW_ROUND_TRIPS[kind](broker)
    finally:
        broker.stop()
    assert not broker.running
    assert not listening(port)
    if hub is not None:  # the hub's socket went with its folder
        assert not os.path.exists(hub)
    assert not data_dir.exists()
    broker.stop()  # idempotent


# --------------------------------------------------------- client libraries

async def _with_redis(broker: LocalBroker, restarted: bool) -> None:
    aioredis = pytest.importorskip("redis.asyncio")
    client = aioredis.from_url(broker.url)
    try:
        pubsub = client.pubsub()
        await pubsub.subscribe("sioa")
        await client.publish("sioa", b"hello")
        message = None
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message["data"] == b"hello"
        await pubsub.aclose()
    finally:
        await client.aclose()


async def _with_redis_cluster(broker: LocalBroker, restarted: bool) -> None:
    cluster = pytest.importorskip("redis.asyncio.cluster")
    ports: list[int] = getattr(broker, "ports", [])
    client = cluster.RedisCluster(
        startup_nodes=[cluster.ClusterNode(HOST, port) for port in ports])
    try:
        await client.initialize()
        keys = [f"sioa:{i}" for i in range(30)]  # spread over the three masters
        assert len({client.get_node_from_key(k).port for k in keys}) == 3
        if not restarted:
            for key in keys:
                await client.set(key, key)
        for key in keys:  # every master kept its keys (its AOF) across the restart
            assert await client.get(key) == key.encode()
        channel = "sioa-shard"
        pubsub = client.pubsub()
        await pubsub.ssubscribe(channel)
        await client.spublish(channel, b"hello")
        message = None
        while message is None or message["type"] != "smessage":
            message = await pubsub.get_sharded_message(timeout=5)
        assert message["data"] == b"hello"
        await pubsub.aclose()
    finally:
        await client.aclose()


async def _with_nats(broker: LocalBroker, restarted: bool) -> None:
    nats = pytest.importorskip("nats")
    nc = await nats.connect(broker.url, allow_reconnect=False)
    try:
        sub = await nc.subscribe("sioa.core")
        await nc.publish("sioa.core", b"hello")
        assert (await sub.next_msg(timeout=5)).data == b"hello"
        js = nc.jetstream()
        if not restarted:
            await js.add_stream(name="SIOA", subjects=["sioa.js.>"])
            await js.publish("sioa.js.a", b"kept")
        assert (await js.get_msg("SIOA", 1)).data == b"kept"  # JetStream survives a restart
    finally:
        await nc.close()


async def _with_kafka(broker: LocalBroker, restarted: bool) -> None:
    aiokafka = pytest.importorskip("aiokafka")
    servers = f"{HOST}:{broker.port}"
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        sent = await producer.send_and_wait("sioa-test", b"hello", partition=0)
    finally:
        await producer.stop()
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=servers)
    await consumer.start()
    try:
        partition = aiokafka.TopicPartition("sioa-test", 0)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        batch = await consumer.getmany(partition, timeout_ms=5000)
        assert [m.value for m in batch[partition]][:1] == [b"hello"]
    finally:
        await consumer.stop()


async def _with_rabbitmq(broker: LocalBroker, restarted: bool) -> None:
    aio_pika = pytest.importorskip("aio_pika")
    connection = await aio_pika.connect(broker.url)
    try:
        for attempt in range(50):
            # Right after a restart the stream coordinator needs a moment to bring its
            # streams back: until then declaring one fails with NOT_FOUND (404).
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=10)  # stream queues need it
            try:
                queue = await channel.declare_queue(
                    "sioa-stream", durable=True, arguments={"x-queue-type": "stream"})
                break
            except aio_pika.exceptions.ChannelNotFoundEntity:
                if not restarted or attempt == 49:
                    raise
                await asyncio.sleep(0.2)
        if not restarted:
            await channel.default_exchange.publish(aio_pika.Message(b"kept"), "sioa-stream")
        async with queue.iterator(arguments={"x-stream-offset": "first"}) as messages:
            async for message in messages:  # a durable stream survives a restart
                await message.ack()
                assert message.body == b"kept"
                break
    finally:
        await connection.close()


async def _with_postgres(broker: LocalBroker, restarted: bool) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    conn = await asyncpg.connect(broker.url)
    try:
        if not restarted:
            await conn.execute("CREATE TABLE sioa (v text); INSERT INTO sioa VALUES ('kept')")
        assert await conn.fetchval("SELECT v FROM sioa") == "kept"  # survives a restart
        notified: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await conn.add_listener("sioa", lambda *args: notified.set_result(args[3]))
        await conn.execute("NOTIFY sioa, 'hello'")
        assert await asyncio.wait_for(notified, 5) == "hello"
    finally:
        await conn.close()


async def _with_local(broker: LocalBroker, restarted: bool) -> None:
    from socketio_adapters import create_backend

    got: asyncio.Queue[bytes] = asyncio.Queue()
    a, b = create_backend(broker.url), create_backend(broker.url)

    async def deliver(payload: bytes) -> None:
        await got.put(payload)

    await a.start("a", deliver)
    await b.start("b", None)
    try:
        await b.publish([(None, b"hello"), ("a", b"direct")])
        assert [await got.get(), await got.get()] == [b"hello", b"direct"]
    finally:
        await b.stop()
        await a.stop()


LIBRARY_ROUND_TRIPS: dict[str, Callable[[LocalBroker, bool], Coroutine[Any, Any, None]]] = {
    "redis": _with_redis, "redis-cluster": _with_redis_cluster, "nats": _with_nats,
    "kafka": _with_kafka,
    "rabbitmq": _with_rabbitmq, "postgres": _with_postgres, "local": _with_local,
}
LIBRARIES = {"redis": "redis", "redis-cluster": "redis", "nats": "nats", "kafka": "aiokafka",
             "rabbitmq": "aio_pika", "postgres": "asyncpg", "local": "msgpack"}


@pytest.mark.parametrize("kind", _kinds())
def test_client_library_round_trip_across_restart(kind: str) -> None:
    pytest.importorskip(LIBRARIES[kind])
    with broker_for(kind) as broker:
        asyncio.run(asyncio.wait_for(LIBRARY_ROUND_TRIPS[kind](broker, False), 60))
        broker.restart()
        asyncio.run(asyncio.wait_for(LIBRARY_ROUND_TRIPS[kind](broker, True), 60))


# ------------------------------------------------------------------ errors

def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown broker kind 'mqtt'"):
        broker_for("mqtt")
    with pytest.raises(ValueError, match="known: redis"):
        available("mqtt")


@pytest.mark.skipif(not available("redis"),
                    reason="redis binary not installed: run scripts/install-brokers.sh redis")
def test_start_error_carries_the_log() -> None:
    broker = broker_for("redis")
    with socket.socket() as squatter:
        squatter.bind((HOST, broker.port))  # bound, not listening: redis cannot bind it
        with pytest.raises(BrokerStartError) as caught:
            broker.start(timeout=10)
    assert "last lines of redis.log" in str(caught.value)
    assert "Address already in use" in str(caught.value)
    assert not broker.running
    broker.stop()


class _Stubborn(LocalBroker):
    """A "broker" that ignores SIGTERM and listens from a grandchild process."""

    kind = "stubborn"

    @classmethod
    def find_binary(cls) -> Path | None:
        return Path("/bin/sh")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def _command(self) -> list[str]:
        server = f"{sys.executable} -m http.server --bind {HOST} {self.port}"
        return [str(self.binary), "-c", f"trap '' TERM; {server} & echo $! > server.pid; wait"]

    def _probe(self, timeout: float) -> None:
        socket.create_connection((HOST, self.port), timeout=timeout).close()


def test_stop_kills_the_whole_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conformance.brokers.process.STOP_GRACE_SECONDS", 0.5)
    broker = _Stubborn()
    broker.start(timeout=20)
    server_pid = int((broker.data_dir / "server.pid").read_text())
    shell = broker._proc
    assert shell is not None
    broker.stop()
    assert shell.returncode == -9  # SIGTERM was ignored: SIGKILL after the grace time
    assert not listening(broker.port)
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the grandchild is gone too (reaped or a zombie at worst)
            state = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in "ZX":
                raise ProcessLookupError
            time.sleep(0.05)
