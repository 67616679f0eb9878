"""Sharded pub/sub (SPUBLISH/SSUBSCRIBE) against a real redis-server (Redis 7)."""

from __future__ import annotations

import asyncio

import pytest

from conformance.brokers import LocalBroker, available
from socketio_adapters import create_manager

pytestmark = [pytest.mark.broker, pytest.mark.skipif(
    not available("redis"), reason="redis-server not installed: scripts/install-brokers.sh redis")]


async def test_sharded_pubsub_carries_broadcasts_and_requests(
        redis_broker: LocalBroker) -> None:
    url = f"{redis_broker.url}?sharded=true&channel=sharded-test"
    a = create_manager(url, heartbeat_interval=0.1, heartbeat_timeout=0.5)
    b = create_manager(url, heartbeat_interval=0.1, heartbeat_timeout=0.5)
    await a.start()
    await b.start()
    try:
        for _ in range(100):
            if await a.server_count() == 2:
                break
            await asyncio.sleep(0.01)
        assert await a.server_count() == 2
        b.on("double", lambda x: x * 2)
        assert await a.server_side_emit_with_ack("double", 21, timeout=2) == [42]
        got: list[int] = []
        b.on("seq", got.append)
        for i in range(50):
            await a.server_side_emit("seq", i)
        for _ in range(100):
            if len(got) == 50:
                break
            await asyncio.sleep(0.01)
        assert got == list(range(50))
    finally:
        await a.stop()
        await b.stop()
