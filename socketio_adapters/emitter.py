"""Emitters: processes with no server (a worker, a script) that emit to the clients of
a cluster through the same broker URL as its servers.

>>> async with create_emitter("redis://127.0.0.1:6379/0") as emitter:
...     await emitter.emit("job", {"id": 7}, to="room")

An emitter is a write-only :class:`~socketio_adapters.ClusterManager`: it publishes,
never subscribes, and is not counted as a node. ``emit`` returns once the message is
queued, so a burst is sent in a few round trips; leaving the ``async with`` block
waits until the broker has every message (even when the block raised), then
disconnects. Code that is not async uses :class:`socketio_adapters.SyncEmitter`.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from .cluster import ClusterManager, Room
from .errors import ConfigurationError, EmitFailed, EmitTimeout
from .options import parse_bool, positive_float, redact
from .registry import create_manager

__all__ = ["Emitter", "create_emitter"]

log = logging.getLogger("socketio_adapters.emitter")


class Emitter:
    """Emit to a cluster's clients from a process with no server.

    :param manager: a write-only :class:`~socketio_adapters.ClusterManager` (usually
        built by :func:`create_emitter`).
    :param timeout: seconds :meth:`flush` (and so leaving ``async with``) waits for the
        broker to take the messages before it raises :class:`EmitTimeout`.

    When the servers recover connection state, build the emitter with the same
    ``connection_state_recovery`` option: its events then go through the durable log
    with offsets, and a client that was away gets them back. Without it, connected
    clients still receive its events, but without offsets, and a client that was
    disconnected misses them.
    """

    def __init__(self, manager: ClusterManager, *, timeout: float = 10.0) -> None:
        if not manager.write_only:
            raise ConfigurationError("an Emitter needs a write_only ClusterManager")
        try:
            self.timeout = positive_float(timeout)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"emitter option 'timeout': {exc}") from None
        self.manager = manager
        self._checked = 0
        """Messages dropped by the outbox that a flush already reported."""

    async def start(self) -> None:
        """Connect to the broker; raises
        :class:`~socketio_adapters.BrokerUnavailable` after ``connect_timeout``."""
        await self.manager.start()
        self._checked = self._dropped()

    async def emit(self, event: str, data: Any = None, to: Room = None, room: Room = None,
                   skip_sid: Room = None, namespace: str | None = None) -> None:
        """Emit to every client, a room, several rooms (union) or one sid, on every
        node; ``skip_sid`` takes sids or rooms to leave out. ``data`` is one argument,
        a tuple of several, or None for none; bytes stay bytes. Returns once the
        broker accepted the message (``ordered``, the default; while the broker is
        unreachable, once it is buffered) or, with ``ordered=False``, once it is
        queued, in order (see :meth:`flush`)."""
        try:
            await self.manager.emit(event, data, namespace=namespace, room=room,
                                    skip_sid=skip_sid, to=to)
        except EmitFailed:  # reported here, not again by the next flush
            self._checked = max(self._checked, self._dropped())
            raise

    async def emit_and_wait(self, event: str, data: Any = None, to: Room = None,
                            room: Room = None, skip_sid: Room = None,
                            namespace: str | None = None) -> None:
        """:meth:`emit`, then wait until the broker has it (as :meth:`flush`)."""
        since = self._dropped()
        await self.emit(event, data, to=to, room=room, skip_sid=skip_sid,
                        namespace=namespace)
        await self._settle(since)

    async def flush(self) -> None:
        """Wait until the broker has every message emitted so far. Raises
        :class:`EmitTimeout` after ``timeout`` seconds (the messages stay queued), and
        :class:`EmitFailed` if messages were dropped since the last flush (refused by
        the broker, or over ``max_buffer`` while it was away)."""
        await self._settle(self._checked)

    async def close(self) -> None:
        """Flush, then disconnect. When the flush fails, what is still queued is
        dropped (and logged) and its error raised. Safe to call twice."""
        if not self.manager.started:
            return
        try:
            await self.flush()
        except BaseException:
            await self.manager.stop(goodbye=False)  # it waited long enough: drop the rest
            raise
        await self.manager.stop()

    async def __aenter__(self) -> Emitter:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None,
                        error: BaseException | None, tb: TracebackType | None) -> None:
        if error is None:
            await self.close()
            return
        try:  # what was emitted before the error is still sent
            await self.close()
        except Exception as failure:  # the block's own error is the one to raise
            log.warning("emitter closed after %r: %s", error, failure)

    def _dropped(self) -> int:
        dropped: int = self.manager.stats()["publish_dropped"]
        return dropped

    async def _settle(self, since: int) -> None:
        try:
            await asyncio.wait_for(self.manager.flush(), self.timeout)
        except asyncio.TimeoutError:
            queued = self.manager.stats()["queued"]
            raise EmitTimeout(
                f"{self.manager.backend.name}: the broker at {redact(self.manager.backend.url)}"
                f" did not take {queued} queued messages within {self.timeout}s (is it "
                "running? they are sent if it is back before close())") from None
        dropped = self._dropped()
        self._checked = max(self._checked, dropped)
        if dropped > since:
            raise EmitFailed(
                f"{self.manager.backend.name}: {dropped - since} messages were dropped "
                "(refused by the broker, or over max_buffer while it was unreachable); "
                "see the log")


def create_emitter(url: str | None = None, *, timeout: float = 10.0, **options: Any) -> Emitter:
    """An :class:`Emitter` on the broker at ``url``: :func:`create_manager`'s options
    (``channel``, ``connect_timeout``, ``connection_state_recovery``, ...) with
    ``write_only`` on.

    >>> async with create_emitter(url, connection_state_recovery=True) as emitter:
    ...     await emitter.emit("job", data, to="room", namespace="/")
    """
    if not parse_bool(options.pop("write_only", True)):
        raise ConfigurationError("an emitter is write_only; do not set write_only=False")
    return Emitter(create_manager(url, write_only=True, **options), timeout=timeout)
