"""One process of the cross-node benchmark, started by :mod:`benchmarks.bench_cross_node`.

    python -m benchmarks.node
        --mode single|cluster|cluster-ff|cluster-recovery|pysio|raw-pub|raw-sub
        [--backend redis|rabbitmq|nats|kafka|postgres] [--url URL] [--channel NAME]
        [--port 0] [--ws-compression on|off] [--loop asyncio|uvloop]
        [--subscriptions all|rooms]

Socket.IO modes serve python-socketio on an aiohttp app bound to 127.0.0.1:

``single``
    a plain ``socketio.AsyncServer`` (python-socketio's in-process manager): the baseline;
``cluster``
    ``socketio_adapters.create_manager(url + "?channel=...")``, started with the app
    (ordered emits: an awaited emit returns once the broker accepted it);
``cluster-ff``
    the same with ``ordered=false`` (fire-and-forget: an emit returns once queued);
``cluster-recovery``
    the same manager under ``socketio_adapters.AsyncServer`` with
    ``connection_state_recovery={"max_disconnection_duration": 120}``: every emit goes
    through the backend's durable log and carries its offset (clients must be
    ``socketio_adapters.AsyncClient``, which strips it);
``pysio``
    python-socketio's own manager for the backend: ``socketio.AsyncRedisManager``
    (redis) or ``socketio.AsyncAioPikaManager`` (rabbitmq).

``--subscriptions all|rooms`` sets the cluster modes' manager option of that name
(without it, the manager's default).

``--ws-compression on|off`` switches permessage-deflate of the Socket.IO modes'
websocket (``socketio_adapters.websocket_compression``); without it each server is as
shipped: python-socketio's (``single``, ``pysio``) compresses every frame when the
client offers it (aiohttp's default), ours (the cluster modes) does not, as
``socketio_adapters.AsyncServer`` and Node's socket.io.

Raw modes use the backend's client library (:mod:`benchmarks.raw_clients`) and no
Socket.IO at all: ``raw-pub`` publishes small msgpack payloads, ``raw-sub`` subscribes
and counts them.

Once it serves, the process prints one JSON line on stdout,
``{"ready": true, "port": P, "pid": PID, "mode": M}``, and is then driven over HTTP:

``POST /bench/emit?n=N[&variant=each|BATCHED][&concurrency=C]``
    start the throughput loop; Socket.IO modes run the plain application code
    ``for i in range(n): await sio.emit("e", {"i": i})``; with C > 1, C such loops at
    once, loop k emitting ``{"i": i, "k": k}`` for i = k, k + C, ... < n;
``POST /bench/latency?n=N&room=R&interval=S``
    emit ``{"i": i, "t": time.monotonic()}`` to room R, one at a time, sleeping S
    seconds after each (``raw-pub``: publish it, awaited);
``POST /bench/warm``
    emit one ``warm`` event to everyone (to see that the path works end to end);
``GET /bench/status``
    the current or last job: done, how long the emit loop took, how long until the
    manager had flushed everything to the broker, any error;
``POST /bench/profile?action=start`` / ``?action=stop&path=P``
    cProfile this process between the two calls and dump the stats to P;
``POST /bench/reset``, ``GET /bench/count``, ``GET /bench/latencies`` (``raw-sub``)
    zero the counters; read how many messages arrived and when the last one did; read
    the one-way latencies (seconds) of the messages that carried a send time.

The process stops on SIGTERM or SIGINT, and by itself when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgpack
import socketio
from aiohttp import web

from socketio_adapters import websocket_compression

from .loops import LOOPS, loop_name
from .loops import run as run_on
from .raw_clients import BATCH, RAW_CLIENTS, RawClient, raw_client

__all__ = ["MODES", "PYSIO_MANAGERS", "RECOVERY_OPTIONS", "BenchNode", "Job", "Served",
           "raise_nofile", "serve", "with_channel"]

SOCKET_MODES = ("single", "cluster", "cluster-ff", "cluster-recovery", "pysio")
CLUSTER_MODES = ("cluster", "cluster-ff", "cluster-recovery")
RECOVERY_OPTIONS = {"max_disconnection_duration": 120}
"""``connection_state_recovery`` of the ``cluster-recovery`` mode."""
RAW_MODES = ("raw-pub", "raw-sub")
MODES = SOCKET_MODES + RAW_MODES
HOST = "127.0.0.1"
PYSIO_MANAGERS: dict[str, Callable[[str, str], Any]] = {
    "redis": lambda url, channel: socketio.AsyncRedisManager(url, channel=channel),
    "rabbitmq": lambda url, channel: socketio.AsyncAioPikaManager(url, channel=channel),
}
"""python-socketio's own cross-process manager, per backend that has one."""

log = logging.getLogger("benchmarks.node")


def with_channel(url: str, channel: str) -> str:
    """``url`` with a ``channel`` query parameter added."""
    return f"{url}{'&' if '?' in url else '?'}channel={channel}"


class Job:
    """The node's current or last emit loop."""

    def __init__(self, kind: str, n: int) -> None:
        self.kind = kind
        self.n = n
        self.started = time.monotonic()
        self.loop_done: float | None = None
        self.flushed: float | None = None
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    def report(self) -> dict[str, Any]:
        def since(mark: float | None) -> float | None:
            return None if mark is None else mark - self.started

        return {"kind": self.kind, "n": self.n, "done": self.done, "error": self.error,
                "started": self.started, "loop_seconds": since(self.loop_done),
                "flushed_seconds": since(self.flushed)}


class BenchNode:
    """The aiohttp app of one benchmark process; see the module doc."""

    def __init__(self, mode: str, url: str | None, channel: str,
                 backend: str = "redis", ws_compression: bool | None = None,
                 ours: bool = False, subscriptions: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode != "single" and not url:
            raise ValueError(f"mode {mode} needs --url")
        if mode == "pysio" and backend not in PYSIO_MANAGERS:
            raise ValueError(f"python-socketio has no manager for {backend}")
        self.mode = mode
        self.backend = backend
        self.url = url or ""
        self.channel = channel
        self.ws_compression = ws_compression
        self.subscriptions = subscriptions
        self.ours = ours
        """The cluster modes on ``socketio_adapters.AsyncServer`` rather than
        python-socketio's (recovery is always on ours)."""
        self.app = web.Application()
        self.sio: Any = None
        self.manager: Any = None
        self.job: Job | None = None
        self.profiler: cProfile.Profile | None = None
        self.raw: RawClient | None = None
        self.received = 0
        self.last_received: float | None = None
        self.latencies: list[float] = []
        self._reader: asyncio.Task[None] | None = None
        if mode in SOCKET_MODES:
            self._setup_socketio()
        else:
            self.app.on_startup.append(self._raw_startup)
            self.app.on_cleanup.append(self._raw_cleanup)
        routes = [
            web.post("/bench/emit", self.handle_emit),
            web.post("/bench/latency", self.handle_latency),
            web.post("/bench/warm", self.handle_warm),
            web.get("/bench/status", self.handle_status),
            web.post("/bench/profile", self.handle_profile),
            web.post("/bench/reset", self.handle_reset),
            web.get("/bench/count", self.handle_count),
            web.get("/bench/latencies", self.handle_latencies),
        ]
        self.app.add_routes(routes)

    # ------------------------------------------------------------------ set-up

    def _setup_socketio(self) -> None:
        if self.mode == "single":
            self.sio = socketio.AsyncServer(async_mode="aiohttp")
        elif self.mode in CLUSTER_MODES:
            from socketio_adapters import AsyncServer, create_manager
            from socketio_adapters.lifecycle import attach_aiohttp

            url = with_channel(self.url, self.channel)
            if self.subscriptions is not None:
                url += f"&subscriptions={self.subscriptions}"
            manager = create_manager(url + "&ordered=false" if self.mode == "cluster-ff"
                                     else url)
            self.manager = manager
            if self.mode in ("cluster", "cluster-ff") and not self.ours:
                self.sio = socketio.AsyncServer(client_manager=manager,
                                                async_mode="aiohttp")
            else:
                recovery = RECOVERY_OPTIONS if self.mode == "cluster-recovery" else None
                self.sio = AsyncServer(manager, async_mode="aiohttp",
                                       connection_state_recovery=recovery)
            attach_aiohttp(self.app, manager)
        else:
            self.manager = PYSIO_MANAGERS[self.backend](self.url, self.channel)
            self.sio = socketio.AsyncServer(client_manager=self.manager,
                                            async_mode="aiohttp")
        compress = self.ws_compression
        if compress is None and self.mode in CLUSTER_MODES:
            compress = False  # as shipped by socketio_adapters (AsyncServer's default)
        if compress is not None:
            websocket_compression(self.sio, compress)
        self.sio.attach(self.app)
        self.sio.on("join", self._on_join)

    async def _on_join(self, sid: str, room: str) -> bool:
        await self.sio.enter_room(sid, room)
        return True

    async def _raw_startup(self, _app: web.Application) -> None:
        self.raw = raw_client(self.backend, self.url, self.channel)
        await self.raw.connect()
        if self.mode == "raw-sub":
            await self.raw.subscribe(self._on_raw_message)

    async def _raw_cleanup(self, _app: web.Application) -> None:
        if self.raw is not None:
            await self.raw.close()

    def _on_raw_message(self, payload: bytes) -> None:
        now = time.monotonic()
        data = msgpack.unpackb(payload)
        if "t" in data:
            self.latencies.append(now - data["t"])
        self.received += 1
        self.last_received = now

    # ------------------------------------------------------------------ jobs

    def _start_job(self, kind: str, n: int,
                   loop: Callable[[Job], Awaitable[None]]) -> web.Response:
        if self.job is not None and not self.job.done:
            return web.json_response({"error": f"{self.job.kind} job still running"},
                                     status=409)
        job = Job(kind, n)

        async def run() -> None:
            try:
                await loop(job)
                job.loop_done = time.monotonic()
                if self.mode in CLUSTER_MODES:
                    await self.manager.flush()
                job.flushed = time.monotonic()
            except Exception as exc:
                log.exception("%s job failed", kind)
                job.error = f"{type(exc).__name__}: {exc}"

        job.task = asyncio.create_task(run(), name=f"bench-{kind}")
        self.job = job
        return web.json_response(job.report(), status=202)

    async def handle_emit(self, request: web.Request) -> web.Response:
        n = int(request.query.get("n", "20000"))
        if self.mode == "raw-sub":
            return web.json_response({"error": "raw-sub does not emit"}, status=400)
        if self.mode == "raw-pub":
            variant = request.query.get("variant", "each")
            batched = RAW_CLIENTS[self.backend].batch_variant
            if variant not in ("each", batched):
                return web.json_response({"error": f"bad variant {variant!r}"}, status=400)
            loop = self._publish_each if variant == "each" else self._publish_batched
            return self._start_job(f"publish-{variant}", n, loop)
        concurrency = int(request.query.get("concurrency", "1"))
        if concurrency < 1:
            return web.json_response({"error": "concurrency must be >= 1"}, status=400)
        if concurrency == 1:
            return self._start_job("emit", n, self._emit_loop)

        async def loops(job: Job) -> None:
            await asyncio.gather(*(self._emitter(job.n, k, concurrency)
                                   for k in range(concurrency)))

        return self._start_job(f"emit-x{concurrency}", n, loops)

    async def _emit_loop(self, job: Job) -> None:
        sio = self.sio
        for i in range(job.n):
            await sio.emit("e", {"i": i})

    async def _emitter(self, n: int, k: int, step: int) -> None:
        sio = self.sio
        for i in range(k, n, step):
            await sio.emit("e", {"i": i, "k": k})

    async def _publish_each(self, job: Job) -> None:
        client = self._raw()
        for i in range(job.n):
            await client.publish(msgpack.packb({"i": i}))

    async def _publish_batched(self, job: Job) -> None:
        client = self._raw()
        for start in range(0, job.n, BATCH):
            await client.publish_batch(
                [msgpack.packb({"i": i}) for i in range(start, min(job.n, start + BATCH))])
        await client.drain()

    def _raw(self) -> RawClient:
        if self.raw is None:
            raise RuntimeError("raw client not started")
        return self.raw

    async def handle_latency(self, request: web.Request) -> web.Response:
        if self.mode == "raw-sub":
            return web.json_response({"error": "raw-sub does not emit"}, status=400)
        n = int(request.query.get("n", "2000"))
        room = request.query.get("room", "lat")
        interval = float(request.query.get("interval", "0.002"))

        async def loop(job: Job) -> None:
            sio = self.sio
            for i in range(job.n):
                await sio.emit("lat", {"i": i, "t": time.monotonic()}, to=room)
                await asyncio.sleep(interval)

        async def raw_loop(job: Job) -> None:
            client = self._raw()
            for i in range(job.n):
                await client.publish(msgpack.packb({"i": i, "t": time.monotonic()}))
                await asyncio.sleep(interval)

        if self.mode == "raw-pub":
            return self._start_job("latency", n, raw_loop)

        return self._start_job("latency", n, loop)

    async def handle_warm(self, request: web.Request) -> web.Response:
        if self.mode == "raw-pub":
            await self._raw().publish(msgpack.packb({"warm": True}))
        elif self.mode in SOCKET_MODES:
            await self.sio.emit("warm", {"t": time.monotonic()})
            if self.mode in CLUSTER_MODES:
                await self.manager.flush()
        return web.json_response({"ok": True})

    async def handle_status(self, request: web.Request) -> web.Response:
        report: dict[str, Any] = {"mode": self.mode, "pid": os.getpid()}
        if self.sio is not None:
            report["clients"] = len(self.sio.eio.sockets)
        report["job"] = None if self.job is None else self.job.report()
        if self.mode in CLUSTER_MODES:
            report["manager"] = self.manager.stats()
        return web.json_response(report)

    async def handle_profile(self, request: web.Request) -> web.Response:
        action = request.query.get("action")
        if action == "start":
            if self.profiler is None:
                self.profiler = cProfile.Profile()
                self.profiler.enable()
            return web.json_response({"profiling": True})
        if action == "stop":
            path = request.query.get("path")
            profiler, self.profiler = self.profiler, None
            if profiler is not None:
                profiler.disable()
                if path:
                    profiler.dump_stats(path)
            return web.json_response({"profiling": False, "path": path})
        return web.json_response({"error": "action must be start or stop"}, status=400)

    async def handle_reset(self, request: web.Request) -> web.Response:
        self.received = 0
        self.last_received = None
        self.latencies = []
        return web.json_response({"ok": True})

    async def handle_count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.received, "last": self.last_received})

    async def handle_latencies(self, request: web.Request) -> web.Response:
        return web.json_response({"latencies": self.latencies})


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone (we were re-parented)."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("parent %d is gone: stopping", parent)
            stop.set()
            return
        await asyncio.sleep(1.0)


class Served(Protocol):
    """What :func:`serve` needs of a benchmark process: its aiohttp app, a mode for
    the ready line, its Socket.IO server (None for a client driver) and profiler."""

    app: web.Application
    mode: str
    sio: Any
    profiler: cProfile.Profile | None


def raise_nofile(needed: int) -> int:
    """Raise this process's soft limit of open files to the hard limit; returns the
    new soft limit. Raises :class:`OSError` if the hard limit is below ``needed``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(f"{needed} file descriptors needed but the hard limit is {hard} "
                      "(raise it: ulimit -Hn, /etc/security/limits.conf)")
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


async def serve(node: Served, port: int) -> None:
    """Serve ``node`` on 127.0.0.1:port until SIGTERM/SIGINT or the parent's death."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watch_parent(os.getppid(), stop))
    runner = web.AppRunner(node.app, handle_signals=False, shutdown_timeout=1.0)
    try:
        await runner.setup()  # runs on_startup: the cluster manager subscribes here
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        if not sockets:
            raise RuntimeError("aiohttp did not bind a socket")
        bound = int(sockets[0].getsockname()[1])
        print(json.dumps({"ready": True, "port": bound, "pid": os.getpid(),
                          "mode": node.mode, "loop": loop_name()}), flush=True)
        await stop.wait()
    finally:
        watchdog.cancel()
        if node.profiler is not None:
            node.profiler.disable()
        if node.sio is not None and node.sio.eio.sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.sio.eio.disconnect(), 2.0)
        await asyncio.wait_for(runner.cleanup(), 10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--backend", choices=tuple(RAW_CLIENTS), default="redis")
    parser.add_argument("--url", "--redis-url", dest="url", default=None,
                        help="the broker's URL")
    parser.add_argument("--channel", default="bench")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--ws-compression", choices=("on", "off"), default=None,
                        help="websocket permessage-deflate (default: as shipped)")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio",
                        help="the event loop (default asyncio's own; benchmarks/loops.py)")
    parser.add_argument("--subscriptions", choices=("all", "rooms"), default=None,
                        help="the cluster modes' subscriptions option (default: the "
                             "manager's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    compression = None if args.ws_compression is None else args.ws_compression == "on"
    node = BenchNode(args.mode, args.url, args.channel, args.backend, compression,
                     subscriptions=args.subscriptions)
    run_on(serve(node, args.port), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
