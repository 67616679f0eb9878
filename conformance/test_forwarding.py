"""No sticky routing needed, on every backend: three nodes behind a round-robin proxy
(each request to the next node). A node that does not own a session has its owner
serve it over the cluster: long-polling requests are forwarded, a websocket that
upgrades the session is relayed. With sticky routing nothing is forwarded; a
session no node owns, or whose owner is gone, gets engine.io's own error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio

from socketio_adapters.forwarding import owner_of

from .cluster import DEADLINE, Cluster, eventually
from .conftest import BackendUnderTest
from .proxy import RoundRobin

CLIENTS = 9


@pytest.fixture
async def behind_proxy(backend: BackendUnderTest) -> AsyncIterator[tuple[Cluster, RoundRobin]]:
    cluster = Cluster(backend.url, "polling", forwarding=True)
    proxy: RoundRobin | None = None
    try:
        await cluster.start()
        proxy = RoundRobin([node.port for node in cluster.nodes])
        await proxy.start()
        yield cluster, proxy
    finally:
        if proxy is not None:
            await proxy.stop()
        await cluster.close()


class Clients:
    """Plain python-socketio clients, each keeping the ``news`` it receives."""

    def __init__(self) -> None:
        self.clients: list[socketio.AsyncClient] = []
        self.news: list[asyncio.Queue[Any]] = []

    async def connect(self, url: str, count: int, transports: list[str]) -> None:
        for _ in range(count):
            client = socketio.AsyncClient(reconnection=False)
            got: asyncio.Queue[Any] = asyncio.Queue()
            client.on("news", got.put)
            self.clients.append(client)
            self.news.append(got)
            await client.connect(url, transports=transports, wait_timeout=DEADLINE)

    async def check(self, cluster: Cluster) -> None:
        """Acks (text and binary) answer; a broadcast from each node reaches all."""
        for n, client in enumerate(self.clients):
            assert await client.call("echo", n, timeout=DEADLINE) == n
            assert await client.call("echo", b"\x00" * n, timeout=DEADLINE) == b"\x00" * n
        for i, node in enumerate(cluster.nodes):
            await node.sio.emit("news", i)
            for got in self.news:
                assert await asyncio.wait_for(got.get(), DEADLINE) == i

    async def close(self) -> None:
        # python-socketio's client waits for its pending long-poll as it
        # disconnects: the owner answers it at once (not after 45 s)
        await asyncio.wait_for(asyncio.gather(
            *(client.disconnect() for client in self.clients)), DEADLINE)


def _live(cluster: Cluster) -> list[int]:
    """Engine.io sessions and relayed websockets left on all nodes."""
    return [sum(len(n.sio.eio.sockets) for n in cluster.nodes),
            sum(len(n.sio.eio.relays) for n in cluster.nodes)]


async def test_long_polling_through_round_robin(
        behind_proxy: tuple[Cluster, RoundRobin]) -> None:
    cluster, proxy = behind_proxy
    clients = Clients()
    await clients.connect(proxy.url, CLIENTS, ["polling"])
    assert len(set(proxy.sent)) == 3  # the requests went to every node
    uids = {n.uid for n in cluster.nodes}
    owners = {owner_of(c.eio.sid) for c in clients.clients}
    assert owners <= uids and len(owners) > 1
    await clients.check(cluster)
    assert sum(n.sio.eio.counts.forwarded for n in cluster.nodes) > 0
    await clients.close()
    await eventually(lambda: _live(cluster), [0, 0], "every session ends")


async def test_websocket_upgrade_through_round_robin(
        behind_proxy: tuple[Cluster, RoundRobin]) -> None:
    cluster, proxy = behind_proxy
    clients = Clients()
    await clients.connect(proxy.url, CLIENTS, ["polling", "websocket"])
    await eventually(lambda: [c.transport() for c in clients.clients],
                     ["websocket"] * CLIENTS, "every client upgraded")
    relayed = sum(n.sio.eio.counts.relayed for n in cluster.nodes)
    assert relayed > 0 and sum(n.sio.eio.counts.taken for n in cluster.nodes) == relayed
    await clients.check(cluster)
    await clients.close()
    await eventually(lambda: _live(cluster), [0, 0], "every session and relay ends")


async def test_sticky_routing_forwards_nothing(
        behind_proxy: tuple[Cluster, RoundRobin]) -> None:
    cluster, _ = behind_proxy
    clients = Clients()
    for node in cluster.nodes:  # each client always reaches the same node
        await clients.connect(node.url, 2, ["polling"])
        await clients.connect(node.url, 1, ["polling", "websocket"])
    await clients.check(cluster)
    counts = [n.sio.eio.counts for n in cluster.nodes]
    assert [(c.forwarded, c.served, c.relayed, c.taken) for c in counts] == [
        (0, 0, 0, 0)] * 3
    await clients.close()


async def test_a_session_no_node_owns_gets_engineio_s_own_error(
        behind_proxy: tuple[Cluster, RoundRobin]) -> None:
    cluster, _ = behind_proxy
    unknown = f"{cluster.nodes[1].uid}notasession"  # a live node's uid, no session
    async with aiohttp.ClientSession() as http:
        for sid in (unknown, "0123456789abcdefnotanode", "not-a-cluster-sid"):
            url = f"{cluster.nodes[0].url}/socket.io/?EIO=4&transport=polling&sid={sid}"
            async with http.get(url) as reply:
                assert reply.status == 400
                assert "Invalid session" in await reply.text()


async def test_sessions_of_a_node_that_dies_end_elsewhere(
        behind_proxy: tuple[Cluster, RoundRobin]) -> None:
    """A node crashes: the clients whose session it owned, or whose websocket it
    held, are disconnected (not left hanging: a relay to it ends once it is known
    dead); every other client goes on through the survivors."""
    cluster, proxy = behind_proxy
    clients = Clients()
    await clients.connect(proxy.url, CLIENTS, ["polling"])
    await clients.connect(proxy.url, CLIENTS, ["polling", "websocket"])
    await eventually(lambda: sorted(c.transport() for c in clients.clients),
                     ["polling"] * CLIENTS + ["websocket"] * CLIENTS, "upgrades")
    doomed = cluster.nodes[0]
    held_there = {sid for sid, port in proxy.edges.items() if port == doomed.port}
    lost = [c for c in clients.clients
            if owner_of(c.eio.sid) == doomed.uid or c.eio.sid in held_there]
    assert any(owner_of(c.eio.sid) == doomed.uid for c in lost)
    relayed_to_doomed = sum(end.node == doomed.uid for n in cluster.nodes[1:]
                            for end in n.sio.eio.relays.values())
    ended = [asyncio.Event() for _ in lost]
    for client, event in zip(lost, ended, strict=True):
        client.on("disconnect", lambda *args, event=event: event.set())
    await doomed.crash()
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ended)), DEADLINE)
    await eventually(lambda: sum(end.node == doomed.uid for n in cluster.nodes[1:]
                                 for end in n.sio.eio.relays.values()), 0,
                     f"the survivors' {relayed_to_doomed} relays to the dead node end")
    survivors = [c for c in clients.clients if c not in lost]
    assert survivors and all(c.connected for c in survivors)
    for n, client in enumerate(survivors):
        assert await client.call("echo", n, timeout=DEADLINE) == n
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in survivors)), DEADLINE)
