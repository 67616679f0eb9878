"""The durable log and the session store under connection state recovery, written
once over a small driver that each backend implements.

- :mod:`.offsets`: what an offset is (a record's key and an entry's index in it) and
  its one text form, parsed strictly.
- :mod:`.packing`: consecutive entries packed into one record, and read back.
- :mod:`.reader`: the live reader of one node: where it starts (the end of the log
  the first time, right after its position on a reconnect, the start of a log that
  was lost), and each entry once, in order, with its offset.
- :mod:`.ranges`: reading back the entries between two offsets, bounded by the
  log's age and length.
- :mod:`.window`: the records a node read last, kept in memory, from which a range
  is read when it lies wholly inside.
- :mod:`.sessions`: the session store interface and record expiry stamps.
- :mod:`.memory`: a log and a session table kept in memory (the backends with no
  broker).

A backend's part (its *driver*) is small: append records, follow the log from a
record key, fetch the records between two keys, and tell the last record.
"""

from .memory import MemoryLog, MemorySessions, StoredRecord
from .offsets import Offset, OffsetCodec, RecordKey
from .packing import LOG_RECORD_ENTRIES, entries_of, pack_entries
from .ranges import FetchRange, LogRecord, read_entries
from .reader import DeliverLog, LogReader, LogSettings
from .sessions import SessionStore, stamp_expiry, unstamp_expiry
from .window import LogWindow

__all__ = [
    "LOG_RECORD_ENTRIES",
    "DeliverLog",
    "FetchRange",
    "LogReader",
    "LogRecord",
    "LogSettings",
    "LogWindow",
    "MemoryLog",
    "MemorySessions",
    "Offset",
    "OffsetCodec",
    "RecordKey",
    "SessionStore",
    "StoredRecord",
    "entries_of",
    "pack_entries",
    "read_entries",
    "stamp_expiry",
    "unstamp_expiry",
]
