"""The Redis backend on a Redis Cluster (``redis+cluster://``): its URL and names with
no broker; then, against the local three-master cluster (conformance/brokers/
redis_cluster.py), the clear errors for bad seeds, a plain Redis and a dead cluster;
applications whose slot is on each master, rooms of every master's slot range, a
recovering client; and a reshard that moves an application's slot to another master
while it runs."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis")

import redis.asyncio as aioredis
from redis.crc import key_slot

from conformance.brokers import HOST, LocalBroker, RedisClusterBroker, available, broker_for
from conformance.cluster import DEADLINE, Node, eventually
from conformance.conftest import BackendUnderTest
from conformance.test_recovery import Scenario
from socketio_adapters import (
    AuthenticationFailed,
    BrokerUnavailable,
    ConfigurationError,
    TLSVerificationFailed,
    create_backend,
)
from socketio_adapters.backends.redis import RedisBackend
from socketio_adapters.backends.redis.cluster import (
    RedisClusterBackend,
    parse_cluster_url,
)
from socketio_adapters.hosts import HostPort
from socketio_adapters.registry import backend_class
from tests.certs import make_authority, openssl_available
from tests.tls_brokers import TlsRedisCluster

# ------------------------------------------------------------------ no broker


def test_both_schemes_pick_the_cluster_backend() -> None:
    for scheme in ("redis+cluster", "rediss+cluster", "REDIS+CLUSTER"):
        assert backend_class(f"{scheme}://h1:7000") is RedisClusterBackend
    assert RedisClusterBackend.capabilities == RedisBackend.capabilities


def test_seeds_credentials_and_default_port() -> None:
    seeds, user, password = parse_cluster_url(
        "redis+cluster://alice:p%40ss@h1:7000,h2,[::1]:7002/0")
    assert seeds == [HostPort("h1", 7000), HostPort("h2", 6379), HostPort("::1", 7002)]
    assert (user, password) == ("alice", "p@ss")
    assert parse_cluster_url("redis+cluster://:secret@h1")[1:] == (None, "secret")
    assert parse_cluster_url("redis+cluster://h1:7000/")[0] == [HostPort("h1", 7000)]


@pytest.mark.parametrize(("url", "options", "message"), [
    ("redis+cluster://h1:7000/1", {}, "only database 0, not '1'"),
    ("redis+cluster://h1:7000", {"db": "2"}, "only database 0, not option db=2"),
    ("redis+cluster:///0", {}, "no host"),
    ("redis+cluster://h1:70000", {}, "bad port"),
    ("redis+cluster://h1,,h2", {}, "empty host"),
    ("redis+cluster://h1", {"channel": "a{b}"}, "has no braces"),
    ("redis+cluster://h1", {"timeout": "3"}, "timeout"),
    ("redis+cluster://h1", {"tls_ca_file": "/ca.pem"}, "need a rediss+cluster:// URL"),
], ids=["db-in-path", "db-option", "no-host", "bad-port", "empty-host", "braces",
        "no-pool-timeout", "tls-without-rediss"])
def test_bad_urls_and_options_are_refused(url: str, options: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        create_backend(url, **options)


def test_every_name_is_in_the_slot_of_the_channel_s_hash_tag() -> None:
    backend = create_backend("redis+cluster://h1:7000,h2:7001/0", channel="app")
    assert isinstance(backend, RedisClusterBackend)
    assert backend.sharded, "sharded pub/sub is the cluster scheme's default"
    assert not create_backend("redis+cluster://h1?sharded=false").settings["sharded"]
    names = [backend.broadcast_channel, backend.node_channel("n1"), backend.log_key,
             backend.session_key("p1")]
    assert names == ["{app}", "{app}#n1", "{app}#log", "{app}#session#p1"]
    assert {key_slot(name.encode()) for name in names} == {key_slot(b"app")} == {backend.slot}


# ------------------------------------------------------------ a local cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterBroker]:
    if not available("redis-cluster"):
        pytest.skip("redis-server/redis-cli not installed: "
                    "scripts/install-brokers.sh redis-cluster")
    broker = broker_for("redis-cluster")
    assert isinstance(broker, RedisClusterBroker)
    broker.start()
    yield broker
    broker.stop()


async def _slot_ranges(broker: RedisClusterBroker) -> dict[int, list[tuple[int, int]]]:
    """The slot ranges of each master, by its port."""
    client = aioredis.Redis(host=HOST, port=broker.ports[0])
    try:
        ranges: dict[int, list[tuple[int, int]]] = {}
        for first, last, master, *_ in await _cmd(client, "CLUSTER", "SLOTS"):
            ranges.setdefault(int(master[1]), []).append((int(first), int(last)))
        return ranges
    finally:
        await client.aclose()


async def _cmd(client: aioredis.Redis, *args: Any) -> Any:
    """A command, its reply as Redis gave it (no redis-py parsing)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


def _name_on(ranges: list[tuple[int, int]], prefix: str) -> str:
    """The first ``prefix-N`` whose CRC16 key slot is in ``ranges``."""
    for i in itertools.count():
        name = f"{prefix}-{i}"
        slot = key_slot(name.encode())
        if any(first <= slot <= last for first, last in ranges):
            return name
    raise AssertionError("unreachable")


async def test_seeds_that_reach_no_node_fail_fast() -> None:
    backend = create_backend("redis+cluster://127.0.0.1:1,127.0.0.1:2/0",
                             connect_timeout=5)
    with pytest.raises(BrokerUnavailable,
                       match=r"no node of the cluster \(.*\) served the slot map"):
        await asyncio.wait_for(backend.start("n1", None), 15)


@pytest.mark.broker
@pytest.mark.skipif(not available("redis"),
                    reason="redis-server not installed: scripts/install-brokers.sh redis")
async def test_a_redis_not_in_cluster_mode_is_named(redis_broker: LocalBroker) -> None:
    backend = create_backend(f"redis+cluster://{HOST}:{redis_broker.port}")
    with pytest.raises(ConfigurationError, match=r"not in cluster mode .* use a redis:// URL"):
        await asyncio.wait_for(backend.start("n1", None), 15)


async def _scenario(broker: RedisClusterBroker, channel: str,
                    sharded: bool = True) -> Scenario:
    """Three recovering nodes on the cluster, on ``channel``."""
    backend = BackendUnderTest("redis-cluster", "redis-cluster", broker.url, broker)
    scenario = Scenario(backend, "websocket", "python")
    cluster = scenario.cluster
    cluster.node_url = f"{broker.url}?channel={channel}&sharded={str(sharded).lower()}"
    cluster.nodes = [Node(cluster.node_url, **cluster.options) for _ in range(3)]
    try:
        await cluster.start()
    except BaseException:
        await scenario.close()
        raise
    return scenario


def _owner(node: Node) -> int:
    backend = node.manager.backend
    assert isinstance(backend, RedisClusterBackend)
    return int(backend.owner().port)


@pytest.mark.broker
@pytest.mark.parametrize("master", [0, 1, 2])
async def test_rooms_on_every_master_s_slots_broadcast_and_recover(
        redis_cluster: RedisClusterBroker, master: int) -> None:
    """The application's slot on each master in turn; room names whose key slots
    are on each of the three masters (rooms are no Redis names: every broadcast goes
    through the application's one channel and log, so all of them must work alike)."""
    ranges = await _slot_ranges(redis_cluster)
    ports = sorted(ranges)
    assert len(ports) == 3, ranges
    channel = _name_on(ranges[ports[master]], "app")
    rooms = [_name_on(ranges[port], "room") for port in ports]
    scenario = await _scenario(redis_cluster, channel)
    try:
        assert [_owner(node) for node in scenario.nodes] == [ports[master]] * 3
        client = await scenario.primed(0, rooms=tuple(rooms))
        for i, room in enumerate(rooms):  # to each room, from each node
            await scenario.nodes[i].sio.emit("ev", f"live {room}", to=room)
        assert await client.take("ev", 3) == [f"live {room}" for room in rooms]
        sid = client.sid()
        await scenario.drop(client)
        for i, room in enumerate(rooms):
            await scenario.nodes[(i + 1) % 3].sio.emit("ev", f"missed {room}", to=room)
        await scenario.settle()
        await scenario.back(client, 2)
        assert client.recovered() and client.sid() == sid
        assert await client.take("ev", 3) == [f"missed {room}" for room in rooms]
        assert (await client.call("whoami"))["rooms"] == sorted(rooms)
        assert await scenario.stray(client, 1) == []  # each event once
    finally:
        await scenario.close()


async def _move_slot(broker: RedisClusterBroker, slot: int, source: int,
                     target: int) -> None:
    """Reshard one slot from the master on port ``source`` to the one on ``target``,
    as ``redis-cli --cluster reshard`` does: IMPORTING/MIGRATING, MIGRATE its keys,
    then SETSLOT NODE on every master."""
    clients = {port: aioredis.Redis(host=HOST, port=port) for port in broker.ports}
    try:
        ids = {port: (await _cmd(c, "CLUSTER", "MYID")).decode()
               for port, c in clients.items()}
        await _cmd(clients[target], "CLUSTER", "SETSLOT", slot, "IMPORTING",
                                              ids[source])
        await _cmd(clients[source], "CLUSTER", "SETSLOT", slot, "MIGRATING",
                                              ids[target])
        while keys := await _cmd(clients[source], "CLUSTER", "GETKEYSINSLOT",
                                                            slot, 100):
            await _cmd(clients[source], "MIGRATE", HOST, target, "", 0, 5000,
                                                  "KEYS", *keys)
        for port in sorted(clients, key=lambda p: (p != target, p != source)):
            await _cmd(clients[port], "CLUSTER", "SETSLOT", slot, "NODE",
                                                ids[target])
    finally:
        for client in clients.values():
            await client.aclose()


@pytest.mark.broker
@pytest.mark.parametrize("sharded", [True, False], ids=["sharded", "plain"])
async def test_a_reshard_moves_the_application_and_it_follows(
        redis_cluster: RedisClusterBroker, sharded: bool) -> None:
    """The application's slot moves to another master while its nodes run: Redis
    drops their sharded subscriptions (``sunsubscribe``), their publishes and log
    reads meet MOVED; each reads the slot map again and carries on at the new owner
    (plain pub/sub: a SUBSCRIBE is no slot's, but the log's XREAD is). A client away
    during the move recovers what was emitted before and after it."""
    ranges = await _slot_ranges(redis_cluster)
    ports = sorted(ranges)
    channel = _name_on(ranges[ports[0]], f"moving-{sharded}")
    scenario = await _scenario(redis_cluster, channel, sharded)
    try:
        backend = scenario.nodes[0].manager.backend
        assert isinstance(backend, RedisClusterBackend) and backend.sharded == sharded
        watchers = await scenario.cluster.connect_all()
        client = await scenario.primed(1, rooms=("r",))
        sid = client.sid()
        await scenario.drop(client)
        await scenario.nodes[0].sio.emit("ev", "before the move", to="r")
        await scenario.settle()
        await _move_slot(redis_cluster, backend.slot, ports[0], ports[1])
        await scenario.nodes[2].sio.emit("ev", "after the move", to="r")
        await scenario.settle()
        def where() -> list[tuple[bool, int]]:
            return [(node.manager.backend.state.connected, _owner(node))
                    for node in scenario.nodes]

        # every node subscribed again, at the new owner
        await eventually(where, [(True, ports[1])] * 3, "subscribed at the new owner",
                         DEADLINE)
        await scenario.back(client, 0)
        assert client.recovered() and client.sid() == sid
        assert await client.take("ev", 2) == ["before the move", "after the move"]
        for i in range(3):  # broadcasts from every node reach every client, in order
            for n in range(5):
                await scenario.nodes[i].sio.emit("seq", [i, n])
        for watcher in watchers:
            # (with recovery on, each event carries its offset after its argument)
            got = [(await watcher.next("seq"))[0] for _ in range(15)]
            assert got == [[i, n] for i in range(3) for n in range(5)]
        assert await scenario.stray(client, 1) == []
    finally:
        await scenario.close()


# --------------------------------------------------- TLS and a password


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A cluster serving TLS only, with a password; and a CA that signed nothing."""
    if not available("redis-cluster") or not openssl_available():
        pytest.skip("needs redis-server, redis-cli and openssl: scripts/test.sh")
    directory = tmp_path_factory.mktemp("cluster-pki")
    ca = make_authority(directory, "ca")
    broker = TlsRedisCluster(ca.issue("server"), ca.issue("node", server=False), ca.cert)
    broker.start()
    yield broker, make_authority(directory, "other")
    broker.stop()


@pytest.mark.broker
async def test_tls_and_a_password(tls_cluster: tuple[Any, Any]) -> None:
    broker, _ = tls_cluster
    url = broker.tls_url(broker.password, broker.ca)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def deliver(payload: bytes) -> None:
        await got.put(payload)

    a, b = create_backend(url, channel="tls"), create_backend(url, channel="tls")
    await a.start("a", deliver)
    await b.start("b", None)
    try:
        await b.publish([(None, b"hello"), ("a", b"direct")])
        assert [await asyncio.wait_for(got.get(), 10) for _ in range(2)] == [
            b"hello", b"direct"]
        await b.save_session("p1", b"kept", 10)
        assert await a.take_session("p1") == b"kept"
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.broker
async def test_a_wrong_password_or_ca_fails_at_once(tls_cluster: tuple[Any, Any]) -> None:
    broker, other = tls_cluster
    for url, error in ((broker.tls_url("wrong", broker.ca), AuthenticationFailed),
                       (broker.tls_url(broker.password, other.cert), TLSVerificationFailed)):
        backend = create_backend(url, connect_timeout=10)
        began = asyncio.get_running_loop().time()
        with pytest.raises(error):
            await backend.start("n1", None)
        assert asyncio.get_running_loop().time() - began < 5
