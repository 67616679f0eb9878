"""Websocket compression (permessage-deflate): off by default, as in Node's engine.io.

Node's engine.io server does not accept the ``permessage-deflate`` extension unless
``perMessageDeflate`` is set (and then leaves frames under 1 KiB uncompressed).
python-engineio's aiohttp driver accepts it whenever a client offers it, and the
official JavaScript client always offers it, so every frame, however small, is
deflated on the server and inflated on the client: 20,000 short events to one
JavaScript client from one python-socketio node went at 16,700 events/s without it,
13,300 with it (docs/deploying.md, "Websocket compression"). This module gives an
engine.io server in ``async_mode="aiohttp"`` a websocket driver that makes the choice:

- :class:`AiohttpWebSocket`: python-engineio's aiohttp ``WebSocket``, except that its
  ``WebSocketResponse`` is created with ``compress=False``: the handshake's response
  leaves the extension out and frames go uncompressed;
- :class:`CompressedAiohttpWebSocket`: the same with ``compress=True`` (aiohttp's and
  python-engineio's behaviour). aiohttp compresses every frame once the extension is
  negotiated (its ``compress`` argument per frame cannot turn it off), so Node's
  1 KiB threshold cannot be offered here.

:func:`websocket_compression` installs one of them on one server, without changing
python-engineio's module-level driver table (other servers in the process keep
theirs). In ``async_mode="asgi"`` the ASGI server negotiates the extension, not the
app: uvicorn with ``--ws-per-message-deflate false`` (``uvicorn.run(...,
ws_per_message_deflate=False)``); hypercorn always accepts it.

With :mod:`.forwarding` and cluster/local.py, this is one of the modules that touch
python-engineio's internals (its server's ``_async`` table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:  # aiohttp is there whenever async_mode "aiohttp" is
    from aiohttp.web import WebSocketResponse

__all__ = ["ENVIRON_KEY", "AiohttpWebSocket", "CompressedAiohttpWebSocket",
           "websocket_compression"]

ENVIRON_KEY = "socketio_adapters.websocket_compress"
"""The key a driver of this module sets in the request's environ once the handshake
is answered: the negotiated deflate window bits, 0 when frames go uncompressed.
For a client that opens with the websocket transport, this is the environ that
``sio.get_environ(sid)`` returns."""

_ASGI_SWITCHES = ("the ASGI server negotiates it, not the app: run uvicorn with "
                  "--ws-per-message-deflate false (uvicorn.run(..., "
                  "ws_per_message_deflate=False)), or true to compress")


class AiohttpWebSocket:
    """python-engineio's aiohttp websocket driver, uncompressed: the server does not
    accept ``permessage-deflate``. Called by engine.io as ``cls(handler, server)``,
    then with the request's environ."""

    compress = False
    """Whether the server accepts the ``permessage-deflate`` extension."""

    def __init__(self, handler: Any, server: Any) -> None:
        self.handler = handler
        self.server = server
        self._sock: WebSocketResponse | None = None
        self.environ: dict[str, Any] = {}

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        from aiohttp.web import WebSocketResponse

        request = environ["aiohttp.request"]
        self._sock = sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.compress)
        await sock.prepare(request)
        environ[ENVIRON_KEY] = int(sock.compress)
        self.environ = environ
        await self.handler(self)
        return sock

    @property
    def sock(self) -> WebSocketResponse:
        if self._sock is None:
            raise RuntimeError("the websocket is not open yet")
        return self._sock

    async def close(self) -> None:
        await self.sock.close()

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self.sock.send_bytes(message)
        else:
            await self.sock.send_str(message)

    async def wait(self) -> str | bytes:
        msg = await self.sock.receive()
        if not isinstance(msg.data, (bytes, str)):
            raise OSError()  # closed, or an error frame: engine.io ends the socket
        return msg.data


class CompressedAiohttpWebSocket(AiohttpWebSocket):
    """The same driver, accepting ``permessage-deflate`` when the client offers it:
    every frame is then compressed (aiohttp has no size threshold)."""

    compress = True


def websocket_compression(server: Any, enabled: bool = False) -> None:
    """Choose whether ``server``'s websockets accept ``permessage-deflate``.

    ``server`` is a ``socketio.AsyncServer`` (any: python-socketio's own with one of
    our managers, or :class:`socketio_adapters.AsyncServer`, which takes the option
    itself as ``websocket_compression=``) or an ``engineio.AsyncServer``, in
    ``async_mode="aiohttp"``. Only this server changes. Call it before the first
    client connects::

        sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
        socketio_adapters.websocket_compression(sio, enabled=False)

    :raises ConfigurationError: another async mode, where the web server makes the
        choice (the message names its option).
    """
    eio = getattr(server, "eio", server)
    table = getattr(eio, "_async", None)
    mode = getattr(eio, "async_mode", None)
    if not isinstance(table, dict):
        raise ConfigurationError(
            f"websocket_compression needs a socketio.AsyncServer or an "
            f"engineio.AsyncServer, not {type(server).__name__}")
    if mode != "aiohttp":
        hint = _ASGI_SWITCHES if mode == "asgi" else "this option covers 'aiohttp' only"
        raise ConfigurationError(
            f"websocket compression cannot be chosen here in async_mode {mode!r}: "
            f"{hint}")
    driver = CompressedAiohttpWebSocket if enabled else AiohttpWebSocket
    eio._async = {**table, "websocket": driver}

