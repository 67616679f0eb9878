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

Per-room subscriptions (``subscriptions=rooms``)
    The hub keeps which nodes subscribed to each room key and puts a room's
    broadcast on their queues only; a subscription is active when the call returns.
    One queue per node keeps every sender's order across rooms.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..storage import MemoryLog, MemorySessions, StoredRecord
from .base import LOG, Backend, Capabilities, LogRecord, Outgoing, RecordKey, RoomTarget

__all__ = ["MemoryBackend"]

# what a node's queue carries: a pub/sub payload, or a log record
_Item = bytes | StoredRecord


@dataclass
class _Hub:
    nodes: dict[str, asyncio.Queue[_Item]] = field(default_factory=dict)
    rooms: dict[str, set[str]] = field(default_factory=dict)
    """Room key -> the nodes subscribed to it."""
    log: MemoryLog = field(default_factory=MemoryLog)
    sessions: MemorySessions = field(default_factory=MemorySessions)


_HUBS: dict[tuple[str, str], _Hub] = {}


def _in_a_worker_process() -> bool:
    """Started by a process manager with workers: multiprocessing (uvicorn
    --workers, hypercorn) or gunicorn (which says so in SERVER_SOFTWARE)."""
    return (multiprocessing.parent_process() is not None
            or "gunicorn" in os.environ.get("SERVER_SOFTWARE", ""))


class MemoryBackend(Backend):
    """Managers of one process exchange messages through in-memory queues."""

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        multi_process=False, durable_log=True, session_store=True, routes_rooms=True)
    log_in_memory: ClassVar[bool] = True

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._hub_key = (urlsplit(url).netloc, self.channel)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    async def _open(self) -> None:
        if _in_a_worker_process():
            self.logger.warning(
                "memory:// in a worker process (%d): it reaches only the managers of "
                "this process, so the other workers are not in this cluster; use "
                "local://NAME for the processes of one machine", os.getpid())

    @property
    def _hub(self) -> _Hub:
        return _HUBS.setdefault(self._hub_key, _Hub())

    async def _run(self, ready: Callable[[], None]) -> None:
        hub = self._hub
        hub.nodes[self.node_id] = self._queue
        await self._subscribe_every_room(self._subscribe_rooms)
        reader = self.log_reader if self.log is not None else None
        if reader is not None:  # the queue carries every record appended from now on
            reader.restart(hub.log.last())
        ready()
        while True:
            item = await self._queue.get()
            if isinstance(item, bytes):
                await self._dispatch(item)
            elif reader is not None:
                await reader.feed(item.key, item.body, item.stamp)

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        hub = self._hub
        for target, payload in batch:
            if target is None:
                for node, queue in hub.nodes.items():
                    if node != self.node_id:
                        queue.put_nowait(payload)
            elif target == LOG:
                self._append(hub, payload)
            elif isinstance(target, RoomTarget):
                for node in hub.rooms.get(target.key, ()):
                    member = hub.nodes.get(node)
                    if member is not None and node != self.node_id:
                        member.put_nowait(payload)
            else:
                direct = hub.nodes.get(target)
                if direct is not None:
                    direct.put_nowait(payload)

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        rooms = self._hub.rooms
        for key in keys:
            rooms.setdefault(key, set()).add(self.node_id)

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        rooms = self._hub.rooms
        for key in keys:
            nodes = rooms.get(key)
            if nodes is not None:
                nodes.discard(self.node_id)
                if not nodes:
                    del rooms[key]

    def _append(self, hub: _Hub, body: bytes) -> None:
        log = self.log
        if log is None:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        record = hub.log.append(body, log.retention, log.max_length)
        for queue in hub.nodes.values():
            queue.put_nowait(record)

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        return self._hub.log.fetch(first, last, limit)

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        self._hub.sessions.save(pid, data, time.time() + ttl)

    async def take_session(self, pid: str) -> bytes | None:
        return self._hub.sessions.take(pid)

    async def _close(self) -> None:
        hub = self._hub
        if hub.nodes.get(self.node_id) is self._queue:
            del hub.nodes[self.node_id]
            await self._unsubscribe_rooms(sorted(self.room_keys))
        if not hub.nodes:  # the last server of this hub is gone, with its memory
            _HUBS.pop(self._hub_key, None)
