"""A manager given to python-socketio with no lifecycle hook: its first use starts
it (python-socketio's public API alone must work, as with its own managers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from conformance.cluster import eventually
from socketio_adapters import BrokerUnavailable, ClusterManager, create_manager

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0}
FIRST_USE = "starts on first use"


class PlainNode:
    """python-socketio's API alone: AsyncServer(client_manager=...), aiohttp, no hook."""

    def __init__(self, url: str) -> None:
        self.manager: ClusterManager = create_manager(url, **FAST)
        self.sio = socketio.AsyncServer(client_manager=self.manager, async_mode="aiohttp")
        self.app = web.Application()
        self.sio.attach(self.app)
        self.app.router.add_post("/news", self.news)
        self.runner = web.AppRunner(self.app)
        self.port = 0

    async def news(self, request: web.Request) -> web.Response:
        await self.sio.emit("news", await request.text())  # in an HTTP handler
        return web.Response(text="sent")

    async def serve(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.manager.stop()


@pytest.fixture
async def nodes(tmp_path: Any) -> AsyncIterator[tuple[PlainNode, PlainNode]]:
    url = f"local://{tmp_path}/cluster"
    a, b = PlainNode(url), PlainNode(url)
    await a.serve()
    await b.serve()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_an_emit_in_an_http_handler_on_a_node_with_no_client(
        nodes: tuple[PlainNode, PlainNode], caplog: pytest.LogCaptureFixture) -> None:
    a, b = nodes
    caplog.set_level(logging.INFO, logger="socketio_adapters")
    client = socketio.AsyncClient()
    got: asyncio.Queue[Any] = asyncio.Queue()
    client.on("news", got.put)
    await client.connect(f"http://127.0.0.1:{b.port}", transports=["websocket"])
    try:
        assert b.manager.started and not a.manager.started  # b by its first client
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{a.port}/news", data="hi") as reply:
                assert (reply.status, await reply.text()) == (200, "sent")
        assert a.manager.started
        assert await asyncio.wait_for(got.get(), 10) == "hi"
    finally:
        await client.disconnect()
    said = [r for r in caplog.records if FIRST_USE in r.getMessage()]
    assert len(said) == 2 and {r.levelno for r in said} == {logging.INFO}, said


Use = Callable[[ClusterManager], Awaitable[Any]]
USES: dict[str, Use] = {
    "emit": lambda m: m.emit("x", 1),
    "send to a room": lambda m: m.emit("x", 1, room="r", skip_sid="s"),
    "close_room": lambda m: m.close_room("r", "/"),
    "enter_room of a remote sid": lambda m: m.enter_room("remote-sid", "/", "r"),
    "fetch_sockets": lambda m: m.fetch_sockets(timeout=1),
    "server_count": lambda m: m.server_count(),
    "server_side_emit": lambda m: m.server_side_emit("e"),
    "sockets_join": lambda m: m.sockets_join("r"),
    "disconnect_sockets": lambda m: m.disconnect_sockets(to="r"),
    "flush": lambda m: m.flush(),
}


@pytest.mark.parametrize("use", USES, ids=list(USES))
async def test_every_first_use_starts_the_manager_and_waits(use: str, tmp_path: Any,
                                                            caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    caplog.set_level(logging.INFO, logger="socketio_adapters")
    url = f"local://{tmp_path}/c"
    other = create_manager(url, **FAST)
    await other.start()
    manager = create_manager(url, **FAST)
    try:
        await USES[use](manager)
        assert manager.started and manager.backend.state.connected  # subscribed
        await eventually(other.server_count, 2, "the other node hears the new one")
        await USES[use](manager)  # a second use says nothing more
        assert sum(FIRST_USE in r.getMessage() for r in caplog.records) == 1
    finally:
        await manager.stop()
        await other.stop()


async def test_concurrent_first_uses_start_once(tmp_path: Any) -> None:
    manager = create_manager(f"local://{tmp_path}/c", **FAST)
    try:
        await asyncio.gather(*(manager.emit("x", i) for i in range(20)))
        assert manager.stats()["reconnects"] == 0 and manager.started
    finally:
        await manager.stop()


async def test_a_failed_first_use_raises_and_the_next_one_tries_again() -> None:
    manager = create_manager("redis://127.0.0.1:1/0", connect_timeout=0.3)
    for _ in range(2):
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(manager.emit("x", 1), 10)
        assert not manager.started


async def test_a_plain_server_is_told_long_polling_needs_sticky_routing(
        caplog: pytest.LogCaptureFixture) -> None:
    """With python-socketio's own AsyncServer a long-polling request must reach the
    session's owner; the manager says so (once), and names the server that does not
    need it. socketio_adapters.AsyncServer gets no such notice."""
    from socketio_adapters import AsyncServer

    plain = socketio.AsyncServer(client_manager=create_manager("memory://plain", **FAST))
    ours = AsyncServer(create_manager("memory://ours", **FAST))
    with caplog.at_level(logging.INFO, "socketio_adapters"):
        for sio in (plain, ours):
            sio.manager.initialize()
            await sio.manager.ensure_started()
    notices = [r.getMessage() for r in caplog.records if "sticky routing" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith(
        "socketio.async_server.AsyncServer serves this node")
    assert "socketio_adapters.AsyncServer forwards" in notices[0]
    for sio in (plain, ours):
        await sio.manager.stop()
