"""The conformance suite: one set of test bodies, run against every backend chosen.

Backends come from ``--backend`` (repeatable) or the ``SIOA_BACKENDS`` environment
variable (comma-separated); each item is a kind (``memory``, ``redis``, ...), which
makes the suite start that broker from local binaries on a free loopback port, or a
URL (``redis://127.0.0.1:6379/0``), which is used as it is. Default: every backend.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from socketio_adapters import Capabilities
from socketio_adapters.registry import backend_class

from .brokers import LocalBroker, broker_for
from .cluster import Cluster

DEFAULT_BACKENDS = "memory,local,redis,rabbitmq,nats,kafka,postgres"
TRANSPORTS = ("websocket", "polling")


@dataclass
class BackendUnderTest:
    name: str
    url: str
    broker: LocalBroker | None
    """The broker process, when the suite started it (so faults can restart it)."""

    @property
    def capabilities(self) -> Capabilities:
        return backend_class(self.url).capabilities


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", action="append", default=[],
                     help="backend kind or URL to run the conformance suite on "
                          "(repeatable; default: $SIOA_BACKENDS or every backend)")
    parser.addoption("--transport", action="append", default=[],
                     help="client transport(s): websocket, polling (default: both)")


def _specs(config: pytest.Config) -> list[str]:
    given: list[str] = config.getoption("--backend")
    if not given:
        given = os.environ.get("SIOA_BACKENDS", DEFAULT_BACKENDS).split(",")
    return [g.strip() for g in given if g.strip()]


def _spec_id(spec: str) -> str:
    return spec.split("://", 1)[0] if "://" in spec else spec


_backend_ids: set[str] = set()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        specs = _specs(metafunc.config)
        _backend_ids.update(_spec_id(s) for s in specs)
        metafunc.parametrize("backend", specs, ids=[_spec_id(s) for s in specs],
                             indirect=True, scope="session")
    if "transport" in metafunc.fixturenames:
        transports = metafunc.config.getoption("--transport") or list(TRANSPORTS)
        metafunc.parametrize("transport", transports, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Iterator[BackendUnderTest]:
    spec: str = request.param
    if "://" in spec:
        _urls[_spec_id(spec)] = spec.split("?", 1)[0]
        yield BackendUnderTest(_spec_id(spec), spec, None)
        return
    if spec == "memory":
        _urls["memory"] = "memory://conformance"
        yield BackendUnderTest("memory", "memory://conformance", None)
        return
    broker = broker_for(spec)
    broker.start()
    _urls[spec] = broker.conformance_url
    try:
        yield BackendUnderTest(spec, broker.conformance_url, broker)
    finally:
        broker.stop()


@pytest.fixture
async def cluster(backend: BackendUnderTest, transport: str) -> AsyncIterator[Cluster]:
    nodes = Cluster(backend.url, transport)
    try:
        yield await nodes.start()
    finally:
        await nodes.close()


_outcomes: Counter[tuple[str, str]] = Counter()
_by_area: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
_urls: dict[str, str] = {}
MEASUREMENTS: dict[str, str] = {}
"""Figures measured by tests (e.g. reconnect times), printed in the summary."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "conformance" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        name = "?"
        if "[" in report.nodeid:
            parts = report.nodeid.rsplit("[", 1)[1].rstrip("]").split("-")
            name = next((p for p in parts if p in _backend_ids), parts[0])
        _outcomes[(name, report.outcome)] += 1
        area = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
        area = area.removeprefix("test_").removesuffix(".py")
        if area == "recovery":  # one column per client: ours, and socket.io's own
            area += " (js client)" if "[js-" in report.nodeid else " (python client)"
        _by_area[name][(area, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("conformance measurements")
        for what, figure in sorted(MEASUREMENTS.items()):
            terminalreporter.write_line(f"{what}: {figure}")
    if not _outcomes:
        return
    terminalreporter.section("conformance per backend")
    for name in sorted({n for n, _ in _outcomes}):
        terminalreporter.write_line(
            f"{name}: {_outcomes[(name, 'passed')]} passed, "
            f"{_outcomes[(name, 'failed')]} failed, {_outcomes[(name, 'skipped')]} skipped")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With ``SIOA_RESULTS=path``, write what was measured, per backend, as JSON
    (``scripts/compat_matrix.py`` turns it into docs/compatibility.md)."""
    path = os.environ.get("SIOA_RESULTS")
    if not path or not _outcomes:
        return
    from importlib.metadata import version

    backends = {}
    for name in sorted({n for n, _ in _outcomes}):
        areas: dict[str, dict[str, int]] = defaultdict(dict)
        for (area, outcome), count in _by_area[name].items():
            areas[area][outcome] = count
        backends[name] = {
            "url": _urls.get(name, ""),
            "passed": _outcomes[(name, "passed")],
            "failed": _outcomes[(name, "failed")],
            "skipped": _outcomes[(name, "skipped")],
            "areas": dict(areas),
            "measurements": {k: v for k, v in MEASUREMENTS.items()
                             if k.startswith(f"{name}/")},
        }
    report = {"date": time.strftime("%Y-%m-%d"),
              "python_socketio": version("python-socketio"),
              "backends": backends}
    with open(path, "w") as out:
        json.dump(report, out, indent=1, sort_keys=True)
