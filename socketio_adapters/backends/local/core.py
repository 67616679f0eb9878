"""The ``local://`` backend's node: connects to the hub (hosting it when no process
of the cluster does), relays payloads, follows the log and keeps its copy."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ...storage import MemoryLog, MemorySessions, StoredRecord
from ..base import LOG, Backend, Capabilities, LogRecord, Outgoing, RecordKey, RoomTarget
from .folder import HubLock, RuntimeFolder
from .hub import Hub, LogLimits
from .wire import Frame, FrameError, FrameReader, encode

__all__ = ["LocalBackend"]

_RETRY_SECONDS = 0.05
"""Between attempts to reach a hub that is not there yet."""
_HUB_STARTING_SECONDS = 2.0
"""How long a node waits for a hub that is starting before it reports the failure."""


class LocalBackend(Backend):
    """The processes of one machine that use the same ``local://NAME`` form one
    cluster through a Unix domain socket, with no broker (see the package doc)."""

    name: ClassVar[str] = "local"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=512 * 1024 * 1024, durable_log=True,
        session_store=True, multi_process=True, routes_rooms=True)
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError, EOFError)
    log_key_parts: ClassVar[int] = 2
    log_in_memory: ClassVar[bool] = True

    def __init__(self, url: str = "local://", **options: Any) -> None:
        super().__init__(url, **options)
        self.folder = RuntimeFolder(url)
        self.hub: Hub | None = None
        """The hub, while this process hosts it."""
        self._lock = HubLock(self.folder)
        self._writer: asyncio.StreamWriter | None = None
        self._replica = MemoryLog()
        self._sessions = MemorySessions()
        self._limits = LogLimits()
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._rids = itertools.count(1)
        self._emitter_reader: asyncio.Task[None] | None = None
        self._hello_rooms: set[str] = set()
        """The room keys the last hello subscribed to."""
        self._pending_frames: list[list[Any]] = []
        """Frames that came in the same read as the hub's welcome."""

    # ------------------------------------------------------------ connection

    async def _open(self) -> None:
        self.folder.create()
        if self._deliver is None:  # an emitter never hosts the hub: it waits for one
            deadline = time.monotonic() + 0.9 * self.settings["connect_timeout"]
            while True:
                try:
                    await self._connect_emitter()
                    return
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        raise ConnectionRefusedError(
                            f"no process serves the cluster in {self.folder.path} "
                            f"({exc}): start a server of it first") from None
                await asyncio.sleep(_RETRY_SECONDS)

    async def _connect(self) -> tuple[FrameReader, asyncio.StreamWriter, list[Any]]:
        """Connect to the hub and say hello (with the room keys to subscribe to);
        returns the hub's welcome."""
        reader, writer = await asyncio.open_unix_connection(str(self.folder.socket_path))
        log = self.log
        replica = log is not None and self._deliver is not None
        last = self._replica.last() if replica else None
        writer.write(encode(Frame.HELLO, self.node_id, self._deliver is not None,
                            None if log is None else [log.retention, log.max_length],
                            replica, None if last is None else list(last[0]),
                            sorted(self.room_keys) if self._deliver is not None else []))
        self._hello_rooms = set(self.room_keys)
        frames = FrameReader(reader)
        try:
            first = await frames.frames()
        except BaseException:
            writer.close()
            raise
        if first[0][0] != Frame.WELCOME:
            writer.close()
            raise FrameError(f"the hub answered {first[0][0]!r} before its welcome")
        self._pending_frames = first[1:]
        return frames, writer, first[0]

    async def _connect_emitter(self) -> None:
        frames, writer, _ = await self._connect()
        self._writer = writer
        self._emitter_reader = asyncio.create_task(self._read_replies(frames, writer))

    async def _read_replies(self, frames: FrameReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                for frame in await frames.frames():
                    await self._handle(frame)
        except (OSError, EOFError) as exc:
            self.logger.warning("local: lost the hub (%s); reconnecting on the next "
                                "publish", exc)
        finally:
            self._lost(writer)

    def _lost(self, writer: asyncio.StreamWriter) -> None:
        if self._writer is writer:
            self._writer = None
        writer.close()
        replies, self._replies = self._replies, {}
        for future in replies.values():
            if not future.done():
                future.set_exception(ConnectionResetError("lost the local:// hub"))

    async def _host_if_free(self) -> None:
        if self.hub is None and self._lock.try_acquire():
            hub = Hub(self.folder, self._lock, self._copy_of_log(),
                      self._copy_of_sessions(), LogLimits(self._limits.retention,
                                                          self._limits.max_length),
                      self.logger)
            try:
                await hub.start()
            except BaseException:
                self._lock.release()
                raise
            self.hub = hub

    async def _reach_hub(self) -> tuple[FrameReader, asyncio.StreamWriter, list[Any]]:
        """Host the hub if no process does, and connect to it. A hub that another
        process is starting (it took the lock, it does not listen yet) is waited for
        briefly, so that this ordinary race is not reported as a lost connection."""
        deadline = time.monotonic() + _HUB_STARTING_SECONDS
        while True:
            await self._host_if_free()
            try:
                return await self._connect()
            except (ConnectionRefusedError, FileNotFoundError):
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(_RETRY_SECONDS)

    async def _run(self, ready: Callable[[], None]) -> None:
        frames, writer, welcome = await self._reach_hub()
        try:
            await self._welcome(welcome)
            self._writer = writer
            # keys that changed since the hello: the hub handles these frames before
            # anything this node sends later
            hello = self._hello_rooms
            missing, gone = sorted(self.room_keys - hello), sorted(hello - self.room_keys)
            if missing:
                writer.write(encode(Frame.ROOMS, 0, missing))
            if gone:
                writer.write(encode(Frame.UNROOMS, 0, gone))
            ready()
            pending, self._pending_frames = self._pending_frames, []
            for frame in pending:
                await self._handle(frame)
            while True:
                try:
                    batch = await frames.frames()
                except ConnectionResetError:
                    raise ConnectionResetError(
                        "the process that hosted the hub stopped; one of the others "
                        "takes it over") from None
                for frame in batch:
                    await self._handle(frame)
        finally:
            self._lost(writer)

    async def _welcome(self, welcome: list[Any]) -> None:
        _, _term, _pid, limits, records, sessions = welcome
        self._limits.widen(float(limits[0]), int(limits[1]))
        if sessions is not None:
            self._sessions.records = {pid: (float(expires), data)
                                      for pid, expires, data in sessions}
        log = self.log
        if log is None or self._deliver is None:
            return
        for key, stamp, body in records:
            self._replica.add(StoredRecord(tuple(key), stamp, body))
        self._trim()
        reader = self.log_reader
        resume = reader.restart(self._replica.last())
        for record in self._replica.from_key(resume):
            await reader.feed(record.key, record.body, record.stamp)

    async def _handle(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == Frame.MESSAGE:
            await self._dispatch(frame[1])
        elif kind == Frame.RECORD:
            record = StoredRecord(tuple(frame[1]), frame[2], frame[3])
            if self._replica.add(record):
                self._trim()
                await self.log_reader.feed(record.key, record.body, record.stamp)
        elif kind == Frame.REPLY:
            future = self._replies.pop(frame[1], None)
            if future is not None and not future.done():
                future.set_result(frame[2])
        elif kind == Frame.SESSION:
            self._sessions.records[frame[1]] = (float(frame[2]), frame[3])
        elif kind == Frame.GONE:
            self._sessions.records.pop(frame[1], None)
        else:
            raise FrameError(f"unexpected frame kind {kind!r} from the hub")

    def _trim(self) -> None:
        log = self.log
        if log is not None:
            self._replica.trim(max(log.retention, self._limits.retention),
                               max(log.max_length, self._limits.max_length))

    def _copy_of_log(self) -> MemoryLog:
        copy = MemoryLog()
        copy.records.extend(self._replica.records)
        copy.next_seq = self._replica.next_seq
        return copy

    def _copy_of_sessions(self) -> MemorySessions:
        copy = MemorySessions()
        copy.records.update(self._sessions.records)
        return copy

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            self._lost(writer)
        task, self._emitter_reader = self._emitter_reader, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        hub, self.hub = self.hub, None
        if hub is not None:
            await hub.stop()

    # ------------------------------------------------------------ publishing

    async def _connection(self) -> asyncio.StreamWriter:
        writer = self._writer
        if writer is None or writer.is_closing():
            if self._deliver is not None:
                raise ConnectionResetError("not connected to the local:// hub "
                                           "(reconnecting)")
            await self._connect_emitter()  # raises OSError when there is no hub
            writer = self._writer
            assert writer is not None
        return writer

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        writer = await self._connection()
        writer.write(b"".join(
            encode(Frame.APPEND, payload) if target == LOG
            else encode(Frame.TO_ROOM, target.key, payload)
            if isinstance(target, RoomTarget)
            else encode(Frame.PUBLISH, target, payload)
            for target, payload in batch))
        # the hub handles a connection's frames in order: once it answers, it has
        # handled the batch (forwarded or appended it), so nothing another node
        # publishes from now on can overtake it
        await self._request(Frame.SYNC)

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        await self._request(Frame.ROOMS, list(keys))

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        await self._request(Frame.UNROOMS, list(keys))

    async def _request(self, *frame: Any) -> Any:
        writer = await self._connection()
        rid = next(self._rids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        try:
            writer.write(encode(frame[0], rid, *frame[1:]))
            await writer.drain()
            return await asyncio.wait_for(future, self.settings["connect_timeout"])
        finally:
            self._replies.pop(rid, None)

    # ------------------------------------------------------------ log and sessions

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        return self._replica.fetch(first, last, limit)

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        await self._request(Frame.SAVE, pid, data, time.time() + ttl)

    async def take_session(self, pid: str) -> bytes | None:
        data = await self._request(Frame.TAKE, pid)
        return data if isinstance(data, bytes) else None
