"""One server node of the routing benchmark, started by :mod:`benchmarks.bench_routing`.

    python -m benchmarks.routing_node --url URL --channel NAME
        [--subscriptions all|rooms] [--port 0]

A :class:`benchmarks.node.BenchNode` in mode ``cluster`` (python-socketio's
``AsyncServer`` on ``socketio_adapters.create_manager(url)``, aiohttp on 127.0.0.1)
whose manager URL carries ``subscriptions=all`` or ``subscriptions=rooms``, plus:

- a ``join_rooms`` event: the client's socket enters every room of the list it sends
  (server-side ``enter_room``, all at once); the answer is how many. In ``rooms`` mode
  it answers once the broker confirmed the node's subscriptions to those rooms;
- ``POST /routing/stream?rooms=R&emits=N&everyone=E&seconds=S``: the broadcasts of
  :func:`stream_plan` one after the other (``await sio.emit("room", i, to=f"r{k}")``
  or ``await sio.emit("everyone", i)``), stopping early if S seconds passed (the job's
  ``n`` is how many were emitted).

The ``/bench/status`` endpoint of :class:`~benchmarks.node.BenchNode` reports the job
and the manager's ``stats()`` (``received_broadcasts``, ``room_subscriptions``). The
process stops on SIGTERM or SIGINT, and by itself when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

from aiohttp import web

from socketio_adapters.cluster.routing import MODES

from .node import BenchNode, Job, serve

__all__ = ["EVERYONE", "RoutingNode", "held_rooms", "room_name", "stream_plan"]

EVERYONE = -1
"""A :func:`stream_plan` entry that is a broadcast to everyone."""


def room_name(k: int) -> str:
    return f"r{k}"


def stream_plan(emits: int, rooms: int, everyone: int) -> list[int]:
    """The stream's broadcasts in order: ``emits`` room broadcasts spread uniformly
    over the rooms (room ``i % rooms`` for the i-th), with ``everyone`` broadcasts to
    everyone (:data:`EVERYONE`) spread evenly among them."""
    plan: list[int] = []
    step = max(1, emits // everyone) if everyone else 0
    left = everyone
    for i in range(emits):
        plan.append(i % rooms)
        if left and (i + 1) % step == 0:
            plan.append(EVERYONE)
            left -= 1
    plan.extend([EVERYONE] * left)
    return plan


def held_rooms(node: int, nodes: int, share: float, rooms: int) -> list[int]:
    """The rooms node ``node`` of ``nodes`` holds: ``share`` of them (at least one),
    a run of consecutive rooms starting at its own offset, so that the nodes' rooms
    overlap as little as their shares allow."""
    count = min(rooms, max(1, round(share * rooms)))
    offset = node * rooms // nodes
    return [(offset + j) % rooms for j in range(count)]


class RoutingNode(BenchNode):
    """A cluster node with the routing benchmark's endpoints (see the module doc)."""

    def __init__(self, url: str, channel: str, subscriptions: str) -> None:
        if subscriptions not in MODES:
            raise ValueError(f"subscriptions must be one of {', '.join(MODES)}")
        url = f"{url}{'&' if '?' in url else '?'}subscriptions={subscriptions}"
        super().__init__("cluster", url, channel)
        self.subscriptions = subscriptions
        self.sio.on("join_rooms", self._on_join_rooms)
        self.app.add_routes([web.post("/routing/stream", self.handle_stream)])

    async def _on_join_rooms(self, sid: str, rooms: list[str]) -> int:
        await asyncio.gather(*(self.sio.enter_room(sid, room) for room in rooms))
        return len(rooms)

    async def handle_stream(self, request: web.Request) -> web.Response:
        q = request.query
        plan = stream_plan(int(q.get("emits", "2000")), int(q.get("rooms", "200")),
                           int(q.get("everyone", "0")))
        seconds = float(q.get("seconds", "60"))
        names = [room_name(k) for k in range(int(q.get("rooms", "200")))]

        async def loop(job: Job) -> None:
            sio: Any = self.sio
            until = time.monotonic() + seconds
            for i, k in enumerate(plan):
                if time.monotonic() >= until:
                    job.n = i
                    return
                if k == EVERYONE:
                    await sio.emit("everyone", i)
                else:
                    await sio.emit("room", i, to=names[k])

        return self._start_job("stream", len(plan), loop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.routing_node",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the broker's URL")
    parser.add_argument("--channel", default="routing")
    parser.add_argument("--subscriptions", choices=MODES, default="all")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    node = RoutingNode(args.url, args.channel, args.subscriptions)
    asyncio.run(serve(node, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
