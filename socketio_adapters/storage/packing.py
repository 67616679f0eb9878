"""Consecutive log entries packed into one record, so a burst costs a broker a few
records instead of thousands, while each entry keeps its own offset.

A packed record is a frame (the layout of :mod:`socketio_adapters.framing`); a lone
entry, or one too large to share a record, is stored as itself. Reading is
deterministic, so every node numbers the entries of a record the same way: a body
that is a well-formed frame holds its payloads, anything else is one entry (an
envelope is msgpack, which never starts with the frame marker 0xC1).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..framing import FRAME_OVERHEAD, ITEM_OVERHEAD, frame, unpack_frame

__all__ = ["LOG_RECORD_ENTRIES", "entries_of", "pack_entries"]

LOG_RECORD_ENTRIES = 1024
"""Most entries packed into one record."""


def pack_entries(payloads: Sequence[bytes], cap: int,
                 max_entries: int = LOG_RECORD_ENTRIES) -> list[bytes]:
    """Record bodies for ``payloads``, in order: runs of them as frames of at most
    ``cap`` bytes and ``max_entries`` entries; one alone travels as itself."""
    out: list[bytes] = []
    group: list[bytes] = []
    size = FRAME_OVERHEAD

    def flush() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            out.append(frame(group))
        group.clear()

    for payload in payloads:
        item = ITEM_OVERHEAD + len(payload)
        if group and (size + item > cap or len(group) >= max_entries):
            flush()
            size = FRAME_OVERHEAD
        group.append(payload)
        size += item
    flush()
    return out


def entries_of(body: bytes) -> list[bytes]:
    """The entries of one record body."""
    entries = unpack_frame(body)
    return entries if entries else [body]
