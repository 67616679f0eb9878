"""Order across nodes with connection state recovery: an emit whose ``await``
returned reaches every client before an emit that starts afterwards on any node
(``ordered``, the default: the emit waits until the log accepted it). With
``ordered=false`` (fire and forget) each node's own emits still keep their order and
nothing is lost. (Without recovery, order across nodes is issue 11's, not yet.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .cluster import DEADLINE, Client, Cluster
from .conftest import BackendUnderTest

EMITS = 60


def _value(received: Any) -> Any:
    """The event's value (with recovery on, the offset follows it)."""
    return received[0] if isinstance(received, tuple) else received


RECOVERY = {"max_disconnection_duration": 60}


@pytest.fixture
async def recovering(backend: BackendUnderTest, transport: str) -> AsyncIterator[Cluster]:
    cluster = Cluster(backend.url, transport, recovery=RECOVERY)
    try:
        yield await cluster.start()
    finally:
        await cluster.close()


async def _two_clients_per_node(cluster: Cluster) -> list[Client]:
    return [await cluster.connect(i) for i in range(len(cluster.nodes)) for _ in range(2)]


async def test_awaited_emits_of_several_nodes_arrive_in_that_order(
        recovering: Cluster) -> None:
    cluster = recovering
    clients = await _two_clients_per_node(cluster)
    for n in range(EMITS):  # A, B, C, A, ...: each awaited before the next starts
        await cluster.nodes[n % 3].sio.emit("seq", n)
    for client in clients:
        got = [_value(await client.next("seq", timeout=DEADLINE)) for _ in range(EMITS)]
        assert got == list(range(EMITS)), f"client on node {client.node.uid}"


async def test_fire_and_forget_keeps_each_node_s_order(backend: BackendUnderTest,
                                                       transport: str) -> None:
    cluster = Cluster(backend.url, transport, recovery=RECOVERY, ordered=False)
    try:
        await cluster.start()
        clients = await _two_clients_per_node(cluster)
        for n in range(EMITS):
            await cluster.nodes[n % 3].sio.emit("seq", n)
        for client in clients:
            got = [_value(await client.next("seq", timeout=DEADLINE))
                   for _ in range(EMITS)]
            assert sorted(got) == list(range(EMITS))
            for sender in range(3):  # a node's own emits stay in its order
                mine = [n for n in got if n % 3 == sender]
                assert mine == sorted(mine)
    finally:
        await cluster.close()
