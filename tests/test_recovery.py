"""Connection state recovery's pure logic: options, session records, which logged
events a restored socket missed, and which claim wins a session kept in the log.
(The recovery conformance suite runs the whole thing on every backend.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import msgpack
import pytest
import socketio
from aiohttp import web

from socketio_adapters import (
    AsyncClient,
    AsyncServer,
    Capabilities,
    ClusterManager,
    ConfigurationError,
    MalformedMessage,
    RecoveryOptions,
    create_manager,
)
from socketio_adapters.backends.memory import MemoryBackend
from socketio_adapters.protocol import Message, MessageType
from socketio_adapters.recovery import SessionRecord, matches
from socketio_adapters.recovery.log_sessions import claimed


def test_options_defaults_and_socketio_names() -> None:
    assert RecoveryOptions.coerce(None) is None
    assert RecoveryOptions.coerce(False) is None
    assert RecoveryOptions.coerce(True) == RecoveryOptions()
    assert RecoveryOptions().max_disconnection_duration == 120
    assert RecoveryOptions().skip_middlewares is True
    snake = RecoveryOptions.coerce({"max_disconnection_duration": 5,
                                    "skip_middlewares": False})
    assert snake == RecoveryOptions(5, False)
    camel = RecoveryOptions.coerce({"maxDisconnectionDuration": 2000,
                                    "skipMiddlewares": False})
    assert camel == RecoveryOptions(2.0, False), "socket.io's option counts milliseconds"


@pytest.mark.parametrize("value", [
    {"max_disconnection_duration": 0}, {"max_disconnection_duration": -1},
    {"max_log_length": 0}, {"max_log_age": 0}, {"window": 3}, "yes", 12,
])
def test_bad_options_are_named(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        RecoveryOptions.coerce(value)


def test_log_age_covers_the_window() -> None:
    assert RecoveryOptions(10).log_age == 3600
    assert RecoveryOptions(7200).log_age == 14400
    assert RecoveryOptions(10, max_log_age=30).log_age == 30


def test_create_manager_takes_recovery_for_an_emitter() -> None:
    manager = create_manager("memory://x?connection_state_recovery=true", write_only=True)
    assert manager.recovery is not None
    assert manager.backend.log is not None and manager.backend.log.deliver is None
    with pytest.raises(ConfigurationError, match="connection_state_recovery"):
        create_manager("memory://x", connection_state_recovery="maybe")


EXPIRES = time.time() + 600


def record(**changes: Any) -> SessionRecord:
    base: dict[str, Any] = {"sid": "s1", "pid": "p1", "nsp": "/", "rooms": ["a", "b"],
            "data": {"user": "ada", "blob": b"\x00\xff"}, "expires": EXPIRES}
    base.update(changes)
    return SessionRecord(**base)


def test_session_record_round_trip() -> None:
    saved = record()
    assert SessionRecord.unpack(saved.pack()) == saved
    assert not saved.expired
    assert record(expires=time.time() - 1).expired


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"nsp": "/"}),
    msgpack.packb({"nsp": "/", "sid": "s", "pid": "p", "rooms": "a", "expires": 1}),
    msgpack.packb({"nsp": "/", "sid": "s", "pid": 3, "rooms": [], "expires": 1}),
    msgpack.packb({"nsp": "/", "sid": "s", "pid": "p", "rooms": [], "expires": "x"}),
])
def test_malformed_session_records_raise(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        SessionRecord.unpack(payload)


def broadcast(rooms: list[str], excepts: tuple[str, ...] = (), nsp: str = "/") -> Message:
    return Message("node", nsp, MessageType.BROADCAST,
                   {"packet": ["ev"], "opts": {"rooms": rooms, "except": list(excepts)}})


@pytest.mark.parametrize("message, missed", [
    (broadcast([]), True),
    (broadcast(["a"]), True),
    (broadcast(["x", "s1"]), True),
    (broadcast(["x"]), False),
    (broadcast([], ("b",)), False),
    (broadcast([], ("s1",)), False),
    (broadcast(["a"], ("x",)), True),
    (broadcast([], nsp="/admin"), False),
    (Message("node", "/", MessageType.SESSION_SAVE, {}), False),
])
def test_which_logged_events_a_socket_missed(message: Message, missed: bool) -> None:
    assert matches(message, "/", {"s1", "a", "b"}) is missed


def save(**changes: Any) -> Message:
    return Message("n1", "/", MessageType.SESSION_SAVE, record(**changes).as_data())


def claim(nonce: str, pid: str = "p1") -> Message:
    return Message("n2", "/", MessageType.SESSION_CLAIM, {"pid": pid, "nonce": nonce})


def entries(*messages: Message) -> list[tuple[str, Message]]:
    return [(str(i), m) for i, m in enumerate(messages)]


def test_the_first_claim_after_the_save_wins() -> None:
    assert claimed(entries(save(), claim("ours")), "/", "p1", "ours") == record()
    assert claimed(entries(save(), claim("theirs"), claim("ours")), "/", "p1",
                    "ours") is None
    # a claim for another pid, or one before the save, does not count
    won = claimed(entries(claim("old"), save(), claim("x", pid="p2"), claim("ours")),
                   "/", "p1", "ours")
    assert won is not None and won.sid == "s1"


def test_no_save_an_expired_one_or_another_namespace_is_no_session() -> None:
    assert claimed(entries(claim("ours")), "/", "p1", "ours") is None
    assert claimed(entries(save(expires=time.time() - 1), claim("ours")), "/", "p1",
                    "ours") is None
    other_nsp = Message("n1", "/admin", MessageType.SESSION_SAVE, record().as_data())
    assert claimed(entries(other_nsp, claim("ours")), "/", "p1", "ours") is None


def test_the_last_save_counts() -> None:
    won = claimed(entries(save(sid="old"), save(sid="new"), claim("ours")), "/", "p1",
                   "ours")
    assert won is not None and won.sid == "new"


class NoLog(MemoryBackend):
    capabilities: ClassVar[Capabilities] = Capabilities(multi_process=False)


def test_a_backend_without_a_log_cannot_recover() -> None:
    with pytest.raises(ConfigurationError, match="durable log"):
        ClusterManager(NoLog("memory://nolog"), connection_state_recovery=True)


def test_the_server_needs_a_cluster_manager() -> None:
    with pytest.raises(ConfigurationError, match="ClusterManager"):
        AsyncServer(socketio.AsyncManager(), connection_state_recovery=True)
    server = AsyncServer(connection_state_recovery={"max_disconnection_duration": 3})
    assert server.cluster.recovery is not None
    assert server.cluster.backend.name == "memory"


async def test_recovery_must_be_on_before_start() -> None:
    manager = create_manager("memory://late")
    await manager.start()
    try:
        with pytest.raises(RuntimeError, match="before start"):
            manager.enable_recovery(RecoveryOptions())
    finally:
        await manager.stop()


# ---------------------------------------------------------------- end to end, memory


class Served:
    """An AsyncServer with recovery on a memory hub, served on a loopback port."""

    def __init__(self, hub: str, **recovery: Any) -> None:
        self.sio = AsyncServer(create_manager(f"memory://{hub}"), async_mode="aiohttp",
                               connection_state_recovery={
                                   "max_disconnection_duration": 30, **recovery})
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        self.url = ""

    async def __aenter__(self) -> Served:
        await self.sio.cluster.start()
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sock in list(self.sio.eio.sockets.values()):
            await sock.close(wait=False, abort=True)
            sock.queue.put_nowait(None)
        await self.sio.cluster.stop()
        await self.runner.cleanup()

    async def lose(self, client: AsyncClient) -> None:
        """Close the client's transport from the server, as a network drop would."""
        sock = self.sio.eio.sockets[client.eio.sid]
        await sock.close(wait=False, abort=True, reason="transport close")
        sock.queue.put_nowait(None)

    async def primed(self) -> AsyncClient:
        """A connected client that received one event (so it has an offset)."""
        client = AsyncClient(reconnection=False)
        await client.connect(self.url, transports=["websocket"])
        await self.sio.emit("ev", "x")
        await until(lambda: client.offset() is not None)
        return client

    async def lose_and_keep(self, client: AsyncClient) -> None:
        """Lose the client's transport; return once the session is kept."""
        saved = self.sio.cluster.stats()["sessions_saved"]
        await self.lose(client)
        await until(lambda: self.sio.cluster.stats()["sessions_saved"] == saved + 1)
        await until(lambda: not client.connected)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_python_client_reconnects_and_recovers_by_itself() -> None:
    async with Served("auto") as served:
        client = AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.2)
        got: list[Any] = []
        client.on("ev", lambda *args: got.append(args))
        await client.connect(served.url, transports=["websocket"])
        sid = client.get_sid("/")
        await served.sio.emit("ev", "first")
        await until(lambda: got == [("first",)])
        recovery = served.sio.cluster.recovery
        assert recovery is not None
        await served.lose(client)
        await until(lambda: recovery.saved == 1)
        await served.sio.emit("ev", "missed")
        await until(lambda: len(got) == 2)
        assert got == [("first",), ("missed",)], "handlers see the offset stripped"
        assert client.recovered and client.get_sid("/") == sid
        await client.disconnect()


async def test_connect_handler_runs_again_without_skip_middlewares() -> None:
    async with Served("mw", skip_middlewares=False) as served:
        seen: list[tuple[str, bool]] = []
        refuse = False

        @served.sio.event  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: Any, auth: Any) -> bool:
            seen.append((sid, served.sio.recovered(sid)))
            return not refuse

        client = await served.primed()
        sid = client.get_sid("/")
        await served.lose_and_keep(client)
        await client.connect(served.url, transports=["websocket"])
        assert client.recovered and seen == [(sid, False), (sid, True)]
        # refused on its next restore: the client is told, the session is gone
        refuse = True
        await served.lose_and_keep(client)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(served.url, transports=["websocket"], wait_timeout=3)
        assert seen[-1] == (sid, True)
        await client.disconnect()


async def test_a_session_that_msgpack_cannot_carry_is_not_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    async with Served("nopickle") as served:
        @served.sio.event  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: Any, auth: Any) -> None:
            await served.sio.save_session(sid, {"handle": object()})

        client = await served.primed()
        sid = client.get_sid("/")
        await served.lose(client)
        await until(lambda: "cannot be kept for recovery" in caplog.text)
        await until(lambda: not client.connected)
        await client.connect(served.url, transports=["websocket"])
        assert not client.recovered and client.get_sid("/") != sid
        await client.disconnect()


async def test_a_restore_that_cannot_read_the_log_keeps_the_session(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with Served("putback") as served:
        client = await served.primed()
        sid, pid, offset = client.get_sid("/"), client._pids["/"], client.offset()
        await served.lose_and_keep(client)
        backend = served.sio.cluster.backend
        read_log = backend.read_log

        async def broker_away(after: str, upto: str | None) -> Any:
            raise ConnectionError("broker away")

        monkeypatch.setattr(backend, "read_log", broker_away)
        stranger = AsyncClient(reconnection=False)
        await stranger.connect(served.url, transports=["websocket"],
                               auth={"pid": pid, "offset": offset})
        assert stranger.get_sid("/") != sid, "no log, no restore: a fresh session"
        monkeypatch.setattr(backend, "read_log", read_log)
        await client.connect(served.url, transports=["websocket"])
        assert client.recovered and client.get_sid("/") == sid, "the session was lost"
        await stranger.disconnect()
        await client.disconnect()


async def test_attach_aiohttp_keeps_sessions_when_the_app_stops() -> None:
    from socketio_adapters.lifecycle import attach_aiohttp

    manager = create_manager("memory://handover")
    sio = AsyncServer(manager, async_mode="aiohttp", connection_state_recovery=True)
    app = web.Application()
    sio.attach(app)
    attach_aiohttp(app, manager)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = AsyncClient(reconnection=False)
    await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
    await sio.emit("ev", "x")
    await until(lambda: client.offset() is not None)
    await runner.cleanup()
    assert manager.stats()["sessions_saved"] == 1
    await until(lambda: not client.connected)


async def test_the_cluster_api_is_on_the_server() -> None:
    async with Served("api") as served:
        client = await served.primed()
        sio = served.sio
        sid = client.get_sid("/")
        assert await sio.server_count() == 1
        assert [s.sid for s in await sio.fetch_sockets()] == [sid]
        await sio.sockets_join("vip", to=sid)
        assert [s.sid for s in await sio.fetch_sockets(to="vip")] == [sid]
        await sio.sockets_leave("vip")
        assert await sio.fetch_sockets(to="vip") == []
        client.on("poll", lambda *args: "yes")
        assert await sio.emit_with_ack("poll", timeout=5) == ["yes"]
        assert await sio.server_side_emit_with_ack("nobody-listens") == []
        await sio.disconnect_sockets(to=sid)
        await until(lambda: not client.connected)


async def test_a_node_behind_the_client_does_not_resend_what_it_saw(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client comes back through a node that has not yet read the last entries
    the client got from its old node: those come through the restore's tail and must
    not reach the client twice."""
    async with Served("lag") as ahead, Served("lag") as behind:
        client = AsyncClient(reconnection=False)
        got: list[Any] = []
        client.on("ev", lambda value: got.append(value))
        await client.connect(ahead.url, transports=["websocket"])
        await ahead.sio.emit("ev", "first")
        await until(lambda: got == ["first"])
        # the node behind stops reading the log here: its reader is held before it
        # takes the next record, so its position stays at "first"
        reader = behind.sio.cluster.backend.log_reader
        feed = reader.feed
        reading = asyncio.Event()

        async def stalled(key: Any, body: bytes, time_ms: int | None = None) -> None:
            await reading.wait()
            await feed(key, body, time_ms)

        monkeypatch.setattr(reader, "feed", stalled)
        await ahead.sio.emit("ev", "seen")
        await until(lambda: got == ["first", "seen"])
        await ahead.lose_and_keep(client)
        await ahead.sio.emit("ev", "missed")
        await ahead.sio.cluster.flush()
        # the reader catches up only once the restore fixed its boundary behind the
        # client's offset (taking the session), so the case is exercised every time
        recovery = behind.sio.cluster.recovery
        assert recovery is not None
        take = recovery.sessions.take
        boundaries: list[str | None] = []

        async def taken(nsp: str, pid: str) -> Any:
            result = await take(nsp, pid)
            boundaries.append(None if result is None else result.boundary)
            reading.set()
            return result

        monkeypatch.setattr(recovery.sessions, "take", taken)
        last_seen = client.offset()
        await client.connect(behind.url, transports=["websocket"])
        assert client.recovered
        assert boundaries and boundaries[0] != last_seen, "the node was not behind"
        await ahead.sio.emit("ev", "after")
        await until(lambda: got[-1:] == ["after"])
        assert got == ["first", "seen", "missed", "after"]
        await client.disconnect()


def test_an_entry_appended_twice_is_a_repeat() -> None:
    from socketio_adapters.errors import MalformedMessage
    from socketio_adapters.protocol import Broadcast
    from socketio_adapters.recovery import Repeats

    event = Broadcast(["ev", 1], seq=7)
    assert Broadcast.from_wire(event.to_wire()) == event
    assert "seq" not in Broadcast(["ev"]).to_wire()  # pub/sub broadcasts carry none
    for bad in (True, "7", 1.5):
        with pytest.raises(MalformedMessage):
            Broadcast.from_wire({**event.to_wire(), "seq": bad})
    repeats = Repeats()
    assert not repeats.repeated("a", event)
    assert repeats.repeated("a", event)  # the same sender's number again
    assert not repeats.repeated("b", event)  # another sender's numbers are its own
    assert not repeats.repeated("a", Broadcast(["ev", 2], seq=8))
    assert repeats.repeated("a", Broadcast(["ev", 1], seq=7))  # an older one, late
    assert not repeats.repeated("a", Broadcast(["ev"]))  # unnumbered: never a repeat
    assert repeats.count == 2
