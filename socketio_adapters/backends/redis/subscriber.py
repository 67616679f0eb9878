"""The subscriber connection's reads, taken in the loop's read callback: each pub/sub
message is parsed there and its delivery started at once, with no task woken between
the socket and the delivery (a loop turn less per message).

A delivery that has to wait, and every reply that is not a message (subscription
confirmations, a PING's answer, an error), go to the listener task, which takes them
and then every reply after them, in order, until none is left; the connection is not
read meanwhile, so the next message is not started before the earlier ones are done
(and Redis holds what the node cannot take yet, as it does for a task that reads).
Then the read callback takes over again.

A delivery's first step runs as a step of the listener task, which waits meanwhile
(:func:`~socketio_adapters.eager.step_as`): the listener is the current task there,
as when the listener read the connection and ran every delivery itself (an
application's disconnect handler reached from a delivery may use ``asyncio.timeout``);
the rest, if the delivery has to wait, is awaited by the listener. A delivery
started in the callback runs in a copy of the callback's context; those the listener
takes after a hand-over run in the listener's, as every delivery did before.

Commands may be sent on the connection too (:meth:`SubscriberReads.pipeline`, with
RESP3: the node's publishes, see :mod:`.calls`): their replies are taken wherever
they are read, by the callback or by the listener task. While some are awaited the
connection is read on even when the listener has the replies, which keeps the rest
in order for it: a delivery that waits, for an emit of its own say, never waits for
a reply behind it.

Measured on this project's 2-core machine against the listener task reading the
connection (benchmarks/README.md, stop 28; interleaved rounds, the official
JavaScript client, room-broadcast p50 medians): 0.311 against 0.323 ms ordered and
0.304 against 0.341 ms fire-and-forget in a quiet hour; 0.365 against 0.374 and 0.349
against 0.394 in a busier one. A gain of 0.01 to 0.04 ms, within the spread between
runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import hiredis
import redis.exceptions

from ...eager import Continuation, step_as
from .calls import PendingCalls
from .resp import RawConnection, checked, command

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
        self._raw = raw
        self.calls = PendingCalls()
        """Commands sent on this connection whose replies are awaited."""
        self._paused = False
        self._stream: Any = self._transport.get_protocol()
        self._parser = raw.parser
        self._deliver = deliver
        self._heard = heard
        listener = asyncio.current_task()
        if listener is None:
            raise RuntimeError("a subscriber's reads are made in its listener task")
        self._listener = listener
        self._stopped = False
        self._taken = False
        """The listener task has the replies (reading is paused): the callback only
        keeps what arrives."""
        self._waiting: Continuation[None] | None = None
        """A delivery started by the callback that has to wait: the listener task
        awaits it first."""
        self._failure: BaseException | None = None
        """A delivery's first step failed: the listener task raises it."""
        self._held: list[Any] = []
        """Replies the callback parsed for the listener task, before the parser's."""
        self._lost: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None
        self._transport.set_protocol(self)

    # ------------------------------------------------------ the read callback

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return  # the listener ended: nothing more is delivered
        self._heard()
        self._parser.feed(data)
        if self._taken:
            if self.calls:
                self._read_ahead()
            return
        if asyncio.current_task() is not None:
            # called inside a task (a TLS transport that flushes as it closes): the
            # listener takes these replies, as it takes any other
            self._hand_over()
            return
        deliver, gets, listener = self._deliver, self._gets, self._listener
        calls = self.calls
        reply = gets()
        while reply is not False:
            if not (isinstance(reply, list) and reply[0] in _MESSAGES):
                if calls.take(reply):
                    reply = gets()
                    continue
                self._held.append(reply)
                self._hand_over()
                return
            try:
                rest = step_as(listener, deliver(reply[2]))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                self._failure = exc
                self._hand_over()
                return
            if rest is not None:
                self._waiting = rest
                self._hand_over()
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

    def _read_ahead(self) -> None:
        """The listener has the replies and calls wait: take theirs, keep the rest
        for the listener in order; stop reading once no call waits."""
        self._take_parsed(self._held)
        self._pause_if_idle()

    def _take_parsed(self, out: list[Any]) -> None:
        """Every reply parsed so far: the calls' to them, the rest onto ``out``."""
        calls = self.calls
        reply = self._gets()
        while reply is not False:
            if not calls.take(reply):
                out.append(reply)
            reply = self._gets()

    def _pause_if_idle(self) -> None:
        """Stop reading while the listener has the replies, unless a call waits."""
        if self._taken and not self.calls and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _hand_over(self) -> None:
        self._taken = True
        if self.calls:
            # a reply may be in what was read already, behind a delivery that waits
            # for it (an emit of its own): taken now, not when more bytes come
            self._read_ahead()
        else:
            self._pause_if_idle()
        self._wake_task()

    def _wake_task(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _lose(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        self.calls.fail(exc)
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
        delivery the callback started has ended (raising its error); raises
        :class:`redis.exceptions.ConnectionError` once the connection is gone and
        nothing is left."""
        while True:
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                await waiting
            out, self._held = self._held, []
            self._take_parsed(out)
            self._pause_if_idle()
            if out:
                return out
            if self._lost is not None:
                raise self._lost
            # nothing left for the task: the callback takes the replies again
            if self._taken:
                self._taken = False
                if self._paused:
                    self._paused = False
                    self._transport.resume_reading()
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            except asyncio.CancelledError:
                if not await self._cancel_waiting():
                    raise

    async def _cancel_waiting(self) -> bool:
        """The listener was cancelled in the turn the callback handed it a delivery
        that waits: the delivery, a step of the listener's, gets the cancellation.
        Whether that cancellation was the delivery's own and it took it back (an
        ``asyncio.timeout`` in its first step that expired at once): the listener
        then goes on, as when it ran the delivery itself."""
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return False
        waiting.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await waiting
        cancelling = getattr(self._listener, "cancelling", None)  # Python 3.11+
        return cancelling is not None and cancelling() == 0

    # ------------------------------------------------------ commands

    @property
    def takes_calls(self) -> bool:
        """Whether a command sent now has its replies read at once: RESP3 (with
        RESP2 a subscribed connection refuses commands), the connection alive, and
        the callback reading (not a listener busy with a delivery that waits)."""
        return (not self._taken and not self._stopped and self._lost is None
                and getattr(self._raw.connection, "protocol", 2) in (3, "3"))

    def ping(self) -> None:
        """Send a PING nobody waits for (the silence watch's): its answer is taken off
        the connection, any other reply (an earlier room subscription's error) still
        goes to the listener."""
        self._raw.write(command(b"PING"))
        self.calls.add_ping()

    async def pipeline(self, commands: list[bytes]) -> list[Any]:
        """Send commands in one write and return their replies, in order; raise
        :class:`~.resp.PipelineError` for an error reply, as
        :meth:`RawConnection.pipeline` does."""
        self._raw.write(b"".join(commands))
        future = self.calls.add(len(commands))
        try:
            await self._raw.drain()
            out = await future
        except BaseException:
            if future.done() and not future.cancelled():
                future.exception()  # the connection's loss, raised here instead
            else:
                future.cancel()  # its replies are still taken off when they come
            raise
        return checked(out)

    def stop(self) -> None:
        """The listener ended: what arrives now is not delivered."""
        self._stopped = True
        self.calls.fail(redis.exceptions.ConnectionError(
            "the subscriber connection was closed"))
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.close()
