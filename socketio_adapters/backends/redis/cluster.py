"""The Redis backend on a Redis Cluster: the same pub/sub core, log and session store,
with every name of one application in one hash slot, reached on the master that owns
it. The design is in docs/backends/redis.md (Redis Cluster).

Features
    Every channel and key name starts with the hash tag ``{channel}``, so all of them
    (``{channel}``, ``{channel}#{node uid}``, the stream ``{channel}#log``, the keys
    ``{channel}#session#{pid}``) live in one slot, on one master: a node's batch is
    one pipeline on one connection, in order, exactly as on a single Redis, and the
    cluster semantics above the backend do not change. Applications with different
    channels spread over the masters. ``sharded`` (SPUBLISH/SSUBSCRIBE) is the
    default: sharded messages stay within the shard that owns the slot, where plain
    PUBLISH is copied to every node of the cluster over its bus. The slot map comes
    from redis-py's :class:`~redis.asyncio.cluster.RedisCluster`, which also runs
    the odd command (XRANGE, SET, GETDEL) and follows MOVED and ASK itself. A raw
    connection that meets MOVED, ASK, CLUSTERDOWN or TRYAGAIN, or a subscription that
    Redis drops (``sunsubscribe``, after a reshard or a failover), is a lost
    connection: the slot map is read again and the node subscribes (or publishes)
    on the slot's new owner, with the shared backoff.

Connection string
    ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]`` (any
    masters or replicas of the cluster, as seeds: one that answers is enough) or
    ``rediss+cluster://...`` (TLS). A cluster has only database 0.

Options
    Those of the Redis backend (``sharded`` defaults to ``true`` here), except
    ``timeout`` (a connection pool option that redis-py's cluster client has not);
    ``db`` may only be ``0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import hiredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from ...errors import ConfigurationError
from ...hosts import HostPort, parse_hosts
from ...options import Option, parse_bool, redact
from .core import RedisBackend
from .resp import PipelineError, RawConnection

__all__ = ["ClusterUnreachable", "RedisClusterBackend", "SlotMoved", "parse_cluster_url"]

DEFAULT_PORT = 6379
_REDIRECTS = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN")
"""Error replies that mean "not here, or not now": read the slot map again."""


class ClusterUnreachable(redis.exceptions.ConnectionError):
    """No node of the cluster answered (or none could tell who owns the slot)."""


class SlotMoved(redis.exceptions.ConnectionError):
    """The application's slot is served elsewhere now (a reshard or a failover), or
    the cluster is down: reconnect to its owner."""


def parse_cluster_url(url: str) -> tuple[list[HostPort], str | None, str | None]:
    """The seed nodes, user name and password of a ``redis+cluster://`` URL (no
    query); refuses any database but 0."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed URL: {exc}") from None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigurationError(f"no host in {redact(url)}: name one or more nodes of "
                                 "the cluster, host:port,host:port")
    seeds = parse_hosts(hosts, DEFAULT_PORT, url)
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ConfigurationError(
            f"a Redis Cluster has only database 0, not {db!r} ({redact(url)})")
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, sep, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    return seeds, username, password


def _all_moved(exc: BaseException) -> bool:
    """Whether every reply of a pipeline was MOVED (so no command of it ran; the PING
    ahead of its PUBLISHes, :data:`SUBSCRIBERS_FIRST`, does nothing)."""
    return isinstance(exc, PipelineError) and all(
        isinstance(reply, hiredis.ReplyError) and str(reply).startswith("MOVED ")
        for reply in exc.replies if reply != b"PONG")


def _redirected(exc: BaseException) -> bool:
    return (isinstance(exc, redis.exceptions.ResponseError)
            and str(exc).startswith(_REDIRECTS))


class RedisClusterBackend(RedisBackend):
    """The Redis backend on a Redis Cluster (see the module doc)."""

    name: ClassVar[str] = "redis-cluster"
    options: ClassVar[tuple[Option, ...]] = tuple(
        Option("sharded", parse_bool, True,
               "use SPUBLISH/SSUBSCRIBE (Redis 7+), kept within the slot's shard")
        if option.name == "sharded" else option
        for option in RedisBackend.options if option.name != "timeout")
    tls_schemes: ClassVar[tuple[str, ...]] = ("rediss+cluster",)
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        *RedisBackend.connection_errors, redis.exceptions.ClusterError,
        redis.exceptions.TryAgainError, redis.exceptions.SlotNotCoveredError)

    def __init__(self, url: str, **options: Any) -> None:
        self.seeds, self._username, self._password = parse_cluster_url(url)
        super().__init__(url, **options)
        if self.settings["db"] not in (None, 0):
            raise ConfigurationError(f"a Redis Cluster has only database 0, not option "
                                     f"db={self.settings['db']!r}")
        self.slot = key_slot(self.prefix.encode())
        """The hash slot of every name of this backend."""
        self._stale = False

    def key_prefix(self) -> str:
        """``{channel}``: a hash tag, so that every name is in one slot."""
        if "{" in self.channel or "}" in self.channel:
            raise ConfigurationError(
                f"{self.name} backend: a channel for a Redis Cluster has no braces "
                f"(the backend puts it in a hash tag): {self.channel!r}")
        return "{" + self.channel + "}"

    async def _connect(self) -> None:
        options = {k: v for k, v in self._client_options.items() if k != "db"}
        client = RedisCluster(
            startup_nodes=[ClusterNode(seed.host, seed.port) for seed in self.seeds],
            username=self._username, password=self._password, ssl=self.tls, **options)
        self._client = client
        try:
            await client.initialize()
        except BaseException as exc:  # a timeout's cancellation too: close, then raise
            self._client = None
            await client.aclose()
            if isinstance(exc, redis.exceptions.RedisClusterException):
                raise self._not_connected(exc) from None
            raise

    def _not_connected(self, exc: redis.exceptions.RedisClusterException) -> BaseException:
        """What to raise when the cluster client could not read the slot map."""
        cause = exc.__cause__ or exc.__context__
        if cause is not None and self.refusal(cause) is not None:
            return cause  # wrong credentials or certificate: said at once
        seeds = ", ".join(seed.netloc for seed in self.seeds)
        if "Cluster mode is not enabled" in str(exc):
            return ConfigurationError(
                f"{self.name} backend: a node of {seeds} is not in cluster mode "
                "(cluster_enabled:0): for a single Redis server use a redis:// URL")
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return ClusterUnreachable(f"no node of the cluster ({seeds}) served the slot "
                                  f"map ({why})")

    async def _close(self) -> None:
        client, self._client = self._client, None
        await super()._close()
        if isinstance(client, RedisCluster):
            await client.aclose()

    def _cluster(self) -> RedisCluster:
        client = self._client
        if not isinstance(client, RedisCluster):
            raise redis.exceptions.ConnectionError(f"{self.name} backend is not open")
        return client

    async def _refresh(self) -> None:
        """Read the slot map again (from any node that answers)."""
        try:
            await self._cluster().nodes_manager.initialize()
        except redis.exceptions.RedisClusterException as exc:
            error = self._not_connected(exc)
            if isinstance(error, ConfigurationError):
                error = ClusterUnreachable(str(error))
            raise error from None
        self._stale = False

    def owner(self) -> ClusterNode:
        """The master that serves this backend's slot, by the last slot map read."""
        return self._cluster().nodes_manager.get_node_from_slot(self.slot)

    async def _raw_connection(self) -> RawConnection:
        if self._stale:
            await self._refresh()
        node = self.owner()
        return await RawConnection.connect(node.connection_class(**node.connection_kwargs))

    def _moved(self, exc: BaseException) -> SlotMoved:
        self._stale = True
        return SlotMoved(f"slot {self.slot} ({self.prefix}): {exc}")

    async def _run(self, ready: Callable[[], None]) -> None:
        await self._refresh()  # each (re)subscription on the slot's current owner
        self._publish_on_listener = True
        try:
            await super()._run(ready)
        except redis.exceptions.ResponseError as exc:
            if not _redirected(exc):
                raise
            raise self._moved(exc) from exc

    async def _round_trip(self, commands: list[bytes]) -> list[Any]:
        """A pipeline on the slot's owner. When every command of it was redirected
        (MOVED: none ran), it is sent once more at once to the owner a fresh slot map
        names, so a reshard does not hold publishing up; otherwise (ASK, CLUSTERDOWN,
        some commands ran) the outbox sends the batch again after a backoff. From
        then until the listener subscribes again (on the owner), publishes do not go
        on its connection: with ``sharded=false`` it may stay on the old owner."""
        for attempt in range(2):
            try:
                return await super()._round_trip(commands)
            except redis.exceptions.ResponseError as exc:
                if not _redirected(exc):
                    raise
                self._publish_on_listener = False
                moved = self._moved(exc)
                if attempt or not _all_moved(exc):
                    raise moved from exc
                await self._refresh()
            except self.connection_errors:
                self._stale = True  # the owner may be gone: ask the cluster next time
                raise
        raise AssertionError("unreachable")  # pragma: no cover
