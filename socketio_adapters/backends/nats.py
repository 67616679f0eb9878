"""NATS backend: core NATS subjects through nats-py; JetStream for recovery.

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

    For connection state recovery (needs JetStream: ``nats-server -js``) the durable
    log is a JetStream stream, ``{name}_log``, on the subject ``{channel}.log``
    (``{name}`` is the channel with every character outside ``[A-Za-z0-9-]``, ``_``
    included, as ``_XX`` per UTF-8 byte, since stream names take no ``%``), limited to
    ``max_length`` messages and ``retention`` seconds (discarding the oldest; a node
    that finds other limits sets its own, with a warning). The consecutive log entries
    of one batch travel as one stream message, a frame (the layout of
    :mod:`socketio_adapters.chunks`) of at most ``frame_cap`` bytes (less room for
    headers under ``max_payload``) and ``LOG_FRAME_ENTRIES`` entries, with a
    ``Sio-Entries`` header giving their count; a lone entry, or one over the cap,
    travels as itself. An offset is ``"{seq}.{i}"``: the stream sequence of the
    message and the entry's index in it. A batch's messages are published at once with
    one reply subject and their acks awaited together; an entry over ``max_payload``
    raises ``MaxPayloadError`` (it cannot be split). Each listening node reads the
    stream live through an ephemeral push consumer (no acks, flow control, idle
    heartbeats) that starts after the last entry it delivered (at the end of the
    stream the first time), at the message holding it if it was not that message's
    last entry, skipping the entries already delivered; a consumer that skips a
    message or goes silent, or a reconnect, makes it start another from there. Since
    ``max_msgs`` counts messages, ``read_log`` also counts entries and refuses to read
    back ``max_length`` or more. A node that recreates a stream the broker lost numbers
    on after the highest sequence it saw, so that old offsets do not name new
    entries. Sessions live in the key-value bucket ``{name}_sessions``
    (TTL: the longest session TTL asked for; each record also holds its own expiry,
    checked when taken); taking one deletes it with the revision read as the expected
    last one, so of several nodes exactly one gets it.

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
    ``tls_handshake_first``. For the recovery log and sessions: ``storage`` (``file``,
    the default, or ``memory``: set when the stream and the bucket are created) and
    ``replicas`` (default ``1``; JetStream copies in a NATS cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from ..chunks import log_entries_of, pack_log_entries
from ..errors import ConfigurationError
from ..options import Option, non_empty_str, parse_bool, positive_float, positive_int, redact
from .base import LOG, Backend, Capabilities, DeliverLog, Outgoing, log_runs

__all__ = ["NatsBackend", "NatsServers", "escape_token",
           "log_entries", "log_offset", "name_token", "pack_session", "parse_offset",
           "parse_url", "unescape_token", "unpack_session"]

DEFAULT_PORT = 4222
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_NAME_SAFE = _SAFE - {"_"}
_MAX_NAME_TOKEN = 240
"""Longest escaped channel in a stream or bucket name (JetStream allows 255 chars)."""
_HEARTBEAT = 1.0
"""Seconds between the idle heartbeats of a log consumer."""
_STALL = 3.0
"""Seconds without a message or heartbeat after which a log consumer is replaced."""
_WATCH = 0.5
"""Seconds between two checks of the live log consumer."""
_EXPIRY = 8
"""Bytes of a session record that hold its expiry (milliseconds since the epoch)."""
_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a write that expected another last revision."""
_ENTRIES_HEADER = "Sio-Entries"
"""Set on a log message that holds several entries (a frame): how many."""
_HEADER_ROOM = 256
"""Bytes of the server's ``max_payload`` left for a frame's headers."""
_OFFSET = re.compile(r"([1-9][0-9]{0,19})\.(0|[1-9][0-9]{0,5})")


def escape_token(text: str) -> str:
    """``text`` as one subject token: ``[A-Za-z0-9_-]`` unchanged, every other
    character as ``%XX`` per UTF-8 byte (``%`` itself included, so it is reversible)."""
    return "".join(
        ch if ch in _SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text)


def unescape_token(token: str) -> str:
    """The inverse of :func:`escape_token`."""
    return unquote(token, "utf-8", "surrogatepass")


def name_token(text: str) -> str:
    """``text`` for a stream, bucket or key name, where ``%`` is not allowed:
    ``[A-Za-z0-9-]`` unchanged, every other character (``_`` included, so that two
    texts never share a name) as ``_XX`` per UTF-8 byte."""
    return "".join(
        ch if ch in _NAME_SAFE
        else "".join(f"_{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text)


def log_offset(seq: int, index: int) -> str:
    """The log offset (``"1.0"``, ``"2.0"``, ``"2.1"``, ...) of entry ``index`` of the
    stream message at sequence ``seq``."""
    return f"{seq}.{index}"


def parse_offset(text: str) -> tuple[int, int] | None:
    """The stream sequence and entry index a log offset names, or ``None`` when
    ``text`` is not one this backend hands out (``"{seq}.{index}"``: a decimal
    sequence 1..2**64-1 and an index, both without sign, blanks or leading zeros).
    Whether that entry exists is for the stream to say."""
    match = _OFFSET.fullmatch(text)
    if match is None:
        return None
    seq = int(match[1])
    return (seq, int(match[2])) if seq < 2**64 else None


def log_entries(headers: dict[str, str] | None, body: bytes) -> list[bytes]:
    """The log entries of a stream message (see :func:`chunks.log_entries_of`); the
    count travels in the ``Sio-Entries`` header."""
    count = (headers or {}).get(_ENTRIES_HEADER)
    valid = count is not None and count.isascii() and count.isdigit()
    return log_entries_of(body, int(count) if valid and count else None)


def pack_session(data: bytes, expires: float) -> bytes:
    """A session record: its expiry (seconds since the epoch) and its data."""
    return int(expires * 1000).to_bytes(_EXPIRY, "big") + data


def unpack_session(record: bytes, now: float) -> bytes | None:
    """The data of a record packed by :func:`pack_session`, or ``None`` once it
    expired (or when ``record`` is too short to be one)."""
    if len(record) < _EXPIRY or int.from_bytes(record[:_EXPIRY], "big") <= now * 1000:
        return None
    return record[_EXPIRY:]


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


def _storage(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("file", "memory"):
        raise ValueError("expected file or memory")
    return text


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
        direct=True, max_payload=None, sharded=False, durable_log=True,
        session_store=True)
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
        Option("storage", _storage, "file",
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
        self.log_subject = f"{prefix}.log"
        name = name_token(self.channel)
        self.log_stream = f"{name}_log"
        self.session_bucket = f"{name}_sessions"
        self._log_next: int | None = None
        """Sequence of the message the live reader delivers next (None: not started)."""
        self._log_skip = 0
        """Entries of the message at ``_log_next`` already delivered."""
        self._order = asyncio.Lock()
        """Held while a payload or log message is delivered, so one goes at a time."""
        self._log_created: datetime.datetime | None = None
        """When the stream it reads was created (another time: the broker lost it)."""
        self._seen_seq = 0
        """Highest sequence this node appended or delivered: a stream this node has to
        create again starts after it, so that no offset is ever reused."""
        self._bucket_ttl: float | None = None
        """The session bucket's max_age as last seen (0: unlimited)."""

    def enable_log(self, deliver: DeliverLog | None, retention: float,
                   max_length: int) -> None:
        if len(name_token(self.channel)) > _MAX_NAME_TOKEN:
            raise ConfigurationError(
                f"nats backend: channel {self.channel!r} is too long for a JetStream "
                f"stream name ({_MAX_NAME_TOKEN} characters once escaped)")
        super().enable_log(deliver, retention, max_length)

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
            link.revived.set()  # the log reader's consumer may be gone: replace it
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
            if self.log is not None:
                await self._ensure_stream(self._link)

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
        lock = self._order  # one payload at a time, in order, like every backend
        dispatch = self._dispatch

        async def on_message(msg: Msg) -> None:
            async with lock:
                try:
                    await dispatch(msg.data)
                except Exception:
                    self.logger.exception("nats %s: delivering a message failed",
                                          self._where)

        async def on_entry(seq: int, entries: list[bytes]) -> None:
            async with lock:
                await self._log_message(seq, entries)

        reader: _Follower | None = None
        try:
            # plain subscriptions (no queue group): every node gets every broadcast
            await nc.subscribe(self.broadcast_subject, cb=on_message)
            await nc.subscribe(self.node_subject(self.node_id), cb=on_message)
            await nc.flush(max(1, int(self.settings["connect_timeout"])))  # SUBs are live
            if self.log is not None:
                reader = await self._follow_log(link, on_entry)
            self._link = link
            ready()
            while not gone.done():
                if reader is None:
                    await gone
                    break
                reader = await self._watch(link, reader, gone, on_entry)
            raise ConnectionError(
                f"nats connection closed for good ({nc.last_error or 'no error given'})")
        finally:
            if reader is not None:
                await reader.stop()
            if self._link is link:
                self._link = None
            await link.discard()

    # ------------------------------------------------------------------ durable log

    async def _log_message(self, seq: int, entries: list[bytes]) -> None:
        """Deliver the entries of one message of the live reader, in order, skipping
        those delivered already (by this reader before a reconnect, or by the reader
        it replaced). Called with ``_order`` held."""
        self._seen_seq = max(self._seen_seq, seq)
        expected = self._log_next
        if expected is not None and seq < expected:
            return
        skip = self._log_skip if seq == expected else 0  # later: trimmed meanwhile
        deliver = self._deliver_entry
        for index in range(skip, len(entries)):
            # the position moves before each entry is handed over (as log_position)
            self._log_next, self._log_skip = seq, index + 1
            try:
                await deliver(log_offset(seq, index), entries[index])
            except Exception:
                self.logger.exception("nats %s: delivering a log entry failed",
                                      self._where)
        self._log_next, self._log_skip = seq + 1, 0

    def _stream_config(self) -> api.StreamConfig:
        log = self.log
        assert log is not None
        return api.StreamConfig(
            name=self.log_stream, subjects=[self.log_subject],
            retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.OLD,
            max_msgs=log.max_length, max_age=log.retention,
            duplicate_window=min(log.retention, 120.0),
            storage=api.StorageType(self.settings["storage"]),
            num_replicas=self.settings["replicas"])

    async def _ensure_stream(self, link: _Link) -> api.StreamInfo:
        """The log stream's info, after creating it, or updating its limits when they
        differ from this node's (the node started last sets them)."""
        js, wanted = link.js, self._stream_config()
        try:
            info = await js.stream_info(self.log_stream)
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            raise ConnectionError(f"nats: JetStream is not available on {link.server} "
                                  "(recovery needs nats-server -js)") from None
        except nats.js.errors.NotFoundError:
            if self._seen_seq:  # the broker lost it: go on numbering after what we saw
                wanted.first_seq = self._seen_seq + 1
            try:
                info = await js.add_stream(wanted)
            except nats.js.errors.BadRequestError:  # another node created it meanwhile
                info = await js.stream_info(self.log_stream)
        have = info.config
        if (have.max_msgs, have.subjects, have.discard, have.num_replicas) != (
                wanted.max_msgs, wanted.subjects, wanted.discard, wanted.num_replicas
        ) or abs((have.max_age or 0) - (wanted.max_age or 0)) > 0.001:
            self.logger.warning(
                "nats %s: stream %s kept max_msgs=%s max_age=%ss; setting max_msgs=%s "
                "max_age=%ss", self._where, self.log_stream, have.max_msgs, have.max_age,
                wanted.max_msgs, wanted.max_age)
            info = await js.update_stream(dataclasses.replace(
                have, subjects=wanted.subjects, discard=wanted.discard,
                max_msgs=wanted.max_msgs, max_age=wanted.max_age,
                duplicate_window=wanted.duplicate_window,
                num_replicas=wanted.num_replicas))
        link.stream_ready = True
        return info

    async def _follow_log(self, link: _Link,
                          on_entry: Callable[[int, list[bytes]], Awaitable[None]]) -> _Follower:
        """Start reading the log live: at its end the first time (which fixes
        ``log_position``), then right after the last entry delivered (at the message
        holding it, whose entries up to it are skipped)."""
        info = await self._ensure_stream(link)
        state = info.state
        if self._log_next is None:
            last = await self._last_message(link) if state.messages else None
            if last is None:
                self.log_position, start = None, state.last_seq + 1
            else:
                seq, count = last
                self.log_position, start = log_offset(seq, count - 1), seq + 1
            self._log_next, self._log_skip = start, 0
        else:
            async with self._order:  # a reader being replaced may still deliver
                resume, skip = self._log_next, self._log_skip
                # in the middle of a message: that message must still be there
                if info.created != self._log_created or (
                        state.last_seq < (resume if skip else resume - 1)):
                    start, skip = max(state.first_seq, 1), 0
                    self.logger.warning(
                        "nats %s: stream %s is not the one this node was reading (the "
                        "broker lost its data?): reading the new one from its first "
                        "message, %d", self._where, self.log_stream, start)
                else:
                    start = resume
                    if state.first_seq > start:
                        self.logger.warning(
                            "nats %s: messages %d to %d of stream %s were trimmed before "
                            "this node read them", self._where, start, state.first_seq - 1,
                            self.log_stream)
                self._log_next, self._log_skip = start, skip
        self._log_created = info.created
        reader = _Follower(link, self.log_stream, start, on_entry, self.logger)
        await reader.begin()
        return reader

    async def _last_message(self, link: _Link) -> tuple[int, int] | None:
        """The sequence and entry count of the stream's last message (None: empty)."""
        try:
            raw = await link.js.get_last_msg(self.log_stream, self.log_subject)
        except nats.js.errors.NotFoundError:
            return None
        if raw.seq is None:
            return None
        return raw.seq, len(log_entries(raw.headers, raw.data or b""))

    async def _watch(self, link: _Link, reader: _Follower, gone: asyncio.Future[None],
                     on_entry: Callable[[int, list[bytes]], Awaitable[None]]) -> _Follower:
        """Wait until the connection is gone or the live reader needs replacing (a
        reconnect, a gap, a silent consumer); return the reader to go on with."""
        revived = asyncio.ensure_future(link.revived.wait())
        try:
            await asyncio.wait((gone, revived), timeout=_WATCH,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            revived.cancel()
        if gone.done() or not link.nc.is_connected:
            return reader
        if not link.revived.is_set() and reader.healthy:
            return reader
        link.revived.clear()
        await reader.stop()
        try:
            replaced = await self._follow_log(link, on_entry)
        except (nats.errors.Error, asyncio.TimeoutError, ConnectionError) as exc:
            # JetStream is not back yet
            self.logger.debug("nats %s: cannot read stream %s yet (%s: %s)", self._where,
                              self.log_stream, type(exc).__name__, exc)
            return reader  # stopped, so not healthy: tried again on the next round
        self.logger.info("nats %s: reading stream %s again from message %d", self._where,
                         self.log_stream, replaced.next_seq)
        return replaced

    async def read_log(self, after: str, upto: str | None) -> list[tuple[str, bytes]] | None:
        log = self.log
        start = parse_offset(after)
        end = parse_offset(upto) if upto is not None else None
        if log is None or start is None or end is None:
            return None
        (first, index), (last, last_index) = start, end
        # every message after the one holding ``after``, up to the one holding
        # ``upto``, holds at least one entry: that many messages is too many entries
        if last - first >= log.max_length:
            return None
        link = self._ready_link()
        if first >= last:
            entries = await self._read_message(link, first, index, last_index
                                               if first == last else -1)
        else:
            entries = await self._read_stream(link, start, end)
        if entries is None or len(entries) >= log.max_length:
            return None
        return entries

    async def _read_message(self, link: _Link, seq: int, index: int,
                            upto: int) -> list[tuple[str, bytes]] | None:
        """The entries after ``index`` up to ``upto`` of the message at ``seq``; None
        when it holds no entry ``index`` (any longer)."""
        try:
            raw = await link.js.get_msg(self.log_stream, seq)
        except (nats.js.errors.NotFoundError, nats.js.errors.BadRequestError):
            return None
        items = log_entries(raw.headers, raw.data or b"")
        if raw.seq != seq or index >= len(items):
            return None
        return [(log_offset(seq, i), items[i])
                for i in range(index + 1, min(upto + 1, len(items)))]

    async def _read_stream(self, link: _Link, start: tuple[int, int],
                           end: tuple[int, int]) -> list[tuple[str, bytes]] | None:
        """The entries after ``start`` up to ``end`` (in a later message), read
        through an ephemeral consumer from the message holding ``start``; None when
        that message is gone, holds no such entry, or the stream has a gap, or when
        ``max_length`` entries follow ``start``."""
        log = self.log
        assert log is not None
        (first, index), (last, last_index) = start, end
        entries: list[tuple[str, bytes]] = []
        expected = first
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def collect(seq: int, items: list[bytes]) -> None:
            nonlocal expected
            if done.done():
                return
            if seq != expected:  # ``start`` trimmed, or a gap: gone too
                done.set_result(False)
                return
            expected = seq + 1
            begin = index + 1 if seq == first else 0
            if seq == first and index >= len(items):
                done.set_result(False)
                return
            until = min(last_index + 1, len(items)) if seq == last else len(items)
            entries.extend((log_offset(seq, i), items[i]) for i in range(begin, until))
            if len(entries) >= log.max_length:
                done.set_result(False)
            elif seq >= last:
                done.set_result(True)

        reader = _Follower(link, self.log_stream, first, collect, self.logger)
        try:
            # fewer messages pending than up to ``end`` (some may have been delivered
            # already): if the stream ends before ``end``, it lost what this node
            # delivered (or ``start`` is gone), and nothing more will come
            if await reader.begin() <= last - first and not done.done():
                state = (await link.js.stream_info(self.log_stream)).state
                if state.last_seq < last and not done.done():
                    done.set_result(False)
            while not done.done():
                await asyncio.wait((done,), timeout=_WATCH)
                if not done.done() and not reader.healthy:  # rare: a dropped message
                    raise ConnectionError(f"nats: reading stream {self.log_stream} failed")
        finally:
            await reader.stop()
        return entries if done.result() else None

    def _ready_link(self) -> _Link:
        link = self._link
        if link is None or link.nc.is_closed:
            raise ConnectionError("nats backend is not connected")
        return link

    # ------------------------------------------------------------------ publishing

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        link = self._link
        if link is None or link.nc.is_closed:
            if self._deliver is not None or not self._opened:
                raise ConnectionError("nats backend is not connected")
            link = self._link = await self._connect(None)  # an emitter whose client gave up
        nc = link.nc
        timeout = self.settings["publish_timeout"]
        acks = _Acks(asyncio.get_running_loop()) if any(t == LOG for t, _ in batch) else None
        plain, reply = False, ""
        try:
            async with link.writing:  # concurrent publishes keep their order
                if acks is not None:
                    if not link.stream_ready:
                        await self._ensure_stream(link)
                    reply = await link.expect(acks)
                for subject, payload, headers in self._messages(batch):
                    if subject is None:
                        assert acks is not None  # a batch with log entries has acks
                        await nc.publish(self.log_subject, payload, reply=reply,
                                         headers=headers)
                        acks.count += 1
                    else:
                        await nc.publish(subject, payload)
                        plain = True
            if plain and nc.is_connected:
                await link.confirm(timeout)
            # else nats-py is reconnecting: the batch waits in its buffer, sent once back
            if acks is not None:
                await self._confirm_log(link, acks, timeout)
        finally:
            if acks is not None:
                link.forget(acks)

    def _messages(self, batch: Sequence[Outgoing]) -> list[
            tuple[str | None, bytes, dict[str, str] | None]]:
        """The NATS messages of ``batch``, in order, as ``(subject, payload,
        headers)``: each run of consecutive log entries becomes as few stream
        messages as ``pack_log_entries`` allows (subject None: the log, acked)."""
        out: list[tuple[str | None, bytes, dict[str, str] | None]] = []
        limit = self.message_limit
        cap = self.frame_cap if limit is None else min(self.frame_cap, limit - _HEADER_ROOM)
        for target, payloads in log_runs(batch):
            if target != LOG:
                out.append((self._subject(target), payloads[0], None))
                continue
            for body, count in pack_log_entries(payloads, cap):
                out.append((None, body, {_ENTRIES_HEADER: str(count)} if count > 1 else None))
        return out

    async def _confirm_log(self, link: _Link, acks: _Acks, timeout: float) -> None:
        """Wait for the stream's acks of the appended entries (all in flight at once):
        a lost connection or a timeout is a connection error (the outbox retries), a
        refusal by the stream (e.g. storage full) is not."""
        acks.sent()
        waiting: set[asyncio.Future[None]] = {acks.done}
        if link.nc.is_connected:  # else they wait in nats-py's buffer until it is back
            waiting.add(link.lost)
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not acks.done.done():
            raise ConnectionError(
                f"nats: stream {self.log_stream} confirmed {acks.received} of {acks.count} "
                f"log entries before the connection dropped or {timeout}s passed")
        error = acks.error
        if isinstance(error, nats.js.errors.NoStreamResponseError):
            link.stream_ready = False  # the broker lost it: create it again
            raise ConnectionError(f"nats: no stream {self.log_stream} (created again on "
                                  "the next try)")
        if error is not None:
            raise error
        self._seen_seq = max(self._seen_seq, acks.last_seq)

    # ------------------------------------------------------------------ sessions

    async def _bucket(self, link: _Link, ttl: float | None) -> KeyValue | None:
        """The session bucket, created (``ttl`` given) with a max_age of at least
        ``ttl``; ``None`` when it does not exist and ``ttl`` is None."""
        js, kv = link.js, link.kv
        if kv is None:
            try:
                kv = await js.key_value(self.session_bucket)
            except nats.js.errors.BucketNotFoundError:
                if ttl is None:
                    return None
                try:
                    kv = await js.create_key_value(api.KeyValueConfig(
                        bucket=self.session_bucket, history=1, ttl=ttl,
                        storage=api.StorageType(self.settings["storage"]),
                        replicas=self.settings["replicas"]))
                except nats.js.errors.BadRequestError:  # another node created it
                    kv = await js.key_value(self.session_bucket)
            self._bucket_ttl = (await kv.status()).ttl or 0.0
            link.kv = kv
        if ttl is not None and self._bucket_ttl and ttl > self._bucket_ttl:
            stream = f"KV_{self.session_bucket}"  # a bucket's max_age is its TTL: grow it
            config = (await js.stream_info(stream)).config
            if config.max_age and config.max_age < ttl:
                config = (await js.update_stream(
                    dataclasses.replace(config, max_age=ttl))).config
            self._bucket_ttl = config.max_age or 0.0
        return kv

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        link = self._ready_link()
        record = pack_session(data, time.time() + ttl)
        for attempt in (1, 2):
            kv = await self._bucket(link, ttl)
            assert kv is not None
            try:
                await kv.put(_session_key(pid), record)
                return
            except nats.js.errors.NoStreamResponseError:
                link.kv = None  # the broker lost the bucket: create it again, once
                if attempt == 2:
                    raise

    async def take_session(self, pid: str) -> bytes | None:
        link = self._ready_link()
        kv = await self._bucket(link, None)
        if kv is None:
            return None
        key = _session_key(pid)
        try:
            entry = await kv.get(key)
            # of several takers, one deletes this revision; the others find it gone
            await kv.delete(key, last=entry.revision)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return None
            raise
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            link.kv = None  # the broker lost the bucket, and the sessions with it
            return None
        return unpack_session(entry.value or b"", time.time())

    def _subject(self, target: str | None) -> str:
        return self.broadcast_subject if target is None else self.node_subject(target)


class _Acks:
    """The stream's acks of one batch of appended entries."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        """Entries appended (known once the batch is written)."""
        self.received = 0
        self.last_seq = 0
        self.error: Exception | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._written = False

    def sent(self) -> None:
        self._written = True
        self._check()

    def feed(self, msg: Msg) -> None:
        self.received += 1
        try:
            if (msg.headers or {}).get(api.Header.STATUS) == "503":  # no responders
                raise nats.js.errors.NoStreamResponseError
            answer = json.loads(msg.data)
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises it
            self.last_seq = max(self.last_seq, int(answer["seq"]))
        except (ValueError, KeyError, TypeError, nats.errors.Error) as exc:
            if self.error is None:
                self.error = exc
        self._check()

    def _check(self) -> None:
        if self._written and self.received >= self.count and not self.done.done():
            self.done.set_result(None)


def _session_key(pid: str) -> str:
    return "s" + name_token(pid)


class _Link:
    """One nats-py client, and a future that is resolved when its connection drops."""

    def __init__(self, nc: NatsClient, lost: asyncio.Future[None]) -> None:
        self.nc = nc
        self.lost = lost
        self.server = "the server"
        """host:port of the server it is (or was last) connected to, for logs."""
        self.js: JetStreamContext = nc.jetstream()
        self.stream_ready = False
        """The log stream was found or created on this connection."""
        self.kv: KeyValue | None = None
        self.writing = asyncio.Lock()
        """Held while a batch is handed to nats-py, which may yield meanwhile."""
        self.revived = asyncio.Event()
        """Set when nats-py reconnected (so the log reader replaces its consumer)."""
        self._acks: dict[str, _Acks] = {}
        self._ack_prefix: str | None = None
        self._batches = itertools.count()

    async def expect(self, acks: _Acks) -> str:
        """The reply subject for appends whose stream acks go to ``acks``."""
        if self._ack_prefix is None:
            prefix = self.nc.new_inbox()
            await self.nc.subscribe(f"{prefix}.*", cb=self._on_ack)
            self._ack_prefix = prefix
        token = str(next(self._batches))
        self._acks[token] = acks
        return f"{self._ack_prefix}.{token}"

    def forget(self, acks: _Acks) -> None:
        self._acks = {k: v for k, v in self._acks.items() if v is not acks}

    async def _on_ack(self, msg: Msg) -> None:
        acks = self._acks.get(msg.subject.rpartition(".")[2])
        if acks is not None:
            acks.feed(msg)

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


class _Follower:
    """Reads the log stream in order from one sequence through an ephemeral push
    consumer (no acks, flow control, idle heartbeats), handing the entries of each
    message to ``on_entries``. A gap (a message nats-py dropped) or a consumer gone silent makes it
    unhealthy: its owner then starts another one from ``next_seq``."""

    def __init__(self, link: _Link, stream: str, start: int,
                 on_entries: Callable[[int, list[bytes]], Awaitable[None]],
                 logger: logging.Logger) -> None:
        self.link = link
        self.logger = logger
        self.stream = stream
        self.next_seq = start
        """Stream sequence of the next message to hand over (earlier ones are skipped)."""
        self.last_seen = time.monotonic()
        self._on_entries = on_entries
        self._delivered = 0  # consumer sequence of the last message received
        self._broken = False
        self._busy = False
        self._sub: Subscription | None = None
        self._name: str | None = None

    @property
    def healthy(self) -> bool:
        return not self._broken and (
            self._busy or time.monotonic() - self.last_seen < _STALL)

    async def begin(self) -> int:
        """Create the consumer; return how many entries it had to deliver then."""
        nc = self.link.nc
        inbox = nc.new_inbox()
        self._sub = await nc.subscribe(inbox, cb=self._on_message)
        info = await self.link.js.add_consumer(self.stream, api.ConsumerConfig(
            deliver_subject=inbox, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_seq, ack_policy=api.AckPolicy.NONE,
            flow_control=True, idle_heartbeat=_HEARTBEAT, mem_storage=True,
            num_replicas=1, inactive_threshold=_STALL * 2))
        self._name = info.name
        self.last_seen = time.monotonic()
        return info.num_pending or 0

    async def _on_message(self, msg: Msg) -> None:
        self.last_seen = time.monotonic()
        if self._broken:
            return
        headers = msg.headers or {}
        status = headers.get(api.Header.STATUS)
        if status == "100":  # a heartbeat or a flow control request
            await self._control(msg, headers)
            return
        try:
            if status:
                raise ValueError(f"status {status} {headers.get(api.Header.DESCRIPTION)}")
            sequence = msg.metadata.sequence
        except (ValueError, nats.errors.Error) as exc:
            self._break(f"unexpected message ({exc})")
            return
        if sequence.consumer != self._delivered + 1:
            self._break(f"message {self._delivered + 1} of the consumer missing")
            return
        self._delivered = sequence.consumer
        seq = sequence.stream
        if seq < self.next_seq:
            return
        self.next_seq = seq + 1
        self._busy = True
        try:
            await self._on_entries(seq, log_entries(msg.headers, msg.data))
        finally:
            self._busy = False
            self.last_seen = time.monotonic()

    async def _control(self, msg: Msg, headers: dict[str, str]) -> None:
        nc = self.link.nc
        if msg.reply:  # flow control: every message before it was handled
            await nc.publish(msg.reply)
        stalled = headers.get("Nats-Consumer-Stalled")
        if stalled:
            await nc.publish(stalled)
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) != self._delivered:
            self._break(f"the consumer sent {last} messages, {self._delivered} arrived")

    def _break(self, why: str) -> None:
        self._broken = True
        self.logger.warning("nats: reading stream %s: %s (at message %d)", self.stream, why,
                            self.next_seq)

    async def stop(self) -> None:
        self._broken = True
        sub, self._sub = self._sub, None
        nc = self.link.nc
        with contextlib.suppress(Exception):
            if sub is not None:
                await sub.unsubscribe()
            if self._name is not None and nc.is_connected:  # no need to wait for it
                await nc.publish(f"{api.DEFAULT_PREFIX}.CONSUMER.DELETE.{self.stream}."
                                 f"{self._name}")
