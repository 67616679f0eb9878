"""The routing benchmark still runs, and its figures say what per-room subscriptions
promise: in ``rooms`` mode a node receives the broadcasts to the rooms it holds and
those to everyone, no more; in ``all`` mode every node receives every broadcast; and
in both, the clients get exactly what their rooms imply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.environment import REPO_ROOT
from benchmarks.routing_node import EVERYONE, held_rooms, stream_plan

ROOMS, EMITS, EVERYONE_N, CLIENTS = 8, 80, 4, 2
PER_ROOM = EMITS // ROOMS


def run(tmp_path: Path, backend: str, nodes: int, shares: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_routing", "--backend", backend,
         "--nodes", str(nodes), "--shares", shares, "--rooms", str(ROOMS),
         "--emits", str(EMITS), "--everyone", str(EVERYONE_N), "--clients-per-node",
         str(CLIENTS), "--json-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    document: dict[str, Any] = json.loads((tmp_path / f"routing-{backend}.json").read_text())
    return document


def check(document: dict[str, Any], held: list[int]) -> None:
    emitted = EMITS + EVERYONE_N
    for mode in ("all", "rooms"):
        found = document["results"][mode]
        assert found["emitted"] == emitted
        for node, rooms in zip(found["nodes"], held, strict=True):
            assert node["rooms_held"] == rooms
            assert node["delivered"] == rooms * PER_ROOM + EVERYONE_N * CLIENTS
            if mode == "all":
                assert node["received"] == emitted
            else:
                assert node["received"] == rooms * PER_ROOM + EVERYONE_N
                assert node["room_subscriptions"] == rooms


def test_plan_spreads_the_stream_evenly() -> None:
    plan = stream_plan(EMITS, ROOMS, EVERYONE_N)
    assert plan.count(EVERYONE) == EVERYONE_N
    assert [plan.count(k) for k in range(ROOMS)] == [PER_ROOM] * ROOMS
    assert held_rooms(1, 4, 0.5, ROOMS) == [2, 3, 4, 5]
    assert held_rooms(3, 4, 0.5, ROOMS) == [6, 7, 0, 1]
    assert held_rooms(0, 8, 0.01, ROOMS) == [0]


def test_in_process_on_memory(tmp_path: Path) -> None:
    document = run(tmp_path, "memory", 4, "1/4,1/2,1")
    assert document["nodes_run_as"] == "in-process"
    check(document, [2, 4, 8, 2])
    half = document["results"]["rooms"]["nodes"][1]
    assert half["share"] == 0.5
    # half the rooms: about half the room broadcasts, plus those to everyone
    assert half["received"] - EVERYONE_N == EMITS // 2
    assert 450 < half["received_per_1000_emitted"] < 550


def test_processes_on_local(tmp_path: Path) -> None:
    document = run(tmp_path, "local", 2, "1/2,1")
    assert document["nodes_run_as"] == "processes"
    check(document, [4, 8])
    cpu = [n["cpu_s"] for n in document["results"]["rooms"]["nodes"]]
    assert all(c is not None and c >= 0 for c in cpu)
