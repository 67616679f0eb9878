"""The distributor mode's extra hop against a plain cluster node, in one run.

    python -m benchmarks.bench_distributor [--backend local,redis,...|all]
        [--events 5000] [--window 100] [--latency-calls 1000] [--emits 5000]
        [--repeats 3] [--json benchmarks/results/distributor-{backend}.json]

Per backend, on one broker started from local binaries (``local://`` needs none),
two scenarios, each with fresh processes (benchmarks/distributor_node.py) and one
python-socketio ``AsyncClient`` over websocket in this process:

- ``plain``: a cluster node that runs the handlers itself, the client connected to it;
- ``distributor``: an edge node (``EdgeRelay``) and an application server process
  running the same handlers; the client connected to the edge node.

Figures, each the median of ``--repeats`` runs (min and max kept):

- ``acked events/s``: the client sends ``--events`` events with an ack, at most
  ``--window`` waiting at once, and counts the acks;
- ``latency``: ``--latency-calls`` calls one after the other, p50 and p99 of their
  round trips;
- ``emits/s``: a handler emits ``--emits`` events to the client's sid, each awaited,
  and the client counts them.

The ratio distributor / plain says what the extra hop costs: each client event and
its ack cross the broker once more (edge node -> application server -> edge node),
and each emit to one client crosses it once (application server -> edge node).
Loopback only; every wait is bounded; every process is stopped on exit or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import socketio

from .bench_cross_node import BenchError, Child, Children, cpu_seconds, summarize_latency
from .distributor_node import NAMESPACE
from .environment import REPO_ROOT, each_backend, environment

WAIT = 120.0
"""Bound of every wait (seconds)."""
SLOW = {"kafka": 0.1}
"""Backends whose broker round trip is tens of milliseconds here (tansu: about 30 ms
from a publish to a subscriber, benchmarks/results/kafka.json), where every count is
scaled by this factor to keep a run within :data:`WAIT`."""
BACKENDS = "local,redis,redis-cluster,rabbitmq,nats,kafka,postgres"


async def _processes(children: Children, scenario: str, url: str) -> Child:
    """Start the scenario's processes; the one the client connects to."""
    sep = "&" if "?" in url else "?"
    channel_url = f"{url}{sep}channel=bench-{secrets.token_hex(4)}"

    def node(role: str) -> list[str]:
        return [sys.executable, "-m", "benchmarks.distributor_node", "--role", role,
                "--url", channel_url]

    if scenario == "plain":
        return await children.spawn("plain", *node("plain"))
    await children.spawn("app", *node("app"))
    return await children.spawn("edge", *node("edge"))


class Client:
    """The driver: a python-socketio client on :data:`NAMESPACE`."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received = 0
        self.all_in = asyncio.Event()
        self.expected = 0

        @self.sio.on("e", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
        def on_event(i: int) -> None:
            self.received += 1
            if self.received >= self.expected:
                self.all_in.set()

    async def connect(self, url: str) -> None:
        await self.sio.connect(url, namespaces=[NAMESPACE], transports=["websocket"],
                               wait_timeout=30)

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace=NAMESPACE, timeout=WAIT)

    async def acked(self, events: int, window: int) -> float:
        gate = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            async with gate:
                if await self.call("ping", i) != i:
                    raise BenchError(f"ping {i} acked with something else")

        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(events))), WAIT)
        return events / (time.perf_counter() - began)

    async def latency(self, calls: int) -> list[float]:
        out = []
        for i in range(calls):
            began = time.perf_counter()
            await self.call("ping", i)
            out.append(time.perf_counter() - began)
        return out

    async def emits(self, n: int) -> float:
        self.received, self.expected = 0, n
        self.all_in.clear()
        began = time.perf_counter()
        await self.call("burst", n)
        try:
            await asyncio.wait_for(self.all_in.wait(), WAIT)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.received} of {n} emitted events arrived") from None
        return n / (time.perf_counter() - began)


def _cpu(pids: list[int]) -> float:
    """CPU seconds used so far by the server processes (the broker's not counted)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def _spread(values: list[float]) -> dict[str, Any]:
    return {"runs": values, "median": statistics.median(values), "min": min(values),
            "max": max(values)}


async def _scenario(scenario: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    children = Children(Path(tempfile.mkdtemp(prefix="sioa-bench-dist-")))
    client = Client()
    try:
        entry = await _processes(children, scenario, url)
        await client.connect(entry.url)
        await client.acked(min(500, args.events), args.window)  # warm up
        await client.emits(min(100, args.emits))
        pids = [c.proc.pid for c in children.children]
        before = _cpu(pids)
        acked = [await client.acked(args.events, args.window) for _ in range(args.repeats)]
        middle = _cpu(pids)
        emits = [await client.emits(args.emits) for _ in range(args.repeats)]
        after = _cpu(pids)
        latency = summarize_latency(await client.latency(args.latency_calls))
    finally:
        await client.sio.disconnect()
        await children.stop_all()
    cpu = {"acked_ms_per_1000": 1e6 * (middle - before) / (args.events * args.repeats),
           "emits_ms_per_1000": 1e6 * (after - middle) / (args.emits * args.repeats)}
    result = {"acked_events_per_s": _spread(acked), "emits_per_s": _spread(emits),
              "latency": latency, "server_cpu": cpu}
    print(f"  {scenario:<12} acked {result['acked_events_per_s']['median']:>8,.0f} ev/s"
          f" ({cpu['acked_ms_per_1000']:.0f} ms CPU/1000)   emits "
          f"{result['emits_per_s']['median']:>8,.0f} ev/s ({cpu['emits_ms_per_1000']:.0f}"
          f" ms CPU/1000)   latency p50 {latency['p50_ms']:.2f} ms p99 "
          f"{latency['p99_ms']:.2f} ms", flush=True)
    return result


async def _backend(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    scale = SLOW.get(name, 1.0)
    if scale != 1.0:
        args = argparse.Namespace(**vars(args))
        for count in ("events", "emits", "latency_calls"):
            setattr(args, count, max(100, int(getattr(args, count) * scale)))
    print(f"{name}: {args.events} acked events, {args.emits} emits, "
          f"{args.latency_calls} calls per run", flush=True)
    plain = await _scenario("plain", url, args)
    distributor = await _scenario("distributor", url, args)
    ratios = {
        "acked_events_per_s": distributor["acked_events_per_s"]["median"]
        / plain["acked_events_per_s"]["median"],
        "emits_per_s": distributor["emits_per_s"]["median"] / plain["emits_per_s"]["median"],
        "latency_p50": distributor["latency"]["p50_ms"] / plain["latency"]["p50_ms"],
        "latency_p99": distributor["latency"]["p99_ms"] / plain["latency"]["p99_ms"],
        "server_cpu_acked": distributor["server_cpu"]["acked_ms_per_1000"]
        / plain["server_cpu"]["acked_ms_per_1000"],
        "server_cpu_emits": distributor["server_cpu"]["emits_ms_per_1000"]
        / plain["server_cpu"]["emits_ms_per_1000"],
    }
    print(f"  distributor / plain: acked {ratios['acked_events_per_s']:.2f}x, emits "
          f"{ratios['emits_per_s']:.2f}x, latency p50 {ratios['latency_p50']:.2f}x, "
          f"p99 {ratios['latency_p99']:.2f}x; server CPU per event: acked "
          f"{ratios['server_cpu_acked']:.2f}x, emits {ratios['server_cpu_emits']:.2f}x",
          flush=True)
    result = {"backend": name, "plain": plain, "distributor": distributor,
              "ratios": ratios, "settings": vars(args) | {"json": None},
              "environment": environment()}
    if args.json != "-":
        path = REPO_ROOT / args.json.format(backend=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _table(results: dict[str, Any]) -> str:
    lines = ["| backend | acked ev/s plain | distributor | ratio | emits/s plain "
             "| distributor | ratio | p50 ms plain | distributor | p99 ms plain "
             "| distributor | server CPU ms/1000 acked events plain | distributor |",
             "|" + " --- |" * 14]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} |" + " |" * 12)
            continue
        p, d, x = r["plain"], r["distributor"], r["ratios"]
        lines.append(
            f"| {name} | {p['acked_events_per_s']['median']:,.0f} "
            f"| {d['acked_events_per_s']['median']:,.0f} | {x['acked_events_per_s']:.2f}x "
            f"| {p['emits_per_s']['median']:,.0f} | {d['emits_per_s']['median']:,.0f} "
            f"| {x['emits_per_s']:.2f}x | {p['latency']['p50_ms']:.2f} "
            f"| {d['latency']['p50_ms']:.2f} | {p['latency']['p99_ms']:.2f} "
            f"| {d['latency']['p99_ms']:.2f} | {p['server_cpu']['acked_ms_per_1000']:.0f} "
            f"| {d['server_cpu']['acked_ms_per_1000']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="local",
                        help=f"comma-separated, or all ({BACKENDS})")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--emits", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/distributor-{backend}.json")
    args = parser.parse_args(argv)
    names = BACKENDS if args.backend == "all" else args.backend

    async def run(name: str, url: str) -> dict[str, Any]:
        return await _backend(name, url, args)

    results, failed = asyncio.run(each_backend(names, run))
    print(_table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
