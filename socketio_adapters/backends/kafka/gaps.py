"""Holes in what the listener is given of the log partition.

The log partition's offsets have no holes (no compaction, no transactions), yet a
broker may give out a record before an earlier one is readable: tansu does, with
appends from several producers at once. A listener that took the later record would
move its position past one it never delivered, and that entry would be lost for every
client of its node, a restore included. The same holds for each partition of the
channel topic, whose records several nodes append at once. :class:`Contiguity`
tells the listener to read again from the missing offset instead, for a bounded time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["GAP_PAUSE", "GAP_WAIT_SECONDS", "Contiguity"]

GAP_WAIT_SECONDS = 2.0
"""How long the listener reads again from a missing offset before it goes on
without that record."""
GAP_PAUSE = 0.005
"""The listener's pause before it reads again from a missing offset."""


class Contiguity:
    """The offset the listener's next log record should have, and a hole's deadline."""

    def __init__(self, wait: float = GAP_WAIT_SECONDS) -> None:
        self.wait = wait
        self.expected: int | None = None
        """None after a seek: the first record read then may follow a deleted one."""
        self.lost = 0
        """Holes given up on (each a record never given to the listener)."""
        self._hole: tuple[int, float] | None = None

    def restart(self) -> None:
        """The listener seeks anew: whatever comes first is taken."""
        self.expected = None
        self._hole = None

    def take(self, offset: int, now: float) -> bool:
        """Whether to feed the record at ``offset`` (read at ``now``, monotonic
        seconds). False: a record before it is missing; read again from
        :attr:`expected`. After ``wait`` seconds of the same hole it is taken
        anyway (:attr:`lost` counts it; the caller logs)."""
        expected = self.expected
        if expected is not None and offset > expected:
            hole = self._hole
            if hole is None or hole[0] != expected:
                self._hole = (expected, now + self.wait)
                return False
            if now < hole[1]:
                return False
            self.lost += 1
        self._hole = None
        self.expected = offset + 1
        return True

    def readable(self, records: Sequence[Any], now: float) -> tuple[list[Any], bool]:
        """The records of one partition (aiokafka's, with ``offset``) to take now,
        and whether to read again from :attr:`expected` (a hole cut them short)."""
        for index, record in enumerate(records):
            if not self.take(int(record.offset), now):
                return list(records[:index]), True
        return list(records), False
