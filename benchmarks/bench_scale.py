"""Scale benchmarks: many server nodes, many clients, on one broker.

    python -m benchmarks.bench_scale [--scenario nodes,clients] [--backend redis,...]
        [--node-counts 2,4,8] [--clients-per-node 50] [--broadcasts 200]
        [--clients 10000] [--client-nodes 4] [--rooms 1000] [--room-seconds 5]
        [--room-senders 8] [--fetch-nodes 2,4,8] [--fetch-calls 50]
        [--fetch-seconds 20] [--inbound 5] [--sessions 2000]
        [--json-dir benchmarks/results] [--anchor python|node]
        [--emits ordered|fire-and-forget] [--gc-threshold N]
        [--server python-socketio|socketio-adapters]

Per backend, on a broker started from local binaries (``local://`` needs none; its
first node hosts the hub), each scenario with fresh processes:

``nodes``
    2, 4 and 8 server nodes (``python -m benchmarks.scale_node``), each with
    ``--clients-per-node`` clients; the first node emits ``--broadcasts`` events to
    everyone. Delivered messages per second across all clients, CPU seconds per 1,000
    delivered events of each node (``/proc/PID/stat``), and the broker's CPU.
``clients``
    ``--clients`` clients (default 10,000) across ``--client-nodes`` nodes: the time to
    connect them all, one broadcast to all of them (until the last has it), a stream of
    room emits round-robin over ``--rooms`` rooms for ``--room-seconds`` by
    ``--room-senders`` concurrent loops (delivered messages per second), resident memory
    per connected socket (``VmRSS`` of each node before and after connecting), every
    client sending ``--inbound`` events to its node (events received per second
    across the nodes, CPU seconds per 1,000 received),
    ``fetch_sockets()`` latency against the node count (``--fetch-nodes``), and the
    memory of a saved recovery session (``--sessions`` clients on one node with
    connection state recovery on lose their transport, and the broker keeps their
    sessions).

The clients are raw Engine.IO/Socket.IO websockets in a few driver processes
(``python -m benchmarks.swarm_client``). Loopback only; every load loop is bounded
in count and time; every process is stopped on exit, on failure and on SIGTERM or
Ctrl-C. Results: ``<json-dir>/scale-<scenario>-<backend>.json``.

``--anchor node`` (with ``--backend redis`` only) runs the same scenarios on Node.js
socket.io nodes with ``@socket.io/redis-adapter`` instead of ours
(``benchmarks/js/scale_node.mjs``, see :mod:`benchmarks.scale_anchor`), for figures
to set ours against; it writes ``scale-<scenario>-redis-node.json``. The saved
recovery session is not measured there (that adapter has no recovery), and the JSON
says so.

Node's adapter publishes fire-and-forget; ours emit ordered by default (each ``await
sio.emit`` waits for the broker). ``--emits fire-and-forget`` runs our nodes with
``ordered=false``, the like-for-like comparison with ``--anchor node``, and writes
``scale-<scenario>-<backend>-ff.json``. Our nodes time CPython's cycle collector
(the room stream and the inbound events report its milliseconds); ``--gc-threshold N``
starts them with ``gc.set_threshold(N, 10, 10)`` and adds ``-gcN`` to the file's
name. Our nodes serve with python-socketio's ``AsyncServer`` on our manager;
``--server socketio-adapters`` gives them ``socketio_adapters.AsyncServer`` (which
starts event handlers without a task each) and adds ``-sioa``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .bench_cross_node import (
    BenchError,
    Child,
    Children,
    Control,
    cpu_seconds,
    percentile,
    tree_cpu_seconds,
    wait_all,
)
from .environment import REPO_ROOT, each_broker, environment
from .proc_readings import check_nofile, rss_bytes, tree_rss_bytes
from .runs import cancel_on_sigterm, load_average, log, run_to_end
from .scale_anchor import (
    ANCHORS,
    EMITS,
    NO_RECOVERY,
    SERVERS,
    anchor_environment,
    anchor_error,
    node_command,
    result_name,
)

SCENARIOS = ("nodes", "clients")
BACKENDS = ("local", "redis", "rabbitmq", "nats", "kafka", "postgres")
FD_MARGIN = 256
"""File descriptors a process needs beyond its sockets (broker, logs, control)."""
WAIT = 120.0
"""Bound of every wait for deliveries (seconds)."""
STALL = 15.0
"""Seconds without progress, once the sender is done, that mean events were lost."""

_RUNNING: list[Children] = []
"""Every process group started, for the synchronous last resort in :func:`main`."""


# ---------------------------------------------------------------------- the cluster


@dataclass
class Run:
    """One backend's run: its broker, processes and HTTP control."""

    backend: str
    url: str
    broker_pids: list[int]
    children: Children
    ctl: Control
    began: float
    swarm_count: int
    anchor: str = "python"
    emits: str = "ordered"
    gc_threshold: int = 0
    server: str = "python-socketio"

    def broker_cpu(self) -> float | None:
        if not self.broker_pids:
            return None
        values = [tree_cpu_seconds(p) for p in self.broker_pids]
        return sum(v for v in values if v is not None)

    async def broker_memory(self, hub: Child | None) -> dict[str, Any]:
        """Where this backend keeps session records, and its memory now: Redis's
        ``used_memory`` (exact), else the resident memory of the broker's processes
        (or of the node hosting the ``local://`` hub)."""
        if self.backend == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self.url)
            try:
                info = await client.info("memory")
            finally:
                await client.aclose()
            return {"how": "redis INFO used_memory", "bytes": int(info["used_memory"])}
        if self.broker_pids:
            return {"how": "VmRSS of the broker's processes",
                    "bytes": tree_rss_bytes(self.broker_pids)}
        pid = hub.proc.pid if hub is not None else 0
        return {"how": "VmRSS of the node hosting the local:// hub",
                "bytes": rss_bytes(pid) or 0}


@dataclass
class Cluster:
    nodes: list[Child]
    swarms: list[Child]
    sockets: int = 0
    node_pids: dict[str, int] = field(default_factory=dict)


async def start_cluster(run: Run, node_count: int, clients: int, *,
                        recovery: bool = False, swarms: int | None = None) -> Cluster:
    """``node_count`` nodes on one fresh channel (the first one first: with
    ``local://`` it hosts the hub) and the swarm processes for ``clients`` clients."""
    swarm_count = max(1, min(swarms or run.swarm_count, clients))
    per_node = math.ceil(clients / node_count) + FD_MARGIN
    per_swarm = math.ceil(clients / swarm_count) + FD_MARGIN
    check_nofile(max(per_node, per_swarm))
    channel = f"scale-{secrets.token_hex(4)}"
    cmd = node_command(run.anchor, run.url, channel, per_node, recovery, run.emits,
                       run.gc_threshold, run.server)
    first = await run.children.spawn("node-0", *cmd)
    rest = await asyncio.gather(*(run.children.spawn(f"node-{k}", *cmd)
                                  for k in range(1, node_count)))
    swarm_cmd = [sys.executable, "-m", "benchmarks.swarm_client", "--nofile",
                 str(per_swarm)]
    swarm_procs = await asyncio.gather(*(run.children.spawn(f"swarm-{k}", *swarm_cmd)
                                         for k in range(swarm_count)))
    nodes = [first, *rest]
    return Cluster(nodes, list(swarm_procs),
                   node_pids={n.name: n.proc.pid for n in nodes})


async def stop_cluster(run: Run, cluster: Cluster) -> None:
    await asyncio.gather(*(run.ctl.call(s, "POST", "/swarm/close") for s in cluster.swarms),
                         return_exceptions=True)
    for child in [*cluster.swarms, *cluster.nodes[1:], cluster.nodes[0]]:
        await run.children.stop(child)


async def connect_clients(run: Run, cluster: Cluster, clients: int, rooms: int,
                          at_once: int) -> float:
    """Connect ``clients`` clients spread evenly over the nodes (client i on node
    ``i % nodes``, in room ``r{(i // nodes) % rooms}``); returns the seconds until
    the last one was connected."""
    urls = ",".join(n.url for n in cluster.nodes)
    share = math.ceil(clients / len(cluster.swarms))
    began = time.monotonic()
    first = 0
    for swarm in cluster.swarms:
        count = min(share, clients - first)
        await run.ctl.call(swarm, "POST", "/swarm/connect", urls=urls, count=count,
                           first=first, nodes=len(cluster.nodes), rooms=rooms,
                           at_once=max(1, at_once // len(cluster.swarms)))
        first += count
    deadline = began + WAIT
    while True:
        states = await swarm_states(run, cluster)
        if all(s["connect_done"] for s in states):
            break
        if time.monotonic() > deadline:
            done = sum(s["connected"] for s in states)
            raise BenchError(f"only {done} of {clients} clients connected in {WAIT:g}s")
        await asyncio.sleep(0.1)
    seconds = time.monotonic() - began
    failed = sum(s["failed"] for s in states)
    if failed:
        errors = [e for s in states for e in s["errors"]]
        raise BenchError(f"{failed} of {clients} clients could not connect: {errors}")
    cluster.sockets = clients
    return seconds


async def swarm_states(run: Run, cluster: Cluster) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(run.ctl.call(s, "GET", "/swarm/status")
                                       for s in cluster.swarms)))


async def reset_counts(run: Run, cluster: Cluster) -> None:
    await asyncio.gather(*(run.ctl.call(s, "POST", "/swarm/reset") for s in cluster.swarms))


async def wait_delivered(run: Run, cluster: Cluster, what: str, event: str, expected: int,
                         sender_done: Callable[[], Awaitable[bool]]) -> float:
    """Wait until the swarms counted ``expected`` ``event`` events; return when the
    last one arrived (``time.monotonic()``, system-wide)."""

    async def progress() -> tuple[int, float | None]:
        states = await swarm_states(run, cluster)
        count = sum(s["counts"].get(event, 0) for s in states)
        lasts = [s["last"][event] for s in states if event in s["last"]]
        return count, max(lasts) if lasts else None

    return await wait_all(what, expected, progress, sender_done, WAIT, STALL)


async def one_broadcast(run: Run, cluster: Cluster) -> float:
    """One ``one`` event from the first node to every client; seconds until the last
    client had it."""
    await reset_counts(run, cluster)
    sent = (await run.ctl.call(cluster.nodes[0], "POST", "/scale/one"))["sent"]

    async def done() -> bool:
        return True

    last = await wait_delivered(run, cluster, "one broadcast", "one", cluster.sockets, done)
    return float(last - sent)


async def gc_readings(run: Run, cluster: Cluster) -> list[dict[str, Any]] | None:
    """Each node's cycle-collector clock (``GET /scale/gc``); None for Node's nodes."""
    if run.anchor == "node":
        return None
    return list(await asyncio.gather(*(run.ctl.call(n, "GET", "/scale/gc")
                                       for n in cluster.nodes)))


def gc_used(before: list[dict[str, Any]] | None,
            after: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The nodes' collector time and collections between two readings."""
    if before is None or after is None:
        return None
    return {"ms": round(sum(a["seconds"] - b["seconds"]
                            for a, b in zip(after, before, strict=True)) * 1000, 1),
            "collections": sum(a["collections"] - b["collections"]
                               for a, b in zip(after, before, strict=True)),
            "full": sum(a["full"] - b["full"] for a, b in zip(after, before, strict=True))}


def gc_text(used: dict[str, Any] | None) -> str:
    if used is None:
        return ""
    return f"; cycle collector {used['ms']:,.0f} ms ({used['full']} full)"


def job_done(run: Run, node: Child) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        return bool((await run.ctl.job(node))["done"])

    return done


class CpuWindow:
    """CPU seconds each process used between :meth:`start` and :meth:`stop`."""

    def __init__(self, run: Run, pids: dict[str, int]) -> None:
        self.run = run
        self.pids = pids
        self.before: dict[str, float | None] = {}

    def _snapshot(self) -> dict[str, float | None]:
        snap = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        snap["broker"] = self.run.broker_cpu()
        return snap

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        return {name: round(after[name] - start, 3)  # type: ignore[operator]
                for name, start in self.before.items()
                if start is not None and after.get(name) is not None}


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(percentile(ms, 99), 3), "max_ms": round(max(ms), 3)}


# ---------------------------------------------------------------------- scenario: nodes


async def scenario_nodes(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for count in args.node_counts:
        clients = count * args.clients_per_node
        log(run.began, f"{run.backend} nodes: {count} nodes, {clients} clients")
        cluster = await start_cluster(run, count, clients)
        try:
            await connect_clients(run, cluster, clients, 1, args.at_once)
            await one_broadcast(run, cluster)  # every node's path works end to end
            await reset_counts(run, cluster)
            pids = dict(cluster.node_pids)
            pids.update((s.name, s.proc.pid) for s in cluster.swarms)
            cpu = CpuWindow(run, pids)
            cpu.start()
            began = time.monotonic()
            await run.ctl.call(cluster.nodes[0], "POST", "/scale/broadcast",
                               n=args.broadcasts, seconds=WAIT / 2)
            job = await run.ctl.job_done(cluster.nodes[0], timeout=WAIT)
            if job["n"] < args.broadcasts:
                raise BenchError(f"{count} nodes: only {job['n']} of {args.broadcasts} "
                                 f"broadcasts emitted in {WAIT / 2:g}s")
            expected = args.broadcasts * clients
            last = await wait_delivered(run, cluster, f"{count} nodes", "b", expected,
                                        job_done(run, cluster.nodes[0]))
            used = cpu.stop()
            seconds = last - began
            step = nodes_step(count, args, clients, expected, seconds, used)
            steps[str(count)] = step
            log(run.began,
                f"  {count} nodes: {step['delivered_per_s']:,.0f} delivered/s "
                f"({expected:,} in {seconds:.2f}s); CPU ms per 1,000 delivered: "
                f"emitting node {step['cpu_ms_per_1000']['emitting_node']:.0f}, other "
                f"nodes {step['cpu_ms_per_1000']['other_nodes_mean'] or 0:.0f} (mean), "
                f"broker {step['cpu_ms_per_1000']['broker']}, clients "
                f"{step['cpu_ms_per_1000']['clients']:.0f}")
        finally:
            await stop_cluster(run, cluster)
    return {"steps": steps}


def nodes_step(count: int, args: argparse.Namespace, clients: int, expected: int,
               seconds: float, used: dict[str, float]) -> dict[str, Any]:
    per_node = args.broadcasts * args.clients_per_node  # delivered by each node
    node_ms = {f"node-{k}": round(used.get(f"node-{k}", math.nan) / per_node * 1e6, 1)
               for k in range(count)}
    others = [v for k, v in node_ms.items() if k != "node-0"]
    swarm_cpu = sum(v for k, v in used.items() if k.startswith("swarm-"))
    broker = used.get("broker")
    return {
        "nodes": count, "clients": clients, "broadcasts": args.broadcasts,
        "delivered": expected, "seconds": round(seconds, 3),
        "delivered_per_s": round(expected / seconds, 1),
        "cpu_s": used,
        "cpu_ms_per_1000": {
            "per_node": node_ms, "emitting_node": node_ms["node-0"],
            "other_nodes_mean": round(statistics.fmean(others), 1) if others else None,
            "all_nodes": round(sum(used.get(f"node-{k}", 0.0) for k in range(count))
                               / expected * 1e6, 1),
            "broker": None if broker is None else round(broker / expected * 1e6, 1),
            "clients": round(swarm_cpu / expected * 1e6, 1)},
    }


# ---------------------------------------------------------------------- scenario: clients


def room_members(clients: int, nodes: int, rooms: int) -> list[int]:
    """How many clients each room holds (client i is in room ``(i // nodes) % rooms``)."""
    members = [0] * rooms
    for i in range(clients):
        members[(i // nodes) % rooms] += 1
    return members


async def scenario_clients(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"clients": args.clients, "nodes": args.client_nodes}
    order = [args.client_nodes, *(n for n in args.fetch_nodes if n != args.client_nodes)]
    fetch: dict[str, Any] = {}
    for count in order:
        main = count == args.client_nodes
        log(run.began, f"{run.backend} clients: {count} nodes, {args.clients:,} clients"
            + ("" if main else " (fetch_sockets only)"))
        cluster = await start_cluster(run, count, args.clients)
        try:
            rss_before = {n.name: rss_bytes(n.proc.pid) or 0 for n in cluster.nodes}
            seconds = await connect_clients(run, cluster, args.clients, args.rooms,
                                            args.at_once)
            log(run.began, f"  connected {args.clients:,} in {seconds:.2f}s "
                f"({args.clients / seconds:,.0f}/s)")
            if main:
                await asyncio.sleep(0.5)  # let the last handshakes' garbage settle
                rss_after = {n.name: rss_bytes(n.proc.pid) or 0 for n in cluster.nodes}
                result["connect"] = {"seconds": round(seconds, 3),
                                     "per_s": round(args.clients / seconds, 1)}
                result["memory_per_socket"] = memory_per_socket(
                    rss_before, rss_after, args.clients)
                log(run.began, "  memory per connected socket: "
                    f"{result['memory_per_socket']['bytes_per_socket'] / 1024:.1f} KiB "
                    "(node RSS)")
                result["one_broadcast"] = await measure_one(run, cluster)
                result["rooms"] = await measure_rooms(run, cluster, args)
                result["inbound"] = await measure_inbound(run, cluster, args)
            fetch[str(count)] = await measure_fetch(run, cluster, args)
        finally:
            await stop_cluster(run, cluster)
    result["fetch_sockets"] = fetch
    if run.anchor == "node":
        log(run.began, f"  saved recovery session: {NO_RECOVERY}")
        result["sessions"] = {"skipped": NO_RECOVERY}
    else:
        result["sessions"] = await measure_sessions(run, args)
    return result


def memory_per_socket(before: dict[str, int], after: dict[str, int],
                      sockets: int) -> dict[str, Any]:
    grown = sum(after.values()) - sum(before.values())
    return {"rss_before": before, "rss_after": after, "sockets": sockets,
            "bytes_per_socket": round(grown / sockets)}


async def measure_one(run: Run, cluster: Cluster) -> dict[str, Any]:
    times = [await one_broadcast(run, cluster) for _ in range(3)]
    log(run.began, f"  one broadcast to {cluster.sockets:,} clients: last one had it "
        f"after {statistics.median(times) * 1000:.0f} ms (median of 3: "
        + ", ".join(f"{t * 1000:.0f}" for t in times) + ")")
    return {"seconds": [round(t, 4) for t in times],
            "median_s": round(statistics.median(times), 4)}


async def measure_rooms(run: Run, cluster: Cluster,
                        args: argparse.Namespace) -> dict[str, Any]:
    await reset_counts(run, cluster)
    emitter = cluster.nodes[0]
    pids = dict(cluster.node_pids)
    pids.update((s.name, s.proc.pid) for s in cluster.swarms)
    cpu = CpuWindow(run, pids)
    gc_before = await gc_readings(run, cluster)
    cpu.start()
    began = time.monotonic()
    await run.ctl.call(emitter, "POST", "/scale/rooms", rooms=args.rooms,
                       seconds=args.room_seconds, max=args.room_max,
                       senders=args.room_senders)
    job = await run.ctl.job_done(emitter, timeout=args.room_seconds + WAIT)
    emitted = int(job["n"])
    members = room_members(args.clients, len(cluster.nodes), args.rooms)
    expected = sum(members[i % args.rooms] for i in range(emitted))
    last = await wait_delivered(run, cluster, "rooms", "r", expected,
                                job_done(run, emitter))
    used = cpu.stop()
    collector = gc_used(gc_before, await gc_readings(run, cluster))
    seconds = last - began
    out = {"rooms": args.rooms, "senders": args.room_senders, "emitted": emitted,
           "delivered": expected,
           "emit_seconds": round(job["loop_seconds"], 3), "seconds": round(seconds, 3),
           "emits_per_s": round(emitted / seconds, 1),
           "delivered_per_s": round(expected / seconds, 1), "cpu_s": used,
           "gc": collector}
    log(run.began, f"  rooms: {emitted:,} emits to {args.rooms:,} rooms, {expected:,} "
        f"delivered in {seconds:.2f}s: {out['delivered_per_s']:,.0f} delivered/s "
        f"({out['emits_per_s']:,.0f} emits/s){gc_text(collector)}")
    return out


async def measure_inbound(run: Run, cluster: Cluster,
                          args: argparse.Namespace) -> dict[str, Any]:
    """Every client sends ``--inbound`` ``up`` events to its node (a handler counts
    them): events received per second across the nodes, and CPU seconds of each."""
    expected = cluster.sockets * args.inbound
    before = await asyncio.gather(*(run.ctl.call(n, "GET", "/scale/received")
                                    for n in cluster.nodes))
    cpu = CpuWindow(run, {**cluster.node_pids,
                          **{s.name: s.proc.pid for s in cluster.swarms}})
    gc_before = await gc_readings(run, cluster)
    cpu.start()
    began = time.monotonic()
    await asyncio.gather(*(run.ctl.call(s, "POST", "/swarm/send", count=args.inbound,
                                        event="up") for s in cluster.swarms))

    async def progress() -> tuple[int, float | None]:
        now = await asyncio.gather(*(run.ctl.call(n, "GET", "/scale/received")
                                     for n in cluster.nodes))
        count = sum(a["received"] - b["received"] for a, b in zip(now, before, strict=True))
        lasts = [a["last"] for a in now if a["last"] is not None]
        return count, max(lasts) if lasts else None

    async def sent() -> bool:
        states = await swarm_states(run, cluster)
        return all(s["send_done"] for s in states)

    last = await wait_all("inbound", expected, progress, sent, WAIT, STALL)
    used = cpu.stop()
    collector = gc_used(gc_before, await gc_readings(run, cluster))
    seconds = last - began
    nodes = [used[n.name] for n in cluster.nodes if n.name in used]
    out = {"per_client": args.inbound, "received": expected, "seconds": round(seconds, 3),
           "received_per_s": round(expected / seconds, 1), "cpu_s": used,
           "node_cpu_ms_per_1000_received": round(sum(nodes) * 1e6 / expected, 2),
           "gc": collector}
    log(run.began, f"  inbound: {expected:,} events from the clients in {seconds:.2f}s: "
        f"{out['received_per_s']:,.0f} received/s, nodes "
        f"{out['node_cpu_ms_per_1000_received']:.1f} ms CPU per 1,000 received"
        f"{gc_text(collector)}")
    return out


async def measure_fetch(run: Run, cluster: Cluster,
                        args: argparse.Namespace) -> dict[str, Any]:
    node = cluster.nodes[0]
    await run.ctl.call(node, "POST", "/scale/fetch", calls=args.fetch_calls,
                       seconds=args.fetch_seconds, timeout=args.fetch_timeout)
    await run.ctl.job_done(node, timeout=args.fetch_seconds + args.fetch_timeout + 10)
    found = await run.ctl.call(node, "GET", "/scale/fetch")
    wrong = [c for c in found["counts"] if c != cluster.sockets]
    if wrong:
        raise BenchError(f"fetch_sockets found {wrong[0]} sockets, not {cluster.sockets}")
    summary = {"nodes": len(cluster.nodes), "sockets": cluster.sockets,
               **latency_summary(found["latencies"])}
    log(run.began, f"  fetch_sockets, {len(cluster.nodes)} nodes, {cluster.sockets:,} "
        f"sockets: p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms "
        f"({summary['n']} calls)")
    return summary


async def measure_sessions(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """``--sessions`` clients on one node with connection state recovery on lose their
    transports; the node saves their sessions in the backend's store. Reports the
    records' packed size (what the store is given), the store's memory growth per
    session, and the node's resident memory per connected socket with recovery on."""
    k = args.sessions
    log(run.began, f"{run.backend} clients: {k:,} recovery sessions saved on one node")
    cluster = await start_cluster(run, 1, k, recovery=True, swarms=1)
    node = cluster.nodes[0]
    try:
        rss_empty = rss_bytes(node.proc.pid) or 0
        await connect_clients(run, cluster, k, 1, args.at_once)
        await asyncio.sleep(0.5)
        rss_connected = rss_bytes(node.proc.pid) or 0
        store_before = await run.broker_memory(node)
        await run.ctl.call(cluster.swarms[0], "POST", "/swarm/drop", count=k)
        deadline = time.monotonic() + WAIT
        while True:
            saved = await run.ctl.call(node, "GET", "/scale/sessions")
            if saved["saved"] >= k and saved["sockets"] == 0:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {saved['saved']} of {k} sessions saved in "
                                 f"{WAIT:g}s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        store_after = await run.broker_memory(node)
        rss_dropped = rss_bytes(node.proc.pid) or 0
    finally:
        await stop_cluster(run, cluster)
    out = {
        "sessions": k, "record_bytes_mean": round(saved["bytes"] / saved["saved"], 1),
        "store": {"how": store_before["how"], "before": store_before["bytes"],
                  "after": store_after["bytes"],
                  "bytes_per_session": round((store_after["bytes"]
                                              - store_before["bytes"]) / k, 1)},
        "node_rss": {"empty": rss_empty, "connected": rss_connected,
                     "transports_lost": rss_dropped,
                     "bytes_per_socket_recovery_on": round((rss_connected - rss_empty)
                                                           / k)},
    }
    log(run.began, f"  session record {out['record_bytes_mean']:.0f} bytes packed; store "
        f"grew {out['store']['bytes_per_session']:,.0f} bytes per session "
        f"({out['store']['how']}); node RSS per socket with recovery on "
        f"{out['node_rss']['bytes_per_socket_recovery_on'] / 1024:.1f} KiB")
    return out


# ---------------------------------------------------------------------- main

SCENARIO_RUNNERS: dict[str, Callable[[Run, argparse.Namespace],
                                     Awaitable[dict[str, Any]]]] = {
    "nodes": scenario_nodes, "clients": scenario_clients}


def settings(args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    keys = {"nodes": ("node_counts", "clients_per_node", "broadcasts"),
            "clients": ("clients", "client_nodes", "rooms", "room_seconds", "room_max",
                        "room_senders", "inbound", "fetch_nodes", "fetch_calls",
                        "fetch_seconds", "sessions")}[scenario]
    return {k: getattr(args, k) for k in (*keys, "swarms", "at_once")}


async def run_backend(name: str, url: str, broker_pids: list[int],
                      args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    logdir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{name}-"))
    children = Children(logdir)
    _RUNNING.append(children)
    results: dict[str, Any] = {}
    failed = False
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            run = Run(name, url, broker_pids, children, Control(session), args.began,
                      args.swarms, args.anchor, args.emits, args.gc_threshold,
                      args.server)
            for scenario in args.scenario:
                load = os.getloadavg()
                try:
                    found = await SCENARIO_RUNNERS[scenario](run, args)
                except BenchError as exc:
                    failed = True
                    found = {"error": str(exc)}
                    print(f"  {name} {scenario}: ERROR: {exc}", file=sys.stderr,
                          flush=True)
                    await children.stop_all()
                results[scenario] = found
                write_result(args, scenario, name, url, found, env, load)
    finally:
        await children.stop_all()
        if failed:
            print(f"{name}: node logs kept in {logdir}", file=sys.stderr)
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    if failed:
        raise BenchError(f"{name}: a scenario failed")
    return results


def write_result(args: argparse.Namespace, scenario: str, backend: str, url: str,
                 found: dict[str, Any], env: dict[str, Any],
                 load: tuple[float, float, float]) -> None:
    if args.json_dir == "-":
        return
    path = Path(args.json_dir) / result_name(scenario, backend, args.anchor, args.emits,
                                             args.gc_threshold, args.server)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench_scale", "scenario": scenario, "backend": backend,
        "url": url, "anchor": args.anchor, "emits": args.emits,
        "gc_threshold": args.gc_threshold or None,
        "server": None if args.anchor == "node" else args.server,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": list(load), "settings": settings(args, scenario),
        "results": found, "environment": {**env, **anchor_environment(args.anchor)}}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path}", flush=True)


def _counts(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of counts >= 1")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="nodes,clients",
                        help=f"comma-separated, of {', '.join(SCENARIOS)} (default both)")
    parser.add_argument("--backend", default="redis",
                        help=f"comma-separated, of {', '.join(BACKENDS)}, or all "
                             "(default redis)")
    parser.add_argument("--anchor", choices=ANCHORS, default="python",
                        help="python: our nodes (default); node: Node.js socket.io with "
                             "@socket.io/redis-adapter instead (benchmarks/js/"
                             "scale_node.mjs), --backend redis only, results in "
                             "scale-<scenario>-redis-node.json")
    parser.add_argument("--emits", choices=EMITS, default=None,
                        help="how our nodes emit: ordered (the default: each emit "
                             "waits for the broker) or fire-and-forget (ordered=false, "
                             "as Node's adapter publishes; results in "
                             "scale-<scenario>-<backend>-ff.json); --anchor node is "
                             "always fire-and-forget")
    group = parser.add_argument_group("nodes")
    group.add_argument("--node-counts", type=_counts, default=[2, 4, 8],
                       help="node counts, comma-separated (default 2,4,8)")
    group.add_argument("--clients-per-node", type=int, default=50)
    group.add_argument("--broadcasts", type=int, default=200,
                       help="broadcasts the first node emits to everyone (default 200)")
    group = parser.add_argument_group("clients")
    group.add_argument("--clients", type=int, default=10_000)
    group.add_argument("--client-nodes", type=int, default=4)
    group.add_argument("--rooms", type=int, default=1_000)
    group.add_argument("--room-seconds", type=float, default=5.0,
                       help="how long the room stream runs at most (default 5)")
    group.add_argument("--room-max", type=int, default=50_000,
                       help="emits the room stream sends at most (default 50000)")
    group.add_argument("--room-senders", type=int, default=8,
                       help="concurrent emit loops of the room stream (default 8)")
    group.add_argument("--inbound", type=int, default=5,
                       help="events each client sends its node (default 5)")
    group.add_argument("--fetch-nodes", type=_counts, default=[2, 4, 8],
                       help="node counts for fetch_sockets (default 2,4,8)")
    group.add_argument("--fetch-calls", type=int, default=50,
                       help="fetch_sockets() calls per node count, at most (default 50)")
    group.add_argument("--fetch-seconds", type=float, default=20.0,
                       help="no fetch_sockets() call starts after this many seconds "
                            "(default 20; at least one call is made)")
    group.add_argument("--fetch-timeout", type=float, default=30.0,
                       help="timeout of one fetch_sockets() call (default 30)")
    group.add_argument("--sessions", type=int, default=2_000,
                       help="clients whose recovery sessions are saved (default 2000)")
    group = parser.add_argument_group("clients and processes")
    group.add_argument("--swarms", type=int, default=4,
                       help="client driver processes (default 4)")
    group.add_argument("--at-once", type=int, default=200,
                       help="handshakes in flight at once, over all drivers (default 200)")
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="our nodes run gc.set_threshold(N, 10, 10) (default 0: "
                             "Python's own, 700)")
    parser.add_argument("--server", choices=SERVERS, default="python-socketio",
                        help="our nodes' server class, on our manager (default "
                             "python-socketio's AsyncServer; socketio-adapters: ours)")
    parser.add_argument("--json-dir", default=str(REPO_ROOT / "benchmarks" / "results"),
                        help="where scale-<scenario>-<backend>[-node].json go; '-' for "
                             "nowhere")
    args = parser.parse_args(argv)
    args.scenario = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = [s for s in args.scenario if s not in SCENARIOS]
    if unknown or not args.scenario:
        parser.error(f"unknown scenario {unknown}; choose from {', '.join(SCENARIOS)}")
    if args.backend == "all":
        args.backend = ",".join(BACKENDS)
    bad = [b for b in args.backend.split(",") if b not in BACKENDS]
    if bad:
        parser.error(f"unknown backend {bad}; choose from {', '.join(BACKENDS)} or all "
                     "(memory:// is one process only)")
    for option in ("clients_per_node", "broadcasts", "clients", "client_nodes", "rooms",
                   "fetch_calls", "sessions", "swarms", "at_once", "room_max", "room_senders"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    problem = anchor_error(args.anchor, args.backend.split(","), args.emits)
    if problem:
        parser.error(problem)
    if args.gc_threshold and args.anchor == "node":
        parser.error("--gc-threshold sets CPython's collector: not with --anchor node")
    if args.server != "python-socketio" and args.anchor == "node":
        parser.error("--server picks our nodes' server class: not with --anchor node")
    if args.gc_threshold < 0:
        parser.error("--gc-threshold must be 0 (Python's default) or more")
    if args.emits is None:
        args.emits = "fire-and-forget" if args.anchor == "node" else "ordered"
    return args


async def _main(args: argparse.Namespace, env: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    cancel_on_sigterm()

    async def run(name: str, url: str, broker: list[int]) -> dict[str, Any]:
        return await run_backend(name, url, broker, args, env)

    return await each_broker(args.backend, run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.began = time.monotonic()
    env = environment()
    print(f"bench_scale: {', '.join(args.scenario)} on {args.backend}, "
          f"{'Node.js socket.io' if args.anchor == 'node' else 'our'} nodes, "
          f"{args.emits} emits; "
          f"{env['cpu_count']} CPUs; {load_average()}", flush=True)
    outcome = run_to_end(_main(args, env), _RUNNING)
    if outcome is None:
        return 130
    print(f"bench_scale: done in {time.monotonic() - args.began:.1f}s; "
          f"{load_average()}", flush=True)
    return 1 if outcome[1] else 0


if __name__ == "__main__":
    sys.exit(main())
