"""Start and stop a manager with the web application, so a node is subscribed
before its first client connects and says goodbye when it stops. When its server
recovers connection state, stopping first closes the clients' transports so their
sessions are kept for another node (see :meth:`AsyncServer.shutdown`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .cluster import ClusterManager
from .server import AsyncServer

__all__ = ["LifespanMiddleware", "attach_aiohttp", "hand_over"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Message = MutableMapping[str, Any]

_logger = logging.getLogger("socketio_adapters.lifecycle")
_END_SECONDS = 5.0
"""How long the wrapped app's lifespan may take to end after its shutdown."""


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
    """Wraps an ASGI app (``socketio.ASGIApp``, a Starlette or FastAPI app, ...) and
    runs the manager with the ASGI lifespan, around the app's own lifespan, which it
    passes every lifespan event on to.

    At startup the manager starts first, then the app's startup runs (``on_startup``
    of ``socketio.ASGIApp``, Starlette's ``lifespan``), so the app's startup code may
    already emit. At shutdown the app's shutdown runs first, then the manager hands
    its clients over (:func:`hand_over`) and stops. A failure on either side reaches
    the server as ``lifespan.startup.failed`` (after stopping the manager again when
    the app's startup failed) or ``lifespan.shutdown.failed``. An app that does not
    speak the lifespan protocol (it raises, or returns, on a lifespan scope) still
    gets the manager started and stopped.
    """

    def __init__(self, app: ASGIApp, manager: ClusterManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        startup = await receive()
        try:
            await self.manager.start()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        app = _AppLifespan(self.app, scope)
        try:
            await self._serve(app, startup, receive, send)
        finally:
            await app.end()

    async def _serve(self, app: _AppLifespan, startup: Message, receive: Receive,
                     send: Send) -> None:
        answer = await app.ask(startup)
        if answer is not None and answer["type"] == "lifespan.startup.failed":
            try:
                await self.manager.stop()
            except Exception:
                _logger.exception("stopping the ClusterManager after the app's failed "
                                  "startup")
            await send({"type": "lifespan.startup.failed",
                        "message": answer.get("message") or "the app's startup failed"})
            return
        if answer is None:
            _logger.info("the wrapped ASGI app does not support the lifespan protocol "
                         "(%s); only the manager is started and stopped",
                         f"it raised {app.error!r}" if app.error else "it returned")
        await send({"type": "lifespan.startup.complete"})
        shutdown = await receive()
        failures = []
        if answer is not None:
            answer = await app.ask(shutdown)
            if answer is not None and answer["type"] == "lifespan.shutdown.failed":
                failures.append(answer.get("message") or "the app's shutdown failed")
            elif answer is None and app.error is not None:
                failures.append(f"the app's lifespan failed: {app.error!r}")
        try:
            await hand_over(self.manager)
            await self.manager.stop()
        except Exception as exc:
            failures.append(f"the ClusterManager did not stop cleanly: {exc!r}")
        if failures:
            await send({"type": "lifespan.shutdown.failed", "message": "; ".join(failures)})
        else:
            await send({"type": "lifespan.shutdown.complete"})


class _AppLifespan:
    """The wrapped app's lifespan, run as a task: events go in, its answers come out."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answers: asyncio.Queue[Message] = asyncio.Queue()
        self._task = asyncio.ensure_future(app(scope, self._events.get, self._answers.put))
        self.error: BaseException | None = None
        """What the app raised, if it ended that way."""
        self._shut_down = False

    async def ask(self, event: Message) -> Message | None:
        """Pass ``event`` on and return the app's answer, or None when the app ended
        without one (it does not speak the protocol, or it failed: see ``error``)."""
        self._events.put_nowait(event)
        self._shut_down = event["type"] == "lifespan.shutdown"
        answer = asyncio.ensure_future(self._answers.get())
        try:
            await asyncio.wait({answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answer.done():
                answer.cancel()
        if answer.done() and not answer.cancelled():
            return answer.result()
        if not self._task.cancelled():
            self.error = self._task.exception()
        return None

    async def end(self) -> None:
        """Let the app's lifespan return after its shutdown (cancelled after a few
        seconds), or cancel it at once if it had no shutdown."""
        task = self._task
        done, _ = await asyncio.wait({task}, timeout=_END_SECONDS if self._shut_down else 0)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
