"""The run's results, counted so they cannot lie (a pytest plugin, loaded for every run
by ``-p conformance.results`` in pyproject.toml).

Every outcome is counted: a test's call (passed, failed, skipped), and an error in its
setup or teardown (a node that will not stop) as ``error``. Unit tests (``tests/``)
are counted apart from the conformance suite, which is counted per backend and area.
With ``SIOA_RESULTS=path`` the counts are written as JSON at the end, with the exit
status and why the run was partial (a subset of backends or transports, ``-k``, ``-m``,
deselected or unrun tests, a stop at the first failure), so that
``scripts/compat_matrix.py`` can refuse to update the docs from it.

With ``SIOA_SUBSCRIPTIONS=rooms`` (the test command's second pass: per-room
subscriptions, on the backends that route rooms) each backend is written as
``<id> (rooms)``, a row of its own in the matrix, and the pass is complete without
unit tests and without the backends that cannot route rooms.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from importlib.metadata import version
from typing import Any

import pytest

__all__ = ["BACKENDS", "DEFAULT_BACKENDS", "MEASUREMENTS", "OUTCOMES", "ROOM_BACKENDS",
           "area_of", "backend_id"]

DEFAULT_BACKENDS = "memory,local,redis,redis-cluster,rabbitmq,nats,kafka,postgres"
"""Every backend: what a complete run covers."""
ROOM_BACKENDS = "memory,local,redis,redis-cluster,rabbitmq,nats,postgres"
"""The backends that route rooms (``capabilities.routes_rooms``): what a complete
pass with ``SIOA_SUBSCRIPTIONS=rooms`` covers."""
ROUTED = os.environ.get("SIOA_SUBSCRIPTIONS", "").strip() == "rooms"
"""This run is the per-room subscriptions pass."""
OUTCOMES = ("passed", "failed", "skipped", "error")
MEASUREMENTS: dict[str, str] = {}
"""Figures measured by tests (e.g. reconnect times), keyed ``backend/what``."""
BACKENDS: dict[str, dict[str, str]] = {}
"""Per backend id: its url, kind, and the broker it ran on (product and source)."""

_backend_of: dict[str, str] = {}
_counts: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
"""Per backend id (or ``unit``): (area, outcome) -> count."""
_collected = 0
_deselected = 0
_ran: set[str] = set()


def backend_id(spec: str) -> str:
    """The id of a backend spec in test ids and results: the scheme of a URL, the spec
    itself otherwise (``redis``, ``kafka@3.9``)."""
    return spec.split("://", 1)[0] if "://" in spec else spec


def area_of(nodeid: str) -> str:
    """The matrix column of a test: its file without ``test_``; recovery has one per
    client (ours, and socket.io's own)."""
    area = nodeid.split("::")[0].rsplit("/", 1)[-1].removeprefix("test_").removesuffix(".py")
    if area == "recovery":
        area += " (js client)" if "[js-" in nodeid else " (python client)"
    return area


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    global _collected
    _collected = len(items)
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and "backend" in spec.params:
            _backend_of[item.nodeid] = backend_id(str(spec.params["backend"]))


def pytest_deselected(items: list[pytest.Item]) -> None:
    global _deselected
    _deselected += len(items)


def _bucket(nodeid: str) -> str | None:
    if nodeid.startswith("tests/") or "/tests/" in nodeid:
        return "unit"
    if nodeid.startswith("conformance/") or "/conformance/" in nodeid:
        return _backend_of.get(nodeid, "?")
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    bucket = _bucket(report.nodeid)
    if bucket is None:
        return
    _ran.add(report.nodeid)
    if report.when == "call":
        outcome: str = report.outcome
    elif report.outcome == "skipped" and report.when == "setup":
        outcome = "skipped"
    elif report.outcome == "failed":
        outcome = "error"  # in setup or teardown
    else:
        return
    _counts[bucket][(area_of(report.nodeid), outcome)] += 1


def _totals(bucket: str) -> dict[str, int]:
    totals = Counter[str]()
    for (_, outcome), count in _counts[bucket].items():
        totals[outcome] += count
    return {outcome: totals[outcome] for outcome in OUTCOMES}


def _partial(session: pytest.Session, exitstatus: int) -> list[str]:
    """Why this run does not stand for the whole suite (empty: it does)."""
    config = session.config
    why = []
    ran = {b for b in _counts if b != "unit"}
    missing = sorted(set((ROOM_BACKENDS if ROUTED else DEFAULT_BACKENDS).split(",")) - ran)
    if missing:
        why.append(f"backends not run: {', '.join(missing)}")
    if "unit" not in _counts and not ROUTED:
        why.append("unit tests not run")
    if config.getoption("keyword", ""):
        why.append(f"-k {config.getoption('keyword')}")
    if config.getoption("markexpr", ""):
        why.append(f"-m {config.getoption('markexpr')}")
    transports = config.getoption("--transport", None)
    if transports:
        why.append(f"transports {','.join(transports)} only")
    if _deselected:
        why.append(f"{_deselected} tests deselected")
    if len(_ran) < _collected:
        why.append(f"{_collected - len(_ran)} of {_collected} collected tests did not run")
    if session.shouldstop or session.shouldfail:
        why.append(f"stopped early: {session.shouldstop or session.shouldfail}")
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        why.append("interrupted")
    return why


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("conformance measurements")
        for what, figure in sorted(MEASUREMENTS.items()):
            terminalreporter.write_line(f"{what}: {figure}")
    if not _counts:
        return
    terminalreporter.section("outcomes")
    for bucket in sorted(_counts, key=lambda b: (b != "unit", b)):
        counts = _totals(bucket)
        broker = BACKENDS.get(bucket, {})
        on = f" (on {broker['broker']}, {broker['source']})" if broker.get("broker") else ""
        terminalreporter.write_line(
            f"{bucket}: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES) + on)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("SIOA_RESULTS")
    if not path:
        return
    backends: dict[str, Any] = {}
    for name in sorted(b for b in _counts if b != "unit"):
        areas: dict[str, dict[str, int]] = defaultdict(dict)
        for (area, outcome), count in _counts[name].items():
            areas[area][outcome] = count
        backends[f"{name} (rooms)" if ROUTED else name] = {
            **BACKENDS.get(name, {"url": "", "kind": name, "broker": "", "source": ""}),
            **_totals(name),
            "areas": dict(areas),
            "measurements": {k: v for k, v in MEASUREMENTS.items()
                             if k.startswith(f"{name}/")},
        }
    report = {"date": time.strftime("%Y-%m-%d"),
              "python_socketio": version("python-socketio"),
              "exitstatus": int(exitstatus),
              "partial": _partial(session, int(exitstatus)),
              "collected": _collected,
              "unit": _totals("unit"),
              "backends": backends}
    with open(path, "w") as out:
        json.dump(report, out, indent=1, sort_keys=True)
