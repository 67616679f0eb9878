"""The processes of ``socketio-adapters distributor-demo``, started and watched.

One :class:`Supervisor` starts the edge (uvicorn with its workers) and each backend
as child processes sharing its stdout and stderr, and waits. A backend that exits
(crashes, or is killed to see what happens) is started again after
:data:`RESTART_DELAY`: its sockets wait at the edge meanwhile and move to the new
process. When the edge exits, or on SIGINT / SIGTERM, every child gets SIGTERM
(the last started first), then SIGKILL after :data:`GRACE`. On Linux each child
also gets SIGTERM when the supervisor dies without that chance
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

__all__ = ["GRACE", "READY_SECONDS", "RESTART_DELAY", "Child", "Supervisor"]

RESTART_DELAY = 1.0
"""Seconds between a backend's exit and its replacement."""
READY_SECONDS = 10.0
GRACE = 10.0
"""Seconds the children have to stop after SIGTERM."""
POLL = 0.2
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A child process: ``argv``, whether it is started again when it exits, and
    ``ready(pid)``, true once it may be relied on (the next child starts then, or
    after :data:`READY_SECONDS`)."""

    name: str
    argv: Sequence[str]
    restart: bool = False
    ready: Callable[[int], bool] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    exited_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            list(self.argv), stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.exited_at = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Runs ``children`` until the first that may not restart exits or a signal
    comes; :meth:`run` returns the exit status."""

    def __init__(self, children: Sequence[Child],
                 say: Callable[[str], None] = print) -> None:
        self.children = list(children)
        self.say = say
        self.stopping = False
        self.status = 0

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.status = 128 + signum if signum != signal.SIGINT else 130

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._signalled)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.children:
                self._start(child, "started")
            while not self.stopping:
                self._watch()
                time.sleep(POLL)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.status

    def _start(self, child: Child, what: str) -> None:
        child.start()
        self.say(f"{what} {child.name} (pid {child.pid})")
        deadline = time.monotonic() + READY_SECONDS
        while child.ready is not None and child.pid is not None and not self.stopping:
            if child.ready(child.pid) or not child.running():
                return
            if time.monotonic() > deadline:
                self.say(f"{child.name} not ready after {READY_SECONDS:g}s; going on")
                return
            time.sleep(POLL / 4)

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.running() or self.stopping:
                continue
            code = None if child.proc is None else child.proc.returncode
            if not child.restart:
                self.say(f"{child.name} exited (status {code}): stopping everything")
                self.stopping, self.status = True, 1
                return
            if child.exited_at is None:
                child.exited_at = now
                self.say(f"{child.name} (pid {child.pid}) exited (status {code}); "
                         f"starting another in {RESTART_DELAY:g}s")
            elif now - child.exited_at >= RESTART_DELAY:
                self._start(child, "restarted")

    def stop(self) -> None:
        """SIGTERM to every child still running, the last started first (the hub,
        started first, outlives the nodes it serves), SIGKILL to any left after
        :data:`GRACE` in all."""
        deadline = time.monotonic() + GRACE
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {GRACE:g}s: killed")
                proc.kill()
                proc.wait()
