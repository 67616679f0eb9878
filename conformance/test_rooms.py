"""Room changes and disconnects for sockets on any node."""

from __future__ import annotations

import asyncio

from .cluster import Client, Cluster


async def _rooms_of(cluster: Cluster, client: Client) -> set[str]:
    node = client.node
    return set(node.manager.get_rooms(client.sid(), "/")) - {client.sid()}


async def test_enter_room_for_a_sid_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await cluster.nodes[0].sio.enter_room(c.sid(), "remote-room")
    await cluster.nodes[1].sio.emit("r", 1, to="remote-room")
    assert await c.next("r") == 1
    assert await a.stray("r", cluster.nodes[1]) == []
    assert await _rooms_of(cluster, c) == {"remote-room"}


async def test_leave_room_for_a_sid_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await c.call("join", "temp")
    await cluster.nodes[0].sio.leave_room(c.sid(), "temp")
    await cluster.nodes[1].sio.emit("t", 1, to="temp")
    assert await c.stray("t", cluster.nodes[1]) == []
    assert await _rooms_of(cluster, c) == set()


async def test_close_room_everywhere(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    for client in clients:
        await client.call("join", "doomed")
    await cluster.nodes[1].sio.close_room("doomed")
    await cluster.nodes[2].sio.emit("d", 1, to="doomed")
    for client in clients:
        assert await client.stray("d", cluster.nodes[2]) == []
        assert await _rooms_of(cluster, client) == set()


async def test_disconnect_a_sid_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    disconnected = asyncio.Event()
    c.sio.on("disconnect", lambda *args: disconnected.set())
    await cluster.nodes[0].sio.disconnect(c.sid())
    await asyncio.wait_for(disconnected.wait(), 5)
    assert a.sio.connected and b.sio.connected


async def test_enter_room_inside_the_connect_handler(cluster: Cluster) -> None:
    await cluster.connect(0)
    joined = await cluster.connect(1, auth={"rooms": ["from-connect"]})
    await cluster.nodes[2].sio.emit("hello", 1, to="from-connect")
    assert await joined.next("hello") == 1


async def test_sockets_join_by_room_filter(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await a.call("join", "src")
    await c.call("join", "src")
    await cluster.nodes[1].manager.sockets_join("dst", to="src")
    await cluster.nodes[1].sio.emit("moved", 1, to="dst")
    assert await a.next("moved") == 1
    assert await c.next("moved") == 1
    assert await b.stray("moved", cluster.nodes[1]) == []


async def test_sockets_leave_by_room_filter(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    for client in (a, b, c):
        await client.call("join", "all-in")
    await b.call("join", "leavers")
    await c.call("join", "leavers")
    await cluster.nodes[0].manager.sockets_leave(["all-in"], to="leavers")
    await cluster.nodes[0].sio.emit("still", 1, to="all-in")
    assert await a.next("still") == 1
    assert await b.stray("still", cluster.nodes[0]) == []
    assert await c.stray("still", cluster.nodes[0]) == []


async def test_disconnect_sockets_by_room_filter(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await b.call("join", "kick")
    await c.call("join", "kick")
    gone = [asyncio.Event(), asyncio.Event()]
    b.sio.on("disconnect", lambda *args: gone[0].set())
    c.sio.on("disconnect", lambda *args: gone[1].set())
    await cluster.nodes[0].manager.disconnect_sockets(to="kick")
    await asyncio.wait_for(asyncio.gather(gone[0].wait(), gone[1].wait()), 5)
    assert a.sio.connected
