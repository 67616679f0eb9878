"""Sessions without sticky routing: what forwarding costs, in one run.

    python -m benchmarks.bench_forwarding [--backend local,redis] [--calls 300]
        [--clients 20] [--events 200] [--sessions 200]
        [--json benchmarks/results/forwarding.json]

Three node processes (:mod:`benchmarks.forwarding_node`) per backend, behind one
in-process reverse proxy whose routing is the only thing that changes between
scenarios, so its own cost is the same in each:

- ``sticky``: every handshake to the first node, every later request of a session
  to the node that owns it;
- ``forward``: every handshake to the first node, every later request to the
  second (each one forwarded, each websocket relayed there);
- ``round-robin``: each request to the next node, as nginx's plain upstream.

Measured: a round trip (``call("echo")``) over long-polling and over websocket,
sticky against forward (p50, p95, mean, in ms); events per second delivered to
long-polling clients behind round-robin against sticky; resident memory per session
on the owner and on the forwarding node, for idle long-polling sessions and for
relayed websockets, against sticky. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import engineio
import socketio
from aiohttp import web

from conformance.proxy import splice

from .environment import REPO_ROOT, each_backend, environment

WAIT = 60.0
"""Bound of every wait (seconds)."""
# python-engineio's client refuses a long-polling answer of more than 16 packets
# (docs/README.md, known limits); a burst fills them well past that
engineio.payload.Payload.max_decode_packets = 4096


class Nodes:
    """Three node processes on one backend URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    def start(self, count: int = 3) -> None:
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.forwarding_node", "--url", self.url],
                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a node did not start")
            self.ports.append(int(json.loads(line)["port"]))

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


class Router:
    """The reverse proxy; ``mode`` picks the node of each request."""

    def __init__(self, ports: list[int], owners: dict[str, int]) -> None:
        self.ports = ports
        self.owners = owners  # node uid -> port
        self.mode = "sticky"
        self._next = itertools.cycle(ports)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.relay)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        self.http: aiohttp.ClientSession | None = None
        self.port = 0

    def choose(self, sid: str | None) -> int:
        if self.mode == "round-robin":
            return next(self._next)
        if sid is None:  # handshakes: the first node owns every session
            return self.ports[0]
        owner = self.owners[sid[:16]]
        if self.mode == "sticky":
            return owner
        return self.ports[(self.ports.index(owner) + 1) % len(self.ports)]

    async def relay(self, request: web.Request) -> web.StreamResponse:
        assert self.http is not None
        port = self.choose(request.query.get("sid"))
        url = f"http://127.0.0.1:{port}{request.path_qs}"
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._websocket(request, url.replace("http", "ws", 1))
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        async with self.http.request(request.method, url, data=await request.read(),
                                     headers=headers) as reply:
            return web.Response(status=reply.status, body=await reply.read(),
                                content_type=reply.content_type)

    async def _websocket(self, request: web.Request, url: str) -> web.WebSocketResponse:
        assert self.http is not None
        async with self.http.ws_connect(url) as node:
            return await splice(request, node)

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=WAIT),
            connector=aiohttp.TCPConnector(limit=0))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        await self.runner.cleanup()
        if self.http is not None:
            await self.http.close()


async def _whoami(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/whoami") as reply:
        found: dict[str, Any] = await reply.json()
        return found


async def _clients(url: str, count: int, transports: list[str]) -> list[socketio.AsyncClient]:
    clients = []
    for _ in range(count):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(url, transports=transports, wait_timeout=WAIT)
        clients.append(client)
    if "websocket" in transports:  # until every upgrade is done
        deadline = time.monotonic() + WAIT
        while any(c.transport() != "websocket" for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not upgrade to websocket")
            await asyncio.sleep(0.02)
    return clients


async def _close(clients: list[socketio.AsyncClient]) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients)), WAIT)


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(ordered[len(ordered) // 2] * 1000, 3),
            "p95": round(ordered[int(len(ordered) * 0.95)] * 1000, 3),
            "mean": round(statistics.fmean(ordered) * 1000, 3)}


async def round_trips(router: Router, transports: list[str], calls: int
                      ) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mode in ("sticky", "forward"):
        router.mode = mode
        client, = await _clients(f"http://127.0.0.1:{router.port}", 1, transports)
        for i in range(20):  # warm-up
            await client.call("echo", i, timeout=WAIT)
        samples = []
        for i in range(calls):
            started = time.perf_counter()
            await client.call("echo", i, timeout=WAIT)
            samples.append(time.perf_counter() - started)
        await _close([client])
        found[mode] = _ms(samples)
    found["ratio_p50"] = round(found["forward"]["p50"] / found["sticky"]["p50"], 2)
    return found


async def delivery(router: Router, clients: int, events: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mode in ("sticky", "round-robin"):
        router.mode = mode
        connected = await _clients(f"http://127.0.0.1:{router.port}", clients,
                                   ["polling"])
        got = [0] * clients
        done = asyncio.Event()

        def counter(index: int, got: list[int] = got, done: asyncio.Event = done) -> Any:
            async def on_event(*args: Any) -> None:
                got[index] += 1
                if sum(got) == clients * events:
                    done.set()
            return on_event

        for index, client in enumerate(connected):
            client.on("e", counter(index))
        started = time.perf_counter()
        await connected[0].emit("burst", events)
        try:
            await asyncio.wait_for(done.wait(), WAIT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"{mode}: {sum(got)} of {clients * events} events "
                               f"arrived in {WAIT}s") from None
        seconds = time.perf_counter() - started
        await _close(connected)
        found[mode] = {"events": clients * events, "seconds": round(seconds, 3),
                       "events_per_s": round(clients * events / seconds)}
    found["ratio"] = round(found["round-robin"]["events_per_s"]
                           / found["sticky"]["events_per_s"], 2)
    return found


async def memory(router: Router, sessions: int) -> dict[str, Any]:
    assert router.http is not None
    http = router.http
    found: dict[str, Any] = {}
    for mode, transports in (("sticky", ["polling"]), ("forward", ["polling"]),
                             ("sticky", ["polling", "websocket"]),
                             ("forward", ["polling", "websocket"])):
        router.mode = mode
        before = [await _whoami(http, p) for p in router.ports]
        clients = await _clients(f"http://127.0.0.1:{router.port}", sessions, transports)
        await asyncio.sleep(1.0)
        after = [await _whoami(http, p) for p in router.ports]
        grown = [a["rss"] - b["rss"] for a, b in zip(after, before, strict=True)]
        owned = after[0]["sessions"] - before[0]["sessions"]
        relays = [a["relays"] for a in after]
        await _close(clients)
        key = f"{mode} {'websocket' if len(transports) > 1 else 'polling'}"
        found[key] = {"owner_kib_per_session": round(grown[0] / sessions / 1024, 2),
                      "edge_kib_per_session": round(grown[1] / sessions / 1024, 2),
                      "owner_sessions": owned, "relays_held": relays[:2]}
    return found


async def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    nodes = Nodes(url)
    await asyncio.to_thread(nodes.start)
    router: Router | None = None
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + WAIT
            while True:
                who = [await _whoami(http, p) for p in nodes.ports]
                if all(w["nodes"] == len(nodes.ports) for w in who):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the nodes did not see each other")
                await asyncio.sleep(0.1)
        # two nodes own every session: the handshakes go round-robin over the first two
        router = Router(nodes.ports, {w["uid"]: w_port for w, w_port in
                                      zip(who, nodes.ports, strict=True)})
        await router.start()
        results: dict[str, Any] = {"url": url}
        print(f"{name}: long-polling round trips", flush=True)
        results["polling_round_trip_ms"] = await round_trips(router, ["polling"],
                                                             args.calls)
        print(f"{name}: websocket round trips", flush=True)
        results["websocket_round_trip_ms"] = await round_trips(
            router, ["polling", "websocket"], args.calls)
        print(f"{name}: delivery to long-polling clients", flush=True)
        results["polling_delivery"] = await delivery(router, args.clients, args.events)
        print(f"{name}: memory per session", flush=True)
        results["memory"] = await memory(router, args.sessions)
        return results
    finally:
        if router is not None:
            await router.stop()
        await asyncio.to_thread(nodes.stop)


def _print(name: str, r: dict[str, Any]) -> None:
    print(f"\n== {name}")
    for key in ("polling_round_trip_ms", "websocket_round_trip_ms"):
        f = r[key]
        print(f"{key}: sticky p50 {f['sticky']['p50']} p95 {f['sticky']['p95']} | "
              f"forward p50 {f['forward']['p50']} p95 {f['forward']['p95']} | "
              f"ratio p50 {f['ratio_p50']}")
    d = r["polling_delivery"]
    print(f"polling delivery: sticky {d['sticky']['events_per_s']} ev/s | round-robin "
          f"{d['round-robin']['events_per_s']} ev/s | ratio {d['ratio']}")
    for key, m in r["memory"].items():
        print(f"memory {key}: owner {m['owner_kib_per_session']} KiB/session, "
              f"forwarding node {m['edge_kib_per_session']} KiB/session "
              f"(sessions on the owner {m['owner_sessions']}, relays held on owner "
              f"and forwarding node {m['relays_held']})")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="local")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--json", default="benchmarks/results/forwarding.json")
    args = parser.parse_args()

    async def run(name: str, url: str) -> dict[str, Any]:
        result = await run_backend(name, url, args)
        _print(name, result)
        return result

    backends, failed = await each_backend(args.backend, run)
    report: dict[str, Any] = {"environment": environment(), "backends": backends}
    if args.json != "-":
        await asyncio.to_thread(Path(args.json).write_text,
                                json.dumps(report, indent=1, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
