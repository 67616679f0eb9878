"""benchmarks/bench_room_joins.py on memory:// (in-process), a handful of joins."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_room_joins import main


def test_joins_are_timed_in_both_modes_and_the_rooms_mode_subscribes(tmp_path: Path) -> None:
    assert main(["--backend", "memory", "--joins", "5", "--json-dir", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "room-joins.json").read_text())["results"]["memory"]
    assert found["all"]["subscriptions"] == 0  # every node gets everything: no keys
    assert found["rooms"]["subscriptions"] >= 5  # a key per room with a member
    assert found["rooms"]["batch_unsubscribed_keys"] >= 10  # 5 rooms + a batch of 5
    for mode in ("all", "rooms"):
        assert 0 <= found[mode]["join_p50_ms"] <= found[mode]["join_p99_ms"]
