"""The NATS backend's pub/sub core: options, the connection nats-py keeps, the
listener of each node's subjects (beside the log's live reader), and publishing."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from ...options import (
    Option,
    choice,
    non_empty_str,
    parse_bool,
    positive_float,
    positive_int,
)
from ...tls import TLS_OPTIONS, tls_files
from ..base import LOG, Capabilities, Destination, Outgoing, RoomTarget
from .follower import Follower
from .link import Acks, Link, connect
from .log import NatsLog
from .naming import parse_url
from .sessions import NatsSessions

__all__ = ["NatsBackend", "reconnect_attempts"]

_REFUSALS = ("authorization violation", "authentication expired",
             "authentication revoked")
"""What the server's -ERR says when it refuses a client's credentials."""


def reconnect_attempts(value: Any) -> int:
    """``max_reconnect_attempts``: -1 (for ever) or a whole number > 0."""
    if isinstance(value, bool):
        raise ValueError("expected -1 (for ever) or a whole number > 0")
    number = int(value)
    if number != -1 and number <= 0:
        raise ValueError("expected -1 (for ever) or a whole number > 0")
    return number


class NatsBackend(NatsLog, NatsSessions):
    """Moves bytes over core NATS subjects; keeps the durable log in a JetStream
    stream and sessions in a JetStream key-value bucket."""

    name: ClassVar[str] = "nats"
    extra: ClassVar[str | None] = "nats"
    capabilities: ClassVar[Capabilities] = Capabilities(
        # chunks of a payload wait in the subscription's pending bytes, which nats-py
        # bounds at 64 MiB by default: past it, chunks are dropped (a slow consumer)
        direct=True, max_payload=32 * 1024 * 1024, sharded=False, durable_log=True,
        session_store=True, routes_rooms=True)
    options: ClassVar[tuple[Option, ...]] = (
        Option("name", non_empty_str, None, "connection name shown by the server"),
        Option("reconnect_time_wait", positive_float, 0.5,
               "seconds between nats-py's reconnect attempts to one server"),
        Option("max_reconnect_attempts", reconnect_attempts, 60,
               "reconnect attempts per server before nats-py gives up (-1: for ever)"),
        Option("ping_interval", positive_float, 5.0,
               "seconds between client PINGs (detects a silent connection within "
               "(max_outstanding_pings + 1) x ping_interval)"),
        Option("max_outstanding_pings", positive_int, 2,
               "unanswered PINGs after which the connection counts as lost"),
        Option("pending_size", positive_int, 2 * 1024 * 1024,
               "bytes nats-py buffers while reconnecting"),
        Option("publish_timeout", positive_float, 5.0,
               "seconds a publish waits for the server to confirm a batch"),
        Option("dont_randomize", parse_bool, False, "try the servers in URL order"),
        *TLS_OPTIONS,
        Option("tls_hostname", non_empty_str, None, "server name to verify"),
        Option("tls_handshake_first", parse_bool, False,
               "TLS before the server's INFO (server option handshake_first)"),
        Option("storage", choice("file", "memory", fold=str.lower), "file",
               "where JetStream keeps the recovery log and sessions: file or memory"),
        Option("replicas", positive_int, 1,
               "JetStream replicas of the recovery log and sessions (in a NATS cluster)"),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError,
        nats.errors.NoServersError, nats.errors.StaleConnectionError,
        nats.errors.ConnectionReconnectingError, nats.errors.ConnectionDrainingError,
        nats.errors.SecureConnFailedError, nats.errors.TimeoutError,
        nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError,
        nats.js.errors.NoStreamResponseError, nats.js.errors.TooManyStalledMsgsError,
        asyncio.TimeoutError, OSError)
    auth_errors: ClassVar[tuple[type[BaseException], ...]] = (
        nats.errors.AuthorizationError,)

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.target = parse_url(url)
        s = self.settings
        files = tls_files(s, "nats backend")
        wanted = self.target.tls or files.given or bool(
            s["tls_hostname"] or s["tls_handshake_first"])
        self.tls: ssl.SSLContext | None = None
        """The TLS context given to nats-py (None: plain unless the server asks)."""
        if wanted:
            self.tls = files.context("nats backend")
        self._rooms: dict[str, Any] = {}
        """Room key -> its nats-py subscription, on the listener's connection."""
        self._on_message: Callable[[Msg], Awaitable[None]] | None = None

    def node_subject(self, uid: str) -> str:
        return self.names.node_subject(uid)

    def subject(self, target: Destination) -> str:
        """The subject a payload for ``target`` (a node uid, :data:`LOG`, or None for
        every node) is published on."""
        if target is None:
            return self.names.broadcast_subject
        if isinstance(target, RoomTarget):
            return self.names.room_subject(target.key)
        return self.names.log_subject if target == LOG else self.node_subject(target)

    # ------------------------------------------------------------------ connection

    async def _connect(self, on_closed: Callable[[], None] | None) -> Link:
        """A connected client; nats-py then keeps it connected on its own."""
        s = self.settings
        options: dict[str, Any] = {
            "servers": list(self.target.servers),
            "name": s["name"],
            # a node's own messages come back (the manager drops them): an ordered
            # emit's marker (cluster/ordering.py) must reach the node that sent it
            "no_echo": False,
            "allow_reconnect": True,
            "reconnect_time_wait": s["reconnect_time_wait"],
            "max_reconnect_attempts": s["max_reconnect_attempts"],
            "ping_interval": s["ping_interval"],
            "max_outstanding_pings": s["max_outstanding_pings"],
            "pending_size": s["pending_size"],
            "dont_randomize": s["dont_randomize"],
            "tls_handshake_first": s["tls_handshake_first"],
        }
        if self.tls is not None:
            options["tls"] = self.tls
        if s["tls_hostname"]:
            options["tls_hostname"] = s["tls_hostname"]
        creds = self.target
        if creds.user is not None:
            options.update(user=creds.user, password=creds.password)
        elif creds.token is not None:
            options["token"] = creds.token
        link = await connect(options, self, on_closed)
        self.message_limit = link.nc.max_payload
        return link

    def link_down(self, link: Link) -> None:
        if self._link is link and self.state.connected:
            self.logger.warning("nats %s: disconnected from %s, nats-py reconnecting",
                                self.where, link.server)
            self.state.mark_down()

    def link_up(self, link: Link) -> None:
        if self._link is not link:
            return
        self.message_limit = link.nc.max_payload
        outage = (time.monotonic() - self.state.down_since
                  if self.state.down_since is not None else 0.0)
        self.logger.warning("nats %s: reconnected to %s after %.2fs, subscriptions "
                            "restored", self.where, link.server, outage)
        self.state.mark_up()

    def is_auth_error(self, exc: BaseException) -> bool:
        """nats-py's AuthorizationError, or the server's refusal (-ERR 'Authorization
        Violation', an expired or revoked user) that nats-py passes on as a plain
        Error while connecting."""
        return super().is_auth_error(exc) or (
            isinstance(exc, nats.errors.Error)
            and any(refusal in str(exc).lower() for refusal in _REFUSALS))

    def link_error(self, exc: Exception) -> None:
        reason = self.refusal(exc)
        if reason is not None:  # while nats-py reconnects by itself
            self.logger.error("nats %s: %s (%s: %s); nats-py retrying", self.where,
                              reason, type(exc).__name__, exc)
        elif isinstance(exc, self.connection_errors):
            self.logger.debug("nats %s: %s: %s", self.where, type(exc).__name__, exc)
        else:
            self.logger.warning("nats %s: %s: %s", self.where, type(exc).__name__, exc)

    async def _open(self) -> None:
        if self._deliver is None:  # an emitter: no listener, so connect here (the base
            self._link = await self._connect(None)  # bounds it by connect_timeout)
            if self.log is not None:
                await self._ensure_stream(self._link)

    async def _close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.discard()

    # ------------------------------------------------------------------ listening

    async def _run(self, ready: Callable[[], None]) -> None:
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_closed() -> None:
            if not gone.done():
                gone.set_result(None)

        link = await self._connect(on_closed)
        nc = link.nc
        lock = self._order  # one payload at a time, in order, like every backend
        dispatch = self._dispatch

        async def on_message(msg: Msg) -> None:
            async with lock:
                try:
                    await dispatch(msg.data)
                except Exception:
                    self.logger.exception("nats %s: delivering a message failed",
                                          self.where)

        reader: Follower | None = None
        try:
            # plain subscriptions (no queue group): every node gets every broadcast
            await nc.subscribe(self.names.broadcast_subject, cb=on_message)
            await nc.subscribe(self.node_subject(self.node_id), cb=on_message)
            self._rooms = {}  # the last connection's went with it
            self._on_message = on_message
            await self._room_subscriptions(link, sorted(self.room_keys))
            await self._subscribe_every_room(
                lambda keys: self._room_subscriptions(link, keys), self._rooms)
            if self.log is not None:
                reader = await self._follow_log(link)
            self._link = link
            ready()
            while not gone.done():
                if reader is None:
                    await gone
                    break
                reader = await self._watch(link, reader, gone)
            raise ConnectionError(
                f"nats connection closed for good ({nc.last_error or 'no error given'})")
        finally:
            if reader is not None:
                await reader.stop()
            if self._link is link:
                self._link = None
            await link.discard()

    # ------------------------------------------------------------------ room keys

    async def _room_subscriptions(self, link: Link, keys: Sequence[str]) -> None:
        """Subscribe to the room keys on ``link``, then confirm: when the server
        answers the PING written after them it has taken every SUB (the broadcast
        and node subjects' too, on a (re)connect, which always calls this)."""
        on_message = self._on_message
        if on_message is None:
            return
        for key in keys:
            if key not in self._rooms:
                self._rooms[key] = await link.nc.subscribe(self.names.room_subject(key),
                                                           cb=on_message)
        await link.confirm(max(1.0, float(self.settings["connect_timeout"])))

    async def _subscribe_rooms(self, keys: Sequence[str]) -> None:
        link = self._link
        if link is not None:  # else the listener subscribes every key when back
            await self._room_subscriptions(link, keys)

    async def _unsubscribe_rooms(self, keys: Sequence[str]) -> None:
        link = self._link
        subscriptions = [self._rooms.pop(k) for k in keys if k in self._rooms]
        if link is None:
            return
        for subscription in subscriptions:
            await subscription.unsubscribe()
        await link.confirm(max(1.0, float(self.settings["connect_timeout"])))

    # ------------------------------------------------------------------ publishing

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        link = self._link
        if link is None or link.nc.is_closed:
            if self._deliver is not None or not self._opened:
                raise ConnectionError("nats backend is not connected")
            link = self._link = await self._connect(None)  # an emitter whose client gave up
        nc = link.nc
        timeout = self.settings["publish_timeout"]
        acks = Acks(asyncio.get_running_loop()) if any(t == LOG for t, _ in batch) else None
        plain, reply = False, ""
        try:
            async with link.writing:  # concurrent publishes keep their order
                if acks is not None:
                    if not link.stream_ready:
                        await self._ensure_stream(link)
                    reply = await link.expect(acks)
                for target, payload in batch:
                    if target == LOG and acks is not None:  # one record, acked
                        await nc.publish(self.names.log_subject, payload, reply=reply)
                        acks.count += 1
                    else:
                        await nc.publish(self.subject(target), payload)
                        plain = True
            if plain and link.live:
                await link.confirm(timeout)
            # else nats-py is reconnecting (or has not said it is back yet): the batch
            # waits in its buffer, sent once back
            if acks is not None:
                await self._confirm_log(link, acks, timeout)
        finally:
            if acks is not None:
                link.forget(acks)
