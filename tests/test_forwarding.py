"""Long-polling with no sticky routing: three nodes behind a round-robin proxy, each
request of a session to the next node; the node that does not own the session has
its owner serve it over the cluster (socketio_adapters.forwarding)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web

from conformance.cluster import eventually
from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.forwarding import owner_of

FAST: dict[str, Any] = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}


class Node:
    def __init__(self, url: str) -> None:
        self.manager = create_manager(url, **FAST)
        self.sio = AsyncServer(self.manager, async_mode="aiohttp")
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner = web.AppRunner(self.app)
        self.port = 0
        self.served: list[str] = []

        @self.sio.on("echo")  # type: ignore[untyped-decorator]
        async def echo(sid: str, data: Any) -> Any:
            return data

    async def start(self) -> None:
        await self.manager.start()
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.manager.stop()


class RoundRobin:
    """A reverse proxy that sends each request to the next node, as nginx's plain
    round-robin upstream does (no ip_hash, no cookie)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = itertools.cycle(ports)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.relay)
        self.runner = web.AppRunner(self.app)
        self.session: aiohttp.ClientSession | None = None
        self.port = 0
        self.sent: list[int] = []

    async def relay(self, request: web.Request) -> web.StreamResponse:
        port = next(self.ports)
        self.sent.append(port)
        assert self.session is not None
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self.relay_websocket(request, port)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        async with self.session.request(
                request.method, f"http://127.0.0.1:{port}{request.path_qs}",
                data=await request.read(), headers=headers) as reply:
            return web.Response(status=reply.status, body=await reply.read(),
                                content_type=reply.content_type)

    async def relay_websocket(self, request: web.Request, port: int
                              ) -> web.WebSocketResponse:
        assert self.session is not None
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with self.session.ws_connect(
                f"ws://127.0.0.1:{port}{request.path_qs}") as node:

            async def copy(source: Any, sink: Any) -> None:
                async for msg in source:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(msg.data)
                await sink.close()

            await asyncio.gather(copy(client, node), copy(node, client))
        return client

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()


@pytest.fixture(params=["memory", "local"])
async def nodes(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[tuple[list[Node], RoundRobin]]:
    url = ("memory://forwarding" if request.param == "memory"
           else f"local://{tmp_path}/cluster")
    cluster = [Node(url) for _ in range(3)]
    for node in cluster:
        await node.start()
    await eventually(lambda: [len(n.manager.nodes) for n in cluster], [2, 2, 2],
                     "the nodes see each other")
    proxy = RoundRobin([n.port for n in cluster])
    await proxy.start()
    try:
        yield cluster, proxy
    finally:
        await proxy.stop()
        for node in cluster:
            await node.stop()


async def test_long_polling_clients_work_through_round_robin(
        nodes: tuple[list[Node], RoundRobin]) -> None:
    cluster, proxy = nodes
    clients = []
    for _ in range(10):
        client = socketio.AsyncClient(reconnection=False)
        got: asyncio.Queue[Any] = asyncio.Queue()
        client.on("news", got.put)
        await client.connect(f"http://127.0.0.1:{proxy.port}", transports=["polling"],
                             wait_timeout=10)
        clients.append((client, got))
    try:
        assert len(set(proxy.sent)) == 3  # the requests went to every node
        owners = {owner_of(client.eio.sid) for client, _ in clients}
        assert owners <= {n.manager.uid for n in cluster} and len(owners) > 1
        for n, (client, _) in enumerate(clients):
            assert await client.call("echo", n, timeout=10) == n  # POST, then GET
        for i, node in enumerate(cluster):
            await node.sio.emit("news", i)
            for _, got in clients:
                assert await asyncio.wait_for(got.get(), 10) == i
    finally:
        # python-socketio's client waits for its pending long-poll when it
        # disconnects: the owner answers it with CLOSE at once, as socket.io's
        # server does, not after ping_interval + ping_timeout (45 s)
        await asyncio.wait_for(asyncio.gather(
            *(client.disconnect() for client, _ in clients)), 10)


async def test_clients_upgrade_to_websocket_through_round_robin(
        nodes: tuple[list[Node], RoundRobin]) -> None:
    """The websocket of a session lands on any node; one that is not the owner
    relays it, and everything works as on one node."""
    cluster, proxy = nodes
    clients = []
    for _ in range(10):
        client = socketio.AsyncClient(reconnection=False)
        got: asyncio.Queue[Any] = asyncio.Queue()
        client.on("news", got.put)
        await client.connect(f"http://127.0.0.1:{proxy.port}", wait_timeout=10)
        clients.append((client, got))
    try:
        await eventually(lambda: [c.eio.current_transport for c, _ in clients],
                         ["websocket"] * 10, "every client upgraded")
        relayed = sum(len(n.sio.eio.relays) for n in cluster)
        assert relayed >= 2  # each relayed websocket has an end on two nodes
        for n, (client, _) in enumerate(clients):
            assert await client.call("echo", n, timeout=10) == n
            assert await client.call("echo", b"\x00" * n, timeout=10) == b"\x00" * n
        for i, node in enumerate(cluster):
            await node.sio.emit("news", i)
            for _, got in clients:
                assert await asyncio.wait_for(got.get(), 10) == i
    finally:
        await asyncio.gather(*(client.disconnect() for client, _ in clients))
    await eventually(lambda: sum(len(n.sio.eio.relays) for n in cluster), 0,
                     "every relay ends with its websocket")


async def test_a_session_no_node_owns_gets_engineio_s_own_error(
        nodes: tuple[list[Node], RoundRobin]) -> None:
    cluster, _ = nodes
    async with aiohttp.ClientSession() as http:
        for sid in ("0123456789abcdefnotasession", "not-a-cluster-sid"):
            url = f"http://127.0.0.1:{cluster[0].port}/socket.io/?EIO=4&transport=polling"
            async with http.get(f"{url}&sid={sid}") as reply:
                assert reply.status == 400
                assert "Invalid session" in await reply.text()
