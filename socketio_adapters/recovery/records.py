"""What a lost socket leaves behind, and its private session id."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import MalformedMessage
from ..protocol import Broadcast, Message, MessageType

__all__ = ["SessionRecord", "matches", "new_pid"]


@dataclass
class SessionRecord:
    """What a lost socket leaves behind for its restore."""

    sid: str
    pid: str
    nsp: str
    rooms: list[str]
    data: Any
    expires: float
    """Wall-clock time (``time.time()``) after which it cannot be restored."""

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb(
            {"sid": self.sid, "pid": self.pid, "nsp": self.nsp, "rooms": self.rooms,
             "data": self.data, "expires": self.expires}, use_bin_type=True)
        return packed

    def as_data(self) -> dict[str, Any]:
        return {"sid": self.sid, "pid": self.pid, "rooms": self.rooms, "data": self.data,
                "expires": self.expires}

    @classmethod
    def from_data(cls, nsp: str, raw: Any) -> SessionRecord:
        if not isinstance(raw, dict):
            raise MalformedMessage("session record is not a map")
        sid, pid, rooms = raw.get("sid"), raw.get("pid"), raw.get("rooms")
        expires = raw.get("expires")
        if not isinstance(sid, str) or not isinstance(pid, str):
            raise MalformedMessage("session record without sid or pid")
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise MalformedMessage("session record with bad rooms")
        if not isinstance(expires, int | float):
            raise MalformedMessage("session record without expiry")
        return cls(sid, pid, nsp, rooms, raw.get("data"), float(expires))

    @classmethod
    def unpack(cls, payload: bytes) -> SessionRecord:
        try:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated classes
            raise MalformedMessage(f"session record is not msgpack: {exc!r}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("nsp"), str):
            raise MalformedMessage("session record without namespace")
        return cls.from_data(raw["nsp"], raw)

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires


def matches(message: Message, nsp: str, rooms: set[str],
            repeats: Repeats | None = None) -> bool:
    """Whether a logged broadcast would have reached a socket of ``nsp`` in ``rooms``
    (its own sid included), and is no repeat; False for anything else, malformed
    included."""
    if message.type is not MessageType.BROADCAST or message.nsp != nsp:
        return False
    try:
        event = Broadcast.from_wire(message.data)
    except MalformedMessage:
        return False
    if repeats is not None and repeats.repeated(message.uid, event):
        return False
    return event.target.matches(rooms)


class Repeats:
    """Log entries appended twice: a publish the broker took but whose answer was
    lost is sent again. Each sender numbers its events (:attr:`Broadcast.seq`) in
    the order it appends them, so a number not above the last one seen from that
    sender is a repeat."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self.count = 0
        """Repeats seen."""

    def repeated(self, uid: str, event: Broadcast) -> bool:
        seq = event.seq
        if seq is None:
            return False
        last = self._last.get(uid)
        if last is not None and seq <= last:
            self.count += 1
            return True
        self._last[uid] = seq
        return False


def new_pid() -> str:
    """A private session id: only its client knows it, so only it can restore."""
    return secrets.token_urlsafe(18)
