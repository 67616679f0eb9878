"""Half-open connections: the path between a node and its broker goes silent for
PARTITION seconds without closing (conformance/tcp_proxy.py, one proxy per node).

Every backend's own keepalive (Redis PING on the subscriber connection, AMQP
heartbeats, NATS pings, Postgres's probe; set short here, as an application that
wants a quick failover would) must notice within the partition: the node marks its
subscription down, stops announcing itself, reconnects once the path heals, and
broadcasts flow again. A node partitioned alone is dropped by the others, who go
on undisturbed; a cluster request then names it among the silent.

A Redis Cluster's clients connect where its masters say they are (CLUSTER SLOTS,
MOVED), not to the URL's seeds, so a proxy per server node in front of one seed would
be bypassed: as with Kafka, the suite starts a cluster of its own whose masters
announce proxies (one per master, shared by every node); all nodes are cut off
together, and the tests that cut off one node alone do not apply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from socketio_adapters import ClusterTimeout

from .brokers import HOST, KafkaBroker, RedisClusterBroker
from .cluster import DEADLINE, Client, Cluster, Node, eventually
from .conftest import MEASUREMENTS, BackendUnderTest
from .tcp_proxy import SilentProxy

PARTITION = 20.0
"""Seconds without a byte passing."""
NOTICE_WITHIN = 15.0
"""A node must notice a silent broker connection within this (the keepalives below)."""

KEEPALIVE: dict[str, dict[str, Any]] = {
    "redis": {"ping_interval": 2},
    "redis-cluster": {"ping_interval": 2},
    "rabbitmq": {"heartbeat": 2},
    "nats": {"ping_interval": 2, "max_outstanding_pings": 2},
    "postgres": {"ping_interval": 2},
    "kafka": {},  # health_interval: 1 s by default
}
"""Each backend's keepalive option, short (defaults and bounds: docs/README.md)."""


class _ProxiedKafka(KafkaBroker):
    """tansu telling its clients that the broker is at the proxy: a Kafka client
    connects to the address the broker advertises, not to the bootstrap one."""

    def __init__(self) -> None:
        super().__init__()
        self.proxy_port = 0

    @property
    def advertised_listener(self) -> str:
        return f"tcp://{HOST}:{self.proxy_port}"


class _ProxiedRedisCluster(RedisClusterBroker):
    """Three masters that announce proxies as their addresses (``cluster-announce-
    port``): every client of the cluster reaches each master through its proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.proxy_ports: list[int] = []

    def _node_command(self, index: int) -> list[str]:
        return [*super()._node_command(index), "--cluster-announce-port",
                str(self.proxy_ports[index]), "--cluster-announce-bus-port",
                str(self.bus_ports[index])]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.proxy_ports)


def _through(url: str, broker_port: int, proxy_port: int) -> str:
    return url.replace(f":{broker_port}", f":{proxy_port}", 1)


@asynccontextmanager
async def _proxied_cluster(backend: BackendUnderTest, alone: bool = False
                           ) -> AsyncIterator[tuple[Cluster, list[SilentProxy]]]:
    """Three nodes, each reaching the broker through a proxy of its own (Kafka: one
    proxy for all, the one tansu advertises)."""
    broker = backend.broker
    if broker is None or backend.kind not in KEEPALIVE:
        pytest.skip(f"{backend.name}: no broker process this suite starts")
    if backend.kind == "kafka" and not isinstance(broker, KafkaBroker):
        pytest.skip("kafka: a Kafka client connects where the broker advertises; this "
                    "test needs a broker that advertises the proxy (tansu, started "
                    "locally), not the one it was given")
    if backend.kind == "kafka" and alone:
        pytest.skip("kafka: tansu advertises one address, so every node reaches it "
                    "through one proxy and no node can be cut off alone")
    if backend.kind == "redis-cluster" and not isinstance(broker, RedisClusterBroker):
        pytest.skip("redis-cluster: a cluster client connects where the masters announce; "
                    "this test needs masters that announce the proxies (started locally), "
                    "not the cluster it was given")
    if backend.kind == "redis-cluster" and alone:
        pytest.skip("redis-cluster: clients reach each master at the address it "
                    "announces, so every node goes through the same proxies and no "
                    "node can be cut off alone")
    kafka: _ProxiedKafka | None = None
    redis_cluster: _ProxiedRedisCluster | None = None
    proxies: list[SilentProxy] = []
    cluster: Cluster | None = None
    try:
        if backend.kind == "kafka":
            kafka = _ProxiedKafka()
            proxies.append(await SilentProxy(kafka.port).start())
            kafka.proxy_port = proxies[0].port
            await asyncio.to_thread(kafka.start)
            cluster = Cluster(_through(kafka.conformance_url, kafka.port, proxies[0].port),
                              "websocket")
        elif backend.kind == "redis-cluster":
            redis_cluster = _ProxiedRedisCluster()
            proxies = [await SilentProxy(port).start() for port in redis_cluster.ports]
            redis_cluster.proxy_ports = [proxy.port for proxy in proxies]
            await asyncio.to_thread(redis_cluster.start)
            cluster = Cluster(redis_cluster.url, "websocket",
                              **KEEPALIVE[backend.kind])
        else:
            cluster = Cluster(backend.url, "websocket")
            proxies = [await SilentProxy(broker.port).start() for _ in cluster.nodes]
            options = {**cluster.options, **KEEPALIVE[backend.kind]}
            cluster.nodes = [Node(_through(cluster.node_url, broker.port, p.port), **options)
                             for p in proxies]
        await cluster.start()
        yield cluster, proxies
    finally:
        if cluster is not None:
            await cluster.close()
        for proxy in proxies:
            await proxy.close()
        if kafka is not None:
            await asyncio.to_thread(kafka.stop)
        if redis_cluster is not None:
            await asyncio.to_thread(redis_cluster.stop)


async def _flowing(cluster: Cluster, clients: list[Client], event: str,
                   timeout: float) -> float:
    """Emit ``event`` from node 0 until every client got one; the seconds it took."""
    began = time.monotonic()
    got: set[int] = set()
    while len(got) < len(clients):
        assert time.monotonic() - began < timeout, (
            f"broadcasts reached only clients {sorted(got)} within {timeout}s")
        await cluster.nodes[0].sio.emit(event, 1)
        for i, client in enumerate(clients):
            try:
                await asyncio.wait_for(client.received[("/", event)].get(), 0.1)
                got.add(i)
            except asyncio.TimeoutError:
                pass
    return time.monotonic() - began


async def test_every_node_notices_a_silent_broker_and_resumes(
        backend: BackendUnderTest) -> None:
    async with _proxied_cluster(backend) as (cluster, proxies):
        clients = await cluster.connect_all()
        began = time.monotonic()
        for proxy in proxies:
            proxy.partition()
        noticed: dict[int, float] = {}
        while len(noticed) < len(cluster.nodes) and time.monotonic() - began < PARTITION:
            for i, node in enumerate(cluster.nodes):
                if i not in noticed and not node.manager.backend.state.connected:
                    noticed[i] = time.monotonic() - began
            await asyncio.sleep(0.05)
        assert len(noticed) == len(cluster.nodes), (
            f"nodes {sorted(set(range(3)) - set(noticed))} never noticed the silence "
            f"in {PARTITION}s")
        await asyncio.sleep(max(0.0, PARTITION - (time.monotonic() - began)))
        for proxy in proxies:
            proxy.heal()
        resumed = await _flowing(cluster, clients, "after", DEADLINE + 10)
        await cluster.wait_for_count(3, DEADLINE + 10)
        slowest = max(noticed.values())
        MEASUREMENTS[f"{backend.name}/websocket: silent broker connection noticed / broadcasts "
                     f"again after it heals"] = f"{slowest:.1f}s / {resumed:.1f}s"
        assert slowest <= NOTICE_WITHIN, f"noticed after {noticed}"


async def test_a_node_partitioned_alone_is_dropped_and_comes_back(
        backend: BackendUnderTest) -> None:
    async with _proxied_cluster(backend, alone=True) as (cluster, proxies):
        clients = await cluster.connect_all()
        alone = cluster.nodes[2]
        proxies[2].partition()
        timeout = cluster.options["heartbeat_timeout"] + NOTICE_WITHIN
        # the others drop it (it cannot receive, so it must stop counting itself in)
        await eventually(lambda: _counts(cluster.nodes[:2]), [2, 2],
                         "the others drop the silent node", timeout)
        # they go on undisturbed
        await _flowing(cluster, clients[:2], "during", DEADLINE)
        # a request now answers with what the reachable nodes sent
        sockets = await cluster.nodes[0].manager.fetch_sockets(namespace="/")
        assert {s.sid for s in sockets} >= {clients[0].sid(), clients[1].sid()}
        await eventually(lambda: _connected(alone), False, "the silent node notices",
                         NOTICE_WITHIN)
        proxies[2].heal()
        await cluster.wait_for_count(3, DEADLINE + 10)
        await _flowing(cluster, clients, "after", DEADLINE + 10)


async def test_a_request_names_the_nodes_that_did_not_answer(
        backend: BackendUnderTest) -> None:
    """Before the others drop a silent node, a request times out with the answers
    that arrived and the silent node's uid."""
    async with _proxied_cluster(backend, alone=True) as (cluster, proxies):
        await cluster.connect_all()
        proxies[2].partition()
        with pytest.raises(ClusterTimeout) as caught:
            await cluster.nodes[0].manager.server_side_emit_with_ack("echo", timeout=1.0)
        assert caught.value.silent == [cluster.nodes[2].uid]
        proxies[2].heal()


async def _counts(nodes: list[Node]) -> list[int]:
    return [await node.manager.server_count() for node in nodes]


async def _connected(node: Node) -> bool:
    return node.manager.backend.state.connected
