"""Log offsets: which entry of which record.

A backend's log is a sequence of *records* (a stream entry, a stream message, a
row, a Kafka record), each named by a *key* the broker gives it: one or two whole
numbers (a sequence; Redis's ``ms-seq``; Kafka's partition offset and timestamp),
increasing along the log. A record holds one entry, or several packed together
(see :mod:`.packing`). An offset names one entry: ``"{key}.{index}"``, the key's
numbers joined by ``-``, e.g. ``"42.0"``, ``"1700000000000-3.0"``, ``"7.12"``. The
same entry has the same offset on every node, and offsets compare in log order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Offset", "OffsetCodec", "RecordKey"]

RecordKey = tuple[int, ...]
"""A record's key: one or two whole numbers, ordered as the log is."""

_OFFSET = re.compile(r"(0|[1-9][0-9]{0,19})(?:-(0|[1-9][0-9]{0,19}))?\.(0|[1-9][0-9]{0,5})")


@dataclass(frozen=True, order=True)
class Offset:
    """Entry ``index`` of the record ``key``."""

    key: RecordKey
    index: int


class OffsetCodec:
    """Formats and strictly parses the offsets of one backend's log: keys of
    ``parts`` numbers, each at most ``key_max``; no sign, blank or leading zero."""

    def __init__(self, parts: int = 1, key_max: int = 2**63 - 1) -> None:
        if parts not in (1, 2):
            raise ValueError("a record key has one or two parts")
        self.parts = parts
        self.key_max = key_max

    def format(self, key: RecordKey, index: int) -> str:
        return f"{'-'.join(map(str, key))}.{index}"

    def parse(self, text: str) -> Offset | None:
        """The offset ``text`` names, or None when it is not one of this log's
        (whether that entry exists is for the log to say)."""
        match = _OFFSET.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            return None
        first, second, index = match.groups()
        key = (int(first),) if second is None else (int(first), int(second))
        if len(key) != self.parts or any(part > self.key_max for part in key):
            return None
        return Offset(key, int(index))
