"""The publish side of a node: an ordered queue drained by one writer task.

``put`` never waits for the broker, so a burst of emits is sent in batches (one round
trip carries many messages) while order is kept. ``put_and_wait`` returns once the
broker accepted that message (room changes use it, so a later message from any node
cannot overtake them). While the broker is unreachable the queue keeps up to
``max_buffer`` messages and retries with backoff; past that the oldest are dropped and
every drop is logged and counted. A publish refused for this client's credentials or
the broker's certificate (see :meth:`Backend.refusal`) is retried the same way, logged
as an error. A
publish that fails for any other reason (the broker refused that payload) drops that
batch with an error log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ..backends.base import Backend, Outgoing
from ..backoff import Backoff
from ..tasks import settle
from .counters import PublishCounters

__all__ = ["Outbox"]


class Outbox:
    """An ordered queue of ``(target, payload)`` for the broker, drained in batches by
    one writer task; bounded while the broker is away (see the module docstring).
    What it sends and drops is counted in ``counters``, which may outlive it."""

    def __init__(
        self,
        backend: Backend,
        logger: logging.Logger,
        max_buffer: int = 100_000,
        high_water: int = 5_000,
        batch_size: int = 512,
        counters: PublishCounters | None = None,
    ) -> None:
        self.backend = backend
        self.logger = logger
        self.max_buffer = max_buffer
        self.high_water = high_water
        self.batch_size = batch_size
        self.counters = counters if counters is not None else PublishCounters()
        self.failures = 0
        self._overflows = 0
        self._queue: deque[tuple[Outgoing, asyncio.Future[None] | None]] = deque()
        self._inflight: list[tuple[Outgoing, asyncio.Future[None] | None]] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever the queue shrank; waiters re-check
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="outbox-writer")

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds; 0: nothing more),
        then stop."""
        if self._task is None:
            return
        if not self.backend.state.connected:
            timeout = min(timeout, 0.5)  # the broker is away: do not hold up shutdown
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except asyncio.TimeoutError:
            self.logger.warning("outbox: %d messages not sent at stop", len(self._queue))
        task, self._task = self._task, None
        task.cancel()
        await settle(task, 5.0, self.logger, "the outbox writer")
        self.counters.dropped += len(self._queue)  # never sent: lost with this outbox
        for _, future in self._queue:
            if future is not None and not future.done():
                future.set_exception(ConnectionError("manager stopped before sending"))
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue) + len(self._inflight)

    def __bool__(self) -> bool:
        return True  # an empty outbox is still there: test it with ``is None``

    def put(self, target: str | None, payload: bytes) -> None:
        """Queue a payload for ``target`` (a node uid, or ``None`` for all)."""
        self._append((target, payload), None)

    async def put_and_wait(self, target: str | None, payload: bytes) -> None:
        """Queue a payload and wait until the broker accepted it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._append((target, payload), future)
        await future

    async def wait_writable(self) -> None:
        """Backpressure: wait while more than ``high_water`` messages are queued and
        the broker is reachable (while it is not, the buffer absorbs the burst)."""
        while len(self._queue) > self.high_water and self.backend.state.connected:
            self._progress.clear()
            await self._progress.wait()

    async def flush(self) -> None:
        """Wait until everything queued so far was sent (or dropped)."""
        while self._queue or self._inflight:
            self._progress.clear()
            await self._progress.wait()

    def _append(self, item: Outgoing, future: asyncio.Future[None] | None) -> None:
        if len(self._queue) >= self.max_buffer:
            _, old_future = self._queue.popleft()
            self.counters.dropped += 1
            self._overflows += 1
            if old_future is not None and not old_future.done():
                old_future.set_exception(ConnectionError("dropped: outbox full"))
            if self._overflows == 1 or self._overflows % 1000 == 0:
                self.logger.error(
                    "outbox full (%d messages, broker unreachable?): dropped the oldest; "
                    "%d dropped so far", self.max_buffer, self._overflows)
        self._queue.append((item, future))
        self._wake.set()

    async def _writer(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        while True:
            if not self._queue:
                self._progress.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            count = min(len(self._queue), self.batch_size)
            self._inflight = [self._queue.popleft() for _ in range(count)]
            try:
                await self.backend.send([item for item, _ in self._inflight])
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(self._inflight))
                self._inflight = []
                raise
            except Exception as exc:
                refusal = self.backend.refusal(exc)
                if refusal is None and not isinstance(exc, self.backend.connection_errors):
                    self.logger.exception("broker refused %d messages; dropped them", count)
                    self.counters.dropped += count
                    self._settle(ConnectionError("broker refused the message"))
                    continue
                self._queue.extendleft(reversed(self._inflight))
                self._inflight = []
                self.failures += 1
                if self.failures == 1 or self.failures % 50 == 0:
                    self.logger.log(
                        logging.WARNING if refusal is None else logging.ERROR,
                        "publish failed (%s%s: %s); %d queued, retrying",
                        "" if refusal is None else refusal + " ",
                        type(exc).__name__, exc, len(self._queue))
                await asyncio.sleep(backoff.next())
                continue
            if self.failures:
                self.logger.warning("publishing again after %d failed attempts",
                                    self.failures)
                self.failures = 0
            backoff.reset()
            self.counters.sent += count
            self._settle(None)

    def _settle(self, error: BaseException | None) -> None:
        for _, future in self._inflight:
            if future is not None and not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self._inflight = []
        self._progress.set()
