"""The connections every part of the Postgres backend shares: the DSN built from the
URL and its options, and the publishing connection (publishing, log reads and
sessions take turns on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import asyncpg  # type: ignore[import-untyped]
import asyncpg.exceptions as pg_errors  # type: ignore[import-untyped]

from ...errors import ConfigurationError
from ...options import Option
from ...tls import TLS_OPTIONS, client_context, tls_files
from ..base import Backend
from .url import LIBPQ_OPTIONS, libpq_dsn, split_url

__all__ = ["PostgresConnections", "close_quietly", "create_table"]

_T = TypeVar("_T")
_TLS_ALIASES = ("sslrootcert", "sslcert", "sslkey")
"""libpq's names of the TLS files (see :mod:`socketio_adapters.tls`)."""


class PostgresConnections(Backend):
    """The DSN and the publishing connection of a Postgres backend."""

    options: ClassVar[tuple[Option, ...]] = (*LIBPQ_OPTIONS, *TLS_OPTIONS)
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        pg_errors.PostgresConnectionError,  # incl. ConnectionDoesNotExistError
        pg_errors.InterfaceError,  # "connection is closed"
        # "another operation is in progress": an operation cancelled half-way (a
        # timeout) left the connection in a state it cannot leave: open a new one
        pg_errors.InternalClientError,
        pg_errors.CannotConnectNowError,  # the server is starting or stopping
        pg_errors.AdminShutdownError,
        pg_errors.CrashShutdownError,
        pg_errors.IdleSessionTimeoutError,
        pg_errors.TooManyConnectionsError,
        asyncio.TimeoutError,
        ConnectionError,
        OSError,
    )
    auth_errors: ClassVar[tuple[type[BaseException], ...]] = (
        # 28000 (no pg_hba.conf entry, unknown role), and 28P01 InvalidPasswordError
        pg_errors.InvalidAuthorizationSpecificationError,)

    def __init__(self, url: str, **options: Any) -> None:
        base, query = split_url(url)
        super().__init__(base, **{**query, **options})
        if "\x00" in self.channel:
            raise ConfigurationError(
                "bad value for option 'channel' of postgres backend: NUL is not allowed "
                "in a Postgres identifier")
        self.dsn = libpq_dsn(base, self._with_tls_files(self.settings))
        """What asyncpg connects with: the URL and the libpq parameters."""
        self._publisher: Any = None  # asyncpg.Connection
        self._publish_lock = asyncio.Lock()

    @staticmethod
    def _with_tls_files(settings: dict[str, Any]) -> dict[str, Any]:
        """The settings with the TLS files under their libpq names (``sslrootcert``,
        ``sslcert``, ``sslkey``), which asyncpg reads; the files checked now."""
        files = tls_files(settings, "postgres backend", _TLS_ALIASES)
        if files.ca_file:
            client_context("postgres backend", files.ca_file)
        if files.cert_file and settings["sslpassword"] is None:
            client_context("postgres backend", None, files.cert_file, files.key_file)
        return {**settings, **files.named(_TLS_ALIASES)}

    async def _connect(self) -> Any:
        return await asyncpg.connect(self.dsn, timeout=self.settings["connect_timeout"])

    async def _close(self) -> None:
        conn, self._publisher = self._publisher, None
        if conn is not None:
            await close_quietly(conn)

    async def _on_publisher(self, action: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run ``action`` on the publishing connection (connecting if needed); a
        connection error drops the connection, so the next call connects again."""
        async with self._publish_lock:
            conn = self._publisher
            if conn is None or conn.is_closed():
                self._publisher = None
                conn = self._publisher = await self._connect()
            try:
                return await action(conn)
            except self.connection_errors:
                self._publisher = None
                conn.terminate()
                raise


async def create_table(conn: Any, sql: str) -> None:
    """Run a ``CREATE TABLE IF NOT EXISTS``, which another node may run at the same
    moment."""
    try:
        await conn.execute(sql)
    except (pg_errors.UniqueViolationError, pg_errors.DuplicateTableError):
        pass  # another node created it at the same moment


async def close_quietly(conn: Any) -> None:
    """Close gracefully within a second, else drop the socket."""
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=1.0)
    except (asyncpg.PostgresError, pg_errors.InterfaceError, OSError, asyncio.TimeoutError):
        conn.terminate()
