"""Per-room subscriptions: what each node receives against the share of rooms it holds.

    python -m benchmarks.bench_routing [--backend redis,...] [--mode all,rooms]
        [--nodes 8] [--shares 0.125,0.25,0.5,1] [--rooms 200] [--emits 2000]
        [--everyone 20] [--clients-per-node 2] [--in-process]
        [--json-dir benchmarks/results]

Per backend, on a broker started from local binaries (``local://`` needs none: the
emitting node hosts the hub; ``memory://`` runs in this process only), and for each
``subscriptions`` mode with fresh nodes on a fresh channel:

- ``--nodes`` server nodes (``python -m benchmarks.routing_node``, one process each;
  with ``--in-process``, and always on ``memory://``, aiohttp apps in this process)
  and one more node, the emitter, with no clients;
- node i holds ``shares[i % len(shares)]`` of the ``--rooms`` rooms, a run of
  consecutive rooms from its own offset; its ``--clients-per-node`` python-socketio
  ``AsyncClient`` s (in this process) split them, each entering its rooms with
  server-side ``enter_room`` (a room has one member on each node that holds it);
- the emitter sends ``--emits`` broadcasts spread uniformly over the rooms (the i-th
  to room ``i % rooms``) and ``--everyone`` broadcasts to everyone among them, each
  emit awaited (ordered);
- then, per node: broadcasts received from other nodes over pub/sub (the delta of
  ``manager.stats()["received_broadcasts"]``), per 1,000 emitted; the events its
  clients got; its room subscriptions; its CPU seconds (``/proc/PID/stat``) from the
  first emit until every count was complete.

The run fails, loudly, unless every node's clients got exactly what the room
membership implies (each broadcast to a room it holds once, each broadcast to
everyone once per client) and every node received exactly what its mode implies
(``all``: every broadcast; ``rooms``: those to its rooms and those to everyone).
Loopback only; every loop and every wait is bounded; every process is stopped on
exit, on failure, on SIGTERM or Ctrl-C. Results: ``<json-dir>/routing-<backend>.json``.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiohttp import web

from socketio_adapters.cluster.routing import MODES

from .bench_cross_node import BenchError, Child, Children, cpu_seconds, tree_cpu_seconds
from .environment import REPO_ROOT, each_broker, environment
from .node import HOST
from .routing_node import EVERYONE, RoutingNode, held_rooms, room_name, stream_plan
from .runs import cancel_on_sigterm, load_average, log, run_to_end

BACKENDS = ("redis", "nats", "rabbitmq", "postgres", "local", "memory")
WAIT = 120.0
"""Bound of every wait (seconds)."""
STALL = 15.0
"""Seconds without progress, once the emitter is done, that mean events were lost."""
QUIET = 0.5
"""Seconds to wait, once every count is complete, for any extra message."""

_RUNNING: list[Children] = []
"""Every process group started, for the synchronous last resort in :func:`main`."""


# ---------------------------------------------------------------------- the nodes


@dataclass
class Node:
    """One server node: a process (``child``) or an app in this process (``runner``)."""

    name: str
    url: str
    child: Child | None = None
    runner: web.AppRunner | None = None
    inner: RoutingNode | None = None

    @property
    def pid(self) -> int | None:
        return self.child.proc.pid if self.child is not None else None

    def log_tail(self) -> str:
        return self.child.log_tail() if self.child is not None else "(in this process)"


class Launcher:
    """Starts nodes as processes or, ``in_process``, as aiohttp apps on this loop;
    :meth:`stop_all` ends every one of them."""

    def __init__(self, children: Children, in_process: bool) -> None:
        self.children = children
        self.in_process = in_process
        self.nodes: list[Node] = []

    async def start(self, name: str, url: str, channel: str, mode: str) -> Node:
        if not self.in_process:
            child = await self.children.spawn(
                name, sys.executable, "-m", "benchmarks.routing_node", "--url", url,
                "--channel", channel, "--subscriptions", mode)
            node = Node(name, child.url, child=child)
        else:
            inner = RoutingNode(url, channel, mode)
            runner = web.AppRunner(inner.app, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()  # runs on_startup: the manager subscribes here
            site = web.TCPSite(runner, HOST, 0)
            await site.start()
            port = int(runner.addresses[0][1])
            node = Node(name, f"http://{HOST}:{port}", runner=runner, inner=inner)
        self.nodes.append(node)
        return node

    async def stop_all(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in reversed(nodes):  # the first one last: it may host the local:// hub
            if node.child is not None:
                await self.children.stop(node.child)
            elif node.runner is not None:
                sio = node.inner.sio if node.inner is not None else None
                if sio is not None and sio.eio.sockets:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sio.eio.disconnect(), 2.0)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.runner.cleanup(), 10.0)


async def call(session: aiohttp.ClientSession, node: Node, method: str, endpoint: str,
               **params: str | int | float) -> dict[str, Any]:
    """An HTTP call to one of the node's endpoints."""
    query = {k: str(v) for k, v in params.items()}
    try:
        async with session.request(method, node.url + endpoint, params=query) as resp:
            body: dict[str, Any] = await resp.json()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise BenchError(f"{node.name} {method} {endpoint} failed ({exc!r}); its log:\n"
                         f"{node.log_tail()}") from exc
    if resp.status >= 400:
        raise BenchError(f"{node.name} {method} {endpoint}: {resp.status} {body}")
    return body


async def received(session: aiohttp.ClientSession, node: Node) -> dict[str, Any]:
    stats: dict[str, Any] = (await call(session, node, "GET", "/bench/status"))["manager"]
    return stats


async def job_done(session: aiohttp.ClientSession, node: Node,
                   timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] | None = (await call(session, node, "GET",
                                                 "/bench/status"))["job"]
        if job is None:
            raise BenchError(f"{node.name} has no job")
        if job["error"]:
            raise BenchError(f"{node.name}'s {job['kind']} job failed: {job['error']}")
        if job["done"]:
            return job
        if time.monotonic() > deadline:
            raise BenchError(f"{node.name}'s {job['kind']} job not done in {timeout:g}s")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- the clients


class Member:
    """A python-socketio client that counts the events it gets, by name."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.counts: dict[str, int] = {"room": 0, "everyone": 0, "warm": 0}
        for name in self.counts:
            self.sio.on(name, self._counter(name))

    def _counter(self, name: str) -> Callable[..., None]:
        def count(*_args: Any) -> None:
            self.counts[name] += 1

        return count

    async def connect(self, url: str) -> None:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=10)

    async def join(self, rooms: list[str]) -> None:
        joined = await self.sio.call("join_rooms", rooms, timeout=30)
        if joined != len(rooms):
            raise BenchError(f"joined {joined} rooms of {len(rooms)}")

    def reset(self) -> None:
        for name in self.counts:
            self.counts[name] = 0

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)


@dataclass
class Holder:
    """A receiving node, its share of the rooms and its clients."""

    node: Node
    share: float
    rooms: list[int]
    members: list[Member] = field(default_factory=list)

    def delivered(self) -> int:
        return sum(m.counts["room"] + m.counts["everyone"] for m in self.members)


# ---------------------------------------------------------------------- one mode


def share_text(share: float) -> str:
    return str(Fraction(share).limit_denominator(64))


async def wait_counts(what: str, expected: list[int],
                      progress: Callable[[], Awaitable[list[int]]]
                      ) -> tuple[list[int], float]:
    """Wait until each count reaches its expected value, then :data:`QUIET` seconds
    more for extras; returns the final counts and when they were complete. Raises
    :class:`BenchError` after :data:`STALL` seconds without progress or :data:`WAIT`
    in all."""
    began = time.monotonic()
    last, changed = None, began
    while True:
        counts = await progress()
        if all(c >= e for c, e in zip(counts, expected, strict=True)):
            complete = time.monotonic()
            await asyncio.sleep(QUIET)
            return await progress(), complete
        now = time.monotonic()
        if counts != last:
            last, changed = counts, now
        elif now - changed > STALL or now - began > WAIT:
            short = [f"node-{k}: {c} of {e}" for k, (c, e)
                     in enumerate(zip(counts, expected, strict=True)) if c < e]
            raise BenchError(f"{what}: messages lost ({', '.join(short)}; nothing more "
                             f"for {now - changed:.0f}s)")
        await asyncio.sleep(0.05)


async def run_mode(launcher: Launcher, session: aiohttp.ClientSession, url: str,
                   broker_pids: list[int], mode: str, args: argparse.Namespace
                   ) -> dict[str, Any]:
    """One cluster in ``mode``: start it, place the members, stream, count, stop."""
    channel = f"routing-{secrets.token_hex(4)}"
    emitter = await launcher.start("emitter", url, channel, mode)  # first: local:// hub
    nodes = await asyncio.gather(*(launcher.start(f"node-{i}", url, channel, mode)
                                   for i in range(args.nodes)))
    holders = []
    for i, node in enumerate(nodes):
        share = args.shares[i % len(args.shares)]
        holders.append(Holder(node, share, held_rooms(i, args.nodes, share, args.rooms)))
    for h in holders:
        h.members = [Member() for _ in range(args.clients_per_node)]
    members = [m for h in holders for m in h.members]
    try:
        await asyncio.gather(*(m.connect(h.node.url) for h in holders for m in h.members))
        await asyncio.gather(*(
            m.join([room_name(r) for r in h.rooms[c::len(h.members)]])
            for h in holders for c, m in enumerate(h.members)))
        return await measure(session, emitter, holders, broker_pids, mode, args)
    finally:
        await asyncio.gather(*(m.close() for m in members))
        await launcher.stop_all()


async def measure(session: aiohttp.ClientSession, emitter: Node, holders: list[Holder],
                  broker_pids: list[int], mode: str, args: argparse.Namespace
                  ) -> dict[str, Any]:
    # one broadcast to everyone first: every node's path works end to end
    await call(session, emitter, "POST", "/bench/warm")

    async def warm() -> list[int]:
        return [sum(m.counts["warm"] for m in h.members) for h in holders]

    await wait_counts(f"{mode}: warm-up", [len(h.members) for h in holders], warm)
    for h in holders:
        for m in h.members:
            m.reset()
    nodes = [h.node for h in holders]
    before = await asyncio.gather(*(received(session, n) for n in nodes))
    pids = {n.name: n.pid for n in [emitter, *nodes] if n.pid is not None}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    broker_before = broker_cpu(broker_pids)
    process_before = time.process_time()
    plan = stream_plan(args.emits, args.rooms, args.everyone)
    everyone = plan.count(EVERYONE)
    to_rooms = [0] * args.rooms
    for k in plan:
        if k != EVERYONE:
            to_rooms[k] += 1
    held = [sum(to_rooms[r] for r in h.rooms) for h in holders]
    want_delivered = [held[i] + everyone * len(h.members) for i, h in enumerate(holders)]
    want_received = ([len(plan)] * len(holders) if mode == "all"
                     else [held[i] + everyone for i in range(len(holders))])

    async def delivered() -> list[int]:
        return [h.delivered() for h in holders]

    async def got() -> list[int]:
        now = await asyncio.gather(*(received(session, n) for n in nodes))
        return [a["received_broadcasts"] - b["received_broadcasts"]
                for a, b in zip(now, before, strict=True)]

    async def emit() -> float:
        await call(session, emitter, "POST", "/routing/stream", rooms=args.rooms,
                   emits=args.emits, everyone=args.everyone, seconds=WAIT / 2)
        job = await job_done(session, emitter, WAIT)
        if job["n"] < len(plan):
            raise BenchError(f"{mode}: only {job['n']} of {len(plan)} broadcasts emitted "
                             f"in {WAIT / 2:g}s")
        return time.monotonic()

    began = time.monotonic()
    # the clients are counted while the emitter runs: when the last event arrived
    waiting = asyncio.ensure_future(wait_counts(f"{mode}: deliveries to the clients",
                                                want_delivered, delivered))
    try:
        emitted_at = await emit()
        got_delivered, delivered_at = await waiting
    finally:
        waiting.cancel()
    got_received, _ = await wait_counts(f"{mode}: broadcasts received by the nodes",
                                        want_received, got)
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    broker_after = broker_cpu(broker_pids)
    process_used = time.process_time() - process_before
    stats = await asyncio.gather(*(received(session, n) for n in nodes))
    wrong = [f"{h.node.name}: {what} {g}, expected {w}"
             for h, gd, wd, gr, wr in zip(holders, got_delivered, want_delivered,
                                          got_received, want_received, strict=True)
             for what, g, w in (("delivered", gd, wd), ("received", gr, wr)) if g != w]
    if wrong:
        raise BenchError(f"{mode}: counts differ from what the room membership implies: "
                         + "; ".join(wrong))

    def used(name: str) -> float | None:
        a, b = cpu_after.get(name), cpu_before.get(name)
        return None if a is None or b is None else round(a - b, 3)

    emitted = len(plan)
    per_node = [{
        "node": h.node.name, "share": h.share, "share_text": share_text(h.share),
        "rooms_held": len(h.rooms), "clients": len(h.members),
        "room_broadcasts_to_its_rooms": held[i],
        "received": got_received[i], "received_expected": want_received[i],
        "received_per_1000_emitted": round(got_received[i] / emitted * 1000, 1),
        "delivered": got_delivered[i], "delivered_expected": want_delivered[i],
        "room_subscriptions": stats[i]["room_subscriptions"],
        "cpu_s": used(h.node.name),
    } for i, h in enumerate(holders)]
    return {
        "emitted": emitted, "to_rooms": emitted - everyone, "to_everyone": everyone,
        "emit_seconds": round(emitted_at - began, 3),
        "delivered_seconds": round(delivered_at - began, 3),
        "emitter_cpu_s": used("emitter"),
        "broker_cpu_s": (None if broker_before is None or broker_after is None
                         else round(broker_after - broker_before, 3)),
        "this_process_cpu_s": round(process_used, 3),
        "nodes": per_node,
        "received_total": sum(got_received), "delivered_total": sum(got_delivered),
    }


def broker_cpu(pids: list[int]) -> float | None:
    if not pids:
        return None
    values = [tree_cpu_seconds(p) for p in pids]
    return sum(v for v in values if v is not None)


# ---------------------------------------------------------------------- report


def print_table(backend: str, results: dict[str, Any]) -> None:
    modes = [m for m in MODES if m in results and "nodes" in results[m]]
    if not modes:
        return
    first = results[modes[0]]
    head = ["node", "share", "rooms"]
    for m in modes:
        head += [f"{m}: received", f"{m}: per 1,000", f"{m}: delivered", f"{m}: CPU s"]
    if "rooms" in modes:
        head.append("rooms: subscriptions")
    rows = []
    for i, n in enumerate(first["nodes"]):
        row = [n["node"], n["share_text"], str(n["rooms_held"])]
        for m in modes:
            r = results[m]["nodes"][i]
            cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}"
            row += [f"{r['received']:,}", f"{r['received_per_1000_emitted']:.0f}",
                    f"{r['delivered']:,}", cpu]
        if "rooms" in modes:
            row.append(str(results["rooms"]["nodes"][i]["room_subscriptions"]))
        rows.append(row)
    totals = ["total", "", ""]
    for m in modes:
        cpus = [r["cpu_s"] for r in results[m]["nodes"] if r["cpu_s"] is not None]
        totals += [f"{results[m]['received_total']:,}", "",
                   f"{results[m]['delivered_total']:,}",
                   f"{sum(cpus):.2f}" if cpus else "-"]
    if "rooms" in modes:
        totals.append("")
    rows.append(totals)
    print(f"\n{backend}: {first['emitted']:,} broadcasts emitted ({first['to_rooms']:,} to "
          f"rooms, {first['to_everyone']} to everyone)")
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join("---" if k == 0 else "---:" for k in range(len(head))) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for m in modes:
        r = results[m]
        print(f"{m}: emitted in {r['emit_seconds']:.2f}s, the clients had every event "
              f"after {r['delivered_seconds']:.2f}s;"
              f" emitter CPU {r['emitter_cpu_s']} s, broker CPU {r['broker_cpu_s']} s, "
              f"this process {r['this_process_cpu_s']} s")
    print(flush=True)


# ---------------------------------------------------------------------- main


async def run_backend(name: str, url: str, broker_pids: list[int],
                      args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    in_process = args.in_process or name == "memory"
    logdir = Path(tempfile.mkdtemp(prefix=f"bench-routing-{name}-"))
    children = Children(logdir)
    _RUNNING.append(children)
    launcher = Launcher(children, in_process)
    results: dict[str, Any] = {}
    failed = False
    load = os.getloadavg()
    how = "in-process" if in_process else "processes"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for mode in args.mode:
                log(args.began, f"{name} {mode}: {args.nodes} nodes ({how}) + an emitter, "
                    f"{args.rooms} rooms, {args.emits:,} room broadcasts + "
                    f"{args.everyone} to everyone")
                try:
                    results[mode] = await run_mode(launcher, session, url, broker_pids,
                                                   mode, args)
                except BenchError as exc:
                    failed = True
                    results[mode] = {"error": str(exc)}
                    print(f"  {name} {mode}: ERROR: {exc}", file=sys.stderr, flush=True)
                    await launcher.stop_all()
    finally:
        await launcher.stop_all()
        await children.stop_all()
        if failed:
            print(f"{name}: node logs kept in {logdir}", file=sys.stderr)
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    print_table(name, results)
    write_result(args, name, url, how, results, env, load)
    if failed:
        raise BenchError(f"{name}: a mode failed")
    return results


def write_result(args: argparse.Namespace, backend: str, url: str, how: str,
                 results: dict[str, Any], env: dict[str, Any],
                 load: tuple[float, float, float]) -> None:
    if args.json_dir == "-":
        return
    path = Path(args.json_dir) / f"routing-{backend}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench_routing", "backend": backend, "url": url, "nodes_run_as": how,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": list(load),
        "settings": {k: getattr(args, k) for k in ("mode", "nodes", "shares", "rooms",
                                                   "emits", "everyone",
                                                   "clients_per_node")},
        "results": results, "environment": env}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path}", flush=True)


def _shares(text: str) -> list[float]:
    try:
        values = [float(Fraction(v.strip())) for v in text.split(",") if v.strip()]
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError("comma-separated fractions, e.g. 1/8,0.5,1"
                                         ) from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError("comma-separated shares in (0, 1]")
    return values


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from "
                                         f"{', '.join(known)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_routing",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="redis",
                        type=lambda t: _names(t, BACKENDS, "backend"),
                        help=f"comma-separated, of {', '.join(BACKENDS)} (default redis)")
    parser.add_argument("--mode", default=list(MODES),
                        type=lambda t: _names(t, MODES, "mode"),
                        help="subscriptions modes, comma-separated (default all,rooms)")
    parser.add_argument("--nodes", type=int, default=8,
                        help="receiving nodes (default 8; the emitter is one more)")
    parser.add_argument("--shares", type=_shares, default=[0.125, 0.25, 0.5, 1.0],
                        help="share of the rooms node i holds: shares[i %% len(shares)] "
                             "(default 1/8,1/4,1/2,1)")
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--emits", type=int, default=2_000,
                        help="broadcasts to one room each (default 2000)")
    parser.add_argument("--everyone", type=int, default=20,
                        help="broadcasts to everyone among them (default 20)")
    parser.add_argument("--clients-per-node", type=int, default=2)
    parser.add_argument("--in-process", action="store_true",
                        help="run the nodes in this process (always so on memory://)")
    parser.add_argument("--json-dir", default=str(REPO_ROOT / "benchmarks" / "results"),
                        help="where routing-<backend>.json go; '-' for nowhere")
    args = parser.parse_args(argv)
    for option in ("nodes", "rooms", "emits", "clients_per_node"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.everyone < 0:
        parser.error("--everyone must be at least 0")
    return args


async def _main(args: argparse.Namespace, env: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    cancel_on_sigterm()

    async def run(name: str, url: str, broker: list[int]) -> dict[str, Any]:
        return await run_backend(name, url, broker, args, env)

    results: dict[str, Any] = {}
    failed = False
    for name in args.backend:
        if name == "memory":
            try:
                results[name] = await run(name, f"memory://bench-routing-"
                                          f"{secrets.token_hex(4)}", [])
            except BenchError as exc:
                failed = True
                results[name] = {"error": str(exc)}
            continue
        found, bad = await each_broker(name, run)
        results.update(found)
        failed = failed or bad
    return results, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.began = time.monotonic()
    env = environment()
    print(f"bench_routing: {', '.join(args.mode)} on {', '.join(args.backend)}; "
          f"{env['cpu_count']} CPUs; {load_average()}", flush=True)
    outcome = run_to_end(_main(args, env), _RUNNING)
    if outcome is None:
        return 130
    print(f"bench_routing: done in {time.monotonic() - args.began:.1f}s; "
          f"{load_average()}", flush=True)
    return 1 if outcome[1] else 0


if __name__ == "__main__":
    sys.exit(main())
