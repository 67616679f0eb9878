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

    For connection state recovery (Redis 6.2+) it keeps a durable log in a stream,
    ``{channel}#log``: one XADD per entry, pipelined with the batch and trimmed with
    ``MAXLEN ~`` (length, with room for readers that lag) and, at most once a second,
    ``XTRIM MINID ~`` (age); ``read_log`` applies both bounds exactly. Offsets are the
    stream's entry IDs. Each listening node follows it with XREAD BLOCK on a connection
    of its own. Sessions are keys ``{channel}#session#{pid}`` written with
    ``SET ... PX`` and taken with GETDEL.

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

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, AbstractConnection

from ..options import Option, parse_bool
from .base import LOG, Backend, Capabilities, Outgoing

__all__ = ["RedisBackend"]

_PASS_THROUGH = ("db", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                 "health_check_interval", "max_connections", "retry_on_timeout",
                 "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                 "ssl_check_hostname", "timeout")
_READ_SIZE = 256 * 1024
_READ_COUNT = b"1000"
"""Log entries one XREAD returns at most."""
_TRIM_EVERY = 1.0
"""Seconds between two trims of the log by age (each costs one XTRIM in a pipeline)."""
_SLACK = 1000
"""Entries kept beyond ``max_length`` (at least): room for a live reader that lags
behind the writers, which would otherwise lose entries trimmed before it read them."""
_FIELD = b"p"
"""The one field of a log entry, holding its payload."""
_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_ID_MAX = 2**64 - 1


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


def parse_id(offset: str) -> tuple[int, int] | None:
    """A stream entry ID (``"ms-seq"``) as numbers, or None if ``offset`` is not one."""
    match = _ID.fullmatch(offset)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    if ms > _ID_MAX or seq > _ID_MAX:
        return None
    return ms, seq


def next_id(entry: tuple[int, int]) -> str | None:
    """The smallest ID after ``entry`` (None after the largest), for XRANGE's start."""
    ms, seq = entry
    if seq < _ID_MAX:
        return f"{ms}-{seq + 1}"
    if ms < _ID_MAX:
        return f"{ms + 1}-0"
    return None


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

    async def pipeline(self, *commands: bytes) -> list[Any]:
        """Send commands (in RESP) in one write and return their replies, in order
        (with no other reply pending); raise the first error reply."""
        self.write(b"".join(commands))
        await self.drain()
        out: list[Any] = []
        while len(out) < len(commands):
            out.extend(await self.replies())
        for reply in out:
            if isinstance(reply, hiredis.ReplyError):
                raise redis.exceptions.ResponseError(str(reply))
        return out

    async def call(self, *parts: bytes) -> Any:
        """Send one command and return its reply."""
        return (await self.pipeline(_command(*parts)))[0]

    async def close(self) -> None:
        await self.connection.disconnect()


async def _first_failure(*coroutines: Awaitable[None]) -> None:
    """Run the coroutines until one ends (re-raising its error), then cancel the rest."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RedisBackend(Backend):
    """Moves bytes over Redis pub/sub."""

    name: ClassVar[str] = "redis"
    extra: ClassVar[str | None] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=512 * 1024 * 1024, sharded=True, durable_log=True,
        session_store=True)
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
        self._publishing = asyncio.Lock()
        self.broadcast_channel = self.channel
        self._publish_cmd = b"SPUBLISH" if self.sharded else b"PUBLISH"
        self._broadcast_key = self.broadcast_channel.encode()
        self._client: aioredis.Redis | None = None
        self.log_key = f"{self.channel}#log"
        self._log_key = self.log_key.encode()
        self._xadd = b""
        """XADD with its trimming, in RESP, up to the payload (set in ``_open``)."""
        self._log_begun = False
        self._server_ms: int | None = None
        """Redis's clock (ms) in the last entry ID it gave, and when (monotonic)."""
        self._server_ms_at = 0.0
        self._trimmed_at = -_TRIM_EVERY

    def node_channel(self, uid: str) -> str:
        return f"{self.channel}#{uid}"

    def session_key(self, pid: str) -> str:
        return f"{self.channel}#session#{pid}"

    async def _open(self) -> None:
        self._pool = aioredis.ConnectionPool.from_url(self.url, **self._client_options)
        self._client = aioredis.Redis(connection_pool=self._pool)
        if self.log is not None:
            keep = self.log.max_length + max(self.log.max_length, _SLACK)
            empty = _command(b"XADD", self._log_key, b"MAXLEN", b"~", b"%d" % keep,
                             b"*", _FIELD, b"")
            self._xadd = empty[:-len(b"$0\r\n\r\n")]

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

    def _require_client(self) -> aioredis.Redis:
        if self._client is None:
            raise redis.exceptions.ConnectionError("redis backend is not open")
        return self._client

    async def _run(self, ready: Callable[[], None]) -> None:
        pool = self._require_pool()
        if self.log is None or self.log.deliver is None:
            await self._listen(await _Raw.open(pool), ready)
            return
        stream = await _Raw.open(pool)
        try:
            position = await self._log_start(stream)
            raw = await _Raw.open(pool)
        except BaseException:
            await stream.close()
            raise
        try:
            await _first_failure(self._listen(raw, ready), self._follow_log(stream, position))
        finally:
            await stream.close()

    async def _listen(self, raw: _Raw, ready: Callable[[], None]) -> None:
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

    async def _log_start(self, stream: _Raw) -> bytes:
        """Where the live reader begins: at the end of the log the first time (which
        fixes ``log_position``), right after ``log_position`` after a reconnect."""
        if not self._log_begun:
            last = await stream.call(b"XREVRANGE", self._log_key, b"+", b"-",
                                     b"COUNT", b"1")
            if last:
                self.log_position = last[0][0].decode()
            self._log_begun = True
        position = self.log_position
        if position is None:
            return b"0-0"
        if await stream.call(b"XRANGE", self._log_key, position.encode(),
                             position.encode()):
            return position.encode()
        # trimming removes the oldest entries, so every entry left follows position;
        # if Redis lost its data, the new log starts over
        self.logger.warning(
            "log position %s is no longer in %s (trimmed while this node was away, or "
            "Redis lost its data): delivering from the oldest entry kept", position,
            self.log_key)
        return b"0-0"

    async def _follow_log(self, stream: _Raw, position: bytes) -> None:
        """Deliver every entry after ``position``, in order, as they are appended."""
        deliver = self._deliver_entry
        key = self._log_key
        while True:
            # whether position is still there, then (at once, atomically so) what
            # follows: if it is gone, entries after it may have been trimmed unread
            kept, reply = await stream.pipeline(
                _command(b"XRANGE", key, position, position),
                _command(b"XREAD", b"COUNT", _READ_COUNT, b"BLOCK", b"0", b"STREAMS",
                         key, position))
            if not kept and position != b"0-0":
                self._warn_trimmed(position)
            if not reply:
                continue
            # RESP3 answers with a map of streams, RESP2 with a list of pairs
            entries = reply[key] if isinstance(reply, dict) else reply[0][1]
            for entry_id, fields in entries:
                position = entry_id
                await deliver(entry_id.decode(), fields[1])

    def _warn_trimmed(self, position: bytes) -> None:
        """Warn that entries were trimmed before this node read them, unless
        ``position`` is older than the retention (then only it may be gone)."""
        log = self.log
        age = time.time() - int(position.partition(b"-")[0]) / 1000
        if log is not None and age < log.retention:
            self.logger.warning(
                "log entries after %s were trimmed from %s before this node read them "
                "(it fell more than %d entries behind): they are lost for its clients",
                position.decode(), self.log_key,
                log.max_length + max(log.max_length, _SLACK))

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        command = self._publish_cmd
        commands: list[bytes] = []
        appended = False
        for target, payload in batch:
            if target == LOG:
                commands.append(self._append(payload))
                appended = True
            else:
                commands.append(_command(command, self._target(target), payload))
        async with self._publishing:  # one round trip at a time, in call order
            if appended:
                commands.extend(self._trim())
            await self._round_trip(commands)

    async def _round_trip(self, commands: list[bytes]) -> None:
        publisher = self._publisher
        if publisher is None:
            publisher = self._publisher = await _Raw.open(self._require_pool())
        try:
            replies = await publisher.pipeline(*commands)
        except BaseException:
            # the stream may be out of step with its replies now: start afresh
            self._publisher = None
            await publisher.close()
            raise
        ids = [reply for reply in replies if isinstance(reply, bytes)]  # XADD's only
        if ids:
            self._server_ms = int(ids[-1].partition(b"-")[0])
            self._server_ms_at = time.monotonic()

    def _append(self, payload: bytes) -> bytes:
        if not self._xadd:
            raise RuntimeError("a log entry was sent but enable_log() was not called")
        return b"%b$%d\r\n%b\r\n" % (self._xadd, len(payload), payload)

    def _trim(self) -> list[bytes]:
        """At most once per ``_TRIM_EVERY``: XTRIM the entries older than the retention
        (by Redis's clock, estimated from the last ID it gave; never too early) and
        let the whole stream expire once the newest entry is that old."""
        log, now = self.log, time.monotonic()
        if log is None or now - self._trimmed_at < _TRIM_EVERY:
            return []
        self._trimmed_at = now
        retention_ms = int(log.retention * 1000)
        out = [_command(b"PEXPIRE", self._log_key,
                        b"%d" % (retention_ms + int(2000 * _TRIM_EVERY)))]
        if self._server_ms is not None:
            oldest = self._server_ms + int((now - self._server_ms_at) * 1000) - retention_ms
            if oldest > 0:
                out.append(_command(b"XTRIM", self._log_key, b"MINID", b"~",
                                    b"%d" % oldest))
        return out

    async def read_log(self, after: str, upto: str | None) -> list[tuple[str, bytes]] | None:
        log, start = self.log, parse_id(after)
        end = None if upto is None else parse_id(upto)
        if log is None or start is None or end is None:
            return None
        following = next_id(start)
        if following is None:
            return None
        async with self._require_client().pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.xrange(self.log_key, after, after, count=1)
            pipe.xrange(self.log_key, following, "+", count=log.max_length)
            (seconds, micros), found, entries = await pipe.execute()
        now_ms = seconds * 1000 + micros // 1000
        if (not found or start[0] < now_ms - log.retention * 1000
                or len(entries) >= log.max_length):
            return None  # gone, older than the retention, or beyond the length bound
        out: list[tuple[str, bytes]] = []
        for entry_id, fields in entries:
            ms, _, seq = entry_id.partition(b"-")
            if (int(ms), int(seq)) > end:
                break
            out.append((entry_id.decode(), fields[_FIELD]))
        return out

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        await self._require_client().set(self.session_key(pid), data,
                                         px=max(1, int(ttl * 1000)))

    async def take_session(self, pid: str) -> bytes | None:
        record = await self._require_client().getdel(self.session_key(pid))
        return record.encode() if isinstance(record, str) else record

    def _target(self, target: str | None) -> bytes:
        if target is None:
            return self._broadcast_key
        return self.node_channel(target).encode()
