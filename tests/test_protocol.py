from __future__ import annotations

import msgpack
import pytest

from socketio_adapters.framing import LOG_FRAME_ENTRIES, log_entries_of, pack_log_entries
from socketio_adapters.errors import MalformedMessage
from socketio_adapters.protocol import Message, MessageType, decode, encode


def test_round_trip_keeps_types_and_bytes() -> None:
    data = {"packet": ["ev", b"\x00\xff", {"n": 1.5, "t": [True, None]}], "opts": {}}
    message = Message("node-1", "/chat", MessageType.BROADCAST, data)
    assert decode(encode(message)) == message


def test_every_type_round_trips() -> None:
    for kind in MessageType:
        assert decode(encode(Message("u", "/", kind, None))).type is kind


def test_envelope_is_a_readable_msgpack_map() -> None:
    raw = msgpack.unpackb(encode(Message("u", "/", MessageType.HEARTBEAT)), raw=False)
    assert raw == {"uid": "u", "nsp": "/", "type": 2, "data": None}


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    b'{"method": "emit"}',
    msgpack.packb([1, 2]),
    msgpack.packb({"uid": "", "nsp": "/", "type": 3}),
    msgpack.packb({"uid": "u", "nsp": 5, "type": 3}),
    msgpack.packb({"uid": "u", "nsp": "/", "type": 14}),
    msgpack.packb({"uid": "u", "nsp": "/", "type": "3"}),
], ids=["empty", "invalid", "json", "list", "no-uid", "bad-nsp", "bad-type", "str-type"])
def test_malformed_payloads_raise(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(payload)


def test_unencodable_data_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        encode(Message("u", "/", MessageType.BROADCAST, {"x": object()}))


def test_no_pickle_on_the_wire() -> None:
    payload = encode(Message("u", "/", MessageType.BROADCAST, {"packet": ["e", 1]}))
    assert not payload.startswith(b"\x80")  # pickle protocol header


def test_chunks_split_and_join() -> None:
    import logging
    import os

    from socketio_adapters.framing import Reassembler, split

    payload = os.urandom(10_000)
    parts = split(payload, 1000)
    assert len(parts) > 10 and all(len(p) <= 1000 for p in parts)
    joiner = Reassembler(logging.getLogger("t"))
    results = [joiner.feed(p) for p in parts]
    assert results[-1] == payload and all(r is None for r in results[:-1])
    assert split(b"small", 1000) == [b"small"]
    assert joiner.feed(b"\x84plain") == b"\x84plain"
    # a chunk out of sequence is dropped, not guessed at
    assert joiner.feed(parts[3]) is None and joiner.dropped == 1



def test_frames_pack_small_payloads_per_target_in_order() -> None:
    from socketio_adapters.framing import pack_frames, unpack_frame

    batch = [(None, b"a"), (None, b"bb"), ("n1", b"c"), (None, b"d"), (None, b"e")]
    packed = pack_frames(batch, None)
    assert [t for t, _ in packed] == [None, "n1", None]
    assert unpack_frame(packed[0][1]) == [b"a", b"bb"]
    assert packed[1][1] == b"c"  # a payload alone travels unchanged
    assert unpack_frame(packed[2][1]) == [b"d", b"e"]


def test_frames_respect_the_cap_and_chunk_large_payloads() -> None:
    import logging

    from socketio_adapters.framing import Reassembler, pack_frames, unpack_frame

    batch = [(None, bytes([i]) * 300) for i in range(10)] + [(None, b"x" * 5000)]
    packed = pack_frames(batch, limit=2000, frame_cap=1000)
    assert all(len(p) <= 2000 for _, p in packed)
    inner: list[bytes] = []
    joiner = Reassembler(logging.getLogger("t"))
    for _, p in packed:
        frame = unpack_frame(p)
        if frame is not None:
            inner.extend(frame)
        else:
            whole = joiner.feed(p)
            if whole is not None:
                inner.append(whole)
    assert inner == [p for _, p in batch]


def test_truncated_frame_is_refused() -> None:
    from socketio_adapters.framing import pack_frames, unpack_frame

    (_, frame), = pack_frames([(None, b"abc"), (None, b"def")], None)
    assert unpack_frame(frame[:-1]) is None


def test_log_entries_are_packed_up_to_a_size_and_a_count() -> None:
    payloads = [bytes([i % 256]) * (i % 7) for i in range(3000)]
    packed = pack_log_entries(payloads, 64 * 1024)
    assert all(1 < count <= LOG_FRAME_ENTRIES for _, count in packed)
    assert len(packed) == 3
    assert [e for body, count in packed for e in log_entries_of(body, count)] == payloads
    big = [b"x" * 1000] * 200
    assert all(len(body) <= 64 * 1024 for body, _ in pack_log_entries(big, 64 * 1024))
    # one entry, or one over the cap, travels as itself
    assert pack_log_entries([b"solo"], 1024) == [(b"solo", 1)]
    assert pack_log_entries([b"a", b"y" * 5000, b"b"], 1024) == [
        (b"a", 1), (b"y" * 5000, 1), (b"b", 1)]
    assert pack_log_entries([], 1024) == []


def test_a_packed_message_reads_as_its_announced_entries() -> None:
    (frame, count), = pack_log_entries([b"\xc1\x02", b"", b"two"], 1024)
    assert count == 3
    assert log_entries_of(frame, 3) == [b"\xc1\x02", b"", b"two"]
    # no count, a wrong count or a broken frame: the body is one entry
    assert log_entries_of(frame, None) == [frame]
    assert log_entries_of(frame, 2) == [frame]
    assert log_entries_of(frame[:-1], 3) == [frame[:-1]]
    assert log_entries_of(b"plain", 5) == [b"plain"]
