"""NATS backend: core NATS subjects through nats-py.

Features
    Every node subscribes (plainly, never in a queue group, so each message reaches
    every node) to a broadcast subject, ``{channel}.all``, and to its own subject,
    ``{channel}.node.{node uid}``, for answers addressed to it; a PING/PONG round trip
    confirms both subscriptions before :meth:`~Backend.start` returns. The channel and
    the uid are escaped so that nothing NATS treats as special (``.``, ``*``, ``>``,
    ``$``, whitespace, non-ASCII: anything outside ``[A-Za-z0-9_-]``) reaches the
    subject: each such character becomes ``%XX`` per UTF-8 byte (``%`` included), which
    is deterministic and reversible, so two channels never share a subject.

    A batch of payloads is handed to nats-py's write buffer, then one PING/PONG round
    trip confirms that the server has routed all of it (so a room change is seen by
    the other nodes before what this node publishes next, and a dead connection
    raises); while that round trip is in flight the next batch accumulates.

    nats-py keeps the connection: after a lost connection it reconnects by itself
    (every ``reconnect_time_wait`` seconds, through every server of the URL) and
    subscribes again; the backend's connection state follows it. Publishing meanwhile
    fills nats-py's reconnect buffer (``pending_size`` bytes), sent once it is back;
    past that a publish fails and the manager's outbox keeps the messages. When nats-py
    gives up (``max_reconnect_attempts``) or the server closes the connection for good,
    the listener fails with a connection error and the shared supervisor connects again
    from scratch, with backoff. What was published while a node was away is not
    replayed (core NATS keeps nothing). Payloads larger than the server's
    ``max_payload`` (1 MB by default) are sent in chunks and joined on receipt. A node
    does not receive its own messages (``no_echo``): the manager delivers those locally.

Connection string
    ``nats://[user:password@|token@]host[:port][,host[:port]...]`` or ``tls://...``.
    Several servers of one cluster are separated by commas; an IPv6 address is written
    in brackets (``nats://[::1]:4222``); the port defaults to 4222. Credentials in the
    URL (percent-encoded) apply to every server. ``tls://`` (or any ``tls_*`` option)
    gives nats-py a TLS context (the system's CA store unless ``tls_ca_file``); as
    nats-py does, the connection turns to TLS when the server requires it, or from the
    first byte with ``tls_handshake_first``.

Options
    ``channel`` and ``connect_timeout`` (see the base backend); ``publish_timeout``
    (default ``5`` seconds: how long a batch waits for the server's confirmation); and
    nats-py's own: ``name`` (the connection name shown by the server's monitoring),
    ``reconnect_time_wait`` (default ``0.5`` seconds), ``max_reconnect_attempts``
    (default ``60`` per server; ``-1`` for ever), ``ping_interval`` (default ``20``
    seconds) and ``max_outstanding_pings`` (default ``2``), which bound how long a
    silently dead server goes unnoticed, ``pending_size`` (default 2 MiB),
    ``dont_randomize`` (default ``false``: servers are tried in random order),
    ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``, ``tls_hostname`` and
    ``tls_handshake_first``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ..errors import ConfigurationError
from ..options import Option, non_empty_str, parse_bool, positive_float, positive_int, redact
from .base import Backend, Capabilities, Outgoing

__all__ = ["NatsBackend", "NatsServers", "escape_token", "parse_url", "unescape_token"]

DEFAULT_PORT = 4222
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def escape_token(text: str) -> str:
    """``text`` as one subject token: ``[A-Za-z0-9_-]`` unchanged, every other
    character as ``%XX`` per UTF-8 byte (``%`` itself included, so it is reversible)."""
    return "".join(
        ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text)


def unescape_token(token: str) -> str:
    """The inverse of :func:`escape_token`."""
    return unquote(token, "utf-8", "surrogatepass")


@dataclass(frozen=True)
class NatsServers:
    """What a NATS URL says: the servers (without credentials) and the credentials."""

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def tls(self) -> bool:
        return self.servers[0].startswith("tls://")


def _server(scheme: str, item: str, url: str) -> str:
    """One server of the netloc as ``scheme://host:port``."""
    port_text: str | None = None
    if item.startswith("["):
        end = item.find("]")
        host, rest = item[:end + 1], item[end + 1:]
        if end < 2 or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"bad IPv6 address {item!r} in {redact(url)}")
        if rest:
            port_text = rest[1:]
    else:
        host, sep, after = item.partition(":")
        if sep:
            port_text = after
        if ":" in after:
            raise ConfigurationError(
                f"bad server {item!r} in {redact(url)}: write IPv6 addresses in brackets")
    if not host:
        raise ConfigurationError(f"empty host in {redact(url)} (nats://host[:port],...)")
    port = DEFAULT_PORT
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ConfigurationError(f"bad port {port_text!r} in {redact(url)}")
        port = int(port_text)
    return f"{scheme}://{host}:{port}"


def parse_url(url: str) -> NatsServers:
    """Split ``nats://[cred@]h1[:p1],h2[:p2]`` into server URLs and credentials."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed NATS URL {redact(url)}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("nats", "tls"):
        raise ConfigurationError(f"not a NATS URL: {redact(url)} (nats:// or tls://)")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigurationError(f"a NATS URL has no path: {redact(url)}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = password = token = None
    if at:
        name, colon, secret = userinfo.partition(":")
        if colon:
            user, password = unquote(name), unquote(secret)
        elif name:
            token = unquote(name)
    items = hosts.split(",")
    servers = tuple(_server(scheme, item.strip(), url) for item in items)
    return NatsServers(servers, user, password, token)


def _reconnect_attempts(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected -1 (for ever) or a whole number > 0")
    number = int(value)
    if number != -1 and number <= 0:
        raise ValueError("expected -1 (for ever) or a whole number > 0")
    return number


class NatsBackend(Backend):
    """Moves bytes over core NATS subjects."""

    name: ClassVar[str] = "nats"
    extra: ClassVar[str | None] = "nats"
    capabilities: ClassVar[Capabilities] = Capabilities(
        direct=True, max_payload=None, sharded=False, durable_log=False,
        session_store=False)
    options: ClassVar[tuple[Option, ...]] = (
        Option("name", non_empty_str, None, "connection name shown by the server"),
        Option("reconnect_time_wait", positive_float, 0.5,
               "seconds between nats-py's reconnect attempts to one server"),
        Option("max_reconnect_attempts", _reconnect_attempts, 60,
               "reconnect attempts per server before nats-py gives up (-1: for ever)"),
        Option("ping_interval", positive_float, 20.0,
               "seconds between client PINGs (detects a silently dead server)"),
        Option("max_outstanding_pings", positive_int, 2,
               "unanswered PINGs after which the connection counts as lost"),
        Option("pending_size", positive_int, 2 * 1024 * 1024,
               "bytes nats-py buffers while reconnecting"),
        Option("publish_timeout", positive_float, 5.0,
               "seconds a publish waits for the server to confirm a batch"),
        Option("dont_randomize", parse_bool, False, "try the servers in URL order"),
        Option("tls_ca_file", non_empty_str, None, "CA bundle to verify the server"),
        Option("tls_cert_file", non_empty_str, None, "client certificate (PEM)"),
        Option("tls_key_file", non_empty_str, None, "client certificate's key (PEM)"),
        Option("tls_hostname", non_empty_str, None, "server name to verify"),
        Option("tls_handshake_first", parse_bool, False,
               "TLS before the server's INFO (server option handshake_first)"),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError,
        nats.errors.NoServersError, nats.errors.StaleConnectionError,
        nats.errors.ConnectionReconnectingError, nats.errors.ConnectionDrainingError,
        nats.errors.SecureConnFailedError, nats.errors.TimeoutError,
        asyncio.TimeoutError, OSError)

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.target = parse_url(url)
        if self.settings["tls_key_file"] and not self.settings["tls_cert_file"]:
            raise ConfigurationError("option 'tls_key_file' needs 'tls_cert_file' too")
        self._tls = self._ssl_context()
        self._link: _Link | None = None
        prefix = escape_token(self.channel)
        self.broadcast_subject = f"{prefix}.all"
        self._node_prefix = f"{prefix}.node."

    def node_subject(self, uid: str) -> str:
        return self._node_prefix + escape_token(uid)

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        wanted = self.target.tls or any(
            s[k] for k in ("tls_ca_file", "tls_cert_file", "tls_hostname",
                           "tls_handshake_first"))
        if not wanted:
            return None
        try:
            context = ssl.create_default_context(cafile=s["tls_ca_file"])
            if s["tls_cert_file"]:
                context.load_cert_chain(s["tls_cert_file"], s["tls_key_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"nats backend: bad TLS files: {exc}") from None
        return context

    # ------------------------------------------------------------------ connection

    async def _connect(self, on_closed: Callable[[], None] | None) -> _Link:
        """A connected client; nats-py then keeps it connected on its own."""
        s = self.settings
        nc = NatsClient()
        link = _Link(nc, asyncio.get_running_loop().create_future())

        async def disconnected() -> None:
            link.lose()
            if self._link is link and self.state.connected:
                self.logger.warning("nats %s: disconnected from %s, nats-py reconnecting",
                                    self._where, link.server)
                self.state.mark_down()

        async def reconnected() -> None:
            link.lost = asyncio.get_running_loop().create_future()
            link.server = self._server_name(nc)
            if self._link is not link:
                return
            self.message_limit = nc.max_payload
            outage = (time.monotonic() - self.state.down_since
                      if self.state.down_since is not None else 0.0)
            self.logger.warning("nats %s: reconnected to %s after %.2fs, subscriptions "
                                "restored", self._where, link.server, outage)
            self.state.mark_up()

        async def closed() -> None:
            link.lose()
            if on_closed is not None:
                on_closed()

        async def error(exc: Exception) -> None:
            if isinstance(exc, self.connection_errors):
                self.logger.debug("nats %s: %s: %s", self._where, type(exc).__name__, exc)
            else:
                self.logger.warning("nats %s: %s: %s", self._where, type(exc).__name__, exc)

        kwargs: dict[str, Any] = {
            "servers": list(self.target.servers),
            "name": s["name"],
            "no_echo": True,  # the manager delivers a node's own messages locally
            "allow_reconnect": True,
            "reconnect_time_wait": s["reconnect_time_wait"],
            "max_reconnect_attempts": s["max_reconnect_attempts"],
            "ping_interval": s["ping_interval"],
            "max_outstanding_pings": s["max_outstanding_pings"],
            "pending_size": s["pending_size"],
            "dont_randomize": s["dont_randomize"],
            "tls_handshake_first": s["tls_handshake_first"],
            "disconnected_cb": disconnected,
            "reconnected_cb": reconnected,
            "closed_cb": closed,
            "error_cb": error,
        }
        if self._tls is not None:
            kwargs["tls"] = self._tls
        if s["tls_hostname"]:
            kwargs["tls_hostname"] = s["tls_hostname"]
        creds = self.target
        if creds.user is not None:
            kwargs.update(user=creds.user, password=creds.password)
        elif creds.token is not None:
            kwargs["token"] = creds.token
        try:
            await nc.connect(**kwargs)
        except BaseException:
            await link.discard()
            raise
        self.message_limit = nc.max_payload
        link.server = self._server_name(nc)
        return link

    @property
    def _where(self) -> str:
        return redact(self.url)

    @staticmethod
    def _server_name(nc: NatsClient) -> str:
        uri = nc.connected_url
        return f"{uri.hostname}:{uri.port}" if uri is not None else "the server"

    async def _open(self) -> None:
        if self._deliver is None:  # an emitter: no listener, so connect here (the base
            self._link = await self._connect(None)  # bounds it by connect_timeout)

    async def _close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.discard()

    async def _run(self, ready: Callable[[], None]) -> None:
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_closed() -> None:
            if not gone.done():
                gone.set_result(None)

        link = await self._connect(on_closed)
        nc = link.nc
        lock = asyncio.Lock()  # one payload at a time, in order, like every backend
        dispatch = self._dispatch

        async def on_message(msg: Msg) -> None:
            async with lock:
                try:
                    await dispatch(msg.data)
                except Exception:
                    self.logger.exception("nats %s: delivering a message failed",
                                          self._where)

        try:
            # plain subscriptions (no queue group): every node gets every broadcast
            await nc.subscribe(self.broadcast_subject, cb=on_message)
            await nc.subscribe(self.node_subject(self.node_id), cb=on_message)
            await nc.flush(max(1, int(self.settings["connect_timeout"])))  # SUBs are live
            self._link = link
            ready()
            await gone
            raise ConnectionError(
                f"nats connection closed for good ({nc.last_error or 'no error given'})")
        finally:
            if self._link is link:
                self._link = None
            await link.discard()

    # ------------------------------------------------------------------ publishing

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        link = self._link
        if link is None or link.nc.is_closed:
            if self._deliver is not None or not self._opened:
                raise ConnectionError("nats backend is not connected")
            link = self._link = await self._connect(None)  # an emitter whose client gave up
        nc = link.nc
        for target, payload in batch:
            await nc.publish(self._subject(target), payload)
        if nc.is_connected:
            await link.confirm(self.settings["publish_timeout"])
        # else nats-py is reconnecting: the batch waits in its buffer, sent once back

    def _subject(self, target: str | None) -> str:
        return self.broadcast_subject if target is None else self.node_subject(target)


class _Link:
    """One nats-py client, and a future that is resolved when its connection drops."""

    def __init__(self, nc: NatsClient, lost: asyncio.Future[None]) -> None:
        self.nc = nc
        self.lost = lost
        self.server = "the server"
        """host:port of the server it is (or was last) connected to, for logs."""

    def lose(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def confirm(self, timeout: float) -> None:
        """Wait until the server has processed everything published so far (a PING
        answered by a PONG); raise a connection error if the connection drops first,
        since nats-py then forgets that PING."""
        nc, lost = self.nc, self.lost
        # nats-py writes its PING straight to the socket, ahead of the publishes still
        # in its buffer: let its flusher task write those first
        for _ in range(8):
            if not nc.pending_data_size or not nc.is_connected:
                break
            await asyncio.sleep(0)
        pong = asyncio.ensure_future(nc.flush(timeout))  # type: ignore[arg-type]
        try:
            await asyncio.wait((pong, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pong.done():
                pong.cancel()
                await asyncio.gather(pong, return_exceptions=True)
        if not pong.done() or pong.cancelled():
            raise ConnectionError("nats connection lost before the server confirmed "
                                  "the batch")
        pong.result()

    async def discard(self) -> None:
        self.lose()
        with contextlib.suppress(Exception):
            await self.nc.close()
