"""Local delivery writes a socket.io EVENT packet as python-socketio's packet does,
for every namespace and kind of argument; binary arguments, another packet class or
another json module go through python-socketio's packet."""

from __future__ import annotations

import json
from typing import Any

import pytest
from socketio import msgpack_packet
from socketio import packet as sio_packet

from socketio_adapters.cluster.local import encode_event

SAMPLES: list[list[Any]] = [
    ["e"],
    ["e", {"i": 1}],
    ["e", "é ☃ \n \"quoted\"", [1, 2.5, None, True, False, -3]],
    ["e", {"nested": {"deep": [{"x": [1, {"y": "z"}]}]}}, 10**30],
    ["e", float("inf"), float("nan")],
    ["e", b"\x00\x01"],
    ["e", {"a": [bytearray(b"y"), "s"]}, b""],
    ["e", (1, 2)],
]


@pytest.mark.parametrize("namespace", ["/", "/chat", "/a,b"])
@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_same_as_python_socketio(namespace: str, data: list[Any]) -> None:
    expected = sio_packet.Packet(sio_packet.EVENT, namespace=namespace, data=data).encode()
    assert encode_event(sio_packet.Packet, namespace, data) == expected


def test_what_cannot_be_sent_raises_as_before() -> None:
    for data in (["e", object()], ["e", (b"bytes in a tuple",)]):
        with pytest.raises(TypeError):
            sio_packet.Packet(sio_packet.EVENT, data=data).encode()
        with pytest.raises(TypeError):
            encode_event(sio_packet.Packet, "/", data)
    circular: list[Any] = ["e"]
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        encode_event(sio_packet.Packet, "/", circular)
    deep: list[Any] = ["e"]
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        sio_packet.Packet(sio_packet.EVENT, data=["e", deep]).encode()
    with pytest.raises(RecursionError):
        encode_event(sio_packet.Packet, "/", ["e", deep])


class _Tagged(sio_packet.Packet):  # type: ignore[misc]
    def encode(self) -> Any:
        return "tagged:" + str(super().encode())


def test_another_packet_class_writes_its_own() -> None:
    assert encode_event(_Tagged, "/", ["e", 1]) == 'tagged:2["e",1]'
    packet_class = msgpack_packet.MsgPackPacket
    encoded = encode_event(packet_class, "/x", ["e", 1])
    assert isinstance(encoded, bytes)
    assert encoded == packet_class(sio_packet.EVENT, namespace="/x", data=["e", 1]).encode()


def test_another_json_module_writes_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    class Loud:
        @staticmethod
        def dumps(data: Any, **kwargs: Any) -> str:
            return json.dumps(data, **kwargs).upper()

    monkeypatch.setattr(sio_packet.Packet, "json", Loud)
    assert encode_event(sio_packet.Packet, "/", ["e", "x"]) == '2["E","X"]'
