"""Redis backend: pub/sub (or sharded pub/sub) through redis-py's asyncio client.

Features
    Every node subscribes to one broadcast channel, ``{channel}``, and to its own
    channel, ``{channel}#{node uid}``, for answers addressed to it. Publishing is
    pipelined: a burst of emits costs one round trip. redis-py opens the connections
    (URL, TLS, AUTH, SELECT), then the pub/sub traffic itself is written as raw RESP
    and parsed with hiredis, several times cheaper per message than redis-py's PubSub
    object (see benchmarks/). After a lost connection the
    listener reconnects with the shared backoff and subscribes again; what was
    published while it was away is not replayed (pub/sub keeps nothing), and the gap
    is logged with its length. With ``sharded=true`` it uses SPUBLISH/SSUBSCRIBE
    (Redis 7), so on a Redis Cluster each channel lives on one shard instead of being
    copied to every node of the cluster.

Connection string
    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
    ``unix:///path/to/redis.sock[?db=N]``.

Options
    ``channel`` and ``connect_timeout`` (see the base backend), ``sharded`` (default
    ``false``), and redis-py's own connection options: ``db``, ``socket_timeout``,
    ``socket_connect_timeout``, ``socket_keepalive``, ``health_check_interval``,
    ``max_connections``, ``retry_on_timeout``, ``ssl_cert_reqs``, ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``, ``timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, AbstractConnection

from ..options import Option, parse_bool
from .base import Backend, Capabilities, Outgoing

__all__ = ["RedisBackend"]

_PASS_THROUGH = ("db", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                 "health_check_interval", "max_connections", "retry_on_timeout",
                 "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                 "ssl_check_hostname", "timeout")
_READ_SIZE = 256 * 1024


def _redis_option(name: str) -> Option:
    parser = URL_QUERY_ARGUMENT_PARSERS.get(name, str)
    return Option(name, lambda v: v if not isinstance(v, str) else parser(v), None,
                  "passed to redis-py")


def _command(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


class _Raw:
    """A connection opened by redis-py and then spoken to in raw RESP."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.parser = hiredis.Reader()

    @classmethod
    async def open(cls, pool: aioredis.ConnectionPool) -> _Raw:
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.connect()
        return cls(connection)

    def write(self, data: bytes) -> None:
        writer = self.connection._writer
        if writer is None:
            raise redis.exceptions.ConnectionError("redis connection is closed")
        writer.write(data)

    async def drain(self) -> None:
        writer = self.connection._writer
        if writer is None:
            raise redis.exceptions.ConnectionError("redis connection is closed")
        await writer.drain()

    async def replies(self) -> list[Any]:
        """Every complete reply in what arrives next (at least one)."""
        reader = self.connection._reader
        if reader is None:
            raise redis.exceptions.ConnectionError("redis connection is closed")
        while True:
            out = []
            reply = self.parser.gets()
            while reply is not False:
                out.append(reply)
                reply = self.parser.gets()
            if out:
                return out
            data = await reader.read(_READ_SIZE)
            if not data:
                raise redis.exceptions.ConnectionError("redis closed the connection")
            self.parser.feed(data)

    async def close(self) -> None:
        await self.connection.disconnect()


class RedisBackend(Backend):
    """Moves bytes over Redis pub/sub."""

    name: ClassVar[str] = "redis"
    extra: ClassVar[str | None] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=512 * 1024 * 1024, sharded=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("sharded", parse_bool, False, "use SPUBLISH/SSUBSCRIBE (Redis 7+)"),
        *(_redis_option(name) for name in _PASS_THROUGH),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.sharded: bool = self.settings["sharded"]
        self._client_options: Mapping[str, Any] = {
            name: self.settings[name] for name in _PASS_THROUGH
            if self.settings[name] is not None}
        self._pool: aioredis.ConnectionPool | None = None
        self._publisher: _Raw | None = None
        self.broadcast_channel = self.channel
        self._publish_cmd = b"SPUBLISH" if self.sharded else b"PUBLISH"
        self._broadcast_key = self.broadcast_channel.encode()

    def node_channel(self, uid: str) -> str:
        return f"{self.channel}#{uid}"

    async def _open(self) -> None:
        self._pool = aioredis.ConnectionPool.from_url(self.url, **self._client_options)

    async def _close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.disconnect()

    def _require_pool(self) -> aioredis.ConnectionPool:
        if self._pool is None:
            raise redis.exceptions.ConnectionError("redis backend is not open")
        return self._pool

    async def _run(self, ready: Callable[[], None]) -> None:
        raw = await _Raw.open(self._require_pool())
        channels = (self.broadcast_channel, self.node_channel(self.node_id))
        try:
            raw.write(_command(b"SSUBSCRIBE" if self.sharded else b"SUBSCRIBE",
                               *(c.encode() for c in channels)))
            await raw.drain()
            pending = len(channels)  # confirmations prove the subscription is live
            dispatch = self._dispatch
            while True:
                for reply in await raw.replies():
                    if isinstance(reply, hiredis.ReplyError):
                        raise redis.exceptions.ResponseError(str(reply))
                    kind = reply[0]
                    if kind == b"message" or kind == b"smessage":
                        await dispatch(reply[2])
                    elif pending and kind in (b"subscribe", b"ssubscribe"):
                        pending -= 1
                        if not pending:
                            ready()
        finally:
            await raw.close()

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        publisher = self._publisher
        if publisher is None:
            publisher = self._publisher = await _Raw.open(self._require_pool())
        command = self._publish_cmd
        try:
            publisher.write(b"".join(
                _command(command, self._target(target), payload)
                for target, payload in batch))
            await publisher.drain()
            answered = 0
            while answered < len(batch):
                replies = await publisher.replies()
                for reply in replies:
                    if isinstance(reply, hiredis.ReplyError):
                        raise redis.exceptions.ResponseError(str(reply))
                answered += len(replies)
        except BaseException:
            # the stream is out of step with its replies now: start afresh
            self._publisher = None
            await publisher.close()
            raise

    def _target(self, target: str | None) -> bytes:
        if target is None:
            return self._broadcast_key
        return self.node_channel(target).encode()
