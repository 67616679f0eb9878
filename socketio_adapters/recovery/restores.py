"""Connection state recovery on one node: offsets, saved sessions, restores.

When recovery is on, every event for clients that needs no ack is appended to the
durable log, and every node (the sender too) delivers it when it reads it back, with
the log offset appended as the event's last argument. So all nodes deliver the same
events in the same order with the same offsets, and a client's last offset says
exactly where it stopped.

A restore on any node:

1. takes the saved session (atomically, so it restores once) and, at that same
   moment, notes its log position ``P`` (the boundary) and opens a *tail*: every entry
   it delivers from then on is also kept for the restore (see :mod:`.sessions`);
2. reads the entries after the client's offset up to ``P`` from the log;
3. registers the socket (held: live deliveries skip it) and sends CONNECT
   (:meth:`Recovery.begin`); then (:meth:`Recovery.replay`, which the server runs
   as its own task, so that the request that carried CONNECT is answered at once)
   sends the missed events from the log, then the tail, and releases the hold when
   the tail is empty, all in order, so the client gets each event once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..errors import MalformedMessage
from ..protocol import Broadcast, Message, decode
from ..storage import SessionStore
from .log_sessions import LogSessions
from .options import RecoveryOptions
from .ports import DurableLog, LocalSockets, LogAppender
from .records import Repeats, SessionRecord, matches
from .sessions import SessionSource, StoreSessions, Taken
from .tails import Restore, Tail, Tails

__all__ = ["Recovery"]


class Recovery:
    """The recovery state of one node."""

    def __init__(self, options: RecoveryOptions, local: LocalSockets, log: DurableLog,
                 sessions: SessionSource, tails: Tails, timeout: float,
                 logger: logging.Logger) -> None:
        self.options = options
        self.local = local
        self.log = log
        self.sessions = sessions
        self.tails = tails
        self.timeout = timeout
        self.logger = logger
        self.held: set[str] = set()
        """Sids being restored: live deliveries skip them (their tail carries on)."""
        self.saved = 0
        self.restored = 0

    @classmethod
    def build(cls, options: RecoveryOptions, uid: str, log: DurableLog,
              store: SessionStore | None, local: LocalSockets, appender: LogAppender,
              drop: Callable[[str], None], timeout: float,
              logger: logging.Logger) -> Recovery:
        """Recovery over ``log``, keeping sessions in ``store``, or in the log itself
        when there is none."""
        tails = Tails()
        sessions: SessionSource
        if store is not None:
            sessions = StoreSessions(store, log, tails, drop, logger)
        else:
            sessions = LogSessions(uid, appender, tails, timeout, logger)
        return cls(options, local, log, sessions, tails, timeout, logger)

    def observe(self, offset: str, message: Message) -> None:
        """Every log entry, before this node delivers it."""
        self.tails.add(offset, message)
        self.sessions.observe(offset, message)

    async def save(self, record: SessionRecord) -> None:
        """Keep a lost socket's session for ``max_disconnection_duration``."""
        await self.sessions.save(record, self.options.max_disconnection_duration)
        self.saved += 1

    async def take(self, nsp: str, pid: str, offset: str) -> Restore | None:
        """Take the session ``pid`` for restoring, with the events it missed after
        ``offset``; ``None`` (a fresh session) when there is none, it expired, it was
        restored already, or ``offset`` is no longer in the log."""
        taken = await self.sessions.take(nsp, pid)
        if taken is None:
            return None
        try:
            restore = await self._collect(nsp, pid, offset, taken)
        except Exception:
            self.close(taken.tail)
            if taken.record is not None:  # the log could not be read: keep the session
                await self.sessions.put_back(taken.record)
            raise
        except BaseException:
            self.close(taken.tail)
            raise
        if restore is None:
            self.close(taken.tail)
        return restore

    async def _collect(self, nsp: str, pid: str, offset: str,
                       taken: Taken) -> Restore | None:
        entries = await self.log.read_log(offset, taken.boundary)
        if entries is None:
            return None
        decoded: list[tuple[str, Message]] = []
        for entry_offset, payload in entries:
            try:
                decoded.append((entry_offset, decode(payload)))
            except MalformedMessage:
                continue  # counted when it was delivered live
        record = self.sessions.settle(taken, decoded, nsp, pid)
        if record is None:
            return None
        rooms = {record.sid, *record.rooms}
        repeats = Repeats()
        missed = [(o, m) for o, m in decoded if matches(m, nsp, rooms, repeats)]
        # the client's offset is in the log but beyond this node's position: it saw
        # entries this node has yet to read, which will arrive in the tail
        ahead = offset if not entries and offset != taken.boundary else None
        return Restore(record, missed, taken.tail, ahead)

    def close(self, tail: Tail) -> None:
        self.tails.close(tail)

    async def begin(self, restore: Restore, eio_sid: str,
                    announce: Callable[[], Awaitable[None]]) -> None:
        """Register the restored socket, held (live deliveries skip it: they go to
        its tail), and ``announce`` it (the CONNECT packet). Then :meth:`replay` must
        follow; if ``announce`` fails, the hold is released here."""
        record = restore.record
        self.local.register(record.sid, record.nsp, eio_sid, record.rooms)
        self.held.add(record.sid)
        try:
            await announce()
        except BaseException:
            self._release(restore)
            raise

    async def replay(self, restore: Restore, eio_sid: str) -> None:
        """Send a begun restore's missed events, then its tail, then let live
        deliveries reach the socket: each event once, in log order. ConnectionError
        when the client went away meanwhile."""
        record = restore.record
        nsp, sid = record.nsp, record.sid
        local = self.local
        try:
            rooms = {sid, *record.rooms}
            for offset, message in restore.missed:
                await self._send(eio_sid, message, offset)
            tail = restore.tail
            if restore.seen_up_to is not None:
                await self._skip_seen(tail, restore.seen_up_to)
            while tail.entries:
                offset, message = tail.entries.popleft()
                if matches(message, nsp, local.rooms_of(sid, nsp) or rooms):
                    await self._send(eio_sid, message, offset)
        finally:
            self._release(restore)
        self.restored += 1

    def _release(self, restore: Restore) -> None:
        self.held.discard(restore.record.sid)
        self.close(restore.tail)

    async def _send(self, eio_sid: str, message: Message, offset: str) -> None:
        event = Broadcast.from_wire(message.data)
        await self.local.send_event(eio_sid, message.nsp, [*event.packet, offset])

    async def _skip_seen(self, tail: Tail, seen: str) -> None:
        """Drop tail entries up to ``seen`` (the client has them), waiting for this
        node to read that far (at most ``timeout``)."""
        deadline = time.monotonic() + self.timeout
        while True:
            while tail.entries:
                offset, _ = tail.entries.popleft()
                if offset == seen:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                self.logger.warning(
                    "restore: this node did not reach offset %s within %ss; the client "
                    "may get events again", seen, self.timeout)
                return
            tail.wake.clear()
            try:
                await asyncio.wait_for(tail.wake.wait(), left)
            except asyncio.TimeoutError:
                continue
