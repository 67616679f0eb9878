"""The conformance suite: one set of test bodies, run against every backend chosen.

Backends come from ``--backend`` (repeatable) or the ``SIOA_BACKENDS`` environment
variable (comma-separated); each item is a kind (``memory``, ``redis``, ...), a kind
with a version (``kafka@3.9``: that pinned image in a container), or a URL
(``redis://127.0.0.1:6379/0``), used as it is. Where each broker comes from (a URL, a
container, the local binaries; ``SIOA_BROKER_SOURCE``): conformance/sources.py; it is
printed when the broker starts. Default: every backend. Outcomes and figures are
counted by conformance/results.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from socketio_adapters import Capabilities
from socketio_adapters.registry import backend_class

from .brokers import LocalBroker
from .cluster import Cluster
from .results import BACKENDS, DEFAULT_BACKENDS, MEASUREMENTS, backend_id
from .sources import parse_spec, start_broker

__all__ = ["MEASUREMENTS", "BackendUnderTest"]

TRANSPORTS = ("websocket", "polling")


@dataclass
class BackendUnderTest:
    name: str
    """The id in test ids and results: ``redis``, ``kafka@3.9``, a URL's scheme."""
    kind: str
    """The backend kind (``redis``, ``kafka``...): what tests branch on."""
    url: str
    broker: LocalBroker | None
    """The broker, when the suite started it (so faults can restart it)."""

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        specs = _specs(metafunc.config)
        metafunc.parametrize("backend", specs, ids=[backend_id(s) for s in specs],
                             indirect=True, scope="session")
    if "transport" in metafunc.fixturenames:
        transports = metafunc.config.getoption("--transport") or list(TRANSPORTS)
        metafunc.parametrize("transport", transports, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Iterator[BackendUnderTest]:
    spec: str = request.param
    name, (kind, _) = backend_id(spec), parse_spec(spec)
    broker: LocalBroker | None = None
    if "://" in spec:
        url, product, source = spec, "", "URL given (broker not started by the suite)"
    elif kind == "memory":
        url, product, source = "memory://conformance", "none", "in-process"
    else:
        _, broker = start_broker(spec)
        url, product, source = broker.conformance_url, broker.version, broker.source
    BACKENDS[name] = {"url": url.split("?", 1)[0], "kind": kind, "broker": product,
                      "source": source}
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is not None and capture is not None:  # printed past the output capture
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nbroker for {name}: {product or '?'}; {source}")
    try:
        yield BackendUnderTest(name, kind, url, broker)
    finally:
        if broker is not None:
            broker.stop()


@pytest.fixture
async def cluster(backend: BackendUnderTest, transport: str) -> AsyncIterator[Cluster]:
    nodes = Cluster(backend.url, transport)
    try:
        yield await nodes.start()
    finally:
        await nodes.close()

