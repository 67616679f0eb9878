"""The wire format between nodes: the message envelope, its msgpack codec, and the
typed payload of each message type (see :mod:`.envelope` and :mod:`.payloads`)."""

from .client_steps import (
    ClientConnect,
    ClientDisconnect,
    ClientDone,
    ClientEvent,
    SocketSession,
)
from .engine import EngineFrame, EngineRequest, FrameKind
from .envelope import Message, MessageType, decode, encode, sender_prefix
from .payloads import (
    Ack,
    Broadcast,
    ClientCount,
    Disconnect,
    FetchSockets,
    Payload,
    Response,
    RoomChange,
    ServerEvent,
    SessionClaim,
    SocketInfo,
    SocketsFound,
    Sync,
    Target,
    parse_payload,
)

__all__ = [
    "Ack",
    "Broadcast",
    "ClientConnect",
    "ClientCount",
    "ClientDisconnect",
    "ClientDone",
    "ClientEvent",
    "Disconnect",
    "EngineFrame",
    "EngineRequest",
    "FetchSockets",
    "FrameKind",
    "Message",
    "MessageType",
    "Payload",
    "Response",
    "RoomChange",
    "ServerEvent",
    "SessionClaim",
    "SocketInfo",
    "SocketSession",
    "SocketsFound",
    "Sync",
    "Target",
    "decode",
    "encode",
    "parse_payload",
    "sender_prefix",
]
