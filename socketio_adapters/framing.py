"""Framing: chunks and frames between the manager's payloads and broker messages.

- A payload larger than a broker's message limit is cut into chunks, each
  ``0xC1 0x01 | id (8 bytes) | index (4) | count (4) | body``, and joined on receipt.
  A broker keeps the order of one publisher's messages, so a receiver sees the chunks
  of one payload in order; chunks that stay incomplete for ``ttl`` seconds, or that
  exceed ``max_pending`` bytes in all, are dropped with a log line.
- Several small payloads for the same target, queued together, travel as one frame,
  ``0xC1 0x02 | (length (4) | payload)*``, so a burst costs a broker a few messages
  instead of thousands (per-message client overhead dominates some brokers' clients).

- The durable log packs entries into records with the same frame layout (see
  :mod:`socketio_adapters.storage.packing`).

0xC1 is the one byte msgpack never uses, so neither can be mistaken for an envelope.
A payload sent alone travels unchanged.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

__all__ = ["CHUNK", "FRAME", "FRAME_CAP", "FRAME_OVERHEAD", "ITEM_OVERHEAD", "MARKER",
           "Reassembler", "frame", "pack_frames", "split", "unpack_frame"]

MARKER = 0xC1
CHUNK = 0x01
FRAME = 0x02
FRAME_CAP = 64 * 1024
"""Largest frame of small payloads (a bigger payload travels alone)."""
_HEADER = struct.Struct(">BB8sII")
_FRAME_HEADER = bytes((MARKER, FRAME))
_LENGTH = struct.Struct(">I")


def split(payload: bytes, limit: int) -> list[bytes]:
    """``payload`` as one message, or as chunks of at most ``limit`` bytes."""
    if len(payload) <= limit:
        return [payload]
    body = limit - _HEADER.size
    if body <= 0:
        raise ValueError(f"message limit {limit} is too small to carry chunks")
    ident = os.urandom(8)
    count = (len(payload) + body - 1) // body
    view = memoryview(payload)
    return [_HEADER.pack(MARKER, CHUNK, ident, i, count) + view[i * body:(i + 1) * body]
            for i in range(count)]


def pack_frames(batch: Sequence[tuple[T, bytes]], limit: int | None,
                frame_cap: int = FRAME_CAP) -> list[tuple[T, bytes]]:
    """``batch`` with consecutive small payloads for the same target packed into
    frames of at most ``frame_cap`` bytes, and payloads over ``limit`` cut into
    chunks; order is kept."""
    cap = frame_cap if limit is None else min(frame_cap, limit)
    out: list[tuple[T, bytes]] = []
    group: list[bytes] = []
    group_target: T | None = None
    size = len(_FRAME_HEADER)

    def flush() -> None:
        if len(group) == 1:
            out.append((group_target, group[0]))  # type: ignore[arg-type]
        elif group:
            out.append((group_target, frame(group)))  # type: ignore[arg-type]
        group.clear()

    for target, payload in batch:
        item = _LENGTH.size + len(payload)
        if len(_FRAME_HEADER) + item > cap:
            flush()
            size = len(_FRAME_HEADER)
            chunks = [payload] if limit is None else split(payload, limit)
            out.extend((target, chunk) for chunk in chunks)
            continue
        if group and (target != group_target or size + item > cap):
            flush()
            size = len(_FRAME_HEADER)
        group.append(payload)
        group_target = target
        size += item
    flush()
    return out


def frame(payloads: Sequence[bytes]) -> bytes:
    """Several payloads as one frame (see :func:`unpack_frame`)."""
    parts = [_FRAME_HEADER]
    for payload in payloads:
        parts.append(_LENGTH.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


FRAME_OVERHEAD = len(_FRAME_HEADER)
"""Bytes of a frame's header."""
ITEM_OVERHEAD = _LENGTH.size
"""Bytes a frame adds per payload."""


def unpack_frame(frame: bytes) -> list[bytes] | None:
    """The payloads of a frame, or ``None`` when it is not a well-formed frame."""
    if frame[:2] != _FRAME_HEADER:
        return None
    payloads = []
    view = memoryview(frame)
    offset, end = 2, len(frame)
    while offset < end:
        if offset + _LENGTH.size > end:
            return None
        (length,) = _LENGTH.unpack_from(frame, offset)
        offset += _LENGTH.size
        if offset + length > end:
            return None
        payloads.append(bytes(view[offset:offset + length]))
        offset += length
    return payloads


class Reassembler:
    """Joins chunks back into payloads; passes anything else through."""

    def __init__(self, logger: logging.Logger, ttl: float = 60.0,
                 max_pending: int = 256 * 1024 * 1024) -> None:
        self.logger = logger
        self.ttl = ttl
        self.max_pending = max_pending
        self._parts: dict[bytes, tuple[float, int, list[bytes]]] = {}
        self._pending = 0
        self.dropped = 0

    def feed(self, payload: bytes) -> bytes | None:
        """The whole payload when ``payload`` completes one (or is not a chunk); None
        while one is incomplete. A chunk out of sequence, or with a malformed header,
        comes back as itself (logged here): it is no envelope, so the manager counts
        it as malformed."""
        if not payload or payload[0] != MARKER or len(payload) < _HEADER.size:
            return payload
        _, kind, ident, index, count = _HEADER.unpack_from(payload)
        if kind != CHUNK:
            return payload
        body = payload[_HEADER.size:]
        started, _, parts = self._parts.get(ident, (time.monotonic(), count, []))
        if index != len(parts) or count == 0 or index >= count:
            # out of order or a malformed header: not ours to guess; the manager
            # counts and drops what it cannot decode
            self._forget(ident)
            self._drop(f"chunk {index}/{count} out of sequence")
            return payload
        parts.append(body)
        self._pending += len(body)
        if len(parts) == count:
            self._parts.pop(ident, None)  # absent when the payload was one chunk
            self._pending -= sum(len(p) for p in parts)
            return b"".join(parts)
        self._parts[ident] = (started, count, parts)
        self._expire()
        return None

    def _forget(self, ident: bytes) -> None:
        entry = self._parts.pop(ident, None)
        if entry is not None:
            self._pending -= sum(len(p) for p in entry[2])

    def _expire(self) -> None:
        deadline = time.monotonic() - self.ttl
        for ident, (started, _, _) in list(self._parts.items()):
            if started < deadline or self._pending > self.max_pending:
                self._forget(ident)
                self._drop("incomplete chunked message expired or over the memory cap")

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self.logger.warning("dropped a chunked message (%d so far): %s", self.dropped, why)
