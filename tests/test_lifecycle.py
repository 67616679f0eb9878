"""LifespanMiddleware runs the manager with the ASGI lifespan and passes every lifespan
event on to the app it wraps: ours first at startup, the app's first at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import socketio_adapters
from conformance.cluster import eventually
from socketio_adapters import ClusterManager, LifespanMiddleware, attach_aiohttp
from socketio_adapters.backends.memory import MemoryBackend

DEADLINE = 10.0


class _Refusing(MemoryBackend):
    name: ClassVar[str] = "refusing"

    async def _open(self) -> None:
        raise ConnectionRefusedError("nobody home")


class _Logged(ClusterManager):
    """A manager that notes when it started and when it began to stop."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(MemoryBackend("memory://lifespan"))
        self.events = log

    async def start(self) -> None:
        await super().start()
        self.events.append("manager started")

    async def stop(self, goodbye: bool = True) -> None:
        if self.started:
            self.events.append("manager stopping")
        await super().stop(goodbye)


def _starlette(manager: ClusterManager, log: list[str], fail: str = "") -> Starlette:
    """A Starlette app with a lifespan of its own; ``fail`` names the phase that raises."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await manager.emit("app-starting", 1, namespace="/")  # needs a started manager
        log.append("app startup")
        if fail == "startup":
            raise RuntimeError("the app could not start")
        yield
        log.append("app shutdown")
        if fail == "shutdown":
            raise RuntimeError("the app could not stop")

    async def status(request: Request) -> JSONResponse:
        return JSONResponse({"started": manager.started})

    return Starlette(routes=[Route("/status", status)], lifespan=lifespan)


async def _lifespan(app: Any) -> list[str]:
    """Drive the ASGI lifespan protocol as a server does; the messages sent back."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def send(message: Any) -> None:
        sent.append(dict(message))
        answered.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
             "state": {}}
    task = asyncio.ensure_future(app(scope, events.get, send))
    events.put_nowait({"type": "lifespan.startup"})
    await asyncio.wait_for(answered.wait(), DEADLINE)
    if sent[-1]["type"] == "lifespan.startup.complete":
        answered.clear()
        events.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait_for(answered.wait(), DEADLINE)
    await asyncio.wait_for(task, DEADLINE)
    return [m["type"] + (f": {m['message']}" if m.get("message") else "") for m in sent]


async def test_the_apps_own_lifespan_runs_inside_the_managers() -> None:
    log: list[str] = []
    manager = _Logged(log)
    sent = await _lifespan(LifespanMiddleware(_starlette(manager, log), manager))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == ["manager started", "app startup", "app shutdown", "manager stopping"]
    assert not manager.started


async def test_a_failed_app_startup_fails_the_lifespan_and_stops_the_manager() -> None:
    log: list[str] = []
    manager = _Logged(log)
    sent = await _lifespan(LifespanMiddleware(_starlette(manager, log, "startup"), manager))
    assert len(sent) == 1 and sent[0].startswith("lifespan.startup.failed: ")
    assert "the app could not start" in sent[0]
    assert log == ["manager started", "app startup", "manager stopping"]
    assert not manager.started


async def test_a_failed_app_shutdown_is_reported_and_the_manager_still_stops() -> None:
    log: list[str] = []
    manager = _Logged(log)
    sent = await _lifespan(LifespanMiddleware(_starlette(manager, log, "shutdown"), manager))
    assert sent[0] == "lifespan.startup.complete"
    assert sent[1].startswith("lifespan.shutdown.failed: ")
    assert "the app could not stop" in sent[1]
    assert log == ["manager started", "app startup", "app shutdown", "manager stopping"]
    assert not manager.started


async def test_a_manager_that_cannot_start_fails_the_startup_before_the_app_runs() -> None:
    log: list[str] = []
    manager = ClusterManager(_Refusing("memory://refusing"))
    sent = await _lifespan(LifespanMiddleware(_starlette(manager, log), manager))
    assert len(sent) == 1
    assert sent[0].startswith("lifespan.startup.failed: refusing: could not connect")
    assert log == []


async def test_an_app_without_lifespan_support_still_gets_the_manager_run() -> None:
    log: list[str] = []
    manager = _Logged(log)

    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "this app speaks HTTP only"

    sent = await _lifespan(LifespanMiddleware(http_only, manager))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == ["manager started", "manager stopping"]


async def test_socketio_asgi_app_hooks_run_with_the_manager_started() -> None:
    log: list[str] = []
    manager = _Logged(log)
    sio = socketio.AsyncServer(client_manager=manager, async_mode="asgi")

    async def on_startup() -> None:
        log.append(f"on_startup, manager started: {manager.started}")

    def on_shutdown() -> None:
        log.append(f"on_shutdown, manager started: {manager.started}")

    app = socketio.ASGIApp(sio, on_startup=on_startup, on_shutdown=on_shutdown)
    sent = await _lifespan(LifespanMiddleware(app, manager))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == ["manager started", "on_startup, manager started: True",
                   "on_shutdown, manager started: True", "manager stopping"]


async def test_under_uvicorn_with_socketio_in_front_of_starlette() -> None:
    import aiohttp

    log: list[str] = []
    manager = _Logged(log)
    sio = socketio.AsyncServer(client_manager=manager, async_mode="asgi")
    # socket.io in front of a Starlette app: the lifespan reaches Starlette through it
    app = LifespanMiddleware(socketio.ASGIApp(sio, _starlette(manager, log)), manager)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on",
                                           log_level="warning"))
    serving = asyncio.ensure_future(server.serve())
    client = socketio.AsyncClient(reconnection=False)
    try:
        await eventually(lambda: server.started or serving.done(), True, "uvicorn serves")
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/status") as response:
                assert await response.json() == {"started": True}
        await client.connect(f"http://127.0.0.1:{port}", wait_timeout=10)
        assert await manager.server_count() == 1
        await client.disconnect()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, DEADLINE)
    assert log == ["manager started", "app startup", "app shutdown", "manager stopping"]
    assert not manager.started


def test_the_helpers_are_exported() -> None:
    assert {"LifespanMiddleware", "attach_aiohttp"} <= set(socketio_adapters.__all__)
    assert attach_aiohttp is socketio_adapters.lifecycle.attach_aiohttp
