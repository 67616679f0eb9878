"""The live reader of one node's durable log.

A backend follows its log however its broker allows (a blocking read, a consumer, a
notification), and hands every record it gets to :meth:`LogReader.feed`, which
delivers the record's entries once each, in order, with their offsets. Before each
(re)start the backend asks :meth:`LogReader.restart` where to begin:

- the first time, at the end of the log: the position becomes the last entry of
  the last record, so the node delivers what is appended from then on;
- after a reconnect, at the record of its position (included: ``feed`` skips what
  was delivered already, so no entry is lost or repeated, even when a record was
  only partly delivered);
- when the log no longer holds the position (the broker lost its data, or the log
  was created anew), at the start of the log, with a warning.

A record the reader resumed at that is gone by the time the backend reads (trimmed
while the node was away) is reported once, with what the node missed.

With a :class:`~.window.LogWindow`, every record fed is also kept there, and a
restart empties it (see :mod:`.window`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from .offsets import Offset, OffsetCodec, RecordKey
from .packing import entries_of
from .window import LogWindow

__all__ = ["DeliverLog", "LogReader", "LogSettings"]

DeliverLog = Callable[[str, bytes], Awaitable[None]]
"""Receives log entries: ``(offset, payload)``, in log order."""


@dataclass(frozen=True)
class LogSettings:
    """How the durable log is kept, set by the manager through ``enable_log``."""

    deliver: DeliverLog | None
    """Receives every entry appended after start, or None for an emitter."""
    retention: float
    """Seconds an entry must stay readable; older entries may be trimmed."""
    max_length: int
    """Entries kept at least; a read further back than this many entries fails."""
    cache_bytes: int = 0
    """Bytes of the records read last that the node keeps for restores (0: none;
    see :mod:`.window`)."""


class LogReader:
    """Where one node stands in the log, and the entries it delivers from it."""

    def __init__(self, codec: OffsetCodec, deliver: DeliverLog | None,
                 logger: logging.Logger, where: str,
                 window: LogWindow | None = None) -> None:
        self.codec = codec
        self.deliver = deliver
        self.logger = logger
        self.where = where
        self.position: Offset | None = None
        """The last entry delivered, or, before the first one, the last entry of the
        log when the reader first started (None: the log was empty)."""
        self.highest: RecordKey | None = None
        """The highest record key seen (a backend that must create its log anew
        numbers on after it, so that old offsets never name new entries)."""
        self.failures = 0
        """Entries whose delivery raised (logged, then skipped)."""
        self.window = window
        """The records fed last, for restores (None: none kept)."""
        self._begun = False
        self._epoch: Hashable = None
        self._resumed_at: RecordKey | None = None

    @property
    def offset(self) -> str | None:
        """The position as an offset string (what ``Backend.log_position`` says)."""
        position = self.position
        if position is None:
            return None
        return self.codec.format(position.key, position.index)

    def restart(self, last: tuple[RecordKey, bytes] | None,
                epoch: Hashable = None) -> RecordKey | None:
        """Where to (re)start following the log, given its last record now (its key
        and body) and, where the broker can tell, the identity of the log (another
        identity means it was created anew). Returns the key of the first record to
        read, included, or None for the start of the log."""
        if self.window is not None:
            self.window.clear()  # what is fed next may not follow what it holds
        if last is not None:
            self._see(last[0])
        if not self._begun:
            self._begun, self._epoch = True, epoch
            if last is None:
                self.position = None
                return None
            key, body = last
            self.position = Offset(key, len(entries_of(body)) - 1)
            return key
        position = self.position
        lost = (epoch is not None and self._epoch is not None and epoch != self._epoch)
        self._epoch = epoch if epoch is not None else self._epoch
        if position is not None and (lost or last is None or last[0] < position.key):
            self.logger.warning(
                "%s: the log no longer holds position %s (the broker lost its data, or "
                "the log was created anew): reading it from its start", self.where,
                self.offset)
            self.position = None
            self._resumed_at = None
            return None
        self._resumed_at = None if position is None else position.key
        return self._resumed_at

    async def feed(self, key: RecordKey, body: bytes, time_ms: int | None = None) -> None:
        """Deliver the entries of the record ``key`` that follow the position
        (``time_ms``: when it was appended, where the broker tells)."""
        self._see(key)
        position = self.position
        skip = 0
        if position is not None:
            if key < position.key:
                return  # delivered already (a replaced reader, or a resumed read)
            if key == position.key:
                skip = position.index + 1
        resumed, self._resumed_at = self._resumed_at, None
        if resumed is not None and key != resumed and (position is None
                                                       or key > position.key):
            self.logger.warning(
                "%s: record %s was trimmed from the log before this node read on from "
                "it: entries up to %s are lost for its clients", self.where,
                "-".join(map(str, resumed)), "-".join(map(str, key)))
        entries = entries_of(body)
        if self.window is not None:  # before any delivery: a restore may read it then
            self.window.add(key, body, len(entries), time_ms)
        deliver = self.deliver
        for index in range(skip, len(entries)):
            # the position moves before the entry is handed over: a delivery that
            # fails is not repeated after a reconnect
            self.position = Offset(key, index)
            if deliver is None:
                continue
            try:
                await deliver(self.codec.format(key, index), entries[index])
            except Exception:
                self.failures += 1
                self.logger.exception("%s: delivering log entry %s failed", self.where,
                                      self.offset)

    def _see(self, key: RecordKey) -> None:
        if self.highest is None or key > self.highest:
            self.highest = key
