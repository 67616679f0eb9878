"""The frames nodes and the hub exchange over the hub's Unix domain socket: each
frame is one msgpack array whose first item says what it is.

From a node to the hub:

- ``[HELLO, node_id, subscribe, log, replica, last_key, rooms]``: who it is, whether
  it receives messages, and, when it keeps the log, its log settings ``[retention,
  max_length]`` and the key of the last record its copy holds; the room keys it
  subscribes to (optional);
- ``[PUBLISH, target, payload]`` to every other node (``target`` None) or one;
- ``[ROOMS, rid, keys]`` and ``[UNROOMS, rid, keys]``: (un)subscribe room keys,
  answered once done; ``[TO_ROOM, key, payload]`` to the other nodes subscribed to
  a room key;
- ``[APPEND, body]``: a log record;
- ``[SAVE, rid, pid, data, expires]`` and ``[TAKE, rid, pid]``: sessions.

From the hub to a node:

- ``[WELCOME, term, hub_pid, settings, records, sessions]``: the records after the
  node's last key (or all of them, when its copy is not of this log) and, for a
  node that keeps the log, the session table;
- ``[MESSAGE, payload]``, ``[RECORD, key, stamp, body]``;
- ``[REPLY, rid, value]``; ``[SESSION, pid, expires, data]`` and ``[GONE, pid]``
  keep every node's copy of the session table current.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterator
from typing import Any

import msgpack

__all__ = ["MAX_FRAME", "Frame", "FrameError", "FrameReader", "encode"]

class Frame(enum.IntEnum):
    """What a frame is (its first item)."""

    HELLO = 1
    PUBLISH = 2
    APPEND = 3
    SAVE = 4
    TAKE = 5
    SYNC = 6
    """Answered (REPLY) once the hub handled every frame sent before it."""
    ROOMS = 7
    UNROOMS = 8
    TO_ROOM = 9
    WELCOME = 10
    MESSAGE = 11
    RECORD = 12
    REPLY = 13
    SESSION = 14
    GONE = 15


MAX_FRAME = 1 << 30
"""Largest frame either side accepts (1 GiB); a larger one closes the connection."""
_READ_SIZE = 1 << 18


class FrameError(ConnectionError):
    """Bytes on the hub's socket that are not frames: the connection is closed."""


def encode(*items: Any) -> bytes:
    packed: bytes = msgpack.packb(items, use_bin_type=True)
    return packed


class FrameReader:
    """Reads frames from a stream, several per read when they are small."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_FRAME,
                                          strict_map_key=False)

    async def frames(self) -> list[list[Any]]:
        """The next frames; raises ``ConnectionResetError`` at the end of the stream
        and :class:`FrameError` on bytes that are not frames."""
        while True:
            data = await self._reader.read(_READ_SIZE)
            if not data:
                raise ConnectionResetError("the other end closed the connection")
            try:
                self._unpacker.feed(data)
            except msgpack.BufferFull:
                raise FrameError(f"a frame larger than {MAX_FRAME} bytes") from None
            out = list(self._items())
            if out:
                return out

    def _items(self) -> Iterator[list[Any]]:
        try:
            for item in self._unpacker:
                if not isinstance(item, list) or not item or not isinstance(item[0], int):
                    raise FrameError(f"not a frame: {type(item).__name__}")
                yield item
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise FrameError(f"malformed frame: {exc}") from None
