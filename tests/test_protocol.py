from __future__ import annotations

from typing import Any

import msgpack
import pytest

from socketio_adapters.errors import MalformedMessage
from socketio_adapters.protocol import (
    Broadcast,
    Message,
    MessageType,
    Target,
    decode,
    encode,
    sender_prefix,
)
from socketio_adapters.protocol.payloads import EVERYONE


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
    import pickle

    data = {"packet": ["e", 1], "opts": {}}
    payload = encode(Message("u", "/", MessageType.BROADCAST, data))
    # what travels is msgpack, readable by any msgpack reader; a pickle of the same
    # message is refused, never unpickled
    assert msgpack.unpackb(payload, raw=False)["data"] == data
    with pytest.raises(MalformedMessage):
        decode(pickle.dumps({"uid": "u", "nsp": "/", "type": 3, "data": data}))


def test_a_sender_is_told_from_its_first_bytes() -> None:
    for uid in ("u", "a" * 40, "node-ü"):
        payload = encode(Message(uid, "/x", MessageType.BROADCAST, {"packet": ["e"]}))
        assert payload.startswith(sender_prefix(uid))
        assert not payload.startswith(sender_prefix(uid + "x"))
        assert not encode(Message(uid + "x", "/", MessageType.HEARTBEAT)).startswith(
            sender_prefix(uid) + b"\xa3nsp")


def test_typed_payloads_round_trip_through_the_wire() -> None:
    from socketio_adapters.protocol import (
        Ack,
        Broadcast,
        ClientCount,
        Disconnect,
        FetchSockets,
        Response,
        RoomChange,
        ServerEvent,
        SessionClaim,
        SocketInfo,
        SocketsFound,
        Target,
        parse_payload,
    )

    target = Target(("a", "b"), ("c",))
    cases: list[tuple[MessageType, Any]] = [
        (MessageType.BROADCAST, Broadcast(["ev", b"\x00", 1], target)),
        (MessageType.BROADCAST, Broadcast(["ev"], target, "r1", count=True)),
        (MessageType.SOCKETS_JOIN, RoomChange(target, ("x",), "r2")),
        (MessageType.SOCKETS_LEAVE, RoomChange(target, ("x", "y"))),
        (MessageType.DISCONNECT_SOCKETS, Disconnect(target, "r3")),
        (MessageType.FETCH_SOCKETS, FetchSockets(target, "r4")),
        (MessageType.FETCH_SOCKETS_RESPONSE,
         SocketsFound("r4", [SocketInfo("s1", ("s1", "room"), "n1")])),
        (MessageType.SERVER_SIDE_EMIT, ServerEvent(["ping", 1], "r5")),
        (MessageType.SERVER_SIDE_EMIT_RESPONSE, Response("r5", {"v": 1})),
        (MessageType.SERVER_SIDE_EMIT_RESPONSE, Response("r6", handled=False)),
        (MessageType.BROADCAST_CLIENT_COUNT, ClientCount("r1", 3)),
        (MessageType.BROADCAST_ACK, Ack("r1", ["yes", 2])),
        (MessageType.SESSION_CLAIM, SessionClaim("pid", "nonce")),
    ]
    for kind, payload in cases:
        wire = decode(encode(Message("u", "/", kind, payload.to_wire()))).data
        assert parse_payload(kind, wire) == payload, kind
    # socket.io's field names
    assert Broadcast(["e"], target, "r", count=True).to_wire() == {
        "packet": ["e"], "opts": {"rooms": ["a", "b"], "except": ["c"]},
        "requestId": "r", "all": True}
    assert parse_payload(MessageType.HEARTBEAT, None) is None


@pytest.mark.parametrize(("kind", "data"), [
    (MessageType.BROADCAST, None),
    (MessageType.BROADCAST, {"packet": "ev", "opts": {}}),
    (MessageType.BROADCAST, {"packet": ["ev"], "opts": {"rooms": [1]}}),
    (MessageType.BROADCAST, {"packet": ["ev"], "opts": {}, "requestId": 5}),
    (MessageType.SOCKETS_JOIN, {"opts": {}, "rooms": "room"}),
    (MessageType.FETCH_SOCKETS, {"opts": {}}),
    (MessageType.FETCH_SOCKETS_RESPONSE, {"requestId": "r", "sockets": {}}),
    (MessageType.SERVER_SIDE_EMIT, {"packet": []}),
    (MessageType.BROADCAST_CLIENT_COUNT, {"requestId": "r", "clientCount": -1}),
    (MessageType.BROADCAST_CLIENT_COUNT, {"requestId": "r", "clientCount": True}),
    (MessageType.BROADCAST_ACK, {"packet": ["x"]}),
    (MessageType.SESSION_CLAIM, {"pid": "p"}),
])
def test_ill_shaped_payloads_are_malformed(kind: MessageType, data: object) -> None:
    from socketio_adapters.protocol import parse_payload

    with pytest.raises(MalformedMessage):
        parse_payload(kind, data)


def test_a_fetch_answer_keeps_its_good_sockets_and_counts_the_bad() -> None:
    from socketio_adapters.protocol import SocketsFound

    found = SocketsFound.from_wire({"requestId": "r", "sockets": [
        {"id": "s1", "rooms": ["a"], "node": "n"}, {"id": 5}, "junk"]})
    assert [s.sid for s in found.sockets] == ["s1"]
    assert found.skipped == 2


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
    # a chunk out of sequence is not guessed at: it goes on, for the manager to drop
    assert joiner.feed(parts[3]) == parts[3] and joiner.dropped == 1



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


def test_target_for_everyone_is_shared_and_bad_rooms_still_refused() -> None:
    """An empty target (the usual broadcast) reads as one shared instance; an empty
    field of the wrong kind, or a bad room beside an empty one, is still refused."""
    empties: list[Any] = [{}, {"rooms": [], "except": []}, {"rooms": None}, {"except": ()}]
    for opts in empties:
        assert Target.from_wire(opts) is EVERYONE
    assert Target.from_wire({"rooms": ["a"], "except": []}) == Target(("a",), ())
    bads: list[Any] = [{"rooms": {}}, {"rooms": ""}, {"rooms": 0}, {"except": False},
                       {"rooms": [], "except": [1]}, {"rooms": ["a", 2]}, []]
    for bad in bads:
        with pytest.raises(MalformedMessage):
            Target.from_wire(bad)
    bad_events: list[Any] = [{"packet": ["e"], "opts": {}, "all": 1},
                             {"packet": ["e"], "opts": {}, "requestId": 5},
                             {"packet": ["e"], "opts": {}, "seq": True},
                             {"packet": [], "opts": {}}, {"packet": "e", "opts": {}}]
    for data in bad_events:
        with pytest.raises(MalformedMessage):
            Broadcast.from_wire(data)
    event = Broadcast.from_wire({"packet": ["e", 1], "opts": {"rooms": []},
                                 "requestId": "r", "all": True, "seq": 3})
    assert event == Broadcast(["e", 1], EVERYONE, "r", True, 3)
