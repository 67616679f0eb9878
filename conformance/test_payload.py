"""How large a payload crosses the cluster: the largest size that passed is measured,
per backend, for the compatibility matrix, next to the limit the backend declares.

A server-side event with a random payload goes from node 0 to the other two through
the broker; each answers with the length and CRC-32 it received. Sizes climb a ladder
up to the declared limit (a margin below it, for the envelope), at most
``LADDER[-1]``, below the outbox's default ``max_buffer_bytes`` (64 MiB); every step
must cross. One byte over the declared limit is refused at once with
``PayloadTooLarge``, before anything is sent.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import pytest

from socketio_adapters import PayloadTooLarge

from .cluster import Cluster
from .conftest import MEASUREMENTS, BackendUnderTest

MIB = 1024 * 1024
LADDER = (1024, MIB, 8 * MIB, 16 * MIB, 32 * MIB, 60 * MIB)
"""Payload sizes tried, in bytes."""
ENVELOPE_MARGIN = MIB
"""Room left under a declared limit for the envelope around the payload."""


def ladder(limit: int | None) -> list[int]:
    """The sizes to try under a declared limit."""
    top = LADDER[-1] if limit is None else min(LADDER[-1], limit - ENVELOPE_MARGIN)
    return sorted({min(size, top) for size in LADDER})


def human(size: int) -> str:
    return f"{size / MIB:g} MiB" if size >= MIB else f"{size / 1024:g} KiB"


async def test_the_largest_payload_that_crosses(backend: BackendUnderTest) -> None:
    limit = backend.capabilities.max_payload
    cluster = Cluster(backend.url, "websocket")
    await cluster.start()
    try:
        for node in cluster.nodes[1:]:
            node.manager.on("size", lambda payload: [len(payload), zlib.crc32(payload)])
        crossed = 0
        for size in ladder(limit):
            payload = os.urandom(size)
            answers: list[Any] = await cluster.nodes[0].manager.server_side_emit_with_ack(
                "size", payload, timeout=60)
            assert answers == [[size, zlib.crc32(payload)]] * 2, (
                f"{human(size)} did not cross whole (the largest that did: {human(crossed)})")
            crossed = size
            MEASUREMENTS[f"{backend.name}/largest payload that crossed"] = human(crossed)
        if limit is not None:
            with pytest.raises(PayloadTooLarge, match=r"over the .* limit"):
                await cluster.nodes[0].manager.server_side_emit("size", bytes(limit + 1))
    finally:
        await cluster.close()
