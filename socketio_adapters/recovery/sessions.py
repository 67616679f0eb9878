"""Where lost sessions are kept: the backend's session store, or, on a backend
without one, the durable log itself (see :mod:`.log_sessions`). Both take a session
at most once and fix the restore's boundary: the log position from which the
restore's tail carries on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import MalformedMessage
from ..protocol import Message
from ..storage import SessionStore
from .ports import DurableLog
from .records import SessionRecord
from .tails import Tail, Tails

__all__ = ["SessionSource", "StoreSessions", "Taken"]


@dataclass
class Taken:
    """A session taken for a restore: the boundary and the tail that starts there,
    and the record when the store gave it (from the log, it is found while reading)."""

    boundary: str | None
    tail: Tail
    record: SessionRecord | None = None
    nonce: str = ""


class SessionSource(Protocol):
    async def save(self, record: SessionRecord, ttl: float) -> None: ...

    async def take(self, nsp: str, pid: str) -> Taken | None: ...

    def settle(self, taken: Taken, entries: list[tuple[str, Message]], nsp: str,
               pid: str) -> SessionRecord | None:
        """The record restored, given the log entries up to the boundary."""

    async def put_back(self, record: SessionRecord) -> None:
        """Keep a taken session again (its restore could not read the log)."""

    def observe(self, offset: str, message: Message) -> None:
        """Every log entry, as it is delivered."""


class StoreSessions:
    """Sessions in the backend's session store."""

    def __init__(self, store: SessionStore, log: DurableLog, tails: Tails,
                 drop: Callable[[str], None], logger: logging.Logger) -> None:
        self.store = store
        self.log = log
        self.tails = tails
        self.drop = drop
        self.logger = logger

    async def save(self, record: SessionRecord, ttl: float) -> None:
        await self.store.save_session(record.pid, record.pack(), ttl)

    async def take(self, nsp: str, pid: str) -> Taken | None:
        raw = await self.store.take_session(pid)
        if raw is None:
            return None
        try:
            record = SessionRecord.unpack(raw)
        except MalformedMessage as exc:
            self.drop(f"saved session {pid!r}: {exc}")
            return None
        if record.nsp != nsp or record.pid != pid or record.expired:
            return None
        # no await between reading the position and opening the tail
        return Taken(self.log.log_position, self.tails.open(), record)

    def settle(self, taken: Taken, entries: list[tuple[str, Message]], nsp: str,
               pid: str) -> SessionRecord | None:
        return taken.record

    async def put_back(self, record: SessionRecord) -> None:
        left = record.expires - time.time()
        if left <= 0:
            return
        try:
            await self.store.save_session(record.pid, record.pack(), left)
        except Exception as exc:
            self.logger.warning("could not keep session %s after a failed restore: %s",
                                record.sid, exc)

    def observe(self, offset: str, message: Message) -> None:
        pass
