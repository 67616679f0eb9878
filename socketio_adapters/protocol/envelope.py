"""The message envelope and its msgpack codec.

An envelope is a msgpack map ``{"uid", "nsp", "type", "data"}`` (the shape of
socket.io's ClusterAdapter messages) so that a Node peer can join later. ``bytes``
travel as msgpack ``bin`` and come back as ``bytes``; there is no pickle anywhere.
Anything that does not decode to a well-formed envelope raises
:class:`MalformedMessage`, which the manager logs and drops.

The encoder writes the keys in one fixed order, sender first, so that a node can
tell its own messages echoed by a broker from their first bytes alone
(:func:`sender_prefix`) without decoding them; the layout is defined here, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import MalformedMessage

__all__ = ["Message", "MessageType", "decode", "encode", "sender_prefix"]


class MessageType(enum.IntEnum):
    """Message types, numbered as in socket.io's ClusterAdapter."""

    INITIAL_HEARTBEAT = 1
    HEARTBEAT = 2
    BROADCAST = 3
    SOCKETS_JOIN = 4
    SOCKETS_LEAVE = 5
    DISCONNECT_SOCKETS = 6
    FETCH_SOCKETS = 7
    FETCH_SOCKETS_RESPONSE = 8
    SERVER_SIDE_EMIT = 9
    SERVER_SIDE_EMIT_RESPONSE = 10
    BROADCAST_CLIENT_COUNT = 11
    BROADCAST_ACK = 12
    ADAPTER_CLOSE = 13
    # ours, only ever in the durable log (connection state recovery)
    SESSION_SAVE = 101
    """A lost socket's session, on backends without a session store."""
    SESSION_CLAIM = 102
    """A node restoring that session; the first claim after the save wins."""
    ENGINE_REQUEST = 103
    """An engine.io HTTP request for a session another node owns, for that node to
    serve (sessions with no sticky routing); answered with a RESPONSE."""
    ENGINE_FRAME = 104
    """A websocket frame of a session whose websocket reached another node than its
    owner, relayed between the two (opened with a RESPONSE, then one way)."""
    SYNC = 105
    """A marker a node sends to itself: once it comes back, the node has read every
    message the broker accepted before it (ordered emits)."""
    RESUME_PROBE = 106
    """After an outage, a node holding its buffer asks who is subscribed again."""
    RESUME_READY = 107
    """The answer to RESUME_PROBE, to the asker: this node is subscribed."""
    # ours, the distributor mode (edge nodes and application servers)
    CLIENT_CONNECT = 110
    """An edge node to an application server: a client connects to its namespace
    (or, with no handler to run, the server now handles a socket it did not see
    connect: restored, or handed over from a server that died)."""
    CLIENT_EVENT = 111
    """An edge node to an application server: a client's event."""
    CLIENT_DISCONNECT = 112
    """An edge node to an application server: a client left."""
    CLIENT_DONE = 113
    """An application server to an edge node: a step of a socket handled (the
    connect handler's verdict, an event's ack)."""
    SOCKET_SESSION = 114
    """An application server to the edge node holding a socket: read or replace
    that socket's session (answered with a SERVER_SIDE_EMIT_RESPONSE)."""


_TYPES = {t.value: t for t in MessageType}


@dataclass(frozen=True, slots=True)
class Message:
    """One cluster message: who sent it, for which namespace, what kind, what payload
    (plain msgpack data; :mod:`.payloads` gives each type its typed form)."""

    uid: str
    nsp: str
    type: MessageType
    data: Any = None


_MAP: bytes = b"\x84"  # a msgpack map of four entries
_UID: bytes = msgpack.packb("uid")
_NSP: bytes = msgpack.packb("nsp")
_TYPE: bytes = msgpack.packb("type")
_DATA: bytes = msgpack.packb("data")
_packer = msgpack.Packer(use_bin_type=True)
_unpackb = msgpack.unpackb


def _packb(value: Any) -> bytes:
    packed: bytes = _packer.pack(value)
    return packed


def sender_prefix(uid: str) -> bytes:
    """The first bytes of every message :func:`encode` writes for sender ``uid``."""
    packed: bytes = msgpack.packb(uid)
    return _MAP + _UID + packed


def encode(message: Message) -> bytes:
    """Encode a message to bytes (a msgpack map; binary stays binary)."""
    try:
        return b"".join((sender_prefix(message.uid), _NSP, _packb(message.nsp), _TYPE,
                         _packb(int(message.type)), _DATA, _packb(message.data)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode message data for the cluster: {exc}") from exc


def decode(payload: bytes) -> Message:
    """Decode bytes from a broker, or raise :class:`MalformedMessage`."""
    try:
        raw = _unpackb(payload, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated error classes
        raise MalformedMessage(f"not msgpack: {exc!r}") from None
    if not isinstance(raw, dict):
        raise MalformedMessage(f"envelope is a {type(raw).__name__}, not a map")
    get = raw.get
    uid, nsp, kind = get("uid"), get("nsp"), get("type")
    if not isinstance(uid, str) or not uid:
        raise MalformedMessage("envelope has no sender uid")
    if not isinstance(nsp, str):
        raise MalformedMessage("envelope has no namespace")
    # (True == 1: a bool is no type)
    found = None if isinstance(kind, bool) or not isinstance(kind, int) else _TYPES.get(kind)
    if found is None:
        raise MalformedMessage(f"unknown message type {kind!r}")
    return Message(uid, nsp, found, get("data"))
