"""One server node of the scale benchmark, started by :mod:`benchmarks.bench_scale`.

    python -m benchmarks.scale_node --url URL --channel NAME [--recovery]
        [--fire-and-forget] [--gc-threshold N] [--port 0] [--nofile N]

A :class:`benchmarks.node.BenchNode` in mode ``cluster`` (python-socketio's
``AsyncServer`` on ``socketio_adapters.create_manager``, ordered emits: each waits
for the broker), ``cluster-ff`` with ``--fire-and-forget`` (``ordered=false``, as
Node's adapters publish) or, with ``--recovery``,
``cluster-recovery`` (``socketio_adapters.AsyncServer`` with connection state
recovery), aiohttp on 127.0.0.1, plus:

- a ``connect`` handler that puts the socket in the room named by its auth
  ``{"room": R}`` (no extra round trip per client);
- ``POST /scale/broadcast?n=N&seconds=S``: ``await sio.emit("b", {"i": i})`` to
  everyone, N times, or fewer if S seconds passed (the job's ``n`` says how many);
- ``POST /scale/one``: one ``one`` event to everyone, carrying when it was sent;
- ``POST /scale/rooms?rooms=R&seconds=S&max=N&senders=K``: K concurrent loops, each
  ``await sio.emit("r", i, to=f"r{i % R}")`` for the next i, round-robin over the
  rooms, until S seconds or N emits, whichever first (the job's ``n`` is how many were
  emitted);
- ``POST /scale/fetch?calls=C&seconds=S&timeout=T``: up to C ``fetch_sockets()`` calls
  one after the other, none started after S seconds (at least one);
  ``GET /scale/fetch`` returns their latencies and socket counts;
- ``GET /scale/sessions``: how many recovery sessions this node saved and their bytes;
- ``GET /scale/received``: how many ``up`` events its clients sent it (a handler that
  counts them) and when the last one came (``time.monotonic()``);
- ``GET /scale/gc``: the seconds CPython's cycle collector ran in this process so far
  (timed by a ``gc.callbacks`` hook), its collections and the full ones among them.
  ``--gc-threshold N`` starts the node with ``gc.set_threshold(N, 10, 10)`` (Python's
  default first threshold is 700 allocations).

The ``/bench/status`` endpoint of :class:`~benchmarks.node.BenchNode` reports the jobs.
The process stops on SIGTERM or SIGINT, and by itself when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
from typing import Any

from aiohttp import web

from .node import BenchNode, Job, raise_nofile, serve

__all__ = ["ScaleNode"]

log = logging.getLogger("benchmarks.scale_node")


class GcClock:
    """The time CPython's cycle collector runs in this process (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.full = 0
        self._began = 0.0
        gc.callbacks.append(self._phase)

    def _phase(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._began
        self.collections += 1
        if info.get("generation") == 2:
            self.full += 1


class ScaleNode(BenchNode):
    """A cluster node with the scale benchmark's endpoints (see the module doc)."""

    def __init__(self, url: str, channel: str, recovery: bool,
                 fire_and_forget: bool = False, ours: bool = False) -> None:
        mode = ("cluster-recovery" if recovery
                else "cluster-ff" if fire_and_forget else "cluster")
        super().__init__(mode, url, channel, ours=ours)
        self.fetch_latencies: list[float] = []
        self.fetch_counts: list[int] = []
        self.saved_sessions = 0
        self.saved_bytes = 0
        self.received = 0
        self.received_last: float | None = None
        self.gc_clock = GcClock()
        self.sio.on("connect", self._on_connect)
        self.sio.on("up", self._on_up)
        self.app.add_routes([
            web.post("/scale/broadcast", self.handle_broadcast),
            web.post("/scale/one", self.handle_one),
            web.post("/scale/rooms", self.handle_rooms),
            web.post("/scale/fetch", self.handle_fetch),
            web.get("/scale/fetch", self.handle_fetch_result),
            web.get("/scale/sessions", self.handle_sessions),
            web.get("/scale/received", self.handle_received),
            web.get("/scale/gc", self.handle_gc),
        ])
        if recovery:
            self._count_saved_sessions()

    def _count_saved_sessions(self) -> None:
        """Tally each session record saved (count and packed bytes) on its way to the
        backend's session store."""
        from socketio_adapters.recovery.sessions import StoreSessions

        original = StoreSessions.save
        node = self

        async def save(self: StoreSessions, record: Any, ttl: float) -> None:
            node.saved_sessions += 1
            node.saved_bytes += len(record.pack())
            await original(self, record, ttl)

        StoreSessions.save = save  # type: ignore[method-assign]

    async def _on_connect(self, sid: str, environ: dict[str, Any],
                          auth: Any = None) -> None:
        if isinstance(auth, dict) and isinstance(auth.get("room"), str):
            await self.sio.enter_room(sid, auth["room"])

    def _on_up(self, sid: str, *args: Any) -> None:
        self.received += 1
        self.received_last = time.monotonic()

    async def handle_received(self, request: web.Request) -> web.Response:
        return web.json_response({"received": self.received, "last": self.received_last})

    async def handle_gc(self, request: web.Request) -> web.Response:
        clock = self.gc_clock
        return web.json_response({"seconds": clock.seconds, "collections": clock.collections,
                                  "full": clock.full, "threshold": gc.get_threshold()})

    async def handle_broadcast(self, request: web.Request) -> web.Response:
        n = int(request.query.get("n", "500"))
        seconds = float(request.query.get("seconds", "60"))

        async def loop(job: Job) -> None:
            sio = self.sio
            until = time.monotonic() + seconds
            for i in range(job.n):
                if time.monotonic() >= until:
                    job.n = i
                    return
                await sio.emit("b", {"i": i})

        return self._start_job("broadcast", n, loop)

    async def handle_one(self, request: web.Request) -> web.Response:
        sent = time.monotonic()
        await self.sio.emit("one", {"t": sent})
        await self.manager.flush()
        return web.json_response({"sent": sent})

    async def handle_rooms(self, request: web.Request) -> web.Response:
        rooms = int(request.query.get("rooms", "1000"))
        seconds = float(request.query.get("seconds", "5"))
        most = int(request.query.get("max", "100000"))
        senders = int(request.query.get("senders", "1"))

        async def loop(job: Job) -> None:
            sio = self.sio
            names = [f"r{k}" for k in range(rooms)]
            until = time.monotonic() + seconds
            numbers = iter(range(most))
            sent = 0

            async def sender() -> None:
                nonlocal sent
                for i in numbers:  # shared: each number is emitted once
                    if time.monotonic() >= until:
                        return
                    await sio.emit("r", i, to=names[i % rooms])
                    sent += 1

            await asyncio.gather(*(sender() for _ in range(senders)))
            job.n = sent

        return self._start_job("rooms", most, loop)

    async def handle_fetch(self, request: web.Request) -> web.Response:
        calls = int(request.query.get("calls", "50"))
        timeout = float(request.query.get("timeout", "30"))
        seconds = float(request.query.get("seconds", "20"))
        self.fetch_latencies = []
        self.fetch_counts = []

        async def loop(job: Job) -> None:
            until = time.monotonic() + seconds
            for _ in range(job.n):
                if self.fetch_latencies and time.monotonic() >= until:
                    return
                began = time.perf_counter()
                found = await self.manager.fetch_sockets(None, "/", timeout=timeout)
                self.fetch_latencies.append(time.perf_counter() - began)
                self.fetch_counts.append(len(found))

        return self._start_job("fetch", calls, loop)

    async def handle_fetch_result(self, request: web.Request) -> web.Response:
        return web.json_response({"latencies": self.fetch_latencies,
                                  "counts": self.fetch_counts})

    async def handle_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"saved": self.saved_sessions,
                                  "bytes": self.saved_bytes,
                                  "sockets": len(self.sio.eio.sockets)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_node",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the broker's URL")
    parser.add_argument("--channel", default="scale")
    parser.add_argument("--recovery", action="store_true",
                        help="connection state recovery on")
    parser.add_argument("--fire-and-forget", action="store_true",
                        help="emits return once queued (ordered=false) instead of "
                             "waiting for the broker; not with --recovery")
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="gc.set_threshold(N, 10, 10) at start (0: Python's default)")
    parser.add_argument("--server", choices=("python-socketio", "socketio-adapters"),
                        default="python-socketio",
                        help="python-socketio's AsyncServer on our manager, or ours")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--nofile", type=int, default=1024,
                        help="file descriptors this node needs (sockets + margin)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.recovery and args.fire_and_forget:
        parser.error("--fire-and-forget does not go with --recovery")
    raise_nofile(args.nofile)
    if args.gc_threshold > 0:
        gc.set_threshold(args.gc_threshold, 10, 10)
    node = ScaleNode(args.url, args.channel, args.recovery, args.fire_and_forget,
                     ours=args.server == "socketio-adapters")
    asyncio.run(serve(node, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
