"""Connection state recovery, the same scenarios on every backend, with our Python
client and with the official JavaScript socket.io-client: a client whose transport is
lost comes back, on the same or another node, with its sid, rooms and session and
every event it missed, in order, once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from socketio_adapters import create_manager

from .cluster import DEADLINE, MARKER, Cluster, Node, eventually
from .conftest import BackendUnderTest
from .recovery_clients import (
    DEFAULT_TRANSPORTS,
    JsClient,
    PythonClient,
    RecoveringClient,
    js_client_installed,
    node_binary,
)

WINDOW = 30.0


class Scenario:
    """A recovering cluster and the clients of one kind that a test opens."""

    def __init__(self, backend: BackendUnderTest, transport: str, kind: str,
                 window: float = WINDOW, client_transport: str | None = None) -> None:
        self.backend = backend
        self.transport = transport
        self.client_transport = client_transport or transport
        """The recovering clients' (the JS client's ``default``: polling, then the
        upgrade to websocket)."""
        self.kind = kind
        # pings every second: a long-polling client that disconnects waits for its
        # pending poll to return, which python-engineio's server answers only then
        self.cluster = Cluster(backend.url, transport,
                               recovery={"max_disconnection_duration": window},
                               server_options={"ping_interval": 1, "ping_timeout": 5})
        self.clients: list[RecoveringClient] = []
        self.markers = 0

    @property
    def nodes(self) -> list[Node]:
        return self.cluster.nodes

    def new_client(self) -> RecoveringClient:
        client: RecoveringClient = (
            PythonClient(self.client_transport) if self.kind == "python"
            else JsClient(self.client_transport))
        self.clients.append(client)
        return client

    async def client(self, node: int = 0, namespaces: tuple[str, ...] = ("/",),
                     auth: dict[str, Any] | None = None) -> RecoveringClient:
        client = self.new_client()
        await client.connect(self.nodes[node].url, namespaces, auth)
        return client

    async def primed(self, node: int = 0, rooms: tuple[str, ...] = (),
                     namespaces: tuple[str, ...] = ("/",)) -> RecoveringClient:
        """A client that joined ``rooms`` and received one event (so it has an
        offset to come back with)."""
        client = await self.client(node, namespaces)
        for room in rooms:
            assert await client.call("join", room) is True
        for nsp in namespaces:
            await self.nodes[node].sio.emit("hello", "hi", to=client.sid(nsp),
                                            namespace=nsp)
            assert await client.next("hello", nsp) == "hi"
            assert client.offset(nsp) is not None, "the event carried no offset"
        return client

    async def drop(self, client: RecoveringClient, reason: str | None = None) -> None:
        """Lose the client's transport (the server sees it close, as when a network
        drops, or with ``reason``) and wait until the server kept the session."""
        eio_sid = client.eio_sid
        node = next(n for n in self.nodes if eio_sid in n.sio.eio.sockets)
        recovery = node.manager.recovery
        assert recovery is not None
        saved = recovery.saved
        sock = node.sio.eio.sockets[eio_sid]
        await sock.close(wait=False, abort=True,
                         reason=reason or node.sio.reason.TRANSPORT_CLOSE)
        sock.queue.put_nowait(None)  # ends the websocket, or the long-poll, now
        await asyncio.wait_for(client.disconnected.wait(), 10)
        deadline = time.monotonic() + 10
        while recovery.saved == saved:
            assert time.monotonic() < deadline, "the server did not keep the session"
            await asyncio.sleep(0.01)

    async def back(self, client: RecoveringClient, node: int,
                   namespaces: tuple[str, ...] = ("/",)) -> None:
        await client.connect(self.nodes[node].url, namespaces)

    async def settle(self) -> None:
        await self.cluster.settle()

    async def stray(self, client: RecoveringClient, sender: int, event: str = "ev",
                    namespace: str = "/") -> list[Any]:
        """The ``event``s the client received and did not take, once a marker that
        node ``sender`` emits to it now has arrived: with recovery every event goes
        through the log, in one order, so one emitted earlier would be in the list."""
        self.markers += 1
        await self.nodes[sender].sio.emit(MARKER, self.markers, to=client.sid(namespace),
                                          namespace=namespace)
        assert await client.next(MARKER, namespace, timeout=DEADLINE) == self.markers
        return client.pending(event, namespace)

    async def close(self) -> None:
        try:
            await self.cluster.close()  # first: it ends the clients' long-polls
        finally:
            for client in self.clients:
                await client.close()


@pytest.fixture(params=["python", "js"])
def client_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "js" and (node_binary() is None or not js_client_installed()):
        pytest.fail("the official socket.io-client is not installed: run the README's "
                    "test command, or `npm ci --prefix conformance/js`")
    return kind


@pytest.fixture
async def scenario(backend: BackendUnderTest, transport: str,
                   client_kind: str) -> AsyncIterator[Scenario]:
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    made = Scenario(backend, transport, client_kind)
    await made.cluster.start()
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize("back_to", [0, 2], ids=["same-node", "other-node"])
async def test_recovers_sid_rooms_session_and_missed_events(scenario: Scenario,
                                                            back_to: int) -> None:
    client = await scenario.primed(0, rooms=("r",))
    assert await client.call("remember", {"name": "ada", "n": 1}) is True
    sid = client.sid()
    await scenario.drop(client)
    emitter = scenario.nodes[1].sio
    await emitter.emit("ev", "to-all")
    await emitter.emit("ev", "to-room", to="r")
    await emitter.emit("ev", "to-sid", to=sid)
    await emitter.emit("ev", b"\x00binary\xff", to="r")
    await scenario.settle()
    await scenario.back(client, back_to)
    assert client.recovered(), "the session was not restored"
    assert client.sid() == sid
    assert await client.take("ev", 4) == ["to-all", "to-room", "to-sid",
                                          b"\x00binary\xff"]
    who = await client.call("whoami")
    assert who["sid"] == sid and who["rooms"] == ["r"]
    assert who["remembered"] == {"name": "ada", "n": 1}
    assert who["node"] == scenario.nodes[back_to].uid
    await scenario.nodes[1].sio.emit("ev", "live", to="r")
    assert await client.next("ev") == "live"
    assert await scenario.stray(client, 1) == [], "an event arrived twice"


async def test_missed_events_stop_at_rooms_except_and_namespaces(
        scenario: Scenario) -> None:
    client = await scenario.primed(0, rooms=("r",), namespaces=("/", "/admin"))
    sid = client.sid()
    await scenario.drop(client)
    emitter = scenario.nodes[2].sio
    await emitter.emit("ev", "other-room", to="other")
    await emitter.emit("ev", "all-but-r", skip_sid="r")
    await emitter.emit("ev", "all-but-sid", skip_sid=sid)
    await emitter.emit("ev", "admin", to="r", namespace="/admin")
    await emitter.emit("ev", "end")
    await scenario.settle()
    await scenario.back(client, 1, namespaces=("/", "/admin"))
    assert client.recovered() and client.recovered("/admin")
    assert await client.next("ev") == "end"
    assert await scenario.stray(client, 2) == []
    assert await scenario.stray(client, 2, namespace="/admin") == []


async def test_events_sent_during_the_restore_arrive_once_in_order(
        scenario: Scenario) -> None:
    client = await scenario.primed(0)
    await scenario.drop(client)
    sent = {1: 0, 2: 0}
    back = asyncio.Event()

    async def emit_all(node: int) -> None:
        # from before the client is back until its restore is over, and at least 300
        # each (a cap keeps it well inside the log's length if the restore is slow)
        sio = scenario.nodes[node].sio
        while sent[node] < 300 or (not back.is_set() and sent[node] < 3000):
            await sio.emit("ev", [node, sent[node]])
            sent[node] += 1
            if sent[node] % 10 == 0:
                await asyncio.sleep(0.002)

    emitting = asyncio.gather(emit_all(1), emit_all(2))
    await eventually(lambda: min(sent.values()) >= 20, True,
                     "both nodes emitted while the client was away")
    await scenario.back(client, 0)  # while both nodes keep emitting
    back.set()
    await emitting
    await scenario.settle()
    assert client.recovered()
    got = await client.take("ev", sum(sent.values()))
    for node in (1, 2):
        assert [i for n, i in got if n == node] == list(range(sent[node])), (
            f"node {node}'s events lost, repeated or reordered")
    assert await scenario.stray(client, 1) == [], "events arrived twice"


async def test_every_node_gives_an_event_the_same_offset(scenario: Scenario) -> None:
    clients = [await scenario.primed(i) for i in range(3)]
    await scenario.nodes[1].sio.emit("ev", "same")
    for client in clients:
        assert await client.next("ev") == "same"
    offsets = {client.offset() for client in clients}
    assert len(offsets) == 1 and None not in offsets


async def test_a_thousand_missed_events(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    await scenario.drop(client)
    emitter = scenario.nodes[1].sio
    for i in range(1000):
        await emitter.emit("ev", i)
    await scenario.settle()
    await scenario.back(client, 2)
    assert client.recovered()
    assert await client.take("ev", 1000, timeout=30) == list(range(1000))
    assert await scenario.stray(client, 1) == [], "events arrived twice"


async def test_recovers_again_after_a_second_loss(scenario: Scenario) -> None:
    client = await scenario.primed(0, rooms=("r",))
    sid = client.sid()
    for round_, node in enumerate((1, 2)):
        await scenario.drop(client)
        await scenario.nodes[0].sio.emit("ev", f"missed-{round_}", to="r")
        await scenario.settle()
        await scenario.back(client, node)
        assert client.recovered() and client.sid() == sid
        assert await client.next("ev") == f"missed-{round_}"


async def test_a_session_restores_once(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    sid, pid, offset = client.sid(), client.pid(), client.offset()
    assert pid is not None and offset is not None
    await scenario.drop(client)
    racers = [scenario.new_client() for _ in range(2)]
    await asyncio.gather(*(racer.connect(scenario.nodes[i + 1].url,
                                         auth={"pid": pid, "offset": offset})
                           for i, racer in enumerate(racers)))
    assert sorted(r.sid() == sid for r in racers) == [False, True], (
        "a session must be restored by exactly one of two clients racing for it")
    late = scenario.new_client()
    await late.connect(scenario.nodes[0].url, auth={"pid": pid, "offset": offset})
    assert late.sid() != sid


async def test_an_explicit_disconnect_is_final(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    sid, pid, offset = client.sid(), client.pid(), client.offset()
    recovery = scenario.nodes[0].manager.recovery
    assert recovery is not None
    saved = recovery.saved
    await client.disconnect()
    await eventually(lambda: scenario.nodes[0].manager.is_connected(sid, "/"), False,
                     "the server saw the client disconnect")
    again = await scenario.client(1, auth={"pid": pid, "offset": offset})
    assert again.sid() != sid, "the server kept a session the client ended"
    await scenario.back(client, 2)
    assert not client.recovered() and client.sid() != sid
    assert recovery.saved == saved, "the server saved a session the client ended"


async def test_unknown_pid_or_offset_gives_a_fresh_session(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    sid, pid, offset = client.sid(), client.pid(), client.offset()
    await scenario.drop(client)
    stranger = await scenario.client(1, auth={"pid": "no-such-pid", "offset": offset})
    assert stranger.sid() != sid and not stranger.recovered()
    assert stranger.pid() not in (None, "no-such-pid"), "a fresh session gets a new pid"
    forged = await scenario.client(2, auth={"pid": pid, "offset": "no-such-offset"})
    assert forged.sid() != sid and not forged.recovered()
    await scenario.nodes[0].sio.emit("ev", "after")
    assert await forged.next("ev") == "after"


async def test_events_from_an_emitter_are_recovered(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    emitter = create_manager(scenario.cluster.node_url, write_only=True,
                             connection_state_recovery=True)
    await emitter.start()
    try:
        await emitter.emit("ev", "live-from-worker")
        assert await client.next("ev") == "live-from-worker"
        await scenario.drop(client)
        await emitter.emit("ev", "missed-from-worker")
        await emitter.flush()
        await scenario.back(client, 1)
        assert client.recovered()
        assert await client.next("ev") == "missed-from-worker"
    finally:
        await emitter.stop()


async def test_a_node_shutting_down_hands_its_sessions_over(scenario: Scenario) -> None:
    client = await scenario.primed(0, rooms=("r",))
    sid = client.sid()
    node = scenario.nodes[0]
    recovery = node.manager.recovery
    assert recovery is not None
    await node.sio.shutdown()  # before its manager stops: sessions are kept
    await asyncio.wait_for(client.disconnected.wait(), 10)
    assert recovery.saved == 1
    await node.stop()
    await scenario.nodes[1].sio.emit("ev", "while-moving", to="r")
    await scenario.settle()
    await scenario.back(client, 2)
    assert client.recovered() and client.sid() == sid
    assert await client.next("ev") == "while-moving"


async def test_acked_events_carry_no_offset(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    before = client.offset()
    await scenario.nodes[2].sio.call("ask", "question", to=client.sid(), timeout=10)
    assert await client.next("ask") == "question"
    assert client.offset() == before


async def test_an_expired_session_is_not_restored(backend: BackendUnderTest,
                                                  transport: str,
                                                  client_kind: str) -> None:
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    window = 1.0
    short = Scenario(backend, transport, client_kind, window=window)
    await short.cluster.start()
    try:
        client = await short.primed(0)
        sid = client.sid()
        await short.drop(client)
        await short.nodes[1].sio.emit("ev", "missed")
        await short.settle()
        # the scenario itself: stay away well past the window (2.5 times it)
        await asyncio.sleep(2.5 * window)
        await short.back(client, 1)
        assert not client.recovered() and client.sid() != sid
        assert await short.stray(client, 1) == [], "a fresh session got missed events"
    finally:
        await short.close()


@pytest.fixture
async def browser_like(backend: BackendUnderTest) -> AsyncIterator[Scenario]:
    """The official JS client with its default transports, as in a browser: its
    reconnection opens with long-polling (where CONNECT with the pid and offset goes,
    in a POST) and upgrades to websocket while the missed events are coming."""
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    if node_binary() is None or not js_client_installed():
        pytest.fail("the official socket.io-client is not installed: run the README's "
                    "test command, or `npm ci --prefix conformance/js`")
    made = Scenario(backend, "websocket", "js", client_transport=DEFAULT_TRANSPORTS)
    await made.cluster.start()
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize("missed", [5, 1000])
async def test_default_transports_recover_while_upgrading(browser_like: Scenario,
                                                          missed: int) -> None:
    client = await browser_like.primed(0, rooms=("r",))
    sid = client.sid()
    await browser_like.drop(client)
    emitter = browser_like.nodes[1].sio
    for i in range(missed):
        await emitter.emit("ev", i, to="r")
    await browser_like.settle()
    await browser_like.back(client, 2)
    assert client.recovered() and client.sid() == sid
    # a restore that waits for a poll the client holds back while it upgrades (the
    # client first waits for its POST, which carried CONNECT) gives up: events lost
    assert await client.take("ev", missed, timeout=30) == list(range(missed))
    await emitter.emit("ev", "live", to="r")
    assert await client.next("ev") == "live"
    assert await browser_like.stray(client, 1) == [], "an event arrived twice"
