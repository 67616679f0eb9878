"""Splitting payloads that are larger than a broker's message limit, and joining them.

A payload within the limit travels unchanged. A larger one is cut into chunks, each
``0xC1 | id (8 bytes) | index (4) | count (4) | body``; 0xC1 is the one byte msgpack
never uses, so a chunk can never be mistaken for an envelope. A broker keeps the order
of one publisher's messages, so a receiver sees the chunks of one payload in order;
chunks that stay incomplete for ``ttl`` seconds, or that exceed ``max_pending`` bytes
in all, are dropped with a log line.
"""

from __future__ import annotations

import logging
import os
import struct
import time

__all__ = ["MARKER", "Reassembler", "split"]

MARKER = 0xC1
_HEADER = struct.Struct(">B8sII")


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
    return [_HEADER.pack(MARKER, ident, i, count) + view[i * body:(i + 1) * body]
            for i in range(count)]


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
        """The whole payload when ``payload`` completes one (or is not a chunk)."""
        if not payload or payload[0] != MARKER or len(payload) < _HEADER.size:
            return payload
        _, ident, index, count = _HEADER.unpack_from(payload)
        body = payload[_HEADER.size:]
        started, _, parts = self._parts.get(ident, (time.monotonic(), count, []))
        if index != len(parts) or count == 0 or index >= count:
            # out of order or a malformed header: not ours to guess; the manager
            # logs and drops what it cannot decode
            self._forget(ident)
            self._drop(f"chunk {index}/{count} out of sequence")
            return None
        parts.append(body)
        self._pending += len(body)
        if len(parts) == count:
            del self._parts[ident]
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
