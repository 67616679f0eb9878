"""Redis backend: pub/sub (or sharded pub/sub) through redis-py's asyncio client.

Features
    Every node subscribes to one broadcast channel, ``{channel}``, and to its own
    channel, ``{channel}#{node uid}``, for answers addressed to it. Publishing is
    pipelined: a burst of emits costs one round trip. After a lost connection the
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

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

from ..options import Option, parse_bool
from .base import Backend, Capabilities, Outgoing

__all__ = ["RedisBackend"]

_PASS_THROUGH = ("db", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                 "health_check_interval", "max_connections", "retry_on_timeout",
                 "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                 "ssl_check_hostname", "timeout")


def _redis_option(name: str) -> Option:
    parser = URL_QUERY_ARGUMENT_PARSERS.get(name, str)
    return Option(name, lambda v: v if not isinstance(v, str) else parser(v), None,
                  "passed to redis-py")


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
        self._client: aioredis.Redis | None = None
        self.broadcast_channel = self.channel

    def node_channel(self, uid: str) -> str:
        return f"{self.channel}#{uid}"

    async def _open(self) -> None:
        self._client = aioredis.Redis.from_url(self.url, **self._client_options)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _run(self, ready: Callable[[], None]) -> None:
        if self._client is None:
            raise RuntimeError("redis backend is not open")
        pubsub = self._client.pubsub()
        channels = (self.broadcast_channel, self.node_channel(self.node_id))
        pending = len(channels)  # subscribe confirmations prove the subscription is live
        try:
            if self.sharded:
                await pubsub.ssubscribe(*channels)
            else:
                await pubsub.subscribe(*channels)
            dispatch = self._dispatch
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "message" or kind == "smessage":
                    await dispatch(message["data"])
                elif pending and kind in ("subscribe", "ssubscribe"):
                    pending -= 1
                    if not pending:
                        ready()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        client = self._client
        if client is None:
            raise redis.exceptions.ConnectionError("redis backend is not open")
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        if len(batch) == 1:
            target, payload = batch[0]
            await client.execute_command(  # type: ignore[no-untyped-call]
                command, self._target(target), payload)
            return
        pipe = client.pipeline(transaction=False)
        for target, payload in batch:
            pipe.execute_command(command, self._target(target), payload)
        await pipe.execute()

    def _target(self, target: str | None) -> str:
        return self.broadcast_channel if target is None else self.node_channel(target)
