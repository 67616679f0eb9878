"""The framing half of a backend: what it sends and what it hands to the manager.

A backend publishes a batch of ``(target, payload)`` pairs (:data:`Outgoing`); small
payloads for one target travel as one frame, large ones as chunks, and log entries
as records, packed where the backend says so (see :mod:`socketio_adapters.framing`
and :mod:`socketio_adapters.storage`). What arrives is unframed and joined again
before it reaches the manager's :data:`Deliver` coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..framing import FRAME, MARKER, Reassembler, pack_frames, unpack_frame
from ..storage import LogSettings, pack_entries

__all__ = ["LOG", "Deliver", "Destination", "Frames", "Outgoing", "RoomTarget"]

_MARKER = bytes((MARKER,))
_FRAME = bytes((FRAME,))

Deliver = Callable[[bytes], Awaitable[None]]
"""The manager's entry point for bytes that arrived from the broker."""


@dataclass(frozen=True, slots=True)
class RoomTarget:
    """The target of a broadcast to one room: every node subscribed to ``key`` (see
    :meth:`~socketio_adapters.backends.base.Backend.subscribe_rooms`). The key is
    made by the cluster layer (:func:`socketio_adapters.cluster.routing.room_key`):
    a short string of lower-case hex digits, safe in any channel, subject, routing
    key or identifier, which the backend maps to its own name."""

    key: str


Destination = str | RoomTarget | None
"""A node uid, :data:`LOG`, a :class:`RoomTarget`, or ``None`` for every node."""

Outgoing = tuple[Destination, bytes]
"""A payload and its :data:`Destination`."""

LOG = "\x00log"
"""The target of a payload to append to the durable log (no node uid looks like it)."""


class Frames:
    """Framing for :class:`~socketio_adapters.backends.base.Backend`, which declares
    the attributes below and implements :meth:`publish`."""

    frame_cap: ClassVar[int]
    log_packs: ClassVar[bool]
    message_limit: int | None
    log: LogSettings | None
    _deliver: Deliver | None
    _reassembler: Reassembler

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        raise NotImplementedError

    async def _dispatch(self, payload: bytes) -> None:
        """Hand the payloads of one broker message to the manager (unpacking frames
        and joining chunks; see :mod:`socketio_adapters.framing`)."""
        deliver = self._deliver
        if deliver is None:
            return
        if payload[:1] == _MARKER:
            if payload[1:2] == _FRAME:
                inner = unpack_frame(payload)
                if inner is not None:
                    for item in inner:
                        await deliver(item)
                    return
            else:
                joined = self._reassembler.feed(payload)
                if joined is None:
                    return
                payload = joined
        await deliver(payload)  # a bad frame reaches the manager, which logs it

    async def send(self, batch: Sequence[Outgoing]) -> None:
        """Publish ``batch``: small payloads for one target go as one frame, those
        over ``message_limit`` as chunks. Log entries become records: one each, or
        packed (``log_packs``)."""
        if any(target == LOG for target, _ in batch):
            if self.log is None:
                raise RuntimeError("a log entry was sent but enable_log() was not called")
            await self.publish(self._frame_around_log(batch))
            return
        if len(batch) > 1 or (self.message_limit is not None
                              and len(batch[0][1]) > self.message_limit):
            batch = pack_frames(batch, self.message_limit, self.frame_cap)
        await self.publish(batch)

    def _frame_around_log(self, batch: Sequence[Outgoing]) -> list[Outgoing]:
        """Frame the runs of pub/sub payloads, and pack the runs of log entries into
        records (``log_packs``), keeping order."""
        out: list[Outgoing] = []
        run: list[Outgoing] = []
        entries: list[bytes] = []

        def flush() -> None:
            if run:
                out.extend(pack_frames(run, self.message_limit, self.frame_cap))
                run.clear()
            if entries:
                bodies = (pack_entries(entries, self.log_record_cap) if self.log_packs
                          else entries)
                out.extend((LOG, body) for body in bodies)
                entries.clear()

        for item in batch:
            if (item[0] == LOG) != bool(entries):
                flush()
            if item[0] == LOG:
                entries.append(item[1])
            else:
                run.append(item)
        flush()
        return out

    @property
    def log_record_cap(self) -> int:
        """Largest packed log record (a lone entry may be larger)."""
        limit = self.message_limit
        return self.frame_cap if limit is None else min(self.frame_cap, limit)
