"""bench_cross_node's options and scenario tables (no broker, no process started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_cross_node as bench
from benchmarks.node import BenchNode
from socketio_adapters.registry import backend_class
from socketio_adapters.websocket import AiohttpWebSocket


def _config(**changes: Any) -> bench.Config:
    config = bench.Config(spec=bench.BACKENDS["redis"], url="redis://127.0.0.1:1/0",
                          events=10, latency_events=10, repeats=1, interval=0.0,
                          timeout=1.0, stall=1.0, warmup=0)
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def test_defaults_keep_the_python_client_and_shipped_compression() -> None:
    args = bench.parse_args([])
    assert args.clients == ("python",)
    assert args.ws_compressions == ("shipped",)
    assert args.concurrency is None
    assert bench.sections(args) == [("python", "python", "shipped")]


def test_client_and_compression_lists_give_one_section_each() -> None:
    args = bench.parse_args(["--client", "python,js", "--ws-compression", "shipped,off"])
    assert bench.sections(args) == [("python", "python", "shipped"), ("js", "js", "shipped"),
                                    ("js/ws-off", "js", "off")]


@pytest.mark.parametrize("argv", [["--client", "ruby"], ["--client", "js,js"],
                                  ["--ws-compression", "maybe"], ["--concurrency", "0"],
                                  ["--scenarios", "nodes"], ["--latency-rounds", "0"]])
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_concurrency_alone_means_100_and_adds_its_scenario() -> None:
    args = bench.parse_args(["--concurrency"])
    assert args.concurrency == bench.DEFAULT_CONCURRENCY == 100
    assert "cluster-concurrent" in bench.scenarios_for(args, bench.BACKENDS["redis"])
    assert "cluster-concurrent" not in bench.scenarios_for(bench.parse_args([]),
                                                           bench.BACKENDS["redis"])


def test_node_rows_run_on_redis_only() -> None:
    args = bench.parse_args([])
    redis = bench.scenarios_for(args, bench.BACKENDS["redis"])
    assert {"cluster-ff", "node", "node-single"} <= set(redis)
    nats = bench.scenarios_for(args, bench.BACKENDS["nats"])
    assert "cluster-ff" in nats and "node" not in nats and "node-single" not in nats


def test_node_scenarios_start_node_server_and_python_nodes_get_compression() -> None:
    config = _config(ws_compression="off")
    node = bench.node_cmd("node", config, "ch")
    assert node[:2] == ["node", str(bench.JS_DIR / "node_server.mjs")]
    assert node[node.index("--mode") + 1] == "adapter" and "--ws-compression" not in node
    cluster = bench.node_cmd("cluster-concurrent", config, "ch")
    assert cluster[cluster.index("--mode") + 1] == "cluster"
    assert cluster[-2:] == ["--ws-compression", "off"]
    shipped = bench.node_cmd("single", _config(), "ch")
    assert "--ws-compression" not in shipped


def test_ratios_against_node() -> None:
    def entry(rate: float, p50: float, p99: float) -> dict[str, Any]:
        return {"throughput": {"median": rate}, "latency": {"p50_ms": p50, "p99_ms": p99}}

    ratios = bench.compute_ratios(bench.BACKENDS["redis"], {
        "cluster": entry(8_000, 0.6, 2.0), "node": entry(10_000, 0.5, 1.0),
        "cluster-concurrent": entry(12_000, 0.6, 2.0), "node-single": entry(20_000, 0.2, 0.5)})
    assert ratios["cluster_vs_node_throughput"]["value"] == pytest.approx(0.8)
    assert ratios["cluster_vs_node_p50_latency"]["value"] == pytest.approx(1.2)
    assert ratios["cluster_vs_node_p99_latency"]["value"] == pytest.approx(2.0)
    assert ratios["cluster_concurrent_vs_node_throughput"]["met"] is True
    assert "cluster_ff_vs_node_throughput" not in ratios  # not run: no row


def test_routing_adds_both_sides_per_room_subscriptions_where_each_exists(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = bench.parse_args(["--routing"])
    redis = bench.scenarios_for(args, bench.BACKENDS["redis"])
    assert {"cluster-rooms", "node-sharded"} <= set(redis)
    nats = bench.scenarios_for(args, bench.BACKENDS["nats"])
    assert "cluster-rooms" in nats and "node-sharded" not in nats
    capsys.readouterr()
    assert "cluster-rooms" not in bench.scenarios_for(args, bench.BACKENDS["kafka"])
    # a row asked for that the backend cannot run is said, not dropped in silence
    assert "kafka: no cluster-rooms, node-sharded on this backend (not run)" in \
        capsys.readouterr().out
    assert not {"cluster-rooms", "node-sharded"} & set(
        bench.scenarios_for(bench.parse_args([]), bench.BACKENDS["redis"]))
    # in table order: ours beside ours, Node's beside Node's
    assert redis.index("cluster-rooms") < redis.index("node") < redis.index("node-sharded")


@pytest.mark.parametrize("kind", sorted(bench.BACKENDS))
def test_the_rooms_row_runs_where_the_backend_routes_rooms(kind: str) -> None:
    scheme = {"rabbitmq": "amqp", "postgres": "postgresql"}.get(kind, kind)
    routes = backend_class(f"{scheme}://127.0.0.1/x").capabilities.routes_rooms
    assert bench.BACKENDS[kind].routes_rooms is routes


def test_routing_scenarios_start_their_nodes_in_per_room_mode() -> None:
    rooms = bench.node_cmd("cluster-rooms", _config(), "ch")
    assert rooms[rooms.index("--mode") + 1] == "cluster"
    assert rooms[rooms.index("--subscriptions") + 1] == "rooms"
    assert "--subscriptions" not in bench.node_cmd("cluster", _config(), "ch")
    sharded = bench.node_cmd("node-sharded", _config(), "ch")
    assert sharded[sharded.index("--mode") + 1] == "sharded"
    node = BenchNode("cluster", "redis://127.0.0.1:1/0", "ch", subscriptions="rooms")
    assert node.manager.routing.enabled
    assert not BenchNode("cluster", "redis://127.0.0.1:1/0", "ch").manager.routing.enabled


def test_ratios_of_the_routing_rows() -> None:
    def entry(p50: float, p99: float) -> dict[str, Any]:
        return {"throughput": {"median": 1.0}, "latency": {"p50_ms": p50, "p99_ms": p99}}

    ratios = bench.compute_ratios(bench.BACKENDS["redis"], {
        "cluster": entry(0.5, 1.0), "cluster-rooms": entry(0.4, 0.9),
        "node-sharded": entry(0.5, 1.8)})
    assert ratios["cluster_rooms_vs_cluster_p50_latency"]["value"] == pytest.approx(0.8)
    assert ratios["cluster_rooms_vs_node_sharded_p50_latency"]["value"] == pytest.approx(0.8)
    assert ratios["cluster_rooms_vs_node_sharded_p99_latency"]["value"] == pytest.approx(0.5)
    assert "cluster_rooms_vs_node_sharded_p50_latency" not in bench.compute_ratios(
        bench.BACKENDS["redis"], {"cluster": entry(0.5, 1.0), "cluster-rooms": entry(0.4, 0.9)})


async def test_receiver_checks_order_per_emitter() -> None:
    receiver = bench.Receiver()
    await receiver.reset(concurrency=2)
    for i, k in ((0, 0), (1, 1), (3, 1), (2, 0), (4, 0)):
        receiver._on_event({"i": i, "k": k})
    assert await receiver.order_errors() == 0
    receiver._on_event({"i": 7, "k": 1})  # 5 was expected from emitter 1
    assert await receiver.progress() == (6, receiver.last)
    assert await receiver.order_errors() == 1


def test_node_switches_websocket_compression_on_its_own_server_only() -> None:
    off = BenchNode("single", None, "ch", ws_compression=False)
    shipped = BenchNode("single", None, "ch")
    assert off.sio.eio._async["websocket"] is AiohttpWebSocket
    assert shipped.sio.eio._async["websocket"] is not AiohttpWebSocket


def test_python_nodes_get_the_loop_and_node_server_does_not() -> None:
    config = _config(loop="uvloop")
    for mode in ("single", "cluster", "pysio", "raw-pub", "raw-sub"):
        cmd = bench.node_cmd(mode, config, "ch")
        assert cmd[cmd.index("--loop") + 1] == "uvloop"
    assert "--loop" not in bench.node_cmd("node", config, "ch")
    assert bench.parse_args([]).loop == "asyncio"
    with pytest.raises(SystemExit):
        bench.parse_args(["--loop", "trio"])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_node_says_which_loop_it_runs_on(loop: str, tmp_path: Path) -> None:
    children = bench.Children(tmp_path)
    try:
        child = await bench.spawn_node(children, "single", "single", _config(loop=loop),
                                       "ch")
        assert child.loop == loop and child.port > 0
    finally:
        await children.stop_all()


async def test_a_node_on_another_loop_than_asked_is_refused(tmp_path: Path) -> None:
    children = bench.Children(tmp_path)
    config = _config(loop="uvloop")
    real = bench.node_cmd

    def asyncio_node(mode: str, config: bench.Config, channel: str) -> list[str]:
        cmd = real(mode, config, channel)
        cmd[cmd.index("--loop") + 1] = "asyncio"
        return cmd

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(bench, "node_cmd", asyncio_node)
            with pytest.raises(bench.BenchError, match="runs on asyncio, not on uvloop"):
                await bench.spawn_node(children, "single", "single", config, "ch")
    finally:
        await children.stop_all()


def test_latency_events_split_in_near_equal_rounds() -> None:
    assert bench.round_sizes(2000, 5) == [400] * 5
    assert bench.round_sizes(7, 3) == [3, 2, 2]
    assert bench.round_sizes(2, 5) == [1, 1]


class _Probe:
    """A scenario whose latencies are its round number, in seconds; ``fail_at`` makes
    that call raise as a lost event would."""

    def __init__(self, name: str, calls: list[str], fail_at: int | None = None,
                 broken: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail_at = fail_at
        self.broken = broken
        self.measured = 0
        self.closed = False

    async def open(self) -> None:
        if self.broken:  # as a client library's own error would
            raise ConnectionError(f"{self.name}: refused")
        self.calls.append(f"open {self.name}")

    async def measure(self, n: int) -> list[float]:
        self.measured += 1
        if self.measured == self.fail_at:
            raise bench.BenchError(f"{self.name}: events lost")
        self.calls.append(self.name)
        return [self.measured / 1000] * n

    async def close(self) -> None:
        self.closed = True


async def _rounds(probes: dict[str, _Probe], scenarios: dict[str, Any],
                  errors: dict[str, str], events: int, rounds: int) -> None:
    """run_latency_rounds over ``probes`` (in their order) instead of real nodes."""
    config = _config(latency_events=events, latency_rounds=rounds)
    await bench.run_latency_rounds(config, tuple(probes), None,  # type: ignore[arg-type]
                                   None, scenarios, errors,  # type: ignore[arg-type]
                                   probe_for=lambda name, *_: probes[name])


async def test_latency_rounds_take_turns_and_gather_every_round() -> None:
    calls: list[str] = []
    probes = {"cluster": _Probe("cluster", calls), "node": _Probe("node", calls),
              "raw": _Probe("raw", calls)}
    scenarios: dict[str, Any] = {"cluster": {}, "node": {}, "raw_each": {}}
    errors: dict[str, str] = {}
    await _rounds(probes, scenarios, errors, 6, 3)
    assert calls == ["open cluster", "open node", "open raw",
                     "cluster", "node", "raw", "cluster", "raw", "node",
                     "raw", "cluster", "node"]
    assert scenarios["cluster"]["latency"]["n"] == 6
    assert scenarios["cluster"]["latency"]["rounds_p50_ms"] == [1.0, 2.0, 3.0]
    assert scenarios["raw_each"]["latency"]["p50_ms"] == 2.0
    assert not errors and all(p.closed for p in probes.values())


async def test_a_scenario_failing_a_round_is_dropped_and_said() -> None:
    calls: list[str] = []
    probes = {"cluster": _Probe("cluster", calls), "node": _Probe("node", calls, fail_at=2)}
    scenarios: dict[str, Any] = {"cluster": {}, "node": {}}
    errors: dict[str, str] = {}
    await _rounds(probes, scenarios, errors, 6, 3)
    assert "latency" not in scenarios["node"]
    assert errors == {"node latency": "node: events lost"}
    assert scenarios["cluster"]["latency"]["n"] == 6
    assert probes["node"].closed and probes["cluster"].closed


async def test_a_scenario_that_cannot_start_is_said_and_closed_and_the_rest_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    probes = {"cluster": _Probe("cluster", calls, broken=True), "node": _Probe("node", calls)}
    scenarios: dict[str, Any] = {"cluster": {}, "node": {}}
    errors: dict[str, str] = {}
    await _rounds(probes, scenarios, errors, 4, 2)
    assert errors == {"cluster latency": "ConnectionError: cluster: refused"}
    assert probes["cluster"].closed and "latency" not in scenarios["cluster"]
    assert calls == ["open node", "node", "node"]
    assert scenarios["node"]["latency"]["n"] == 4

    probes = {"cluster": _Probe("cluster", calls, broken=True)}
    capsys.readouterr()
    await _rounds(probes, scenarios, errors, 4, 2)
    assert "latency round" not in capsys.readouterr().out  # nothing left to measure


class _Runs(_Probe):
    """A scenario's throughput runs: each run's rate is its number; ``fail_at``
    makes that run raise as a lost event would."""

    async def run(self) -> None:
        self.measured += 1
        if self.measured == self.fail_at:
            raise bench.BenchError(f"{self.name}: events lost")
        self.calls.append(self.name)

    def results(self) -> dict[str, Any]:
        runs = [{"events_per_s": float(rate)} for rate in range(1, self.measured + 1)]
        return {self.name: {"throughput": bench.summarize_runs(runs)}}


async def _throughput(runs: dict[str, _Runs], errors: dict[str, str],
                      repeats: int, suffix: str = "") -> dict[str, Any]:
    """run_throughput_rounds over ``runs`` (in their order) instead of real nodes."""
    return await bench.run_throughput_rounds(
        _config(repeats=repeats), tuple(runs), None, None,  # type: ignore[arg-type]
        errors, suffix, runs_for=lambda name, *_: runs[name], pause=0)


async def test_throughput_rounds_take_turns_and_report_every_run() -> None:
    calls: list[str] = []
    runs = {"single": _Runs("single", calls), "cluster": _Runs("cluster", calls),
            "node": _Runs("node", calls)}
    errors: dict[str, str] = {}
    results = await _throughput(runs, errors, 3)
    assert calls == ["open single", "open cluster", "open node",
                     "single", "cluster", "node", "single", "node", "cluster",
                     "node", "single", "cluster"]
    assert results["cluster"]["throughput"]["median"] == 2.0
    assert [r["events_per_s"] for r in results["node"]["throughput"]["runs"]] == [1, 2, 3]
    assert not errors and all(r.closed for r in runs.values())


async def test_a_scenario_failing_a_throughput_run_is_dropped_and_said() -> None:
    calls: list[str] = []
    runs = {"cluster": _Runs("cluster", calls, fail_at=2), "node": _Runs("node", calls)}
    errors: dict[str, str] = {}
    results = await _throughput(runs, errors, 3, " (js)")
    assert errors == {"cluster (js)": "cluster: events lost"}
    assert "cluster" not in results and runs["cluster"].closed
    assert calls == ["open cluster", "open node", "cluster", "node", "node", "node"]
    assert results["node"]["throughput"]["median"] == 2.0


async def test_a_scenario_that_cannot_start_its_throughput_runs_is_said() -> None:
    calls: list[str] = []
    runs = {"cluster": _Runs("cluster", calls, broken=True), "node": _Runs("node", calls)}
    errors: dict[str, str] = {}
    results = await _throughput(runs, errors, 2)
    assert errors == {"cluster": "ConnectionError: cluster: refused"}
    assert runs["cluster"].closed and list(results) == ["node"]
    assert calls == ["open node", "node", "node"]


def test_no_scenario_always_follows_the_same_one() -> None:
    names = ["a", "b", "c", "d"]
    rounds = [bench.in_turn(names, r) for r in range(4)]
    assert rounds == [["a", "b", "c", "d"], ["a", "d", "c", "b"],
                      ["c", "d", "a", "b"], ["c", "b", "a", "d"]]
    after = {(order[i - 1], order[i]) for order in rounds for i in range(1, len(order))}
    assert {first for first, then in after if then == "b"} == {"a", "c"}
    assert bench.in_turn([], 3) == []


async def test_each_socket_run_follows_its_own_warm_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []

    async def emit_and_count(mode: str, ctl: Any, a: Any, receiver: Any, n: int,
                             config: Any, meter: Any = None,
                             concurrency: int = 1) -> dict[str, Any]:
        sent.append(n)
        return {"seconds": 1.0, "events_per_s": float(n), "emit_loop_seconds": 1.0,
                "out_of_order": 0, "cpu": {}}

    monkeypatch.setattr(bench, "emit_and_count", emit_and_count)
    runs = bench.SocketRuns("cluster-ff", _config(events=500, warmup=20), None,  # type: ignore[arg-type]
                            None)  # type: ignore[arg-type]
    runs.nodes = [object()]  # type: ignore[list-item]
    runs.receiver = bench.Receiver()
    await runs.run()
    await runs.run()
    assert sent == [20, 500, 20, 500]
    result = runs.results()["cluster-ff"]
    assert result["throughput"]["median"] == 500.0 and len(result["throughput"]["runs"]) == 2
    assert (result["emit_mode"], result["client"], result["server"], result["concurrency"]
            ) == (bench.EMIT_MODES["cluster-ff"], "python", "python", 1)


def test_raw_runs_report_each_variant_and_cap_the_awaited_one() -> None:
    config = _config(events=20_000)
    runs = bench.RawRuns(config, None, None)  # type: ignore[arg-type]
    each, batched = runs.variants
    assert each == "each"
    cap = config.spec.raw_each_events
    assert runs.events("each") == (min(20_000, cap) if cap else 20_000)
    assert runs.events(batched) == 20_000
    runs.runs["each"].append({"events_per_s": 7.0})
    assert runs.results() == {"raw_each": {"throughput": bench.summarize_runs(
        [{"events_per_s": 7.0}])}}
