"""The Kafka backend on a real broker (tansu) as the conformance run configures it:
the channel topic with several partitions, and a bootstrap list whose first address
refuses connections. What the broker's metadata and end offsets say, and that nodes
get past the refused address at start-up and after a broker restart."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from functools import partial

import pytest

pytest.importorskip("aiokafka")

import aiokafka  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from conformance.brokers import HOST, BrokerStartError, KafkaBroker
from conformance.cluster import eventually
from socketio_adapters import create_backend
from socketio_adapters.backends.base import LOG, Backend
from socketio_adapters.backends.kafka import KafkaBackend, partition_for

NODES = ("node-a", "node-b", "node-c")

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    try:
        kafka = KafkaBroker()
        kafka.start()
    except BrokerStartError as exc:
        pytest.skip(f"no tansu: {exc}")
    try:
        yield kafka
    finally:
        kafka.stop()


class _Nodes:
    """Three started backends on one fresh channel, and what each received."""

    def __init__(self, url: str, channel: str) -> None:
        self.backends = [create_backend(url, channel=channel, connect_timeout=20)
                         for _ in NODES]
        self.got: dict[str, asyncio.Queue[bytes]] = {n: asyncio.Queue() for n in NODES}

    async def start(self, log: bool = False) -> _Nodes:
        for uid, backend in zip(NODES, self.backends, strict=True):
            if log:
                backend.enable_log(None, 60.0, 1000)
            await backend.start(uid, self.got[uid].put)
        return self

    async def received(self, uid: str, count: int) -> list[bytes]:
        return [await asyncio.wait_for(self.got[uid].get(), 20) for _ in range(count)]


@pytest.fixture
async def nodes(broker: KafkaBroker, request: pytest.FixtureRequest) -> AsyncIterator[_Nodes]:
    name = request.node.name[:40].replace("[", "-").rstrip("]")
    started = _Nodes(broker.conformance_url, f"parts-{name}")
    try:
        yield await started.start()
    finally:
        for backend in started.backends:
            await backend.stop()


def _resubscribed(backend: Backend) -> bool:
    return backend.state.reconnects >= 1 and backend.state.connected


def _kafka(backend: Backend) -> KafkaBackend:
    assert isinstance(backend, KafkaBackend)
    return backend


async def _partitions(broker: KafkaBroker, topic: str) -> list[int]:
    """The topic's partitions, as the broker's metadata describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{broker.port}")
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return sorted(p["partition"] for p in described["partitions"])


async def _ends(broker: KafkaBroker, topic: str, partitions: list[int]) -> dict[int, int]:
    """How many records each partition holds, from the high watermark of a fetch
    (tansu's ListOffsets answers the start of the last batch + 1)."""
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=f"{HOST}:{broker.port}")
    await consumer.start()
    try:
        tps = [aiokafka.TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=200)
        return {tp.partition: consumer.highwater(tp) for tp in tps}
    finally:
        await consumer.stop()


def test_the_conformance_url_lists_a_refusing_address_first(broker: KafkaBroker) -> None:
    backend = _kafka(create_backend(broker.conformance_url))
    assert backend.servers == [f"{HOST}:{broker.down.port}", f"{HOST}:{broker.port}"]
    assert backend.settings["partitions"] == KafkaBroker.partitions > 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, broker.down.port), timeout=5).close()


async def test_the_topic_has_the_partitions_asked_for_and_the_log_one(
        broker: KafkaBroker) -> None:
    nodes = _Nodes(broker.conformance_url, "parts-log")
    try:
        await nodes.start(log=True)
        await nodes.backends[0].publish([(LOG, b"entry")])
        assert await _partitions(broker, "parts-log") == [0, 1, 2]
        assert await _partitions(broker, "parts-log.log") == [0]
    finally:
        for backend in nodes.backends:
            await backend.stop()


async def test_broadcasts_share_the_first_partition_and_direct_records_spread(
        broker: KafkaBroker, nodes: _Nodes) -> None:
    a, b, c = nodes.backends
    await a.publish([(None, b"a1"), ("node-b", b"a-to-b"), ("node-a", b"a-to-self")])
    await b.publish([(None, b"b1"), ("node-c", b"b-to-c")])
    await c.publish([(None, b"c1"), ("node-a", b"c-to-a")])
    got = {uid: await nodes.received(uid, count)
           for uid, count in (("node-a", 4), ("node-b", 3), ("node-c", 3))}
    # the broadcasts (and node-a's record to itself) in the order they were sent;
    # a record for one node comes through another partition, in no order with them
    assert [p for p in got["node-a"] if p != b"c-to-a"] == [b"a-to-self", b"b1", b"c1"]
    assert [p for p in got["node-b"] if p != b"a-to-b"] == [b"a1", b"c1"]
    assert [p for p in got["node-c"] if p != b"b-to-c"] == [b"a1", b"b1"]
    topic = _kafka(a).topic
    ends = await _ends(broker, topic, [0, 1, 2])
    # partition 0: the three broadcasts and node-a's record to itself
    expected = {0: 4, 1: 0, 2: 0}
    for target in ("node-b", "node-c", "node-a"):  # one record for each other node
        expected[partition_for(target, "someone", [0, 1, 2])] += 1
    assert ends == expected


async def test_nodes_get_past_the_refusing_address_after_a_broker_restart(
        broker: KafkaBroker, nodes: _Nodes) -> None:
    a, b, _ = nodes.backends
    await b.publish([(None, b"before")])
    assert await nodes.received("node-a", 1) == [b"before"]
    await asyncio.to_thread(broker.restart)  # tansu comes back empty
    for uid, backend in zip(NODES, nodes.backends, strict=True):
        # each node notices, then subscribes again
        await eventually(partial(_resubscribed, backend), True, f"{uid} subscribed again", 30)
    await b.publish([(None, b"after")])
    assert await nodes.received("node-a", 1) == [b"after"]
    assert await _partitions(broker, _kafka(a).topic) == [0, 1, 2]
