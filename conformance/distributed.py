"""A distributor-mode deployment under test: edge nodes (aiohttp, our AsyncServer
with an :class:`~socketio_adapters.distributor.EdgeRelay` for :data:`CHAT`) holding
real clients, and application servers for :data:`CHAT` holding none, on one backend
URL and a fresh channel.

The application's handlers record what they ran (:attr:`App.handled`, per socket in
the order run, and :attr:`App.disconnects`) so that scenarios can check who handled
each step, in which order, and how many times.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from typing import Any

import socketio
from aiohttp import web

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.distributor import ApplicationServer, EdgeRelay

from .cluster import DEADLINE, eventually, serve
from .recovery_clients import JsClient, PythonClient, RecoveringClient

__all__ = ["CHAT", "App", "Distributed", "Edge"]

CHAT = "/chat"
OPTIONS: dict[str, Any] = {"heartbeat_interval": 1.0, "heartbeat_timeout": 5.0}
"""What a deployment that wants a quick failover sets (as conformance/cluster.py)."""


class Edge:
    """An edge node: clients connect here, for :data:`CHAT` only."""

    def __init__(self, url: str, recovery: dict[str, Any] | None,
                 **relay: Any) -> None:
        self.manager = create_manager(url, **OPTIONS)
        self.sio = AsyncServer(self.manager, async_mode="aiohttp",
                               connection_state_recovery=recovery,
                               ping_interval=1, ping_timeout=5)
        self.relay = EdgeRelay(self.sio, relay.pop("namespaces", [CHAT]),
                               **{"step_timeout": DEADLINE, **relay})
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def uid(self) -> str:
        return self.manager.uid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.manager.start()
        self.runner, self.port = await serve(self.app, self.port)  # a restart: same port

    async def stop(self) -> None:
        """A restart's first half: clients' transports closed (their sessions kept
        for recovery), the other nodes told, the port released."""
        await self.sio.shutdown()
        await self.manager.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class App:
    """An application server for :data:`CHAT` with the scenarios' handlers."""

    def __init__(self, url: str, recovery: dict[str, Any] | None,
                 namespace: str = CHAT) -> None:
        self.server = ApplicationServer(url, namespace,
                                        connection_state_recovery=recovery, **OPTIONS)
        self.handled: dict[str, list[Any]] = defaultdict(list)
        """sid -> the values of its ``step`` events, in the order run here."""
        self.disconnects: list[tuple[str, str]] = []
        self.connects: list[tuple[str, dict[str, str], Any]] = []
        self.hold = asyncio.Event()
        """Cleared: ``step`` handlers wait (a server busy with a socket's step)."""
        self.hold.set()
        self._register()

    @property
    def uid(self) -> str:
        return self.server.manager.uid

    def _register(self) -> None:
        app = self.server

        @app.on("connect")
        async def connect(sid: str, environ: dict[str, str], auth: Any) -> Any:
            self.connects.append((sid, environ, auth))
            if isinstance(auth, dict):
                if auth.get("refuse"):
                    raise socketio.exceptions.ConnectionRefusedError(
                        "not welcome", {"why": auth["refuse"]})
                for room in auth.get("rooms", ()):
                    await app.enter_room(sid, room)
            return True

        @app.on("disconnect")
        async def disconnect(sid: str, reason: str) -> None:
            self.disconnects.append((sid, reason))

        @app.event
        async def echo(sid: str, *values: Any) -> Any:
            return values[0] if len(values) == 1 else values

        @app.event
        async def step(sid: str, value: Any) -> Any:
            await self.hold.wait()
            self.handled[sid].append(value)
            return {"value": value, "server": self.uid}

        @app.event
        async def join(sid: str, room: str) -> list[str]:
            await app.enter_room(sid, room)
            return sorted(await app.rooms(sid))

        @app.event
        async def leave(sid: str, room: str) -> list[str]:
            await app.leave_room(sid, room)
            return sorted(await app.rooms(sid))

        @app.event
        async def remember(sid: str, value: Any) -> bool:
            async with app.session(sid) as session:
                session["remembered"] = value
            return True

        @app.event
        async def whoami(sid: str, value: Any = None) -> Any:
            session = await app.get_session(sid)
            return {"sid": sid, "remembered": session.get("remembered"),
                    "server": self.uid}

        @app.event
        async def shout(sid: str, value: Any) -> bool:
            await app.emit("shouted", value, skip_sid=sid)
            return True

        @app.event
        async def question(sid: str, value: Any) -> Any:
            return await app.call("question", value, to=sid, timeout=DEADLINE)

        @app.event
        async def reply_first(sid: str, value: Any) -> str:
            await app.emit("reply", value, to=sid)
            return "acked"


class Distributed:
    """Edge nodes and application servers of one deployment, and the clients the
    scenario opens (python: ours, or js: the official socket.io-client)."""

    def __init__(self, url: str, transport: str = "websocket", client_kind: str = "python",
                 edges: int = 2, apps: int = 1, recovery: bool = False,
                 **relay: Any) -> None:
        sep = "&" if "?" in url else "?"
        self.url = f"{url}{sep}channel=dist-{secrets.token_hex(4)}"
        self.transport = transport
        self.client_kind = client_kind
        self.recovery = {"max_disconnection_duration": 30.0} if recovery else None
        self.edges = [Edge(self.url, self.recovery, **relay) for _ in range(edges)]
        self.apps = [App(self.url, self.recovery) for _ in range(apps)]
        self.clients: list[RecoveringClient] = []

    async def start(self) -> Distributed:
        for edge in self.edges:
            await edge.start()
        for app in self.apps:
            await app.server.start()
        await self.wait_for_servers()
        return self

    async def wait_for_servers(self) -> None:
        """Until every running edge node knows every running application server."""
        for namespace in {a.server.namespace for a in self.apps}:
            running = sorted(a.uid for a in self.apps
                             if a.server.manager.started and a.server.namespace == namespace)
            edges = [e for e in self.edges if e.manager.started]
            await eventually(lambda: [sorted(e.relay.servers(namespace)) for e in edges],  # noqa: B023
                             [running] * len(edges),
                             f"every edge node knows every server of {namespace}")

    async def add_app(self, namespace: str = CHAT) -> App:
        app = App(self.url, self.recovery, namespace)
        self.apps.append(app)
        await app.server.start()
        await self.wait_for_servers()
        return app

    async def client(self, edge: int = 0, auth: dict[str, Any] | None = None,
                     namespaces: tuple[str, ...] = (CHAT,)) -> RecoveringClient:
        client: RecoveringClient = (PythonClient(self.transport)
                                    if self.client_kind == "python"
                                    else JsClient(self.transport))
        self.clients.append(client)
        await client.connect(self.edges[edge].url, namespaces, auth)
        return client

    def app_of(self, sid: str) -> App:
        """The application server that handled ``sid``'s steps."""
        owners = [a for a in self.apps if sid in a.handled]
        assert len(owners) == 1, f"{sid} handled by {len(owners)} servers"
        return owners[0]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for edge in self.edges:
            if edge.manager.started:
                await asyncio.wait_for(edge.stop(), 15)
        for app in self.apps:
            await asyncio.wait_for(app.server.stop(), 15)
