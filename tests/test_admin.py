"""The Socket.IO Admin UI (python-socketio's ``sio.instrument()``) names each server by
its manager's ``host_id``: every node of a cluster must show as a server of its own,
even when they share a host and a process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import socketio
from engineio.async_socket import AsyncSocket

from conformance.cluster import Node, eventually


def _restore_engineio(saved: dict[str, Any]) -> None:
    """Undo instrument()'s patches of engine.io's socket class. They are made once per
    process (one node per process, as in production): a second instrumented server
    in the same process would make them call themselves for ever. The Admin UI's
    server stats come from each server's own hooks, which stay."""
    for name in set(vars(AsyncSocket)) - set(saved):
        delattr(AsyncSocket, name)
    for name in ("handle_post_request", "_websocket_handler", "_send_ping"):
        setattr(AsyncSocket, name, saved[name])


async def test_admin_ui_shows_each_node_as_a_server_of_its_own() -> None:
    saved = dict(vars(AsyncSocket))
    nodes = [Node("memory://admin-ui", heartbeat_interval=0.2, heartbeat_timeout=2.0)
             for _ in range(2)]
    admins: list[Any] = []
    clients: list[socketio.AsyncClient] = []
    seen: list[set[str]] = []
    try:
        for node in nodes:
            admins.append(node.sio.instrument(auth=False, server_stats_interval=0.2))
            _restore_engineio(saved)
            await node.start()
        for node in nodes:
            ids: set[str] = set()
            client = socketio.AsyncClient(reconnection=False)

            def record(stats: dict[str, Any], ids: set[str] = ids) -> None:
                ids.add(stats["serverId"])

            client.on("server_stats", record, namespace="/admin")
            clients.append(client)
            await client.connect(node.url, namespaces=["/admin"], transports=["websocket"],
                                 wait_timeout=10)
            seen.append(ids)
        # each node's stats reach the admin clients of every node, through the cluster
        for ids in seen:
            await eventually(lambda ids=ids: len(ids), 2,  # type: ignore[misc]
                             "an admin client sees two servers, each under its own id")
        assert seen[0] == seen[1] == {node.manager.host_id for node in nodes}
    finally:
        for admin in admins:
            await asyncio.wait_for(admin.shutdown(), 10)
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 5)
        for node in nodes:
            await asyncio.wait_for(node.stop(), 15)
        _restore_engineio(saved)
