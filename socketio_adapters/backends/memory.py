"""In-process backend: several managers in one process (one event loop) share a hub.

Features
    Broadcast and direct delivery between managers of the same process, in order,
    through one queue per node (so a slow node never blocks a publisher). Keeps a
    durable log and a session store in the hub's memory, for connection state
    recovery between the servers of one process. Used by unit tests and by
    single-process apps that run several servers.

Connection string
    ``memory://`` (the default hub) or ``memory://NAME`` (a separate hub per name).

Options
    Only the common ones (``channel``, ``connect_timeout``): managers share a hub only
    when both the name and the channel match.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .base import LOG, Backend, Capabilities, LogRecord, Outgoing, RecordKey

__all__ = ["MemoryBackend"]

# what a node's queue carries: a pub/sub payload, or a log record (key, body)
_Item = bytes | tuple[int, bytes]


@dataclass
class _Hub:
    nodes: dict[str, asyncio.Queue[_Item]] = field(default_factory=dict)
    log: deque[tuple[int, float, bytes]] = field(default_factory=deque)
    """Records: key, wall-clock time, body."""
    next_key: int = 1
    sessions: dict[str, tuple[float, bytes]] = field(default_factory=dict)


_HUBS: dict[tuple[str, str], _Hub] = {}


class MemoryBackend(Backend):
    """Managers of one process exchange messages through in-memory queues."""

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        multi_process=False, durable_log=True, session_store=True)

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._hub_key = (urlsplit(url).netloc, self.channel)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    @property
    def _hub(self) -> _Hub:
        return _HUBS.setdefault(self._hub_key, _Hub())

    async def _run(self, ready: Callable[[], None]) -> None:
        hub = self._hub
        hub.nodes[self.node_id] = self._queue
        reader = self.log_reader if self.log is not None else None
        if reader is not None:  # the queue carries every record appended from now on
            last = hub.log[-1] if hub.log else None
            reader.restart(None if last is None else ((last[0],), last[2]))
        ready()
        while True:
            item = await self._queue.get()
            if isinstance(item, bytes):
                await self._dispatch(item)
            elif reader is not None:
                await reader.feed((item[0],), item[1])

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        hub = self._hub
        for target, payload in batch:
            if target is None:
                for node, queue in hub.nodes.items():
                    if node != self.node_id:
                        queue.put_nowait(payload)
            elif target == LOG:
                self._append(hub, payload)
            else:
                direct = hub.nodes.get(target)
                if direct is not None:
                    direct.put_nowait(payload)

    def _append(self, hub: _Hub, body: bytes) -> None:
        log = self.log
        if log is None:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        key, now = hub.next_key, time.time()
        hub.next_key += 1
        hub.log.append((key, now, body))
        while hub.log and (len(hub.log) > log.max_length
                           or hub.log[0][1] < now - log.retention):
            hub.log.popleft()
        record = (key, body)
        for queue in hub.nodes.values():
            queue.put_nowait(record)

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        log = self._hub.log
        if not log:
            return None
        begin = first[0] - log[0][0]
        if begin < 0 or begin >= len(log):
            return None
        stop = begin + max(1, min(limit, last[0] - first[0] + 1))
        return [LogRecord((key,), body, int(stamp * 1000))
                for key, stamp, body in itertools.islice(log, begin, stop)]

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        sessions = self._hub.sessions
        now = time.monotonic()
        for key in [k for k, (expires, _) in sessions.items() if expires <= now]:
            del sessions[key]
        sessions[pid] = (now + ttl, data)

    async def take_session(self, pid: str) -> bytes | None:
        record = self._hub.sessions.pop(pid, None)
        if record is None or record[0] <= time.monotonic():
            return None
        return record[1]

    async def _close(self) -> None:
        hub = self._hub
        if hub.nodes.get(self.node_id) is self._queue:
            del hub.nodes[self.node_id]
        if not hub.nodes:  # the last server of this hub is gone, with its memory
            _HUBS.pop(self._hub_key, None)
