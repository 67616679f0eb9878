"""Order across nodes: an emit whose ``await`` returned reaches every client before
an emit that starts afterwards on any node (``ordered``, the default), recovery off
and on. With ``ordered=false`` (fire and forget) each node's own emits still keep
their order and nothing is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from .cluster import DEADLINE, Client, Cluster
from .conftest import BackendUnderTest

EMITS = 60

Start = Callable[..., AbstractAsyncContextManager[Cluster]]


def _value(received: Any) -> Any:
    """The event's value (with recovery on, the offset follows it)."""
    return received[0] if isinstance(received, tuple) else received


@pytest.fixture(params=["recovery off", "recovery on"])
def started(request: pytest.FixtureRequest, backend: BackendUnderTest,
            transport: str) -> Start:
    """Start a three-node cluster with the given manager options."""
    recovery = {"max_disconnection_duration": 60} if request.param == "recovery on" else None

    @asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[Cluster]:
        if recovery is not None:
            options["recovery"] = recovery
        cluster = Cluster(backend.url, transport, **options)
        try:
            yield await cluster.start()
        finally:
            await cluster.close()

    return start


async def _alternate(cluster: Cluster) -> list[Client]:
    """Two clients per node, then EMITS emits from nodes A, B, C, A, ..., each awaited
    before the next starts."""
    clients = [await cluster.connect(i) for i in range(len(cluster.nodes)) for _ in range(2)]
    for n in range(EMITS):
        await cluster.nodes[n % 3].sio.emit("seq", n)
    return clients


async def test_awaited_emits_of_several_nodes_arrive_in_that_order(started: Start) -> None:
    async with started() as cluster:
        for client in await _alternate(cluster):
            got = [_value(await client.next("seq", timeout=DEADLINE))
                   for _ in range(EMITS)]
            assert got == list(range(EMITS)), f"client on node {client.node.uid}"
        # every node's own subscription caught up in time before its local deliveries
        assert [node.manager.self_sync.late for node in cluster.nodes] == [0, 0, 0]


async def test_fire_and_forget_keeps_each_node_s_order(started: Start) -> None:
    async with started(ordered=False) as cluster:
        for client in await _alternate(cluster):
            got = [_value(await client.next("seq", timeout=DEADLINE))
                   for _ in range(EMITS)]
            assert sorted(got) == list(range(EMITS))
            for sender in range(3):  # a node's own emits stay in its order
                mine = [n for n in got if n % 3 == sender]
                assert mine == sorted(mine)
