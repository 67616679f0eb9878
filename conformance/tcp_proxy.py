"""A TCP proxy on loopback that can go silent: the network fault of a cloud load
balancer or NAT that dropped a connection's state without telling either end.

``partition()`` stops passing bytes both ways while every connection stays open
(new connections are accepted and get no answer either); ``heal()`` passes bytes
again for new connections and resets those that lived through the silence (their
state is gone, as after a NAT's timeout)."""

from __future__ import annotations

import asyncio
import contextlib

from .brokers import HOST

__all__ = ["SilentProxy"]

_CHUNK = 65536


class SilentProxy:
    """Forwards ``HOST:port`` to ``HOST:upstream``; see the module doc."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.silent = False
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._through_silence: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> SilentProxy:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def partition(self) -> None:
        self.silent = True
        self._flowing.clear()
        self._through_silence |= self._open

    def heal(self) -> None:
        self.silent = False
        for writer in self._through_silence:
            if writer.transport is not None and not writer.is_closing():
                writer.transport.abort()  # a reset: the connection's state is gone
        self._through_silence.clear()
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        if self.silent:
            self._through_silence.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()
            if writer.is_closing():
                return
            up_reader, upstream = await asyncio.open_connection(HOST, self.upstream)
            self._open.add(upstream)
            await asyncio.gather(self._pump(reader, upstream),
                                 self._pump(up_reader, writer))
        except OSError:
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._open.discard(end)
                    self._through_silence.discard(end)
                    end.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await source.read(_CHUNK)
                if not data:
                    break
                if self.silent:  # swallowed, as a dead path swallows packets
                    await self._flowing.wait()
                    return  # its connection lived through the silence: reset at heal
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
