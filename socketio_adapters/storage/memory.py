"""A durable log and a session table kept in memory: the storage of the backends
that have no broker (``memory://`` in one process, the hub of ``local://`` and each
node's replica of it).

Records are numbered by a sequence without gaps (1, 2, 3, ...), so a record is
found by arithmetic; the log's record key is a fixed prefix (e.g. the log's epoch)
followed by the sequence number.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .offsets import RecordKey
from .ranges import LogRecord

__all__ = ["MemoryLog", "MemorySessions", "StoredRecord"]


@dataclass(frozen=True)
class StoredRecord:
    key: RecordKey
    """Ends with the record's sequence number; increases along the log."""
    stamp: int
    """Wall-clock milliseconds when it was appended."""
    body: bytes

    @property
    def seq(self) -> int:
        return self.key[-1]


class MemoryLog:
    """Records in order, numbered ``prefix + (seq,)``, trimmed by age and length.

    The prefix may change along the log (``local://`` puts the term of the hub that
    appended a record there), as long as keys keep increasing; the sequence numbers
    have no gaps, so a record is found by arithmetic.
    """

    def __init__(self, prefix: RecordKey = ()) -> None:
        self.prefix = prefix
        self.records: deque[StoredRecord] = deque()
        self.next_seq = 1

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[StoredRecord]:
        return iter(self.records)

    def append(self, body: bytes, retention: float, max_length: int) -> StoredRecord:
        """Append ``body`` now, as the next record; trim what is older and further
        back than the log keeps."""
        record = StoredRecord((*self.prefix, self.next_seq), int(time.time() * 1000), body)
        self.add(record)
        self.trim(retention, max_length)
        return record

    def add(self, record: StoredRecord) -> bool:
        """Add a record numbered elsewhere (a replica). A record that does not follow
        the last one (a gap: this copy missed some) empties the copy first; one that
        replaces records of an older key (their appender was lost) drops those.
        Returns False for a record it holds already."""
        seq = record.seq
        if seq < self.next_seq:
            held = self._at(seq)
            if held is not None and held.key == record.key:
                return False
            while self.records and self.records[-1].seq >= seq:
                self.records.pop()
        elif seq != self.next_seq:
            self.records.clear()
        if self.records and self.records[-1].key >= record.key:
            self.records.clear()  # keys must increase: this copy belongs to another log
        self.records.append(record)
        self.next_seq = seq + 1
        return True

    def _at(self, seq: int) -> StoredRecord | None:
        records = self.records
        if not records:
            return None
        index = seq - records[0].seq
        return records[index] if 0 <= index < len(records) else None

    def trim(self, retention: float, max_length: int) -> None:
        """Drop the records beyond ``max_length`` and older than ``retention``."""
        oldest = int((time.time() - retention) * 1000)
        records = self.records
        while records and (len(records) > max_length or records[0].stamp < oldest):
            records.popleft()

    def last(self) -> tuple[RecordKey, bytes] | None:
        """The last record's key and body (what ``LogReader.restart`` asks for)."""
        if not self.records:
            return None
        record = self.records[-1]
        return record.key, record.body

    def after(self, key: RecordKey | None) -> list[StoredRecord] | None:
        """The records after ``key`` (all of them for ``None``), or None when this
        log does not hold ``key``."""
        if key is None:
            return list(self.records)
        held = self._at(key[-1])
        if held is None or held.key != key:
            return None
        return list(itertools.islice(self.records, key[-1] - self.records[0].seq + 1,
                                     None))

    def from_key(self, key: RecordKey | None) -> list[StoredRecord]:
        """The records from ``key`` on, included, in order (all for ``None``)."""
        if key is None:
            return list(self.records)
        return [r for r in self.records if r.key >= key]

    def fetch(self, first: RecordKey, last: RecordKey, limit: int) -> list[LogRecord] | None:
        """``Backend.fetch_log`` on this log (see ``storage.FetchRange``)."""
        held = self._at(first[-1])
        if held is None or held.key != first:
            return None
        begin = first[-1] - self.records[0].seq
        out: list[LogRecord] = []
        for record in itertools.islice(self.records, begin, None):
            if out and (len(out) >= limit or record.key > last):
                break
            out.append(LogRecord(record.key, record.body, record.stamp))
        return out


class MemorySessions:
    """Session records with a wall-clock expiry; taking one removes it."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[float, bytes]] = {}

    def save(self, pid: str, data: bytes, expires: float) -> None:
        """Keep ``data`` under ``pid`` until ``expires`` (``time.time()`` seconds)."""
        self.purge()
        self.records[pid] = (expires, data)

    def take(self, pid: str) -> bytes | None:
        record = self.records.pop(pid, None)
        if record is None or record[0] <= time.time():
            return None
        return record[1]

    def purge(self) -> None:
        now = time.time()
        for pid in [p for p, (expires, _) in self.records.items() if expires <= now]:
            del self.records[pid]
