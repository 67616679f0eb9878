"""Connection state recovery: how long a client that missed 1,000 events takes to get
them back, per backend.

Run from the repository root:

    python -m benchmarks.bench_recovery [--backend memory|local|redis|rabbitmq|...|all]
        [--missed 1000] [--repeats 5] [--warmup 1] [--transport websocket[,polling]]
        [--url URL] [--json benchmarks/results/recovery-{backend}.json]

Two server nodes, A and B (``socketio_adapters.AsyncServer`` with
``connection_state_recovery`` on one manager URL, each its own aiohttp server in this
process), and ``socketio_adapters.AsyncClient`` clients. Each repetition:

1. a fresh client connects to A, joins room ``r`` and receives one event (so it has an
   offset to come back with);
2. A drops its transport server-side, as a lost network would (the same steps as
   ``Scenario.drop`` in conformance/test_recovery.py), and the session is saved;
3. B emits ``--missed`` events to room ``r`` (``await sio.emit("ev", i, to="r")``),
   flushes its manager, and a watcher client on B (in the room too) receives all of
   them live, so every missed event is in the log and read back by B;
4. the clock starts just before ``client.connect(B)``, and stops when the client's
   handler gets the last missed event. The client must get all of them, in order, once,
   with ``client.recovered`` true.

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from conformance.cluster import Node as ServerNode
from socketio_adapters import AsyncClient, websocket_compression

from .environment import REPO_ROOT, environment
from .node import with_channel
from .recovery_js import JsClientError, JsRecoveringClient

DEFAULT_JSON = str(REPO_ROOT / "benchmarks" / "results" / "recovery-{backend}.json")
BACKENDS = ("memory", "local", "redis", "rabbitmq", "nats", "kafka", "postgres")
TRANSPORTS = ("websocket", "polling")
CLIENTS = ("python", "js")
COMPRESSION = ("default", "on", "off")
ROOM = "r"
RECOVERY_OPTIONS = {"max_disconnection_duration": 120}
STEP_TIMEOUT = 60.0
"""Seconds any one step (a connect, the missed events, a live delivery) may take."""


class BenchError(RuntimeError):
    """A repetition could not be measured (events lost or out of order, no restore)."""


# ---------------------------------------------------------------------- nodes


class Node(ServerNode):
    """One server node, conformance's: ``socketio_adapters.AsyncServer`` with recovery
    on, on an aiohttp server bound to a free loopback port; clients may send ``join``
    (a room). It also times each restore's ``recovery_take``. ``compression``: its
    websockets' permessage-deflate, ``default`` (the server's own choice: off, as
    Node's), ``on`` or ``off``."""

    def __init__(self, name: str, url: str, compression: str = "default") -> None:
        super().__init__(url, recovery=RECOVERY_OPTIONS)
        self.name = name
        if compression != "default":
            websocket_compression(self.sio, compression == "on")
        self.take_seconds: list[float] = []
        """How long each restore's take took here (the saved session taken, the
        missed entries read from the log and filtered)."""
        recovery = self.manager.recovery
        assert recovery is not None
        take = recovery.take

        async def timed_take(namespace: str, pid: str, offset: str) -> Any:
            began = time.monotonic()
            try:
                return await take(namespace, pid, offset)
            finally:
                self.take_seconds.append(time.monotonic() - began)

        recovery.take = timed_take  # type: ignore[method-assign, assignment]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(super().stop(), 15)

    async def drop(self, eio_sid: str, disconnected: Awaitable[Any]) -> None:
        """Lose the transport of the client ``eio_sid`` server-side (as a dropped
        network does), wait for the client to see it (``disconnected``) and until this
        node kept the session (conformance's ``Scenario.drop``)."""
        recovery = self.manager.recovery
        if recovery is None:
            raise BenchError("recovery is not on")
        saved = recovery.saved
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None:
            raise BenchError(f"the client is not connected to node {self.name}")
        await sock.close(wait=False, abort=True, reason=self.sio.reason.TRANSPORT_CLOSE)
        sock.queue.put_nowait(None)  # ends the websocket, or the long-poll, now
        await asyncio.wait_for(disconnected, 10)
        deadline = time.monotonic() + 10
        while recovery.saved == saved:
            if time.monotonic() > deadline:
                raise BenchError("the server did not keep the session within 10s")
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------------- clients


class Client:
    """A ``socketio_adapters.AsyncClient`` recording when each ``ev`` arrives. It uses
    the bench's HTTP session (python-engineio's client does not close the one it makes
    itself when the server drops its transport)."""

    def __init__(self, expected: int, http: aiohttp.ClientSession) -> None:
        self.sio: Any = AsyncClient(reconnection=False, http_session=http)
        self.expected = expected
        self.values: list[Any] = []
        self.times: list[float] = []
        self.hello = asyncio.Event()
        self.all_in = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.sio.on("ev", self._on_event)
        self.sio.on("hello", self._on_hello)
        self.sio.on("disconnect", self._on_disconnect)

    def reset(self) -> None:
        self.values = []
        self.times = []
        self.all_in.clear()

    def _on_event(self, value: Any) -> None:
        self.times.append(time.monotonic())
        self.values.append(value)
        if len(self.values) >= self.expected:
            self.all_in.set()

    def _on_hello(self, value: Any) -> None:
        self.hello.set()

    def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()

    async def connect(self, node: Node, transport: str) -> None:
        self.disconnected.clear()
        await self.sio.connect(node.url, transports=[transport], wait_timeout=10)

    async def join(self, room: str) -> None:
        if await self.sio.call("join", room, timeout=10) is not True:
            raise BenchError(f"could not join {room}")

    async def wait_all(self, what: str) -> None:
        try:
            await asyncio.wait_for(self.all_in.wait(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise BenchError(f"{what}: {len(self.values)} of {self.expected} events "
                             f"arrived within {STEP_TIMEOUT:g}s") from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)


# ---------------------------------------------------------------------- one repetition


def check(values: list[Any], missed: int, recovered: bool, sid: str,
          old_sid: str) -> None:
    """The client got every missed event, in order, once, in its restored session."""
    if not recovered:
        raise BenchError("the session was not restored (recovered is false)")
    if sid != old_sid:
        raise BenchError("the restored session has another sid")
    if values[:missed] != list(range(missed)):
        raise BenchError("missed events out of order or repeated")
    if len(values) != missed:
        raise BenchError(f"{len(values) - missed} extra events after the missed ones")


@dataclass
class Bench:
    backend: str
    url: str
    missed: int
    compression: str = "default"
    nodes: list[Node] = field(default_factory=list)
    watchers: dict[str, Client] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None

    @property
    def a(self) -> Node:
        return self.nodes[0]

    @property
    def b(self) -> Node:
        return self.nodes[1]

    async def start(self) -> None:
        channel = f"bench-recovery-{secrets.token_hex(4)}"
        url = with_channel(self.url, channel)
        self.http = aiohttp.ClientSession()
        self.nodes = [Node("A", url, self.compression), Node("B", url, self.compression)]
        for node in self.nodes:
            await node.start()

    async def watcher(self, transport: str) -> Client:
        """A client on B in the room, to see B deliver every missed event live."""
        watcher = self.watchers.get(transport)
        if watcher is None:
            watcher = Client(self.missed, self._http())
            await watcher.connect(self.b, transport)
            await watcher.join(ROOM)
            self.watchers[transport] = watcher
        return watcher

    def _http(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the bench is not started")
        return self.http

    async def stop(self) -> None:
        for watcher in self.watchers.values():
            await watcher.close()
        for node in self.nodes:
            await node.stop()
        if self.http is not None:
            await self.http.close()

    async def miss(self, transport: str) -> dict[str, float]:
        """Step 3: B emits what the client misses, flushes, and its watcher (on
        ``transport``) gets all of it live."""
        watcher = await self.watcher(transport)
        watcher.reset()
        began = time.monotonic()
        for i in range(self.missed):
            await self.b.sio.emit("ev", i, to=ROOM)
        emitted = time.monotonic()
        await self.b.manager.flush()
        flushed = time.monotonic()
        await watcher.wait_all("live delivery to the watcher on B")
        return {"emit_loop_ms": 1000 * (emitted - began),
                "emit_flushed_ms": 1000 * (flushed - began),
                "live_delivery_ms": 1000 * (watcher.times[-1] - began)}

    def take_ms(self) -> float:
        if len(self.b.take_seconds) != 1:
            raise BenchError(f"{len(self.b.take_seconds)} session takes on B")
        return 1000 * self.b.take_seconds[0]

    async def repetition(self, transport: str) -> dict[str, Any]:
        """One repetition with a Python client on ``transport``."""
        client = Client(self.missed, self._http())
        try:
            # 1. a client on A in the room, with one event received
            fresh = time.monotonic()
            await client.connect(self.a, transport)
            fresh_connect = time.monotonic() - fresh
            await client.join(ROOM)
            sid = client.sio.get_sid()
            await self.a.sio.emit("hello", "hi", to=sid)
            await asyncio.wait_for(client.hello.wait(), 10)
            if client.sio.offset() is None:
                raise BenchError("the first event carried no offset")
            # 2. its transport lost
            await self.a.drop(client.sio.eio.sid, client.disconnected.wait())
            # 3. what it misses, emitted on B, flushed, and delivered live on B
            live = await self.miss(transport)
            # 4. back, on B
            client.reset()
            self.b.take_seconds.clear()
            start = time.monotonic()
            await client.connect(self.b, transport)
            connected = time.monotonic()
            await client.wait_all("missed events after the reconnect")
            await asyncio.sleep(0.1)
            check(client.values, self.missed, client.sio.recovered, client.sio.get_sid(),
                  sid)
            return {
                "recover_ms": 1000 * (client.times[self.missed - 1] - start),
                "connect_ms": 1000 * (connected - start),
                "take_ms": self.take_ms(),
                "fresh_connect_ms": 1000 * fresh_connect,
                "first_event_ms": 1000 * (client.times[0] - start),
                **live,
            }
        finally:
            await client.close()

    async def repetition_js(self, client: JsRecoveringClient) -> dict[str, Any]:
        """One repetition with the official JavaScript client, default transports
        (its own clock, in its own process; see benchmarks/recovery_client.mjs)."""
        # 1. a client on A in the room, with one event received
        fresh_connect_ms = await client.connect(self.a.url)
        sid = client.sid
        await self.a.sio.emit("hello", "hi", to=sid)
        if await client.wait_hello() is None:
            raise BenchError("the first event carried no offset")
        # 2. its transport lost
        await self.a.drop(client.eio_sid, client.wait_dropped())
        # 3. what it misses, emitted on B, flushed, and delivered live on B
        live = await self.miss("websocket")
        # 4. back, on B
        self.b.take_seconds.clear()
        got = await client.recover(self.b.url)
        check(got["values"], self.missed, got["recovered"], got["sid"], sid)
        return {
            "recover_ms": got["recover_ms"],
            "connect_ms": got["connect_ms"],
            "take_ms": self.take_ms(),
            "fresh_connect_ms": fresh_connect_ms,
            "first_event_ms": got["first_event_ms"],
            "upgrade_ms": got["upgrade_ms"],
            "events_on_polling": got["on_polling"],
            "final_transport": got["transport"],
            **live,
        }


def summarize(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return {}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


SUMMARY_KEYS = ("recover_ms", "connect_ms", "take_ms", "fresh_connect_ms",
                "first_event_ms", "live_delivery_ms", "emit_flushed_ms", "upgrade_ms",
                "events_on_polling")
JS_TRANSPORTS = "default"
"""The JavaScript client's only variant: its default transports (long-polling, then
the upgrade to websocket)."""


def variants(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(client, transport) pairs to measure, in order."""
    found: list[tuple[str, str]] = []
    for client in args.clients:
        if client == "js":
            found.append(("js", JS_TRANSPORTS))
        else:
            found.extend(("python", transport) for transport in args.transports)
    return found


async def run_variant(bench: Bench, args: argparse.Namespace, kind: str, client: str,
                      transport: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    js = JsRecoveringClient(args.missed) if client == "js" else None
    try:
        for rep in range(args.warmup + args.repeats):
            if js is not None:
                run = await bench.repetition_js(js)
            else:
                run = await bench.repetition(transport)
            measured = rep >= args.warmup
            label = f"run {rep - args.warmup + 1}" if measured else "warm-up"
            upgrade = ("" if run.get("upgrade_ms") is None else
                       f"; upgraded after {run['upgrade_ms']:.1f} ms, "
                       f"{run['events_on_polling']} events on polling")
            print(f"  {kind} {client} {transport} {label}: recovered {args.missed} "
                  f"events in {run['recover_ms']:8.1f} ms (CONNECT after "
                  f"{run['connect_ms']:.1f} ms, of which take {run['take_ms']:.1f} ms; "
                  f"a fresh connect takes {run['fresh_connect_ms']:.1f} ms; first event "
                  f"after {run['first_event_ms']:.1f} ms{upgrade}; live delivery of the "
                  f"same events took {run['live_delivery_ms']:.1f} ms)", flush=True)
            if measured:
                runs.append(run)
    finally:
        if js is not None:
            await js.close()
    return runs


async def run_backend_async(args: argparse.Namespace, kind: str,
                            url: str) -> dict[str, Any]:
    bench = Bench(kind, url, args.missed, args.ws_compression)
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    began = time.monotonic()
    try:
        await bench.start()
        for client, transport in variants(args):
            try:
                runs = await run_variant(bench, args, kind, client, transport)
            except (BenchError, JsClientError, asyncio.TimeoutError, OSError) as exc:
                errors[f"{client} {transport}"] = f"{type(exc).__name__}: {exc}"
                print(f"  ERROR ({kind} {client} {transport}): {exc}",
                      file=sys.stderr, flush=True)
                continue
            results.setdefault(client, {})[transport] = {"runs": runs} | {
                key: summarize(runs, key) for key in SUMMARY_KEYS}
    finally:
        await bench.stop()
    return {
        "benchmark": "bench_recovery",
        "backend": kind,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"missed": args.missed, "repeats": args.repeats, "warmup": args.warmup,
                   "clients": list(args.clients), "transports": list(args.transports),
                   "websocket_compression": args.ws_compression, "room": ROOM,
                   "recovery_options": RECOVERY_OPTIONS, "url_given": args.url is not None,
                   "nodes": "two socketio_adapters.AsyncServer nodes in one process"},
        "environment": environment(),
        "clients": results,
        "errors": errors,
        "seconds": time.monotonic() - began,
    }


def run_backend(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """One backend on its own broker (started here unless ``--url``), stopped whatever
    happens."""
    broker: Any = None
    result: dict[str, Any] = {"backend": kind, "errors": {}}
    try:
        url = args.url
        if url is None and kind == "memory":
            url = f"memory://bench-recovery-{secrets.token_hex(4)}"
        elif url is None and kind == "local":  # no broker: a node hosts the hub
            url = f"local://{tempfile.mkdtemp(prefix='sioa-bench-recovery-')}/cluster"
        elif url is None:
            from conformance.brokers import broker_for

            broker = broker_for(kind)
            try:
                broker.start()
            except BaseException:
                broker.stop()
                broker = None
                raise
            url = str(broker.url)
            print(f"{kind} broker started at {url} in {broker.start_seconds:.1f}s",
                  flush=True)
        result = asyncio.run(run_backend_async(args, kind, url))
    except Exception as exc:  # the broker did not start, ...: the next backend still runs
        result["errors"]["backend"] = f"{type(exc).__name__}: {exc}"
        print(f"{kind}: ERROR: {exc}", file=sys.stderr, flush=True)
    finally:
        if broker is not None:
            broker.stop()
    return result


# ---------------------------------------------------------------------- report


def table(results: dict[str, dict[str, Any]], missed: int) -> list[str]:
    lines = ["", f"Time to recover a client that missed {missed:,} events (ms; median, "
             "min, max over the runs)",
             f"{'backend':<9} {'client':<7} {'transport':<10} {'recover':>9} {'min':>9} "
             f"{'max':>9} {'take':>9} {'1st event':>9} {'upgrade':>9} {'fresh':>9} "
             f"{'live':>9}"]
    lines.append("-" * len(lines[-1]))

    def median(entry: dict[str, Any], key: str) -> str:
        value = entry.get(key, {}).get("median")
        return f"{'-':>9}" if value is None else f"{value:>9.1f}"

    for kind, result in results.items():
        clients = result.get("clients") or {}
        for client, transports in clients.items():
            for transport, entry in transports.items():
                rec = entry["recover_ms"]
                lines.append(
                    f"{kind:<9} {client:<7} {transport:<10} {rec['median']:>9.1f} "
                    f"{rec['min']:>9.1f} {rec['max']:>9.1f} {median(entry, 'take_ms')} "
                    f"{median(entry, 'first_event_ms')} {median(entry, 'upgrade_ms')} "
                    f"{median(entry, 'fresh_connect_ms')} "
                    f"{median(entry, 'live_delivery_ms')}")
        for what, error in result.get("errors", {}).items():
            lines.append(f"{kind:<9} {what:<18} failed: {error}")
    lines.append("recover: reconnect call -> last missed event; take: B's recovery_take "
                 "(session taken, log read, filtered); 1st event: reconnect call -> first "
                 "missed event; upgrade: reconnect call -> the JS client's switch to "
                 "websocket; fresh: a first connect to A (no restore); live: B's emit "
                 "loop start -> the watcher on B got the same events live")
    return lines


def write_json(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json == "-" or not result.get("clients"):
        return
    path = Path(args.json.replace("{backend}", result["backend"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}")


class Interrupted(BaseException):
    """SIGTERM: stop, stopping the broker."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Interrupted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_recovery", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=(*BACKENDS, "all"), default="redis",
                        help="which backend (default redis); 'all' runs each in turn")
    parser.add_argument("--missed", type=int, default=1000,
                        help="events the client misses (default 1000)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="measured repetitions per transport (default 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unreported repetitions first (default 1)")
    parser.add_argument("--transport", default="websocket",
                        help="comma-separated: websocket, polling (default websocket)")
    parser.add_argument("--client", default="python",
                        help="comma-separated: python (our AsyncClient, on each "
                             "--transport), js (the official socket.io-client with its "
                             "default transports; needs npm ci --prefix conformance/js) "
                             "(default python)")
    parser.add_argument("--ws-compression", choices=COMPRESSION, default="default",
                        help="the servers' websocket permessage-deflate: default (the "
                             "library's choice), on (accepted when offered), off "
                             "(refused, as Node's engine.io does) (default: default)")
    parser.add_argument("--url", default=None,
                        help="use this broker instead of starting a local one "
                             "(not with --backend all)")
    parser.add_argument("--json", default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON}, "
                             "{backend} replaced by the backend); '-' for none")
    args = parser.parse_args(argv)
    args.transports = tuple(t.strip() for t in args.transport.split(",") if t.strip())
    unknown = [t for t in args.transports if t not in TRANSPORTS]
    if unknown or not args.transports:
        parser.error(f"--transport: choose from {', '.join(TRANSPORTS)}")
    args.clients = tuple(c.strip() for c in args.client.split(",") if c.strip())
    if not args.clients or any(c not in CLIENTS for c in args.clients):
        parser.error(f"--client: choose from {', '.join(CLIENTS)}")
    if args.backend == "all" and args.url is not None:
        parser.error("--url needs one --backend, not all")
    if args.missed < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--missed and --repeats must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = BACKENDS if args.backend == "all" else (args.backend,)
    signal.signal(signal.SIGTERM, _on_sigterm)
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            print(f"{kind}: recovering {args.missed} missed events", flush=True)
            results[kind] = run_backend(args, kind)
            write_json(args, results[kind])
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 130
    for line in table(results, args.missed):
        print(line)
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
