"""Reconnect policy shared by every backend: capped, jittered exponential backoff,
and a supervisor loop that keeps a backend's listener alive.

A backend writes one coroutine that connects, subscribes, calls ``ready()`` and then
reads until the connection fails. :func:`supervise` runs it forever: it logs every
failure, waits ``Backoff.next()`` and runs it again, so subscriptions are restored
after the broker comes back. A backend never writes its own retry loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "ConnectionState", "supervise"]


@dataclass
class Backoff:
    """Exponential backoff with full jitter and a cap (seconds)."""

    base: float = 0.05
    cap: float = 2.0
    factor: float = 2.0
    _attempt: int = field(default=0, init=False)

    def next(self) -> float:
        """The delay before the next attempt; grows until ``cap``."""
        ceiling = min(self.cap, self.base * self.factor**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class ConnectionState:
    """Whether a backend is subscribed now, how often it reconnected, and whether the
    broker refused it (its credentials, or the broker's certificate failed
    verification)."""

    def __init__(self) -> None:
        self._up = asyncio.Event()
        self._settled = asyncio.Event()
        self.reconnects = 0
        self.down_since: float | None = None
        self.last_outage: float | None = None
        self.refusal: BaseException | None = None
        """The error of the broker's last refusal, until the next subscription."""
        self.on_down: list[Callable[[], None]] = []
        """Called each time the subscription is lost (it was up)."""

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def mark_up(self) -> None:
        if self.down_since is not None:
            self.last_outage = time.monotonic() - self.down_since
            self.reconnects += 1
            self.down_since = None
        self.refusal = None
        self._up.set()
        self._settled.set()

    def mark_refused(self, exc: BaseException) -> None:
        """The broker refused us (the listener goes on retrying)."""
        self.refusal = exc
        self._settled.set()

    def mark_down(self) -> None:
        if not self._up.is_set():
            return
        self.down_since = time.monotonic()
        self._up.clear()
        for callback in list(self.on_down):
            callback()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, ending early when the subscription comes back meanwhile:
        a retry waits out its backoff only while the broker is still away."""
        if self._up.is_set():
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._up.wait(), seconds)

    async def wait_up(self, timeout: float | None = None) -> None:
        """Wait until subscribed, or until the broker refuses us from now
        on (then ``refusal`` is set and ``connected`` false); raise
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if self._up.is_set():
            return
        self.refusal = None
        self._settled.clear()
        await asyncio.wait_for(self._settled.wait(), timeout)


async def supervise(
    name: str,
    run_once: Callable[[Callable[[], None]], Awaitable[None]],
    state: ConnectionState,
    errors: tuple[type[BaseException], ...],
    logger: logging.Logger,
    backoff: Backoff | None = None,
    refused: Callable[[BaseException], str | None] | None = None,
) -> None:
    """Run ``run_once(ready)`` forever, reconnecting with backoff after each failure.

    ``run_once`` must call ``ready()`` once it is subscribed; its connection-level
    failures should be in ``errors`` (logged as warnings). A failure for which
    ``refused(exc)`` says what is wrong means the broker refused us (our credentials,
    or its certificate failed verification): it is logged as an error with that text
    and marked on ``state`` (see :meth:`ConnectionState.mark_refused`), and retried
    too. Anything else is a bug, but it is logged with a traceback and the loop
    goes on rather than dying silently.
    """
    backoff = backoff or Backoff()

    def ready() -> None:
        if state.down_since is not None:
            logger.warning("%s: subscribed again after %.2fs", name,
                           time.monotonic() - state.down_since)
        state.mark_up()
        backoff.reset()

    while True:
        try:
            await run_once(ready)
            logger.warning("%s: subscription ended, reconnecting", name)
        except asyncio.CancelledError:
            state.mark_down()
            raise
        except Exception as exc:
            reason = refused(exc) if refused is not None else None
            if reason is not None:
                logger.error("%s: %s (%s: %s); retrying", name, reason,
                             type(exc).__name__, exc)
                state.mark_refused(exc)
            elif isinstance(exc, errors):
                logger.warning("%s: connection lost (%s: %s), reconnecting", name,
                               type(exc).__name__, exc)
            else:
                logger.exception("%s: unexpected error in the listener, reconnecting",
                                 name)
        state.mark_down()
        await asyncio.sleep(backoff.next())
