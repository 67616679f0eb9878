"""One server node of :mod:`benchmarks.bench_forwarding`.

    python -m benchmarks.forwarding_node --url URL [--port 0]

``socketio_adapters.AsyncServer`` on aiohttp, bound to 127.0.0.1. Socket.IO events:
``echo`` (acks its argument), ``burst`` N (emits ``e`` N times to everyone, then acks).
HTTP: ``GET /whoami`` gives the node's uid, pid, resident memory (bytes), engine.io
sessions, relayed websockets and forwarding counts. Prints one JSON line,
``{"ready": true, "port": P}``, once it serves; stops on SIGTERM or when its parent
dies.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import signal
import sys
from typing import Any

from aiohttp import web

from socketio_adapters import AsyncServer, attach_aiohttp, create_manager


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def main(url: str, port: int) -> None:
    manager = create_manager(url, heartbeat_interval=0.5, heartbeat_timeout=3.0)
    sio = AsyncServer(manager, async_mode="aiohttp", max_http_buffer_size=1 << 20)
    app = web.Application()
    sio.attach(app)
    attach_aiohttp(app, manager)

    async def echo(sid: str, value: Any) -> Any:
        return value

    async def burst(sid: str, count: int) -> int:
        for i in range(int(count)):
            await sio.emit("e", i)
        return int(count)

    sio.on("echo", echo)
    sio.on("burst", burst)

    async def whoami(request: web.Request) -> web.Response:
        gc.collect()
        engine: Any = sio.eio
        return web.json_response({
            "uid": manager.uid, "pid": os.getpid(), "rss": _rss(),
            "sessions": len(engine.sockets), "relays": len(engine.relays),
            "counts": dataclasses.asdict(engine.counts),
            "nodes": await manager.server_count()})

    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(json.dumps({"ready": True, "port": runner.addresses[0][1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            if os.getppid() != parent:  # the benchmark died: do not linger
                break
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.port))
    sys.exit(0)
