"""Postgres backend: LISTEN/NOTIFY through asyncpg, large payloads through a table,
and tables for the durable log and the session store of connection state recovery.

Features
    Every node keeps one connection that LISTENs on two channels: the broadcast
    channel, ``{channel}``, and its own, ``{channel}#{node uid}``, for answers
    addressed to it. Channel and table names longer than Postgres's 63-byte identifier
    limit (which LISTEN would silently truncate) are shortened to their first bytes, a
    ``~`` and a 64-bit hash of the whole name, so two names never share a channel.
    NOTIFY payloads are text under 8000 bytes, so a payload travels base64-encoded
    with its index in the batch (Postgres folds identical notifications of one
    transaction into one; the index keeps them apart); one whose text would reach
    8000 bytes is stored in the table ``{channel}_payloads`` (created when first
    needed) and only its row id is notified; the listener reads the row. Rows older
    than ``payload_ttl`` are deleted by the publishers. Publishing uses a second
    connection: a batch is one ``SELECT pg_notify(...) FROM unnest(...)`` statement,
    one round trip, or one transaction when it carries large payloads; either way its
    notifications are delivered at commit, in order. The listening connection is
    watched (a termination callback, and ``SELECT 1`` after ``ping_interval`` seconds
    of silence): when it drops, the listener fails and the shared backoff reconnects
    and LISTENs again. What was
    notified while no LISTEN was active is gone (Postgres keeps nothing for a channel
    nobody listens to); large payloads stay in the table until ``payload_ttl`` but
    their references were missed.

    Durable log (when the manager enables it): the table ``{channel}_log`` (``id
    bigserial``, ``created timestamptz``, ``data bytea``), created when first needed;
    an entry's offset is its id in decimal. A batch's entries are one statement: it
    takes a transaction-level advisory lock (keyed by a hash of the table name),
    inserts the entries in order and notifies ``{channel}#log`` with the last id;
    the lock is held until the statement commits, so ids become visible in commit
    order and a reader never sees a smaller id appear after a larger one. The
    listening connection also LISTENs on ``{channel}#log``; its reader starts at the
    table's largest id and, on each wake-up (a burst of them makes one read) and
    after each reconnect, selects the rows after its position in id order. If the
    table was created anew meanwhile (another oid) or ends before the position, it
    warns and reads the new table from its start. Publishers delete rows older than
    ``retention`` or more than ``max_length`` ids behind the last, at most once a
    second; ``read_log`` applies both bounds itself as well. Sessions: the table
    ``{channel}_sessions`` (``pid`` primary key, ``data``, ``expires``): saving is an
    upsert, taking a ``DELETE ... RETURNING`` (so one taker wins), expired rows are
    deleted on save at most every 10 seconds.

    Why asyncpg: it is native asyncio (no thread pool), delivers notifications through
    ``add_listener`` callbacks and reports a closed connection through
    ``add_termination_listener``, speaks the binary protocol with prepared statements
    cached per connection (so a batch is one round trip), and is the fastest Postgres
    driver for Python.

Connection string
    ``postgres://[user[:password]@][host][:port][/database][?option=value&...]`` or
    ``postgresql://...``; several hosts as ``host1:5432,host2:5432``, a Unix socket
    directory as ``postgresql:///db?host=/var/run/postgresql``.

Options
    ``channel`` and ``connect_timeout`` (see the base backend); ``payload_ttl``
    (default ``60`` seconds: how long a large payload's row is kept);
    ``ping_interval`` (default ``5`` seconds: silence on the listening connection
    after which it is checked with ``SELECT 1``, which must answer as fast); the
    ``channel`` also names the tables ``{channel}_payloads``, ``{channel}_log`` and
    ``{channel}_sessions`` (in the first schema of the ``search_path``);
    ``application_name`` (default ``socketio-adapters``); and the libpq-style
    parameters that asyncpg reads from a URL, passed to it: ``host``, ``port``,
    ``user``, ``password``, ``dbname``/``database``, ``passfile``, ``service``,
    ``sslmode`` (``disable``, ``allow``, ``prefer``, ``require``, ``verify-ca``,
    ``verify-full``), ``sslcert``, ``sslkey``, ``sslrootcert``, ``sslcrl``,
    ``sslpassword``, ``sslnegotiation``, ``ssl_min_protocol_version``,
    ``ssl_max_protocol_version``, ``target_session_attrs``, ``krbsrvname``,
    ``gsslib``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import asyncpg.exceptions as pg_errors  # type: ignore[import-untyped]

from ..errors import ConfigurationError
from ..options import Option, non_empty_str, positive_float
from .base import LOG, Backend, Capabilities, Outgoing

__all__ = ["PostgresBackend", "advisory_key", "decode_notification", "encode_inline",
           "encode_reference", "parse_offset", "pg_identifier", "quote_identifier"]

MAX_IDENTIFIER = 63
"""Bytes in a Postgres identifier (NAMEDATALEN - 1); LISTEN truncates longer names."""
NOTIFY_LIMIT = 8000
"""A NOTIFY payload must be shorter than this many bytes."""
_HASH_HEX = 16
_HASHED_SHAPE = re.compile(r"~[0-9a-f]{16}\Z")
_NOTIFICATION = re.compile(r"([0-9a-f]{1,8})([:@])(.*)\Z", re.DOTALL)
_OFFSET = re.compile(r"[1-9][0-9]{0,18}")
_MAX_BIGINT = 2**63 - 1
LOG_READ_ROWS = 500
"""Rows one live read of the log fetches; it reads again until it gets fewer."""
LOG_TRIM_SECONDS = 1.0
"""A publisher trims the log at most this often."""
SESSION_PURGE_SECONDS = 10.0
"""A node deletes expired session records at most this often (on save)."""
_T = TypeVar("_T")


class _Signal(enum.Enum):
    """What the listening connection's callbacks queue besides notification texts."""

    CLOSED = enum.auto()
    """The connection is gone."""
    LOG = enum.auto()
    """New log entries may be there: read them."""


@functools.lru_cache(maxsize=4096)
def pg_identifier(name: str) -> str:
    """``name`` if it fits in 63 bytes, else its first bytes, ``~`` and a 64-bit
    blake2b hash of the whole name (63 bytes at most).

    A name that already looks hashed (ends with ``~`` and 16 hex digits) is hashed
    too, so a short name can never equal the shortened form of a long one.
    """
    raw = name.encode()
    if len(raw) <= MAX_IDENTIFIER and not _HASHED_SHAPE.search(name):
        return name
    digest = hashlib.blake2b(raw, digest_size=_HASH_HEX // 2).hexdigest()
    head = raw[:MAX_IDENTIFIER - _HASH_HEX - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def encoded_size(index: int, payload: bytes) -> int:
    """Length of ``encode_inline(index, payload)`` without encoding it."""
    return len(f"{index:x}:") + 4 * ((len(payload) + 2) // 3)


def encode_inline(index: int, payload: bytes) -> str:
    """A NOTIFY payload carrying ``payload`` itself: ``{index:x}:{base64}``."""
    return f"{index:x}:{base64.b64encode(payload).decode('ascii')}"


def encode_reference(index: int, row_id: int) -> str:
    """A NOTIFY payload pointing at a row of the payload table: ``{index:x}@{id}``."""
    return f"{index:x}@{row_id}"


def decode_notification(text: str) -> bytes | int:
    """The payload (bytes) or the row id (int) a notification carries. Text in
    another format (someone else's NOTIFY on the channel) comes back as its UTF-8
    bytes, for the manager to log and drop as malformed."""
    match = _NOTIFICATION.match(text)
    if match is not None:
        kind, body = match.group(2), match.group(3)
        if kind == ":":
            with contextlib.suppress(binascii.Error, ValueError):
                return base64.b64decode(body, validate=True)
        elif body.isdigit() and body.isascii():
            return int(body)
    return text.encode("utf-8", "surrogateescape")


def parse_offset(text: str) -> int | None:
    """The log row id an offset names, or ``None`` if ``text`` is not one (ids are
    positive bigints written in plain ASCII decimal, no sign, no leading zero)."""
    if _OFFSET.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= _MAX_BIGINT else None


def advisory_key(table: str) -> int:
    """The ``pg_advisory_xact_lock`` key that serializes appends to the log ``table``
    (a signed 64-bit hash of its name, the same on every node)."""
    digest = hashlib.blake2b(f"socketio_adapters log {table}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value)
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text
    return parse


def _port(value: Any) -> str:
    text = str(value)
    for part in text.split(","):
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise ValueError("expected a port number (or several, comma-separated)")
    return text


_LIBPQ_OPTIONS: tuple[Option, ...] = (
    Option("host", non_empty_str, None, "host(s) or Unix socket directory"),
    Option("port", _port, None, "port(s)"),
    Option("user", non_empty_str, None, "user name"),
    Option("password", str, None, "password"),
    Option("dbname", non_empty_str, None, "database name"),
    Option("database", non_empty_str, None, "database name"),
    Option("passfile", non_empty_str, None, "password file"),
    Option("service", non_empty_str, None, "service name in pg_service.conf"),
    Option("sslmode", _choice("disable", "allow", "prefer", "require", "verify-ca",
                              "verify-full"), None, "TLS mode"),
    Option("sslcert", non_empty_str, None, "client certificate file"),
    Option("sslkey", non_empty_str, None, "client key file"),
    Option("sslrootcert", non_empty_str, None, "CA certificate file"),
    Option("sslcrl", non_empty_str, None, "certificate revocation list file"),
    Option("sslpassword", str, None, "password of the client key"),
    Option("sslnegotiation", _choice("postgres", "direct"), None, "TLS negotiation"),
    Option("ssl_min_protocol_version", _choice("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
           None, "oldest TLS version"),
    Option("ssl_max_protocol_version", _choice("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
           None, "newest TLS version"),
    Option("target_session_attrs", _choice("any", "primary", "standby", "prefer-standby",
                                           "read-write", "read-only"),
           None, "which of several hosts to use"),
    Option("krbsrvname", non_empty_str, None, "Kerberos service name"),
    Option("gsslib", _choice("gssapi", "sspi"), None, "GSS library"),
    Option("application_name", str, "socketio-adapters", "shown in pg_stat_activity"),
)
_LIBPQ_NAMES = tuple(opt.name for opt in _LIBPQ_OPTIONS)

_NOTIFY_SQL = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)"


class PostgresBackend(Backend):
    """Moves bytes over Postgres LISTEN/NOTIFY, with a table for large payloads and
    tables for the durable log and the session store."""

    name: ClassVar[str] = "postgres"
    extra: ClassVar[str | None] = "postgres"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=None, durable_log=True, session_store=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("payload_ttl", positive_float, 60.0,
               "seconds a large payload's row is kept in the payload table"),
        Option("ping_interval", positive_float, 5.0,
               "seconds of silence after which the listening connection is checked"),
        *_LIBPQ_OPTIONS,
    )
    # frames of small payloads stay within one NOTIFY (base64 grows them by a third)
    frame_cap: ClassVar[int] = (NOTIFY_LIMIT - 64) * 3 // 4
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        pg_errors.PostgresConnectionError,  # incl. ConnectionDoesNotExistError
        pg_errors.InterfaceError,  # "connection is closed"
        pg_errors.CannotConnectNowError,  # the server is starting or stopping
        pg_errors.AdminShutdownError,
        pg_errors.CrashShutdownError,
        pg_errors.IdleSessionTimeoutError,
        pg_errors.TooManyConnectionsError,
        asyncio.TimeoutError,
        ConnectionError,
        OSError,
    )

    def __init__(self, url: str, **options: Any) -> None:
        base, query = _split_url(url)
        super().__init__(base, **{**query, **options})
        if "\x00" in self.channel:
            raise ConfigurationError(
                "bad value for option 'channel' of postgres backend: NUL is not allowed "
                "in a Postgres identifier")
        self.payload_ttl: float = self.settings["payload_ttl"]
        self.ping_interval: float = self.settings["ping_interval"]
        self.dsn = _with_query(base, {name: str(self.settings[name])
                                      for name in _LIBPQ_NAMES
                                      if self.settings[name] is not None})
        self.broadcast_channel = pg_identifier(self.channel)
        self.table = pg_identifier(f"{self.channel}_payloads")
        self._table_sql = quote_identifier(self.table)
        self._publisher: Any = None  # asyncpg.Connection
        self._publish_lock = asyncio.Lock()
        self._table_ready = False
        self._last_cleanup = 0.0
        self.log_table = pg_identifier(f"{self.channel}_log")
        self.log_channel = pg_identifier(f"{self.channel}#log")  # no node uid is "log"
        self.sessions_table = pg_identifier(f"{self.channel}_sessions")
        log, sessions = quote_identifier(self.log_table), quote_identifier(self.sessions_table)
        self._log_sql = _RecoverySql(log, sessions)
        self._log_key = advisory_key(self.log_table)
        self._log_ready = False
        self._sessions_ready = False
        self._log_oid: int | None = None
        """The log table's oid when the reader began: another one means the table was
        dropped and created again (its ids restarted)."""
        self._log_wake_pending = False
        self._last_trim = 0.0
        self._last_purge = 0.0

    def node_channel(self, uid: str) -> str:
        return pg_identifier(f"{self.channel}#{uid}")

    async def _connect(self) -> Any:
        return await asyncpg.connect(self.dsn, timeout=self.settings["connect_timeout"])

    async def _close(self) -> None:
        conn, self._publisher = self._publisher, None
        if conn is not None:
            await _close_quietly(conn)

    # ------------------------------------------------------------------ listening

    async def _run(self, ready: Callable[[], None]) -> None:
        conn = await self._connect()
        inbox: asyncio.Queue[str | _Signal] = asyncio.Queue()

        def on_notification(_conn: Any, _pid: int, _channel: str, text: str) -> None:
            inbox.put_nowait(text)

        def on_termination(_conn: Any) -> None:
            inbox.put_nowait(_Signal.CLOSED)

        def on_log(_conn: Any, _pid: int, _channel: str, text: str) -> None:
            # one read for a burst of appends: none while one is queued, none for
            # entries a read already delivered (the text is the batch's last id)
            if self._log_wake_pending:
                return
            position = self.log_position
            if position is not None and parse_offset(text) is not None \
                    and int(text) <= int(position):
                return
            self._log_wake_pending = True
            inbox.put_nowait(_Signal.LOG)

        conn.add_termination_listener(on_termination)
        try:
            for channel in (self.broadcast_channel, self.node_channel(self.node_id)):
                await conn.add_listener(channel, on_notification)  # quotes the name
            if self.log is not None:
                await conn.add_listener(self.log_channel, on_log)
                await self._begin_log_reader(conn)
                self._log_wake_pending = True
                inbox.put_nowait(_Signal.LOG)  # catch up at once (after a reconnect)
            ready()
            interval = self.ping_interval
            while True:
                if inbox.empty():
                    try:
                        text = await asyncio.wait_for(inbox.get(), interval)
                    except asyncio.TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=interval)
                        continue
                else:
                    text = inbox.get_nowait()
                if text is _Signal.CLOSED:
                    raise pg_errors.ConnectionDoesNotExistError(
                        "the listening connection was closed")
                if text is _Signal.LOG:
                    self._log_wake_pending = False
                    await self._read_new_entries(conn)
                    continue
                payload = decode_notification(text)
                if isinstance(payload, int):
                    fetched = await self._fetch_row(conn, payload)
                    if fetched is None:
                        continue
                    payload = fetched
                await self._dispatch(payload)
        finally:
            await _close_quietly(conn)

    async def _begin_log_reader(self, conn: Any) -> None:
        """Fix ``log_position`` before ``ready()``: the last entry on the first start;
        on a reconnect, keep it, unless the log table was created anew (or lost rows
        at its end), in which case read the new log from its start."""
        await self._create_table(conn, self._log_sql.create_log)  # perhaps dropped
        self._log_ready = True
        row = await conn.fetchrow(self._log_sql.head, self.log_table)
        oid: int = row["oid"]
        last: int | None = row["last"]
        if self._log_oid is None:
            self.log_position = None if last is None else str(last)
        elif self.log_position is not None and (
                oid != self._log_oid or (last is not None and last < int(self.log_position))):
            self.logger.warning(
                "postgres: the log table %s no longer holds position %s (it was created "
                "anew, or the database lost its latest rows); reading it from its start",
                self.log_table, self.log_position)
            self.log_position = None
        self._log_oid = oid

    async def _read_new_entries(self, conn: Any) -> None:
        """Deliver every entry after ``log_position``, in id order. Appends commit in
        id order (they hold the log's advisory lock), so no smaller id can appear
        later."""
        while True:
            after = 0 if self.log_position is None else int(self.log_position)
            rows = await conn.fetch(self._log_sql.read_live, after, LOG_READ_ROWS)
            for row in rows:
                await self._deliver_entry(str(row["id"]), row["data"])
            if len(rows) < LOG_READ_ROWS:
                return

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

    async def _send(self, conn: Any, others: Sequence[Outgoing],
                    entries: list[bytes]) -> None:
        if not entries:
            await self._notify(conn, others)
            return
        if not self._log_ready:
            await self._create_table(conn, self._log_sql.create_log)
            self._log_ready = True
        await self._trim_log(conn)  # before appending: a retry then appends only once
        if not others:
            await self._append(conn, entries)
            return
        async with conn.transaction():  # all or nothing, so that a retry repeats nothing
            await self._notify(conn, others)
            await self._append(conn, entries)

    async def _append(self, conn: Any, entries: list[bytes]) -> None:
        """Insert the entries (ids in their order) and wake the readers, in one
        statement that holds the log's advisory lock until it commits: appends commit
        in id order."""
        await conn.execute(self._log_sql.append, entries, self._log_key, self.log_channel)

    async def _trim_log(self, conn: Any) -> None:
        log = self.log
        now = time.monotonic()
        if log is None or now - self._last_trim < LOG_TRIM_SECONDS:
            return
        self._last_trim = now
        await conn.execute(self._log_sql.trim, float(log.retention), log.max_length)

    async def _notify(self, conn: Any, batch: Sequence[Outgoing]) -> None:
        channels: list[str] = []
        texts: list[str] = []
        large: list[int] = []
        for index, (target, payload) in enumerate(batch):
            channels.append(self.broadcast_channel if target is None
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
            await self._create_table(conn, self._create_payloads_sql())
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

    @staticmethod
    async def _create_table(conn: Any, sql: str) -> None:
        try:
            await conn.execute(sql)
        except (pg_errors.UniqueViolationError, pg_errors.DuplicateTableError):
            pass  # another node created it at the same moment

    # ------------------------------------------------------------------ durable log

    async def read_log(self, after: str, upto: str | None) -> list[tuple[str, bytes]] | None:
        start = parse_offset(after)
        end = None if upto is None else parse_offset(upto)
        log = self.log
        if start is None or end is None or log is None:
            return None

        async def read(conn: Any) -> list[Any] | None:
            try:
                rows: list[Any] = await conn.fetch(
                    self._log_sql.read_from, start, end, float(log.retention),
                    log.max_length)
            except pg_errors.UndefinedTableError:
                return None
            return rows

        rows = await self._on_publisher(read)
        # the first row is ``after`` itself, present only while it is within bounds
        if not rows or rows[0]["id"] != start:
            return None
        return [(str(row["id"]), row["data"]) for row in rows[1:]]

    # ------------------------------------------------------------------ sessions

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        async def save(conn: Any) -> None:
            if not self._sessions_ready:
                await self._create_table(conn, self._log_sql.create_sessions)
                self._sessions_ready = True
            now = time.monotonic()
            if now - self._last_purge >= SESSION_PURGE_SECONDS:
                self._last_purge = now
                await conn.execute(self._log_sql.purge_sessions)
            await conn.execute(self._log_sql.save_session, pid, data, float(ttl))

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
                return await conn.fetchrow(self._log_sql.take_session, pid)
            except pg_errors.UndefinedTableError:
                return None  # never saved anything

        row = await self._on_publisher(take)
        if row is None or not row["live"]:
            return None
        data: bytes = row["data"]
        return data


class _RecoverySql:
    """The statements on the log table ``log`` and the session table ``sessions``
    (both quoted identifiers)."""

    def __init__(self, log: str, sessions: str) -> None:
        self.create_log = (
            f"CREATE TABLE IF NOT EXISTS {log} (id bigserial PRIMARY KEY, "
            "created timestamptz NOT NULL DEFAULT now(), data bytea NOT NULL)")
        # The lock is an InitPlan of a one-time filter, so it is taken before the
        # first row reaches the insert (whose nextval() would draw an id); the
        # statement is its own transaction, which holds the lock until it commits.
        self.append = (
            f"WITH added AS (INSERT INTO {log} (data) "
            "SELECT d FROM unnest($1::bytea[]) WITH ORDINALITY AS t(d, n) "
            "WHERE (SELECT pg_advisory_xact_lock($2)) IS NOT NULL "
            "ORDER BY n RETURNING id) "
            "SELECT pg_notify($3, max(id)::text) FROM added")
        self.trim = (
            f"DELETE FROM {log} WHERE created < now() - make_interval(secs => $1) "
            f"OR id <= (SELECT max(id) FROM {log}) - $2")
        self.head = (f"SELECT to_regclass(quote_ident($1))::oid AS oid, max(id) AS last "
                     f"FROM {log}")
        self.read_live = f"SELECT id, data FROM {log} WHERE id > $1 ORDER BY id LIMIT $2"
        # the row ``after`` (without its data) if it is within both bounds, then the
        # rows that follow it, up to ``upto``; one statement, so one snapshot
        self.read_from = (
            f"SELECT id, NULL::bytea AS data FROM {log} WHERE id = $1 "
            "AND created >= now() - make_interval(secs => $3) "
            f"AND id > (SELECT max(id) FROM {log}) - $4 "
            f"UNION ALL SELECT id, data FROM {log} WHERE id > $1 AND id <= $2 "
            "ORDER BY id")
        self.create_sessions = (
            f"CREATE TABLE IF NOT EXISTS {sessions} (pid text PRIMARY KEY, "
            "data bytea NOT NULL, expires timestamptz NOT NULL)")
        self.save_session = (
            f"INSERT INTO {sessions} (pid, data, expires) "
            "VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT (pid) "
            "DO UPDATE SET data = excluded.data, expires = excluded.expires")
        self.take_session = (f"DELETE FROM {sessions} WHERE pid = $1 "
                             "RETURNING data, expires > now() AS live")
        self.purge_sessions = f"DELETE FROM {sessions} WHERE expires <= now()"


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its query, and the query as options."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed postgres URL: {exc}") from None
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"not a postgres URL: scheme {parts.scheme!r} (expected postgres:// or "
            "postgresql://)")
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        port = host.rpartition("]")[2].partition(":")[2] if host.startswith("[") \
            else host.partition(":")[2]
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigurationError(f"bad port {port!r} in postgres URL")
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query))


def _with_query(base: str, query: Mapping[str, str]) -> str:
    return urlunsplit(urlsplit(base)._replace(query=urlencode(query))) if query else base


async def _close_quietly(conn: Any) -> None:
    """Close gracefully within a second, else drop the socket."""
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=1.0)
    except (asyncpg.PostgresError, pg_errors.InterfaceError, OSError, asyncio.TimeoutError):
        conn.terminate()
