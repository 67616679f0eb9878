"""Hypothesis strategies of cluster messages: junk values, envelopes that are not
ours, and payloads of every message type that are right in shape (a msgpack map with
the right keys) but wrong in content, each with the rule it breaks.

The field rules below are this test suite's own statement of the wire format (see
socketio_adapters/protocol/payloads.py and engine.py): a payload that breaks one
of them is malformed and must be dropped and counted, never acted on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgpack
from hypothesis import strategies as st

from socketio_adapters.protocol import MessageType

__all__ = ["FIELD_RULES", "JUNK", "corrupted_payload", "foreign_envelope", "harmless",
           "junk_value", "packed", "payload_of"]

Rule = Callable[[Any], bool]

_LEAVES = (st.none() | st.booleans()
           | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats() | st.text(max_size=12) | st.binary(max_size=12)
           | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=6))
           | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1)))
JUNK: st.SearchStrategy[Any] = st.recursive(
    _LEAVES,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner,
                                     max_size=4)),
    max_leaves=10)
"""Any value msgpack carries: scalars of every kind, huge numbers, extension types,
nested lists and maps (keys not always strings)."""


def junk_value(rule: Rule) -> st.SearchStrategy[Any]:
    """A junk value that ``rule`` refuses."""
    return JUNK.filter(lambda value: not rule(value))


def packed(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


# ---------------------------------------------------------------- field rules

def _optional(rule: Rule) -> Rule:
    """An optional field: absent (None) or obeying ``rule``."""
    return lambda value: value is None or rule(value)


def _str(value: Any) -> bool:
    return isinstance(value, str)


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _target(value: Any) -> bool:
    return (isinstance(value, dict) and _optional(_str_list)(value.get("rooms"))
            and _optional(_str_list)(value.get("except")))


def _event(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], str)


def _socket(value: Any) -> bool:
    return (isinstance(value, dict) and _str(value.get("id")) and _str(value.get("node"))
            and _optional(_str_list)(value.get("rooms")))


def _sockets(value: Any) -> bool:
    return isinstance(value, list) and all(_socket(item) for item in value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _headers(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _frame_kind(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2


FIELD_RULES: dict[MessageType, dict[str, Rule]] = {
    MessageType.BROADCAST: {"packet": _event, "opts": _target,
                            "requestId": _optional(_str), "all": _optional(_bool)},
    MessageType.SOCKETS_JOIN: {"opts": _target, "rooms": _optional(_str_list),
                               "requestId": _optional(_str)},
    MessageType.SOCKETS_LEAVE: {"opts": _target, "rooms": _optional(_str_list),
                                "requestId": _optional(_str)},
    MessageType.DISCONNECT_SOCKETS: {"opts": _target, "requestId": _optional(_str)},
    MessageType.FETCH_SOCKETS: {"opts": _target, "requestId": _str},
    MessageType.FETCH_SOCKETS_RESPONSE: {"requestId": _str, "sockets": _sockets},
    MessageType.SERVER_SIDE_EMIT: {"packet": _event, "requestId": _optional(_str)},
    MessageType.SERVER_SIDE_EMIT_RESPONSE: {"requestId": _str,
                                            "handled": _optional(_bool)},
    MessageType.BROADCAST_CLIENT_COUNT: {"requestId": _str, "clientCount": _count},
    MessageType.BROADCAST_ACK: {"requestId": _str,
                                "packet": lambda v: isinstance(v, list)},
    MessageType.SESSION_CLAIM: {"pid": _str, "nonce": _str},
    MessageType.ENGINE_REQUEST: {"requestId": _str, "method": lambda v: v in ("GET", "POST"),
                                 "query": _str, "body": _optional(lambda v: isinstance(v, bytes)),
                                 "headers": _optional(_headers)},
    MessageType.ENGINE_FRAME: {"sid": _str, "kind": _frame_kind,
                               "data": _optional(lambda v: isinstance(v, str | bytes)),
                               "requestId": _optional(_str)},
}
"""For each message type with a payload, the rule of each field (applied to the
field's value, None when it is absent)."""


# ---------------------------------------------------------------- payloads

_NOBODY = st.text(max_size=8).map(lambda s: f"nobody:{s}")
"""Room names, sids and request ids that nothing on the node under test holds."""
_ARGS = st.lists(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                 | st.text(max_size=8) | st.binary(max_size=8), max_size=3)


def _opts(rooms: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"rooms": st.lists(rooms, min_size=1, max_size=3),
                                  "except": st.lists(st.text(max_size=6), max_size=2)})


def payload_of(kind: MessageType, ids: st.SearchStrategy[str],
               rooms: st.SearchStrategy[str] = _NOBODY) -> st.SearchStrategy[dict[str, Any]]:
    """A well-formed payload of ``kind`` whose request ids come from ``ids`` and
    whose targets are made of ``rooms`` (never every socket)."""
    event = st.builds(lambda name, args: [name, *args], _NOBODY, _ARGS)
    socket = st.fixed_dictionaries({"id": _NOBODY, "node": st.text(max_size=8),
                                    "rooms": st.lists(st.text(max_size=6), max_size=2)})
    builders: dict[MessageType, st.SearchStrategy[dict[str, Any]]] = {
        MessageType.BROADCAST: st.fixed_dictionaries(
            {"packet": event, "opts": _opts(rooms)},
            optional={"requestId": ids, "all": st.booleans()}),
        MessageType.SOCKETS_JOIN: st.fixed_dictionaries(
            {"opts": _opts(rooms), "rooms": st.lists(st.text(max_size=6), max_size=2)},
            optional={"requestId": ids}),
        MessageType.DISCONNECT_SOCKETS: st.fixed_dictionaries(
            {"opts": _opts(rooms)}, optional={"requestId": ids}),
        MessageType.FETCH_SOCKETS: st.fixed_dictionaries(
            {"opts": _opts(rooms), "requestId": ids}),
        MessageType.FETCH_SOCKETS_RESPONSE: st.fixed_dictionaries(
            {"requestId": ids, "sockets": st.lists(socket, max_size=3)}),
        MessageType.SERVER_SIDE_EMIT: st.fixed_dictionaries(
            {"packet": event}, optional={"requestId": ids}),
        MessageType.SERVER_SIDE_EMIT_RESPONSE: st.fixed_dictionaries(
            {"requestId": ids, "packet": JUNK}, optional={"handled": st.booleans()}),
        MessageType.BROADCAST_CLIENT_COUNT: st.fixed_dictionaries(
            {"requestId": ids, "clientCount": st.integers(0, 2**64 - 1)}),
        MessageType.BROADCAST_ACK: st.fixed_dictionaries(
            {"requestId": ids, "packet": _ARGS}),
        MessageType.SESSION_CLAIM: st.fixed_dictionaries(
            {"pid": st.text(max_size=8), "nonce": st.text(max_size=8)}),
        MessageType.ENGINE_REQUEST: st.fixed_dictionaries(
            {"requestId": ids, "method": st.sampled_from(["GET", "POST"]),
             "query": st.text(max_size=12)},
            optional={"body": st.binary(max_size=8),
                      "headers": st.dictionaries(st.text(max_size=6), st.text(max_size=6),
                                                 max_size=2)}),
        MessageType.ENGINE_FRAME: st.fixed_dictionaries(
            {"sid": _NOBODY, "kind": st.just(1), "data": st.text(max_size=8)},
            optional={"requestId": ids}),
    }
    builders[MessageType.SOCKETS_LEAVE] = builders[MessageType.SOCKETS_JOIN]
    return builders[kind]


@st.composite
def corrupted_payload(draw: st.DrawFn, kinds: Sequence[MessageType],
                      ids: st.SearchStrategy[str]) -> tuple[MessageType, Any, str]:
    """``(kind, data, what is wrong)``: a payload of one of ``kinds`` that breaks
    exactly one rule of :data:`FIELD_RULES` (a field of the wrong type or value, a
    required field missing), or data that is not a map at all."""
    kind = draw(st.sampled_from(kinds))
    if draw(st.integers(0, 9)) == 0:
        return kind, draw(junk_value(lambda v: isinstance(v, dict))), "data not a map"
    data = dict(draw(payload_of(kind, ids)))
    rules = FIELD_RULES[kind]
    field = draw(st.sampled_from(sorted(rules)))
    rule = rules[field]
    if not rule(None) and draw(st.booleans()):
        data.pop(field, None)
        return kind, data, f"{field} missing"
    data[field] = draw(junk_value(rule))
    return kind, data, f"{field}={data[field]!r}"


_UID = st.text(min_size=1, max_size=12).map(lambda s: f"peer:{s}")


@st.composite
def foreign_envelope(draw: st.DrawFn) -> bytes:
    """Bytes that are no envelope: not msgpack, msgpack that is not a map, or a map
    whose uid, nsp or type is missing or wrong (bools and huge numbers included)."""
    valid_types = {t.value for t in MessageType}
    envelope: dict[Any, Any] = {"uid": draw(_UID), "nsp": "/",
                                "type": int(MessageType.BROADCAST),
                                "data": draw(JUNK)}
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=40).filter(lambda b: not _decodes(b)))
    if choice == 1:
        return packed(draw(junk_value(lambda v: isinstance(v, dict))))
    if choice == 2:
        field = draw(st.sampled_from(["uid", "nsp", "type"]))
        del envelope[field]
    elif choice == 3:
        envelope["uid"] = draw(junk_value(lambda v: isinstance(v, str) and v != ""))
    elif choice == 4:
        envelope["nsp"] = draw(junk_value(_str))
    else:
        envelope["type"] = draw(junk_value(
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v in valid_types))
    return packed(envelope)


def _decodes(data: bytes) -> bool:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return False
    return isinstance(value, dict)


def harmless(ids: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[MessageType, Any]]:
    """Well-formed messages that address nothing the node under test holds (rooms
    no socket is in, request ids no request has, an unknown event or sid)."""
    kinds = [k for k in FIELD_RULES
             if k not in (MessageType.SESSION_CLAIM, MessageType.ENGINE_REQUEST)]
    return st.sampled_from(kinds).flatmap(
        lambda kind: payload_of(kind, ids).map(lambda data: (kind, data)))
