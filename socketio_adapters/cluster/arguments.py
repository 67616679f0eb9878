"""python-socketio's argument conventions, turned into the cluster's types."""

from __future__ import annotations

from typing import Any

from ..protocol import Target

__all__ = ["Room", "as_args", "as_rooms", "target"]

Room = str | list[str] | tuple[str, ...] | None
"""A room, several rooms, or None (python-socketio's ``to``/``room``/``skip_sid``)."""


def as_args(data: Any) -> list[Any]:
    """python-socketio's convention: a tuple is several arguments, None is none."""
    if isinstance(data, tuple):
        return list(data)
    if data is None:
        return []
    return [data]


def as_rooms(room: Any) -> tuple[str, ...]:
    if room is None:
        return ()
    if isinstance(room, str):
        return (room,)
    return tuple(r for r in room if r is not None)


def target(to: Any = None, skip: Any = None) -> Target:
    """The sockets in any of ``to`` (every socket when None), less any of ``skip``
    (sids or rooms: socket.io's ``except``)."""
    return Target(as_rooms(to), as_rooms(skip))
