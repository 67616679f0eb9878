"""The payloads of sessions without sticky routing (see
:mod:`socketio_adapters.forwarding`): a long-polling request forwarded to the node that
owns its session, and the frames of a websocket relayed between two nodes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedMessage
from .fields import as_map, request_id_of

__all__ = ["EngineFrame", "EngineRequest", "FrameKind"]


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """ENGINE_REQUEST: an engine.io long-polling request (method, query string,
    body and the headers engine.io reads) for the node that owns its session."""

    request_id: str
    method: str
    query: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"requestId": self.request_id, "method": self.method, "query": self.query,
                "body": self.body, "headers": self.headers}

    @classmethod
    def from_wire(cls, data: Any) -> EngineRequest:
        d = as_map(data)
        method, query, body, headers = (d.get("method"), d.get("query"), d.get("body"),
                                        d.get("headers", {}))
        if method not in ("GET", "POST") or not isinstance(query, str):
            raise MalformedMessage("engine request without method or query")
        if not isinstance(body, bytes) or not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise MalformedMessage("engine request with a bad body or headers")
        return cls(str(request_id_of(d, required=True)), method, query, body, dict(headers))


class FrameKind(enum.IntEnum):
    """What an :class:`EngineFrame` carries."""

    OPEN = 0
    """The edge node asks the owner to take the session's websocket (answered)."""
    DATA = 1
    """One websocket message, either way."""
    CLOSE = 2
    """The websocket closed, on either side."""


@dataclass(frozen=True, slots=True)
class EngineFrame:
    """ENGINE_FRAME: one step of a websocket relayed between the node that holds it
    and the node that owns its engine.io session."""

    sid: str
    kind: FrameKind
    data: str | bytes | None = None
    request_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"sid": self.sid, "kind": int(self.kind)}
        if self.data is not None:
            wire["data"] = self.data
        if self.request_id is not None:
            wire["requestId"] = self.request_id
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> EngineFrame:
        d = as_map(data)
        sid, kind, body = d.get("sid"), d.get("kind"), d.get("data")
        if (not isinstance(sid, str) or not isinstance(kind, int)
                or isinstance(kind, bool) or not 0 <= kind < len(FrameKind)):
            raise MalformedMessage("engine frame without sid or kind")
        if body is not None and not isinstance(body, (str, bytes)):
            raise MalformedMessage("engine frame with bad data")
        frame_kind = FrameKind(kind)
        if frame_kind is FrameKind.DATA and body is None:
            raise MalformedMessage("engine data frame without data")
        return cls(sid, frame_kind, body,
                   request_id_of(d, required=frame_kind is FrameKind.OPEN))
