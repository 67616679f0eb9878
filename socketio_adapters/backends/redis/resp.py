"""Connections opened by redis-py, then spoken to in raw RESP and parsed with hiredis
(several times cheaper per message than redis-py's own command path)."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection

__all__ = ["PipelineError", "RawConnection", "SilenceWatch", "command"]

_READ_SIZE = 256 * 1024


def command(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


class PipelineError(redis.exceptions.ResponseError):
    """An error reply to a command of a pipeline (the first one's text), with every
    reply of the pipeline (errors as :class:`hiredis.ReplyError`)."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies


class RawConnection:
    """A connection opened by redis-py (URL, TLS, AUTH, SELECT) and then spoken to in
    raw RESP."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.parser = hiredis.Reader()

    @classmethod
    async def open(cls, pool: aioredis.ConnectionPool) -> RawConnection:
        return await cls.connect(pool.make_connection())  # type: ignore[no-untyped-call]

    @classmethod
    async def connect(cls, connection: AbstractConnection) -> RawConnection:
        """Connect a new, unconnected connection of redis-py's and wrap it."""
        await connection.connect()  # type: ignore[no-untyped-call]
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
                raise PipelineError(str(reply), out)
        return out

    async def call(self, *parts: bytes) -> Any:
        """Send one command and return its reply."""
        return (await self.pipeline(command(*parts)))[0]

    def abort(self) -> None:
        """Drop the connection at once: a read waiting on it ends (closed)."""
        writer = self.connection._writer
        if writer is not None:
            writer.transport.abort()

    async def close(self) -> None:
        await self.connection.disconnect()


class SilenceWatch:
    """Notices a subscriber connection gone silent, without a timer per read (a read
    waits on the connection alone, as fast as it can be woken).

    Every half ``interval`` a timer looks whether anything arrived since its last
    look (:meth:`heard`, called on each read). After an interval of silence it sends
    PING; after another one with no answer it closes the connection, which ends the
    read waiting on it, and :attr:`failure` says why. A half-open connection (a NAT
    or balancer that dropped it) is so noticed within about two or three intervals.
    """

    def __init__(self, raw: RawConnection, interval: float) -> None:
        self.raw = raw
        self.step = interval / 2
        self.interval = interval
        self.failure: redis.exceptions.ConnectionError | None = None
        self._heard = True
        self._silent_looks = 0
        self._handle = asyncio.get_running_loop().call_later(self.step, self._look)

    def heard(self) -> None:
        self._heard = True

    def stop(self) -> None:
        self._handle.cancel()

    def _look(self) -> None:
        if self._heard:
            self._heard = False
            self._silent_looks = 0
        else:
            self._silent_looks += 1
            if self._silent_looks == 2:  # an interval of silence: ask
                try:
                    self.raw.write(command(b"PING"))
                except redis.exceptions.ConnectionError:
                    return  # closed: the read waiting on it has ended
            elif self._silent_looks >= 4:  # no answer within another interval
                self.failure = redis.exceptions.ConnectionError(
                    f"no answer to PING within {self.interval:g}s: the subscriber "
                    "connection is silent")
                self.raw.abort()
                return
        self._handle = asyncio.get_running_loop().call_later(self.step, self._look)
