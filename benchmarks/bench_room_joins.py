"""What per-room subscriptions cost: the broker round trip of a room's first member.

    python -m benchmarks.bench_room_joins [--backend redis,...|all] [--joins 500]
        [--json-dir benchmarks/results]

With ``subscriptions=rooms`` a node subscribes to a room's key when the room gets its
first local member, and ``enter_room`` returns once the broker confirmed it (see
socketio_adapters/cluster/routing.py). Per backend, on a broker started from local
binaries (``local://`` needs none; ``memory://`` is in-process), one node on a fresh
channel:

- ``--joins`` rooms entered one after the other by a connected socket of that node
  (``await sio.enter_room(sid, room)``), each a room new to the node: the latency of
  each (p50, p99), against the same joins with ``subscriptions=all`` (a local
  dictionary update);
- the same number of keys subscribed in one batch (``backend.subscribe_rooms``, what
  the node does when many rooms fill at once, e.g. after a restart), and every key
  unsubscribed in one batch.

Loopback only; the counts bound every loop; every broker is stopped at the end.
Results: ``<json-dir>/room-joins.json``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.cluster.routing import room_key

from .environment import REPO_ROOT, each_broker, environment
from .node import HOST

BACKENDS = ("memory", "local", "redis", "nats", "rabbitmq", "postgres")
CONNECT_TIMEOUT = 30.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def _joins(url: str, mode: str, joins: int) -> dict[str, Any]:
    """One node with one client: ``joins`` fresh rooms entered, one at a time."""
    sep = "&" if "?" in url else "?"
    manager = create_manager(
        f"{url}{sep}channel=joins-{secrets.token_hex(4)}&subscriptions={mode}")
    sio = AsyncServer(client_manager=manager)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = socketio.AsyncClient()
    try:
        await manager.start()
        await client.connect(f"http://{HOST}:{port}", transports=["websocket"],
                             wait_timeout=CONNECT_TIMEOUT)
        sid = client.get_sid("/")
        assert sid is not None
        took: list[float] = []
        for i in range(joins):
            began = time.perf_counter()
            await sio.enter_room(sid, f"join-{i}")
            took.append((time.perf_counter() - began) * 1000)
        found: dict[str, Any] = {
            "join_p50_ms": round(statistics.median(took), 3),
            "join_p99_ms": round(_percentile(took, 0.99), 3),
            "subscriptions": manager.stats()["room_subscriptions"]}
        if mode == "rooms":
            backend = manager.backend
            keys = [room_key("/", f"batch-{i}") for i in range(joins)]
            began = time.perf_counter()
            await backend.subscribe_rooms(keys)
            found["batch_subscribe_ms"] = round((time.perf_counter() - began) * 1000, 1)
            everything = sorted(backend.room_keys)
            began = time.perf_counter()
            await backend.unsubscribe_rooms(everything)
            found["batch_unsubscribe_ms"] = round((time.perf_counter() - began) * 1000, 1)
            found["batch_unsubscribed_keys"] = len(everything)
        return found
    finally:
        await client.disconnect()
        await manager.stop()
        await runner.cleanup()


async def run_backend(name: str, url: str, joins: int) -> dict[str, Any]:
    found = {mode: await _joins(url, mode, joins) for mode in ("all", "rooms")}
    rooms, every = found["rooms"], found["all"]
    print(f"{name:9} joins ({joins}, one at a time): p50 {every['join_p50_ms']:.3f} -> "
          f"{rooms['join_p50_ms']:.3f} ms, p99 {every['join_p99_ms']:.3f} -> "
          f"{rooms['join_p99_ms']:.3f} ms (all -> rooms); {joins} keys in one batch: "
          f"subscribe {rooms['batch_subscribe_ms']} ms, unsubscribe "
          f"{rooms['batch_unsubscribed_keys']} keys {rooms['batch_unsubscribe_ms']} ms",
          flush=True)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_room_joins",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="all",
                        help=f"comma-separated, of {', '.join(BACKENDS)}, or all (default)")
    parser.add_argument("--joins", type=int, default=500,
                        help="rooms entered, and keys in a batch (default 500)")
    parser.add_argument("--json-dir", default=str(REPO_ROOT / "benchmarks" / "results"),
                        help="where room-joins.json goes; '-' for nowhere")
    args = parser.parse_args(argv)
    if args.backend == "all":
        args.backend = ",".join(BACKENDS)
    bad = [b for b in args.backend.split(",") if b not in BACKENDS]
    if bad:
        parser.error(f"unknown backend {bad}; choose from {', '.join(BACKENDS)} or all")
    if args.joins < 1:
        parser.error("--joins must be at least 1")
    return args


async def _main(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    results: dict[str, Any] = {}
    failed = False
    names = args.backend.split(",")
    if "memory" in names:
        results["memory"] = await run_backend("memory", "memory://joins", args.joins)
    others = ",".join(n for n in names if n != "memory")
    if others:
        async def run(name: str, url: str, _pids: list[int]) -> dict[str, Any]:
            return await run_backend(name, url, args.joins)

        found, failed = await each_broker(others, run)
        results.update(found)
    return results, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results, failed = asyncio.run(_main(args))
    if args.json_dir != "-":
        path = Path(args.json_dir) / "room-joins.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "benchmark": "bench_room_joins", "joins": args.joins,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "results": results, "environment": environment()}, indent=2) + "\n")
        print(f"results written to {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
