"""An engine.io websocket session as socketio_adapters runs it
(socketio_adapters/engine_socket.py, ``QueueSocket._websocket_handler`` and
``schedule_ping``): it reads the client's packets in the connection's own task and
pings from a timer (python-engineio starts a task per packet read and a task per
ping), with python-engineio's behaviour otherwise: events both ways, the ping cycle,
a ping timeout, upgrades from long-polling that succeed or fail; a frame that is not
an engine.io packet closes the session with a line in the log, where python-engineio's
handler raised; and python-socketio's Admin UI, which wraps python-engineio's
handler and ping to count packets, still counts every one."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import engineio
import pytest
import socketio
from aiohttp import web
from engineio.async_socket import AsyncSocket

from conformance.cluster import serve
from socketio_adapters import AsyncServer, create_manager, engine_socket
from socketio_adapters.cluster.counters import Drops
from socketio_adapters.engine_socket import QueueSocket
from socketio_adapters.websocket import websocket_compression

from .test_websocket_compression import ENGINE_WS, served


def _server(**options: Any) -> AsyncServer:
    manager = create_manager(f"memory://engine-ws-{secrets.token_hex(4)}")
    return AsyncServer(manager, async_mode="aiohttp", **options)


async def _text(ws: Any, timeout: float = 5) -> str:
    """The next text frame."""
    data = await asyncio.wait_for(ws.receive_str(), timeout)
    assert isinstance(data, str)
    return data


def _session_tasks() -> list[str]:
    """The names of the running tasks of engine.io sessions (their coroutines)."""
    names = []
    for task in asyncio.all_tasks():
        name = getattr(task.get_coro(), "__qualname__", "")
        if name.startswith(("QueueSocket.", "AsyncSocket.")):
            names.append(name)
    return sorted(names)


async def test_events_both_ways_with_one_writer_task_and_no_task_per_read() -> None:
    sio = _server()
    got: list[int] = []
    sio.on("n", lambda sid, i: got.append(i))
    sio.on("echo", lambda sid, i: i)
    client = socketio.AsyncClient(reconnection=False)
    async with served(sio) as base:
        await client.connect(base, transports=["websocket"], wait_timeout=5)
        try:
            for i in range(200):
                await client.emit("n", i)
            assert await client.call("echo", 7, timeout=5) == 7
            for _ in range(100):
                if len(got) == 200:
                    break
                await asyncio.sleep(0.02)
            assert got == list(range(200))
            [session] = sio.eio.sockets.values()
            assert isinstance(session, QueueSocket)
            # the writer only: no task waits for the client's next packet, none
            # sleeps until the next ping (python-engineio: websocket_wait, _send_ping)
            assert _session_tasks() == ["QueueSocket._write_to"]
        finally:
            await client.disconnect()


async def test_the_ping_cycle_keeps_a_client_that_answers() -> None:
    sio = _server(ping_interval=0.2, ping_timeout=0.5)
    async with served(sio) as base, aiohttp.ClientSession() as http:
        async with http.ws_connect(base + ENGINE_WS) as ws:
            await _text(ws)
            pings = 0
            while pings < 4:  # four pings, one every 0.2 s, each answered
                if await _text(ws) == "2":
                    pings += 1
                    await ws.send_str("3")
            assert len(sio.eio.sockets) == 1
            assert _session_tasks() == ["QueueSocket._write_to"]


async def test_a_client_that_does_not_answer_pings_is_disconnected() -> None:
    sio = _server(ping_interval=0.2, ping_timeout=0.3)
    reasons: list[str] = []
    sio.on("disconnect", lambda sid, reason: reasons.append(reason))
    sio.on("n", lambda sid: None)
    async with served(sio) as base, aiohttp.ClientSession() as http:
        async with http.ws_connect(base + ENGINE_WS) as ws:
            await _text(ws)
            await ws.send_str("40")
            assert (await _text(ws)).startswith("40")
            frames: list[str] = []
            for _ in range(50):  # events every 0.05 s (the reader's wait never ends),
                if reasons:      # no PONG
                    break
                await ws.send_str('42["n"]')
                try:
                    frames.append(await _text(ws, 0.05))
                except asyncio.TimeoutError:
                    pass
        assert reasons == [sio.reason.PING_TIMEOUT]
        assert "2" in frames


class _SilentWebSocket:
    """A websocket driver whose client never sends anything."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.closed = False

    async def wait(self) -> str:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: str | bytes) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("upgrading", [False, True])
async def test_a_silent_client_ends_its_session_after_ping_interval_plus_timeout(
        upgrading: bool) -> None:
    import engineio

    server = engineio.AsyncServer(async_mode="aiohttp", ping_interval=0.1,
                                  ping_timeout=0.1)
    reasons: list[str] = []
    server.on("disconnect", lambda sid, reason: reasons.append(reason))
    session = AsyncSocket(server, "silent")
    session.__class__ = QueueSocket
    session.connected = upgrading  # a long-polling session upgrading, or a new one
    ws = _SilentWebSocket()
    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(session._websocket_handler(ws), 5)
    took = asyncio.get_running_loop().time() - began
    assert 0.15 < took < 2.0
    if upgrading:  # the upgrade failed: the session stays on long-polling
        assert not session.upgraded and not session.upgrading and not session.closed
    else:
        assert session.closed and ws.closed
        assert reasons == [server.reason.TRANSPORT_CLOSE]


@pytest.mark.parametrize("frame", ["x", "", "\u00e9t\u00e9"])
async def test_a_frame_that_is_not_an_engine_io_packet_closes_the_session(
        frame: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    drops = Drops(logging.getLogger(engine_socket.__name__), "a websocket session")
    monkeypatch.setattr(engine_socket, "BAD_FRAMES", drops)
    sio = _server()
    reasons: list[str] = []
    sio.on("disconnect", lambda sid, reason: reasons.append(reason))
    async with served(sio) as base, aiohttp.ClientSession() as http:
        async with http.ws_connect(base + ENGINE_WS) as ws:
            await _text(ws)
            await ws.send_str("40")
            assert (await _text(ws)).startswith("40")
            with caplog.at_level(logging.INFO):
                await ws.send_str(frame)
                end = await asyncio.wait_for(ws.receive(), 5)
                assert end.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        for _ in range(100):
            if reasons:
                break
            await asyncio.sleep(0.02)
        assert reasons == [sio.reason.TRANSPORT_CLOSE]
        assert not sio.eio.sockets
    assert drops.count == 1
    assert "not an engine.io packet" in caplog.text


def test_bad_frames_are_counted_and_cannot_flood_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    drops = Drops(logging.getLogger("test.bad_frames"), "a websocket session")
    with caplog.at_level(logging.WARNING, "test.bad_frames"):
        for k in range(2_000):
            drops.drop(f"session {k}: not an engine.io packet")
    assert drops.count == 2_000
    lines = [r.getMessage() for r in caplog.records if r.name == "test.bad_frames"]
    assert len(lines) == 12  # the first ten, the 1,000th and the 2,000th
    assert lines[0] == ("dropped a websocket session (1 so far): session 0: not an "
                        "engine.io packet")
    assert lines[-1].startswith("dropped a websocket session (2000 so far)")


async def _polling_session(http: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    opened = await (await http.get(base + "/socket.io/?EIO=4&transport=polling")).text()
    sid = json.loads(opened[1:])["sid"]
    polling = base + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    await (await http.post(polling, data="40")).text()
    assert (await (await http.get(polling)).text()).startswith("40")
    return sid, polling


async def test_an_upgrade_from_long_polling_then_events_over_the_websocket() -> None:
    sio = _server()
    async with served(sio) as base, aiohttp.ClientSession() as http:
        sid, polling = await _polling_session(http, base)
        ws_url = base.replace("http", "ws") + ENGINE_WS + f"&sid={sid}"
        async with http.ws_connect(ws_url) as ws:
            await ws.send_str("2probe")
            assert await _text(ws) == "3probe"
            assert await (await http.get(polling)).text() == "6"  # the poll ends: NOOP
            await ws.send_str("5")
            assert await _text(ws) == "6"
            await sio.emit("hello", 1)
            assert await _text(ws) == '42["hello",1]'
            [session] = sio.eio.sockets.values()
            assert session.upgraded and not session.upgrading


@pytest.mark.parametrize("first", ["5", "2nope"])
async def test_a_failed_upgrade_leaves_the_session_on_long_polling(first: str) -> None:
    sio = _server()
    async with served(sio) as base, aiohttp.ClientSession() as http:
        sid, polling = await _polling_session(http, base)
        ws_url = base.replace("http", "ws") + ENGINE_WS + f"&sid={sid}"
        async with http.ws_connect(ws_url) as ws:
            await ws.send_str(first)  # not the probe
            end = await asyncio.wait_for(ws.receive(), 5)
            assert end.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        [session] = sio.eio.sockets.values()
        assert not session.upgraded and not session.upgrading
        await sio.emit("hello", 2)
        assert await (await http.get(polling)).text() == '42["hello",2]'


@pytest.fixture
def engineio_class_restored() -> Iterator[None]:
    """The Admin UI replaces methods of python-engineio's session class for the rest
    of the process: put them back after the test."""
    saved = dict(vars(AsyncSocket))
    try:
        yield
    finally:
        for name in set(vars(AsyncSocket)) - set(saved):
            delattr(AsyncSocket, name)
        for name, value in saved.items():
            if vars(AsyncSocket).get(name) is not value:
                setattr(AsyncSocket, name, value)


@pytest.mark.usefixtures("engineio_class_restored")
async def test_the_admin_ui_counts_every_websocket_packet() -> None:
    sio = _server()
    admin = sio.instrument(auth=False, mode="development", server_stats_interval=0.2)
    sio.on("n", lambda sid, i: None)
    counts: dict[str, int] = {}
    push = admin.event_buffer.push

    def counting(kind: str, count: int = 1) -> None:  # what the Admin UI is told
        counts[kind] = counts.get(kind, 0) + (1 if kind.startswith("packets") else 0)
        push(kind, count)

    admin.event_buffer.push = counting
    client = socketio.AsyncClient(reconnection=False)
    async with served(sio) as base:
        try:
            await client.connect(base, transports=["websocket"], wait_timeout=5)
            for i in range(20):
                await client.emit("n", i)
                await sio.emit("m", i)  # one at a time: each past the queue if it could
            await asyncio.sleep(0.2)
        finally:
            await client.disconnect()
            await asyncio.wait_for(admin.shutdown(), 10)
    assert counts.get("packetsIn", 0) >= 20 + 1  # the events and the CONNECT
    assert counts.get("packetsOut", 0) >= 20 + 2  # the events, OPEN and CONNECT's answer


def test_the_admin_ui_is_seen_whether_it_came_before_or_after_this_package() -> None:
    """``sio.instrument()`` run before socketio_adapters is first imported: our
    session still steps aside (python-engineio's methods are told apart from
    replacements by what they are, not by what they were at import)."""
    script = (
        "import socketio\n"
        "sio = socketio.AsyncServer(async_mode='aiohttp')\n"
        "admin = sio.instrument(auth=False, mode='development')\n"
        "from socketio_adapters.engine_socket import engineio_replaced as r\n"
        "print(r('_websocket_handler'), r('_send_ping'))\n"
        "admin.uninstrument()\n"
        "print(r('_websocket_handler'), r('_send_ping'))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")
    assert out[:2] == ["True True", "False False"]


_ENDINGS = {"server_disconnect": "server disconnect", "client_close": "client disconnect",
            "abort": "transport close", "binary": "transport close"}


@pytest.mark.parametrize("ours", [False, True], ids=["python-engineio", "QueueSocket"])
@pytest.mark.parametrize("scenario", sorted(_ENDINGS))
async def test_a_websocket_session_ends_as_python_engineio_s_does(
        scenario: str, ours: bool) -> None:
    """The same session, run by python-engineio's handler and by ours: what the client
    gets, binary frames both ways, and one disconnect with the same reason, whoever
    ends it (the server, the client's CLOSE packet, its connection dropping)."""
    eio = engineio.AsyncServer(async_mode="aiohttp")
    if ours:
        websocket_compression(eio, enabled=False)  # this project's driver
    events: list[tuple[str, Any]] = []
    eio.on("disconnect", lambda sid, reason: events.append(("disconnect", reason)))
    eio.on("message", lambda sid, data: events.append(("message", data)))
    app = web.Application()
    eio.attach(app)
    runner, port = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/engine.io/"
                                       "?EIO=4&transport=websocket")
            assert (await _text(ws)).startswith("0")  # OPEN
            (sid,) = eio.sockets
            assert isinstance(eio.sockets[sid], QueueSocket) is ours
            if scenario == "server_disconnect":
                await eio.disconnect(sid)
                assert await _text(ws) == "1"  # CLOSE: the client closes its websocket
            elif scenario == "client_close":
                await ws.send_str("1")
            elif scenario == "abort":
                connection = ws._response.connection
                assert connection is not None and connection.transport is not None
                connection.transport.abort()
            else:
                await ws.send_bytes(b"\x00\x01")
                await eio.send(sid, b"\x02\x03")
                frame = await asyncio.wait_for(ws.receive(), 5)
                assert (frame.type, frame.data) == (aiohttp.WSMsgType.BINARY, b"\x02\x03")
            await ws.close()
            for _ in range(250):
                if not eio.sockets and any(e[0] == "disconnect" for e in events):
                    break
                await asyncio.sleep(0.02)
        expected: list[tuple[str, Any]] = [("disconnect", _ENDINGS[scenario])]
        if scenario == "binary":
            expected.insert(0, ("message", b"\x00\x01"))
        assert events == expected
        assert not eio.sockets
    finally:
        await runner.cleanup()
