"""Inbound: every message that reaches this node enters through one method,
:meth:`Inbound.dispatch`, whether it came over pub/sub or from the durable log (then
with its ``offset``), and that is where it is decided, once, who receives it.

A log entry is delivered to the local clients it targets with its offset appended
as the event's last argument, skipping the sockets a restore holds (their catch-up
carries on from the log); recovery observes every well-formed entry first (its
restores' tails, its own session claims). Anything that does not parse is counted and
dropped, never fatal: bytes that are no envelope, a payload wrong for its type, a
message in this node's name that it did not write, a type of the log (a session save
or claim) over pub/sub, and in the log anything but events, session saves and claims.
A handler that fails otherwise is logged and the subscription goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..errors import MalformedMessage, NotStarted
from ..protocol import (
    Ack,
    Broadcast,
    ClientCount,
    Disconnect,
    EngineFrame,
    EngineRequest,
    FetchSockets,
    Message,
    MessageType,
    Response,
    RoomChange,
    SessionClaim,
    SocketInfo,
    SocketsFound,
    Sync,
    decode,
    parse_payload,
    sender_prefix,
)
from ..recovery import Repeats, SessionRecord
from ..tasks import BackgroundTasks
from .callbacks import RemoteCallbacks, ack_value
from .counters import Drops
from .heartbeats import Heartbeats
from .local import LocalDelivery
from .ordering import SelfSync
from .publisher import Publisher
from .requests import RequestTable
from .resume import ResumeGate
from .routing import RoomRouting
from .server_events import ServerEvents

__all__ = ["Inbound", "LogObserver"]

Handler = Callable[[Message, Any], Awaitable[None]]
EngineHandler = Callable[[EngineRequest], Awaitable[Any]]
"""Serves a forwarded engine.io request; returns ``[status, headers, body]``."""
FrameHandler = Callable[[str, EngineFrame], bool]
"""Takes a relayed websocket frame from a node; for an OPEN, whether it is taken."""

_UNHANDLED = frozenset({MessageType.INITIAL_HEARTBEAT, MessageType.HEARTBEAT,
                        MessageType.ADAPTER_CLOSE})
"""The pub/sub types without a payload: only the node table sees them."""
_FAILURES = (MalformedMessage, KeyError, TypeError, ValueError, AttributeError,
             IndexError, RecursionError)
"""What handling a message that is wrong in content raises (an event clients cannot
be sent, too deeply nested to encode, included): counted as malformed."""


def logged_event(message: Message) -> Broadcast | None:
    """The event of a log entry, None for a session save or claim (recovery's);
    raises :class:`MalformedMessage` for a malformed one or one of another type."""
    kind = message.type
    if kind is MessageType.BROADCAST:
        event: Broadcast = parse_payload(kind, message.data)
        return event
    if kind is MessageType.SESSION_CLAIM:
        SessionClaim.from_wire(message.data)
    elif kind is MessageType.SESSION_SAVE:
        SessionRecord.from_data(message.nsp, message.data)
    else:
        raise MalformedMessage(f"{kind.name} does not belong in the durable log")
    return None


class LogObserver(Protocol):
    """What connection state recovery needs to see of the log's entries."""

    @property
    def held(self) -> set[str]:
        """Sids being restored: live deliveries skip them."""

    def observe(self, offset: str, message: Message) -> None:
        """Called for every log entry, before it is delivered."""


class Inbound:
    """The receiving side of one node."""

    def __init__(self, uid: str, local: LocalDelivery, publisher: Publisher,
                 heartbeats: Heartbeats, requests: RequestTable,
                 callbacks: RemoteCallbacks, server_events: ServerEvents, drops: Drops,
                 tasks: BackgroundTasks, logger: logging.Logger) -> None:
        self.uid = uid
        self.local = local
        self.publisher = publisher
        self.heartbeats = heartbeats
        self.requests = requests
        self.callbacks = callbacks
        self.server_events = server_events
        self.drops = drops
        self.tasks = tasks
        self.logger = logger
        self.log_observer: LogObserver | None = None
        self._own = sender_prefix(uid)
        self._handlers: dict[MessageType, Handler] = {
            MessageType.BROADCAST: self._on_broadcast,
            MessageType.SOCKETS_JOIN: self._on_room_change,
            MessageType.SOCKETS_LEAVE: self._on_room_change,
            MessageType.DISCONNECT_SOCKETS: self._on_disconnect,
            MessageType.FETCH_SOCKETS: self._on_fetch_sockets,
            MessageType.FETCH_SOCKETS_RESPONSE: self._on_sockets_found,
            MessageType.SERVER_SIDE_EMIT: self._on_server_event,
            MessageType.SERVER_SIDE_EMIT_RESPONSE: self._on_response,
            MessageType.BROADCAST_CLIENT_COUNT: self._on_client_count,
            MessageType.BROADCAST_ACK: self._on_ack,
            MessageType.ENGINE_REQUEST: self._on_engine_request,
            MessageType.ENGINE_FRAME: self._on_engine_frame,
            MessageType.RESUME_PROBE: self._on_resume_probe,
            MessageType.RESUME_READY: self._on_resume_ready,
            MessageType.SYNC: self._on_sync,
        }
        self.engine_requests: EngineHandler | None = None
        """Serves the engine.io requests other nodes forward here (set by
        :class:`socketio_adapters.AsyncServer`); without it they are refused."""
        self.self_sync: SelfSync | None = None
        """Ordered emits' markers (set by the manager)."""
        self.repeats = Repeats()
        """Log entries appended twice, delivered once."""
        self.resume_gate: ResumeGate | None = None
        """Takes the answers to this node's probes after an outage (set by the
        manager)."""
        self.broadcasts = 0
        """Broadcasts from other nodes received over pub/sub."""
        self.routing: RoomRouting | None = None
        """Per-room subscriptions (set by the manager)."""
        self.engine_frames: FrameHandler | None = None
        """Takes the websocket frames relayed between this node and another (set
        with :attr:`engine_requests`); without it an OPEN is refused."""

    def handle(self, kind: MessageType, handler: Handler) -> None:
        """Have ``handler(message, payload)`` take the messages of type ``kind`` (the
        distributor mode's types: its edge nodes and application servers)."""
        self._handlers[kind] = handler

    async def on_payload(self, payload: bytes) -> None:
        """The backend's entry point for pub/sub payloads."""
        if payload.startswith(self._own):
            # our own message, echoed by the broker, or a marker of ordered emits
            sync = self.self_sync
            if sync is not None and sync.waiting:
                self._own_marker(payload, sync)
            return
        try:
            message = decode(payload)
            if message.uid == self.uid:  # ours start with our prefix
                raise MalformedMessage("a message in this node's name it did not write")
        except MalformedMessage as exc:
            self.drops.drop(str(exc))
            return
        await self._dispatch_live(message)

    def _own_marker(self, payload: bytes, sync: SelfSync) -> None:
        try:
            message = decode(payload)
            if message.type is MessageType.SYNC:
                sync.arrived(parse_payload(MessageType.SYNC, message.data).marker)
        except MalformedMessage as exc:
            self.drops.drop(f"own message: {exc}")

    async def on_entry(self, offset: str, payload: bytes) -> None:
        """The backend's entry point for log entries, in log order."""
        try:
            message = decode(payload)
        except MalformedMessage as exc:
            self.drops.drop(f"log entry {offset}: {exc}")
            return
        await self.dispatch(message, offset)

    async def dispatch(self, message: Message, offset: str | None = None) -> None:
        """Handle one message: from pub/sub (``offset`` None; a node ignores its
        own), or an entry of the durable log (every node, the sender too)."""
        if offset is not None:
            await self._on_logged(message, offset)
            return
        if message.uid == self.uid:
            return
        await self._dispatch_live(message)

    async def _dispatch_live(self, message: Message) -> None:
        """:meth:`dispatch` of a message from pub/sub, from another node."""
        kind = message.type
        try:
            handler = self._handlers.get(kind)
            if handler is not None:
                await handler(message, parse_payload(kind, message.data))
            elif kind not in _UNHANDLED:
                raise MalformedMessage("a type this node does not take over pub/sub")
            self.heartbeats.seen(message)
        except _FAILURES as exc:
            self._drop(message, None, exc)
        except asyncio.CancelledError:
            raise
        except NotStarted:
            pass  # this node is stopping: it answers nobody any more
        except Exception:
            # never let one message break the subscription
            self.logger.exception("error handling %s from %s", message.type.name,
                                  message.uid)

    async def _on_sync(self, message: Message, marker: Sync) -> None:
        """Another node's marker (they go to their sender only): nothing to do."""

    async def _on_resume_probe(self, message: Message, probe: Sync) -> None:
        self.publisher.publish_urgent(MessageType.RESUME_READY, probe, target=message.uid)
        gate = self.resume_gate
        if gate is not None:
            gate.probed(message.uid)

    async def _on_resume_ready(self, message: Message, probe: Sync) -> None:
        gate = self.resume_gate
        if gate is not None:
            gate.ready(message.uid)

    async def _on_logged(self, message: Message, offset: str) -> None:
        try:
            event = logged_event(message)
            observer = self.log_observer
            if observer is not None:
                observer.observe(offset, message)
            if event is not None and not self.repeats.repeated(message.uid, event):
                await self._deliver_entry(message, event, offset)
        except _FAILURES as exc:
            self._drop(message, offset, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.logger.exception("error delivering log entry %s", offset)

    def _drop(self, message: Message, offset: str | None, exc: BaseException) -> None:
        where = f" at {offset}" if offset is not None else ""
        self.drops.drop(f"{message.type.name} from {message.uid}{where}: "
                        f"{type(exc).__name__}: {exc}")

    async def _deliver_entry(self, message: Message, event: Broadcast, offset: str) -> None:
        if self.local.server is None:
            return
        observer = self.log_observer
        await self.local.emit(message.nsp, [*event.packet, offset], event.target,
                              skip=observer.held if observer is not None else ())

    async def _on_broadcast(self, message: Message, event: Broadcast) -> None:
        self.broadcasts += 1
        local = self.local
        if local.server is None:
            return
        request_id = event.request_id
        if request_id is None:
            await local.emit(message.nsp, event.packet, event.target)
            return
        origin, nsp, publish = message.uid, message.nsp, self.publisher.publish

        def ack(*args: Any) -> None:
            publish(MessageType.BROADCAST_ACK, nsp, Ack(request_id, list(args)),
                    target=origin)

        count = await local.emit(nsp, event.packet, event.target, ack)
        if event.count:
            publish(MessageType.BROADCAST_CLIENT_COUNT, nsp, ClientCount(request_id, count),
                    target=origin)

    async def _on_room_change(self, message: Message, change: RoomChange) -> None:
        self.local.change_rooms(message.nsp, change.target, change.rooms,
                                join=message.type is MessageType.SOCKETS_JOIN)
        routing = self.routing
        if (routing is None or not routing.enabled or change.request_id is None
                or message.type is not MessageType.SOCKETS_JOIN):
            self._confirm(message, change.request_id)
            return

        async def confirm_when_subscribed() -> None:
            # not awaited here: the confirmation of a subscription may come through
            # the very listener that is handing us this message
            await routing.settled()
            self._confirm(message, change.request_id)

        self.tasks.spawn(confirm_when_subscribed())

    async def _on_disconnect(self, message: Message, disconnect: Disconnect) -> None:
        await self.local.disconnect(message.nsp, disconnect.target)
        self._confirm(message, disconnect.request_id)

    def _confirm(self, message: Message, request_id: str | None) -> None:
        """Tell the sender a change was applied here (when it waits for that): an
        answer without a value, like a server-side event this node did not handle."""
        if request_id is not None:
            self.publisher.publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                                   Response(request_id, handled=False), target=message.uid)

    async def _on_fetch_sockets(self, message: Message, fetch: FetchSockets) -> None:
        found = [SocketInfo(sid, tuple(rooms), self.uid)
                 for sid, rooms in self.local.sockets(message.nsp, fetch.target)]
        self.publisher.publish(MessageType.FETCH_SOCKETS_RESPONSE, message.nsp,
                               SocketsFound(fetch.request_id, found), target=message.uid)

    async def _on_sockets_found(self, message: Message, found: SocketsFound) -> None:
        if found.skipped:
            self.drops.drop(f"{found.skipped} bad sockets in a fetch_sockets answer "
                            f"from {message.uid}")
        request = self.requests.get(found.request_id)
        if request is not None:
            request.add(message.uid, found.sockets)

    async def _on_server_event(self, message: Message, event: Any) -> None:
        self.server_events.received(message, event)

    async def _on_response(self, message: Message, response: Response) -> None:
        request = self.requests.get(response.request_id)
        if request is not None:
            request.add(message.uid, [response.value] if response.handled else [])

    async def _on_engine_request(self, message: Message, request: EngineRequest) -> None:
        serve = self.engine_requests
        origin, nsp, publish = message.uid, message.nsp, self.publisher.publish

        async def answer() -> None:
            value = None if serve is None else await serve(request)
            try:
                publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, nsp,
                        Response(request.request_id, value, handled=value is not None),
                        target=origin)
            except NotStarted:
                pass  # this node stopped meanwhile: its goodbye ends the wait there

        self.tasks.spawn(answer())  # a long-poll waits for packets: never block here

    async def _on_engine_frame(self, message: Message, frame: EngineFrame) -> None:
        take = self.engine_frames
        taken = take is not None and take(message.uid, frame)
        if frame.request_id is not None:
            self.publisher.publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                                   Response(frame.request_id, taken), target=message.uid)

    async def _on_client_count(self, message: Message, count: ClientCount) -> None:
        request = self.requests.get(count.request_id)
        if request is not None:
            request.expect(message.uid, count.count)

    async def _on_ack(self, message: Message, ack: Ack) -> None:
        callback = self.callbacks.pop(ack.request_id)
        if callback is not None:
            result = callback(*ack.args)
            if inspect.isawaitable(result):
                self.tasks.spawn(result)
            return
        request = self.requests.get(ack.request_id)
        if request is not None:
            request.add(message.uid, [ack_value(ack.args)])
