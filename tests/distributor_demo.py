"""``socketio-adapters distributor-demo`` as the tests run it: on a free port and a
fresh ``local://`` cluster, in a process group of its own, its output in a file;
ready once the page is served, every edge worker has started and both backends
said so. Stopped with SIGTERM to the group, then SIGKILL after a grace period."""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conformance.brokers import HOST, free_port

from .demo_processes import answers, stop_group

__all__ = ["EDGES", "RunningDemo", "running_demo"]

EDGES = 2
START_SECONDS = 60.0


@dataclass
class RunningDemo:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self, pattern: str) -> list[int]:
        """Every process id the log names with ``pattern`` (one group: the pid)."""
        return [int(pid) for pid in re.findall(pattern, self.log_text())]

    def backend_pids(self, title: str) -> list[int]:
        """The pids of the ``title`` ("chat", "counter") backends that got ready, in
        order."""
        return self.pids(rf"{title} backend ready: pid (\d+)")

    def edge_pids(self) -> list[int]:
        return self.pids(r"Started server process \[(\d+)\]")

    def ready(self) -> bool:
        return (answers(self.url) and len(self.edge_pids()) >= EDGES
                and self.log_text().count("Application startup complete") >= EDGES
                and bool(self.backend_pids("chat")) and bool(self.backend_pids("counter")))


@contextlib.contextmanager
def running_demo(folder: Path) -> Iterator[RunningDemo]:
    """The demo, started and ready (its log in ``folder``); stopped on exit."""
    port = free_port()
    cluster = f"local://sioa-dd-test-{secrets.token_hex(4)}"
    log = folder / "distributor-demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "socketio_adapters", "distributor-demo",
             "--edges", str(EDGES), "--host", HOST, "--port", str(port), "--url", cluster],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    demo = RunningDemo(proc, f"http://{HOST}:{port}/", log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not demo.ready():
            assert proc.poll() is None, f"the demo exited:\n{demo.log_text()[-4000:]}"
            assert time.monotonic() < deadline, (
                f"the demo did not start in {START_SECONDS}s:\n{demo.log_text()[-4000:]}")
            time.sleep(0.1)
        yield demo
    finally:
        stop_group(proc)
