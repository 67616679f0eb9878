"""Acks from one remote client, and from every client of a room or of everyone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from socketio_adapters import ClusterTimeout

from .cluster import DEADLINE, Cluster


async def test_callback_from_a_client_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    c.ack_handlers["question"] = lambda x: x * 2
    answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await cluster.nodes[0].sio.emit("question", 21, to=c.sid(),
                                    callback=lambda *args: answered.set_result(args))
    assert await asyncio.wait_for(answered, DEADLINE) == (42,)


async def test_server_call_to_a_client_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    b.ack_handlers["add"] = lambda x, y: x + y
    assert await cluster.nodes[2].sio.call("add", (2, 3), to=b.sid(),
                                           timeout=DEADLINE) == 5


async def test_emit_with_ack_collects_every_client_of_a_room(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    extra = await cluster.connect(2)
    for i, client in enumerate([*clients, extra]):
        client.ack_handlers["roll"] = lambda i=i: f"client-{i}"
        if i != 1:
            await client.call("join", "players")
    acks = await cluster.nodes[1].manager.emit_with_ack("roll", to="players",
                                                        timeout=DEADLINE)
    assert sorted(acks) == ["client-0", "client-2", "client-3"]


async def test_emit_with_ack_to_everyone(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    for i, client in enumerate(clients):
        client.ack_handlers["count"] = lambda i=i: i
    acks = await cluster.nodes[0].manager.emit_with_ack("count", timeout=DEADLINE)
    assert sorted(acks) == [0, 1, 2]


async def test_emit_with_ack_with_no_recipient_returns_empty(cluster: Cluster) -> None:
    await cluster.connect_all()
    # every node answers that it has none: otherwise this raises ClusterTimeout
    assert await cluster.nodes[0].manager.emit_with_ack("x", to="nobody",
                                                        timeout=DEADLINE) == []


async def test_emit_with_ack_timeout_carries_partial_results(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    a.ack_handlers["slow"] = lambda: "fast-a"
    c.ack_handlers["slow"] = lambda: "fast-c"

    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    b.ack_handlers["slow"] = stuck  # b never answers; a and c well within the timeout
    with pytest.raises(ClusterTimeout) as caught:
        await cluster.nodes[0].manager.emit_with_ack("slow", timeout=3.0)
    assert sorted(caught.value.partial) == ["fast-a", "fast-c"]
