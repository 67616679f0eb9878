"""The payloads of the distributor mode: what an edge node tells the application
server of a namespace about one of its sockets (a connect, an event, a disconnect:
the socket's *steps*, numbered in order), the server's answer to each step, and a
server's read or write of a socket's session at its edge node.

Every step carries ``seq``, the edge node's number for it within the socket (the
connect is 0): the server handles a socket's steps in that order, once each, and
answers each one with a CLIENT_DONE of the same number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedMessage
from .envelope import MessageType
from .fields import as_map, request_id_of

__all__ = ["CLIENT_STEP_PARSERS", "ClientConnect", "ClientDisconnect", "ClientDone",
           "ClientEvent", "SocketSession"]


def _sid(data: Any) -> str:
    sid = as_map(data).get("sid")
    if not isinstance(sid, str) or not sid:
        raise MalformedMessage("a client step without a sid")
    return sid


def _seq(data: Any) -> int:
    seq = as_map(data).get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MalformedMessage("a client step without a seq")
    return seq


@dataclass(frozen=True, slots=True)
class ClientConnect:
    """CLIENT_CONNECT: socket ``sid`` connects (``run_handler``: the server runs its
    connect handler with ``environ`` and ``auth``), or, without ``run_handler``, the
    server takes over a socket whose connect it did not handle."""

    sid: str
    seq: int = 0
    environ: dict[str, str] = field(default_factory=dict)
    auth: Any = None
    run_handler: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {"sid": self.sid, "seq": self.seq, "environ": self.environ,
                "auth": self.auth, "handler": self.run_handler}

    @classmethod
    def from_wire(cls, data: Any) -> ClientConnect:
        d = as_map(data)
        environ = d.get("environ") or {}
        if not isinstance(environ, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in environ.items()):
            raise MalformedMessage("a connect's environ is not a map of strings")
        run = d.get("handler", True)
        if not isinstance(run, bool):
            raise MalformedMessage("a connect's handler flag is not a boolean")
        return cls(_sid(d), _seq(d), environ, d.get("auth"), run)


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """CLIENT_EVENT: the client sent ``packet`` (event name, then arguments)."""

    sid: str
    seq: int
    packet: list[Any]

    def to_wire(self) -> dict[str, Any]:
        return {"sid": self.sid, "seq": self.seq, "packet": self.packet}

    @classmethod
    def from_wire(cls, data: Any) -> ClientEvent:
        d = as_map(data)
        packet = d.get("packet")
        if not isinstance(packet, list) or not packet or not isinstance(packet[0], str):
            raise MalformedMessage("a client event without a name")
        return cls(_sid(d), _seq(d), packet)


@dataclass(frozen=True, slots=True)
class ClientDisconnect:
    """CLIENT_DISCONNECT: the socket left, for ``reason`` (python-socketio's words)."""

    sid: str
    seq: int
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"sid": self.sid, "seq": self.seq, "reason": self.reason}

    @classmethod
    def from_wire(cls, data: Any) -> ClientDisconnect:
        d = as_map(data)
        reason = d.get("reason")
        if not isinstance(reason, str):
            raise MalformedMessage("a disconnect without a reason")
        return cls(_sid(d), _seq(d), reason)


@dataclass(frozen=True, slots=True)
class ClientDone:
    """CLIENT_DONE: step ``seq`` of socket ``sid`` was handled. For an event,
    ``value`` is the handler's return value (the client's ack) when ``handled``; for
    a connect, ``refused`` holds the refusal's ``error_args`` (None: accepted)."""

    sid: str
    seq: int
    value: Any = None
    handled: bool = True
    refused: Any = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sid": self.sid, "seq": self.seq, "handled": self.handled}
        if self.value is not None:
            out["value"] = self.value
        if self.refused is not None:
            out["refused"] = self.refused
        return out

    @classmethod
    def from_wire(cls, data: Any) -> ClientDone:
        d = as_map(data)
        handled = d.get("handled", True)
        if not isinstance(handled, bool):
            raise MalformedMessage("a done's handled flag is not a boolean")
        return cls(_sid(d), _seq(d), d.get("value"), handled, d.get("refused"))


@dataclass(frozen=True, slots=True)
class SocketSession:
    """SOCKET_SESSION: read socket ``sid``'s session (``data`` None) or replace it
    with ``data``; the edge node holding the socket answers (the session, or True
    once replaced), any other node answers "not handled"."""

    sid: str
    request_id: str
    data: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sid": self.sid, "requestId": self.request_id}
        if self.data is not None:
            out["data"] = self.data
        return out

    @classmethod
    def from_wire(cls, data: Any) -> SocketSession:
        d = as_map(data)
        session = d.get("data")
        if session is not None and not isinstance(session, dict):
            raise MalformedMessage("a session is not a map")
        return cls(_sid(d), str(request_id_of(d, required=True)), session)


CLIENT_STEP_PARSERS: dict[MessageType, Callable[[Any], Any]] = {
    MessageType.CLIENT_CONNECT: ClientConnect.from_wire,
    MessageType.CLIENT_EVENT: ClientEvent.from_wire,
    MessageType.CLIENT_DISCONNECT: ClientDisconnect.from_wire,
    MessageType.CLIENT_DONE: ClientDone.from_wire,
    MessageType.SOCKET_SESSION: SocketSession.from_wire,
}
