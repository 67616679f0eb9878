"""Commands sent on a subscriber connection, matched with their replies.

With RESP3 a subscribed connection takes any command, and its replies come in order
among the pushes (the messages and the subscription confirmations). A node that
publishes on its subscriber connection gets its own copy of a broadcast and the
PUBLISH's reply in one write, after every other subscriber's copy (see
:data:`~socketio_adapters.backends.redis.core.SUBSCRIBERS_FIRST`), rather than on a
second connection that Redis may write first: the sender is not woken, and does not
take a core, before the receivers. :class:`PendingCalls` keeps the commands sent in
order and gives each its replies: every reply that is not a push belongs to the
oldest command still waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PUSH_KINDS", "PendingCalls", "is_pong", "is_push"]

PUSH_KINDS = frozenset({
    b"message", b"smessage", b"pmessage", b"subscribe", b"ssubscribe", b"psubscribe",
    b"unsubscribe", b"sunsubscribe", b"punsubscribe"})
"""The first element of what Redis pushes to a subscriber (RESP3 pushes, or RESP2's
arrays in subscribed mode): never the reply to a command sent with
:meth:`PendingCalls.add`."""


def is_push(reply: Any) -> bool:
    """Whether a parsed reply is a message or a subscription change pushed by Redis."""
    return isinstance(reply, list) and bool(reply) and reply[0] in PUSH_KINDS


def is_pong(reply: Any) -> bool:
    """Whether a parsed reply answers a PING (RESP3's PONG, RESP2's subscribed form)."""
    return bool(reply == b"PONG" or reply == [b"pong", b""])


@dataclass(slots=True)
class _Call:
    expected: int
    future: asyncio.Future[list[Any]] | None
    """None: a keep-alive PING, which takes nothing but its answer."""
    replies: list[Any] = field(default_factory=list)


class PendingCalls:
    """Commands sent on a connection whose replies have not all come (oldest first)."""

    def __init__(self) -> None:
        self._calls: deque[_Call] = deque()

    def __bool__(self) -> bool:
        return bool(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, expected: int) -> asyncio.Future[list[Any]]:
        """Note a command (or a pipeline of ``expected`` commands) just sent; the
        future gives its replies, in order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._append(_Call(expected, future))
        return future

    def add_ping(self) -> None:
        """Note a keep-alive PING just sent, whose answer nobody waits for: it is
        only taken off the connection. It may go while a room subscription waits for
        its reply: an error before its answer is that subscription's, not taken."""
        self._append(_Call(1, None))

    def _append(self, call: _Call) -> None:
        if call.expected < 1:
            raise ValueError("a call expects at least one reply")
        self._calls.append(call)

    def take(self, reply: Any) -> bool:
        """Give ``reply`` to the oldest call if it is a reply to one (not a push and
        a call is waiting); whether it was taken."""
        calls = self._calls
        if not calls or is_push(reply):
            return False
        call = calls[0]
        if call.future is None and not is_pong(reply):
            return False
        call.replies.append(reply)
        if len(call.replies) == call.expected:
            calls.popleft()
            if call.future is not None and not call.future.done():
                call.future.set_result(call.replies)
        return True

    def fail(self, exc: BaseException) -> None:
        """The connection is gone: every call waiting gets ``exc``."""
        calls, self._calls = self._calls, deque()
        for call in calls:
            if call.future is not None and not call.future.done():
                call.future.set_exception(exc)
