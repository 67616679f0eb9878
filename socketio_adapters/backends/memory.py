"""In-process backend: several managers in one process (one event loop) share a hub.

Features
    Broadcast and direct delivery between managers of the same process, in order,
    through one queue per node (so a slow node never blocks a publisher). Used by unit
    tests and by single-process apps that run several servers.

Connection string
    ``memory://`` (the default hub) or ``memory://NAME`` (a separate hub per name).

Options
    Only the common ones (``channel``, ``connect_timeout``): managers share a hub only
    when both the name and the channel match.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .base import Backend, Capabilities, Outgoing

__all__ = ["MemoryBackend"]

_HUBS: dict[tuple[str, str], dict[str, asyncio.Queue[bytes]]] = {}


class MemoryBackend(Backend):
    """Managers of one process exchange messages through in-memory queues."""

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(multi_process=False)

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._hub_key = (urlsplit(url).netloc, self.channel)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    @property
    def _hub(self) -> dict[str, asyncio.Queue[bytes]]:
        return _HUBS.setdefault(self._hub_key, {})

    async def _run(self, ready: Callable[[], None]) -> None:
        self._hub[self.node_id] = self._queue
        ready()
        while True:
            payload = await self._queue.get()
            await self._dispatch(payload)

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        hub = self._hub
        for target, payload in batch:
            if target is None:
                for node, queue in hub.items():
                    if node != self.node_id:
                        queue.put_nowait(payload)
            else:
                direct = hub.get(target)
                if direct is not None:
                    direct.put_nowait(payload)

    async def _close(self) -> None:
        hub = self._hub
        if hub.get(self.node_id) is self._queue:
            del hub[self.node_id]
        if not hub:
            _HUBS.pop(self._hub_key, None)
