"""The subscriber connection's reads, taken in the loop's read callback: each pub/sub
message is parsed there and its delivery started at once, with no task woken between
the socket and the delivery (a loop turn less per message).

A delivery that has to wait, and every reply that is not a message (subscription
confirmations, a PING's answer, an error), go to the listener task, which takes them
and then every reply after them, in order, until none is left; the connection is not
read meanwhile, so the next message is not started before the earlier ones are done
(and Redis holds what the node cannot take yet, as it does for a task that reads).
Then the read callback takes over again.

A delivery is started with :func:`~socketio_adapters.eager.start_eagerly`: on Python
3.12+ as a task of its own, started at once; on 3.11 its first step runs in the
read callback, outside any task (what the backend delivers runs the application's
code in tasks of its own, see :mod:`socketio_adapters.cluster.server_events`), and
the rest, if any, in a task.

Measured on this project's 2-core machine (``bench_cross_node``, Redis, the official
JavaScript client, 2,000 events a round): room-broadcast p50 0.287 to 0.290 ms
against 0.313 to 0.327 ms with the listener task reading the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import hiredis
import redis.exceptions

from ...eager import start_eagerly
from .resp import RawConnection

__all__ = ["SubscriberReads"]

_MESSAGES = (b"message", b"smessage")


class SubscriberReads(asyncio.Protocol):
    """Installed on a subscriber connection's transport in place of its stream's
    protocol, to which it passes on everything but the data (so that writes, their
    flow control and closing work as before). ``deliver`` takes each message's
    payload; ``heard`` is called whenever something arrives. The listener task reads
    the other replies with :meth:`replies`."""

    def __init__(self, raw: RawConnection, deliver: Callable[[bytes], Coroutine[Any, Any, None]],
                 heard: Callable[[], None]) -> None:
        writer = raw.connection._writer
        if writer is None:
            raise redis.exceptions.ConnectionError("redis connection is closed")
        transport = writer.transport
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - asyncio's are
            raise TypeError(f"a subscriber needs a read-write transport, not {transport!r}")
        self._transport = transport
        self._stream: Any = self._transport.get_protocol()
        self._parser = raw.parser
        self._deliver = deliver
        self._heard = heard
        self._taken = False
        """The listener task has the replies (reading is paused): the callback only
        keeps what arrives."""
        self._waiting: asyncio.Future[None] | None = None
        """A delivery started by the callback that has to wait (or failed): the
        listener task takes it first."""
        self._held: list[Any] = []
        """Replies the callback parsed for the listener task, before the parser's."""
        self._lost: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None
        self._transport.set_protocol(self)

    # ------------------------------------------------------ the read callback

    def data_received(self, data: bytes) -> None:
        self._heard()
        self._parser.feed(data)
        if self._taken:
            return
        deliver, gets = self._deliver, self._gets
        reply = gets()
        while reply is not False:
            if isinstance(reply, list) and reply[0] in _MESSAGES:
                started = start_eagerly(deliver(reply[2]))
                if (not started.done() or started.cancelled()
                        or started.exception() is not None):
                    self._hand_over(started)
                    return
            else:
                self._held.append(reply)
                self._hand_over(None)
                return
            reply = gets()

    def _gets(self) -> Any:
        """The next reply, or False; bytes that are no RESP lose the connection."""
        try:
            return self._parser.gets()
        except hiredis.ProtocolError as exc:
            self._parser = hiredis.Reader()  # nothing more is read from this one
            self._lose(redis.exceptions.ConnectionError(f"bad reply from redis: {exc}"))
            self._transport.abort()
            return False

    def _hand_over(self, waiting: asyncio.Future[None] | None) -> None:
        self._taken = True
        self._waiting = waiting
        self._transport.pause_reading()
        self._wake_task()

    def _wake_task(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _lose(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        self._wake_task()

    # ------------------------------------------------------ the rest, passed on

    def eof_received(self) -> bool | None:
        self._lose(redis.exceptions.ConnectionError("redis closed the connection"))
        return bool(self._stream.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        lost = redis.exceptions.ConnectionError(
            "redis closed the connection" if exc is None else f"connection lost: {exc}")
        self._lose(lost)
        self._stream.connection_lost(exc)

    def pause_writing(self) -> None:
        self._stream.pause_writing()

    def resume_writing(self) -> None:
        self._stream.resume_writing()

    # ------------------------------------------------------ the listener task

    async def replies(self) -> list[Any]:
        """The replies the listener task is to handle (at least one), after a
        delivery the callback left waiting has ended (raising its error); raises
        :class:`redis.exceptions.ConnectionError` once the connection is gone and
        nothing is left."""
        while True:
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                await waiting
            out, self._held = self._held, []
            reply = self._gets()
            while reply is not False:
                out.append(reply)
                reply = self._gets()
            if out:
                return out
            if self._lost is not None:
                raise self._lost
            # nothing left for the task: the callback takes the replies again
            if self._taken:
                self._taken = False
                self._transport.resume_reading()
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
