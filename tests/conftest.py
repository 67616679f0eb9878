"""Fixtures shared by the unit tests that need a real broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.brokers import LocalBroker, broker_for


@pytest.fixture(scope="module")
def redis_broker() -> Iterator[LocalBroker]:
    """A redis-server of its own for the module (tests that use it skip themselves
    when redis-server is not installed: ``available("redis")``)."""
    broker = broker_for("redis")
    broker.start()
    yield broker
    broker.stop()
