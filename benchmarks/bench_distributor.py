"""The distributor mode's extra hop against a plain cluster node, in one run.

    python -m benchmarks.bench_distributor [--backend local,redis,...|all]
        [--events 10000] [--window 100] [--latency-calls 2000] [--emits 10000]
        [--repeats 3] [--client python|js|python,js]
        [--json benchmarks/results/distributor-{backend}.json]

Per backend, on one broker started from local binaries (``local://`` needs none),
two scenarios, each with its own server processes (benchmarks/distributor_node.py)
and its own client over websocket: python-socketio's ``AsyncClient`` in this process,
or with ``--client js`` the official socket.io-client in a Node.js process
(benchmarks/distributor_client.mjs; ``python,js`` measures with each in turn):

- ``plain``: a cluster node (``socketio_adapters.AsyncServer`` on a
  ``ClusterManager``) that runs the handlers itself, the client connected to it;
- ``distributor``: an edge node (the same server with ``EdgeRelay``) and an
  ``ApplicationServer`` process running the same handlers; the client connected to
  the edge node.

Both scenarios' processes run for the whole backend, and their measured runs
alternate (plain first, then distributor first), so load from elsewhere on the
machine falls on both alike. Figures:

- ``acked events/s``: the client sends ``--events`` events with an ack, at most
  ``--window`` waiting at once, and counts the acks (median, min, max of
  ``--repeats`` runs);
- ``latency``: ``--latency-calls`` calls one after the other, p50 and p99 of their
  round trips (in blocks of 100, alternating between the scenarios);
- ``emits/s``: a handler emits ``--emits`` events to the client's sid, each awaited,
  and the client counts them and checks their order (median, min, max);
- CPU milliseconds per 1,000 events of the server processes, the broker's processes
  and the client's process, over the measured runs.

The ratio distributor / plain says what the extra hop costs: each client event and
its ack cross the broker once more (edge node -> application server -> edge node).
An emit to one client crosses the broker in both scenarios: a plain cluster node
publishes it and, to keep the cluster's order, delivers it locally once its own
message came back from the broker; the application server sends it to the edge node
holding the client and returns once the broker accepted it.
Loopback only; every wait is bounded; every process is stopped on exit, on failure
and on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio

from .bench_cross_node import (
    BenchError,
    Child,
    Children,
    cpu_seconds,
    summarize_latency,
    tree_cpu_seconds,
)
from .distributor_node import NAMESPACE
from .environment import REPO_ROOT, each_broker, environment
from .runs import cancel_on_sigterm, run_to_end

JS_DIR = REPO_ROOT / "conformance" / "js"
JS_CLIENT = REPO_ROOT / "benchmarks" / "distributor_client.mjs"
WAIT = 120.0
"""Bound of every wait (seconds)."""
BACKENDS = "local,redis,redis-cluster,rabbitmq,nats,kafka,postgres"
SCENARIOS = ("plain", "distributor")
LATENCY_BLOCK = 100
"""Sequential calls per scenario before the latency runs switch to the other one."""
WARMUP = 500
"""Unmeasured acked events and emits per scenario before the measured runs (at most
a tenth of the measured count for emits, which are slow on a slow broker)."""
SLOW = {"kafka": 0.1}
"""Backends whose broker round trip is tens of milliseconds here (tansu: about 30 ms
from a publish to a subscriber, benchmarks/results/kafka.json; a plain node's awaited
emit waits for one), where every count is scaled by this factor to keep each run
within :data:`WAIT`."""
FIGURES = ("acked", "emits")

_RUNNING: list[Children] = []
"""Every process group started, for the synchronous last resort in :func:`main`."""


class Client:
    """The driver: a python-socketio client on :data:`NAMESPACE` (websocket)."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received = 0
        self.expected = 0
        self.next_i = 0
        self.out_of_order = 0
        self.last = 0.0
        self.all_in = asyncio.Event()
        self.sio.on("e", self._on_event, namespace=NAMESPACE)

    def _on_event(self, i: int) -> None:
        self.last = time.perf_counter()
        if i != self.next_i:
            self.out_of_order += 1
        self.next_i = i + 1
        self.received += 1
        if self.received >= self.expected:
            self.all_in.set()

    async def connect(self, url: str) -> None:
        await self.sio.connect(url, namespaces=[NAMESPACE], transports=["websocket"],
                               wait_timeout=30)

    def cpu(self) -> float:
        """CPU seconds this client used so far (this process's)."""
        return time.process_time()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace=NAMESPACE, timeout=WAIT)

    async def acked(self, events: int, window: int) -> float:
        """Seconds to send ``events`` events and get their acks, ``window`` at most
        waiting at once."""
        numbers = iter(range(events))

        async def sender() -> None:
            for i in numbers:
                if await self.call("ping", i) != i:
                    raise BenchError(f"ping {i} acked with something else")

        began = time.perf_counter()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(sender() for _ in range(min(window, events)))), WAIT)
        except (asyncio.TimeoutError, socketio.exceptions.TimeoutError):
            raise BenchError(f"{events} acked events not done in {WAIT:g}s") from None
        return time.perf_counter() - began

    async def latencies(self, calls: int) -> list[float]:
        """Round trips (seconds) of ``calls`` calls, one after the other."""
        out = []
        for i in range(calls):
            began = time.perf_counter()
            if await self.call("ping", i) != i:
                raise BenchError(f"ping {i} acked with something else")
            out.append(time.perf_counter() - began)
        return out

    async def emits(self, n: int) -> float:
        """Seconds from asking the handler for ``n`` emits until the last arrived."""
        self.received, self.expected, self.next_i, self.out_of_order = 0, n, 0, 0
        self.all_in.clear()
        began = time.perf_counter()
        if await self.call("burst", n) != n:
            raise BenchError("burst acked with something else")
        try:
            await asyncio.wait_for(self.all_in.wait(), WAIT)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.received} of {n} emitted events arrived in "
                             f"{WAIT:g}s") from None
        if self.out_of_order:
            raise BenchError(f"{self.out_of_order} of {n} emitted events out of order")
        return self.last - began


class JsClient:
    """The official socket.io-client (npm) in a Node.js process
    (benchmarks/distributor_client.mjs), with :class:`Client`'s measurements."""

    def __init__(self, children: Children) -> None:
        self.children = children
        self.child: Child | None = None

    async def connect(self, url: str) -> None:
        if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
            raise BenchError("socket.io-client is not installed: npm ci --prefix "
                             "conformance/js")
        log_path = self.children.logdir / f"js-client-{len(self.children.children)}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                "node", str(JS_CLIENT), url, NAMESPACE, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO_ROOT,
                start_new_session=True)
        self.child = Child("js-client", proc, log_path)
        self.children.children.append(self.child)
        if "ready" not in await self._reply(30):
            raise BenchError("the JS client did not connect")

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.child is not None and self.child.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.child.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise BenchError(f"the JS client did not answer in {timeout:g}s") from None
        if not line:
            raise BenchError(f"the JS client exited; its log:\n{self.child.log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"the JS client: {reply['error']}")
        return reply

    async def _command(self, **command: Any) -> dict[str, Any]:
        assert self.child is not None and self.child.proc.stdin is not None
        self.child.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.child.proc.stdin.drain()
        return await self._reply(WAIT + 10)

    def cpu(self) -> float:
        assert self.child is not None
        return cpu_seconds(self.child.proc.pid) or 0.0

    async def acked(self, events: int, window: int) -> float:
        return float((await self._command(cmd="acked", n=events, window=window))["seconds"])

    async def latencies(self, calls: int) -> list[float]:
        return [float(x) for x in (await self._command(cmd="latency", n=calls))["latencies"]]

    async def emits(self, n: int) -> float:
        return float((await self._command(cmd="emits", n=n))["seconds"])

    async def close(self) -> None:
        if self.child is not None:
            with contextlib.suppress(Exception):
                assert self.child.proc.stdin is not None
                self.child.proc.stdin.close()
                await asyncio.wait_for(self.child.proc.wait(), 5)
            await self.children.stop(self.child)


Driver = Client | JsClient


@dataclass
class Scenario:
    """One scenario's processes, client and measurements."""

    name: str
    processes: dict[str, Child]
    """role (``node``; ``edge``, ``app``) -> its process"""
    client: Driver
    runs: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {f: [] for f in FIGURES})
    latencies: list[float] = field(default_factory=list)

    def cpu(self, broker: list[int]) -> dict[str, float]:
        """CPU seconds used so far: each server process, the broker's processes and
        their descendants, the client (this process, or the Node.js one)."""
        found = {role: cpu_seconds(c.proc.pid) or 0.0 for role, c in self.processes.items()}
        found["broker"] = sum(tree_cpu_seconds(pid) or 0.0 for pid in broker)
        found["client"] = self.client.cpu()
        return found

    async def measure(self, figure: str, n: int, window: int,
                      broker: list[int]) -> dict[str, Any]:
        before = self.cpu(broker)
        seconds = await (self.client.acked(n, window) if figure == "acked"
                         else self.client.emits(n))
        after = self.cpu(broker)
        run = {"events": n, "seconds": seconds, "events_per_s": n / seconds,
               "cpu_s": {k: after[k] - before[k] for k in after}}
        self.runs[figure].append(run)
        return run

    def summary(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for figure, runs in self.runs.items():
            rates = [r["events_per_s"] for r in runs]
            events = sum(r["events"] for r in runs)
            cpu: dict[str, float] = {}
            for run in runs:
                for who, seconds in run["cpu_s"].items():
                    cpu[who] = cpu.get(who, 0.0) + seconds
            per_1000 = {who: 1e6 * s / events for who, s in cpu.items()}
            servers = sum(v for k, v in per_1000.items() if k not in ("broker", "client"))
            found[figure] = {
                "median": statistics.median(rates), "min": min(rates), "max": max(rates),
                "runs": runs,
                "cpu_ms_per_1000": per_1000 | {"servers": servers,
                                               "total": sum(per_1000.values())}}
        found["latency"] = summarize_latency(self.latencies)
        return found


async def _start(children: Children, url: str, client: str) -> dict[str, Scenario]:
    """Both scenarios' processes, each on its own channel (with ``local://``, on its
    own hub, which the scenario's first process hosts), and their clients
    (``client``: ``python`` or ``js``)."""

    def scenario_url(key: str) -> str:
        if url.startswith("local://"):  # a hub of its own, in the scenario's first process
            base = f"local://{tempfile.mkdtemp(prefix=f'sioa-bench-dist-{key}-')}/cluster"
        else:
            base = url
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}channel=bench-{key}-{secrets.token_hex(4)}"

    def node(role: str, node_url: str) -> list[str]:
        return [sys.executable, "-m", "benchmarks.distributor_node", "--role", role,
                "--url", node_url]

    def driver() -> Driver:
        return JsClient(children) if client == "js" else Client()

    plain_url, dist_url = scenario_url("plain"), scenario_url("dist")
    scenarios = {
        "plain": Scenario("plain", {
            "node": await children.spawn("plain", *node("plain", plain_url))}, driver()),
        "distributor": Scenario("distributor", {
            "app": await children.spawn("app", *node("app", dist_url)),
            "edge": await children.spawn("edge", *node("edge", dist_url))}, driver()),
    }
    for scenario in scenarios.values():
        entry = scenario.processes.get("node") or scenario.processes["edge"]
        await scenario.client.connect(entry.url)
    return scenarios


def _ratios(plain: dict[str, Any], dist: dict[str, Any]) -> dict[str, float]:
    ratios = {f"{f}_per_s": dist[f]["median"] / plain[f]["median"] for f in FIGURES}
    ratios |= {f"latency_{p}": dist["latency"][f"{p}_ms"] / plain["latency"][f"{p}_ms"]
               for p in ("p50", "p99")}
    for figure in FIGURES:
        for who in ("servers", "broker", "total"):
            base = plain[figure]["cpu_ms_per_1000"][who]
            if base > 0:
                ratios[f"cpu_{who}_{figure}"] = (
                    dist[figure]["cpu_ms_per_1000"][who] / base)
    return ratios


async def _measure(name: str, url: str, broker: list[int], client: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    """Both scenarios with fresh processes, driven by ``client``."""
    print(f"{name}, {client} client:", flush=True)
    logdir = Path(tempfile.mkdtemp(prefix=f"sioa-bench-dist-{name}-"))
    children = Children(logdir)
    _RUNNING.append(children)
    scenarios: dict[str, Scenario] = {}
    ok = False
    try:
        scenarios = await _start(children, url, client)
        for s in scenarios.values():  # warm-up, not counted
            await s.client.acked(min(WARMUP, args.events), args.window)
            await s.client.emits(min(WARMUP, max(1, args.emits // 10)))
            await s.client.latencies(min(50, args.latency_calls))
        for rep in range(args.repeats):
            order = SCENARIOS if rep % 2 == 0 else SCENARIOS[::-1]
            for figure, n in (("acked", args.events), ("emits", args.emits)):
                for key in order:
                    run = await scenarios[key].measure(figure, n, args.window, broker)
                    print(f"  run {rep + 1} {key:<12} {figure:<6}"
                          f" {run['events_per_s']:>8,.0f} ev/s", flush=True)
        for block, start in enumerate(range(0, args.latency_calls, LATENCY_BLOCK)):
            calls = min(LATENCY_BLOCK, args.latency_calls - start)
            for key in SCENARIOS if block % 2 == 0 else SCENARIOS[::-1]:
                scenarios[key].latencies += await scenarios[key].client.latencies(calls)
        ok = True
    finally:
        for s in scenarios.values():
            await s.client.close()
        await children.stop_all()
        _RUNNING.remove(children)
        if ok:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"{name}: the processes' logs are kept in {logdir}", file=sys.stderr,
                  flush=True)
    plain, dist = scenarios["plain"].summary(), scenarios["distributor"].summary()
    found = {"plain": plain, "distributor": dist, "ratios": _ratios(plain, dist)}
    print(_backend_table(found), flush=True)
    return found


async def _backend(name: str, url: str, broker: list[int], args: argparse.Namespace,
                   env: dict[str, Any]) -> dict[str, Any]:
    scale = SLOW.get(name, 1.0)
    if scale != 1.0:
        args = argparse.Namespace(**vars(args))
        for count in ("events", "emits", "latency_calls"):
            asked = getattr(args, count)
            setattr(args, count, min(asked, max(100, int(asked * scale))))
    print(f"{name}: {url}; {args.events} acked events, {args.emits} emits, "
          f"{args.latency_calls} calls per run", flush=True)
    clients = {client: await _measure(name, url, broker, client, args)
               for client in args.client.split(",")}
    result = {"backend": name, "url": url, "clients": clients,
              "settings": {k: v for k, v in vars(args).items() if k != "json"},
              "environment": env}
    if args.json != "-":
        path = REPO_ROOT / args.json.format(backend=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {path}", flush=True)
    return result


def _spread(figure: dict[str, Any]) -> str:
    return f"{figure['median']:,.0f} ({figure['min']:,.0f}-{figure['max']:,.0f})"


def _cpu_text(figure: dict[str, Any]) -> str:
    cpu = figure["cpu_ms_per_1000"]
    return f"{cpu['servers']:.0f} + {cpu['broker']:.0f} + {cpu['client']:.0f}"


def _backend_table(r: dict[str, Any]) -> str:
    p, d, x = r["plain"], r["distributor"], r["ratios"]
    rows = [
        ("acked events/s, median (min-max)", _spread(p["acked"]), _spread(d["acked"]),
         f"{x['acked_per_s']:.2f}"),
        ("emits/s, median (min-max)", _spread(p["emits"]), _spread(d["emits"]),
         f"{x['emits_per_s']:.2f}"),
        ("latency p50 ms", f"{p['latency']['p50_ms']:.3f}",
         f"{d['latency']['p50_ms']:.3f}", f"{x['latency_p50']:.2f}"),
        ("latency p99 ms", f"{p['latency']['p99_ms']:.3f}",
         f"{d['latency']['p99_ms']:.3f}", f"{x['latency_p99']:.2f}"),
    ]
    for figure in FIGURES:
        rows.append((f"CPU ms/1000 {figure}: servers + broker + client",
                     _cpu_text(p[figure]), _cpu_text(d[figure]),
                     f"{x.get(f'cpu_total_{figure}', float('nan')):.2f} (total)"))
    head = ("figure", "plain", "distributor", "distributor/plain")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    return "\n".join("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                      for i, (cell, w) in enumerate(zip(row, widths,
                                                                        strict=True)))
                     for row in [head, *rows])


def machine_line(env: dict[str, Any]) -> str:
    """One line: the machine, the interpreter, python-socketio and the commit."""
    packages = env["packages"]
    commit = (env["git_commit"] or "?")[:10] + (" (dirty)" if env["git_dirty"] else "")
    return (f"machine: {env['cpu_count']} CPUs ({env['cpus_usable']} usable), "
            f"{env['cpu_model']}; {env['implementation']} {env['python']}; "
            f"python-socketio {packages['python-socketio']}, python-engineio "
            f"{packages['python-engineio']}; commit {commit}")


def summary_table(results: dict[str, Any]) -> str:
    """Markdown: the medians, p50/p99 and ratios of each backend and client (README)."""
    lines = ["| backend | client | acked ev/s plain | distributor | ratio | emits/s plain "
             "| distributor | ratio | p50 ms plain | distributor | ratio | p99 ms plain "
             "| distributor | ratio |",
             "| --- | --- |" + " ---: |" * 12]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | | failed: {r['error']} |" + " |" * 11)
            continue
        for client, c in r["clients"].items():
            p, d, x = c["plain"], c["distributor"], c["ratios"]
            lines.append(
                f"| {name} | {client} | {p['acked']['median']:,.0f} "
                f"| {d['acked']['median']:,.0f} | {x['acked_per_s']:.2f} "
                f"| {p['emits']['median']:,.0f} | {d['emits']['median']:,.0f} "
                f"| {x['emits_per_s']:.2f} | {p['latency']['p50_ms']:.2f} "
                f"| {d['latency']['p50_ms']:.2f} | {x['latency_p50']:.2f} "
                f"| {p['latency']['p99_ms']:.2f} | {d['latency']['p99_ms']:.2f} "
                f"| {x['latency_p99']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", default="local",
                        help=f"comma-separated, or all ({BACKENDS}); default local")
    parser.add_argument("--events", type=int, default=10_000,
                        help="acked events per run (default 10000)")
    parser.add_argument("--window", type=int, default=100,
                        help="acks the client waits for at most at once (default 100)")
    parser.add_argument("--latency-calls", type=int, default=2_000,
                        help="sequential calls for the latency (default 2000)")
    parser.add_argument("--emits", type=int, default=10_000,
                        help="events the handler emits to the client per run "
                             "(default 10000)")
    parser.add_argument("--client", default="python",
                        help="python (python-socketio AsyncClient), js (the official "
                             "socket.io-client in Node.js) or python,js (default python)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per figure and scenario (default 3)")
    parser.add_argument("--json", default="benchmarks/results/distributor-{backend}.json",
                        help="where each backend's results go ({backend} replaced); "
                             "'-' for nowhere")
    args = parser.parse_args(argv)
    for option in ("events", "window", "latency_calls", "emits", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if any(c not in ("python", "js") for c in args.client.split(",")):
        parser.error("--client: python, js or python,js")
    if args.backend == "all":
        args.backend = BACKENDS
    return args


async def _main(args: argparse.Namespace, env: dict[str, Any]
                ) -> tuple[dict[str, Any], bool]:
    cancel_on_sigterm()

    async def run(name: str, url: str, broker: list[int]) -> dict[str, Any]:
        return await _backend(name, url, broker, args, env)

    return await each_broker(args.backend, run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_at_start = os.getloadavg()[0]
    env = environment()  # before this run writes its results into the tree
    print(machine_line(env), f"load average {args.load_at_start:.2f}", sep="; ",
          flush=True)
    outcome = run_to_end(_main(args, env), _RUNNING)
    if outcome is None:
        return 130
    results, failed = outcome
    print(summary_table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
