"""Connection state recovery, the manager's half: offsets, saved sessions, restores.

When recovery is on, every event for clients that needs no ack is appended to the
backend's durable log, and every node (the sender too) delivers it when it reads it
back, with the log offset appended as the event's last argument. So all nodes deliver
the same events in the same order with the same offsets, and a client's last offset
says exactly where it stopped.

A restore on any node:

1. takes the saved session (atomically, so it restores once): from the backend's
   session store, or, on a backend without one, from the log itself (the node appends
   a claim and the first claim after the saved record wins, since every node reads
   the log in one order);
2. at that same moment notes its log position ``P`` and starts a *tail*: every entry
   it delivers from then on is also kept for the restore;
3. reads the entries after the client's offset up to ``P`` from the log;
4. the server registers the socket (held: live deliveries skip it), sends CONNECT,
   the missed events from the log, then the tail, and releases the hold when the tail
   is empty, all in order, so the client gets each event once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from socketio import packet as sio_packet

from .backends.base import LOG
from .errors import ConfigurationError, MalformedMessage
from .protocol import Message, MessageType, decode

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = ["Recovery", "RecoveryOptions", "Restore", "SessionRecord", "Tail", "matches",
           "new_pid"]


@dataclass(frozen=True)
class RecoveryOptions:
    """``connection_state_recovery`` settings (socket.io's names, in seconds).

    :param max_disconnection_duration: how long a lost session can be restored.
    :param skip_middlewares: restore without calling the connect handler again
        (python-socketio's connect handler plays the part of socket.io's
        middlewares); with ``False`` it runs for a restored socket too, may refuse it,
        and can tell it apart with ``AsyncServer.recovered(sid)``.
    :param max_log_length: entries the durable log keeps at most; a client further
        behind gets a fresh session.
    :param max_log_age: seconds an entry stays in the log; a client whose last event
        is older gets a fresh session (default: an hour, at least twice the window).
    """

    max_disconnection_duration: float = 120.0
    skip_middlewares: bool = True
    max_log_length: int = 10_000
    max_log_age: float | None = None

    def __post_init__(self) -> None:
        if not self.max_disconnection_duration > 0:
            raise ConfigurationError("max_disconnection_duration must be > 0 seconds")
        if self.max_log_length < 1:
            raise ConfigurationError("max_log_length must be at least 1")
        if self.max_log_age is not None and not self.max_log_age > 0:
            raise ConfigurationError("max_log_age must be > 0 seconds")

    @property
    def log_age(self) -> float:
        if self.max_log_age is not None:
            return self.max_log_age
        return max(3600.0, 2 * self.max_disconnection_duration)

    @classmethod
    def coerce(cls, value: RecoveryOptions | Mapping[str, Any] | bool | None
               ) -> RecoveryOptions | None:
        """Accept an instance, a dict of socket.io-style options, ``True`` (the
        defaults) or ``None``/``False`` (off). Node's camelCase keys work too."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"connection_state_recovery must be a dict or True, not {value!r}")
        known = {"max_disconnection_duration", "skip_middlewares", "max_log_length",
                 "max_log_age"}
        camel = {"maxDisconnectionDuration": "max_disconnection_duration",
                 "skipMiddlewares": "skip_middlewares"}
        options: dict[str, Any] = {}
        for key, item in value.items():
            name = camel.get(key, key)
            if name not in known:
                raise ConfigurationError(
                    f"unknown connection_state_recovery option {key!r}; known: "
                    + ", ".join(sorted(known)))
            options[name] = item
        if "maxDisconnectionDuration" in value:  # socket.io counts milliseconds
            options["max_disconnection_duration"] = value["maxDisconnectionDuration"] / 1000
        return cls(**options)


@dataclass
class SessionRecord:
    """What a lost socket leaves behind for its restore."""

    sid: str
    pid: str
    nsp: str
    rooms: list[str]
    data: Any
    expires: float
    """Wall-clock time (``time.time()``) after which it cannot be restored."""

    def pack(self) -> bytes:
        packed: bytes = msgpack.packb(
            {"sid": self.sid, "pid": self.pid, "nsp": self.nsp, "rooms": self.rooms,
             "data": self.data, "expires": self.expires}, use_bin_type=True)
        return packed

    def as_data(self) -> dict[str, Any]:
        return {"sid": self.sid, "pid": self.pid, "rooms": self.rooms, "data": self.data,
                "expires": self.expires}

    @classmethod
    def from_data(cls, nsp: str, raw: Any) -> SessionRecord:
        if not isinstance(raw, dict):
            raise MalformedMessage("session record is not a map")
        sid, pid, rooms = raw.get("sid"), raw.get("pid"), raw.get("rooms")
        expires = raw.get("expires")
        if not isinstance(sid, str) or not isinstance(pid, str):
            raise MalformedMessage("session record without sid or pid")
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise MalformedMessage("session record with bad rooms")
        if not isinstance(expires, int | float):
            raise MalformedMessage("session record without expiry")
        return cls(sid, pid, nsp, rooms, raw.get("data"), float(expires))

    @classmethod
    def unpack(cls, payload: bytes) -> SessionRecord:
        try:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated classes
            raise MalformedMessage(f"session record is not msgpack: {exc!r}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("nsp"), str):
            raise MalformedMessage("session record without namespace")
        return cls.from_data(raw["nsp"], raw)

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires


def matches(message: Message, nsp: str, rooms: set[str]) -> bool:
    """Whether a logged broadcast would have reached a socket of ``nsp`` in ``rooms``
    (its own sid included)."""
    if message.type is not MessageType.BROADCAST or message.nsp != nsp:
        return False
    opts = message.data["opts"]
    targets = opts.get("rooms") or ()
    if targets and rooms.isdisjoint(targets):
        return False
    return rooms.isdisjoint(opts.get("except") or ())


@dataclass
class Tail:
    """Log entries a node delivered after a restore's boundary, kept until the
    restored socket is live."""

    entries: deque[tuple[str, Message]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, offset: str, message: Message) -> None:
        self.entries.append((offset, message))
        self.wake.set()


@dataclass
class Restore:
    """A session taken for restoring, with what the socket missed up to the boundary
    and the tail that continues it."""

    record: SessionRecord
    missed: list[tuple[str, Message]]
    tail: Tail
    seen_up_to: str | None = None
    """Set when the client saw further than this node had read (it came from a node
    ahead of this one): tail entries up to this offset, included, are not resent."""


def new_pid() -> str:
    """A private session id: only its client knows it, so only it can restore."""
    return secrets.token_urlsafe(18)


_POLL_BACKLOG = 12
"""Packets queued for a long-polling client before a restore waits for its next poll
to take them (python-engineio's client rejects a response of more than 16 packets;
the margin leaves room for pings and live events)."""
_YIELD_EVERY = 64
"""Missed events queued for a websocket client between two yields to the event loop,
so that a long catch-up neither stalls the node nor delays the first packets."""


class Recovery:
    """The recovery state of one :class:`~socketio_adapters.ClusterManager`."""

    def __init__(self, manager: ClusterManager, options: RecoveryOptions) -> None:
        self.manager = manager
        self.options = options
        self.tails: list[Tail] = []
        self.held: set[str] = set()
        """Sids being restored: live deliveries skip them (their tail carries on)."""
        self._claims: dict[str, asyncio.Future[tuple[str, Tail]]] = {}
        self._queued = 0
        self.saved = 0
        self.restored = 0

    # ------------------------------------------------------------ the live log

    async def on_entry(self, offset: str, payload: bytes) -> None:
        """Deliver one log entry to the local clients it targets, offset appended."""
        manager = self.manager
        try:
            message = decode(payload)
        except MalformedMessage as exc:
            manager._drop_malformed(f"log entry {offset}: {exc}")
            return
        for tail in self.tails:
            tail.add(offset, message)
        try:
            if message.type is MessageType.BROADCAST:
                if manager.server is None:
                    return
                data = message.data
                opts = data["opts"]
                excepts = list(opts.get("except") or ())
                if self.held:
                    excepts.extend(self.held)
                await manager._emit_local(message.nsp, [*data["packet"], offset],
                                          list(opts.get("rooms") or ()), excepts)
            elif message.type is MessageType.SESSION_CLAIM and message.uid == manager.uid:
                future = self._claims.pop(str(message.data["nonce"]), None)
                if future is not None and not future.done():
                    tail = Tail()  # opened at the claim: it is the restore's boundary
                    self.tails.append(tail)
                    future.set_result((offset, tail))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            manager._drop_malformed(f"log entry {offset} ({message.type.name}): "
                                    f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ sessions

    async def save(self, record: SessionRecord) -> None:
        """Keep a lost socket's session for ``max_disconnection_duration``."""
        manager = self.manager
        backend = manager.backend
        if backend.capabilities.session_store:
            await backend.save_session(record.pid, record.pack(),
                                       self.options.max_disconnection_duration)
        else:
            await manager._require_outbox().put_and_wait(LOG, manager._encode(
                MessageType.SESSION_SAVE, record.nsp, record.as_data()))
        self.saved += 1

    async def take(self, nsp: str, pid: str, offset: str) -> Restore | None:
        """Take the session ``pid`` for restoring, with the events it missed after
        ``offset``; ``None`` (a fresh session) when there is none, it expired, it was
        restored already, or ``offset`` is no longer in the log."""
        manager = self.manager
        backend = manager.backend
        record: SessionRecord | None = None
        nonce = ""
        if backend.capabilities.session_store:
            raw = await backend.take_session(pid)
            if raw is None:
                return None
            try:
                record = SessionRecord.unpack(raw)
            except MalformedMessage as exc:
                manager._drop_malformed(f"saved session {pid!r}: {exc}")
                return None
            if record.nsp != nsp or record.pid != pid or record.expired:
                return None
            boundary, tail = backend.log_position, Tail()
            self.tails.append(tail)  # no await since reading the position
        else:
            nonce = secrets.token_hex(8)
            future: asyncio.Future[tuple[str, Tail]] = (
                asyncio.get_running_loop().create_future())
            self._claims[nonce] = future
            manager._require_outbox().put(LOG, manager._encode(
                MessageType.SESSION_CLAIM, nsp, {"pid": pid, "nonce": nonce}))
            try:
                boundary, tail = await asyncio.wait_for(future, manager.request_timeout)
            except asyncio.TimeoutError:
                self._claims.pop(nonce, None)
                manager.log.warning("restore of a session in %s: our claim did not come "
                                    "back from the log within %ss", nsp,
                                    manager.request_timeout)
                return None
        try:
            restore = await self._collect(nsp, pid, nonce, offset, boundary, record, tail)
        except Exception:
            self.close(tail)
            if record is not None:  # the log could not be read: keep the session
                await self._put_back(record)
            raise
        except BaseException:
            self.close(tail)
            raise
        if restore is None:
            self.close(tail)
        return restore

    async def _collect(self, nsp: str, pid: str, nonce: str, offset: str,
                       boundary: str | None, record: SessionRecord | None,
                       tail: Tail) -> Restore | None:
        entries = await self.manager.backend.read_log(offset, boundary)
        if entries is None:
            return None
        decoded: list[tuple[str, Message]] = []
        for entry_offset, payload in entries:
            try:
                decoded.append((entry_offset, decode(payload)))
            except MalformedMessage:
                continue  # counted when it was delivered live
        if record is None:
            record = _claimed(decoded, nsp, pid, nonce)
            if record is None:
                return None
        rooms = {record.sid, *record.rooms}
        missed = []
        for entry_offset, message in decoded:
            try:
                if matches(message, nsp, rooms):
                    missed.append((entry_offset, message))
            except (KeyError, TypeError, AttributeError):
                continue
        # the client's offset is in the log but beyond this node's position: it saw
        # entries this node has yet to read, which will arrive in the tail
        ahead = offset if not entries and offset != boundary else None
        return Restore(record, missed, tail, ahead)

    async def _put_back(self, record: SessionRecord) -> None:
        left = record.expires - time.time()
        if left <= 0:
            return
        try:
            await self.manager.backend.save_session(record.pid, record.pack(), left)
        except Exception as exc:
            self.manager.log.warning("could not keep session %s after a failed "
                                     "restore: %s", record.sid, exc)

    def close(self, tail: Tail) -> None:
        if tail in self.tails:
            self.tails.remove(tail)

    # ------------------------------------------------------------ the restored socket

    async def finish(self, restore: Restore, eio_sid: str,
                     announce: Callable[[], Awaitable[None]]) -> None:
        """Register the restored socket (held), ``announce`` it (the CONNECT packet),
        send what it missed and its tail, then let live deliveries reach it."""
        manager = self.manager
        record = restore.record
        nsp, sid = record.nsp, record.sid
        manager.basic_enter_room(sid, nsp, None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, nsp, sid, eio_sid=eio_sid)
        for room in record.rooms:
            try:
                manager.basic_enter_room(sid, nsp, room, eio_sid=eio_sid)
            except ValueError:  # another socket's sid room: not ours to enter
                continue
        self.held.add(sid)
        try:
            await announce()
            rooms = {sid, *record.rooms}
            for offset, message in restore.missed:
                await self._send(eio_sid, message, offset)
            tail = restore.tail
            if restore.seen_up_to is not None:
                await self._skip_seen(tail, restore.seen_up_to)
            while tail.entries:
                offset, message = tail.entries.popleft()
                if matches(message, nsp, set(manager.get_rooms(sid, nsp)) or rooms):
                    await self._send(eio_sid, message, offset)
        finally:
            self.held.discard(sid)
            self.close(restore.tail)
        self.restored += 1

    async def _skip_seen(self, tail: Tail, seen: str) -> None:
        """Drop tail entries up to ``seen`` (the client has them), waiting for this
        node to read that far (at most ``request_timeout``)."""
        deadline = time.monotonic() + self.manager.request_timeout
        while True:
            while tail.entries:
                offset, _ = tail.entries.popleft()
                if offset == seen:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                self.manager.log.warning(
                    "restore: this node did not reach offset %s within %ss; the client "
                    "may get events again", seen, self.manager.request_timeout)
                return
            tail.wake.clear()
            try:
                await asyncio.wait_for(tail.wake.wait(), left)
            except asyncio.TimeoutError:
                continue

    async def _send(self, eio_sid: str, message: Message, offset: str) -> None:
        server = self.manager.server
        sock = server.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            raise ConnectionError("the restored client went away")
        if not sock.upgraded and sock.queue.qsize() >= _POLL_BACKLOG:
            # wait for the client's next poll to take what is queued
            try:
                await asyncio.wait_for(sock.queue.join(), self.manager.request_timeout)
            except asyncio.TimeoutError:
                raise ConnectionError("the restored client stopped polling") from None
            if sock.closed:
                raise ConnectionError("the restored client went away")
        else:
            self._queued += 1
            if self._queued % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await server._send_packet(eio_sid, server.packet_class(
            sio_packet.EVENT, namespace=message.nsp,
            data=[*message.data["packet"], offset]))


def _claimed(entries: list[tuple[str, Message]], nsp: str, pid: str,
             nonce: str) -> SessionRecord | None:
    """On a backend without a session store: the session saved last for ``pid`` in
    ``entries``, if our claim (``nonce``) is the first one after it."""
    record: SessionRecord | None = None
    for _, message in entries:
        if message.nsp != nsp or not isinstance(message.data, dict):
            continue
        if message.type is MessageType.SESSION_SAVE and message.data.get("pid") == pid:
            try:
                record = SessionRecord.from_data(nsp, message.data)
            except MalformedMessage:
                record = None
        elif (message.type is MessageType.SESSION_CLAIM and record is not None
              and message.data.get("pid") == pid):
            if message.data.get("nonce") != nonce:
                return None  # another node restored it first
            break
    if record is None or record.expired:
        return None
    return record
