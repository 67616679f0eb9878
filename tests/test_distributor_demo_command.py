"""``socketio-adapters distributor-demo`` without a browser: the command starts the
edge workers, the hub and both backends, serves the page, and a Python client uses
both namespaces through one edge worker, every answer labelled with the processes
that handled it; SIGTERM to the command stops every process it started."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from socketio_adapters import AsyncClient

from .distributor_demo import RunningDemo, running_demo

WAIT = 20.0


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[RunningDemo]:
    with running_demo(tmp_path) as running:
        yield running


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_page_and_both_namespaces_through_one_edge(demo: RunningDemo) -> None:
    page = _get(demo.url)
    assert "distributor demo" in page and 'id="counter"' in page and 'id="chat"' in page
    assert 'io("/counter"' in _get(demo.url + "static/distributor.js")
    (chat_pid,), (counter_pid,) = demo.backend_pids("chat"), demo.backend_pids("counter")
    edges = set(demo.edge_pids())

    received: dict[str, asyncio.Queue[Any]] = {"chat": asyncio.Queue(),
                                               "count": asyncio.Queue()}
    client = AsyncClient()
    client.on("chat", received["chat"].put_nowait, namespace="/chat")
    client.on("count", received["count"].put_nowait, namespace="/counter")
    client.on("sync", lambda: None, namespace="/counter")
    await client.connect(demo.url, namespaces=["/chat", "/counter"],
                         auth={"name": "py"}, wait_timeout=WAIT)
    try:
        chat_hello = await client.call("hello", namespace="/chat", timeout=WAIT)
        counter_hello = await client.call("hello", namespace="/counter", timeout=WAIT)
        assert chat_hello["name"] == counter_hello["name"] == "py"
        assert chat_hello["backend"] == chat_pid
        assert counter_hello["backend"] == counter_pid
        # one connection: both namespaces through the same edge worker
        assert chat_hello["edge"] == counter_hello["edge"] and chat_hello["edge"] in edges
        assert (counter_hello["total"], counter_hello["score"]) == (0, 0)

        ack = await client.call("chat", {"text": "hi"}, namespace="/chat", timeout=WAIT)
        message = await asyncio.wait_for(received["chat"].get(), WAIT)
        assert message["id"] == ack["id"]
        assert (message["name"], message["text"]) == ("py", "hi")
        assert (message["backend"], message["edge"]) == (chat_pid, chat_hello["edge"])

        for expected in (1, 2):
            ack = await client.call("click", namespace="/counter", timeout=WAIT)
            assert (ack["total"], ack["score"]) == (expected, expected)
            count = await asyncio.wait_for(received["count"].get(), WAIT)
            assert (count["total"], count["name"], count["backend"]) == (
                expected, "py", counter_pid)
        assert count["leaders"] == [{"name": "py", "score": 2}]
    finally:
        await client.disconnect()


def test_sigterm_stops_every_process(demo: RunningDemo) -> None:
    started = demo.pids(r"started [a-z ]+ \(pid (\d+)\)") + demo.edge_pids()
    assert len(started) == 6, demo.log_text()  # hub, 2 backends, uvicorn, 2 workers
    assert all(_alive(pid) for pid in started)
    demo.proc.send_signal(signal.SIGTERM)  # the command alone, not its group
    try:
        status = demo.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the command did not stop in 30s:\n{demo.log_text()[-4000:]}")
    assert status == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in started if _alive(pid)] == [], demo.log_text()[-4000:]
