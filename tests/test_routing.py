"""Per-room subscriptions: room keys, the subscription bookkeeping (batches, linger,
sid rooms) and where a broadcast goes, over a recording backend and the memory one."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest

from socketio_adapters import create_manager
from socketio_adapters.backends.base import Backend, Capabilities, Outgoing, RoomTarget
from socketio_adapters.cluster.routing import SID_LENGTH, RoomRouting, room_key, routable
from socketio_adapters.errors import ConfigurationError
from socketio_adapters.protocol import Target

LOG = logging.getLogger("test_routing")


class Recording(Backend):
    """A backend that routes rooms and records every (un)subscription batch."""

    name: ClassVar[str] = "recording"
    capabilities: ClassVar[Capabilities] = Capabilities(routes_rooms=True)

    def __init__(self, **options: Any) -> None:
        super().__init__("recording://", **options)
        self.batches: list[tuple[str, list[str]]] = []
        self.gate: asyncio.Event | None = None

    async def _run(self, ready: Callable[[], None]) -> None:
        ready()
        await asyncio.Event().wait()

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        pass

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(("sub", list(keys)))

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        self.batches.append(("unsub", list(keys)))


async def _started() -> Recording:
    backend = Recording()

    async def deliver(_: bytes) -> None:
        pass

    await backend.start("node", deliver)
    return backend


def test_a_key_is_short_hex_and_depends_on_namespace_and_room() -> None:
    keys = {room_key(ns, room) for ns in ("/", "/chat") for room in ("a", "b", "a b.c*>")}
    assert len(keys) == 6
    for key in keys:
        assert re.fullmatch(r"[0-9a-f]{20}", key)
    assert room_key("/", "x" * 10_000) == room_key("/", "x" * 10_000)
    assert len(room_key("/", "é" * 1000 + "\ud800")) == 20  # any string, even unpaired


def test_sid_shaped_rooms_and_non_strings_are_not_routed() -> None:
    assert not routable("A" * SID_LENGTH)
    assert not routable(None)
    assert not routable(42)
    assert routable("lobby")
    assert routable("A" * (SID_LENGTH + 1))


def test_a_backend_that_cannot_route_is_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="cannot route"):
        create_manager("kafka://127.0.0.1:9092", subscriptions="rooms")
    with pytest.raises(ConfigurationError, match="subscriptions"):
        create_manager("memory://", subscriptions="some")


def test_a_broadcast_to_one_routable_room_goes_to_its_key() -> None:
    routing = RoomRouting(Recording(), "rooms", 1.0, LOG)
    assert routing.target("/", Target(("lobby",))) == RoomTarget(room_key("/", "lobby"))
    assert routing.target("/", Target(("lobby",), ("x",))) == RoomTarget(
        room_key("/", "lobby"))  # except rooms are applied by the receivers
    assert routing.target("/", Target(())) is None
    assert routing.target("/", Target(("a", "b"))) is None
    assert routing.target("/", Target(("S" * SID_LENGTH,))) is None
    assert RoomRouting(Recording(), "all", 1.0, LOG).target("/", Target(("a",))) is None


async def test_joins_of_one_turn_are_one_batch_and_settle_after_it() -> None:
    backend = await _started()
    routing = RoomRouting(backend, "rooms", 5.0, LOG)
    backend.gate = asyncio.Event()
    routing.joined("/", "a")
    routing.joined("/", "b")
    routing.joined("/", "b")  # once
    routing.joined("/", "S" * SID_LENGTH)  # a sid room: never subscribed
    routing.joined("/", None)
    settled = asyncio.ensure_future(routing.settled())
    await asyncio.sleep(0.01)
    assert not settled.done()  # waits for the broker
    backend.gate.set()
    await asyncio.wait_for(settled, 5)
    assert backend.batches == [("sub", sorted([room_key("/", "a"), room_key("/", "b")]))]
    await routing.stop()
    await backend.stop()


async def test_the_last_leave_unsubscribes_after_the_linger_unless_one_joins() -> None:
    backend = await _started()
    routing = RoomRouting(backend, "rooms", 5.0, LOG, linger=0.05)
    routing.joined("/", "a")
    routing.joined("/", "b")
    await routing.settled()
    routing.left("/", "a")
    routing.left("/", "b")
    routing.joined("/", "b")  # back before the linger ended: kept
    await asyncio.sleep(0.2)
    assert backend.batches[1:] == [("unsub", [room_key("/", "a")])]
    assert backend.room_keys == {room_key("/", "b")}
    await routing.stop()
    await backend.stop()


async def test_keys_wanted_while_the_broker_is_away_wait_for_the_listener() -> None:
    backend = Recording()
    await backend.subscribe_rooms(["k1"])  # not started: kept, not sent
    assert backend.room_keys == {"k1"} and backend.batches == []


async def test_the_room_table_drives_the_subscriptions() -> None:
    manager = create_manager("memory://routing-table", subscriptions="rooms")
    await manager.start()
    try:
        manager.basic_enter_room("S" * SID_LENGTH, "/", None, eio_sid="e1")
        manager.basic_enter_room("S" * SID_LENGTH, "/", "S" * SID_LENGTH, eio_sid="e1")
        manager.basic_enter_room("T" * SID_LENGTH, "/", None, eio_sid="e2")
        for sid in ("S" * SID_LENGTH, "T" * SID_LENGTH):
            await manager.enter_room(sid, "/", "lobby")
        assert manager.backend.room_keys == {room_key("/", "lobby")}
        assert manager.stats()["room_subscriptions"] == 1
        await manager.leave_room("S" * SID_LENGTH, "/", "lobby")
        assert manager.routing.wanted == {room_key("/", "lobby")}  # one member left
        await manager.disconnect("T" * SID_LENGTH, "/")
        assert manager.routing.wanted == set()
    finally:
        await manager.stop()


async def test_recovery_turns_routing_off() -> None:
    manager = create_manager("memory://routing-recovery", subscriptions="rooms",
                             connection_state_recovery=True)
    assert not manager.routing.enabled
    assert manager.routing.target("/", Target(("lobby",))) is None


async def test_room_changes_after_a_stop_start_no_work_and_a_restart_subscribes() -> None:
    """Sockets that leave their rooms as the server closes (after the manager stopped)
    leave no task behind, and a join waits for nothing; after a restart the node
    subscribes the rooms it holds."""
    manager = create_manager(f"memory://stop-{secrets.token_hex(4)}",
                             subscriptions="rooms")
    await manager.start()
    manager.routing.joined("/", "kept")
    await manager.routing.settled()
    assert manager.stats()["room_subscriptions"] == 1
    await manager.stop()
    manager.routing.left("/", "kept")
    manager.routing.joined("/", "late")
    assert manager.routing._task is None
    await asyncio.wait_for(manager.routing.settled(), 1.0)
    await manager.start()
    try:
        await manager.routing.settled()
        assert manager.routing.wanted == {room_key("/", "late")}
        assert manager.routing.wanted <= manager.backend.room_keys
    finally:
        await manager.stop()


async def test_a_node_routes_only_while_every_live_node_announced_that_it_routes() -> None:
    manager = create_manager(f"memory://mixed-{secrets.token_hex(4)}",
                             subscriptions="rooms")
    routing = manager.routing
    selected = Target(("chat",))
    assert routing.traits() == {"routes_rooms": True}
    assert routing.target("/", selected) == RoomTarget(room_key("/", "chat"))
    routing.peers_changed({"a": {"routes_rooms": True}, "b": None})  # b: mode all
    assert routing.target("/", selected) is None
    routing.peers_changed({"a": {"routes_rooms": True, "serves": ["/"]}})  # b left
    assert routing.target("/", selected) == RoomTarget(room_key("/", "chat"))
    routing.peers_changed({"a": {"routes_rooms": "yes"}})  # not the announcement
    assert routing.target("/", selected) is None


def test_heartbeats_carry_the_traits_beside_the_application_s_announcement() -> None:
    heartbeats = create_manager("memory://said").heartbeats
    assert heartbeats.said() is None
    heartbeats.announcement = {"serves": ["/chat"]}
    assert heartbeats.said() == {"serves": ["/chat"]}
    heartbeats.traits = {"routes_rooms": True}
    assert heartbeats.said() == {"routes_rooms": True, "serves": ["/chat"]}
