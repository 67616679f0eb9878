"""What a benchmark ran on, recorded beside its figures: the interpreter, the
machine, the packages and the source tree's commit."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["REPO_ROOT", "each_backend", "each_broker", "environment"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("python-socketio", "python-engineio", "socketio-adapters", "redis", "hiredis",
            "aio-pika", "aiormq", "nats-py", "aiokafka", "asyncpg", "aiohttp", "msgpack")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def environment() -> dict[str, Any]:
    packages = {d: _version(d) for d in PACKAGES}
    if packages["socketio-adapters"] is None:  # used from the source tree
        import socketio_adapters

        packages["socketio-adapters"] = f"{socketio_adapters.__version__} (source tree)"
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "packages": packages,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "event_loop": "asyncio (default)",
    }


async def each_backend(names: str, run: Callable[[str, str], Awaitable[dict[str, Any]]]
                       ) -> tuple[dict[str, Any], bool]:
    """``run(name, url)`` for each backend of the comma-separated ``names``, on a
    broker started from local binaries for the run (``local://`` in a fresh folder).
    A failure is reported in the results, not raised; returns the results by name
    and whether any failed."""

    async def without_pids(name: str, url: str, pids: list[int]) -> dict[str, Any]:
        return await run(name, url)

    return await each_broker(names, without_pids)


async def each_broker(names: str,
                      run: Callable[[str, str, list[int]], Awaitable[dict[str, Any]]]
                      ) -> tuple[dict[str, Any], bool]:
    """:func:`each_backend`, with ``run(name, url, pids)`` also given the pids of the
    broker's processes (none for ``local://``), for CPU accounting."""
    from conformance.brokers import broker_for

    results: dict[str, Any] = {}
    failed = False
    for name in names.split(","):
        broker = None
        try:
            if name == "local":
                url = f"local://{tempfile.mkdtemp(prefix='sioa-bench-')}/cluster"
            else:
                broker = broker_for(name)
                await asyncio.to_thread(broker.start)
                url = broker.url
            results[name] = await run(name, url, _broker_pids(broker))
        except Exception as exc:
            failed = True
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: FAILED: {exc!r}", flush=True)
        finally:
            if broker is not None:
                await asyncio.to_thread(broker.stop)
    return results, failed


def _broker_pids(broker: Any) -> list[int]:
    """The broker's own processes (several for a Redis cluster); their descendants
    (the Erlang VM, Postgres's backends) are found from them."""
    procs = getattr(broker, "_procs", None) or [getattr(broker, "_proc", None)]
    return [int(p.pid) for p in procs if p is not None]
