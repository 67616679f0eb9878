"""The scale benchmark still runs: both scenarios at a tiny size on ``local://``
(no broker), and with ``--anchor node`` (Node.js socket.io nodes with
@socket.io/redis-adapter) on a redis-server started from its local binary; its JSON
files hold the figures the README quotes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.environment import REPO_ROOT
from conformance.brokers import available

JS_PACKAGES = ("socket.io", "@socket.io/redis-adapter", "redis")

TINY = ["--backend", "local", "--node-counts", "2", "--clients-per-node", "10",
        "--broadcasts", "20", "--clients", "20", "--client-nodes", "2", "--rooms", "5",
        "--room-seconds", "0.5", "--fetch-nodes", "2", "--fetch-calls", "3",
        "--fetch-seconds", "2", "--sessions", "10", "--swarms", "1"]


def _bench(json_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.bench_scale ARGS --json-dir JSON_DIR``, which must
    succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scale", *args, "--json-dir",
         str(json_dir)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _check_nodes(nodes: dict[str, Any]) -> dict[str, Any]:
    """The figures of a tiny ``nodes`` run (2 nodes of 10 clients, 20 broadcasts)."""
    step: dict[str, Any] = nodes["results"]["steps"]["2"]
    assert step["delivered"] == 20 * 20
    assert step["delivered_per_s"] > 0
    assert set(step["cpu_ms_per_1000"]["per_node"]) == {"node-0", "node-1"}
    return step


def _check_clients(clients: dict[str, Any]) -> dict[str, Any]:
    """The figures of a tiny ``clients`` run (20 clients over 2 nodes)."""
    found: dict[str, Any] = clients["results"]
    assert found["connect"]["per_s"] > 0
    assert found["memory_per_socket"]["sockets"] == 20
    assert len(found["one_broadcast"]["seconds"]) == 3
    assert found["rooms"]["delivered"] >= found["rooms"]["emitted"] > 0
    assert found["inbound"]["received"] == 20 * found["inbound"]["per_client"] > 0
    assert found["inbound"]["received_per_s"] > 0
    # CPU is read in clock ticks (10 ms): a tiny run may use less than one
    assert found["inbound"]["node_cpu_ms_per_1000_received"] >= 0
    assert len(found["inbound"]["cpu_s"]) >= 3  # two nodes, the swarm (and the broker)
    assert found["fetch_sockets"]["2"]["sockets"] == 20
    assert found["fetch_sockets"]["2"]["n"] >= 1
    return found


def test_tiny_scale_run_writes_every_figure(tmp_path: Path) -> None:
    _bench(tmp_path, *TINY)

    nodes = json.loads((tmp_path / "scale-nodes-local.json").read_text())
    _check_nodes(nodes)

    clients = json.loads((tmp_path / "scale-clients-local.json").read_text())
    found = _check_clients(clients)
    assert found["sessions"]["sessions"] == 10
    assert found["sessions"]["record_bytes_mean"] > 0
    assert clients["environment"]["python"]
    assert nodes["emits"] == clients["emits"] == "ordered"
    for stage in ("rooms", "inbound"):  # our nodes time their cycle collector
        collector = found[stage]["gc"]
        assert collector["collections"] >= collector["full"] >= 0
        assert collector["ms"] >= 0


def test_fire_and_forget_run_writes_its_own_files(tmp_path: Path) -> None:
    # ours as Node's adapter publishes: same figures, files of their own
    tiny = [*TINY, "--scenario", "nodes", "--emits", "fire-and-forget"]
    done = _bench(tmp_path, *tiny)
    assert "fire-and-forget emits" in done.stdout
    nodes = json.loads((tmp_path / "scale-nodes-local-ff.json").read_text())
    assert nodes["emits"] == "fire-and-forget"
    _check_nodes(nodes)
    assert not (tmp_path / "scale-nodes-local.json").exists()


def test_a_gc_threshold_run_writes_its_own_files(tmp_path: Path) -> None:
    # a first threshold of 5: the collector runs on almost every allocation, so the
    # nodes' clocks must count collections
    tiny = [*TINY, "--scenario", "clients", "--gc-threshold", "5"]
    _bench(tmp_path, *tiny)
    clients = json.loads((tmp_path / "scale-clients-local-gc5.json").read_text())
    assert clients["gc_threshold"] == 5
    found = _check_clients(clients)
    assert found["inbound"]["gc"]["collections"] > 0
    assert not (tmp_path / "scale-clients-local.json").exists()


def test_a_run_on_our_server_class_writes_its_own_files(tmp_path: Path) -> None:
    tiny = [*TINY, "--scenario", "clients", "--server", "socketio-adapters"]
    _bench(tmp_path, *tiny)
    clients = json.loads((tmp_path / "scale-clients-local-sioa.json").read_text())
    assert clients["server"] == "socketio-adapters"
    _check_clients(clients)
    assert not (tmp_path / "scale-clients-local.json").exists()


def test_our_nodes_serve_with_the_server_class_asked_for() -> None:
    from benchmarks.scale_node import ScaleNode
    from socketio_adapters import AsyncServer

    ours = ScaleNode("local:///tmp/unused/hub", "ch", recovery=False, ours=True)
    theirs = ScaleNode("local:///tmp/unused/hub", "ch", recovery=False)
    assert isinstance(ours.sio, AsyncServer)
    assert not isinstance(theirs.sio, AsyncServer)
    assert ours.sio.manager is not None and ours.sio.manager is ours.manager


def _refused(*argv: str) -> str:
    """bench_scale's parser error (exit 2) for ``argv``: its message."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", *argv],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    return done.stderr


@pytest.mark.parametrize(("argv", "why"), [
    (["--server", "socketio-adapters"], "--server picks our nodes' server class"),
    (["--gc-threshold", "10000"], "--gc-threshold sets CPython's collector"),
    (["--emits", "ordered"], "--anchor node emits fire-and-forget only"),
])
def test_options_for_our_nodes_only_are_refused_with_node_s(argv: list[str],
                                                           why: str) -> None:
    assert why in _refused("--anchor", "node", "--backend", "redis", *argv)


def test_node_anchor_runs_on_redis_only() -> None:
    assert "--anchor node runs with --backend redis only" in _refused(
        "--anchor", "node", "--backend", "local")


def _node_anchor_missing() -> str | None:
    """What the Node.js anchor lacks on this machine, or None."""
    if shutil.which("node") is None:
        return "node (Node.js) is not on PATH"
    if not available("redis"):
        return "redis-server is not installed"
    modules = REPO_ROOT / "benchmarks" / "js" / "node_modules"
    if not all((modules / name).is_dir() for name in JS_PACKAGES):
        return "benchmarks/js/node_modules is missing (npm ci --prefix benchmarks/js)"
    return None


def test_tiny_node_anchor_run_on_redis_writes_every_figure(tmp_path: Path) -> None:
    missing = _node_anchor_missing()
    if missing:
        pytest.skip(f"--anchor node needs Node.js, redis-server and benchmarks/js: {missing}")
    tiny = [*TINY[2:], "--backend", "redis", "--anchor", "node"]
    _bench(tmp_path, *tiny, timeout=90)

    nodes = json.loads((tmp_path / "scale-nodes-redis-node.json").read_text())
    assert nodes["anchor"] == "node"
    assert nodes["emits"] == "fire-and-forget"
    assert nodes["environment"]["js"]["@socket.io/redis-adapter"]
    step = _check_nodes(nodes)
    assert step["cpu_ms_per_1000"]["broker"] is not None

    clients = json.loads((tmp_path / "scale-clients-redis-node.json").read_text())
    found = _check_clients(clients)
    assert "connection state recovery" in found["sessions"]["skipped"]
    assert found["inbound"]["gc"] is None  # V8's collector is not timed
    assert not list(tmp_path.glob("scale-*-redis.json"))  # ours keep their names
