"""Sessions kept in the durable log, for backends without a session store.

A lost socket's session is appended to the log (SESSION_SAVE). A node restoring it
appends a claim (SESSION_CLAIM) with a nonce of its own and waits to read the claim
back: that position is the restore's boundary, and the first claim after the saved
record wins, since every node reads the log in one order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from ..errors import MalformedMessage
from ..protocol import Message, MessageType, SessionClaim
from .ports import LogAppender
from .records import SessionRecord
from .sessions import Taken
from .tails import Tail, Tails

__all__ = ["LogSessions", "claimed"]


class LogSessions:
    """Sessions saved and claimed through the log."""

    def __init__(self, uid: str, appender: LogAppender, tails: Tails, timeout: float,
                 logger: logging.Logger) -> None:
        self.uid = uid
        self.appender = appender
        self.tails = tails
        self.timeout = timeout
        self.logger = logger
        self._claims: dict[str, asyncio.Future[tuple[str, Tail]]] = {}

    async def save(self, record: SessionRecord, ttl: float) -> None:
        await self.appender.append_and_wait(MessageType.SESSION_SAVE, record.nsp,
                                            record.as_data())

    async def take(self, nsp: str, pid: str) -> Taken | None:
        nonce = secrets.token_hex(8)
        future: asyncio.Future[tuple[str, Tail]] = asyncio.get_running_loop().create_future()
        self._claims[nonce] = future
        self.appender.append(MessageType.SESSION_CLAIM, nsp, SessionClaim(pid, nonce))
        try:
            boundary, tail = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            self._claims.pop(nonce, None)
            self.logger.warning("restore of a session in %s: our claim did not come back "
                                "from the log within %ss", nsp, self.timeout)
            return None
        return Taken(boundary, tail, None, nonce)

    def observe(self, offset: str, message: Message) -> None:
        if message.type is not MessageType.SESSION_CLAIM or message.uid != self.uid:
            return
        try:
            claim = SessionClaim.from_wire(message.data)
        except MalformedMessage:
            return
        future = self._claims.pop(claim.nonce, None)
        if future is not None and not future.done():
            # the tail opens at the claim: it is the restore's boundary
            future.set_result((offset, self.tails.open()))

    def settle(self, taken: Taken, entries: list[tuple[str, Message]], nsp: str,
               pid: str) -> SessionRecord | None:
        return claimed(entries, nsp, pid, taken.nonce)

    async def put_back(self, record: SessionRecord) -> None:
        pass  # the record stays in the log; the claim that took it did not restore


def claimed(entries: list[tuple[str, Message]], nsp: str, pid: str,
            nonce: str) -> SessionRecord | None:
    """The session saved last for ``pid`` in ``entries``, if our claim (``nonce``)
    is the first one after it."""
    record: SessionRecord | None = None
    for _, message in entries:
        if message.nsp != nsp or not isinstance(message.data, dict):
            continue
        if message.type is MessageType.SESSION_SAVE and message.data.get("pid") == pid:
            try:
                record = SessionRecord.from_data(nsp, message.data)
            except MalformedMessage:
                record = None
        elif (message.type is MessageType.SESSION_CLAIM and record is not None
              and message.data.get("pid") == pid):
            if message.data.get("nonce") != nonce:
                return None  # another node restored it first
            break
    if record is None or record.expired:
        return None
    return record
