"""The typed payload of each message type, and its wire form (socket.io's
ClusterAdapter field names: ``opts.rooms``, ``opts.except``, ``requestId``, ...).

Every payload reads itself from wire data with :meth:`from_wire`, which raises
:class:`MalformedMessage` for anything ill-shaped, and writes itself with
:meth:`to_wire`. Only this module knows the field names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedMessage
from .client_steps import CLIENT_STEP_PARSERS
from .engine import EngineFrame, EngineRequest
from .envelope import MessageType
from .fields import as_map, request_id_of

__all__ = ["EVERYONE", "Ack", "Broadcast", "ClientCount", "Disconnect", "FetchSockets",
           "Payload", "Response", "RoomChange", "ServerEvent", "SessionClaim",
           "SocketInfo", "SocketsFound", "Sync", "Target", "parse_payload"]


def _rooms(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise MalformedMessage("rooms are not a list of strings")
    for room in value:
        if not isinstance(room, str):
            raise MalformedMessage("rooms are not a list of strings")
    return tuple(value)


_NO_ROOMS = (list, tuple, type(None))
"""What an empty rooms field may be (:func:`_rooms` reads each as no room)."""


def _packet(value: Any) -> list[Any]:
    # a msgpack array decodes as a list; a tuple here is an extension type
    if not isinstance(value, list):
        raise MalformedMessage("packet is not a list")
    return value


def _event(value: Any) -> list[Any]:
    """An event's packet: its name (a string), then its arguments."""
    packet = _packet(value)
    if not packet or not isinstance(packet[0], str):
        raise MalformedMessage("event without a name")
    return packet


def _flag(value: Any, default: bool) -> bool:
    """A boolean field (``default`` when absent)."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MalformedMessage(f"flag is not a boolean: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Target:
    """Which sockets: members of any of ``rooms`` (every socket when empty), less
    the members of any of ``excepts`` (socket.io's broadcast options)."""

    rooms: tuple[str, ...] = ()
    excepts: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"rooms": list(self.rooms), "except": list(self.excepts)}

    @classmethod
    def from_wire(cls, data: Any) -> Target:
        opts = as_map(data)
        rooms, excepts = opts.get("rooms"), opts.get("except")
        if (not rooms and not excepts and isinstance(rooms, _NO_ROOMS)
                and isinstance(excepts, _NO_ROOMS)):
            return EVERYONE  # the most common target: one shared instance
        return cls(_rooms(rooms), _rooms(excepts))

    def matches(self, rooms: set[str]) -> bool:
        """Whether a socket in ``rooms`` (its own sid included) is targeted."""
        if self.rooms and rooms.isdisjoint(self.rooms):
            return False
        return rooms.isdisjoint(self.excepts)


EVERYONE = Target()
"""Every socket: no room, no except."""


@dataclass(frozen=True, slots=True)
class Broadcast:
    """BROADCAST: an event for clients. With ``request_id`` the recipients ack it:
    to one waiting callback, or, with ``count`` set, to a request that first learns
    each node's number of recipients (BROADCAST_CLIENT_COUNT)."""

    packet: list[Any]
    target: Target = field(default_factory=Target)
    request_id: str | None = None
    count: bool = False
    seq: int | None = None
    """In the durable log: the sender's number for it, so that an entry appended
    twice (a publish retried after the broker took it) is delivered once."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"packet": self.packet, "opts": self.target.to_wire()}
        if self.request_id is not None:
            out["requestId"] = self.request_id
            if self.count:
                out["all"] = True
        if self.seq is not None:
            out["seq"] = self.seq
        return out

    @classmethod
    def from_wire(cls, data: Any) -> Broadcast:
        # every event a node delivers is read here: the checks of request_id_of and
        # _flag are written inline
        d = as_map(data)
        get = d.get
        seq = get("seq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
            raise MalformedMessage("a broadcast's seq is not an integer")
        request_id = get("requestId")
        if request_id is not None and not isinstance(request_id, str):
            raise MalformedMessage("bad requestId")
        count = get("all")
        if count is None:
            count = False
        elif not isinstance(count, bool):
            raise MalformedMessage(f"flag is not a boolean: {count!r}")
        return cls(_event(get("packet")), Target.from_wire(get("opts")), request_id,
                   count, seq)


@dataclass(frozen=True, slots=True)
class RoomChange:
    """SOCKETS_JOIN / SOCKETS_LEAVE: the targeted sockets join or leave ``rooms``;
    with ``request_id`` every node confirms once it applied the change."""

    target: Target
    rooms: tuple[str, ...]
    request_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"opts": self.target.to_wire(), "rooms": list(self.rooms)}
        if self.request_id is not None:
            out["requestId"] = self.request_id
        return out

    @classmethod
    def from_wire(cls, data: Any) -> RoomChange:
        d = as_map(data)
        return cls(Target.from_wire(d.get("opts")), _rooms(d.get("rooms")), request_id_of(d))


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT_SOCKETS: the targeted sockets are disconnected (confirmed like a
    room change when ``request_id`` is set)."""

    target: Target
    request_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"opts": self.target.to_wire()}
        if self.request_id is not None:
            out["requestId"] = self.request_id
        return out

    @classmethod
    def from_wire(cls, data: Any) -> Disconnect:
        d = as_map(data)
        return cls(Target.from_wire(d.get("opts")), request_id_of(d))


@dataclass(frozen=True, slots=True)
class FetchSockets:
    """FETCH_SOCKETS: every node answers with its targeted sockets."""

    target: Target
    request_id: str

    def to_wire(self) -> dict[str, Any]:
        return {"opts": self.target.to_wire(), "requestId": self.request_id}

    @classmethod
    def from_wire(cls, data: Any) -> FetchSockets:
        d = as_map(data)
        return cls(Target.from_wire(d.get("opts")), str(request_id_of(d, required=True)))


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """One socket in a FETCH_SOCKETS_RESPONSE."""

    sid: str
    rooms: tuple[str, ...]
    node: str

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.sid, "rooms": list(self.rooms), "node": self.node}

    @classmethod
    def from_wire(cls, data: Any) -> SocketInfo:
        d = as_map(data)
        sid, node = d.get("id"), d.get("node")
        if not isinstance(sid, str) or not isinstance(node, str):
            raise MalformedMessage("socket without id or node")
        return cls(sid, _rooms(d.get("rooms")), node)


@dataclass(frozen=True, slots=True)
class SocketsFound:
    """FETCH_SOCKETS_RESPONSE. Reading it keeps the well-formed sockets and counts
    the others in ``skipped`` (the answer still counts as the node's)."""

    request_id: str
    sockets: list[SocketInfo]
    skipped: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"requestId": self.request_id,
                "sockets": [s.to_wire() for s in self.sockets]}

    @classmethod
    def from_wire(cls, data: Any) -> SocketsFound:
        d = as_map(data)
        items = d.get("sockets")
        if not isinstance(items, list):
            raise MalformedMessage("sockets is not a list")
        sockets = []
        for item in items:
            try:
                sockets.append(SocketInfo.from_wire(item))
            except MalformedMessage:
                continue
        return cls(str(request_id_of(d, required=True)), sockets, len(items) - len(sockets))


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """SERVER_SIDE_EMIT: an event for the other nodes' handlers (answered with a
    SERVER_SIDE_EMIT_RESPONSE when ``request_id`` is set)."""

    packet: list[Any]
    request_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"packet": self.packet}
        if self.request_id is not None:
            out["requestId"] = self.request_id
        return out

    @classmethod
    def from_wire(cls, data: Any) -> ServerEvent:
        d = as_map(data)
        return cls(_event(d.get("packet")), request_id_of(d))


@dataclass(frozen=True, slots=True)
class Response:
    """SERVER_SIDE_EMIT_RESPONSE: a handler's result, or ``handled=False`` (no
    handler there, or a room change confirmed: an answer without a value)."""

    request_id: str
    value: Any = None
    handled: bool = True

    def to_wire(self) -> dict[str, Any]:
        if not self.handled:
            return {"requestId": self.request_id, "handled": False}
        return {"requestId": self.request_id, "packet": self.value, "handled": True}

    @classmethod
    def from_wire(cls, data: Any) -> Response:
        d = as_map(data)
        return cls(str(request_id_of(d, required=True)), d.get("packet"),
                   _flag(d.get("handled"), True))


@dataclass(frozen=True, slots=True)
class ClientCount:
    """BROADCAST_CLIENT_COUNT: how many acks a node will send for a broadcast."""

    request_id: str
    count: int

    def to_wire(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "clientCount": self.count}

    @classmethod
    def from_wire(cls, data: Any) -> ClientCount:
        d = as_map(data)
        count = d.get("clientCount")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise MalformedMessage("bad clientCount")
        return cls(str(request_id_of(d, required=True)), count)


@dataclass(frozen=True, slots=True)
class Ack:
    """BROADCAST_ACK: one client's ack arguments."""

    request_id: str
    args: list[Any]

    def to_wire(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "packet": self.args}

    @classmethod
    def from_wire(cls, data: Any) -> Ack:
        d = as_map(data)
        return cls(str(request_id_of(d, required=True)), _packet(d.get("packet")))


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """SESSION_CLAIM (in the log): a node restoring the session ``pid``."""

    pid: str
    nonce: str

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid, "nonce": self.nonce}

    @classmethod
    def from_wire(cls, data: Any) -> SessionClaim:
        d = as_map(data)
        pid, nonce = d.get("pid"), d.get("nonce")
        if not isinstance(pid, str) or not isinstance(nonce, str):
            raise MalformedMessage("session claim without pid or nonce")
        return cls(pid, nonce)


@dataclass(frozen=True, slots=True)
class Sync:
    """SYNC: marker ``marker``, from a node to itself; RESUME_PROBE and RESUME_READY:
    the probe's number."""

    marker: int

    def to_wire(self) -> dict[str, Any]:
        return {"marker": self.marker}

    @classmethod
    def from_wire(cls, data: Any) -> Sync:
        marker = as_map(data).get("marker")
        if not isinstance(marker, int) or isinstance(marker, bool):
            raise MalformedMessage("sync without a marker")
        return cls(marker)


Payload = (Broadcast | RoomChange | Disconnect | FetchSockets | SocketsFound
           | ServerEvent | Response | ClientCount | Ack | SessionClaim | EngineRequest
           | EngineFrame | Sync
           | None)

_PARSERS: dict[MessageType, Callable[[Any], Any]] = {
    MessageType.BROADCAST: Broadcast.from_wire,
    MessageType.SOCKETS_JOIN: RoomChange.from_wire,
    MessageType.SOCKETS_LEAVE: RoomChange.from_wire,
    MessageType.DISCONNECT_SOCKETS: Disconnect.from_wire,
    MessageType.FETCH_SOCKETS: FetchSockets.from_wire,
    MessageType.FETCH_SOCKETS_RESPONSE: SocketsFound.from_wire,
    MessageType.SERVER_SIDE_EMIT: ServerEvent.from_wire,
    MessageType.SERVER_SIDE_EMIT_RESPONSE: Response.from_wire,
    MessageType.BROADCAST_CLIENT_COUNT: ClientCount.from_wire,
    MessageType.BROADCAST_ACK: Ack.from_wire,
    MessageType.SESSION_CLAIM: SessionClaim.from_wire,
    MessageType.ENGINE_REQUEST: EngineRequest.from_wire,
    MessageType.ENGINE_FRAME: EngineFrame.from_wire,
    MessageType.SYNC: Sync.from_wire,
    MessageType.RESUME_PROBE: Sync.from_wire,
    MessageType.RESUME_READY: Sync.from_wire,
    **CLIENT_STEP_PARSERS,
}


def parse_payload(kind: MessageType, data: Any) -> Any:
    """The typed payload of a message of type ``kind`` (None for the types that
    carry none: heartbeats, ADAPTER_CLOSE; SESSION_SAVE's data is read by the
    recovery layer); raises :class:`MalformedMessage`."""
    parse = _PARSERS.get(kind)
    return None if parse is None else parse(data)
