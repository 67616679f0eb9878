"""The Redis backend's own parts, with no broker: key names, stream entry IDs as
record keys, and the XADD it pipelines. The conformance suite (test_log.py) runs the
log and the session store against a real redis-server."""

from __future__ import annotations

import hiredis
import pytest

pytest.importorskip("redis")

from socketio_adapters import create_backend
from socketio_adapters.backends.base import LOG
from socketio_adapters.backends.redis import (
    RedisBackend,
    keep_length,
    previous_id,
    xadd,
    xadd_head,
)
from socketio_adapters.backends.redis.log import entry_key
from socketio_adapters.storage import Offset

MAX = 2**64 - 1


def _backend() -> RedisBackend:
    backend = create_backend("redis://127.0.0.1:1/0", channel="app")
    assert isinstance(backend, RedisBackend)
    return backend


def test_keys_live_under_the_channel() -> None:
    backend = _backend()
    assert backend.broadcast_channel == "app"
    assert backend.node_channel("n1") == "app#n1"
    assert backend.log_key == "app#log"
    assert backend.session_key("p1") == "app#session#p1"
    assert backend.capabilities.durable_log and backend.capabilities.session_store


def test_offsets_are_stream_entry_ids_and_an_index() -> None:
    backend = _backend()
    backend.enable_log(None, 60.0, 500)
    codec = backend.log_reader.codec
    assert codec.parse("1700000000000-3.0") == Offset((1700000000000, 3), 0)
    assert codec.parse(f"{MAX}-{MAX}.0") == Offset((MAX, MAX), 0)
    assert codec.format(entry_key(b"1700000000000-3"), 0) == "1700000000000-3.0"
    for other in ("1700000000000-3", "42.0", f"{MAX + 1}-0.0", f"0-{MAX + 1}.0"):
        assert codec.parse(other) is None


def test_xread_reads_from_a_record_included() -> None:
    # XREAD returns what follows an ID: the reader's start is read from the one before
    assert previous_id(None) == b"0-0"
    assert previous_id((5, 7)) == b"5-6"
    assert previous_id((5, 0)) == b"4-%d" % MAX
    assert previous_id((0, 1)) == b"0-0"
    assert previous_id((0, 0)) == b"0-0"  # no entry has ID 0-0
    assert previous_id((MAX, MAX)) == b"%d-%d" % (MAX, MAX - 1)


def test_an_appended_entry_is_one_well_formed_xadd() -> None:
    assert keep_length(500) == 1500  # max_length, and room for readers that lag
    assert keep_length(5000) == 10000
    reader = hiredis.Reader()
    payload = b"\x00\r\n$3\r\nbinary"
    reader.feed(xadd(xadd_head(b"app#log", keep_length(500)), payload))
    assert reader.gets() == [b"XADD", b"app#log", b"MAXLEN", b"~", b"1500", b"*", b"p",
                             payload]
    assert reader.gets() is False


class _Recording:
    """A publisher connection that answers every command as Redis would here."""

    def __init__(self) -> None:
        self.sent: list[list[object]] = []

    async def pipeline(self, *commands: bytes) -> list[object]:
        reader = hiredis.Reader()
        reader.feed(b"".join(commands))
        parsed = []
        reply = reader.gets()
        while reply is not False:
            parsed.append(reply)
            reply = reader.gets()
        self.sent = parsed
        return [b"PONG" if c[0] == b"PING" else b"1-0" if c[0] == b"XADD" else 1
                for c in parsed]


async def test_a_pipeline_of_publishes_starts_with_a_ping() -> None:
    """So that Redis writes the subscribers' copies before its replies (see
    SUBSCRIBERS_FIRST): once per pipeline, ahead of its first PUBLISH; none for log
    entries alone; the log's bookkeeping sees the XADDs' replies only."""
    backend = _backend()
    backend.enable_log(None, 60.0, 500)
    backend._xadd = xadd_head(b"app#log", keep_length(500))  # as _open sets it
    connection = _Recording()
    backend._publisher = connection  # type: ignore[assignment]
    await backend.publish([(None, b"a"), ("n1", b"b")])
    assert [c[0] for c in connection.sent] == [b"PING", b"PUBLISH", b"PUBLISH"]
    assert connection.sent[1][1:] == [b"app", b"a"]
    await backend.publish([(LOG, b"e")])
    assert [c[0] for c in connection.sent][:1] == [b"XADD"]
    await backend.publish([(LOG, b"e"), (None, b"c")])
    assert [c[0] for c in connection.sent][:3] == [b"PING", b"XADD", b"PUBLISH"]
    assert backend._server_ms == 1  # from the XADD's ID, not the PING's PONG
