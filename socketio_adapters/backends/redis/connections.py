"""redis-py's connection pool and client, shared by every part of the Redis backend
and opened and closed with it; redis-py's own connection options pass through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

from ...errors import ConfigurationError
from ...options import Option
from ...tls import TLS_OPTIONS, tls_files
from ..base import Backend
from .resp import RawConnection

__all__ = ["PASS_THROUGH", "RedisConnections"]

PASS_THROUGH = ("db", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                "health_check_interval", "max_connections", "retry_on_timeout",
                "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname", "timeout")
"""redis-py's connection options, accepted as they are."""
_TLS_ALIASES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
"""redis-py's names of the TLS files (see :mod:`socketio_adapters.tls`)."""


def _redis_option(name: str) -> Option:
    parser = URL_QUERY_ARGUMENT_PARSERS.get(name, str)
    return Option(name, lambda v: v if not isinstance(v, str) else parser(v), None,
                  "passed to redis-py")


class RedisConnections(Backend):
    """The connection pool (for the raw connections) and the redis-py client (for
    the odd command) of a Redis backend."""

    options: ClassVar[tuple[Option, ...]] = (
        *(_redis_option(n) for n in PASS_THROUGH), *TLS_OPTIONS)
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
    auth_errors: ClassVar[tuple[type[BaseException], ...]] = (
        redis.exceptions.AuthenticationError,)

    def is_auth_error(self, exc: BaseException) -> bool:
        """redis-py's AuthenticationError when it connects (wrong password, unknown
        ACL user, no password for a server that wants one), or the server's NOAUTH or
        WRONGPASS answer to a command on a raw connection."""
        return super().is_auth_error(exc) or (
            isinstance(exc, redis.exceptions.ResponseError)
            and str(exc).startswith(("NOAUTH", "WRONGPASS")))

    tls_schemes: ClassVar[tuple[str, ...]] = ("rediss",)
    """The URL schemes that mean TLS."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.prefix = self.key_prefix()
        """What every channel and key name of this backend starts with."""
        client_options = {name: self.settings[name] for name in PASS_THROUGH
                          if self.settings.get(name) is not None}
        what = f"{self.name} backend"
        files = tls_files(self.settings, what, _TLS_ALIASES)
        self.tls = urlsplit(url).scheme.lower() in self.tls_schemes
        if files.given or any(name.startswith("ssl_") for name in client_options):
            if not self.tls:
                raise ConfigurationError(
                    f"{what}: TLS options need a {' or '.join(self.tls_schemes)}:// URL")
            files.context(what)  # bad files fail here, not on connect
            # redis-py takes no SSLContext: it builds its own from the same files
            client_options.update(files.named(_TLS_ALIASES))
        self._client_options: Mapping[str, Any] = client_options
        self._pool: aioredis.ConnectionPool | None = None
        self._client: aioredis.Redis | RedisCluster | None = None

    def key_prefix(self) -> str:
        """The prefix of every name: the ``channel`` option."""
        return self.channel

    async def _open(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        """Open the client (and the pool raw connections come from)."""
        self._pool = aioredis.ConnectionPool.from_url(self.url, **self._client_options)
        self._client = aioredis.Redis(connection_pool=self._pool)

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.disconnect()

    def _require_pool(self) -> aioredis.ConnectionPool:
        if self._pool is None:
            raise redis.exceptions.ConnectionError("redis backend is not open")
        return self._pool

    async def _raw_connection(self) -> RawConnection:
        """A new raw connection to where this backend's channels and keys live."""
        return await RawConnection.open(self._require_pool())

    def _require_client(self) -> aioredis.Redis | RedisCluster:
        if self._client is None:
            raise redis.exceptions.ConnectionError("redis backend is not open")
        return self._client
