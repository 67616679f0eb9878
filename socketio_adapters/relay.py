"""Websockets relayed over the cluster: a session's websocket that reached another
node than the session's owner stays where it landed, and its messages travel between
that node (the edge) and the owner as ``ENGINE_FRAME`` messages.

Each of the two nodes holds a :class:`RelayEnd`, which has the interface of
python-engineio's websocket wrappers (``wait``, ``send``, ``close``): on the owner,
engine.io's own websocket handler runs against it as if the client were there; on the
edge, :func:`pump` copies between it and the client's real websocket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .errors import NotStarted, PayloadTooLarge
from .protocol import EngineFrame, FrameKind

__all__ = ["MAX_QUEUED", "RelayEnd", "Sender", "pump"]

_log = logging.getLogger("socketio_adapters.forwarding")
MAX_QUEUED = 10_000
"""Messages one end may hold for a reader that does not keep up; past that the relay
closes (logged) rather than grow without bound."""


class Sender(Protocol):
    """What a relay end needs of the cluster."""

    def send_engine_frame(self, node: str, sid: str, kind: FrameKind,
                          data: str | bytes | None = None) -> None: ...


class RelayEnd:
    """This node's end of session ``sid``'s websocket, relayed with ``node``."""

    def __init__(self, sender: Sender, node: str, sid: str) -> None:
        self.sender = sender
        self.node = node
        self.sid = sid
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._sent_close = False
        self._ended = False

    @property
    def open(self) -> bool:
        return not (self._sent_close or self._ended)

    def feed(self, frame: EngineFrame) -> None:
        """A frame from the other node, in the order it sent them."""
        if frame.kind is FrameKind.DATA and not self._ended:
            if self._incoming.qsize() >= MAX_QUEUED:
                _log.warning("session %s: over %d relayed messages wait for a slow "
                             "reader; closing its websocket", self.sid, MAX_QUEUED)
                self.end()
                return
            self._incoming.put_nowait(frame.data)
        elif frame.kind is FrameKind.CLOSE:
            self.end()

    def end(self) -> None:
        """The other side is gone: :meth:`wait` returns None from now on."""
        if not self._ended:
            self._ended = True
            self._incoming.put_nowait(None)

    async def wait(self) -> str | bytes | None:
        """The next message from the other node; None once the relay ended."""
        item = await self._incoming.get()
        if item is None:
            self._incoming.put_nowait(None)
        return item

    async def send(self, data: str | bytes) -> None:
        if not self.open:
            raise OSError(f"the relayed websocket of session {self.sid} is closed")
        self.sender.send_engine_frame(self.node, self.sid, FrameKind.DATA, data)

    async def close(self) -> None:
        """Tell the other node this end closed (once)."""
        if self._sent_close:
            return
        self._sent_close = True
        if not self._ended:
            try:
                self.sender.send_engine_frame(self.node, self.sid, FrameKind.CLOSE)
            except NotStarted:
                pass  # this node stops: its goodbye ends the other end


class Socket(Protocol):
    """A python-engineio websocket wrapper, as the edge holds the client's."""

    async def wait(self) -> Any: ...

    async def send(self, message: Any) -> None: ...


async def pump(ws: Socket, end: RelayEnd) -> None:
    """Copy messages between the client's websocket ``ws`` and the relay, both
    ways, until either side closes."""

    async def from_client() -> None:
        while end.open:
            try:
                data = await ws.wait()
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                return
            if not isinstance(data, (str, bytes)):
                return
            try:
                await end.send(data)
            except PayloadTooLarge as exc:
                _log.warning("session %s: %s; closing its websocket", end.sid, exc)
                return
            except (OSError, NotStarted):
                return

    async def to_client() -> None:
        while (data := await end.wait()) is not None:
            try:
                await ws.send(data)
            except Exception:  # the client's socket broke: end the relay
                return

    tasks = [asyncio.ensure_future(from_client()), asyncio.ensure_future(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
