"""``AsyncServer``: python-socketio's server with connection state recovery and the
cluster API.

With ``connection_state_recovery`` it speaks socket.io's recovery protocol as the
official JavaScript client expects it (socket.io 4.6+): the CONNECT reply carries a
private session id ``pid`` beside ``sid``; every event sent to clients without an ack
carries the log offset as its last argument; a socket whose transport is lost (not an
explicit disconnect) is saved for ``max_disconnection_duration`` seconds; a client
that connects with ``auth`` ``{"pid", "offset"}`` in that window, on any node, gets
its sid, rooms and session back and every event it missed, once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import socketio
from socketio import packet as sio_packet

from .cluster import ClusterManager, RemoteSocket, Room
from .eager_handlers import EagerHandlers
from .errors import ConfigurationError
from .forwarding import ForwardingEngine
from .recovery import (
    Recovery,
    RecoveryOptions,
    RecoverySetting,
    Restore,
    SessionRecord,
    new_pid,
)
from .registry import create_manager

__all__ = ["RECOVERABLE_REASONS", "SHUTTING_DOWN", "AsyncServer"]

SHUTTING_DOWN = "server shutting down"
"""The disconnect reason of the sockets :meth:`AsyncServer.shutdown` closes."""

RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout",
                                 SHUTTING_DOWN})
"""Lost transports whose sessions are kept (socket.io's list); an explicit disconnect
by the client or the server is final."""

_log = logging.getLogger("socketio_adapters.server")


class AsyncServer(EagerHandlers):
    """A ``socketio.AsyncServer`` on a :class:`ClusterManager`.

    :param client_manager: the cluster manager (see :func:`create_manager`); by
        default one over a private ``memory://`` hub, for a single process.
    :param connection_state_recovery: ``{"max_disconnection_duration": 120,
        "skip_middlewares": True}`` (seconds; see
        :class:`~socketio_adapters.recovery.RecoveryOptions`), ``True`` for those
        defaults, or ``None`` (off).
    :param websocket_compression: whether websockets accept the
        ``permessage-deflate`` extension. Off by default, as in Node's engine.io: every
        frame would be compressed, which costs CPU on both ends for the short frames
        socket.io mostly sends. ``True`` accepts it when the client offers it (then
        every frame is compressed: aiohttp has no size threshold). It applies to
        ``async_mode="aiohttp"``; under ASGI the server negotiates it (uvicorn's
        ``--ws-per-message-deflate``, on by default), and ``True`` raises
        :class:`ConfigurationError`. See :mod:`socketio_adapters.websocket`.

    Every other argument is python-socketio's.
    """

    def __init__(self, client_manager: ClusterManager | None = None, *,
                 connection_state_recovery: RecoverySetting = None,
                 websocket_compression: bool = False, **kwargs: Any) -> None:
        options = RecoveryOptions.coerce(connection_state_recovery)
        if client_manager is None:
            client_manager = create_manager(f"memory://server-{secrets.token_hex(6)}")
        if not isinstance(client_manager, ClusterManager):
            raise ConfigurationError(
                "socketio_adapters.AsyncServer needs a ClusterManager (see "
                f"create_manager), not {type(client_manager).__name__}")
        if options is not None:
            client_manager.enable_recovery(options)
        self.recovery_options = options
        super().__init__(client_manager=client_manager,
                         websocket_compression=websocket_compression, **kwargs)
        self.cluster: ClusterManager = client_manager
        if isinstance(self.eio, ForwardingEngine):  # sessions need no sticky routing
            self.eio.join_cluster(client_manager)
        self._pids: dict[tuple[str, str], str] = {}
        self._recovered: set[tuple[str, str]] = set()
        self.restore_callbacks: list[Callable[[str, str], None]] = []
        """Called with ``(namespace, sid)`` for each socket restored here (an edge
        node of the distributor mode hands it to an application server)."""
        self._shutting_down = False
        self._replays: set[asyncio.Task[None]] = set()
        """Restores sending their missed events (see :meth:`_restore`)."""

    def _engineio_server_class(self) -> type[ForwardingEngine]:
        return ForwardingEngine

    # ------------------------------------------------------------ recovery

    def recovered(self, sid: str, namespace: str | None = None) -> bool:
        """Whether this socket was restored from a lost connection."""
        return (namespace or "/", sid) in self._recovered

    async def _handle_connect(self, eio_sid: str, namespace: str | None,
                              data: Any) -> None:
        namespace = namespace or "/"
        options = self.recovery_options
        if options is not None and isinstance(data, dict):
            pid, offset = data.get("pid"), data.get("offset")
            if isinstance(pid, str) and isinstance(offset, str) and self._serves(namespace):
                await self.cluster.ready()
                restore = None
                try:
                    restore = await self._recovery.take(namespace, pid, offset)
                except Exception:
                    _log.exception("could not restore a session in %s; the client "
                                   "gets a fresh one", namespace)
                if restore is not None:
                    await self._restore(eio_sid, namespace, restore, data)
                    return
        await super()._handle_connect(eio_sid, namespace, data)

    @property
    def _recovery(self) -> Recovery:
        recovery = self.cluster.recovery
        if recovery is None:
            raise RuntimeError("connection state recovery is not enabled")
        return recovery

    def _serves(self, namespace: str) -> bool:
        return (namespace in self.handlers or namespace in self.namespace_handlers
                or self.namespaces == "*" or namespace in self.namespaces)

    async def _restore(self, eio_sid: str, namespace: str, restore: Restore,
                       auth: dict[str, Any]) -> None:
        manager = self.cluster
        record = restore.record
        sid, key = record.sid, (namespace, record.sid)
        if manager.is_connected(sid, namespace) or eio_sid not in self.eio.sockets:
            self._recovery.close(restore.tail)
            await super()._handle_connect(eio_sid, namespace, auth)
            return
        eio_session = await self.eio.get_session(eio_sid)
        eio_session[namespace] = record.data if isinstance(record.data, dict) else {}
        self._pids[key] = record.pid
        self._recovered.add(key)

        async def announce() -> None:
            assert self.recovery_options is not None
            if not self.recovery_options.skip_middlewares:
                refused = await self._refused(namespace, sid, eio_sid, auth)
                if refused is not None:
                    raise _Refused(refused)
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT, {"sid": sid, "pid": record.pid}, namespace=namespace))

        try:
            await self._recovery.begin(restore, eio_sid, announce)
        except _Refused as refusal:
            self._pids.pop(key, None)
            self._recovered.discard(key)
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT_ERROR, data=refusal.reason, namespace=namespace))
            await manager.disconnect(sid, namespace, ignore_queue=True)
            return
        self.logger.info("restored %s [%s]", sid, namespace)
        for callback in self.restore_callbacks:
            try:
                callback(namespace, sid)
            except Exception:
                _log.exception("a restore callback failed")
        # The missed events go in a task of their own: this is the handling of the
        # client's CONNECT, and on long-polling it holds the POST that carried it.
        # The official JS client upgrades to websocket meanwhile, and pauses polling
        # until that POST is answered: a replay that waited here for the client to
        # poll would wait for itself. Live events keep going to the socket's tail
        # until the replay is over, so the client still gets each event once, in
        # order.
        task = asyncio.create_task(self._replay(eio_sid, namespace, restore))
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay(self, eio_sid: str, namespace: str, restore: Restore) -> None:
        sid = restore.record.sid
        try:
            await self._recovery.replay(restore, eio_sid)
        except ConnectionError:
            # the client left while catching up: if its transport close came before
            # the socket was registered, nothing else will disconnect it (and keep
            # its session again for the next attempt)
            sock = self.eio.sockets.get(eio_sid)
            if self.cluster.is_connected(sid, namespace) and (sock is None or sock.closed):
                await self._handle_disconnect(eio_sid, namespace, "transport close")
        except Exception:
            _log.exception("restoring %s [%s]: sending the missed events failed",
                           sid, namespace)

    async def _refused(self, namespace: str, sid: str, eio_sid: str,
                       auth: dict[str, Any]) -> Any:
        """Run the connect handler for a restored socket; its refusal, or None."""
        try:
            success = await self._trigger_event("connect", namespace, sid,
                                                self.environ[eio_sid], auth)
        except socketio.exceptions.ConnectionRefusedError as exc:
            return exc.error_args
        except ConnectionRefusedError:
            return {"message": "Connection refused by server"}
        if success is False:
            return socketio.exceptions.ConnectionRefusedError().error_args
        return None

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        if (self.recovery_options is not None and pkt.packet_type == sio_packet.CONNECT
                and isinstance(pkt.data, dict) and "pid" not in pkt.data
                and isinstance(pkt.data.get("sid"), str)):
            key = (pkt.namespace or "/", pkt.data["sid"])
            pid = self._pids.get(key)
            if pid is None:
                pid = self._pids[key] = new_pid()
            pkt.data = {**pkt.data, "pid": pid}
        await super()._send_packet(eio_sid, pkt)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str) -> None:
        # An engine.io CLOSE packet closes the transport, not the socket.io session:
        # socket.io's server calls it "transport close" and keeps the session for
        # recovery (a client that leaves sends socket.io DISCONNECT packets first,
        # which end its sockets before this). python-engineio says "client
        # disconnect", the same words as that explicit DISCONNECT: tell them apart.
        if reason == self.reason.CLIENT_DISCONNECT:
            reason = self.reason.TRANSPORT_CLOSE
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _handle_disconnect(self, eio_sid: str, namespace: str | None,
                                 reason: str | None = None) -> None:
        namespace = namespace or "/"
        record = None
        if self.recovery_options is not None:
            if reason in RECOVERABLE_REASONS or (self._shutting_down and reason):
                record = await self._session_record(eio_sid, namespace)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        await super()._handle_disconnect(eio_sid, namespace, reason)
        if sid is not None:
            self._pids.pop((namespace, sid), None)
            self._recovered.discard((namespace, sid))
        if record is not None:
            try:
                await self._recovery.save(record)
            except Exception:
                _log.exception("could not save the session of %s [%s] for "
                                      "recovery", record.sid, namespace)

    async def _session_record(self, eio_sid: str, namespace: str) -> SessionRecord | None:
        manager = self.cluster
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not manager.is_connected(sid, namespace):
            return None
        pid = self._pids.get((namespace, sid))
        if pid is None:
            return None
        try:
            data = (await self.eio.get_session(eio_sid)).get(namespace, {})
        except KeyError:
            data = {}
        assert self.recovery_options is not None
        rooms = [r for r in manager.get_rooms(sid, namespace) if r != sid]
        record = SessionRecord(sid, pid, namespace, rooms, data,
                               _now() + self.recovery_options.max_disconnection_duration)
        try:
            record.pack()
        except (TypeError, ValueError) as exc:
            _log.warning(
                "the session of %s [%s] cannot be kept for recovery (%s: only "
                "msgpack types travel between nodes); it will get a fresh session",
                sid, namespace, exc)
            return None
        return record

    async def shutdown(self) -> None:
        """Close every client's transport, keeping their sessions for recovery on
        another node (socket.io's "server shutting down"), then stop background
        tasks. Call it before stopping the manager."""
        self._shutting_down = True
        for sock in list(self.eio.sockets.values()):
            try:
                await sock.close(wait=False, abort=True, reason=SHUTTING_DOWN)
                # end the websocket or the pending long-poll now (engine.io's writer
                # stops at None): the client sees its connection drop, as when a
                # process exits, and reconnects, to another node
                sock.queue.put_nowait(None)
            except Exception:  # a socket already gone
                _log.debug("closing a socket at shutdown failed", exc_info=True)
        replays = list(self._replays)  # their clients are gone: no use waiting
        for task in replays:
            task.cancel()
        await asyncio.gather(*replays, return_exceptions=True)
        eio = self.eio
        if getattr(eio, "service_task_event", None) and not getattr(
                eio, "service_task_handle", None):
            return  # engine.io's service task is not running: awaiting it would fail
        await super().shutdown()

    # ------------------------------------------------------------ the cluster API

    async def fetch_sockets(self, to: Room = None, namespace: str = "/",
                            skip_sid: Room = None,
                            timeout: float | None = None) -> list[RemoteSocket]:
        """The matching sockets of every node (see :meth:`ClusterManager.fetch_sockets`)."""
        return await self.cluster.fetch_sockets(to, namespace, timeout=timeout,
                                               skip_sid=skip_sid)

    async def sockets_join(self, rooms: str | Iterable[str], to: Room = None,
                           namespace: str = "/", skip_sid: Room = None) -> None:
        await self.cluster.sockets_join(rooms, to, namespace, skip_sid)

    async def sockets_leave(self, rooms: str | Iterable[str], to: Room = None,
                            namespace: str = "/", skip_sid: Room = None) -> None:
        await self.cluster.sockets_leave(rooms, to, namespace, skip_sid)

    async def disconnect_sockets(self, to: Room = None, namespace: str = "/",
                                 skip_sid: Room = None) -> None:
        await self.cluster.disconnect_sockets(to, namespace, skip_sid)

    async def emit_with_ack(self, event: str, data: Any = None, to: Room = None,
                            namespace: str = "/", skip_sid: Room = None,
                            timeout: float = 5.0) -> list[Any]:
        """Emit and collect every client's ack, on every node."""
        return await self.cluster.emit_with_ack(event, data, to, namespace,
                                                timeout=timeout, skip_sid=skip_sid)

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        await self.cluster.server_side_emit(event, *args, namespace=namespace)

    async def server_side_emit_with_ack(self, event: str, *args: Any, namespace: str = "/",
                                        timeout: float | None = None) -> list[Any]:
        return await self.cluster.server_side_emit_with_ack(
            event, *args, namespace=namespace, timeout=timeout)

    async def server_count(self) -> int:
        return await self.cluster.server_count()


class _Refused(Exception):
    def __init__(self, reason: Any) -> None:
        super().__init__("connect handler refused a restored socket")
        self.reason = reason


def _now() -> float:
    return time.time()
