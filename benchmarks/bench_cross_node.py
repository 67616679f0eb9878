"""Cross-node emit throughput and latency through a broker: socketio_adapters against a
single python-socketio node, python-socketio's own manager (Redis, RabbitMQ) and the
broker's raw client library.

Run from the repository root:

    python -m benchmarks.bench_cross_node [--backend redis|rabbitmq|nats|kafka|postgres|all]
        [--events 20000] [--latency-events 2000] [--latency-rounds 5] [--url URL] [--recovery]
        [--client python|js|python,js] [--concurrency [100]] [--routing]
        [--ws-compression shipped|on|off[,...]] [--loop asyncio|uvloop]
        [--json benchmarks/results/{backend}.json]

Without ``--url`` the broker is started from its local binary (see
conformance/brokers/) and stopped at the end. ``--backend all`` runs every backend in
turn, each on its own broker, and ends with one summary table. ``--recovery`` adds the
``recovery`` scenario: the ``cluster`` scenario with connection state recovery on
(``socketio_adapters.AsyncServer`` and ``AsyncClient``). ``--routing`` adds
``cluster-rooms`` (``subscriptions=rooms``) and, on Redis, ``node-sharded`` (Node's
sharded Redis adapter): per-room subscriptions on both sides. Every server node is its
own process (``python -m benchmarks.node``); this process hosts the python-socketio
client, triggers the nodes over HTTP and measures; with ``--client js`` the receiving
client is the official socket.io-client in a Node.js process (benchmarks/js/client.mjs).
``--loop uvloop`` runs every Python process of the run (the nodes, the raw clients and
this one) on uvloop instead of asyncio's own loop (benchmarks/loops.py), and writes
``{backend}-uvloop.json``.
On Redis, the ``node`` and ``node-single`` scenarios run Node's socket.io with
@socket.io/redis-adapter (benchmarks/js/node_server.mjs) as the reference row. See
benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import math
import os
import pstats
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import socketio

import socketio_adapters

from .environment import REPO_ROOT, environment
from .loops import LOOPS
from .loops import run as run_on
from .node import RECOVERY_OPTIONS
from .raw_clients import RAW_CLIENTS

DEFAULT_JSON = str(REPO_ROOT / "benchmarks" / "results" / "{backend}.json")
SOCKET_SCENARIOS = ("single", "cluster", "cluster-ff", "cluster-concurrent", "recovery",
                    "cluster-rooms", "pysio", "node", "node-sharded", "node-single")
ALL_SCENARIOS = (*SOCKET_SCENARIOS, "raw")
ROUTING_SCENARIOS = ("cluster-rooms", "node-sharded")
"""Per-room subscriptions on both sides (``--routing``): ours with
``subscriptions=rooms`` against Node's sharded Redis adapter in its default
``dynamic`` mode, where a node also subscribes to a room's channel only while it has
a member there."""
OPT_IN_SCENARIOS = ("recovery", "cluster-concurrent", *ROUTING_SCENARIOS)
"""Run only when asked for (``--recovery``, ``--concurrency``, ``--routing`` or
``--scenarios``)."""
NODE_MODES = {"recovery": "cluster-recovery", "cluster-concurrent": "cluster",
              "cluster-rooms": "cluster"}
"""Scenario -> ``benchmarks.node --mode`` where they differ."""
NODE_SUBSCRIPTIONS = {"cluster-rooms": "rooms"}
"""Scenario -> ``benchmarks.node --subscriptions`` (else the manager's default)."""
JS_SCENARIOS = {"node": "adapter", "node-sharded": "sharded", "node-single": "single"}
"""Scenario -> ``benchmarks/js/node_server.mjs --mode``: Node.js socket.io nodes."""
EMIT_MODES = {"single": "local (awaited, no broker)", "cluster": "ordered",
              "cluster-ff": "fire-and-forget", "cluster-concurrent": "ordered",
              "recovery": "ordered, through the log", "pysio": "awaited publish",
              "cluster-rooms": "ordered", "node": "fire-and-forget",
              "node-sharded": "fire-and-forget", "node-single": "local (no broker)",
              "raw_each": "awaited each"}
"""How each scenario's sender emits: ``ordered`` returns once the broker accepted the
emit; ``fire-and-forget`` once it is queued (Node's adapter never waits)."""
CLIENTS = ("python", "js")
COMPRESSION = ("shipped", "on", "off")
"""``--ws-compression`` of the python nodes: as shipped (python-socketio's nodes
compress when the client offers it, aiohttp's default; ours do not, as
``socketio_adapters.AsyncServer``), forced on, off. Node's socket.io never compresses
by default."""
JS_DIR = REPO_ROOT / "benchmarks" / "js"
DEFAULT_CONCURRENCY = 100
PROFILE_SCENARIOS = ("single", "cluster", "cluster-ff", "recovery", "pysio")


@dataclass(frozen=True)
class BackendSpec:
    """What differs between backends: python-socketio's own manager, if any, the
    targets, and how many runs fit in a couple of minutes."""

    kind: str
    pysio: str | None
    single_target: float
    pysio_target: float | None = None
    latency_target: float | None = None
    repeats: int = 2
    raw_each_events: int | None = None
    """Fewer events for the raw awaited-each variant when it is slow (None: all)."""
    node_adapter: bool = False
    """Node's socket.io has an official adapter for this broker: the ``node``,
    ``node-sharded`` and ``node-single`` scenarios run."""
    routes_rooms: bool = True
    """Our backend offers ``subscriptions=rooms``: the ``cluster-rooms`` scenario runs."""

    @property
    def scenarios(self) -> tuple[str, ...]:
        """Every scenario this backend can run (opt-in ones included)."""
        return tuple(s for s in ALL_SCENARIOS
                     if (s != "pysio" or self.pysio)
                     and (s not in JS_SCENARIOS or self.node_adapter)
                     and (s != "cluster-rooms" or self.routes_rooms))

    @property
    def default_scenarios(self) -> tuple[str, ...]:
        return tuple(s for s in self.scenarios if s not in OPT_IN_SCENARIOS)

    def labels(self, concurrency: int | None = None) -> dict[str, str]:
        """Scenario key -> table label, in table order."""
        labels = {"single": "single node, no manager (baseline)",
                  "cluster": "socketio_adapters cluster (A -> B)",
                  "cluster-ff": "socketio_adapters cluster, ordered=false",
                  "cluster-concurrent": f"socketio_adapters cluster, "
                                        f"x{concurrency or DEFAULT_CONCURRENCY} emitters",
                  "recovery": "socketio_adapters cluster, recovery on",
                  "cluster-rooms": "socketio_adapters cluster, subscriptions=rooms"}
        if self.pysio:
            labels["pysio"] = f"python-socketio {self.pysio} (A -> B)"
        if self.node_adapter:
            labels["node"] = "Node socket.io + redis-adapter (A -> B)"
            labels["node-sharded"] = "Node socket.io + sharded redis-adapter"
            labels["node-single"] = "Node socket.io single node"
        return labels | RAW_CLIENTS[self.kind].labels()


BACKENDS: dict[str, BackendSpec] = {spec.kind: spec for spec in (
    BackendSpec("redis", "AsyncRedisManager", 0.9, pysio_target=3.0, latency_target=1.5,
                repeats=3, node_adapter=True),
    BackendSpec("rabbitmq", "AsyncAioPikaManager", 0.8),
    BackendSpec("nats", None, 0.8),
    BackendSpec("kafka", None, 0.8, raw_each_events=5_000, routes_rooms=False),
    BackendSpec("postgres", None, 0.8),
    BackendSpec("local", None, 0.8),
)}
READY_TIMEOUT = 30.0
STOP_GRACE = 5.0


class BenchError(RuntimeError):
    """A scenario could not be measured (events lost, a node died, ...)."""


# ---------------------------------------------------------------------- child processes


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    port: int = 0
    loop: str | None = None
    """The event loop its ready line names (Python nodes)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


class Children:
    """Every process this run started. ``stop_all`` (and, as a last resort,
    ``kill_all_now``) ends them whatever happened."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)

    async def spawn(self, name: str, *cmd: str, ready_line: bool = True,
                    stdin_pipe: bool = False) -> Child:
        """Start ``cmd`` in its own session; with ``ready_line``, wait for the node's
        JSON ready line on stdout and take the port from it (if it has one). With
        ``stdin_pipe`` its stdin is a pipe from this process (it sees EOF when we end)."""
        log_path = self.logdir / f"{name}-{len(self.children)}.log"
        log_fd = _open_log(log_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if ready_line else log_fd, stderr=log_fd,
                cwd=REPO_ROOT, env=self._env, start_new_session=True)
        finally:
            os.close(log_fd)
        child = Child(name, proc, log_path)
        self.children.append(child)
        if not ready_line:
            return child
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise BenchError(f"{name} not ready after {READY_TIMEOUT:g}s; its log:\n"
                             f"{child.log_tail()}") from None
        if not line:
            await proc.wait()
            raise BenchError(f"{name} exited with {proc.returncode} before it was ready; "
                             f"its log:\n{child.log_tail()}")
        ready = json.loads(line)
        child.port = int(ready.get("port", 0))
        child.loop = ready.get("loop")
        return child

    async def stop(self, child: Child, sig: int = signal.SIGTERM) -> None:
        proc = child.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if child in self.children:
            self.children.remove(child)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(c) for c in list(self.children)),
                             return_exceptions=True)

    def kill_all_now(self) -> None:
        """Synchronous last resort: SIGKILL every child's process group not yet reaped."""
        for child in self.children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
        self.children.clear()


class Control:
    """HTTP calls to the nodes' /bench endpoints."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, child: Child, method: str, endpoint: str,
                   **params: str | int | float) -> dict[str, Any]:
        query = {k: str(v) for k, v in params.items()}
        try:
            async with self.session.request(method, child.url + endpoint,
                                            params=query) as resp:
                body: dict[str, Any] = await resp.json()
                if resp.status >= 400:
                    raise BenchError(f"{child.name} {method} {endpoint}: {resp.status} "
                                     f"{body}")
                return body
        except aiohttp.ClientError as exc:
            raise BenchError(f"{child.name} {method} {endpoint} failed ({exc}); "
                             f"its log:\n{child.log_tail()}") from exc

    async def job(self, child: Child) -> dict[str, Any]:
        job: dict[str, Any] | None = (await self.call(child, "GET", "/bench/status"))["job"]
        if job is None:
            raise BenchError(f"{child.name} has no job")
        if job["error"]:
            raise BenchError(f"{child.name}'s {job['kind']} job failed: {job['error']}")
        return job

    async def job_done(self, child: Child, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(child)
            if job["done"]:
                return job
            if time.monotonic() > deadline:
                raise BenchError(f"{child.name}'s {job['kind']} job not done in {timeout}s")
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- the client


class Receiver:
    """A python-socketio client (websocket) that counts ``e`` events and records the
    latency of ``lat`` events. With ``recovering``, it is
    ``socketio_adapters.AsyncClient``, which strips the log offset that a server with
    connection state recovery appends to every event.

    Events ``{"i": i, "k": k}`` from emitter k of ``concurrency`` (see :meth:`reset`)
    must arrive in the order i = k, k + concurrency, ...; ``k`` absent means 0."""

    kind = "python"

    def __init__(self, recovering: bool = False) -> None:
        self.recovering = recovering
        self.sio: Any = (socketio_adapters.AsyncClient(reconnection=False) if recovering
                         else socketio.AsyncClient(reconnection=False))
        self.count = 0
        self.last: float | None = None
        self.concurrency = 1
        self.next_i: dict[int, int] = {}
        self.out_of_order = 0
        self.latencies: list[float] = []
        self.warm = 0
        self.sio.on("e", self._on_event)
        self.sio.on("lat", self._on_latency)
        self.sio.on("warm", self._on_warm)

    @property
    def pid(self) -> int | None:
        """A process of its own to meter (None: it runs in this one)."""
        return None

    async def reset(self, concurrency: int = 1) -> None:
        self.count = 0
        self.last = None
        self.concurrency = concurrency
        self.next_i = {}
        self.out_of_order = 0
        self.latencies = []

    async def progress(self) -> tuple[int, float | None]:
        return self.count, self.last

    async def warm_count(self) -> int:
        return self.warm

    async def order_errors(self) -> int:
        return self.out_of_order

    async def latency_values(self) -> list[float]:
        return self.latencies

    async def join(self, room: str) -> bool:
        return bool(await self.sio.call("join", room, timeout=10))

    def _on_event(self, data: dict[str, int]) -> None:
        now = time.monotonic()
        i = data["i"]
        k = data.get("k", 0)
        if i != self.next_i.get(k, k):
            self.out_of_order += 1
        self.next_i[k] = i + self.concurrency
        self.count += 1
        self.last = now

    def _on_latency(self, data: dict[str, float]) -> None:
        now = time.monotonic()
        self.latencies.append(now - data["t"])
        self.count += 1
        self.last = now

    def _on_warm(self, data: Any) -> None:
        self.warm += 1

    async def connect(self, node: Child) -> None:
        await self.sio.connect(node.url, transports=["websocket"], wait_timeout=10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)


class JsReceiver:
    """The official socket.io-client (npm, benchmarks/js) in a Node.js process
    (benchmarks/js/client.mjs), with :class:`Receiver`'s measurements, asked for over
    its stdin and stdout one JSON line at a time. Its clock, ``process.hrtime``, is
    CLOCK_MONOTONIC: the times it reports compare with this process's
    ``time.monotonic()``."""

    kind = "js"
    recovering = False

    def __init__(self, children: Children) -> None:
        self.children = children
        self.child: Child | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.proc.pid

    async def connect(self, node: Child) -> None:
        ensure_js()
        self.child = await self.children.spawn(
            "js-client", "node", str(JS_DIR / "client.mjs"), node.url, stdin_pipe=True)

    async def _command(self, **command: Any) -> dict[str, Any]:
        child = self.child
        if child is None or child.proc.stdin is None or child.proc.stdout is None:
            raise BenchError("the JS client is not connected")
        async with self._lock:
            child.proc.stdin.write(json.dumps(command).encode() + b"\n")
            try:
                await child.proc.stdin.drain()
                line = await asyncio.wait_for(child.proc.stdout.readline(), 30)
            except (asyncio.TimeoutError, ConnectionError):
                raise BenchError(f"the JS client did not answer {command['cmd']}; its "
                                 f"log:\n{child.log_tail()}") from None
        if not line:
            raise BenchError(f"the JS client exited; its log:\n{child.log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"the JS client: {reply['error']}")
        return reply

    async def reset(self, concurrency: int = 1) -> None:
        await self._command(cmd="reset", concurrency=concurrency)

    async def progress(self) -> tuple[int, float | None]:
        reply = await self._command(cmd="progress")
        last = reply["last"]
        return int(reply["count"]), None if last is None else float(last)

    async def warm_count(self) -> int:
        return int((await self._command(cmd="progress"))["warm"])

    async def order_errors(self) -> int:
        return int((await self._command(cmd="progress"))["out_of_order"])

    async def latency_values(self) -> list[float]:
        return [float(x) for x in (await self._command(cmd="latencies"))["latencies"]]

    async def join(self, room: str) -> bool:
        return bool((await self._command(cmd="join", room=room))["ok"])

    async def close(self) -> None:
        child = self.child
        if child is None:
            return
        if child.proc.stdin is not None:  # EOF: the client disconnects and exits
            with contextlib.suppress(Exception):
                child.proc.stdin.close()
                await asyncio.wait_for(child.proc.wait(), 5)
        await self.children.stop(child)


AnyReceiver = Receiver | JsReceiver


def ensure_js() -> None:
    """Node.js and benchmarks/js/node_modules, installed with ``npm ci`` if missing;
    a :class:`BenchError` saying what to install otherwise."""
    if shutil.which("node") is None:
        raise BenchError("node (Node.js) is not on PATH: the js client and the node "
                         "scenarios need it (e.g. apt-get install nodejs npm)")
    wanted = ("socket.io", "socket.io-client", "@socket.io/redis-adapter", "redis")
    if all((JS_DIR / "node_modules" / name).is_dir() for name in wanted):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("benchmarks/js/node_modules is missing and npm is not on PATH "
                         "(e.g. apt-get install npm), or run: npm ci --prefix benchmarks/js")
    print("installing benchmarks/js (npm ci)", flush=True)
    try:
        done = subprocess.run([npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund",
                               "--loglevel=error"], capture_output=True, text=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError("npm ci --prefix benchmarks/js took more than 300s") from None
    if done.returncode != 0:
        raise BenchError(f"npm ci --prefix benchmarks/js failed ({done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")


async def wait_all(what: str, n: int, progress: Callable[[], Awaitable[tuple[int, float | None]]],
                   sender_done: Callable[[], Awaitable[bool]], timeout: float,
                   stall: float) -> float:
    """Wait until ``progress()`` counts ``n``; return when the last one arrived.

    Raises :class:`BenchError` saying how many arrived when nothing more arrived for
    ``stall`` seconds after the sender finished, or after ``timeout`` in all."""
    began = time.monotonic()
    last_count, last_change = -1, began
    while True:
        count, last = await progress()
        if count >= n and last is not None:
            return last
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change > stall and await sender_done():
            raise BenchError(f"{what}: events lost: {count} of {n} arrived (nothing more "
                             f"for {stall:g}s after the sender finished)")
        if now - began > timeout:
            raise BenchError(f"{what}: only {count} of {n} events arrived within "
                             f"{timeout:g}s")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- CPU accounting

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process used so far (from /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds used so far by process ``root`` and its live descendants (a broker and
    whatever it runs: the Erlang VM, Postgres's backends), or None if it is gone."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        children[int(fields[1])].append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    if root not in cpu:
        return None
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


class CpuMeter:
    """CPU seconds used during a run by each process involved (this one, hosting the
    client, included, and the broker's process tree): shows which process saturates a
    core."""

    def __init__(self, pids: dict[str, int], trees: dict[str, int] | None = None) -> None:
        self.pids = pids
        self.trees = trees or {}

    def snapshot(self) -> dict[str, float | None]:
        snap: dict[str, float | None] = {n: cpu_seconds(p) for n, p in self.pids.items()}
        snap.update((n, tree_cpu_seconds(root)) for n, root in self.trees.items())
        snap["client"] = time.process_time()
        return snap

    def used(self, before: dict[str, float | None], elapsed: float) -> dict[str, Any]:
        """CPU seconds and share of one core per process since ``before``."""
        after = self.snapshot()
        out: dict[str, Any] = {}
        for name, start in before.items():
            end = after.get(name)
            if start is None or end is None:
                continue
            out[name] = {"cpu_s": round(end - start, 3),
                         "core_share": round((end - start) / elapsed, 3)}
        return out


# ---------------------------------------------------------------------- statistics


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["events_per_s"] for r in runs]
    return {"runs": runs, "median": statistics.median(rates), "min": min(rates),
            "max": max(rates)}


def summarize_latency(latencies: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms), "max_ms": max(ms)}


# ---------------------------------------------------------------------- scenarios


@dataclass
class Config:
    spec: BackendSpec
    url: str
    events: int
    latency_events: int
    repeats: int
    interval: float
    timeout: float
    stall: float
    warmup: int
    broker_pid: int | None = None
    """The broker's pid, for CPU accounting of its process tree (only when this run
    started it)."""
    client: str = "python"
    """The receiving client: ``python`` (in this process) or ``js`` (Node.js)."""
    ws_compression: str = "shipped"
    """Websocket compression of the python nodes (:data:`COMPRESSION`)."""
    concurrency: int = DEFAULT_CONCURRENCY
    """Emitters at once on node A in the ``cluster-concurrent`` scenario."""
    loop: str = "asyncio"
    """The event loop of every Python process (:data:`benchmarks.loops.LOOPS`)."""
    latency_rounds: int = 5
    """The latency events of every scenario are measured in this many rounds, the
    scenarios taking turns (see :func:`run_latency_rounds`)."""

    @property
    def backend(self) -> str:
        return self.spec.kind

    def meter(self, **pids: int) -> CpuMeter:
        trees = {} if self.broker_pid is None else {self.backend: self.broker_pid}
        return CpuMeter(pids, trees)

    def receiver(self, mode: str, children: Children) -> AnyReceiver:
        if self.client == "js":
            return JsReceiver(children)
        return Receiver(recovering=mode == "recovery")


def node_cmd(mode: str, config: Config, channel: str) -> list[str]:
    if mode in JS_SCENARIOS:
        return ["node", str(JS_DIR / "node_server.mjs"), "--mode", JS_SCENARIOS[mode],
                "--url", config.url, "--channel", channel]
    cmd = [sys.executable, "-m", "benchmarks.node", "--mode", NODE_MODES.get(mode, mode),
           "--backend", config.backend, "--url", config.url, "--channel", channel,
           "--loop", config.loop]
    if mode in NODE_SUBSCRIPTIONS:
        cmd += ["--subscriptions", NODE_SUBSCRIPTIONS[mode]]
    if config.ws_compression != "shipped" and mode not in ("raw-pub", "raw-sub"):
        cmd += ["--ws-compression", config.ws_compression]
    return cmd


async def spawn_node(children: Children, name: str, mode: str, config: Config,
                     channel: str) -> Child:
    """Start one node; a Python node must run on the loop asked for."""
    child = await children.spawn(name, *node_cmd(mode, config, channel))
    if mode not in JS_SCENARIOS and child.loop != config.loop:
        await children.stop(child)
        raise BenchError(f"{name} runs on {child.loop}, not on {config.loop}")
    return child


async def start_socket_nodes(mode: str, config: Config,
                             children: Children) -> tuple[Child, Child]:
    """(emitter A, receiving node B); one same node for ``single``."""
    channel = f"bench-{mode}-{secrets.token_hex(4)}"
    if mode in JS_SCENARIOS:
        ensure_js()
    if mode in ("single", "node-single"):
        node = await spawn_node(children, mode, mode, config, channel)
        return node, node
    b = await spawn_node(children, f"{mode}-B", mode, config, channel)
    try:
        a = await spawn_node(children, f"{mode}-A", mode, config, channel)
    except BaseException:
        await children.stop(b)
        raise
    return a, b


async def warm_up(mode: str, ctl: Control, a: Child, receiver: AnyReceiver,
                  config: Config) -> None:
    """Until a ``warm`` event from A reaches the client on B (python-socketio's
    manager subscribes in the background after the first connection, Node's adapter
    right after its start, without waiting), then one unmeasured burst of
    ``config.warmup`` events."""
    deadline = time.monotonic() + 20
    while not await receiver.warm_count():
        if time.monotonic() > deadline:
            raise BenchError(f"{mode}: no warm-up event crossed from A to the client in 20s")
        await ctl.call(a, "POST", "/bench/warm")
        for _ in range(10):
            if await receiver.warm_count():
                break
            await asyncio.sleep(0.02)
    if isinstance(receiver, Receiver) and receiver.recovering \
            and receiver.sio.offset() is None:
        raise BenchError(f"{mode}: the warm-up event carried no log offset (is "
                         "connection state recovery on?)")
    if config.warmup:
        await emit_and_count(mode, ctl, a, receiver, config.warmup, config)


async def emit_and_count(mode: str, ctl: Control, a: Child, receiver: AnyReceiver, n: int,
                         config: Config, meter: CpuMeter | None = None,
                         concurrency: int = 1) -> dict[str, Any]:
    await receiver.reset(concurrency)

    async def sender_done() -> bool:
        return bool((await ctl.job(a))["done"])

    params: dict[str, int] = {"n": n}
    if concurrency > 1:
        params["concurrency"] = concurrency
    cpu_before = meter.snapshot() if meter else {}
    began = time.monotonic()
    await ctl.call(a, "POST", "/bench/emit", **params)
    last = await wait_all(f"{mode} throughput", n, receiver.progress, sender_done,
                          config.timeout, config.stall)
    seconds = last - began
    cpu = meter.used(cpu_before, seconds) if meter else {}
    job = await ctl.job_done(a)
    return {"seconds": seconds, "events_per_s": n / seconds,
            "emit_loop_seconds": job["loop_seconds"],
            "emit_flushed_seconds": job["flushed_seconds"],
            "out_of_order": await receiver.order_errors(), "cpu": cpu}


def cpu_text(cpu: dict[str, Any]) -> str:
    return ", ".join(f"{name} {v['core_share']:.0%}" for name, v in cpu.items())


async def measure_latency(mode: str, ctl: Control, a: Child, receiver: AnyReceiver,
                          n: int, config: Config) -> list[float]:
    """``n`` paced room broadcasts from A to the client, in the room it joined
    (:data:`LATENCY_ROOM`); their one-way latencies in seconds."""
    await receiver.reset()

    async def sender_done() -> bool:
        return bool((await ctl.job(a))["done"])

    await ctl.call(a, "POST", "/bench/latency", n=n, room=LATENCY_ROOM,
                   interval=config.interval)
    await wait_all(f"{mode} latency", n, receiver.progress, sender_done, config.timeout,
                   config.stall)
    await ctl.job_done(a)
    return await receiver.latency_values()


class SocketRuns:
    """A Socket.IO scenario's throughput runs: its nodes and receiving client, warmed
    up (:func:`warm_up`), each :meth:`run` one of ``config.repeats`` after an
    unmeasured burst of ``config.warmup`` events."""

    def __init__(self, mode: str, config: Config, ctl: Control, children: Children) -> None:
        self.mode = mode
        self.config = config
        self.ctl = ctl
        self.children = children
        self.nodes: list[Child] = []
        self.receiver: AnyReceiver | None = None
        self.meter: CpuMeter | None = None
        self.concurrency = config.concurrency if mode == "cluster-concurrent" else 1
        self.runs: list[dict[str, Any]] = []

    async def open(self) -> None:
        a, b = await start_socket_nodes(self.mode, self.config, self.children)
        self.nodes = [a] if a is b else [a, b]
        self.receiver = receiver = self.config.receiver(self.mode, self.children)
        await receiver.connect(b)
        await warm_up(self.mode, self.ctl, a, receiver, self.config)
        pids = {"node": a.proc.pid} if a is b else {"A": a.proc.pid, "B": b.proc.pid}
        if receiver.pid is not None:
            pids["js_client"] = receiver.pid
        self.meter = self.config.meter(**pids)

    async def run(self) -> None:
        if self.receiver is None:
            raise BenchError(f"{self.mode}: not started")
        mode, rep = self.mode, len(self.runs) + 1
        if self.config.warmup:
            # the other scenarios ran meanwhile: warm again (Node's V8 shrinks an idle
            # heap after some seconds; a burst then first pays for growing it again)
            await emit_and_count(mode, self.ctl, self.nodes[0], self.receiver,
                                 self.config.warmup, self.config)
        run = await emit_and_count(mode, self.ctl, self.nodes[0], self.receiver,
                                   self.config.events, self.config, self.meter,
                                   self.concurrency)
        self.runs.append(run)
        print(f"  {mode} run {rep}: {run['events_per_s']:>9,.0f} ev/s "
              f"({run['seconds']:.3f}s; emit loop {run['emit_loop_seconds']:.3f}s; "
              f"CPU {cpu_text(run['cpu'])})", flush=True)
        if run["out_of_order"]:
            print(f"  {mode} run {rep}: {run['out_of_order']} events out of order",
                  flush=True)

    def results(self) -> dict[str, Any]:
        mode = self.mode
        return {mode: {
            "throughput": summarize_runs(self.runs), "emit_mode": EMIT_MODES[mode],
            "client": self.receiver.kind if self.receiver is not None else None,
            "server": "node" if mode in JS_SCENARIOS else "python",
            "ws_compression": "off (Node's default)" if mode in JS_SCENARIOS
            else self.config.ws_compression, "concurrency": self.concurrency}}

    async def close(self) -> None:
        if self.receiver is not None:
            await self.receiver.close()
        for child in self.nodes:
            await self.children.stop(child)


async def raw_job(config: Config, ctl: Control, pub: Child, sub: Child, what: str,
                  path: str, n: int, **params: Any) -> float:
    """Start the raw publisher's job at ``path`` (``n`` messages) and wait until the
    subscriber (reset before) counted them all: when the last one arrived (the
    caller then waits for the job's end, ``ctl.job_done``, after its CPU reading)."""

    async def progress() -> tuple[int, float | None]:
        body = await ctl.call(sub, "GET", "/bench/count")
        return int(body["count"]), body["last"]

    async def sender_done() -> bool:
        return bool((await ctl.job(pub))["done"])

    await ctl.call(pub, "POST", path, n=n, **params)
    return await wait_all(f"raw {config.backend} {what}", n, progress, sender_done,
                          config.timeout, config.stall)


async def raw_latency(config: Config, ctl: Control, pub: Child, sub: Child,
                      n: int) -> list[float]:
    """``n`` one-way PUBLISH -> subscriber latencies (seconds), paced like the
    Socket.IO latency runs."""
    await ctl.call(sub, "POST", "/bench/reset")
    await raw_job(config, ctl, pub, sub, "latency", "/bench/latency", n,
                  interval=config.interval)
    await ctl.job_done(pub)
    latencies = (await ctl.call(sub, "GET", "/bench/latencies"))["latencies"]
    return [float(x) for x in latencies]


class RawRuns:
    """The broker's raw client's throughput runs: one publisher, one subscriber; each
    :meth:`run` publishes ``config.events`` awaiting each publish, then as many in
    batches (fewer awaited each when ``spec.raw_each_events`` says so), each after an
    unmeasured warm-up."""

    def __init__(self, config: Config, ctl: Control, children: Children) -> None:
        self.config = config
        self.ctl = ctl
        self.children = children
        self.nodes: list[Child] = []
        self.meter: CpuMeter | None = None
        self.variants = ("each", RAW_CLIENTS[config.backend].batch_variant)
        self.runs: dict[str, list[dict[str, Any]]] = {v: [] for v in self.variants}

    async def open(self) -> None:
        channel = f"bench-raw-{secrets.token_hex(4)}"
        self.nodes.append(await spawn_node(self.children, "raw-sub", "raw-sub",
                                           self.config, channel))
        self.nodes.append(await spawn_node(self.children, "raw-pub", "raw-pub",
                                           self.config, channel))
        sub, pub = self.nodes
        self.meter = self.config.meter(pub=pub.proc.pid, sub=sub.proc.pid)

    def events(self, variant: str) -> int:
        """How many messages a run of ``variant`` publishes."""
        n, cap = self.config.events, self.config.spec.raw_each_events
        return min(n, cap) if variant == "each" and cap else n

    async def _publish(self, variant: str, n: int) -> dict[str, Any]:
        sub, pub = self.nodes
        await self.ctl.call(sub, "POST", "/bench/reset")
        meter = self.meter
        cpu_before = meter.snapshot() if meter else {}
        began = time.monotonic()
        last = await raw_job(self.config, self.ctl, pub, sub, variant, "/bench/emit", n,
                             variant=variant)
        seconds = last - began
        cpu = meter.used(cpu_before, seconds) if meter else {}
        job = await self.ctl.job_done(pub)
        return {"events": n, "seconds": seconds, "events_per_s": n / seconds,
                "emit_loop_seconds": job["loop_seconds"], "cpu": cpu}

    async def run(self) -> None:
        if len(self.nodes) < 2:
            raise BenchError("raw: not started")
        for variant in self.variants:
            runs = self.runs[variant]
            n = self.events(variant)
            if self.config.warmup:
                await self._publish(variant, min(n, self.config.warmup))
            run = await self._publish(variant, n)
            runs.append(run)
            print(f"  raw {variant} run {len(runs)}: {run['events_per_s']:>9,.0f} msg/s "
                  f"({run['seconds']:.3f}s; CPU {cpu_text(run['cpu'])})", flush=True)

    def results(self) -> dict[str, Any]:
        return {f"raw_{variant}": {"throughput": summarize_runs(runs)}
                for variant, runs in self.runs.items() if runs}

    async def close(self) -> None:
        for child in reversed(self.nodes):
            await self.children.stop(child)


class Opening(Protocol):
    """A scenario's processes for a series of rounds: started, then stopped."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


OpeningT = TypeVar("OpeningT", bound=Opening)


def said(errors: dict[str, str], key: str, exc: Exception) -> None:
    """A scenario's failure, kept in ``errors`` and printed."""
    errors[key] = describe(exc)
    print(f"  ERROR ({key}): {describe(exc)}", file=sys.stderr, flush=True)


async def open_each(names: tuple[str, ...], make: Callable[[str], OpeningT],
                    opened: dict[str, OpeningT], errors: dict[str, str],
                    key: Callable[[str], str]) -> None:
    """Start ``make(name)`` for every name into ``opened`` (which the caller closes);
    one that cannot start is said under ``key(name)``, closed and left out: the
    others still run."""
    for name in names:
        item = opened[name] = make(name)  # closed by the caller if cancelled here
        try:
            await item.open()
        except Exception as exc:
            said(errors, key(name), exc)
            await opened.pop(name).close()


def in_turn(names: list[str], r: int) -> list[str]:
    """Round ``r``'s order: ``names`` turned by one more each round, every other round
    run backwards, so that no scenario always follows the same one (and whatever that
    one leaves running, a collection or a broker catching up)."""
    k = r % len(names) if names else 0
    order = names[k:] + names[:k]
    return order[::-1] if r % 2 else order


class ThroughputRuns(Opening, Protocol):
    """What :func:`run_throughput_rounds` needs of a scenario."""

    async def run(self) -> None: ...

    def results(self) -> dict[str, Any]: ...


def make_runs(name: str, config: Config, ctl: Control, children: Children) -> ThroughputRuns:
    if name == "raw":
        return RawRuns(config, ctl, children)
    return SocketRuns(name, config, ctl, children)


async def run_throughput_rounds(config: Config, names: tuple[str, ...], ctl: Control,
                                children: Children, errors: dict[str, str],
                                suffix: str = "",
                                runs_for: Callable[[str, Config, Control, Children],
                                                   ThroughputRuns] = make_runs,
                                pause: float = 0.2) -> dict[str, Any]:
    """The throughput of every scenario in ``names``, the scenarios taking turns as
    in :func:`run_latency_rounds`: all are started and warmed up, then each of
    ``config.repeats`` rounds runs each scenario once, in :func:`in_turn`'s order,
    each run after an unmeasured burst of ``config.warmup`` events, so that a drift
    of the machine falls on every scenario alike. Run one scenario after the other,
    the same code's throughput moved from 41,800 to 64,800 events/s between runs
    minutes apart on this project's 2-core machine. A scenario that cannot start or
    fails a run is said in ``errors`` and dropped; the results of those left, by
    scenario."""
    started: dict[str, ThroughputRuns] = {}
    results: dict[str, Any] = {}
    try:
        await open_each(names, lambda name: runs_for(name, config, ctl, children),
                        started, errors, lambda name: name + suffix)
        for r in range(config.repeats if started else 0):
            for name in in_turn(list(started), r):
                try:
                    await started[name].run()
                except Exception as exc:
                    said(errors, name + suffix, exc)
                    await started.pop(name).close()
                    continue
                await asyncio.sleep(pause)
        for runs in started.values():
            results.update(runs.results())
    finally:
        for runs in started.values():
            await runs.close()
    return results


# ---------------------------------------------------------------------- latency rounds

LATENCY_ROOM = "latency-room"
RAW_WARM_EVENTS = 50
"""Unmeasured paced publishes before the raw client's latency rounds."""


class SocketProbe(SocketRuns):
    """A Socket.IO scenario's nodes and receiving client, started afresh for the
    latency rounds as for the throughput runs (:class:`SocketRuns`), then joined to
    :data:`LATENCY_ROOM`."""

    async def open(self) -> None:
        await super().open()
        if self.receiver is None or not await self.receiver.join(LATENCY_ROOM):
            raise BenchError(f"{self.mode}: could not join {LATENCY_ROOM}")

    async def measure(self, n: int) -> list[float]:
        if self.receiver is None:
            raise BenchError(f"{self.mode}: not started")
        return await measure_latency(self.mode, self.ctl, self.nodes[0], self.receiver, n,
                                     self.config)


class RawProbe:
    """The broker's raw client: one publisher awaiting each publish, one subscriber."""

    def __init__(self, config: Config, ctl: Control, children: Children) -> None:
        self.config = config
        self.ctl = ctl
        self.children = children
        self.nodes: list[Child] = []

    async def open(self) -> None:
        channel = f"bench-raw-latency-{secrets.token_hex(4)}"
        self.nodes.append(await spawn_node(self.children, "raw-latency-sub", "raw-sub",
                                           self.config, channel))
        self.nodes.append(await spawn_node(self.children, "raw-latency-pub", "raw-pub",
                                           self.config, channel))
        await self.measure(RAW_WARM_EVENTS)

    async def measure(self, n: int) -> list[float]:
        sub, pub = self.nodes
        return await raw_latency(self.config, self.ctl, pub, sub, n)

    async def close(self) -> None:
        for child in self.nodes:
            await self.children.stop(child)


def describe(exc: Exception) -> str:
    """A benchmark's own error as it says itself; any other with its type."""
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


def round_sizes(n: int, rounds: int) -> list[int]:
    """``n`` events in ``rounds`` near-equal parts (none empty)."""
    rounds = max(1, min(rounds, n))
    return [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]


class LatencyProbe(Opening, Protocol):
    """What :func:`run_latency_rounds` needs of a scenario."""

    async def measure(self, n: int) -> list[float]: ...


def make_probe(name: str, config: Config, ctl: Control, children: Children) -> LatencyProbe:
    if name == "raw":
        return RawProbe(config, ctl, children)
    return SocketProbe(name, config, ctl, children)


async def run_latency_rounds(config: Config, names: tuple[str, ...], ctl: Control,
                             children: Children, scenarios: dict[str, Any],
                             errors: dict[str, str], suffix: str = "",
                             probe_for: Callable[[str, Config, Control, Children],
                                                 LatencyProbe] = make_probe) -> None:
    """Measure the latency of every scenario in ``names`` (those whose throughput
    ran), the scenarios taking turns: all are started afresh and stay up, then each
    round measures a part of ``config.latency_events`` on each scenario, in
    :func:`in_turn`'s order. A drift of the machine over
    the run (other guests on its host, its CPUs' state) then falls on every scenario
    alike, rather than on whichever ran during it; measured one after the other, the
    same code's p50 moved by up to 20% between runs a minute apart on this project's
    2-core machine. Each scenario's figures are over all its rounds, with each round's
    p50 beside them (``rounds_p50_ms``)."""
    probes: dict[str, LatencyProbe] = {}
    keys = {name: "raw_each" if name == "raw" else name for name in names}
    try:
        # one that cannot start is left out: the others, and the throughput, stay
        await open_each(names, lambda name: probe_for(name, config, ctl, children),
                        probes, errors, lambda name: f"{name} latency{suffix}")
        if not probes:
            return
        values: dict[str, list[float]] = {name: [] for name in probes}
        per_round: dict[str, list[float]] = {name: [] for name in probes}
        sizes = round_sizes(config.latency_events, config.latency_rounds)
        for r, size in enumerate(sizes):
            line = []
            for name in in_turn(list(probes), r):
                try:
                    got = await probes[name].measure(size)
                except Exception as exc:
                    said(errors, f"{name} latency{suffix}", exc)
                    await probes.pop(name).close()
                    del values[name]
                    continue
                values[name] += got
                p50_ms = percentile(got, 50) * 1000
                per_round[name].append(p50_ms)
                line.append(f"{name} {p50_ms:.3f}")
            print(f"  latency round {r + 1}/{len(sizes)} ({size} events each), p50 ms: "
                  + ", ".join(line), flush=True)
        for name, got in values.items():
            latency = summarize_latency(got)
            latency["rounds_p50_ms"] = per_round[name]
            scenarios[keys[name]]["latency"] = latency
            print(f"  {name} latency: p50 {latency['p50_ms']:.3f} ms, "
                  f"p99 {latency['p99_ms']:.3f} ms", flush=True)
    finally:
        for probe in probes.values():
            await probe.close()


# ---------------------------------------------------------------------- profiling


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Self and inclusive shares of functions in py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples (non-idle)", "  self%  incl%  function"]
    for frame, count in own.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}  {100 * incl[frame] / total:5.1f}  "
                     f"{frame}")
    lines.append("  -- inclusive, socketio_adapters only --")
    ours = [(f, c) for f, c in incl.most_common() if "socketio_adapters" in f]
    for frame, count in ours[:top]:
        lines.append(f"  {100 * own[frame] / total:5.1f}  {100 * count / total:5.1f}  "
                     f"{frame}")
    return "\n".join(lines)


def summarize_cprofile(path: Path, top: int = 30) -> str:
    with open(path.with_suffix(".txt"), "w") as out:
        stats = pstats.Stats(str(path), stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats("socketio_adapters", top)
    return path.with_suffix(".txt").read_text()


async def profile_scenario(mode: str, kind: str, outdir: Path, config: Config,
                           ctl: Control, children: Children) -> list[str]:
    """One extra, unreported throughput run of ``mode`` with its node(s) profiled."""
    _make_dir(outdir)
    a, b = await start_socket_nodes(mode, config, children)
    nodes = [(a, "node")] if a is b else [(a, "A"), (b, "B")]
    receiver = config.receiver(mode, children)
    reports: list[str] = []
    spies: list[tuple[Child, Path]] = []
    try:
        await receiver.connect(b)
        await warm_up(mode, ctl, a, receiver, config)
        if kind == "cprofile":
            for node, _ in nodes:
                await ctl.call(node, "POST", "/bench/profile", action="start")
        else:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            for node, label in nodes:
                out = outdir / f"{mode}-{label}.collapsed"
                child = await children.spawn(
                    f"py-spy-{label}", spy, "record", "--pid", str(node.proc.pid),
                    "--rate", "500", "--function", "--format", "raw", "--output", str(out),
                    ready_line=False)
                spies.append((child, out))
            await asyncio.sleep(1.0)  # py-spy attaches
        run = await emit_and_count(f"{mode} (profiled)", ctl, a, receiver, config.events,
                                   config)
        reports.append(f"profiled {mode} run ({kind}): {run['events_per_s']:,.0f} ev/s "
                       f"(emit loop {run['emit_loop_seconds']:.3f}s)")
        if kind == "cprofile":
            for node, label in nodes:
                out = outdir / f"{mode}-{label}.prof"
                await ctl.call(node, "POST", "/bench/profile", action="stop", path=str(out))
                reports.append(f"== {mode} {label} ({out}) ==\n{summarize_cprofile(out)}")
        else:
            for child, out in spies:
                await children.stop(child, signal.SIGINT)
                reports.append(summarize_collapsed(out) if out.exists()
                               else f"{out}: py-spy wrote nothing; log:\n{child.log_tail()}")
    finally:
        await receiver.close()
        for child, _ in spies:
            await children.stop(child, signal.SIGINT)
        for node in {a.name: a, b.name: b}.values():
            await children.stop(node)
    return reports


# ---------------------------------------------------------------------- report


def run_environment(config: Config, js: bool = False) -> dict[str, Any]:
    env = {**environment(), "backend": config.backend}
    if config.backend == "redis":
        env["redis_server"] = redis_server_version(config.url)
    if js:
        env["js"] = js_versions()
    return env


def js_versions() -> dict[str, str | None]:
    """Node.js and the npm packages of benchmarks/js, as installed."""
    out: dict[str, str | None] = {"node": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                     timeout=10, check=True).stdout.strip()
    for name in ("socket.io", "@socket.io/redis-adapter", "redis", "socket.io-client",
                 "socket.io-adapter", "ws"):
        try:
            meta = json.loads((JS_DIR / "node_modules" / name / "package.json").read_text())
            out[name] = str(meta["version"])
        except (OSError, ValueError, KeyError):
            out[name] = None
    return out


def redis_info(url: str) -> dict[str, Any]:
    """Redis' INFO server section, or {} when it cannot be read."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            info: dict[str, Any] = client.info("server")
        finally:
            client.close()
    except redis.RedisError:
        return {}
    return info


def redis_server_version(url: str) -> str | None:
    version = redis_info(url).get("redis_version")
    return None if version is None else str(version)


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def tput(scenarios: dict[str, Any], name: str) -> float | None:
    entry = scenarios.get(name)
    return None if entry is None else float(entry["throughput"]["median"])


def p50(scenarios: dict[str, Any], name: str) -> float | None:
    entry = scenarios.get(name)
    return None if entry is None or "latency" not in entry else \
        float(entry["latency"]["p50_ms"])


def p99(scenarios: dict[str, Any], name: str) -> float | None:
    entry = scenarios.get(name)
    return None if entry is None or "latency" not in entry else \
        float(entry["latency"]["p99_ms"])


def compute_ratios(spec: BackendSpec, scenarios: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def t(name: str) -> float | None:
        return tput(scenarios, name)

    batch = f"raw_{RAW_CLIENTS[spec.kind].batch_variant}"
    specs = [
        ("cluster_vs_single_throughput", ratio(t("cluster"), t("single")), ">=",
         spec.single_target),
        ("cluster_vs_single_p50_latency",
         ratio(p50(scenarios, "cluster"), p50(scenarios, "single")), "<=",
         spec.latency_target),
        ("cluster_vs_raw_each_throughput", ratio(t("cluster"), t("raw_each")), ">=", None),
        (f"cluster_vs_{batch}_throughput", ratio(t("cluster"), t(batch)), ">=", None),
    ]
    if spec.pysio:
        specs.insert(1, ("cluster_vs_pysio_throughput", ratio(t("cluster"), t("pysio")), ">=",
                         spec.pysio_target))
    if "recovery" in scenarios:
        specs += [
            ("recovery_vs_cluster_throughput", ratio(t("recovery"), t("cluster")), ">=",
             None),
            ("recovery_vs_cluster_p50_latency",
             ratio(p50(scenarios, "recovery"), p50(scenarios, "cluster")), "<=", None),
        ]
    if "cluster-ff" in scenarios:
        specs.append(("cluster_ff_vs_cluster_throughput", ratio(t("cluster-ff"),
                                                                t("cluster")), ">=", None))
    if "node" in scenarios:  # against Node's socket.io + @socket.io/redis-adapter
        specs += [
            ("cluster_vs_node_throughput", ratio(t("cluster"), t("node")), ">=", None),
            ("cluster_vs_node_p50_latency",
             ratio(p50(scenarios, "cluster"), p50(scenarios, "node")), "<=", None),
            ("cluster_vs_node_p99_latency",
             ratio(p99(scenarios, "cluster"), p99(scenarios, "node")), "<=", None),
            ("cluster_ff_vs_node_throughput", ratio(t("cluster-ff"), t("node")), ">=",
             None),
            ("cluster_concurrent_vs_node_throughput",
             ratio(t("cluster-concurrent"), t("node")), ">=", 1.0),
            ("node_vs_node_single_throughput", ratio(t("node"), t("node-single")), ">=",
             None),
            ("single_vs_node_single_throughput", ratio(t("single"), t("node-single")), ">=",
             None),
        ]
        specs = [s for s in specs if s[1] is not None or s[0] in (
            "cluster_vs_node_throughput", "cluster_vs_node_p50_latency",
            "cluster_vs_node_p99_latency")]
    if "cluster-rooms" in scenarios:
        specs.append(("cluster_rooms_vs_cluster_p50_latency",
                      ratio(p50(scenarios, "cluster-rooms"), p50(scenarios, "cluster")),
                      "<=", None))
    if "cluster-rooms" in scenarios and "node-sharded" in scenarios:
        # per-room subscriptions on both sides
        specs += [
            ("cluster_rooms_vs_node_sharded_p50_latency",
             ratio(p50(scenarios, "cluster-rooms"), p50(scenarios, "node-sharded")), "<=",
             None),
            ("cluster_rooms_vs_node_sharded_p99_latency",
             ratio(p99(scenarios, "cluster-rooms"), p99(scenarios, "node-sharded")), "<=",
             None),
        ]
    out: dict[str, dict[str, Any]] = {}
    for name, value, op, target in specs:
        met = None
        if value is not None and target is not None:
            met = value >= target if op == ">=" else value <= target
        out[name] = {"value": value, "target": None if target is None else f"{op} {target}",
                     "met": met}
    return out


def table(spec: BackendSpec, scenarios: dict[str, Any], ratios: dict[str, dict[str, Any]],
          events: int, section: str = "", concurrency: int | None = None) -> Iterator[str]:
    yield ""
    client = f", {section} client" if section else ""
    yield (f"{spec.kind}{client}: cross-node emit throughput ({events:,} events, median "
           f"of runs) and room-broadcast latency")
    header = (f"{'scenario':<45} {'median/s':>10} {'min/s':>10} {'max/s':>10} "
              f"{'p50 ms':>8} {'p99 ms':>8}  emits")
    yield header
    yield "-" * len(header)
    for name, label in spec.labels(concurrency).items():
        entry = scenarios.get(name)
        if entry is None and (name in OPT_IN_SCENARIOS or name in JS_SCENARIOS
                              or name == "cluster-ff"
                              or (section and name.startswith("raw_"))):
            continue
        if entry is None:
            yield f"{label:<45} {'(not run or failed)':>30}"
            continue
        t = entry["throughput"]
        lat = entry.get("latency")
        lat_p50 = f"{lat['p50_ms']:8.3f}" if lat else f"{'-':>8}"
        lat_p99 = f"{lat['p99_ms']:8.3f}" if lat else f"{'-':>8}"
        yield (f"{label:<45} {t['median']:>10,.0f} {t['min']:>10,.0f} {t['max']:>10,.0f} "
               f"{lat_p50} {lat_p99}  {EMIT_MODES.get(name, '')}")
    yield ""
    yield f"{'ratio':<45} {'value':>8}  target"
    for name, r in ratios.items():
        value = "n/a" if r["value"] is None else f"{r['value']:.2f}"
        verdict = "" if r["met"] is None else ("  MET" if r["met"] else "  NOT MET")
        yield f"{name:<45} {value:>8}  {r['target'] or '(info)'}{verdict}"


SUMMARY_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], float | None], str], ...] = (
    ("single/s", lambda r: tput(r["scenarios"], "single"), ",.0f"),
    ("cluster/s", lambda r: tput(r["scenarios"], "cluster"), ",.0f"),
    ("pysio/s", lambda r: tput(r["scenarios"], "pysio"), ",.0f"),
    ("raw each/s", lambda r: tput(r["scenarios"], "raw_each"), ",.0f"),
    ("raw batch/s", lambda r: tput(r["scenarios"], _batch_key(r)), ",.0f"),
    ("c/single", lambda r: _ratio_value(r, "cluster_vs_single_throughput"), ".2f"),
    ("c/pysio", lambda r: _ratio_value(r, "cluster_vs_pysio_throughput"), ".2f"),
    ("c/raw each", lambda r: _ratio_value(r, "cluster_vs_raw_each_throughput"), ".2f"),
    ("c/raw batch", lambda r: _ratio_value(r, f"cluster_vs_{_batch_key(r)}_throughput"),
     ".2f"),
    ("p50 single", lambda r: p50(r["scenarios"], "single"), ".3f"),
    ("p50 cluster", lambda r: p50(r["scenarios"], "cluster"), ".3f"),
    ("p50 c/s", lambda r: _ratio_value(r, "cluster_vs_single_p50_latency"), ".2f"),
)


RECOVERY_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], float | None], str], ...] = (
    ("cluster/s", lambda r: tput(r["scenarios"], "cluster"), ",.0f"),
    ("recovery/s", lambda r: tput(r["scenarios"], "recovery"), ",.0f"),
    ("r/c", lambda r: _ratio_value(r, "recovery_vs_cluster_throughput"), ".2f"),
    ("p50 cluster", lambda r: p50(r["scenarios"], "cluster"), ".3f"),
    ("p50 recov", lambda r: p50(r["scenarios"], "recovery"), ".3f"),
    ("p50 r/c", lambda r: _ratio_value(r, "recovery_vs_cluster_p50_latency"), ".2f"),
)
"""The second summary table, when the ``recovery`` scenario ran."""


def _batch_key(result: dict[str, Any]) -> str:
    return f"raw_{RAW_CLIENTS[result['backend']].batch_variant}"


def _ratio_value(result: dict[str, Any], name: str) -> float | None:
    entry = result["ratios"].get(name)
    return None if entry is None else entry["value"]


def summary_table(results: dict[str, dict[str, Any]]) -> Iterator[str]:
    """One line per backend: throughputs (events/s, medians), ratios, p50 in ms; then,
    if the ``recovery`` scenario ran, recovery on against off."""
    yield ""
    yield "Summary across backends (throughput: median events/s; latency: p50 ms)"
    yield from _summary_rows(results, SUMMARY_COLUMNS)
    yield "cluster/single throughput targets: " + ", ".join(
        f"{kind} >= {BACKENDS[kind].single_target}" for kind in results)
    if any("recovery" in r.get("scenarios", {}) for r in results.values()):
        yield ""
        yield "Connection state recovery on (recovery) against off (cluster)"
        yield from _summary_rows(results, RECOVERY_COLUMNS)


def _summary_rows(results: dict[str, dict[str, Any]], columns: tuple[
        tuple[str, Callable[[dict[str, Any]], float | None], str], ...]) -> Iterator[str]:
    header = f"{'backend':<9}" + "".join(f" {name:>11}" for name, _, _ in columns)
    yield header
    yield "-" * len(header)
    for kind, result in results.items():
        if "scenarios" not in result:
            yield f"{kind:<9} failed: {result.get('errors')}"
            continue
        cells = [f"{'-' if v is None else format(v, fmt):>11}"
                 for v, fmt in ((fn(result), fmt) for _, fn, fmt in columns)]
        yield f"{kind:<9} " + " ".join(cells)


# ---------------------------------------------------------------------- main


async def run_scenarios(config: Config, names: tuple[str, ...], ctl: Control,
                        children: Children, errors: dict[str, str],
                        began: float, section: str = "") -> dict[str, Any]:
    suffix = f" ({section})" if section else ""
    print(f"[{time.monotonic() - began:6.1f}s] {config.backend}: throughput, "
          f"{config.repeats} rounds over {', '.join(names)}{suffix}", flush=True)
    scenarios = await run_throughput_rounds(config, names, ctl, children, errors, suffix)
    measured = tuple(n for n in names if ("raw_each" if n == "raw" else n) in scenarios)
    if measured and config.latency_events:
        print(f"[{time.monotonic() - began:6.1f}s] {config.backend}: latency, "
              f"{config.latency_rounds} rounds over {', '.join(measured)}{suffix}",
              flush=True)
        await run_latency_rounds(config, measured, ctl, children, scenarios, errors, suffix)
    return scenarios


def sections(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(section name, client, websocket compression) to measure in turn: each client
    with each ``--ws-compression`` (python-socketio's client never offers compression,
    so it runs with the first only)."""
    out: list[tuple[str, str, str]] = []
    for client in args.clients:
        for k, compression in enumerate(args.ws_compressions):
            if client == "python" and k:
                continue
            name = client if compression == "shipped" else f"{client}/ws-{compression}"
            out.append((name, client, compression))
    return out


async def run_profile(args: argparse.Namespace, config: Config, ctl: Control,
                      children: Children, errors: dict[str, str]) -> list[str]:
    mode = args.profile_scenario
    print(f"profiling {config.backend} {mode} ({args.profile})", flush=True)
    outdir = Path(args.profile_dir) / config.backend if config.backend != "redis" \
        else Path(args.profile_dir)
    try:
        return await profile_scenario(mode, args.profile, outdir, config, ctl, children)
    except BenchError as exc:
        errors["profile"] = str(exc)
        print(f"  ERROR: {exc}", file=sys.stderr, flush=True)
        return []


def scenarios_for(args: argparse.Namespace, spec: BackendSpec) -> tuple[str, ...]:
    chosen: tuple[str, ...] = args.scenarios if args.scenarios is not None \
        else spec.default_scenarios
    if args.recovery and "recovery" not in chosen:
        chosen = (*chosen, "recovery")
    if args.concurrency is not None and "cluster-concurrent" not in chosen:
        chosen = (*chosen, "cluster-concurrent")
    if args.routing:
        chosen = (*chosen, *(s for s in ROUTING_SCENARIOS if s not in chosen))
    missing = [s for s in chosen if s not in spec.scenarios]
    if missing:
        print(f"{spec.kind}: no {', '.join(missing)} on this backend (not run)", flush=True)
    # table order (recovery right after cluster), whatever order they were given in
    return tuple(s for s in spec.scenarios if s in chosen)


async def run_all(args: argparse.Namespace, config: Config,
                  children: Children) -> dict[str, Any]:
    errors: dict[str, str] = {}
    profile_reports: list[str] = []
    began = time.monotonic()
    names = scenarios_for(args, config.spec)
    timeout = aiohttp.ClientTimeout(total=30)
    per_section: dict[str, dict[str, Any]] = {}
    plan = sections(args)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ctl = Control(session)
        for k, (section, client, compression) in enumerate(plan):
            section_config = dataclasses.replace(config, client=client,
                                                 ws_compression=compression)
            # raw has no Socket.IO client: once, with the first section
            section_names = names if k == 0 else tuple(n for n in names if n != "raw")
            scenarios = await run_scenarios(section_config, section_names, ctl, children,
                                            errors, began, section if k else "")
            per_section[section] = {"client": client, "ws_compression": compression,
                                    "scenarios": scenarios,
                                    "ratios": compute_ratios(config.spec, scenarios)}
        if args.profile:
            # with the receiving client of the first section (--client js: Node.js)
            _, client, compression = plan[0]
            profile_config = dataclasses.replace(config, client=client,
                                                 ws_compression=compression)
            profile_reports = await run_profile(args, profile_config, ctl, children,
                                                errors)
    for section, entry in per_section.items():
        for line in table(config.spec, entry["scenarios"], entry["ratios"], args.events,
                          section if len(plan) > 1 or section != "python" else "",
                          config.concurrency):
            print(line)
    first = next(iter(per_section.values()))
    scenarios, ratios = first["scenarios"], first["ratios"]
    for report in profile_reports:
        print()
        print(report)
    elapsed = time.monotonic() - began
    print(f"\n{config.backend}: total {elapsed:.1f}s", flush=True)
    return {
        "benchmark": "bench_cross_node",
        "backend": config.backend,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"events": args.events, "latency_events": args.latency_events,
                   "latency_rounds": config.latency_rounds,
                   "loop": config.loop,
                   "repeats": config.repeats, "latency_interval_s": args.interval,
                   "warmup_events": args.warmup, "transport": "websocket",
                   "raw_each_events": config.spec.raw_each_events,
                   "url_given": args.url is not None, "scenarios": list(names),
                   "recovery_options": RECOVERY_OPTIONS if "recovery" in names else None,
                   "clients": [s for s, _, _ in plan],
                   "concurrency": config.concurrency if "cluster-concurrent" in names
                   else None,
                   "emit_modes": {n: EMIT_MODES[n] for n in names if n in EMIT_MODES}},
        "environment": run_environment(config, any(n in JS_SCENARIOS for n in names)
                                       or "js" in args.clients),
        "scenarios": scenarios,
        "ratios": ratios,
        "clients": per_section,
        "errors": errors,
        "seconds": elapsed,
    }


async def main_async(args: argparse.Namespace, config: Config,
                     children: Children) -> dict[str, Any]:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_all(args, config, children)
    finally:
        await children.stop_all()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cross_node", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="redis",
                        help="which broker (default redis), several comma-separated "
                             f"(e.g. local,redis), or 'all'; of: {', '.join(BACKENDS)}")
    parser.add_argument("--events", type=int, default=20_000,
                        help="events per throughput run (default 20000)")
    parser.add_argument("--latency-events", type=int, default=2_000,
                        help="paced room broadcasts for latency (default 2000)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="throughput runs per scenario, in as many rounds, the "
                             "scenarios taking turns; the median is reported "
                             "(default 3 for redis, 2 for the others)")
    parser.add_argument("--latency-rounds", type=int, default=5,
                        help="measure the latency events in this many rounds, the "
                             "scenarios taking turns (default 5)")
    parser.add_argument("--interval", type=float, default=0.002,
                        help="seconds between latency broadcasts (default 0.002)")
    parser.add_argument("--warmup", type=int, default=1_000,
                        help="unmeasured events sent after the start and before each "
                             "throughput run (default 1000)")
    parser.add_argument("--url", "--redis-url", dest="url", default=None,
                        help="use this broker instead of starting a local one "
                             "(not with --backend all)")
    parser.add_argument("--json", default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON}, "
                             "{backend} replaced by the backend); '-' for none")
    parser.add_argument("--scenarios", default=None,
                        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)} "
                             "(default: all the backend has but the opt-in "
                             f"{', '.join(OPT_IN_SCENARIOS)}; pysio: redis "
                             "and rabbitmq)")
    parser.add_argument("--recovery", action="store_true",
                        help="also run the recovery scenario: cluster with connection "
                             "state recovery on (events through the durable log)")
    parser.add_argument("--client", default="python",
                        help="the receiving client: python (python-socketio's AsyncClient, "
                             "in this process), js (the official socket.io-client 4.8.4 in "
                             "Node.js, benchmarks/js) or python,js: each in turn")
    parser.add_argument("--concurrency", type=int, nargs="?", const=DEFAULT_CONCURRENCY,
                        default=None,
                        help="also run cluster-concurrent: the ordered cluster with N "
                             f"emitters at once on node A (N default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--routing", action="store_true",
                        help="also run per-room subscriptions on both sides: "
                             "cluster-rooms (ours, subscriptions=rooms) and, on Redis, "
                             "node-sharded (Node's sharded redis-adapter, dynamic mode)")
    parser.add_argument("--ws-compression", default="shipped",
                        help="websocket compression of the python nodes: shipped "
                             "(default: aiohttp compresses when the client offers it, as "
                             "the JS client does), on, off, or several comma-separated, "
                             "measured in turn with the js client")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio",
                        help="the event loop of every Python process (default asyncio's "
                             "own; uvloop: what uvicorn picks when it is installed)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a run may take before it is declared failed")
    parser.add_argument("--stall", type=float, default=10.0,
                        help="seconds without a new event, after the sender finished, "
                             "that mean events were lost")
    parser.add_argument("--profile", choices=("cprofile", "py-spy"), default=None,
                        help="after the scenarios, one extra throughput run with the "
                             "nodes profiled (not part of the reported figures)")
    parser.add_argument("--profile-scenario", choices=PROFILE_SCENARIOS, default="cluster",
                        help="which scenario --profile profiles (default cluster)")
    parser.add_argument("--profile-dir", default=str(REPO_ROOT / "benchmarks" / "results"
                                                     / "profile"))
    args = parser.parse_args(argv)
    if args.scenarios is not None:
        chosen = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
        unknown = [s for s in chosen if s not in ALL_SCENARIOS]
        if unknown:
            parser.error(f"unknown scenarios {unknown}; choose from {ALL_SCENARIOS}")
        args.scenarios = chosen
    args.clients = tuple(c.strip() for c in args.client.split(",") if c.strip())
    if not args.clients or any(c not in CLIENTS for c in args.clients) \
            or len(set(args.clients)) != len(args.clients):
        parser.error(f"--client: python, js or python,js, not {args.client!r}")
    args.ws_compressions = tuple(c.strip() for c in args.ws_compression.split(",")
                                 if c.strip())
    if not args.ws_compressions or any(c not in COMPRESSION for c in args.ws_compressions):
        parser.error(f"--ws-compression: of {', '.join(COMPRESSION)}, not "
                     f"{args.ws_compression!r}")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if args.latency_rounds < 1:
        parser.error("--latency-rounds must be >= 1")
    args.kinds = (tuple(BACKENDS) if args.backend == "all"
                  else tuple(k.strip() for k in args.backend.split(",") if k.strip()))
    unknown = [k for k in args.kinds if k not in BACKENDS]
    if unknown or not args.kinds:
        parser.error(f"unknown backend {unknown}; choose from {', '.join(BACKENDS)} or all")
    if len(args.kinds) > 1 and args.url is not None:
        parser.error("--url needs one --backend")
    return args


class Interrupted(BaseException):
    """SIGTERM outside the event loop (while a broker starts or stops)."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Interrupted


def start_broker(kind: str) -> tuple[Any, str, int | None]:
    """(broker, its URL, its pid) for a broker started from the local binary."""
    from conformance.brokers import broker_for

    if kind == "local":  # no broker: the first node hosts the hub, as a worker would
        folder = tempfile.mkdtemp(prefix="sioa-bench-local-")
        print(f"local: no broker, nodes meet in {folder}", flush=True)
        return None, f"local://{folder}/cluster", None
    broker = broker_for(kind)
    try:
        broker.start()
    except BaseException:
        broker.stop()
        raise
    print(f"{kind} broker started at {broker.url} in {broker.start_seconds:.1f}s",
          flush=True)
    proc = getattr(broker, "_proc", None)
    return broker, str(broker.url), None if proc is None else int(proc.pid)


def run_backend(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """One backend on its own broker; every process and the broker stop, whatever
    happens. Returns the results (with ``errors``) or raises on interruption."""
    spec = BACKENDS[kind]
    signal.signal(signal.SIGTERM, _on_sigterm)
    logdir = Path(tempfile.mkdtemp(prefix=f"bench-cross-node-{kind}-"))
    children = Children(logdir)
    broker: Any = None
    result: dict[str, Any] = {"backend": kind, "errors": {}}
    try:
        url, pid = args.url, None
        if url is None:
            broker, url, pid = start_broker(kind)
        config = Config(spec=spec, url=url, events=args.events,
                        latency_events=args.latency_events,
                        repeats=args.repeats or spec.repeats, interval=args.interval,
                        timeout=args.timeout, stall=args.stall, warmup=args.warmup,
                        broker_pid=pid,
                        concurrency=args.concurrency or DEFAULT_CONCURRENCY,
                        loop=args.loop, latency_rounds=args.latency_rounds)
        result = run_on(main_async(args, config, children), args.loop)
    except Exception as exc:  # the broker did not start, ...: the next backend still runs
        result["errors"]["backend"] = f"{type(exc).__name__}: {exc}"
        print(f"{kind}: ERROR: {exc}", file=sys.stderr, flush=True)
    finally:
        children.kill_all_now()
        if broker is not None:
            broker.stop()
        if result["errors"]:
            print(f"{kind}: node logs kept in {logdir}", file=sys.stderr)
        else:
            shutil.rmtree(logdir, ignore_errors=True)
    return result


def write_json(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json == "-" or "scenarios" not in result:
        return
    name = args.json
    if name == DEFAULT_JSON and args.loop != "asyncio":
        name = name.replace("{backend}", "{backend}-" + args.loop)
    path = Path(name.replace("{backend}", result["backend"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds: tuple[str, ...] = args.kinds
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            results[kind] = run_backend(args, kind)
            write_json(args, results[kind])
    except (KeyboardInterrupt, Interrupted, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    if len(kinds) > 1:
        for line in summary_table(results):
            print(line)
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
