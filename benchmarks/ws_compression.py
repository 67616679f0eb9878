"""Websocket compression of a benchmark node's python-socketio server (aiohttp mode).

aiohttp's ``WebSocketResponse`` negotiates permessage-deflate whenever the client
offers it (the official JavaScript client does; python-socketio's does not), and then
compresses every frame; Node's socket.io does not by default. This switch lets the
benchmark show python nodes both as shipped and with compression off. It stands in for
``socketio_adapters.websocket_compression(sio, enabled)`` until that helper exists, and
only touches the one server it is given (its engine's own copy of the driver table,
never engineio's module dict).
"""

from __future__ import annotations

from typing import Any

from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp

__all__ = ["set_websocket_compression"]


class _UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket driver with ``compress=False``."""

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                                       compress=False)
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


def set_websocket_compression(sio: Any, enabled: bool | None) -> None:
    """``None``: leave the server as shipped; ``True``: aiohttp's default driver
    (compresses when the client offers it); ``False``: never compress."""
    if enabled is None:
        return
    if sio.eio.async_mode != "aiohttp":
        raise ValueError("websocket compression is switched for aiohttp nodes only")
    driver = eio_aiohttp.WebSocket if enabled else _UncompressedWebSocket
    sio.eio._async = {**sio.eio._async, "websocket": driver}
