"""A node's list of its sockets and their rooms (fetch_sockets' local part): one
pass over the rooms, the same answer as python-socketio's get_rooms per socket."""

from __future__ import annotations

import random

import socketio

from socketio_adapters import ClusterManager, create_manager
from socketio_adapters.protocol import Target


async def test_sockets_and_rooms_match_get_rooms_for_every_target() -> None:
    manager = create_manager("memory://local-sockets")
    socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    rng = random.Random(7)
    try:
        await _check(manager, rng)
    finally:
        await manager.stop()


async def _check(manager: ClusterManager, rng: random.Random) -> None:
    sids = [await manager.connect(f"eio{i}", "/") for i in range(300)]
    for sid in sids:
        for room in rng.sample(range(40), rng.randrange(0, 6)):
            await manager.enter_room(sid, "/", f"r{room}")
    await manager.enter_room(sids[0], "/", "big")  # a room larger than the selection
    for target in (Target(), Target(("r1",)), Target(("r2", "r3"), ("r4",)),
                   Target((sids[5],)), Target(("nobody",))):
        got = manager.local.sockets("/", target)
        selected = manager.local.recipients("/", target)
        assert [sid for sid, _ in got] == list(selected)
        assert got == [(sid, manager.get_rooms(sid, "/")) for sid in selected]
    assert manager.local.sockets("/other", Target()) == []
