"""Local delivery: the sockets of this node, and the only code that touches
python-socketio's and engine.io's internals (rooms tables, packet encoding, the
engine.io socket queues).

A target (rooms, except rooms) selects sockets as socket.io's in-memory adapter
does: the members of any of the rooms (every socket when there is none), less the
members of any except room and the sockets being disconnected.
"""

from __future__ import annotations

import asyncio
import json
import json.encoder
from collections.abc import Callable, Iterable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from ..protocol import Target

__all__ = ["LocalDelivery", "encode_event"]

YIELD_EVERY = 64
"""Events queued for a restored client between two yields to the event loop, so that
a long catch-up neither stalls the node nor delays the first packets."""


_JSON_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
"""What python-socketio's packet writes its data with (``json.dumps(data,
separators=(",", ":"))``), without making an encoder object per call."""
_MAKE_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = None if _MAKE_C_ENCODER is None else _MAKE_C_ENCODER(
    None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
"""The C encoder that :data:`_JSON_ENCODE` makes on every call (CPython), made once
with the same settings. It keeps no record of the containers it is in
(``markers``), so a circular reference ends in RecursionError; :data:`_JSON_ENCODE`
then raises what python-socketio's packet would."""


def _json_text(data: list[Any]) -> str:
    """``data`` as python-socketio's packet writes it; TypeError when JSON cannot
    hold it (bytes among the arguments)."""
    if _C_ENCODE is not None:
        try:
            return "".join(_C_ENCODE(data, 0))
        except RecursionError:
            pass  # circular, or too deep: the full encoder raises what it is
    text: str = _JSON_ENCODE(data)
    return text


def encode_event(packet_class: Any, namespace: str, data: list[Any]) -> str | list[Any]:
    """A socket.io EVENT packet for ``data``, as ``packet_class(EVENT, namespace=...,
    data=...).encode()`` writes it. For python-socketio's own packet class with the
    standard json module, the text is written here: one JSON encoding, without
    first walking the data for binary parts (an event with bytes cannot be written
    as JSON: then, as for any other packet class, python-socketio's packet writes
    it, with its attachments)."""
    if packet_class is sio_packet.Packet and packet_class.json.dumps is json.dumps:
        try:
            body = _json_text(data)
        except TypeError:  # bytes among the arguments (or a value no one can send)
            pass
        else:
            return f"{sio_packet.EVENT}{body}" if namespace == "/" \
                else f"{sio_packet.EVENT}{namespace},{body}"
    encoded: str | list[Any] = packet_class(sio_packet.EVENT, namespace=namespace,
                                            data=data).encode()
    return encoded


class LocalDelivery:
    """Sends to, selects and changes the sockets connected to this node."""

    def __init__(self, manager: socketio.AsyncManager) -> None:
        self.manager = manager
        self._queued = 0

    @property
    def server(self) -> Any:
        return self.manager.server

    def selects_any(self, namespace: str, target: Target) -> bool:
        """Whether ``target`` may select a local socket (cheap; excepts ignored)."""
        ns_rooms = self.manager.rooms.get(namespace)
        if not ns_rooms:
            return False
        return any(ns_rooms.get(room) for room in (target.rooms or (None,)))

    def recipients(self, namespace: str, target: Target,
                   skip: Iterable[str] = ()) -> dict[str, str]:
        """sid -> eio_sid of the connected local sockets that ``target`` selects,
        less the sids in ``skip``."""
        manager = self.manager
        ns_rooms = manager.rooms.get(namespace)
        if not ns_rooms:
            return {}
        # a room is a bidict: copied from its items() (the dict's own view), not
        # from the mapping itself, which would call bidict's __getitem__ per member
        if target.rooms:
            found: dict[str, str] = {}
            for room in target.rooms:
                members = ns_rooms.get(room)
                if members:
                    found.update(members.items())
        else:
            everyone = ns_rooms.get(None)
            found = dict(everyone.items()) if everyone else {}
        for room in target.excepts:
            for sid in ns_rooms.get(room) or ():
                found.pop(sid, None)
        for sid in skip:
            found.pop(sid, None)
        pending = manager.pending_disconnect.get(namespace)
        if pending:
            for sid in pending:
                found.pop(sid, None)
        return found

    async def emit(self, namespace: str, packet_data: list[Any], target: Target,
                   callback: Callable[..., Any] | None = None,
                   skip: Iterable[str] = ()) -> int:
        """Send one event to the selected sockets; returns how many. With
        ``callback``, each recipient's ack calls it."""
        recipients = self.recipients(namespace, target, skip)
        if not recipients:
            return 0
        server = self.server
        # encoded once for every recipient, as python-socketio's manager does; with a
        # callback each recipient's packet has its ack id, and this encoding proves
        # first that the event can be sent (raising before any ack is awaited)
        encoded = encode_event(server.packet_class, namespace, packet_data)
        if callback is None:
            send = server._send_eio_packet
            if isinstance(encoded, list):  # binary: the packet, then its attachments
                eio_pkts = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
                for eio_sid in recipients.values():
                    for eio_pkt in eio_pkts:
                        await send(eio_sid, eio_pkt)
            else:
                eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
                for eio_sid in recipients.values():
                    await send(eio_sid, eio_pkt)
        else:
            for sid, eio_sid in recipients.items():
                ack_id = self.manager._generate_ack_id(sid, callback)
                await server._send_packet(eio_sid, server.packet_class(
                    sio_packet.EVENT, namespace=namespace, data=packet_data, id=ack_id))
        # A long-polling client takes queued packets in one response, and
        # python-engineio's client rejects a response of more than 16 packets: let its
        # poll run between events (python-socketio's own manager yields the same way).
        # Websocket clients get one frame per packet and need no such pause.
        sockets = server.eio.sockets
        for eio_sid in recipients.values():
            sock = sockets.get(eio_sid)
            if sock is not None and not sock.upgraded:
                await asyncio.sleep(0)
                break
        return len(recipients)

    def sockets(self, namespace: str, target: Target) -> list[tuple[str, list[str]]]:
        """The selected connected sockets and their rooms (in python-socketio's
        ``get_rooms`` order). One pass over the namespace's rooms: ``get_rooms`` per
        socket walks every room each time (quadratic: 6.5 s for 5,000 sockets)."""
        manager = self.manager
        selected = [sid for sid in self.recipients(namespace, target)
                    if manager.is_connected(sid, namespace)]
        if not selected:
            return []
        rooms_of: dict[str, list[str]] = {sid: [] for sid in selected}
        for room, members in manager.rooms.get(namespace, {}).items():
            if room is None:
                continue
            if len(members) < len(rooms_of):
                for sid in members:
                    found = rooms_of.get(sid)
                    if found is not None:
                        found.append(room)
            else:
                keys = members.keys()  # the dict's own view: no bidict call per sid
                for sid, found in rooms_of.items():
                    if sid in keys:
                        found.append(room)
        return [(sid, rooms_of[sid]) for sid in selected]

    def change_rooms(self, namespace: str, target: Target, rooms: Iterable[str],
                     join: bool) -> None:
        manager = self.manager
        rooms = list(rooms)
        for sid in self.recipients(namespace, target):
            for room in rooms:
                if join:
                    manager.basic_enter_room(sid, namespace, room)
                else:
                    manager.basic_leave_room(sid, namespace, room)

    async def disconnect(self, namespace: str, target: Target) -> None:
        server = self.server
        if server is None:
            return
        for sid in list(self.recipients(namespace, target)):
            await server.disconnect(sid, namespace=namespace, ignore_queue=True)

    def holds(self, sid: str, namespace: str) -> bool:
        """Whether the socket is on this node (connected, or in its connect handler)."""
        manager = self.manager
        return bool(manager.is_connected(sid, namespace)
                    or manager.is_pre_connected(sid, namespace))

    # ------------------------------------------------------------ restored sockets

    def register(self, sid: str, namespace: str, eio_sid: str, rooms: Iterable[str]) -> None:
        """Connect a restored socket under its old sid, in its rooms."""
        manager = self.manager
        manager.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        for room in rooms:
            try:
                manager.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
            except ValueError:  # another socket's sid room: not ours to enter
                continue

    def rooms_of(self, sid: str, namespace: str) -> set[str]:
        return set(self.manager.get_rooms(sid, namespace))

    async def send_event(self, eio_sid: str, namespace: str, packet_data: list[Any]) -> None:
        """Send one event to one restored client, yielding to the loop every
        :data:`YIELD_EVERY` events; raises ConnectionError when it went away.

        A long-polling client takes every queued event with its next poll: only
        :class:`socketio_adapters.AsyncServer` restores sessions, and it answers the
        polls of a Python client (which reads at most 16 packets a poll) with at most
        that many (:mod:`socketio_adapters.polling`)."""
        server = self.server
        sock = server.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            raise ConnectionError("the restored client went away")
        self._queued += 1
        if self._queued % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        encoded = encode_event(server.packet_class, namespace, packet_data)
        for part in encoded if isinstance(encoded, list) else (encoded,):
            await server._send_eio_packet(eio_sid,
                                          eio_packet.Packet(eio_packet.MESSAGE, part))
