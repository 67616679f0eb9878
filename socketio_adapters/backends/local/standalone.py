"""A process that hosts the hub of a ``local://`` cluster whenever no server of it
does (``socketio-adapters hub URL``, or ``python -m socketio_adapters.backends.local
URL``), so that the hub never shares a worker's event loop."""

from __future__ import annotations

import asyncio
import logging
import signal

from ...storage import MemoryLog, MemorySessions
from .folder import HubLock, RuntimeFolder
from .hub import Hub, LogLimits

__all__ = ["serve"]

_POLL_SECONDS = 0.1


async def serve(url: str) -> None:
    logger = logging.getLogger("socketio_adapters.local")
    folder = RuntimeFolder(url)
    folder.create()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lock = HubLock(folder)
    while not lock.try_acquire():  # another process hosts it: wait for the lock
        try:
            await asyncio.wait_for(stop.wait(), _POLL_SECONDS)
            return
        except asyncio.TimeoutError:
            pass
    hub = Hub(folder, lock, MemoryLog(), MemorySessions(), LogLimits(), logger)
    await hub.start()
    print(f"HUB {folder.path}", flush=True)
    try:
        await stop.wait()
    finally:
        await hub.stop()
