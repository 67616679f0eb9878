"""Reading the log back: the entries between two offsets, once, in order, bounded.

A backend fetches records by key (:data:`FetchRange`); this module turns them into
entries and applies every rule once: an offset that is not this log's, or names an
entry that is gone, reads as ``None``; so does one older than the retention, or with
``max_length`` entries or more after it (a client that far behind gets a fresh
session). An offset beyond this node's position (a client that came from a node
further ahead) reads as no entries, as long as that entry is in the log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .offsets import OffsetCodec, RecordKey
from .packing import entries_of

__all__ = ["FetchRange", "LogRecord", "read_entries"]


@dataclass(frozen=True)
class LogRecord:
    """One record of the log, as a backend reads it back."""

    key: RecordKey
    body: bytes
    time_ms: int | None = None
    """When it was appended (milliseconds since the epoch), where the broker keeps
    it: a record older than the retention is not read back."""


FetchRange = Callable[[RecordKey, RecordKey, int], Awaitable[list[LogRecord] | None]]
"""``fetch(first, last, limit)``: the records with ``first <= key <= last``, in
order, at most ``limit`` of them (None or an empty list when there are none). With
``first > last`` it returns the record ``first`` if the log holds it (waiting briefly
for it, where the broker needs that)."""


SHORT_READS = 3
"""Fetches of a range that stop short of its end (a broker answering from a stale
high watermark) tried again before the range reads as not in the log."""


async def _fetch_through(fetch: FetchRange, first: RecordKey, last: RecordKey,
                         limit: int) -> list[LogRecord] | None:
    """The records ``first..last``, every one up to ``last``: the log holds ``last``
    (a position this node delivered), so a fetch that stops short of it, under its
    limit, missed records; it is continued, and past :data:`SHORT_READS` the range
    reads as None (not in the log: a fresh session), never as "nothing missed",
    which would lose events."""
    records = await fetch(first, last, limit)
    for _ in range(SHORT_READS):
        if not records or records[-1].key >= last or len(records) >= limit:
            return records
        more = await fetch(records[-1].key, last, limit - len(records) + 1)
        if more and more[0].key == records[-1].key:
            more = more[1:]
        records = [*records, *(more or [])]
    if records and records[-1].key < last and len(records) < limit:
        return None
    return records


async def read_entries(fetch: FetchRange, codec: OffsetCodec, after: str,
                       upto: str | None, retention: float,
                       max_length: int) -> list[tuple[str, bytes]] | None:
    """The entries with ``after < offset <= upto``, in log order, or ``None`` when
    ``after`` names no entry of the log (any longer), is older than ``retention``
    seconds, or has ``max_length`` entries or more after it up to ``upto``.
    ``upto`` is a position this node delivered (None: the log was empty when it
    began, so nothing can be read)."""
    start = codec.parse(after)
    end = None if upto is None else codec.parse(upto)
    if start is None or end is None:
        return None
    if start.key > end.key:
        records = await fetch(start.key, end.key, 1)
    else:
        records = await _fetch_through(fetch, start.key, end.key, max_length + 1)
    if not records or records[0].key != start.key:
        return None
    first = records[0]
    if first.time_ms is not None and first.time_ms < (time.time() - retention) * 1000:
        return None
    items = entries_of(first.body)
    if start.index >= len(items):
        return None
    if start >= end:
        return []  # at or ahead of this node's position: nothing up to it
    out: list[tuple[str, bytes]] = []
    for record in records:
        if record.key > end.key:
            break
        items = entries_of(record.body) if record is not first else items
        begin = start.index + 1 if record is first else 0
        stop = min(len(items), end.index + 1) if record.key == end.key else len(items)
        out.extend((codec.format(record.key, i), items[i]) for i in range(begin, stop))
        if len(out) >= max_length:
            return None
    return out
