"""Per-room subscriptions (``subscriptions=rooms``): a node receives a room's
broadcasts only while it has a member in it, and nothing is lost for it.

Runs on every backend that routes rooms (``capabilities.routes_rooms``), whatever
``SIOA_SUBSCRIPTIONS`` says; skipped on the others."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .cluster import Cluster, Node, eventually
from .conftest import BackendUnderTest


@pytest.fixture
async def routed(backend: BackendUnderTest, transport: str) -> AsyncIterator[Cluster]:
    if not backend.capabilities.routes_rooms:
        pytest.skip(f"the {backend.kind} backend does not route rooms")
    nodes = Cluster(backend.url, transport, subscriptions="rooms")
    try:
        yield await nodes.start()
    finally:
        await nodes.close()


def _received(node: Node) -> int:
    count: int = node.manager.stats()["received_broadcasts"]
    return count


async def test_a_node_without_members_receives_nothing_for_the_room(routed: Cluster) -> None:
    a, b, c = await routed.connect_all()
    await a.call("join", "quiet-room")
    await b.call("join", "quiet-room")
    first, second, third = routed.nodes
    before = [_received(node) for node in routed.nodes]
    for i in range(5):
        await second.sio.emit("r", i, to="quiet-room")
    await second.sio.emit("everyone", 1)  # to all: the third node hears this one
    for client in (a, b, c):
        assert await client.next("everyone") == 1
    assert [await a.next("r") for _ in range(5)] == list(range(5))
    assert [await b.next("r") for _ in range(5)] == list(range(5))
    assert _received(first) - before[0] == 6
    assert _received(third) - before[2] == 1  # the broadcast to all, nothing else
    assert await c.stray("r", second) == []


async def test_a_join_then_a_broadcast_from_another_node_is_delivered(
        routed: Cluster) -> None:
    a, b, c = await routed.connect_all()
    for i in range(10):
        room = f"fresh-{i}"
        await c.call("join", room)  # acked once enter_room returned
        await routed.nodes[i % 2].sio.emit("fresh", i, to=room)
        assert await c.next("fresh") == i


async def test_a_join_from_another_node_then_a_broadcast_is_delivered(
        routed: Cluster) -> None:
    a, b, c = await routed.connect_all()
    for i in range(5):
        room = f"remote-fresh-{i}"
        await routed.nodes[0].sio.enter_room(c.sid(), room)
        await routed.nodes[1].sio.emit("fresh", i, to=room)
        assert await c.next("fresh") == i


async def test_a_node_unsubscribes_when_its_last_member_leaves(routed: Cluster) -> None:
    a, b, c = await routed.connect_all()
    third = routed.nodes[2]
    held = third.manager.stats()["room_subscriptions"]
    await c.call("join", "brief")
    assert third.manager.stats()["room_subscriptions"] == held + 1
    await c.call("leave", "brief")
    await eventually(lambda: third.manager.stats()["room_subscriptions"], held,
                     "room keys after the last member left")
    before = _received(third)
    await routed.nodes[0].sio.emit("gone", 1, to="brief")
    assert await c.stray("gone", routed.nodes[0]) == []
    assert _received(third) - before == 1  # stray's marker: a sid, every node


async def test_everyone_several_rooms_sids_and_except_still_reach_everyone(
        routed: Cluster) -> None:
    a, b, c = await routed.connect_all()
    await a.call("join", "left-room")
    await b.call("join", "right-room")
    await c.call("join", "left-room")
    sender = routed.nodes[1]
    await sender.sio.emit("all", 1)
    await sender.sio.emit("either", 2, to=["left-room", "right-room"])
    await sender.sio.emit("mine", 3, to=c.sid())
    await sender.sio.emit("but", 4, to="left-room", skip_sid=a.sid())
    for client in (a, b, c):
        assert await client.next("all") == 1
        assert await client.next("either") == 2
    assert await c.next("mine") == 3
    assert await c.next("but") == 4
    assert await a.stray("but", sender) == []
    assert await b.stray("but", sender) == []


async def test_a_node_that_does_not_route_gets_every_room_broadcast_while_it_lives(
        routed: Cluster) -> None:
    """A rolling switch of modes: a node with ``subscriptions=all`` joins nodes that
    route rooms. While it is alive nothing is routed (its clients get the broadcasts
    to their rooms); once it left, the others route again."""
    a, b, c = await routed.connect_all()
    first, second, third = routed.nodes
    plain = Node(routed.node_url, **{**routed.options, "subscriptions": "all"})
    routed.nodes.append(plain)
    await plain.start()
    await routed.wait_for_count(4)
    await eventually(lambda: [n.manager.stats()["routes_rooms"] for n in routed.nodes],
                     [False] * 4, "no node routes while one does not")
    d = await routed.connect(plain)
    await d.call("join", "mixed")
    await a.call("join", "mixed")
    for i in range(5):
        await second.sio.emit("m", i, to="mixed")
    assert [await d.next("m") for _ in range(5)] == list(range(5))
    assert [await a.next("m") for _ in range(5)] == list(range(5))
    await plain.stop()
    await eventually(lambda: [n.manager.stats()["routes_rooms"] for n in routed.nodes[:3]],
                     [True] * 3, "every node routes again once it left")
    before = _received(third)
    await second.sio.emit("m", 5, to="mixed")
    assert await a.next("m") == 5
    assert await c.stray("m", second) == []
    assert _received(third) - before == 1  # stray's marker only: the room was routed
