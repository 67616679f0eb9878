"""The records a node read last, kept in memory so that a restore reads its range
there instead of asking the broker (a stream consumer started for 1,000 records costs
RabbitMQ over 100 ms).

The live reader adds every record it feeds, in log order, so the window holds every
record of the log from its first to its last, with nothing in between left out. A
range is served from it only when it lies wholly inside (the first record of the
range at or after the window's first, its last at or before the window's last);
otherwise the broker answers, as without a window. The window is emptied whenever it
may stop matching the log: the reader restarts (a reconnect, a log created anew),
or the backend loses its connection; it starts again with the next record fed.

It is bounded by bytes, by entries (half the log's ``max_length``) and by age (half
the retention, by the record's append time where the broker keeps one), so what it
serves is what the broker must still hold; :func:`read_entries` applies the same
rules to its records as to the broker's.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass

from .offsets import RecordKey
from .ranges import FetchRange, LogRecord

__all__ = ["LogWindow"]


@dataclass(frozen=True)
class _Kept:
    record: LogRecord
    entries: int
    size: int


class LogWindow:
    """The last records of the log this node read, contiguous, bounded by
    ``max_bytes`` (their bodies), ``max_entries`` and ``max_age`` seconds."""

    def __init__(self, max_bytes: int, max_entries: int, max_age: float) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_age = max_age
        self._kept: deque[_Kept] = deque()
        self._bytes = 0
        self._entries = 0
        self.served = 0
        """Ranges read from the window."""

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def first(self) -> RecordKey | None:
        return self._kept[0].record.key if self._kept else None

    @property
    def last(self) -> RecordKey | None:
        return self._kept[-1].record.key if self._kept else None

    def clear(self) -> None:
        """Forget every record: the next one added starts the window anew."""
        self._kept.clear()
        self._bytes = self._entries = 0

    def add(self, key: RecordKey, body: bytes, entries: int,
            time_ms: int | None = None) -> None:
        """The record the reader feeds next (``entries`` entries, appended at
        ``time_ms`` where the broker tells, else now). A record at or before the last
        one is one the reader feeds again (a resumed read): ignored."""
        last = self.last
        if last is not None and key <= last:
            return
        now_ms = int(time.time() * 1000)
        stamp = now_ms if time_ms is None else min(time_ms, now_ms)
        kept = _Kept(LogRecord(key, body, stamp), entries, len(body))
        self._kept.append(kept)
        self._bytes += kept.size
        self._entries += entries
        while self._kept and (self._bytes > self.max_bytes
                              or self._entries > self.max_entries):
            self._drop_first()
        self._expire(now_ms)

    def fetch(self, first: RecordKey, last: RecordKey,
              limit: int) -> list[LogRecord] | None:
        """What the broker's fetch would answer (see ``storage.FetchRange``), or
        ``None`` when the range is not wholly in the window (ask the broker)."""
        self._expire(int(time.time() * 1000))
        kept = self._kept
        if not kept or first < kept[0].record.key:
            return None
        end = max(first, last)
        if end > kept[-1].record.key:
            return None
        index = bisect.bisect_left(kept, first, key=lambda k: k.record.key)
        if kept[index].record.key != first:
            return []  # not in the log: every record in this span is in the window
        out: list[LogRecord] = []
        for position in range(index, len(kept)):
            record = kept[position].record
            if out and (len(out) >= limit or record.key > end):
                break
            out.append(record)
        self.served += 1
        return out

    def over(self, fetch: FetchRange) -> FetchRange:
        """A fetch that reads from the window, and with ``fetch`` (the broker's) what
        is not wholly in it."""
        async def from_window(first: RecordKey, last: RecordKey,
                              limit: int) -> list[LogRecord] | None:
            kept = self.fetch(first, last, limit)
            return kept if kept is not None else await fetch(first, last, limit)
        return from_window

    def _expire(self, now_ms: int) -> None:
        oldest = now_ms - self.max_age * 1000
        while self._kept and (self._kept[0].record.time_ms or 0) < oldest:
            self._drop_first()

    def _drop_first(self) -> None:
        kept = self._kept.popleft()
        self._bytes -= kept.size
        self._entries -= kept.entries
