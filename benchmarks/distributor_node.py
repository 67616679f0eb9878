"""One process of the distributor benchmark, started by
:mod:`benchmarks.bench_distributor`.

    python -m benchmarks.distributor_node --role plain|edge|app --url URL

``plain``
    a cluster node (``socketio_adapters.AsyncServer`` on ``create_manager(url)``,
    aiohttp on 127.0.0.1) that runs the handlers of :data:`NAMESPACE` itself;
``edge``
    the same server with an ``EdgeRelay`` for :data:`NAMESPACE`: it runs no handler;
``app``
    an ``ApplicationServer`` for :data:`NAMESPACE` with the same handlers, holding no
    connection.

The handlers: ``ping(sid, data)`` returns ``data`` (the ack); ``burst(sid, n)`` emits
``n`` events ``e`` to ``sid``, each awaited, and returns ``n``.

Once it serves (``app``: once started), the process prints one JSON line on stdout,
``{"ready": true, "port": P, "pid": PID, "role": R}``. It stops on SIGTERM or SIGINT,
and by itself when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.distributor import ApplicationServer, EdgeRelay

__all__ = ["NAMESPACE", "ROLES"]

NAMESPACE = "/bench"
ROLES = ("plain", "edge", "app")


def _handlers(emitter: Callable[[str, Any, str], Awaitable[None]]
              ) -> dict[str, Callable[..., Awaitable[Any]]]:
    async def ping(sid: str, data: Any = None) -> Any:
        return data

    async def burst(sid: str, n: int) -> int:
        for i in range(n):
            await emitter("e", i, sid)
        return n

    return {"ping": ping, "burst": burst}


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def watch() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                stop.set()
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    await stop.wait()
    watcher.cancel()


def _ready(role: str, port: int = 0) -> None:
    print(json.dumps({"ready": True, "port": port, "pid": os.getpid(), "role": role}),
          flush=True)


async def _serve(role: str, url: str) -> None:
    manager = create_manager(url)
    sio = AsyncServer(manager, async_mode="aiohttp")
    if role == "edge":
        EdgeRelay(sio, [NAMESPACE])
    else:
        async def emit(event: str, data: Any, sid: str) -> None:
            await sio.emit(event, data, to=sid, namespace=NAMESPACE)

        for name, handler in _handlers(emit).items():
            sio.on(name, handler, namespace=NAMESPACE)
    app = web.Application()
    sio.attach(app)
    await manager.start()
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    _ready(role, int(runner.addresses[0][1]))
    try:
        await _until_stopped()
    finally:
        await sio.shutdown()
        await manager.stop()
        await runner.cleanup()


async def _app(url: str) -> None:
    app = ApplicationServer(url, NAMESPACE)

    async def emit(event: str, data: Any, sid: str) -> None:
        await app.emit(event, data, to=sid)

    for name, handler in _handlers(emit).items():
        app.on(name, handler)
    await app.start()
    _ready("app")
    try:
        await _until_stopped()
    finally:
        await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_app(args.url) if args.role == "app" else _serve(args.role, args.url))


if __name__ == "__main__":
    main()
