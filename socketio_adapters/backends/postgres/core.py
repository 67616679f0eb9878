"""The Postgres backend's pub/sub core: one listening connection per node (its
channels, the log's wake-ups, a watch on the connection), and publishing as one
``pg_notify`` statement per batch, large payloads through a table."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncpg  # type: ignore[import-untyped]
import asyncpg.exceptions as pg_errors  # type: ignore[import-untyped]

from ...options import Option, positive_float
from ..base import LOG, Capabilities, Outgoing, RecordKey, RoomTarget
from ..silence import SilenceWatch
from .connections import PostgresConnections, close_quietly, create_table
from .log import PostgresLog
from .naming import pg_identifier, quote_identifier
from .notify import (
    NOTIFY_LIMIT,
    decode_notification,
    encode_inline,
    encode_reference,
    encoded_size,
)
from .sessions import PostgresSessions

__all__ = ["PostgresBackend"]

_NOTIFY_SQL = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)"


class _Signal(enum.Enum):
    """What the listening connection's callbacks queue besides notification texts."""

    CLOSED = enum.auto()
    """The connection is gone."""
    LOG = enum.auto()
    """New log entries may be there: read them."""
    SILENT = enum.auto()
    """Nothing came for an interval: probe the connection."""


@dataclass(frozen=True)
class _RoomChange:
    """Room keys to LISTEN to (or UNLISTEN), on the listening connection, by its
    own task (an asyncpg connection runs one operation at a time)."""

    keys: Sequence[str]
    listen: bool
    done: asyncio.Future[None]


class PostgresBackend(PostgresLog, PostgresSessions):
    """Moves bytes over Postgres LISTEN/NOTIFY, with a table for large payloads and
    tables for the durable log and the session store."""

    name: ClassVar[str] = "postgres"
    extra: ClassVar[str | None] = "postgres"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=None, durable_log=True, session_store=True,
        routes_rooms=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("payload_ttl", positive_float, 60.0,
               "seconds a large payload's row is kept in the payload table"),
        Option("ping_interval", positive_float, 5.0,
               "seconds of silence after which the listening connection is checked"),
        *PostgresConnections.options,
    )
    # frames of small payloads stay within one NOTIFY (base64 grows them by a third)
    frame_cap: ClassVar[int] = (NOTIFY_LIMIT - 64) * 3 // 4

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.payload_ttl: float = self.settings["payload_ttl"]
        self.ping_interval: float = self.settings["ping_interval"]
        self.broadcast_channel = pg_identifier(self.channel)
        self.table = pg_identifier(f"{self.channel}_payloads")
        """The table of the payloads too large for a NOTIFY."""
        self._table_sql = quote_identifier(self.table)
        self._table_ready = False
        self._last_cleanup = 0.0
        self._log_wake_pending = False
        self._inbox: asyncio.Queue[str | _Signal | _RoomChange] | None = None
        """The listener's queue, while it listens (room changes go there)."""

    def node_channel(self, uid: str) -> str:
        return pg_identifier(f"{self.channel}#{uid}")

    def room_channel(self, key: str) -> str:
        return pg_identifier(f"{self.channel}#r#{key}")

    # ------------------------------------------------------------------ listening

    async def _run(self, ready: Callable[[], None]) -> None:
        conn = await self._connect()
        inbox: asyncio.Queue[str | _Signal | _RoomChange] = asyncio.Queue()

        def on_notification(_conn: Any, _pid: int, _channel: str, text: str) -> None:
            inbox.put_nowait(text)

        def on_termination(_conn: Any) -> None:
            inbox.put_nowait(_Signal.CLOSED)

        def on_log(_conn: Any, _pid: int, _channel: str, text: str) -> None:
            # one read for a burst of appends: none while one is queued, none for
            # entries a read already delivered (the text is the batch's last id)
            if not self._log_wake_pending and self._log_is_behind(text):
                self._log_wake_pending = True
                inbox.put_nowait(_Signal.LOG)

        conn.add_termination_listener(on_termination)
        watch: SilenceWatch | None = None
        try:
            for channel in (self.broadcast_channel, self.node_channel(self.node_id)):
                await conn.add_listener(channel, on_notification)  # quotes the name
            start: RecordKey | None = None
            if self.log is not None:
                await conn.add_listener(self.log_channel, on_log)
                start = await self._begin_log_reader(conn)
                self._log_wake_pending = True
                inbox.put_nowait(_Signal.LOG)  # catch up at once (after a reconnect)
            await self._subscribe_every_room(
                lambda keys: _listen_rooms(conn, self, keys, True, on_notification))
            self._inbox = inbox
            ready()
            interval = self.ping_interval
            watch = SilenceWatch(interval, lambda _: inbox.put_nowait(_Signal.SILENT))
            while True:
                text = inbox.get_nowait() if not inbox.empty() else await inbox.get()
                watch.heard()
                if text is _Signal.SILENT:
                    await _probe(conn, interval)  # raises when no answer comes
                    continue
                if text is _Signal.CLOSED:
                    raise pg_errors.ConnectionDoesNotExistError(
                        "the listening connection was closed")
                if text is _Signal.LOG:
                    self._log_wake_pending = False
                    start = await self._read_log(conn, start)
                    continue
                if isinstance(text, _RoomChange):
                    await _change_rooms(conn, self, text, on_notification)
                    continue
                payload = decode_notification(text)
                if isinstance(payload, int):
                    # a reference to no row: the text goes on, for the manager to
                    # count as malformed
                    payload = await self._fetch_row(conn, payload) or text.encode()
                await self._dispatch(payload)
        finally:
            if watch is not None:
                watch.stop()
            self._inbox = None
            while not inbox.empty():
                item = inbox.get_nowait()
                if isinstance(item, _RoomChange) and not item.done.done():
                    item.done.set_exception(ConnectionError("the listener stopped"))
            await close_quietly(conn)

    async def _room_change(self, keys: Sequence[str], listen: bool) -> None:
        inbox = self._inbox
        if inbox is None:
            return  # the listener LISTENs to every key when back, before it is ready
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inbox.put_nowait(_RoomChange(keys, listen, done))
        await done

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        await self._room_change(keys, True)

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        await self._room_change(keys, False)

    async def _fetch_row(self, conn: Any, row_id: int) -> bytes | None:
        try:
            row: bytes | None = await conn.fetchval(
                f"SELECT payload FROM {self._table_sql} WHERE id = $1", row_id)
        except self.connection_errors:
            raise
        except asyncpg.PostgresError as exc:
            self.logger.warning("postgres: cannot read large payload %d from %s (%s); "
                                "dropped", row_id, self.table, exc)
            return None
        if row is None:
            self.logger.warning("postgres: large payload %d is no longer in %s (older "
                                "than payload_ttl=%gs?); dropped", row_id, self.table,
                                self.payload_ttl)
        return row

    # ------------------------------------------------------------------ publishing

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if not batch:
            return
        entries = [payload for target, payload in batch if target == LOG]
        if entries and self.log is None:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        others = [item for item in batch if item[0] != LOG] if entries else batch

        async def send(conn: Any) -> None:
            try:
                await self._send(conn, others, entries)
            except pg_errors.UndefinedTableError:
                # a table was dropped behind our back: create it again
                self._table_ready = self._log_ready = False
                await self._send(conn, others, entries)

        await self._on_publisher(send)

    async def _send(self, conn: Any, others: Sequence[Outgoing],
                    entries: list[bytes]) -> None:
        if not entries:
            await self._notify(conn, others)
            return
        await self._ensure_log_table(conn)
        await self._trim_log(conn)  # before appending: a retry then appends only once
        if not others:
            await self._append(conn, entries)
            return
        async with conn.transaction():  # all or nothing, so that a retry repeats nothing
            await self._notify(conn, others)
            await self._append(conn, entries)

    async def _notify(self, conn: Any, batch: Sequence[Outgoing]) -> None:
        channels: list[str] = []
        texts: list[str] = []
        large: list[int] = []
        for index, (target, payload) in enumerate(batch):
            channels.append(self.broadcast_channel if target is None
                            else self.room_channel(target.key)
                            if isinstance(target, RoomTarget)
                            else self.node_channel(target))
            if encoded_size(index, payload) < NOTIFY_LIMIT:
                texts.append(encode_inline(index, payload))
            else:
                texts.append("")
                large.append(index)
        if not large:
            await conn.execute(_NOTIFY_SQL, channels, texts)
            return
        if not self._table_ready:
            await create_table(conn, self._create_payloads_sql())
            self._table_ready = True
        async with conn.transaction():
            now = time.monotonic()
            if now - self._last_cleanup >= self.payload_ttl / 4:
                await conn.execute(
                    f"DELETE FROM {self._table_sql} "
                    "WHERE created_at < now() - make_interval(secs => $1)",
                    self.payload_ttl)
                self._last_cleanup = now
            for index in large:
                row_id: int = await conn.fetchval(
                    f"INSERT INTO {self._table_sql} (payload) VALUES ($1) RETURNING id",
                    batch[index][1])
                texts[index] = encode_reference(index, row_id)
            await conn.execute(_NOTIFY_SQL, channels, texts)

    def _create_payloads_sql(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self._table_sql} ("
                "id bigserial PRIMARY KEY, payload bytea NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT now())")


async def _probe(conn: Any, timeout: float) -> None:
    """Check a connection that was silent: a half-open one (a NAT or balancer dropped
    it) never answers, and asyncpg's own query timeout then waits for a cancel request
    that cannot get through either: bound it here and drop the socket."""
    try:
        await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout)
    except asyncio.TimeoutError:
        conn.terminate()
        raise pg_errors.ConnectionDoesNotExistError(
            f"no answer to a probe within {timeout}s: the listening connection is "
            "silent") from None


Listener = Callable[[Any, int, str, str], None]


async def _listen_rooms(conn: Any, backend: PostgresBackend, keys: Sequence[str],
                        listen: bool, callback: Listener) -> None:
    """LISTEN (UNLISTEN) to the room keys' channels: each returns once done."""
    for key in keys:
        if listen:
            await conn.add_listener(backend.room_channel(key), callback)
        else:
            await conn.remove_listener(backend.room_channel(key), callback)


async def _change_rooms(conn: Any, backend: PostgresBackend, change: _RoomChange,
                        callback: Listener) -> None:
    try:
        await _listen_rooms(conn, backend, change.keys, change.listen, callback)
    except BaseException as exc:
        if not change.done.done():
            change.done.set_exception(ConnectionError(f"LISTEN failed: {exc!r}"))
        raise
    if not change.done.done():
        change.done.set_result(None)
