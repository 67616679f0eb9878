"""scripts/compat_matrix.py: the committed matrix cannot drift from the code or the
run, and a failed or partial run cannot update it."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compat_matrix",
                                                  ROOT / "scripts" / "compat_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


matrix = _load()


def _report() -> dict[str, Any]:
    backend = {"url": "redis://127.0.0.1:1/0", "kind": "redis", "broker": "Redis 7.0.15",
               "source": "local binary", "passed": 30, "failed": 0, "skipped": 2,
               "error": 0, "measurements": {"redis/largest payload that crossed": "15 MiB"},
               "areas": {"broadcast": {"passed": 26}, "faults": {"passed": 4, "skipped": 2}}}
    return {"date": "2026-12-04", "python_socketio": "5.18.1", "exitstatus": 0,
            "partial": [], "collected": 32, "unit": {"passed": 1},
            "backends": {"redis": backend}}


def test_a_matrix_agrees_with_the_run_it_came_from() -> None:
    report = _report()
    text = matrix.render(report)
    assert matrix.check(report, text) == []
    row = matrix.parse(text)[1]["redis"]
    assert row[1] == "Redis 7.0.15"
    assert "16 MiB" in row and "15 MiB" in row  # declared, and measured
    assert "Redis 7.4.1, Valkey 8.0.1" in row  # the CI matrix's images


def test_more_passed_tests_are_fine_fewer_or_a_failure_or_a_skip_are_not() -> None:
    committed = matrix.render(_report())
    more = _report()
    more["backends"]["redis"]["areas"]["broadcast"]["passed"] = 27
    assert matrix.check(more, committed) == []
    fewer = _report()
    fewer["backends"]["redis"]["areas"]["broadcast"]["passed"] = 25
    assert matrix.check(fewer, committed) == ["redis: broadcast passed 25, committed 26"]
    failed = _report()
    failed["backends"]["redis"]["areas"]["broadcast"]["error"] = 1  # a teardown error
    assert "(a failure)" in matrix.check(failed, committed)[0]
    skips = _report()
    skips["backends"]["redis"]["areas"]["faults"] = {"passed": 6}
    assert matrix.check(skips, committed) == ["redis: faults skips 0, committed 2"]


def test_a_declaration_that_changed_or_a_missing_row_is_drift() -> None:
    committed = matrix.render(_report()).replace("| 16 MiB |", "| 512 MiB |")
    assert matrix.check(_report(), committed) == [
        "redis: max payload: declared is '16 MiB', committed '512 MiB'"]
    committed = matrix.render(_report()).replace("| yes | yes | yes | yes | yes |",
                                                 "| yes | yes | no | yes | yes |")
    assert matrix.check(_report(), committed) == ["redis: sharded is 'yes', committed 'no'"]
    other = _report()
    other["backends"]["nats"] = copy.deepcopy(other["backends"]["redis"]) | {"kind": "nats"}
    assert matrix.check(other, matrix.render(_report())) == [
        "nats: no row in the committed matrix"]
    new_area = _report()
    new_area["backends"]["redis"]["areas"]["teleport"] = {"passed": 1}
    assert matrix.check(new_area, matrix.render(_report()))[0].startswith(
        "redis: areas ['teleport'] have no column")


def test_a_failed_or_partial_run_may_not_update_the_docs(tmp_path: Path) -> None:
    assert matrix.refusal(_report()) is None
    failed = _report() | {"exitstatus": 1}
    assert matrix.refusal(failed) == "pytest exited with 1"
    partial = _report() | {"partial": ["backends not run: kafka", "-k broadcast"]}
    assert matrix.refusal(partial) == "backends not run: kafka; -k broadcast"
    results, docs = tmp_path / "results.json", tmp_path / "compatibility.md"
    results.write_text(json.dumps(partial))
    docs.write_text("kept")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compat_matrix.py"),
                           str(results), "--update", str(docs)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1
    assert "not updated from this run: backends not run: kafka" in done.stderr
    assert docs.read_text() == "kept"


def test_the_rooms_pass_is_merged_as_rows_of_its_own_and_can_fail_the_run() -> None:
    rooms = _report()
    rooms["backends"] = {"redis (rooms)": rooms["backends"]["redis"]}
    merged = matrix.merge([_report(), rooms])
    assert sorted(merged["backends"]) == ["redis", "redis (rooms)"]
    assert list(matrix.parse(matrix.render(merged))[1]) == ["redis", "redis (rooms)"]
    assert matrix.refusal(merged) is None
    failed = rooms | {"exitstatus": 1, "partial": ["backends not run: nats"]}
    assert matrix.refusal(matrix.merge([_report(), failed])) == (
        "pytest exited with 1; backends not run: nats")
    with pytest.raises(SystemExit, match="two results files"):
        matrix.merge([_report(), _report()])


def test_the_rooms_pass_covers_every_backend_that_routes_rooms() -> None:
    from conformance.results import DEFAULT_BACKENDS, ROOM_BACKENDS
    from socketio_adapters.registry import backend_class
    schemes = {"rabbitmq": "amqp", "redis-cluster": "redis+cluster"}
    routing = [kind for kind in DEFAULT_BACKENDS.split(",") if backend_class(
        f"{schemes.get(kind, kind)}://127.0.0.1/x").capabilities.routes_rooms]
    assert ROOM_BACKENDS.split(",") == routing


@pytest.mark.parametrize("fault", ["teardown", "call"])
def test_every_outcome_is_counted_and_a_partial_run_says_why(tmp_path: Path,
                                                             fault: str) -> None:
    """A pytest run of a small suite, counted by conformance/results.py: an error in a
    teardown is counted, and a -k run is partial."""
    suite = tmp_path / "tests"
    suite.mkdir()
    stop = "raise RuntimeError('will not stop')" if fault == "teardown" else "pass"
    check = "False" if fault == "call" else "True"
    (suite / "test_it.py").write_text(
        "import pytest\n"
        "@pytest.fixture\n"
        "def node():\n"
        "    yield 1\n"
        f"    {stop}\n"
        "def test_one(node):\n"
        f"    assert {check}\n"
        "def test_two():\n"
        "    pass\n")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conformance.results", "-p",
         "no:cacheprovider", str(suite), "-k", "one or two", "--rootdir", str(tmp_path)],
        capture_output=True, text=True, check=False, cwd=ROOT,
        env={"SIOA_RESULTS": str(out), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(out.read_text())
    want = {"teardown": {"passed": 2, "failed": 0, "skipped": 0, "error": 1},
            "call": {"passed": 1, "failed": 1, "skipped": 0, "error": 0}}[fault]
    assert report["unit"] == want
    assert report["exitstatus"] == 1
    assert "-k one or two" in report["partial"]
