"""Noticing a listening connection gone silent (a half-open one: a NAT or balancer
that dropped it stays silent forever), without a timer per read.

A listener calls :meth:`SilenceWatch.heard` whenever something arrives; a timer looks
every half ``interval`` whether anything did since its last look, and after each
interval of silence calls ``on_silence`` with how many intervals have passed (1:
ask the broker; 2: no answer came within another interval). The reads themselves
wait on the connection alone, so nothing is added to the time it takes to wake a
listener when a message comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["SilenceWatch"]


class SilenceWatch:
    """Calls ``on_silence(n)`` after ``n`` intervals with nothing heard (see the
    module doc) until :meth:`stop`; anything heard starts the count again."""

    def __init__(self, interval: float, on_silence: Callable[[int], None]) -> None:
        self.interval = interval
        self.on_silence = on_silence
        self._step = interval / 2
        self._heard = True
        self._silent_looks = 0
        self._handle: asyncio.TimerHandle | None = \
            asyncio.get_running_loop().call_later(self._step, self._look)

    def heard(self) -> None:
        self._heard = True

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _look(self) -> None:
        if self._heard:
            self._heard = False
            self._silent_looks = 0
        else:
            self._silent_looks += 1
            if self._silent_looks % 2 == 0:
                self.on_silence(self._silent_looks // 2)
        if self._handle is not None:  # not stopped by on_silence
            self._handle = asyncio.get_running_loop().call_later(self._step, self._look)
