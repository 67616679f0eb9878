"""A cluster under test: server nodes, each its own aiohttp HTTP server on a free
loopback port with its own manager and broker connections, and real python-socketio
clients connected to them over websocket or long-polling."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import secrets
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from socketio_adapters import AsyncServer, ClusterManager, create_manager
from socketio_adapters.registry import backend_class

NAMESPACES = ("/", "/admin")
DEADLINE = 20.0
"""How long a scenario waits for a condition before it fails: a liveness bound, far
above what any backend needs, never a measure of speed."""
MARKER = "conformance-marker"
"""The event a test emits after the one it expects not to arrive (see Client.stray)."""
_markers = itertools.count()


async def eventually(probe: Callable[[], Any], expected: object, what: str,
                     timeout: float = DEADLINE) -> None:
    """Wait until ``probe()`` (a value or an awaitable) equals ``expected``; fail
    with the last value seen when it does not within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        seen = probe()
        if inspect.isawaitable(seen):
            seen = await seen
        if seen == expected:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: expected {expected!r} within {timeout}s, "
                                 f"last saw {seen!r}")
        await asyncio.sleep(0.02)


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 (``port`` 0: a free one); its runner and port. A
    crashed or stopped server does not wait for open long-polls."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server: Any = site._server
    if server is None or not server.sockets:  # pragma: no cover - aiohttp contract
        raise RuntimeError("aiohttp did not bind a socket")
    return runner, int(server.sockets[0].getsockname()[1])


class Node:
    """One server node. Clients may send ``join``/``leave`` with a room name, and
    ``echo`` (acked with its argument); connecting with ``auth={"rooms": [...]}``
    joins those rooms inside the connect handler (a pre-connected sid).

    The server is python-socketio's own ``AsyncServer``, or ours (with ``recovery``,
    or ``forwarding``: sessions that need no sticky routing)."""

    def __init__(self, url: str, recovery: dict[str, Any] | None = None,
                 server_options: dict[str, Any] | None = None, forwarding: bool = False,
                 **options: Any) -> None:
        self.manager: ClusterManager = create_manager(url, **options)
        if recovery is None and not forwarding:
            self.sio = socketio.AsyncServer(client_manager=self.manager,
                                            async_mode="aiohttp", namespaces="*",
                                            **(server_options or {}))
        else:
            self.sio = AsyncServer(self.manager, async_mode="aiohttp", namespaces="*",
                                   connection_state_recovery=recovery,
                                   **(server_options or {}))
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.server_events: dict[str, list[Any]] = defaultdict(list)
        self._register()

    def _register(self) -> None:
        sio = self.sio

        @sio.on("connect", namespace="*")  # type: ignore[untyped-decorator]
        async def connect(namespace: str, sid: str, environ: Any, auth: Any) -> None:
            if isinstance(auth, dict):
                for room in auth.get("rooms", ()):
                    await sio.enter_room(sid, room, namespace=namespace)

        @sio.on("join", namespace="*")  # type: ignore[untyped-decorator]
        async def join(namespace: str, sid: str, room: str) -> bool:
            await sio.enter_room(sid, room, namespace=namespace)
            return True

        @sio.on("leave", namespace="*")  # type: ignore[untyped-decorator]
        async def leave(namespace: str, sid: str, room: str) -> bool:
            await sio.leave_room(sid, room, namespace=namespace)
            return True

        @sio.on("echo", namespace="*")  # type: ignore[untyped-decorator]
        async def echo(namespace: str, sid: str, value: Any) -> Any:
            return value

        @sio.on("remember", namespace="*")  # type: ignore[untyped-decorator]
        async def remember(namespace: str, sid: str, value: Any) -> bool:
            async with sio.session(sid, namespace=namespace) as session:
                session["remembered"] = value
            return True

        @sio.on("whoami", namespace="*")  # type: ignore[untyped-decorator]
        async def whoami(namespace: str, sid: str, value: Any = None) -> Any:
            session = await sio.get_session(sid, namespace=namespace)
            rooms = sorted(r for r in sio.rooms(sid, namespace=namespace) if r != sid)
            return {"sid": sid, "rooms": rooms, "remembered": session.get("remembered"),
                    "node": self.uid}

    @property
    def uid(self) -> str:
        return self.manager.uid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.manager.start()
        self.runner, self.port = await serve(self.app)

    async def stop(self) -> None:
        """A clean stop: clients are closed and the other nodes are told at once."""
        await self.manager.stop()
        if self.runner is not None:
            # close every client without waiting for a long-polling client to fetch
            # the CLOSE packet (engineio's disconnect() waits for that, up to a ping
            # interval when the client is between two polls)
            sockets = list(self.sio.eio.sockets.values())
            await asyncio.gather(*(sock.close(wait=False) for sock in sockets),
                                 return_exceptions=True)
            for sock in sockets:  # let each writer send CLOSE and end its transport,
                sock.queue.put_nowait(None)  # or aiohttp's cleanup waits for it
            await self.sio.shutdown()
            await self.runner.cleanup()
            self.runner = None

    async def crash(self) -> None:
        """Die without a goodbye: no ADAPTER_CLOSE, nothing flushed, broker
        connections and the HTTP server dropped."""
        await self.manager.stop(goodbye=False)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class Client:
    """A real python-socketio client that records every event it receives."""

    def __init__(self, node: Node, transport: str, namespaces: tuple[str, ...] = ("/",),
                 auth: dict[str, Any] | None = None) -> None:
        self.node = node
        self.transport = transport
        self.namespaces = namespaces
        self.auth = auth
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: dict[tuple[str, str], asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.ack_handlers: dict[str, Any] = {}

        @self.sio.on("*", namespace="*")  # type: ignore[untyped-decorator]
        async def any_event(event: str, namespace: str, *args: Any) -> Any:
            value = args[0] if len(args) == 1 else tuple(args) if args else None
            self.received[(namespace, event)].put_nowait(value)
            handler = self.ack_handlers.get(event)
            if handler is None:
                return None
            result = handler(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

    async def connect(self) -> Client:
        await self.sio.connect(self.node.url, transports=[self.transport],
                               namespaces=list(self.namespaces), auth=self.auth,
                               wait_timeout=10)
        return self

    def sid(self, namespace: str = "/") -> str:
        sid = self.sio.get_sid(namespace)
        if sid is None:
            raise RuntimeError(f"client not connected to {namespace}")
        return str(sid)

    async def next(self, event: str, namespace: str = "/", timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(self.received[(namespace, event)].get(), timeout)

    async def stray(self, event: str, sender: Node, namespace: str = "/") -> list[Any]:
        """The ``event``s received and not yet taken, once a marker that ``sender``
        emits to this client now has arrived. A node's messages reach a client in the
        order the node sent them, so an ``event`` that ``sender`` emitted before
        would be in the list: a test that expects none asserts the list is empty."""
        token = next(_markers)
        await sender.sio.emit(MARKER, token, to=self.sid(namespace), namespace=namespace)
        assert await self.next(MARKER, namespace, timeout=DEADLINE) == token
        queue = self.received[(namespace, event)]
        return [queue.get_nowait() for _ in range(queue.qsize())]

    async def call(self, event: str, data: Any, namespace: str = "/") -> Any:
        return await self.sio.call(event, data, namespace=namespace, timeout=5)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


def subscriptions(url: str) -> str:
    """``&subscriptions=rooms`` when ``SIOA_SUBSCRIPTIONS=rooms`` asks for per-room
    subscriptions and the backend of ``url`` routes rooms (others run as they are)."""
    mode = os.environ.get("SIOA_SUBSCRIPTIONS", "").strip()
    if not mode or mode == "all" or not backend_class(url).capabilities.routes_rooms:
        return ""
    return f"&subscriptions={mode}"


class Cluster:
    """``size`` nodes on one backend URL and a fresh channel, one client per node."""

    def __init__(self, url: str, transport: str, size: int = 3, **options: Any) -> None:
        self.url = url
        self.transport = transport
        sep = "&" if "?" in url else "?"
        # what an application that wants a quick failover would set; requests keep
        # the library's default timeout
        self.options = {"heartbeat_interval": 1.0, "heartbeat_timeout": 5.0, **options}
        self.node_url = f"{url}{sep}channel=conf-{secrets.token_hex(4)}{subscriptions(url)}"
        self.nodes: list[Node] = [Node(self.node_url, **self.options) for _ in range(size)]
        self.clients: list[Client] = []

    async def start(self) -> Cluster:
        for node in self.nodes:
            await node.start()
        await self.wait_for_count(len(self.nodes))
        return self

    async def add_node(self) -> Node:
        node = Node(self.node_url, **self.options)
        self.nodes.append(node)
        await node.start()
        return node

    async def counts(self) -> list[int]:
        """The server count each running node sees."""
        return [await n.manager.server_count() for n in self.nodes if n.manager.started]

    async def wait_for_count(self, count: int, timeout: float = DEADLINE) -> None:
        """Until every running node sees ``count`` nodes."""
        running = sum(1 for n in self.nodes if n.manager.started)
        await eventually(self.counts, [count] * running,
                         f"every running node sees {count} nodes", timeout)

    async def connect(self, node: int | Node, namespaces: tuple[str, ...] = ("/",),
                      auth: dict[str, Any] | None = None) -> Client:
        target = self.nodes[node] if isinstance(node, int) else node
        client = Client(target, self.transport, namespaces, auth)
        self.clients.append(client)
        return await client.connect()

    async def connect_all(self, namespaces: tuple[str, ...] = ("/",)) -> list[Client]:
        return [await self.connect(i, namespaces) for i in range(len(self.nodes))]

    async def settle(self) -> None:
        """Wait until every node's published messages reached the broker."""
        for node in self.nodes:
            if node.manager.started:
                await node.manager.flush()

    async def close(self) -> None:
        # nodes first: a stopping node closes its clients' connections, which a
        # long-polling client would otherwise hold open for a whole ping interval
        stuck: list[str] = []
        for node in self.nodes:
            task = asyncio.ensure_future(node.stop())
            done, _ = await asyncio.wait({task}, timeout=15)
            if not done:  # a stop that hangs must fail the test, not hang the suite
                task.cancel()
                stuck.append(f"node {node.uid} did not stop within 15s")
            elif not task.cancelled() and task.exception() is not None:
                stuck.append(f"node {node.uid} failed to stop: {task.exception()!r}")
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)
        if stuck:
            raise AssertionError("; ".join(stuck))
