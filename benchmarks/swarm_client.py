"""Thousands of Socket.IO clients in one process, for :mod:`benchmarks.bench_scale`.

    python -m benchmarks.swarm_client [--port 0] [--nofile N]

A python-socketio ``AsyncClient`` costs too much to hold 10,000 of them; each client
here is one aiohttp websocket speaking the Engine.IO v4 / Socket.IO v5 wire protocol
directly: it reads the open packet, connects to the main namespace with an auth
``{"room": R}``, answers pings, and counts the events it receives by name (with the
time the last one of each name arrived). It never parses an event's arguments.

Once it serves, the process prints one JSON line on stdout,
``{"ready": true, "port": P, "pid": PID, "mode": "swarm"}``, and is driven over HTTP
on 127.0.0.1:

``POST /swarm/connect?urls=U1,U2&count=N&first=I&nodes=K&rooms=R&at_once=A``
    connect N clients, A at a time; client j (global index i = I + j) goes to
    ``urls[i % K]`` (K = len(urls) unless given) and joins room ``r{(i // K) % R}``;
``GET /swarm/status``
    connected, failed (with the first errors), whether connecting is over and how long
    it took, the counts and last arrival time of each event name, dropped transports;
``POST /swarm/reset``
    zero the event counts;
``POST /swarm/send?count=K&event=E``
    every open client sends K events named E to its node (``42["E",k]``, k < K),
    one round over all clients per k; ``GET /swarm/status`` says how many were sent
    and when the sending was over;
``POST /swarm/drop?count=K``
    close K clients' websockets without a Socket.IO disconnect (a lost transport: a
    server with connection state recovery keeps their sessions);
``POST /swarm/close``
    close every client.

Every wait is bounded (``--timeout`` per handshake). The process stops on SIGTERM or
SIGINT, and by itself when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .node import raise_nofile, serve

__all__ = ["Swarm"]

log = logging.getLogger("benchmarks.swarm_client")
ERRORS_KEPT = 5
if TYPE_CHECKING:  # generic in recent aiohttp only
    WebSocket = aiohttp.ClientWebSocketResponse[bool]


class Swarm:
    """The clients of this process and the HTTP app that drives them."""

    mode = "swarm"
    sio: Any = None
    profiler: cProfile.Profile | None = None

    def __init__(self, handshake_timeout: float) -> None:
        self.handshake_timeout = handshake_timeout
        self.app = web.Application()
        self.session: aiohttp.ClientSession | None = None
        self.sockets: list[WebSocket] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self.connected = 0
        self.failed = 0
        self.errors: list[str] = []
        self.dropped = 0
        self.connect_task: asyncio.Task[None] | None = None
        self.connect_seconds: float | None = None
        self.send_task: asyncio.Task[None] | None = None
        self.sent = 0
        self.app.add_routes([
            web.post("/swarm/connect", self.handle_connect),
            web.get("/swarm/status", self.handle_status),
            web.post("/swarm/reset", self.handle_reset),
            web.post("/swarm/send", self.handle_send),
            web.post("/swarm/drop", self.handle_drop),
            web.post("/swarm/close", self.handle_close),
        ])
        self.app.on_cleanup.append(self._cleanup)

    # ------------------------------------------------------------------ clients

    async def _one(self, url: str, room: str) -> None:
        assert self.session is not None
        ws = await self.session.ws_connect(
            f"{url}/socket.io/?EIO=4&transport=websocket", autoping=True, compress=0,
            max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        try:
            await asyncio.wait_for(self._handshake(ws, room), self.handshake_timeout)
        except BaseException:
            await ws.close()
            raise
        self.sockets.append(ws)
        task = asyncio.create_task(self._read(ws))
        self.readers.add(task)
        task.add_done_callback(self.readers.discard)

    @staticmethod
    async def _handshake(ws: WebSocket, room: str) -> None:
        opened = str(await ws.receive_str())
        if not opened.startswith("0"):
            raise ValueError(f"expected an open packet, got {opened[:40]!r}")
        await ws.send_str("40" + json.dumps({"room": room}))
        while True:
            packet = str(await ws.receive_str())
            if packet.startswith("40"):
                return
            if packet == "2":
                await ws.send_str("3")
            elif packet.startswith("44"):
                raise ValueError(f"connection refused: {packet[:80]}")

    async def _read(self, ws: WebSocket) -> None:
        counts, last = self.counts, self.last
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data: str = msg.data
            if data.startswith('42["'):
                end = data.find('"', 4)
                name = data[4:end]
                counts[name] = counts.get(name, 0) + 1
                last[name] = time.monotonic()
            elif data == "2":
                await ws.send_str("3")

    async def _connect_all(self, urls: list[str], count: int, first: int, nodes: int,
                           rooms: int, at_once: int) -> None:
        began = time.monotonic()
        gate = asyncio.Semaphore(at_once)

        async def one(i: int) -> None:
            async with gate:
                try:
                    await self._one(urls[i % nodes % len(urls)], f"r{(i // nodes) % rooms}")
                    self.connected += 1
                except Exception as exc:
                    self.failed += 1
                    if len(self.errors) < ERRORS_KEPT:
                        self.errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(first + j) for j in range(count)))
        self.connect_seconds = time.monotonic() - began

    # ------------------------------------------------------------------ endpoints

    async def handle_connect(self, request: web.Request) -> web.Response:
        if self.connect_task is not None and not self.connect_task.done():
            return web.json_response({"error": "still connecting"}, status=409)
        q = request.query
        urls = q["urls"].split(",")
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True))
        self.connect_seconds = None
        self.connect_task = asyncio.create_task(self._connect_all(
            urls, int(q["count"]), int(q.get("first", "0")),
            int(q.get("nodes", str(len(urls)))), int(q.get("rooms", "1")),
            int(q.get("at_once", "100"))))
        return web.json_response({"ok": True}, status=202)

    async def handle_status(self, request: web.Request) -> web.Response:
        done = self.connect_task is not None and self.connect_task.done()
        return web.json_response({
            "connected": self.connected, "failed": self.failed, "errors": self.errors,
            "connect_done": done, "connect_seconds": self.connect_seconds,
            "open": sum(1 for ws in self.sockets if not ws.closed),
            "counts": self.counts, "last": self.last, "dropped": self.dropped,
            "sent": self.sent,
            "send_done": self.send_task is not None and self.send_task.done()})

    async def handle_reset(self, request: web.Request) -> web.Response:
        self.counts.clear()
        self.last.clear()
        return web.json_response({"ok": True})

    async def handle_send(self, request: web.Request) -> web.Response:
        if self.send_task is not None and not self.send_task.done():
            return web.json_response({"error": "still sending"}, status=409)
        count = int(request.query.get("count", "1"))
        event = request.query.get("event", "up")
        self.sent = 0
        self.send_task = asyncio.create_task(self._send_all(count, event))
        return web.json_response({"ok": True}, status=202)

    async def _send_all(self, count: int, event: str) -> None:
        sockets = [ws for ws in self.sockets if not ws.closed]
        for k in range(count):
            frame = f'42["{event}",{k}]'
            for i, ws in enumerate(sockets):
                if not ws.closed:
                    await ws.send_str(frame)
                    self.sent += 1
                if i % 100 == 99:
                    await asyncio.sleep(0)  # the readers answer pings meanwhile

    async def handle_drop(self, request: web.Request) -> web.Response:
        count = int(request.query.get("count", "0"))
        victims = [ws for ws in self.sockets if not ws.closed][:count]
        await asyncio.gather(*(ws.close() for ws in victims), return_exceptions=True)
        self.dropped += len(victims)
        return web.json_response({"dropped": len(victims)})

    async def handle_close(self, request: web.Request) -> web.Response:
        await self._close_all()
        return web.json_response({"ok": True})

    async def _close_all(self) -> None:
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
            with contextlib.suppress(BaseException):
                await self.connect_task
        open_ones = [ws for ws in self.sockets if not ws.closed]
        # a Socket.IO disconnect packet first, so the servers see a clean leave
        await asyncio.gather(*(self._leave(ws) for ws in open_ones),
                             return_exceptions=True)
        for task in list(self.readers):
            task.cancel()
        self.sockets.clear()

    @staticmethod
    async def _leave(ws: WebSocket) -> None:
        with contextlib.suppress(Exception):
            await ws.send_str("41")
        await asyncio.wait_for(ws.close(), 5.0)

    async def _cleanup(self, _app: web.Application) -> None:
        await self._close_all()
        if self.session is not None:
            await self.session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.swarm_client",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--nofile", type=int, default=1024,
                        help="file descriptors this process needs (clients + margin)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one client's handshake may take")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    raise_nofile(args.nofile)
    asyncio.run(serve(Swarm(args.timeout), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
