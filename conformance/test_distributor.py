"""The distributor mode on every backend: clients on two edge nodes, the namespace's
handlers on application servers that hold no connection (conformance/distributed.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import socketio

from socketio_adapters.distributor.services import pick

from .cluster import DEADLINE, eventually
from .conftest import BackendUnderTest
from .distributed import CHAT, Distributed
from .recovery_clients import (
    PythonClient,
    RecoveringClient,
    js_client_installed,
    node_binary,
)


@pytest.fixture
async def deployment(backend: BackendUnderTest) -> AsyncIterator[Distributed]:
    made = Distributed(backend.url)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


async def test_client_events_reach_the_backend_and_its_return_is_the_ack(
        backend: BackendUnderTest, transport: str) -> None:
    made = await Distributed(backend.url, transport).start()
    try:
        first, second = await made.client(0), await made.client(1)
        assert await first.call("echo", "from edge 0", CHAT) == "from edge 0"
        assert await second.call("echo", ["several", 2], CHAT) == ["several", 2]
        assert await second.call("echo", {"bin": b"\x00\xff"}, CHAT) == {"bin": b"\x00\xff"}
        app = made.apps[0]
        assert [c[0] for c in app.connects] == [first.sid(CHAT), second.sid(CHAT)]
        environ = app.connects[0][1]
        assert environ["REQUEST_METHOD"] == "GET" and "sid" not in environ
        assert all(isinstance(v, str) for v in environ.values())
    finally:
        await made.close()


async def test_the_backend_emits_to_a_sid_a_room_and_everyone(
        deployment: Distributed) -> None:
    made = deployment
    app = made.apps[0].server
    a, b, c = (await made.client(0, {"rooms": ["red"]}),
               await made.client(1, {"rooms": ["red"]}), await made.client(1))
    await app.emit("only", "to b", to=b.sid(CHAT))
    await app.emit("room", "to red", room="red")
    await app.emit("all", "to everyone")
    await app.emit("room", "red but a", room="red", skip_sid=a.sid(CHAT))
    assert await b.next("only", CHAT) == "to b"
    for client in (a, b):
        assert await client.next("room", CHAT) == "to red"
    assert await b.next("room", CHAT) == "red but a"
    for client in (a, b, c):
        assert await client.next("all", CHAT) == "to everyone"
    await app.emit("end", 1)
    for client in (a, b, c):
        assert await client.next("end", CHAT) == 1
    assert a.pending("only", CHAT) == c.pending("only", CHAT) == []
    assert a.pending("room", CHAT) == c.pending("room", CHAT) == []


async def test_an_event_to_one_client_goes_before_the_ack_of_its_step(
        deployment: Distributed) -> None:
    client = await deployment.client(1)
    assert await client.call("reply_first", "r", CHAT) == "acked"
    assert client.pending("reply", CHAT) == ["r"]


async def test_room_changes_by_the_backend(deployment: Distributed) -> None:
    made = deployment
    app = made.apps[0].server
    a, b = await made.client(0), await made.client(1)
    sid_a, sid_b = a.sid(CHAT), b.sid(CHAT)
    assert await a.call("join", "blue", CHAT) == sorted([sid_a, "blue"])
    await app.enter_room(sid_b, "blue")
    assert sorted(await app.rooms(sid_b)) == sorted([sid_b, "blue"])
    await app.emit("blue", 1, room="blue")
    assert await a.next("blue", CHAT) == 1 and await b.next("blue", CHAT) == 1
    assert await a.call("leave", "blue", CHAT) == [sid_a]
    await app.close_room("blue")
    await app.emit("blue", 2, room="blue")
    await app.emit("end", 0)
    for client in (a, b):
        assert await client.next("end", CHAT) == 0
        assert client.pending("blue", CHAT) == []
    found = await app.fetch_sockets()
    assert sorted(s.sid for s in found) == sorted([sid_a, sid_b])
    assert {s.node for s in found} == {e.uid for e in made.edges}
    assert await app.server_count() == 3


async def test_acks_from_clients_to_the_backend_and_sessions(
        deployment: Distributed) -> None:
    made = deployment
    client = await made.client(0)
    answers = PythonAnswers(client)
    answers.start()
    assert await client.call("question", "how many?", CHAT) == "how many? 42"
    assert await client.call("remember", "blue", CHAT) is True
    who = await client.call("whoami", None, CHAT)
    assert who["remembered"] == "blue" and who["sid"] == client.sid(CHAT)
    app = made.apps[0].server
    assert (await app.get_session(client.sid(CHAT)))["remembered"] == "blue"
    acks = await app.emit_with_ack("question", "all?", timeout=DEADLINE)
    assert acks == ["all? 42"]


class PythonAnswers:
    """Makes a python client answer the backend's ``question`` with an ack."""

    def __init__(self, client: RecoveringClient) -> None:
        assert isinstance(client, PythonClient)
        self.client = client

    def start(self) -> None:
        sio = self.client.sio

        @sio.on("question", namespace=CHAT)  # type: ignore[untyped-decorator]
        async def question(value: str) -> str:
            return f"{value} 42"


async def test_a_refused_connect_carries_the_backends_reason(
        deployment: Distributed) -> None:
    client = PythonClient("websocket")
    reasons: list[object] = []

    @client.sio.on("connect_error", namespace=CHAT)  # type: ignore[untyped-decorator]
    async def connect_error(data: object) -> None:
        reasons.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(deployment.edges[1].url, (CHAT,), {"refuse": "banned"})
    await client.close()
    assert reasons == [{"message": "not welcome", "data": {"why": "banned"}}]
    assert await (await deployment.client(1)).call("echo", 1, CHAT) == 1


async def test_disconnect_from_either_side(deployment: Distributed) -> None:
    made = deployment
    app = made.apps[0]
    leaving, kicked = await made.client(0), await made.client(1)
    leaving_sid, kicked_sid = leaving.sid(CHAT), kicked.sid(CHAT)
    await leaving.disconnect()
    await app.server.disconnect(kicked_sid)
    await asyncio.wait_for(kicked.disconnected.wait(), DEADLINE)
    await eventually(lambda: sorted(app.disconnects),
                     sorted([(leaving_sid, "client disconnect"),
                             (kicked_sid, "server disconnect")]),
                     "the backend's disconnect handler ran for both")
    await eventually(lambda: [e.relay.stats()["sockets"] for e in made.edges], [0, 0],
                     "the edge nodes forgot both")


async def test_a_backend_restart_loses_no_event(backend: BackendUnderTest) -> None:
    made = await Distributed(backend.url).start()
    try:
        client = await made.client(0)
        assert await client.call("remember", "kept", CHAT) is True
        old = made.apps[0]
        await old.server.stop()
        # no server of the namespace now: the event waits for the next one
        waiting = asyncio.ensure_future(client.call("step", "while-down", CHAT))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        new = await made.add_app()
        answer = await asyncio.wait_for(waiting, DEADLINE)
        assert answer == {"value": "while-down", "server": new.uid}
        who = await client.call("whoami", None, CHAT)
        assert who["remembered"] == "kept" and who["server"] == new.uid
        sid = client.sid(CHAT)
        assert new.handled[sid] == ["while-down"] and sid not in old.handled
    finally:
        await made.close()


async def test_two_backends_share_a_namespace_one_socket_one_server_in_order(
        backend: BackendUnderTest) -> None:
    made = await Distributed(backend.url, apps=2).start()
    try:
        clients = await _spread(made)
        count = 20
        for client in clients:  # every event sent at once, not waiting for acks
            answers = await asyncio.gather(*(client.call("step", n, CHAT)
                                             for n in range(count)))
            assert [a["value"] for a in answers] == list(range(count))
        servers = set()
        for client in clients:
            sid = client.sid(CHAT)
            owner = made.app_of(sid)  # asserts: one server handled all of them
            assert owner.handled[sid] == list(range(count)), "out of order or twice"
            assert owner.uid == pick(f"{CHAT}\0{sid}", [a.uid for a in made.apps])
            servers.add(owner.uid)
        assert servers == {a.uid for a in made.apps}
    finally:
        await made.close()


async def test_a_backend_that_dies_hands_its_sockets_to_the_other(
        backend: BackendUnderTest) -> None:
    made = await Distributed(backend.url, apps=2).start()
    try:
        clients = await _spread(made)
        for client in clients:
            assert (await client.call("step", 0, CHAT))["value"] == 0
        doomed = made.app_of(clients[0].sid(CHAT))
        survivor = next(a for a in made.apps if a is not doomed)
        moved = [c for c in clients if c.sid(CHAT) in doomed.handled]
        doomed.hold.clear()  # it takes the next steps and never answers them
        pending = [asyncio.ensure_future(c.call("step", n, CHAT))
                   for c in moved for n in (1, 2)]
        await asyncio.sleep(0.3)
        await doomed.server.manager.stop(goodbye=False)  # a crash: no goodbye
        answers = await asyncio.wait_for(asyncio.gather(*pending), DEADLINE)
        assert {a["server"] for a in answers} == {survivor.uid}
        for client in moved:
            sid = client.sid(CHAT)
            assert survivor.handled[sid] == [1, 2]
            assert (await client.call("step", 3, CHAT))["server"] == survivor.uid
            assert survivor.handled[sid] == [1, 2, 3]
        doomed.hold.set()
    finally:
        await made.close()


async def _spread(made: Distributed, least: int = 8) -> list[RecoveringClient]:
    """At least ``least`` clients, alternating edge nodes, and more until each
    application server handles one (sockets are spread by hashing their sids)."""
    clients: list[RecoveringClient] = []
    owners: set[str | None] = set()
    servers = [a.uid for a in made.apps]
    while len(clients) < least or len(owners) < len(servers):
        assert len(clients) < 64, "rendezvous hashing gave every socket to one server"
        client = await made.client(len(clients) % 2)
        clients.append(client)
        owners.add(pick(f"{CHAT}\0{client.sid(CHAT)}", servers))
    return clients


@pytest.mark.parametrize("client_kind", ["python", "js"])
async def test_an_edge_restart_with_connection_state_recovery(
        backend: BackendUnderTest, transport: str, client_kind: str) -> None:
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    if client_kind == "js" and (node_binary() is None or not js_client_installed()):
        pytest.fail("the official socket.io-client is not installed: run the README's "
                    "test command, or `npm ci --prefix conformance/js`")
    made = await Distributed(backend.url, transport, client_kind, recovery=True).start()
    try:
        client = await made.client(0, {"rooms": ["red"]})
        sid = client.sid(CHAT)
        assert await client.call("remember", "kept", CHAT) is True
        app = made.apps[0].server
        await app.emit("ev", "before", room="red")
        assert await client.next("ev", CHAT) == "before"
        await made.edges[0].stop()
        await asyncio.wait_for(client.disconnected.wait(), DEADLINE)
        for n in range(5):
            await app.emit("ev", n, room="red")
        await client.connect(made.edges[1].url, (CHAT,))
        assert client.recovered(CHAT) and client.sid(CHAT) == sid
        assert await client.take("ev", 5, CHAT) == list(range(5))
        who = await client.call("whoami", None, CHAT)
        assert who["remembered"] == "kept"
        await app.emit("ev", "after", to=sid)
        assert await client.next("ev", CHAT) == "after"
        assert client.pending("ev", CHAT) == []
    finally:
        await made.close()
