"""The Redis backend's pure logic: stream entry IDs as log offsets, key names and the
XADD command it pipelines. No broker here; the conformance suite (test_log.py) runs
the log and the session store against a real redis-server."""

from __future__ import annotations

import asyncio

import hiredis
import pytest

pytest.importorskip("redis")

from socketio_adapters import create_backend
from socketio_adapters.backends.redis import RedisBackend, next_id, parse_id

MAX = 2**64 - 1


@pytest.mark.parametrize(("offset", "parsed"), [
    ("0-0", (0, 0)), ("1-0", (1, 0)), ("1700000000000-12", (1700000000000, 12)),
    (f"{MAX}-{MAX}", (MAX, MAX)), ("007-1", (7, 1)),
])
def test_stream_ids_parse(offset: str, parsed: tuple[int, int]) -> None:
    assert parse_id(offset) == parsed


@pytest.mark.parametrize("offset", [
    "", "garbage", "12", "-1", "1-", "-", "1-2-3", "1.5-0", "+", "-0", " 1-0", "1-0 ",
    "1-0\n", "\x00", "ﾟ", "\uff11-\uff12", "\u0661-\u0662", f"{MAX + 1}-0",
    f"0-{MAX + 1}", "9" * 21 + "-0", "(1-0", "1-*",
])
def test_anything_else_is_not_an_offset(offset: str) -> None:
    assert parse_id(offset) is None


def test_next_id_is_the_smallest_id_after() -> None:
    assert next_id((5, 7)) == "5-8"
    assert next_id((5, MAX)) == "6-0"
    assert next_id((MAX, MAX)) is None
    assert parse_id(next_id((MAX, 3)) or "") == (MAX, 4)


def test_keys_live_under_the_channel() -> None:
    backend = create_backend("redis://127.0.0.1:1/0", channel="app")
    assert isinstance(backend, RedisBackend)
    assert backend.log_key == "app#log"
    assert backend.session_key("p1") == "app#session#p1"
    assert backend.capabilities.durable_log and backend.capabilities.session_store


def test_an_appended_entry_is_one_well_formed_xadd() -> None:
    backend = create_backend("redis://127.0.0.1:1/0", channel="app")
    assert isinstance(backend, RedisBackend)
    backend.enable_log(None, 60.0, 500)
    asyncio.run(backend._open())  # builds the pool only; connects to nothing
    reader = hiredis.Reader()
    payload = b"\x00\r\n$3\r\nbinary"
    reader.feed(backend._append(payload))
    assert reader.gets() == [b"XADD", b"app#log", b"MAXLEN", b"~", b"1500", b"*", b"p",
                             payload]
    assert reader.gets() is False
    asyncio.run(backend._close())
