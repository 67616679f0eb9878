"""Reading wire fields: the checks every payload shares (see :mod:`.payloads`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MalformedMessage

__all__ = ["as_map", "request_id_of"]


def as_map(data: Any) -> Mapping[str, Any]:
    """``data`` as a map; raises :class:`MalformedMessage` for anything else."""
    if not isinstance(data, dict):
        raise MalformedMessage("payload is not a map")
    return data


def request_id_of(data: Mapping[str, Any], required: bool = False) -> str | None:
    """The ``requestId`` field (None when absent and not ``required``)."""
    value = data.get("requestId")
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise MalformedMessage("bad requestId")
    return value
