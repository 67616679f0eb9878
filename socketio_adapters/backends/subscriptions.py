"""The room half of a backend: the room keys this node subscribes to, for the
cluster's ``subscriptions="rooms"`` mode (see :mod:`socketio_adapters.cluster.routing`).

The cluster layer calls :meth:`RoomSubscriptions.subscribe_rooms` and
:meth:`RoomSubscriptions.unsubscribe_rooms` with batches of keys; the set of keys
lives here, so that a backend's listener subscribes every one of them again each
time it (re)connects, before it calls ``ready()``. A backend that routes rooms
(``Capabilities.routes_rooms``) implements :meth:`_subscribe_rooms` and
:meth:`_unsubscribe_rooms` on its live subscription (returning once the broker
confirmed them) and publishes a payload whose target is a
:class:`~socketio_adapters.backends.frames.RoomTarget` to the nodes subscribed to
its key only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

from ..backoff import ConnectionState
from .frames import Deliver

__all__ = ["RoomSubscriptions"]


class RoomSubscriptions:
    """Keeps the room keys of :class:`~socketio_adapters.backends.base.Backend`."""

    state: ConnectionState
    _deliver: Deliver | None

    def __init__(self) -> None:
        self.room_keys: set[str] = set()
        """The keys this node wants (subscribed, or to subscribe on reconnect)."""

    async def subscribe_rooms(self, keys: Collection[str]) -> None:
        """Receive what is published to these room keys from now on: returns once
        the broker confirmed the subscription, or at once while the listener is
        down (it subscribes every key when it is back, before it is ready)."""
        new = sorted(k for k in keys if k not in self.room_keys)
        if not new:
            return
        self.room_keys.update(new)
        if self._deliver is not None and self.state.connected:
            await self._subscribe_rooms(new)

    async def unsubscribe_rooms(self, keys: Collection[str]) -> None:
        """Stop receiving what is published to these room keys."""
        gone = sorted(k for k in keys if k in self.room_keys)
        if not gone:
            return
        self.room_keys.difference_update(gone)
        if self._deliver is not None and self.state.connected:
            await self._unsubscribe_rooms(gone)

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not route rooms")

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not route rooms")

    async def _subscribe_every_room(
            self, subscribe: Callable[[Sequence[str]], Awaitable[None]],
            done: Collection[str] = ()) -> None:
        """For a listener that (re)connects: subscribe every key not in ``done``
        with ``subscribe``, again until none is missing, so that a key added while
        it waited is not left out when it calls ``ready()`` right after (with no
        await in between)."""
        subscribed = set(done)
        while True:
            missing = sorted(self.room_keys - subscribed)
            if not missing:
                return
            await subscribe(missing)
            subscribed.update(missing)
