"""Ordered emits against fire-and-forget, in one run.

    python -m benchmarks.bench_ordered [--backend local,redis,...] [--emits 5000]
        [--concurrency 100] [--rounds 3] [--json benchmarks/results/ordered.json]

Per backend, two nodes (a python-socketio ``AsyncServer`` each, so an ordered emit
also waits for its node's own marker before local delivery) on one broker started
from local binaries (``local://`` needs none). Node A emits ``--emits`` events
to every client, and the time until the broker has all of them (``flush()``)
gives events per second:

- ``sequential``: one emitter awaiting each emit before the next;
- ``concurrent``: ``--concurrency`` emitters at once, each awaiting its own emits
  (ordered emits of one turn share one round trip: the outbox's group commit).

Each in ``ordered`` (the default: an emit returns once the broker accepted it)
and ``fire-and-forget`` (``ordered=false``: once queued) mode; the median of
``--rounds`` rounds, and the ratio ordered / fire-and-forget. Loopback only;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import socketio

from socketio_adapters import ClusterManager, create_manager

from .environment import each_backend, environment

WAIT = 120.0
"""Bound of every wait (seconds)."""


async def _nodes(url: str, ordered: bool) -> list[ClusterManager]:
    managers = []
    for _ in range(2):
        manager = create_manager(url, ordered=ordered)
        socketio.AsyncServer(client_manager=manager, async_mode="asgi")
        await asyncio.wait_for(manager.start(), WAIT)
        managers.append(manager)
    return managers


async def _rate(manager: ClusterManager, emits: int, concurrency: int) -> float:
    per = emits // concurrency

    async def emitter(k: int) -> None:
        for i in range(per):
            await manager.emit("e", [k, i], namespace="/")

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(emitter(k) for k in range(concurrency))), WAIT)
    await asyncio.wait_for(manager.flush(), WAIT)
    return per * concurrency / (time.perf_counter() - began)


async def run_backend(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape, concurrency in (("sequential", 1), ("concurrent", args.concurrency)):
        rates: dict[str, list[float]] = {"ordered": [], "fire-and-forget": []}
        for _ in range(args.rounds):  # the modes alternate, so drift hits both
            for mode in rates:
                nodes = await _nodes(url, ordered=mode == "ordered")
                try:
                    rates[mode].append(await _rate(nodes[0], args.emits, concurrency))
                finally:
                    for node in nodes:
                        await node.stop()
        ordered = statistics.median(rates["ordered"])
        forget = statistics.median(rates["fire-and-forget"])
        out[shape] = {"ordered_per_s": round(ordered), "fire_and_forget_per_s": round(forget),
                      "ratio": round(ordered / forget, 3), "concurrency": concurrency,
                      "rounds": {k: [round(v) for v in r] for k, r in rates.items()}}
        print(f"  {shape} (x{concurrency}): ordered {ordered:,.0f}/s, fire-and-forget "
              f"{forget:,.0f}/s, ratio {ordered / forget:.3f}", flush=True)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="local,redis,rabbitmq,nats,kafka,postgres")
    parser.add_argument("--emits", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/ordered.json")
    args = parser.parse_args()

    async def run(name: str, url: str) -> dict[str, Any]:
        print(f"{name}:", flush=True)
        return await run_backend(url, args)

    backends, failed = await each_backend(args.backend, run)
    report: dict[str, Any] = {"environment": environment(), "emits": args.emits,
                              "backends": backends}
    if args.json != "-":
        await asyncio.to_thread(Path(args.json).write_text,
                                json.dumps(report, indent=1, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
