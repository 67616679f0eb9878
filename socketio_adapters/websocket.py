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

Uncompressed, the driver also writes a burst of frames in two writes rather than one
each: engine.io's writer task sends every packet it found queued one after the
other, and aiohttp writes each frame to the socket at once (a ``send`` system call,
and a TCP segment, per event). :class:`AiohttpWebSocket` frames them itself (a
server's frames are unmasked: a header and the payload), writes the first frame of a
loop turn to the connection's transport at once (an event delivered alone waits for
nothing: on a busy core, the rest of the node's turn would otherwise run before the
client could read it), and holds the frames that follow in the same turn for one
write when it ends. Only while the transport's buffer is under its high-water mark:
past it, frames go through aiohttp again, which waits for the client to read (flow
control as before). The same framing,
:meth:`AiohttpWebSocket.write_now`, takes the session's packets directly while its
writer task waits on an empty queue (:mod:`.engine_socket`): one event to one socket
then costs no wake-up of that task.

With :mod:`.forwarding` and cluster/local.py, this is one of the modules that touch
python-engineio's internals (its server's ``_async`` table).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .engine_socket import QueueSocket, wait_without_tasks
from .errors import ConfigurationError

if TYPE_CHECKING:  # aiohttp is there whenever async_mode "aiohttp" is
    from aiohttp import WSMessage
    from aiohttp.web import WebSocketResponse

__all__ = ["ENVIRON_KEY", "AiohttpWebSocket", "CompressedAiohttpWebSocket",
           "websocket_compression"]

ENVIRON_KEY = "socketio_adapters.websocket_compress"
"""The key a driver of this module sets in the request's environ once the handshake
is answered: the negotiated deflate window bits, 0 when frames go uncompressed.
For a client that opens with the websocket transport, this is the environ that
``sio.get_environ(sid)`` returns."""

FLUSH_BYTES = 64 * 1024
"""Frames held for one write: past this, they are written at once."""

_PROBE_ANSWER = "3probe"
"""engine.io's answer to an upgrade's probe (PONG "probe"): the only packet a session
sends through a websocket that is not (yet) its transport."""

_TEXT, _BINARY = 0x81, 0x82  # FIN and the opcode: a whole text or binary message
_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack


def frame_header(first: int, length: int) -> bytes:
    """The header of an unmasked websocket frame (RFC 6455, section 5.2)."""
    if length < 126:
        return _LEN1(first, length)
    if length < 65536:
        return _LEN2(first, 126, length)
    return _LEN3(first, 127, length)


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
        # the session whose websocket this is: its writer waits without a task, it
        # reads without a task per packet, and once this websocket is its transport,
        # its packets come straight to write_now while the writer waits (see send)
        session = getattr(handler, "__self__", None)
        wait_without_tasks(session)
        self._session = session if isinstance(session, QueueSocket) else None
        if self._session is not None and getattr(handler, "__name__", "") == "_websocket_handler":
            self.handler = self._session._websocket_handler  # ours, if it became one now
        self._sock: WebSocketResponse | None = None
        self.environ: dict[str, Any] = {}
        self._transport: asyncio.Transport | None = None
        """Where frames are written in bursts (None: through aiohttp only, as when
        they are compressed)."""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush: asyncio.Handle | None = None

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        from aiohttp.web import WebSocketResponse

        request = environ["aiohttp.request"]
        self._sock = sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.compress)
        await sock.prepare(request)
        environ[ENVIRON_KEY] = int(sock.compress)
        if not sock.compress:
            self._transport = request.transport
        self.environ = environ
        try:
            await self.handler(self)
        finally:
            self._write_pending()
            session = self._session
            if session is not None and session.write_now == self.write_now:
                session.write_now = None  # no longer its transport (nor a cycle)
        return sock

    @property
    def sock(self) -> WebSocketResponse:
        if self._sock is None:
            raise RuntimeError("the websocket is not open yet")
        return self._sock

    async def close(self) -> None:
        self._write_pending()
        await self.sock.close()

    async def send(self, message: str | bytes) -> None:
        session = self._session
        if (session is not None and session.write_now is None and session.upgraded
                and message != _PROBE_ANSWER and "send" not in vars(self)):
            # the session's writer sends through this websocket: it is the transport
            # (another upgrade attempt running beside it only ever sends the probe's
            # answer), so the session may hand it packets while the writer waits;
            # not when this send is wrapped (python-socketio's Admin UI counts the
            # packets it sends): every packet must then come through it
            session.write_now = self.write_now
        if not self.write_now(message):
            # compressed, closing (aiohttp raises), or a client that does not keep up:
            # aiohttp writes the frame and waits for the client to read
            self._write_pending()
            sock = self.sock
            if isinstance(message, bytes):
                await sock.send_bytes(message)
            else:
                await sock.send_str(message)

    def write_now(self, message: str | bytes) -> bool:
        """Write ``message``'s frame now if it is the first of this loop turn, else
        hold it for the turn's write; or return False when it must go through
        aiohttp: compressed, not open, closing, or past the transport's high-water
        mark."""
        sock, transport = self._sock, self._transport
        if (transport is None or sock is None or sock.closed or transport.is_closing()
                or transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]):
            return False
        if isinstance(message, bytes):
            data, first = message, _BINARY
        else:
            data, first = message.encode(), _TEXT
        if self._flush is None:
            # the first frame of this loop turn goes out now (an event delivered
            # alone waits for nothing); those that follow it in the same turn are
            # held and written together when it ends
            transport.write(frame_header(first, len(data)) + data)
            self._flush = asyncio.get_running_loop().call_soon(self._write_pending)
            return True
        pending = self._pending
        pending.append(frame_header(first, len(data)))
        pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= FLUSH_BYTES:
            self._write_pending()
            self._flush = asyncio.get_running_loop().call_soon(self._write_pending)
        return True

    def _write_pending(self) -> None:
        """Write the frames held, in one call (dropped when the websocket closed in
        between: its close frame is written, nothing may follow it)."""
        flush, self._flush = self._flush, None
        if flush is not None:
            flush.cancel()
        pending = self._pending
        if not pending:
            return
        self._pending, self._pending_size = [], 0
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self.sock.closed:
            transport.write(b"".join(pending))

    def receive_message(self) -> Awaitable[WSMessage]:
        """aiohttp's next message on this websocket (its ``receive()``, awaited by the
        session's reader itself: :meth:`wait`, a coroutine around it, would stay
        suspended for the whole session)."""
        return self.sock.receive()

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

