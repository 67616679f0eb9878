"""The event loop a benchmark's Python processes run on: asyncio's own, or uvloop (the
libuv loop that uvicorn picks by itself when it is installed, as with
``uvicorn[standard]``). Every Python process of one run uses the same one, so the
ratios between our nodes, python-socketio's and the raw client compare like with
like; Node.js runs on libuv whatever is chosen."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "loop_name", "run"]

T = TypeVar("T")

LOOPS = ("asyncio", "uvloop")


def run(main: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    if loop == "asyncio":
        return asyncio.run(main)
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError as exc:  # the demo extra brings it (uvicorn[standard])
            main.close()
            raise SystemExit("--loop uvloop: uvloop is not installed "
                             "(pip install uvloop, or the package's demo extra)") from exc
        return uvloop.run(main)
    main.close()
    raise ValueError(f"unknown loop {loop!r}; choose from {', '.join(LOOPS)}")


def loop_name() -> str:
    """The running loop's kind, for a benchmark's JSON: ``uvloop`` or ``asyncio``."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
