"""The publish side of a node: an ordered queue drained by one writer task.

``put`` never waits for the broker, so a burst of messages is sent in batches (one
round trip carries many: a group commit) while order is kept. ``put_and_wait``
returns once the broker accepted that message; ``put_ordered`` gives a future that
does too, but gives up waiting (the message stays queued) when the broker stops
answering, so an emit during an outage returns once buffered.

The queue is bounded in messages (``max_buffer``) and bytes (``max_bytes``).
:meth:`Outbox.wait_writable` is the backpressure of emits: past the bounds, or past
``high_water`` messages while the broker is reachable (it is slower than the
emitters), it waits for room up to ``timeout`` and then raises
:class:`~socketio_adapters.errors.OutboxFull`; nothing queued is dropped for room. A
broker that stops answering meanwhile (a stall, a failed send) ends a wait that was
only for ``high_water``: the emit is buffered, as emits are during an outage.
A message queued with ``put`` past the bounds (the node's own heartbeats and
answers, which cannot wait) is dropped instead, logged and counted.

While the broker is unreachable the writer retries with backoff. Before it sends
again after a failure, or after its subscription was lost (even with nothing queued
then), it passes the ``gate`` (set by the manager: this node and the others are
subscribed again, see :mod:`socketio_adapters.cluster.resume`), so what was
buffered is not published into an outage's gap. A publish refused for this client's
credentials or the broker's certificate (see :meth:`Backend.refusal`) is retried the
same way, logged as an error. A publish that fails for any other reason (the broker
refused that payload) drops that batch with an error log, and its waiters get the
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..backends.base import Backend, Destination, Outgoing
from ..backoff import Backoff
from ..errors import EmitFailed, OutboxFull
from ..tasks import settle, wait_while
from .counters import PublishCounters
from .watchdog import EmitWatchdog

__all__ = ["Outbox"]

Gate = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Entry:
    item: Outgoing
    future: asyncio.Future[bool] | None
    """Resolved True once the broker accepted the message."""
    releasable: bool
    """An ordered emit's waiter: released (False) when the broker stops answering."""


class Outbox:
    """An ordered queue of ``(target, payload)`` for the broker, drained in batches by
    one writer task; bounded (see the module docstring). What it sends and drops is
    counted in ``counters``, which may outlive it."""

    def __init__(
        self,
        backend: Backend,
        logger: logging.Logger,
        max_buffer: int = 100_000,
        high_water: int = 5_000,
        batch_size: int = 512,
        counters: PublishCounters | None = None,
        max_bytes: int = 64 * 2**20,
        timeout: float = 10.0,
    ) -> None:
        self.backend = backend
        self.logger = logger
        self.max_buffer = max_buffer
        self.max_bytes = max_bytes
        self.high_water = min(high_water, max_buffer)
        self.timeout = timeout
        self.batch_size = batch_size
        self.counters = counters if counters is not None else PublishCounters()
        self.gate: Gate | None = None
        """Passed before sending again after an outage (see the module docstring)."""
        self.failures = 0
        self.stalled = False
        """An ordered emit waited ``timeout`` in vain: until the broker answers again,
        emits return once queued."""
        self._overflows = 0
        self._bytes = 0
        self._queue: deque[_Entry] = deque()
        self._inflight: list[_Entry] = []
        self._urgent: deque[_Entry] = deque()
        self._held = False
        self._gate_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the queue shrank; waiters re-check
        self._task: asyncio.Task[None] | None = None
        self._watchdog = EmitWatchdog(self._expired)  # the ordered emits' deadlines

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="outbox-writer")
            self._task.add_done_callback(self._writer_ended)
        if self._hold not in self.backend.state.on_down:
            # an outage, even with nothing queued: pass the gate before sending again
            self.backend.state.on_down.append(self._hold)

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        """A writer that died (a client library's bug) would leave every later emit
        queued for ever: log it and start another."""
        if task is not self._task:
            return  # stopped by stop()
        error = None if task.cancelled() else task.exception()
        self.logger.error("the outbox writer stopped (%r); starting it again", error)
        self._task = None
        if self._inflight:
            self._put_back(self._inflight, False)
        self.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds; 0: nothing more),
        then stop."""
        if self._task is None:
            return
        with contextlib.suppress(ValueError):
            self.backend.state.on_down.remove(self._hold)
        if not self.reachable:
            timeout = min(timeout, 0.5)  # the broker is away: do not hold up shutdown
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except asyncio.TimeoutError:
            self.logger.warning("outbox: %d messages not sent at stop", len(self._queue))
        self._watchdog.cancel()
        task, self._task = self._task, None
        task.cancel()
        await settle(task, 5.0, self.logger, "the outbox writer")
        gate, self._gate_task = self._gate_task, None
        if gate is not None:
            gate.cancel()
            await settle(gate, 5.0, self.logger, "the outbox's resume gate")
        self.counters.dropped += len(self._queue)  # never sent: lost with this outbox
        for entry in self._queue:
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(ConnectionError("manager stopped before sending"))
        self._queue.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue) + len(self._inflight)

    def __bool__(self) -> bool:
        return True  # an empty outbox is still there: test it with ``is None``

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def reachable(self) -> bool:
        """The broker is subscribed to, took the last batch, and answers in time."""
        return self.backend.state.connected and self.failures == 0 and not self.stalled

    def put(self, target: Destination, payload: bytes) -> None:
        """Queue a payload for ``target`` (a node uid, or ``None`` for all); past the
        bounds it is dropped, logged and counted."""
        if self._full():
            self._overflow()
            return
        self._append(_Entry((target, payload), None, False))

    def put_urgent(self, target: Destination, payload: bytes) -> None:
        """Queue a payload sent before anything else queued, even while the outbox
        waits at its gate (the gate's own handshake)."""
        self._urgent.append(_Entry((target, payload), None, False))
        self._wake.set()

    @property
    def urgent_pending(self) -> int:
        """Urgent payloads not sent yet."""
        return len(self._urgent)

    @property
    def held(self) -> bool:
        """Waiting at the gate after an outage: only urgent payloads are sent."""
        return self._held

    async def put_and_wait(self, target: Destination, payload: bytes) -> None:
        """Queue a payload and wait until the broker accepted it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._append(_Entry((target, payload), future, False))
        await future

    def put_ordered(self, target: Destination, payload: bytes,
                    timeout: float) -> asyncio.Future[bool]:
        """Queue a payload; the future it returns gives True once the broker accepted
        it, False when it did not within ``timeout`` or a send failed first (it stays
        queued, sent in order once the broker answers: see :meth:`_expired` and
        :meth:`_release`), and raises when the broker refused it. (A future, not a
        coroutine: the emit awaits it with one frame less to resume.)"""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._append(_Entry((target, payload), future, True))
        self._watchdog.watch(future, timeout)
        return future

    def _expired(self, timeout: float) -> None:
        """An ordered emit waited in vain: every waiting emit returns (still queued)."""
        if not self.stalled:
            self.stalled = True
            self.logger.warning(
                "the broker did not accept a message within %ss: emits return once "
                "queued until it answers again", timeout)
        self._release()
        self._progress.set()  # emits held back for a reachable broker may buffer now

    async def wait_writable(self, size: int = 0) -> None:
        """Backpressure: wait while the queue is over its bounds, or over
        ``high_water`` messages while the broker is reachable; raise
        :class:`OutboxFull` after ``timeout`` seconds."""
        if not self.blocked(size) or await wait_while(
                lambda: self.blocked(size), self._progress, self.timeout):
            return
        why = ("the broker is slower than the emitters" if self.reachable
               else "the broker is unreachable")
        raise OutboxFull(
            f"{self.backend.name}: {len(self)} messages ({self._bytes} bytes) wait for "
            f"the broker (bounds: max_buffer={self.max_buffer}, max_buffer_bytes="
            f"{self.max_bytes}); no room within {self.timeout}s ({why})")

    async def flush(self) -> None:
        """Wait until everything queued so far was sent (or dropped)."""
        while self._queue or self._inflight:
            self._progress.clear()
            await self._progress.wait()

    def _full(self, size: int = 0) -> bool:
        return (len(self) >= self.max_buffer
                or (self._bytes > 0 and self._bytes + size > self.max_bytes))

    def blocked(self, size: int = 0) -> bool:
        """Whether a payload of ``size`` bytes must wait for room
        (:meth:`wait_writable`)."""
        return self._full(size) or (len(self._queue) > self.high_water and self.reachable)

    def _overflow(self) -> None:
        self.counters.dropped += 1
        self._overflows += 1
        if self._overflows == 1 or self._overflows % 1000 == 0:
            self.logger.error(
                "outbox full (%d messages, %d bytes; broker unreachable?): dropped this "
                "node's own message; %d dropped so far", len(self), self._bytes,
                self._overflows)

    def _append(self, entry: _Entry) -> None:
        self._bytes += len(entry.item[1])
        self._queue.append(entry)
        self._wake.set()

    async def _writer(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        while True:
            if self._urgent:
                batch, urgent = list(self._urgent), True
                self._urgent.clear()
            elif self._queue and not self._held:
                if self.gate is not None and not self.backend.state.connected:
                    self._hold()  # our subscription is down: an outage is under way
                    continue
                count = min(len(self._queue), self.batch_size)
                self._inflight = batch = [self._queue.popleft() for _ in range(count)]
                urgent = False
            else:
                if not self._queue:
                    self._progress.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.backend.send([entry.item for entry in batch])
            except asyncio.CancelledError:
                self._put_back(batch, urgent)
                raise
            except Exception as exc:
                refusal = self.backend.refusal(exc)
                if refusal is None and not isinstance(exc, self.backend.connection_errors):
                    self.logger.exception("broker refused %d messages; dropped them",
                                          len(batch))
                    if urgent:
                        continue
                    self.counters.dropped += len(batch)
                    self._settle(EmitFailed(
                        f"{self.backend.name}: the broker refused the message "
                        f"({type(exc).__name__}: {exc}); dropped"))
                    continue
                self._release()
                self._put_back(batch, urgent)
                self._hold()
                self.failures += 1
                self._progress.set()  # unreachable now: held-back emits may buffer
                if self.failures == 1 or self.failures % 50 == 0:
                    self.logger.log(
                        logging.WARNING if refusal is None else logging.ERROR,
                        "publish failed (%s%s: %s); %d queued, retrying",
                        "" if refusal is None else refusal + " ",
                        type(exc).__name__, exc, len(self._queue))
                # the connection coming back ends the wait: what was held goes out
                # (through the gate) at once, not after a backoff of up to 2 s
                await self.backend.state.pause(backoff.next())
                continue
            if self.failures:
                self.logger.warning("publishing again after %d failed attempts",
                                    self.failures)
                self.failures = 0
            self.stalled = False
            backoff.reset()
            if not urgent:
                self.counters.sent += len(batch)
                self._settle(None)

    def _put_back(self, batch: list[_Entry], urgent: bool) -> None:
        if urgent:
            self._urgent.extendleft(reversed(batch))
        else:
            self._queue.extendleft(reversed(batch))
            self._inflight = []

    def _hold(self) -> None:
        """An outage: send nothing but urgent payloads until the gate is passed."""
        if self.gate is None or self._held:
            return
        self._held = True
        self._gate_task = asyncio.create_task(self._pass_gate(self.gate),
                                              name="outbox-resume-gate")

    async def _pass_gate(self, gate: Gate) -> None:
        try:
            await gate()
        except Exception:
            self.logger.exception("the outbox's resume gate failed; sending anyway")
        finally:
            self._held = False
            self._gate_task = None
            self._wake.set()

    def _release(self) -> None:
        """A send failed: ordered emits waiting for it return (their messages stay
        queued)."""
        for entry in (*self._inflight, *self._queue):
            if entry.releasable and entry.future is not None and not entry.future.done():
                entry.future.set_result(False)

    def _settle(self, error: BaseException | None) -> None:
        for entry in self._inflight:
            self._bytes -= len(entry.item[1])
            future = entry.future
            if future is not None and not future.done():
                if error is None:
                    future.set_result(True)
                else:
                    future.set_exception(error)
        self._inflight = []
        self._progress.set()
        self._watchdog.forget_answered()  # settled in order
