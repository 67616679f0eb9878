"""Real servers with several worker processes on one port form one cluster on
``local://``, with no broker: ``uvicorn --workers 3``, ``gunicorn -k
uvicorn_worker.UvicornWorker -w 3``, ``hypercorn --workers 3``, and three processes
started by hand (each ``uvicorn`` on its own port, the same URL).

For each: every worker counts 3 servers; websocket clients on different workers get
a broadcast from any worker, and a room change made by one worker for a sid on
another; a client whose transport dropped comes back (on whichever worker the kernel
gives it) with its sid and every missed event, in order, once; and the worker that
hosts the hub, killed with SIGKILL, is dropped within the heartbeat timeout while the
others keep serving. What the server does next differs, and is asserted:
gunicorn and uvicorn start a new worker, which joins (3 again); processes started by
hand stay 2; hypercorn stops every worker once one dies, so there is nothing left
to serve (the survivors' part is shown by the others).

Clients are websocket-only here; long-polling clients, which need no sticky routing
either, are tests/test_no_sticky.py's.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conformance.cluster import eventually
from conformance.recovery_clients import PythonClient
from socketio_adapters.backends.local.folder import RuntimeFolder

from .servers import DEADLINE, WORKERS, Servers, deployed

KINDS = ("uvicorn", "gunicorn", "hypercorn", "by hand")
AFTER_A_WORKER_DIES = {"uvicorn": "replaced", "gunicorn": "replaced",
                       "hypercorn": "all stop", "by hand": "the others go on"}
"""What each server does when one worker dies: uvicorn and gunicorn start a new one;
hypercorn (0.18, hypercorn/run.py) stops every worker once one exits with an error."""


@pytest.fixture(params=KINDS)
async def servers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Servers]:
    async with deployed(request.param, tmp_path) as found:
        yield found


async def _cluster_of(servers: Servers, count: int, what: str) -> dict[int, int]:
    """Wait until ``count`` workers answer and each counts ``count`` servers."""
    last: dict[int, int] = {}

    async def probe() -> bool:
        nonlocal last
        last = await asyncio.to_thread(servers.answers)
        return len(last) == count and set(last.values()) == {count}

    await eventually(probe, True, f"{servers.kind}: {what} (last: pid -> count {last})",
                     timeout=DEADLINE)
    return last


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


async def _clients_on_workers(servers: Servers, workers: int, scratch: Path,
                              most: int = 60) -> list[tuple[PythonClient, int]]:
    """Connect websocket clients, ten at once, until they sit on ``workers``
    different workers. Which worker takes a connection is a race: the workers share
    the listening socket, and the first one woken accepts every connection waiting
    (asyncio's accept loop), so on a busy machine one worker may win every batch
    (60 clients on one worker, seen once in a full run). So after a batch that left
    them on fewer workers, the next one connects while the worker that has them is
    held (``hold``: its event loop blocked until released), and another accepts."""
    clients: list[tuple[PythonClient, int]] = []

    async def one(i: int) -> tuple[PythonClient, int]:
        client = PythonClient("websocket")
        await client.connect(f"http://127.0.0.1:{servers.ports[i % len(servers.ports)]}")
        return client, await client.call("whereami")

    async def batch() -> None:
        clients.extend(await asyncio.gather(*(one(len(clients) + i) for i in range(10))))

    while len(clients) < most:
        if clients and len(servers.ports) == 1 and len({p for _, p in clients}) == 1:
            flag = str(scratch / f"hold-{len(clients)}")
            held = asyncio.ensure_future(clients[0][0].call("hold", flag))
            try:
                await eventually(functools.partial(os.path.exists, f"{flag}.held"), True,
                                 "the worker with every client is held", timeout=DEADLINE)
                await batch()
            finally:
                _touch(f"{flag}.release")
                await asyncio.wait_for(held, DEADLINE)
        else:
            await batch()
        if len({pid for _, pid in clients}) >= workers:
            return clients
    raise AssertionError(f"{len(clients)} clients all landed on "
                         f"{len({p for _, p in clients})} workers")


async def test_workers_form_one_cluster(servers: Servers, tmp_path: Path) -> None:
    pids = await _cluster_of(servers, WORKERS, "every worker counts every worker")
    clients = await _clients_on_workers(servers, 2, tmp_path)
    try:
        # a broadcast from whichever worker takes the request reaches every client
        for n in range(3):
            await asyncio.to_thread(servers.http, "/emit", f"all-{n}".encode())
            for client, _ in clients:
                assert await client.next("news") == f"all-{n}"
        # a worker puts a sid of another worker in a room
        (first, first_pid), (other, _) = clients[0], next(
            c for c in clients if c[1] != clients[0][1])
        assert await first.call("join", {"sid": other.sid(), "room": "r"}) == first_pid
        await asyncio.to_thread(servers.http, "/emit?room=r", b"room")
        await asyncio.to_thread(servers.http, "/emit", b"after")
        for client, _ in clients:
            wanted = ["room", "after"] if client is other else ["after"]
            assert [await client.next("news") for _ in wanted] == wanted
        await _recovery_across_workers(servers)
        for client, _ in clients:  # they got the recovery test's broadcasts too
            assert await client.take("news", len(RECOVERY_NEWS)) == RECOVERY_NEWS
        await _hub_host_killed(servers, set(pids), clients)
    finally:
        for client, _ in clients:
            await client.close()


MISSED = [f"missed-{n}" for n in range(5)]
RECOVERY_NEWS = ["before", *MISSED, "marker"]


async def _recovery_across_workers(servers: Servers) -> None:
    client = PythonClient("websocket")
    await client.connect(f"http://127.0.0.1:{servers.ports[0]}")
    try:
        sid = client.sid()
        await asyncio.to_thread(servers.http, "/emit", b"before")
        assert await client.next("news") == "before"
        ws = client.sio.eio.ws
        assert ws is not None
        await ws.close()  # the transport drops; the server keeps the session
        await asyncio.wait_for(client.disconnected.wait(), 10)
        for text in MISSED:
            await asyncio.to_thread(servers.http, "/emit", text.encode())
        await client.connect(f"http://127.0.0.1:{servers.ports[-1]}")
        assert client.recovered() and client.sid() == sid
        assert await client.take("news", len(MISSED)) == MISSED
        await asyncio.to_thread(servers.http, "/emit", b"marker")
        assert await client.next("news") == "marker"  # nothing twice before it
    finally:
        await client.close()


async def _hub_host_killed(servers: Servers, pids: set[int],
                           clients: list[tuple[PythonClient, int]]) -> None:
    host = RuntimeFolder(servers.url).hub_pid()
    assert host in pids, (host, pids)
    os.kill(host, signal.SIGKILL)
    killed_at = time.monotonic()
    survivors = [(c, p) for c, p in clients if p != host]
    after = AFTER_A_WORKER_DIES[servers.kind]
    if after == "all stop":
        await asyncio.to_thread(servers.procs[0].wait, DEADLINE)
        return
    if after == "replaced":
        answers = await _cluster_of(servers, WORKERS, "a new worker replaces the killed one")
    else:
        answers = await _cluster_of(servers, WORKERS - 1, "the survivors drop the killed one")
    assert host not in answers
    new_host = RuntimeFolder(servers.url).hub_pid()
    assert new_host in answers and new_host != host
    assert time.monotonic() - killed_at < DEADLINE
    await asyncio.to_thread(servers.http, "/emit", b"after the kill")
    for client, _ in survivors:
        assert await client.next("news") == "after the kill"
