"""The Postgres session store: the table ``{channel}_sessions`` (``pid`` primary key,
``data``, ``expires``). Saving is an upsert; taking is a ``DELETE ... RETURNING``, so
of several nodes taking a record at once exactly one gets it."""

from __future__ import annotations

import time
from typing import Any

import asyncpg.exceptions as pg_errors  # type: ignore[import-untyped]

from .connections import PostgresConnections, create_table
from .naming import pg_identifier, quote_identifier

__all__ = ["SESSION_PURGE_SECONDS", "PostgresSessions", "SessionSql"]

SESSION_PURGE_SECONDS = 10.0
"""A node deletes expired session records at most this often (on save)."""


class SessionSql:
    """The statements on the session table ``table`` (a quoted identifier)."""

    def __init__(self, table: str) -> None:
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (pid text PRIMARY KEY, "
            "data bytea NOT NULL, expires timestamptz NOT NULL)")
        self.save = (
            f"INSERT INTO {table} (pid, data, expires) "
            "VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT (pid) "
            "DO UPDATE SET data = excluded.data, expires = excluded.expires")
        self.take = (f"DELETE FROM {table} WHERE pid = $1 "
                     "RETURNING data, expires > now() AS live")
        self.purge = f"DELETE FROM {table} WHERE expires <= now()"


class PostgresSessions(PostgresConnections):
    """Session records in a table, with an expiry."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.sessions_table = pg_identifier(f"{self.channel}_sessions")
        self._session_sql = SessionSql(quote_identifier(self.sessions_table))
        self._sessions_ready = False
        self._last_purge = 0.0

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        sql = self._session_sql

        async def save(conn: Any) -> None:
            if not self._sessions_ready:
                await create_table(conn, sql.create)
                self._sessions_ready = True
            now = time.monotonic()
            if now - self._last_purge >= SESSION_PURGE_SECONDS:
                self._last_purge = now
                await conn.execute(sql.purge)
            await conn.execute(sql.save, pid, data, float(ttl))

        async def save_again(conn: Any) -> None:
            try:
                await save(conn)
            except pg_errors.UndefinedTableError:
                self._sessions_ready = False  # dropped behind our back
                await save(conn)

        await self._on_publisher(save_again)

    async def take_session(self, pid: str) -> bytes | None:
        async def take(conn: Any) -> Any:
            try:
                return await conn.fetchrow(self._session_sql.take, pid)
            except pg_errors.UndefinedTableError:
                return None  # never saved anything

        row = await self._on_publisher(take)
        if row is None or not row["live"]:
            return None
        data: bytes = row["data"]
        return data
