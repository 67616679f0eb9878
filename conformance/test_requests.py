"""Cluster requests: fetch_sockets, server-side emits, server count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from socketio_adapters import ClusterTimeout

from .cluster import DEADLINE, Cluster, eventually
from .conftest import BackendUnderTest


async def test_fetch_sockets_from_every_node(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    await clients[2].call("join", "r2")
    sockets = await cluster.nodes[0].manager.fetch_sockets()
    by_sid = {s.sid: s for s in sockets}
    assert set(by_sid) == {c.sid() for c in clients}
    for client in clients:
        assert by_sid[client.sid()].node == client.node.uid
    assert "r2" in by_sid[clients[2].sid()].rooms


async def test_fetch_sockets_of_a_room(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await a.call("join", "vip")
    await c.call("join", "vip")
    sockets = await cluster.nodes[1].manager.fetch_sockets(to="vip")
    assert {s.sid for s in sockets} == {a.sid(), c.sid()}


async def test_fetched_sockets_can_be_used(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    sockets = await cluster.nodes[0].manager.fetch_sockets()
    remote_c = next(s for s in sockets if s.sid == c.sid())
    await remote_c.emit("direct", "to-c")
    assert await c.next("direct") == "to-c"
    await remote_c.join("joined-remotely")
    await cluster.nodes[1].sio.emit("in-room", 1, to="joined-remotely")
    assert await c.next("in-room") == 1
    await remote_c.leave("joined-remotely")
    await cluster.nodes[1].sio.emit("in-room", 2, to="joined-remotely")
    assert await c.stray("in-room", cluster.nodes[1]) == []
    gone = asyncio.Event()
    c.sio.on("disconnect", lambda *args: gone.set())
    await remote_c.disconnect()
    await asyncio.wait_for(gone.wait(), 5)


async def test_fetch_sockets_on_a_namespace_only_one_node_uses(cluster: Cluster) -> None:
    # nodes without that namespace must still answer (socket.io's adapters time out):
    # a node that did not would make the request raise ClusterTimeout
    admin = await cluster.connect(2, namespaces=("/admin",))
    sockets = await cluster.nodes[0].manager.fetch_sockets(namespace="/admin",
                                                           timeout=DEADLINE)
    assert [s.sid for s in sockets] == [admin.sid("/admin")]


async def test_server_side_emit_reaches_other_nodes_only(cluster: Cluster) -> None:
    seen: dict[int, list[Any]] = {0: [], 1: [], 2: []}
    for i, node in enumerate(cluster.nodes):
        node.manager.on("hello", lambda *args, i=i: seen[i].append(args))
    await cluster.nodes[0].manager.server_side_emit("hello", "world", 1)
    await eventually(lambda: seen, {0: [], 1: [("world", 1)], 2: [("world", 1)]},
                     "the other nodes, and only they, received the server-side emit")


async def test_server_side_emit_with_acks(cluster: Cluster) -> None:
    for i, node in enumerate(cluster.nodes):
        async def handler(x: int, i: int = i) -> int:
            return x + i
        node.manager.on("add", handler)
    results = await cluster.nodes[0].manager.server_side_emit_with_ack("add", 10,
                                                                       timeout=DEADLINE)
    assert sorted(results) == [11, 12]


async def test_server_side_emit_with_acks_skips_nodes_without_handler(
        cluster: Cluster) -> None:
    cluster.nodes[1].manager.on("only-one", lambda: "one")
    # node 2 answers that it has no handler: otherwise this raises ClusterTimeout
    results = await cluster.nodes[0].manager.server_side_emit_with_ack(
        "only-one", timeout=DEADLINE)
    assert results == ["one"]


async def test_server_side_emit_with_acks_timeout(cluster: Cluster) -> None:
    never = asyncio.Event()

    async def slow() -> str:
        await never.wait()
        return "late"

    cluster.nodes[1].manager.on("slow", slow)
    cluster.nodes[2].manager.on("slow", lambda: "quick")
    with pytest.raises(ClusterTimeout) as caught:  # node 2 answers well within it
        await cluster.nodes[0].manager.server_side_emit_with_ack("slow", timeout=2.0)
    assert caught.value.partial == ["quick"]


async def test_server_count(cluster: Cluster) -> None:
    for node in cluster.nodes:
        assert await node.manager.server_count() == 3
    await cluster.add_node()
    await cluster.wait_for_count(4)


async def test_clean_stop_is_seen_at_once(backend: BackendUnderTest,
                                          transport: str) -> None:
    # heartbeats would take a minute to tell that a node is gone: within the
    # deadline, only the stopping node's goodbye can tell the others
    nodes = Cluster(backend.url, transport, heartbeat_timeout=60.0)
    try:
        await nodes.start()
        await nodes.nodes[2].stop()
        await nodes.wait_for_count(2, timeout=DEADLINE)
    finally:
        await nodes.close()
