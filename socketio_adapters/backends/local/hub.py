"""The hub of a ``local://`` cluster: one process of the cluster (whichever holds
the folder's lock) relays every node's messages, numbers the log's records and
arbitrates sessions. Every node that keeps the log holds a copy of the log and of
the session table, so the process that takes the hub over after its host died
(the kernel released the lock) starts from its own copy: records the dead hub had
not sent out yet are the only loss. The hub answers a save or an append after it
wrote every other node's copy, so an acknowledged one is on the other nodes unless
one of them was behind in reading (its copy still queued in the hub's process).

A record's key is ``(term, seq)``: the sequence goes on from the copy the hub
started from, and the term (milliseconds since the epoch, above any term seen) is
the hub's own, so a record a lost hub numbered is never confused with another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ...storage import MemoryLog, MemorySessions, StoredRecord
from .folder import HubLock, RuntimeFolder
from .wire import Frame, FrameError, FrameReader, encode

__all__ = ["Hub", "LogLimits"]

_SLOW_NODE_BYTES = 256 * 1024 * 1024
"""A node this far behind in reading is disconnected (it reconnects and reads the
log from its position); its pub/sub messages meanwhile are lost, and counted."""
_STOP_SECONDS = 2.0


@dataclass
class LogLimits:
    """How much log the cluster keeps: the most any node asked for."""

    retention: float = 0.0
    max_length: int = 0

    def widen(self, retention: float, max_length: int) -> None:
        self.retention = max(self.retention, retention)
        self.max_length = max(self.max_length, max_length)


@dataclass(eq=False)
class _Peer:
    writer: asyncio.StreamWriter
    node_id: str = ""
    subscribed: bool = False
    replica: bool = False
    pending: list[bytes] = field(default_factory=list)
    rooms: set[str] = field(default_factory=set)


def record_frame(record: StoredRecord) -> bytes:
    return encode(Frame.RECORD, list(record.key), record.stamp, record.body)


class Hub:
    """Serves the cluster's nodes on the folder's socket while its lock is held."""

    def __init__(self, folder: RuntimeFolder, lock: HubLock, log: MemoryLog,
                 sessions: MemorySessions, limits: LogLimits,
                 logger: logging.Logger) -> None:
        self.folder = folder
        self.lock = lock
        last = log.last()
        last_term = last[0][0] if last is not None and len(last[0]) == 2 else 0
        self.term = max(int(time.time() * 1000), last_term + 1)
        log.prefix = (self.term,)
        self.log = log
        self.sessions = sessions
        self.limits = limits
        self.logger = logger
        self.dropped = 0
        """Connections closed for bad frames or for falling too far behind."""
        self._peers: dict[_Peer, None] = {}
        """Every connection, in the order they came (an ordered set)."""
        self._by_id: dict[str, _Peer] = {}
        self._rooms: dict[str, set[_Peer]] = {}
        """Room key -> the peers subscribed to it."""
        self._dirty: list[_Peer] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        path = self.folder.socket_path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a hub that died: its lock is ours now
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        os.chmod(path, 0o600)
        self.logger.info("local hub for %s started in process %d (term %d, %d records)",
                         self.folder.path, os.getpid(), self.term, len(self.log))

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for peer in list(self._peers):
                peer.writer.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _STOP_SECONDS)
        self.lock.release()

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        peer = _Peer(writer)
        self._peers[peer] = None
        frames = FrameReader(reader)
        try:
            while True:
                for frame in await frames.frames():
                    self._handle(peer, frame)
                self._flush(peer)
        except FrameError as exc:
            self.dropped += 1
            self.logger.warning("local hub: closing the connection of node %r: %s",
                                peer.node_id, exc)
        except (ConnectionError, OSError):
            pass
        finally:
            self._flush()
            self._peers.pop(peer, None)
            self._leave_rooms(peer, list(peer.rooms))
            if self._by_id.get(peer.node_id) is peer:
                del self._by_id[peer.node_id]
            writer.close()

    def _send(self, peer: _Peer, frame: bytes) -> None:
        if not peer.pending:
            self._dirty.append(peer)
        peer.pending.append(frame)

    def _flush(self, sender: _Peer | None = None) -> None:
        """Write what each peer is due; the sender's last: its replies acknowledge a
        save or an append, so every other node's copy is written before them (a hub
        killed between the two leaves no acknowledged record on itself alone)."""
        dirty, self._dirty = self._dirty, []
        if sender is not None and sender in dirty:
            dirty.remove(sender)
            dirty.append(sender)
        for peer in dirty:
            data, peer.pending = b"".join(peer.pending), []
            if peer.writer.is_closing():
                continue
            peer.writer.write(data)
            if peer.writer.transport.get_write_buffer_size() > _SLOW_NODE_BYTES:
                self.dropped += 1
                self.logger.warning(
                    "local hub: node %r reads too slowly (over %d MiB waiting): "
                    "disconnecting it", peer.node_id, _SLOW_NODE_BYTES >> 20)
                peer.writer.transport.abort()

    def _handle(self, peer: _Peer, frame: list[Any]) -> None:
        try:
            kind = frame[0]
            if kind == Frame.PUBLISH:
                self._publish(peer, frame[1], frame[2])
            elif kind == Frame.APPEND:
                self._append(frame[1])
            elif kind == Frame.SAVE:
                self._save(peer, frame[1], frame[2], frame[3], frame[4])
            elif kind == Frame.TAKE:
                self._take(peer, frame[1], frame[2])
            elif kind == Frame.TO_ROOM:
                self._to_room(peer, frame[1], frame[2])
            elif kind == Frame.SYNC:
                self._send(peer, encode(Frame.REPLY, frame[1], None))
            elif kind == Frame.ROOMS:
                self._join_rooms(peer, frame[2])
                self._send(peer, encode(Frame.REPLY, frame[1], None))
            elif kind == Frame.UNROOMS:
                self._leave_rooms(peer, frame[2])
                self._send(peer, encode(Frame.REPLY, frame[1], None))
            elif kind == Frame.HELLO:
                self._hello(peer, frame[1], frame[2], frame[3], frame[4], frame[5])
                if len(frame) > 6:
                    self._join_rooms(peer, frame[6])
            else:
                raise FrameError(f"unknown frame kind {kind!r}")
        except (IndexError, TypeError, ValueError) as exc:
            raise FrameError(f"malformed frame: {type(exc).__name__}: {exc}") from None

    def _hello(self, peer: _Peer, node_id: str, subscribe: bool, limits: Any,
               replica: bool, last_key: Any) -> None:
        peer.node_id, peer.subscribed, peer.replica = str(node_id), bool(subscribe), \
            bool(replica)
        if subscribe:
            old = self._by_id.get(peer.node_id)
            if old is not None and old is not peer:
                old.writer.close()
            self._by_id[peer.node_id] = peer
        if limits is not None:
            self.limits.widen(float(limits[0]), int(limits[1]))
        records: list[Any] = []
        sessions: list[Any] | None = None
        if replica:
            after = None if last_key is None else tuple(last_key)
            held = self.log.after(after)
            records = [[list(r.key), r.stamp, r.body]
                       for r in (held if held is not None else self.log)]
            self.sessions.purge()
            sessions = [[pid, expires, data]
                        for pid, (expires, data) in self.sessions.records.items()]
        self._send(peer, encode(Frame.WELCOME, self.term, os.getpid(),
                                [self.limits.retention, self.limits.max_length],
                                records, sessions))

    def _publish(self, sender: _Peer, target: str | None, payload: bytes) -> None:
        if not isinstance(payload, bytes) or not isinstance(target, str | None):
            raise FrameError("a message must be bytes, for every node or one uid")
        frame = encode(Frame.MESSAGE, payload)
        if target is None:
            for peer in self._by_id.values():
                if peer is not sender:
                    self._send(peer, frame)
            return
        direct = self._by_id.get(target)
        if direct is not None:
            self._send(direct, frame)

    def _join_rooms(self, peer: _Peer, keys: list[Any]) -> None:
        if not keys:
            return  # an emitter's hello: it subscribes to nothing
        if not peer.subscribed or not all(isinstance(k, str) for k in keys):
            raise FrameError("room keys are strings, of a node that subscribes")
        for key in keys:
            peer.rooms.add(key)
            self._rooms.setdefault(key, set()).add(peer)

    def _leave_rooms(self, peer: _Peer, keys: list[Any]) -> None:
        for key in keys:
            peer.rooms.discard(key)
            members = self._rooms.get(key)
            if members is not None:
                members.discard(peer)
                if not members:
                    del self._rooms[key]

    def _to_room(self, sender: _Peer, key: str, payload: bytes) -> None:
        if not isinstance(payload, bytes) or not isinstance(key, str):
            raise FrameError("a room message must be bytes, for a string key")
        members = self._rooms.get(key)
        if members:
            frame = encode(Frame.MESSAGE, payload)
            for peer in members:
                if peer is not sender:
                    self._send(peer, frame)

    def _append(self, body: bytes) -> None:
        if not isinstance(body, bytes):
            raise FrameError("a log record must be bytes")
        record = self.log.append(body, self.limits.retention, self.limits.max_length)
        frame = record_frame(record)
        for peer in self._peers:
            if peer.replica:
                self._send(peer, frame)

    def _save(self, sender: _Peer, rid: int, pid: str, data: bytes,
              expires: float) -> None:
        if not isinstance(pid, str) or not isinstance(data, bytes):
            raise FrameError("a session is bytes under a string id")
        self.sessions.save(pid, data, float(expires))
        frame = encode(Frame.SESSION, pid, expires, data)
        for peer in self._peers:
            if peer.replica:
                self._send(peer, frame)
        self._send(sender, encode(Frame.REPLY, rid, None))

    def _take(self, sender: _Peer, rid: int, pid: str) -> None:
        data = self.sessions.take(pid)
        if data is not None:
            frame = encode(Frame.GONE, pid)
            for peer in self._peers:
                if peer.replica:
                    self._send(peer, frame)
        self._send(sender, encode(Frame.REPLY, rid, data))
