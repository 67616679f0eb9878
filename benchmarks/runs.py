"""How a benchmark that starts processes runs to its end: SIGTERM cancels it like
Ctrl-C, and whatever happens, every child process it started is killed before it
returns."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["Killable", "cancel_on_sigterm", "load_average", "log", "run_to_end"]

T = TypeVar("T")


class Killable(Protocol):
    def kill_all_now(self) -> None: ...


def cancel_on_sigterm() -> None:
    """Make SIGTERM cancel the running task (call it in the benchmark's main task)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def run_to_end(main: Coroutine[Any, Any, T], running: list[Any]) -> T | None:
    """``asyncio.run(main)``; None when it was interrupted (Ctrl-C or SIGTERM, said on
    stderr). Every :class:`Killable` in ``running`` is killed at the end."""
    try:
        return asyncio.run(main)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return None
    finally:
        for children in running:
            children.kill_all_now()


def load_average() -> str:
    """The load averages over 1, 5 and 15 minutes, for a benchmark's first and last
    lines."""
    load = os.getloadavg()
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def log(began: float, text: str) -> None:
    """One progress line, with the seconds since ``began`` (``time.monotonic()``)."""
    print(f"[{time.monotonic() - began:6.1f}s] {text}", flush=True)
