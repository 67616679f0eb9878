"""Start and stop a manager with the web application, so a node is subscribed
before its first client connects and says goodbye when it stops. When its server
recovers connection state, stopping first closes the clients' transports so their
sessions are kept for another node (see :meth:`AsyncServer.shutdown`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .cluster import ClusterManager
from .server import AsyncServer

__all__ = ["LifespanMiddleware", "attach_aiohttp", "hand_over"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def hand_over(manager: ClusterManager) -> None:
    """Before stopping: a recovering server keeps its clients' sessions."""
    server = manager.server
    if isinstance(server, AsyncServer) and server.recovery_options is not None:
        await server.shutdown()


def attach_aiohttp(app: Any, manager: ClusterManager) -> None:
    """Start ``manager`` on the aiohttp app's startup and stop it on cleanup (after
    handing over its clients' sessions on shutdown, when it recovers them)."""

    async def on_startup(_app: Any) -> None:
        await manager.start()

    async def on_shutdown(_app: Any) -> None:
        await hand_over(manager)

    async def on_cleanup(_app: Any) -> None:
        await manager.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)


class LifespanMiddleware:
    """Wraps an ASGI app (e.g. ``socketio.ASGIApp``) and starts/stops the manager on
    the ASGI lifespan events, then passes them on to the wrapped app."""

    def __init__(self, app: ASGIApp, manager: ClusterManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                try:
                    await self.manager.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await hand_over(self.manager)
                await self.manager.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
