"""What the demo tests share: whether a page answers, and stopping a command's whole
process group (uvicorn's parent and workers, the distributor demo's backends)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.request

__all__ = ["answers", "stop_group"]


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
        return bool(reply.status == 200)
    return False


def stop_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL whatever is left after
    ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
