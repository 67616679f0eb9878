"""Host the hub of a ``local://`` cluster whenever no server of it does.

    python -m socketio_adapters.backends.local local://NAME

Optional: servers host the hub themselves. A process that only hosts it (under a
service manager, beside the workers) keeps the hub out of the workers' event loops.
It prints ``HUB <pid>`` once it hosts the hub, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from ...storage import MemoryLog, MemorySessions
from .folder import HubLock, RuntimeFolder
from .hub import Hub, LogLimits

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


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
