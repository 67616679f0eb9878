"""Broadcasts across nodes: to all, rooms, except, skip_sid, namespaces, binary."""

from __future__ import annotations

import secrets

from socketio_adapters import create_manager

from .cluster import Cluster, eventually
from .conftest import BackendUnderTest


async def test_emit_to_all_reaches_every_node(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    await cluster.nodes[0].sio.emit("news", {"n": 1})
    for client in clients:
        assert await client.next("news") == {"n": 1}


async def test_emit_from_each_node_in_order(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    count = 20
    for i in range(count):  # the nodes take turns: their messages interleave
        for n, node in enumerate(cluster.nodes):
            await node.sio.emit("seq", [n, i])
    senders = range(len(cluster.nodes))
    for c, client in enumerate(clients):
        got = [await client.next("seq") for _ in range(count * len(cluster.nodes))]
        for n in senders:
            assert [i for sender, i in got if sender == n] == list(range(count)), (
                f"client {c}: node {n}'s events lost, repeated or reordered: {got}")


async def test_emit_to_room_only_reaches_members(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    assert await a.call("join", "blue") is True
    assert await c.call("join", "blue") is True
    await cluster.nodes[1].sio.emit("color", "blue", to="blue")
    assert await a.next("color") == "blue"
    assert await c.next("color") == "blue"
    assert await b.stray("color", cluster.nodes[1]) == []


async def test_emit_to_several_rooms_is_a_union_without_duplicates(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await a.call("join", "x")
    await a.call("join", "y")
    await b.call("join", "y")
    await cluster.nodes[2].sio.emit("multi", 1, to=["x", "y"])
    assert await a.next("multi") == 1
    assert await b.next("multi") == 1
    assert await a.stray("multi", cluster.nodes[2]) == []  # once, not once per room
    assert await c.stray("multi", cluster.nodes[2]) == []


async def test_emit_to_one_sid_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await cluster.nodes[0].sio.emit("private", "hi", to=c.sid())
    assert await c.next("private") == "hi"
    assert await a.stray("private", cluster.nodes[0]) == []
    assert await b.stray("private", cluster.nodes[0]) == []


async def test_skip_sid_on_another_node(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await cluster.nodes[0].sio.emit("all-but-b", 1, skip_sid=b.sid())
    assert await a.next("all-but-b") == 1
    assert await c.next("all-but-b") == 1
    assert await b.stray("all-but-b", cluster.nodes[0]) == []


async def test_except_room(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    await b.call("join", "muted")
    await c.call("join", "muted")
    await cluster.nodes[0].sio.emit("loud", 1, skip_sid=["muted"])
    assert await a.next("loud") == 1
    assert await b.stray("loud", cluster.nodes[0]) == []
    assert await c.stray("loud", cluster.nodes[0]) == []


async def test_namespaces_are_separate(cluster: Cluster) -> None:
    plain = await cluster.connect(0)
    admin = await cluster.connect(1, namespaces=("/admin",))
    await cluster.nodes[2].sio.emit("ns", "admin only", namespace="/admin")
    assert await admin.next("ns", namespace="/admin") == "admin only"
    assert await plain.stray("ns", cluster.nodes[2]) == []


async def test_binary_arguments(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    blob = bytes(range(256)) * 4
    await cluster.nodes[0].sio.emit("blob", (blob, {"nested": b"\x00\xff"}, "text"))
    for client in clients:
        assert await client.next("blob") == (blob, {"nested": b"\x00\xff"}, "text")


async def test_payload_over_the_broker_message_limit(cluster: Cluster) -> None:
    """Twice the broker's message limit where it has one (so the payload travels in
    chunks), 1 MB where it has none; random bytes, so that chunks joined in the
    wrong order or one chunk lost or repeated cannot go unseen."""
    clients = await cluster.connect_all()
    limit = cluster.nodes[0].manager.backend.message_limit
    size = 1_000_000 if limit is None else 2 * limit
    big = {"blob": secrets.token_bytes(size), "tail": "end"}
    await cluster.nodes[0].sio.emit("big", big)
    for client in clients:  # the other nodes' clients, and the sender's own
        assert await client.next("big", timeout=30) == big


async def test_emitter_without_server(cluster: Cluster) -> None:
    clients = await cluster.connect_all()
    await clients[1].call("join", "workers")
    emitter = create_manager(cluster.node_url, write_only=True)
    await emitter.start()
    try:
        await emitter.emit("job", {"id": 7}, namespace="/", to="workers")
        await emitter.emit("job", {"id": 8}, namespace="/")
        await emitter.flush()
        assert await clients[1].next("job") == {"id": 7}
        assert await clients[1].next("job") == {"id": 8}
        assert await clients[0].next("job") == {"id": 8}
        assert await cluster.nodes[0].manager.server_count() == 3  # an emitter is no node
    finally:
        await emitter.stop()


async def test_node_subscribed_before_its_first_client(cluster: Cluster) -> None:
    # a node with no client yet must already receive (python-socketio's own managers
    # only subscribe on the first connection)
    fresh = await cluster.add_node()
    await cluster.wait_for_count(4)
    got: list[object] = []
    fresh.manager.on("probe", got.append)
    await cluster.nodes[0].manager.server_side_emit("probe", 1)
    await eventually(lambda: got, [1], "the fresh node received the server-side emit")


async def test_failed_publish_still_delivers_locally(backend: BackendUnderTest,
                                                     cluster: Cluster) -> None:
    local = await cluster.connect(0)
    node = cluster.nodes[0]
    await node.manager.backend.stop()  # the broker connection is gone
    await node.sio.emit("local", 1)
    assert await local.next("local") == 1
