"""The Postgres log driver: the table ``{channel}_log`` (``id bigserial``, ``created
timestamptz``, ``data bytea``), one row per record; a record's key is its id, so
offsets read ``42.0``. Appends hold an advisory lock until they commit, so ids become
visible in id order. See docs/backends/postgres.md for the design."""

from __future__ import annotations

import time
from typing import Any

import asyncpg.exceptions as pg_errors  # type: ignore[import-untyped]

from ...storage import LogRecord, RecordKey
from .connections import PostgresConnections, create_table
from .naming import advisory_key, pg_identifier, quote_identifier

__all__ = ["LOG_READ_ROWS", "LOG_TRIM_SECONDS", "LogSql", "PostgresLog"]

LOG_READ_ROWS = 500
"""Rows one live read of the log fetches; it reads again until it gets fewer."""
LOG_TRIM_SECONDS = 1.0
"""A publisher trims the log at most this often."""


class LogSql:
    """The statements on the log table ``table`` (a quoted identifier)."""

    def __init__(self, table: str) -> None:
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, "
            "created timestamptz NOT NULL DEFAULT now(), data bytea NOT NULL)")
        # The lock is an InitPlan of a one-time filter, so it is taken before the
        # first row reaches the insert (whose nextval() would draw an id); the
        # statement is its own transaction, which holds the lock until it commits.
        self.append = (
            f"WITH added AS (INSERT INTO {table} (data) "
            "SELECT d FROM unnest($1::bytea[]) WITH ORDINALITY AS t(d, n) "
            "WHERE (SELECT pg_advisory_xact_lock($2)) IS NOT NULL "
            "ORDER BY n RETURNING id) "
            "SELECT pg_notify($3, max(id)::text) FROM added")
        self.trim = (
            f"DELETE FROM {table} WHERE created < now() - make_interval(secs => $1) "
            f"OR id <= (SELECT max(id) FROM {table}) - $2")
        # the table's identity (oid) and its last row, if any ($1: the unquoted name)
        self.head = (
            "SELECT t.oid, last.id, last.data "
            "FROM (SELECT to_regclass(quote_ident($1))::oid AS oid) AS t "
            f"LEFT JOIN LATERAL (SELECT id, data FROM {table} ORDER BY id DESC LIMIT 1) "
            "AS last ON true")
        self.read = (
            "SELECT id, data, floor(extract(epoch FROM created) * 1000)::bigint AS ms "
            f"FROM {table} WHERE id >= $1 ORDER BY id LIMIT $2")
        self.fetch = (
            "SELECT id, data, floor(extract(epoch FROM created) * 1000)::bigint AS ms "
            f"FROM {table} WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3")


class PostgresLog(PostgresConnections):
    """Appends to, follows, reads back and trims the log table."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.log_table = pg_identifier(f"{self.channel}_log")
        self.log_channel = pg_identifier(f"{self.channel}#log")  # no node uid is "log"
        """Notified with the last id of each append (wakes the readers)."""
        self._log_sql = LogSql(quote_identifier(self.log_table))
        self._log_lock_key = advisory_key(self.log_table)
        self._log_ready = False
        self._last_trim = 0.0

    # ---------------------------------------------------------------- following

    async def _begin_log_reader(self, conn: Any) -> RecordKey | None:
        """Where the live reader (re)starts (the key of the first row to read,
        included; None: the first row), from the table's identity and its last row."""
        await create_table(conn, self._log_sql.create)  # perhaps dropped meanwhile
        self._log_ready = True
        row = await conn.fetchrow(self._log_sql.head, self.log_table)
        last = None if row["id"] is None else ((row["id"],), row["data"])
        return self.log_reader.restart(last, epoch=row["oid"])

    async def _read_log(self, conn: Any, start: RecordKey | None) -> RecordKey | None:
        """Feed the rows from ``start`` on (included; None: from the first), in id
        order, up to the last; return where the next read starts: the row of the
        position (included again, ``feed`` skips what it delivered). Appends commit
        in id order (they hold the log's advisory lock), so no smaller id can appear
        later."""
        reader = self.log_reader
        while True:
            rows = await conn.fetch(self._log_sql.read, 0 if start is None else start[0],
                                    LOG_READ_ROWS)
            for row in rows:
                await reader.feed((row["id"],), row["data"], row["ms"])
            position = reader.position
            start = None if position is None else position.key
            if len(rows) < LOG_READ_ROWS:
                return start

    def _log_is_behind(self, text: str) -> bool:
        """Whether a wake-up (the text is the last id of an append) names rows this
        node has not delivered yet."""
        position = self.log_reader.position
        if position is None or not (text.isascii() and text.isdigit()):
            return True
        return int(text) > position.key[0]

    # ---------------------------------------------------------------- appending

    async def _ensure_log_table(self, conn: Any) -> None:
        if not self._log_ready:
            await create_table(conn, self._log_sql.create)
            self._log_ready = True

    async def _append(self, conn: Any, entries: list[bytes]) -> None:
        """Insert the entries (ids in their order) and wake the readers, in one
        statement that holds the log's advisory lock until it commits: appends commit
        in id order."""
        await conn.execute(self._log_sql.append, entries, self._log_lock_key,
                           self.log_channel)

    async def _trim_log(self, conn: Any) -> None:
        """Delete the rows older than the retention or more than ``max_length`` ids
        behind the last one, at most every ``LOG_TRIM_SECONDS``."""
        log = self.log
        now = time.monotonic()
        if log is None or now - self._last_trim < LOG_TRIM_SECONDS:
            return
        self._last_trim = now
        await conn.execute(self._log_sql.trim, float(log.retention), log.max_length)

    # ---------------------------------------------------------------- reading back

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        low, high, count = (first[0], first[0], 1) if first > last else (
            first[0], last[0], limit)

        async def fetch(conn: Any) -> list[Any] | None:
            try:
                rows: list[Any] = await conn.fetch(self._log_sql.fetch, low, high, count)
            except pg_errors.UndefinedTableError:
                return None  # nothing was ever appended (or the table was dropped)
            return rows

        rows = await self._on_publisher(fetch)
        if rows is None:
            return None
        return [LogRecord((row["id"],), row["data"], row["ms"]) for row in rows]
