"""Per-room subscriptions ("only what a node needs"): with ``subscriptions="rooms"``
a node receives the broadcasts to one room only while it has a local member in that
room, besides the messages for itself and those for every node.

- A room's **key** is a short hash of its namespace and name (:func:`room_key`):
  room names are arbitrary user strings, and brokers limit their names (Postgres
  channels to 63 bytes, NATS subjects and AMQP routing keys to certain characters).
  The backend maps the key to its own channel, subject or routing key.
- **Subscribing**: :class:`RoomRouting` learns from the room table (see
  :mod:`.rooms`) when a room of a namespace gets its first local member and when
  its last one leaves. It subscribes in batches, and ``enter_room`` waits for
  :meth:`RoomRouting.settled` (the broker's confirmation), so a broadcast right
  after a join is delivered. It unsubscribes ``linger`` seconds after the last
  member left, unless one joined again meanwhile (no churn for a room that empties
  and fills).
- **Publishing** (:meth:`RoomRouting.target`): a broadcast to exactly one room,
  with no ack, goes to that room's key (except rooms and ``skip_sid`` are applied by
  the receivers, as before). Everything else goes where it went: broadcasts to
  everyone or to several rooms, requests and their answers, acks.
- **Sid rooms**: a node cannot know whether a room name is a socket's sid on
  another node, so, as Node's sharded Redis adapter's ``dynamic`` mode does, a room
  name shaped like a sid (:data:`SID_LENGTH` characters, the length of engine.io's
  and socket.io's ids) is not routed: it goes to every node, and no node subscribes
  to it. A node subscribes to every other room with a local member, its own
  sockets' sid rooms included when they are not sid-shaped (sids made by a custom
  ``generate_id``), so nothing is ever routed to a key no member listens to.
- With connection state recovery, broadcasts go through the durable log, which
  every node follows: nothing is routed, and nothing is subscribed.
- **Mixed clusters**: a node in this mode says so in its heartbeats
  (:data:`ROUTES_ROOMS`), and routes a broadcast to a room key only while every live
  node it knows said so. A node with ``subscriptions="all"`` (or one whose recovery
  turned routing off, or one of an older version) subscribes to no room key: while
  it is alive, broadcasts to rooms go to every node, so nodes can switch modes one
  at a time (a rolling deploy) without losing a message. An emitter hears no
  heartbeats: with ``subscriptions="rooms"`` it routes, so every server must be in
  this mode before an emitter is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from ..backends.base import Backend, RoomTarget
from ..errors import ConfigurationError
from ..protocol import Target

__all__ = ["MODES", "ROUTES_ROOMS", "SID_LENGTH", "RoomRouting", "room_key", "routable"]

MODES = ("all", "rooms")
"""The values of the ``subscriptions`` option."""
SID_LENGTH = 20
"""Length of the sids engine.io and socket.io (Python and Node) make."""
KEY_BYTES = 10
"""A key is this many bytes of BLAKE2b, as hex: 20 characters."""
ROUTES_ROOMS = "routes_rooms"
"""The key of a node's heartbeats that says it subscribes to room keys."""
LINGER_SECONDS = 2.0
"""How long a room key stays subscribed after its last local member left."""


def room_key(namespace: str, room: str) -> str:
    """The broker-safe key of ``room`` in ``namespace``: lower-case hex, 20
    characters. Two rooms sharing a key (never seen in practice) would only cost
    messages a node drops, as the receiver selects its sockets by room name."""
    name = f"{namespace}\x00{room}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(name, digest_size=KEY_BYTES).hexdigest()


def routable(room: Hashable) -> bool:
    """Whether a room gets its own key: a string that is not shaped like a sid."""
    return isinstance(room, str) and len(room) != SID_LENGTH


class RoomRouting:
    """Which room keys this node subscribes to, and where a broadcast goes (see the
    module doc). ``mode`` is ``"all"`` (every node receives everything; this class
    then does nothing) or ``"rooms"``."""

    def __init__(self, backend: Backend, mode: str, timeout: float,
                 logger: logging.Logger, linger: float = LINGER_SECONDS) -> None:
        if mode not in MODES:
            raise ConfigurationError(
                f"bad value {mode!r} for option 'subscriptions': expected one of "
                f"{', '.join(MODES)}")
        if mode == "rooms" and not backend.capabilities.routes_rooms:
            raise ConfigurationError(
                f"subscriptions='rooms': the {backend.name} backend cannot route "
                "messages by room (every node reads every message); use "
                "subscriptions='all' with it")
        self.backend = backend
        self.mode = mode
        self.timeout = timeout
        self.logger = logger
        self.linger = linger
        self.enabled = mode == "rooms"
        """False in ``"all"`` mode, and with connection state recovery."""
        self.wanted: set[str] = set()
        """Keys of the rooms with a local member."""
        self._leaving: dict[str, float] = {}
        """Keys no local member needs any more, and when to unsubscribe them."""
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        """Set by :meth:`stop`: room changes after it (sockets leaving as the server
        closes) start no work."""
        self.peers_route = True
        """Every live node this one knows announced that it routes rooms (see the
        module doc: while one does not, nothing is routed)."""
        self.failures = 0
        """Batches the broker did not confirm (logged; the backend subscribes its
        keys again when it reconnects)."""

    def traits(self) -> dict[str, Any]:
        """What this node says of itself in its heartbeats."""
        return {ROUTES_ROOMS: True} if self.enabled else {}

    def peers_changed(self, announced: dict[str, Any]) -> None:
        """The live nodes and what each announced (``uid -> info``) changed."""
        holdouts = sorted(uid for uid, info in announced.items()
                          if not (isinstance(info, dict) and info.get(ROUTES_ROOMS) is True))
        routed = not holdouts
        if self.enabled and routed != self.peers_route:
            if routed:
                self.logger.info("every node routes rooms: broadcasts to one room go "
                                 "to the nodes subscribed to it again")
            else:
                self.logger.warning(
                    "node %s does not route rooms (subscriptions=all, recovery on, or "
                    "an older version): broadcasts to rooms go to every node while it "
                    "is alive", ", ".join(holdouts))
        self.peers_route = routed

    def target(self, namespace: str, selected: Target) -> RoomTarget | None:
        """Where a broadcast without ack goes: a room's key, or None (every node)."""
        if not self.enabled or not self.peers_route or len(selected.rooms) != 1:
            return None
        room = selected.rooms[0]
        return RoomTarget(room_key(namespace, room)) if routable(room) else None

    def joined(self, namespace: str, room: Hashable) -> None:
        """A room got its first local member (called from the room table)."""
        if not self.enabled or not routable(room):
            return
        key = room_key(namespace, str(room))
        self._leaving.pop(key, None)
        if key not in self.wanted:
            self.wanted.add(key)
            self._kick()

    def left(self, namespace: str, room: Hashable) -> None:
        """A room lost its last local member."""
        if not self.enabled or not routable(room):
            return
        key = room_key(namespace, str(room))
        if key in self.wanted:
            self.wanted.discard(key)
            self._leaving[key] = asyncio.get_running_loop().time() + self.linger
            self._kick()

    async def settled(self) -> None:
        """Return once every room with a local member is subscribed (or the broker
        did not confirm within ``timeout``: logged)."""
        if not self.enabled or self._stopped or (self._task is None
                                and self.wanted <= self.backend.room_keys):
            return  # nothing under way: every wanted key was confirmed (or logged)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            self.failures += 1
            self.logger.warning("room subscriptions not confirmed by the broker "
                                "within %ss", self.timeout)

    def start(self) -> None:
        """(Re)start: room changes subscribe again (after :meth:`stop`)."""
        self._stopped = False
        if self._leaving or self.wanted - self.backend.room_keys:
            self._kick()

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _kick(self) -> None:
        if self._stopped:
            return
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name="room-subscriptions")

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            await self._apply(self.backend.subscribe_rooms,
                              [k for k in self.wanted if k not in self.backend.room_keys])
            for future in waiters:
                if not future.done():
                    future.set_result(None)
            now = loop.time()
            due = [key for key, when in self._leaving.items() if when <= now]
            for key in due:
                del self._leaving[key]
            await self._apply(self.backend.unsubscribe_rooms, due)
            if self._wake.is_set() or self._waiters:
                continue
            if not self._leaving:
                self._task = None
                return
            pause = min(self._leaving.values()) - loop.time()
            try:
                await asyncio.wait_for(self._wake.wait(), max(pause, 0.0))
            except asyncio.TimeoutError:
                pass

    async def _apply(self, change: Callable[[list[str]], Awaitable[None]],
                     keys: list[str]) -> None:
        if not keys:
            return
        what = getattr(change, "__name__", "change")
        lost: tuple[type[BaseException], ...] = (
            asyncio.TimeoutError, ConnectionError, *self.backend.connection_errors)
        try:
            await asyncio.wait_for(change(keys), self.timeout)
        except lost as exc:  # the backend subscribes its keys again on reconnect
            self.failures += 1
            self.logger.warning("%s of %d room keys on %s failed: %s: %s", what,
                                len(keys), self.backend.name, type(exc).__name__, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: logged, and the subscriptions go on
            self.failures += 1
            self.logger.exception("%s of %d room keys on %s failed", what, len(keys),
                                  self.backend.name)
