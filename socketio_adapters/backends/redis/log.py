"""The Redis log driver: a stream, ``{channel}#log``, whose entry IDs are the record
keys (``ms-seq``, so offsets read ``1700000000000-3.0``); one entry per record, in a
field ``p``. See docs/backends/redis.md for the design."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import redis.exceptions

from ...storage import LogRecord, RecordKey
from .connections import RedisConnections
from .resp import RawConnection, command

__all__ = ["FIELD", "ID_MAX", "RedisLog", "entry_key", "keep_length", "previous_id",
           "record_body", "xadd", "xadd_head"]

ID_MAX = 2**64 - 1
"""The largest number in a stream entry ID."""
FIELD = b"p"
"""The one field of a log entry, holding its payload."""
_READ_COUNT = b"1000"
"""Log entries one XREAD returns at most."""
_TRIM_EVERY = 1.0
"""Seconds between two trims of the log by age (each costs one XTRIM in a pipeline)."""
_SLACK = 1000
"""Entries kept beyond ``max_length`` (at least): room for a live reader that lags
behind the writers, which would otherwise lose entries trimmed before it read them."""


def entry_key(entry_id: bytes) -> RecordKey:
    """The record key of a stream entry ID (``b"ms-seq"``)."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)


def record_body(fields: Any) -> bytes:
    """The payload of a stream entry (its fields as a flat list, or a map): field
    ``p``. An entry another client wrote without it reads as empty, which every node
    then drops as malformed, live and read back alike."""
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2], strict=False))
    body = fields.get(FIELD) if isinstance(fields, dict) else None
    return body if isinstance(body, bytes) else b""


def format_id(key: RecordKey) -> bytes:
    """The stream entry ID of a record key."""
    return b"%d-%d" % key


def previous_id(key: RecordKey | None) -> bytes:
    """The largest ID before ``key`` (``0-0`` for None or the start: no entry has that
    ID), to read from ``key`` included with XREAD, which starts after its ID."""
    if key is None:
        return b"0-0"
    ms, seq = key
    if seq > 0:
        return b"%d-%d" % (ms, seq - 1)
    if ms > 0:
        return b"%d-%d" % (ms - 1, ID_MAX)
    return b"0-0"


def keep_length(max_length: int) -> int:
    """The entries ``MAXLEN ~`` keeps: ``max_length`` and room for readers that lag."""
    return max_length + max(max_length, _SLACK)


def xadd_head(stream: bytes, keep: int) -> bytes:
    """XADD with its trimming, in RESP, up to the payload (see :func:`xadd`)."""
    empty = command(b"XADD", stream, b"MAXLEN", b"~", b"%d" % keep, b"*", FIELD, b"")
    return empty[:-len(b"$0\r\n\r\n")]


def xadd(head: bytes, payload: bytes) -> bytes:
    """The XADD that appends ``payload``, in RESP."""
    return b"%b$%d\r\n%b\r\n" % (head, len(payload), payload)


class RedisLog(RedisConnections):
    """Appends to, follows, reads back and trims the stream of the durable log."""

    log_key_parts: ClassVar[int] = 2
    log_key_max: ClassVar[int] = ID_MAX

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.log_key = f"{self.prefix}#log"
        self._log_key = self.log_key.encode()
        self._xadd = b""
        """XADD with its trimming, in RESP, up to the payload (set in ``_open``)."""
        self._server_ms: int | None = None
        """Redis's clock (ms) in the last entry ID it gave, and when (monotonic)."""
        self._server_ms_at = 0.0
        self._trimmed_at = -_TRIM_EVERY

    async def _open(self) -> None:
        await super()._open()
        if self.log is not None:
            self._xadd = xadd_head(self._log_key, keep_length(self.log.max_length))

    # ---------------------------------------------------------------- following

    async def _log_start(self, stream: RawConnection) -> RecordKey | None:
        """Where the live reader (re)starts, from the last record of the stream: its
        key, included, or None for the start of the stream."""
        last = await stream.call(b"XREVRANGE", self._log_key, b"+", b"-", b"COUNT", b"1")
        record = None
        if last:
            entry_id, fields = last[0]
            record = (entry_key(entry_id), record_body(fields))
        return self.log_reader.restart(record)

    async def _follow_log(self, stream: RawConnection, start: RecordKey | None) -> None:
        """Feed every record from ``start`` on, in order, as they are appended."""
        reader = self.log_reader
        key = self._log_key
        cursor = previous_id(start)
        watch = False
        while True:
            position = reader.position
            read = command(b"XREAD", b"COUNT", _READ_COUNT, b"BLOCK", b"0", b"STREAMS",
                           key, cursor)
            if watch and position is not None:
                # whether the position is still there, then (at once, atomically so)
                # what follows: if it is gone, records after it may have been trimmed
                # unread (the first read after a restart is the reader's to check)
                at = format_id(position.key)
                kept, reply = await stream.pipeline(command(b"XRANGE", key, at, at), read)
                if not kept:
                    self._warn_trimmed(position.key)
            else:
                (reply,) = await stream.pipeline(read)
            watch = True
            if not reply:
                continue
            # RESP3 answers with a map of streams, RESP2 with a list of pairs
            entries = reply[key] if isinstance(reply, dict) else reply[0][1]
            for entry_id, fields in entries:
                cursor = entry_id
                record = entry_key(entry_id)
                await reader.feed(record, record_body(fields), record[0])

    def _warn_trimmed(self, position: RecordKey) -> None:
        """Warn that records were trimmed before this node read them, unless
        ``position`` is older than the retention (then only it may be gone)."""
        log = self.log
        if log is not None and time.time() - position[0] / 1000 < log.retention:
            self.logger.warning(
                "log entries after %s were trimmed from %s before this node read them "
                "(it fell more than %d entries behind): they are lost for its clients",
                format_id(position).decode(), self.log_key, keep_length(log.max_length))

    # ---------------------------------------------------------------- appending

    def _append(self, payload: bytes) -> bytes:
        if not self._xadd:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        return xadd(self._xadd, payload)

    def _appended(self, replies: list[Any]) -> None:
        """Note Redis's clock from the IDs its XADDs returned (for trimming by age)."""
        ids = [reply for reply in replies if isinstance(reply, bytes)]  # XADD's only
        if ids:
            self._server_ms = entry_key(ids[-1])[0]
            self._server_ms_at = time.monotonic()

    def _trim(self) -> list[bytes]:
        """At most once per ``_TRIM_EVERY``: XTRIM the entries older than the retention
        (by Redis's clock, estimated from the last ID it gave; never too early) and
        let the whole stream expire once the newest entry is that old."""
        log, now = self.log, time.monotonic()
        if log is None or now - self._trimmed_at < _TRIM_EVERY:
            return []
        self._trimmed_at = now
        retention_ms = int(log.retention * 1000)
        out = [command(b"PEXPIRE", self._log_key,
                       b"%d" % (retention_ms + int(2000 * _TRIM_EVERY)))]
        if self._server_ms is not None:
            oldest = self._server_ms + int((now - self._server_ms_at) * 1000) - retention_ms
            if oldest > 0:
                out.append(command(b"XTRIM", self._log_key, b"MINID", b"~",
                                   b"%d" % oldest))
        return out

    # ---------------------------------------------------------------- reading back

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        low = format_id(first)
        high, limit = (low, 1) if first > last else (format_id(last), limit)
        entries = await self._require_client().xrange(self._log_key, low, high,
                                                      count=limit)
        records: list[LogRecord] = []
        for entry_id, fields in entries or ():
            if not isinstance(entry_id, bytes):
                raise redis.exceptions.DataError(
                    f"{self.log_key} answered an entry without an ID: {entry_id!r}")
            key = entry_key(entry_id)
            records.append(LogRecord(key, record_body(fields), key[0]))
        return records
