"""Is a broker URL usable? Two nodes on it find each other and pass probes.

:func:`probe` starts two managers on the URL, waits until one has heard the other's
heartbeat, then sends server-side events with acks from one to the other and times
each round trip (node, broker, other node, broker, node). It is what
``socketio-adapters check URL`` runs; the probe nodes say goodbye when done, so a
cluster running on the same URL sees them come and go and is otherwise untouched.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass, fields

from .backends.base import Capabilities
from .cluster import ClusterManager
from .errors import AdapterError
from .options import redact
from .registry import create_manager

__all__ = ["PROBE_EVENT", "ProbeFailed", "ProbeResult", "capability_text", "probe"]

PROBE_EVENT = "socketio-adapters:probe"
"""The server-side event the probe nodes exchange (other nodes do not handle it)."""
_POLL_SECONDS = 0.01


class ProbeFailed(AdapterError):
    """The broker was reached but the probe did not make the round trip."""


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` measured."""

    url: str
    """The URL, password redacted."""
    backend: str
    capabilities: Capabilities
    round_trips: tuple[float, ...]
    """Seconds, one per probe."""
    other_nodes: int
    """Nodes already on this URL and channel, besides the two probe nodes."""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.round_trips) * 1000

    @property
    def min_ms(self) -> float:
        return min(self.round_trips) * 1000


def capability_text(capabilities: Capabilities) -> str:
    """``direct=yes, max_payload=none, ...`` in the dataclass's field order."""
    def show(value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "none" if value is None else str(value)
    return ", ".join(f"{f.name}={show(getattr(capabilities, f.name))}"
                     for f in fields(capabilities))


async def probe(url: str, timeout: float = 5.0, count: int = 5) -> ProbeResult:
    """Start two nodes on ``url`` and time ``count`` round trips between them.

    Each step (connecting, the nodes finding each other, each probe) may take up to
    ``timeout`` seconds. Raises :class:`~socketio_adapters.errors.ConfigurationError`
    for a bad URL or option, :class:`~socketio_adapters.errors.MissingDependency`
    when the backend's extra is not installed,
    :class:`~socketio_adapters.backends.base.BrokerUnavailable` when the broker
    cannot be reached, and :class:`ProbeFailed` when a probe does not come back.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    answering = create_manager(url, connect_timeout=timeout)
    asking = create_manager(url, connect_timeout=timeout)
    answering.on(PROBE_EVENT, lambda token: token)
    try:
        await answering.start()
        await asking.start()
        await _until_known(asking, answering.uid, timeout)
        round_trips = tuple([await _round_trip(asking, timeout) for _ in range(count)])
        others = len(asking.nodes.alive() - {answering.uid})
    finally:
        await asyncio.gather(asking.stop(), answering.stop(), return_exceptions=True)
    backend = answering.backend
    return ProbeResult(redact(url), backend.name, backend.capabilities, round_trips, others)


async def _until_known(asking: ClusterManager, uid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while uid not in asking.nodes:
        if time.monotonic() >= deadline:
            raise ProbeFailed(
                f"the two probe nodes connected but did not hear each other within "
                f"{timeout:g}s: messages published on {redact(asking.backend.url)} do "
                "not come back")
        await asyncio.sleep(_POLL_SECONDS)


async def _round_trip(asking: ClusterManager, timeout: float) -> float:
    token = secrets.token_hex(4)
    began = time.perf_counter()
    try:
        answers = await asking.server_side_emit_with_ack(PROBE_EVENT, token,
                                                         timeout=timeout)
    except TimeoutError as exc:  # ClusterTimeout
        raise ProbeFailed(f"a probe did not come back within {timeout:g}s") from exc
    elapsed = time.perf_counter() - began
    if token not in answers:
        raise ProbeFailed(f"the probe came back without its token ({answers!r}): the "
                          "other probe node left during the check")
    return elapsed
