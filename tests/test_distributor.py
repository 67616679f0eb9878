"""The distributor mode's parts, and its behaviour on ``memory://`` where no broker
is needed: rendezvous hashing, the step payloads, what of ``environ`` travels, the
edge node's options (authenticate, every namespace, no server) and bad input.
The scenarios on every backend are in conformance/test_distributor.py."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
import socketio

from conformance.distributed import CHAT, Distributed
from conformance.recovery_clients import PythonClient
from socketio_adapters import ConfigurationError, MalformedMessage, create_manager
from socketio_adapters.distributor import IDENTITY, ApplicationServer, EdgeRelay
from socketio_adapters.distributor.environ import portable_environ
from socketio_adapters.distributor.services import announcement, pick, serves
from socketio_adapters.protocol import (
    ClientConnect,
    ClientDisconnect,
    ClientDone,
    ClientEvent,
    Message,
    MessageType,
    SocketSession,
    encode,
    parse_payload,
)


def _memory() -> str:
    return f"memory://dist-{secrets.token_hex(4)}"


# ---------------------------------------------------------------- parts

def test_rendezvous_spreads_sockets_and_moves_only_those_of_a_gone_server() -> None:
    servers = ["a", "b", "c"]
    keys = [f"/chat\0sid{n}" for n in range(3000)]
    before = {key: pick(key, servers) for key in keys}
    shares = {s: sum(1 for v in before.values() if v == s) for s in servers}
    assert all(800 < count < 1200 for count in shares.values()), shares
    after = {key: pick(key, ["a", "c"]) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert moved and all(before[key] == "b" for key in moved)
    assert pick("x", []) is None
    assert pick("x", reversed(servers)) == pick("x", servers)  # order does not matter


def test_a_server_announces_its_namespaces() -> None:
    info = announcement(["/b", "/a", "/a"])
    assert info == {"serves": ["/a", "/b"]}
    assert serves(info, "/a") and not serves(info, "/c")
    assert not serves(None, "/a") and not serves({"serves": "/a"}, "/a")


STEPS = [
    (MessageType.CLIENT_CONNECT, ClientConnect("s1", 0, {"HTTP_X": "1"}, {"k": [1]})),
    (MessageType.CLIENT_CONNECT, ClientConnect("s1", 4, run_handler=False)),
    (MessageType.CLIENT_EVENT, ClientEvent("s1", 1, ["ev", b"\x00", {"a": None}])),
    (MessageType.CLIENT_DISCONNECT, ClientDisconnect("s1", 2, "client disconnect")),
    (MessageType.CLIENT_DONE, ClientDone("s1", 1, ["ack", 2])),
    (MessageType.CLIENT_DONE, ClientDone("s1", 0, refused={"message": "no"})),
    (MessageType.CLIENT_DONE, ClientDone("s1", 3, handled=False)),
    (MessageType.SOCKET_SESSION, SocketSession("s1", "r1")),
    (MessageType.SOCKET_SESSION, SocketSession("s1", "r2", {"n": 1})),
]


@pytest.mark.parametrize(("kind", "payload"), STEPS, ids=[f"{k.name}-{n}" for n, (k, _) in
                                                          enumerate(STEPS)])
def test_step_payloads_survive_the_wire(kind: MessageType, payload: Any) -> None:
    import msgpack
    wire = msgpack.unpackb(msgpack.packb(payload.to_wire(), use_bin_type=True), raw=False)
    assert parse_payload(kind, wire) == payload


BAD = [
    (MessageType.CLIENT_CONNECT, {"seq": 0}),
    (MessageType.CLIENT_CONNECT, {"sid": "s", "seq": -1}),
    (MessageType.CLIENT_CONNECT, {"sid": "s", "seq": 0, "environ": {"A": 1}}),
    (MessageType.CLIENT_CONNECT, {"sid": "s", "seq": 0, "handler": "yes"}),
    (MessageType.CLIENT_EVENT, {"sid": "s", "seq": 1, "packet": []}),
    (MessageType.CLIENT_EVENT, {"sid": "s", "seq": True, "packet": ["e"]}),
    (MessageType.CLIENT_DISCONNECT, {"sid": "s", "seq": 1}),
    (MessageType.CLIENT_DONE, {"sid": "s", "seq": 1, "handled": 1}),
    (MessageType.SOCKET_SESSION, {"sid": "s"}),
    (MessageType.SOCKET_SESSION, {"sid": "s", "requestId": "r", "data": [1]}),
    (MessageType.CLIENT_EVENT, ["not", "a", "map"]),
]


@pytest.mark.parametrize(("kind", "data"), BAD)
def test_malformed_step_payloads_are_refused(kind: MessageType, data: Any) -> None:
    with pytest.raises(MalformedMessage):
        parse_payload(kind, data)


def test_only_portable_environ_travels() -> None:
    environ = {"REQUEST_METHOD": "GET", "HTTP_COOKIE": "a=b", "asgi.scope": {},
               "wsgi.input": object(), "REMOTE_PORT": 5, "QUERY_STRING": "x=1"}
    assert portable_environ(environ, {"user": "ann"}) == {
        "REQUEST_METHOD": "GET", "HTTP_COOKIE": "a=b", "QUERY_STRING": "x=1",
        IDENTITY: "{'user': 'ann'}"}


def test_an_edge_node_needs_a_cluster_manager() -> None:
    with pytest.raises(ConfigurationError, match="ClusterManager"):
        EdgeRelay(socketio.AsyncServer())
    with pytest.raises(ConfigurationError, match="write-only"):
        EdgeRelay(socketio.AsyncServer(client_manager=create_manager(
            _memory(), write_only=True)))


def test_an_application_server_takes_a_url_or_a_manager() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        ApplicationServer(_memory(), client_manager=create_manager(_memory()))
    with pytest.raises(ConfigurationError, match="write-only"):
        ApplicationServer(_memory(), write_only=True)


# ---------------------------------------------------------------- on memory://

async def test_authenticate_refuses_or_hands_its_verdict_to_the_backend() -> None:
    def authenticate(environ: dict[str, Any], auth: Any) -> Any:
        if not isinstance(auth, dict) or auth.get("token") != "good":
            raise socketio.exceptions.ConnectionRefusedError("bad token")
        return "user-7"

    made = await Distributed(_memory(), authenticate=authenticate).start()
    try:
        client = await made.client(0, {"token": "good"})
        assert await client.call("echo", 1, CHAT) == 1
        assert made.apps[0].connects[0][1][IDENTITY] == "user-7"
        with pytest.raises(socketio.exceptions.ConnectionError):
            await made.client(1, {"token": "bad"})
        assert len(made.apps[0].connects) == 1, "a refused client reached the backend"
    finally:
        await made.close()


async def test_an_edge_node_for_every_namespace() -> None:
    made = Distributed(_memory(), namespaces="*")
    await made.start()
    try:
        other = await made.add_app("/other")
        client = await made.client(1, namespaces=(CHAT, "/other"))
        assert await client.call("step", "a", CHAT) == {"value": "a",
                                                          "server": made.apps[0].uid}
        assert await client.call("step", "b", "/other") == {"value": "b",
                                                             "server": other.uid}
    finally:
        await made.close()


async def test_with_no_application_server_a_connect_is_refused_in_time() -> None:
    made = Distributed(_memory(), apps=0, step_timeout=0.5)
    await made.start()
    client = PythonClient("websocket")
    reasons: list[Any] = []

    @client.sio.on("connect_error", namespace=CHAT)  # type: ignore[untyped-decorator]
    async def connect_error(data: Any) -> None:
        reasons.append(data)

    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(made.edges[0].url, (CHAT,))
        assert reasons == [{"message": "no application server answered for namespace "
                                       "/chat"}]
        assert made.edges[0].relay.stats()["timed_out"] == 1
        assert made.edges[0].relay.stats()["sockets"] == 0
    finally:
        await client.close()
        await made.close()


async def test_a_handler_that_fails_gives_no_ack_and_the_socket_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    made = await Distributed(_memory(), step_timeout=30).start()
    try:
        app = made.apps[0].server
        calls: list[int] = []

        @app.event
        def boom(sid: str, n: int) -> int:  # a plain function works too
            calls.append(n)
            if n == 0:
                raise RuntimeError("boom")
            return n * 10

        client = await made.client(0)
        assert isinstance(client, PythonClient)
        with pytest.raises(socketio.exceptions.TimeoutError):
            await client.sio.call("boom", 0, namespace=CHAT, timeout=1)
        assert await client.call("boom", 1, CHAT) == 10
        assert "handling ClientEvent" in caplog.text and "boom" in caplog.text
        with pytest.raises(socketio.exceptions.TimeoutError):  # as python-socketio:
            await client.sio.call("unhandled", 1, namespace=CHAT, timeout=1)  # no ack
        assert await client.call("boom", 2, CHAT) == 20
        assert calls == [0, 1, 2]
    finally:
        await made.close()


async def test_malformed_steps_and_answers_are_dropped_and_counted() -> None:
    made = await Distributed(_memory()).start()
    try:
        client = await made.client(0)
        app, edge = made.apps[0].server, made.edges[0]
        junk = [(MessageType.CLIENT_EVENT, {"sid": 1}), (MessageType.CLIENT_CONNECT, 7),
                (MessageType.CLIENT_DISCONNECT, {"sid": "s", "seq": "x"})]
        before = app.manager.dropped_messages
        for kind, data in junk:
            await app.manager.inbound.on_payload(encode(Message("peer", CHAT, kind, data)))
        assert app.manager.dropped_messages == before + len(junk)
        before = edge.manager.dropped_messages
        for kind, data in [(MessageType.CLIENT_DONE, {"sid": "s"}),
                           (MessageType.SOCKET_SESSION, {"requestId": "r"})]:
            await edge.manager.inbound.on_payload(encode(Message("peer", CHAT, kind, data)))
        assert edge.manager.dropped_messages == before + 2
        # an answer for a step nobody waits for changes nothing
        await edge.manager.inbound.on_payload(encode(Message(
            "peer", CHAT, MessageType.CLIENT_DONE, ClientDone(client.sid(CHAT), 99).to_wire())))
        assert await client.call("echo", "still here", CHAT) == "still here"
    finally:
        await made.close()


async def test_a_server_stopping_cleanly_moves_its_sockets_at_once() -> None:
    made = await Distributed(_memory(), apps=2).start()
    try:
        clients = [await made.client(i % 2) for i in range(6)]
        for client in clients:
            await client.call("step", 0, CHAT)
        leaving = made.app_of(clients[0].sid(CHAT))
        staying = next(a for a in made.apps if a is not leaving)
        await leaving.server.stop()  # a goodbye: no heartbeat timeout to wait for
        started = asyncio.get_running_loop().time()
        for client in clients:
            assert (await client.call("step", 1, CHAT))["server"] == staying.uid
        assert asyncio.get_running_loop().time() - started < 3.0
    finally:
        await made.close()
