"""The backend contract: a backend moves bytes between nodes and nothing else.

A backend publishes each payload either to every node (``target`` is ``None``) or to
one node (``target`` is that node's uid), and hands every payload it receives to the
manager's ``deliver`` coroutine, in the order the broker gave them. It knows nothing
of rooms, acks or requests: all cluster semantics live in the manager.

A backend that declares ``routes_rooms`` also publishes to a room key (``target`` is
a :class:`RoomTarget`), to the nodes that subscribed to that key only (see
:mod:`socketio_adapters.backends.subscriptions`): the room keys are opaque to it,
made by the cluster layer for its ``subscriptions="rooms"`` mode.

Options shared by every backend (as URL query parameters or keyword arguments):

``channel`` (default ``socketio``)
    Prefix of every channel, subject, exchange, topic or table name the backend uses,
    so that two applications can share one broker.
``connect_timeout`` (default ``10`` seconds)
    How long :meth:`Backend.start` waits for the first subscription before it fails.

Durable log and session store (for connection state recovery)
    A backend that declares ``durable_log`` also keeps an ordered log when the manager
    calls :meth:`Backend.enable_log` before :meth:`Backend.start`. Its semantics live
    once in :mod:`socketio_adapters.storage`; the backend is its driver:

    - *append*: a payload sent with the target :data:`LOG` is one record body, to
      append in order (the base class packs consecutive entries into one record
      where ``log_packs`` says so, and never frames a log entry with pub/sub
      payloads nor splits it into chunks);
    - *follow*: while listening, ask :meth:`LogReader.restart` (``self.log_reader``)
      where to start, given the log's last record, then read every record from that
      key on, included, in log order, and hand each to :meth:`LogReader.feed`, which
      delivers its entries once, with their offsets, to the manager;
    - *fetch*: :meth:`Backend.fetch_log`, the records between two keys, on which
      :meth:`Backend.read_log` is written once;
    - *trim* by age (``retention``) and length (at least ``max_length`` records).

    A backend that declares ``session_store`` keeps small records with an expiry
    (:class:`socketio_adapters.storage.SessionStore`: :meth:`Backend.save_session`,
    :meth:`Backend.take_session`); the recovery layer keeps sessions in the log
    itself on backends that do not.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..backoff import ConnectionState
from ..errors import AdapterError, ConfigurationError
from ..framing import FRAME_CAP, Reassembler
from ..options import Option, non_empty_str, positive_float, redact, resolve
from ..storage import (
    DeliverLog,
    LogReader,
    LogRecord,
    LogSettings,
    LogWindow,
    OffsetCodec,
    RecordKey,
    read_entries,
)
from ..tasks import settle
from ..tls import verification_failure
from .frames import LOG, Deliver, Destination, Frames, Outgoing, RoomTarget
from .subscriptions import RoomSubscriptions

__all__ = [
    "LOG",
    "AuthenticationFailed",
    "Backend",
    "BrokerUnavailable",
    "Capabilities",
    "Deliver",
    "DeliverLog",
    "Destination",
    "LogRecord",
    "LogSettings",
    "Outgoing",
    "RecordKey",
    "RoomTarget",
    "TLSVerificationFailed",
]

_STOP_SECONDS = 5.0
"""How long stop() waits for the listener and for closing connections."""


class BrokerUnavailable(AdapterError, ConnectionError):
    """The broker could not be reached when the backend started."""


class AuthenticationFailed(BrokerUnavailable):
    """The broker refused the credentials (wrong user or password) when the backend
    started: raised at once, not after ``connect_timeout``."""


class TLSVerificationFailed(BrokerUnavailable):
    """The broker's TLS certificate failed verification (signed by a CA the client
    does not trust, or issued for another host name) when the backend started: raised
    at once, not after ``connect_timeout``."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the docs' compatibility matrix is generated from these."""

    direct: bool = True
    """Payloads for one node reach only that node (otherwise all nodes see them)."""
    max_payload: int | None = None
    """Largest payload in bytes, or ``None`` when the broker sets no practical limit."""
    sharded: bool = False
    """Can spread channels over a broker cluster (e.g. Redis sharded pub/sub)."""
    durable_log: bool = False
    """Keeps an ordered log that can be read from an offset (for recovery)."""
    session_store: bool = False
    """Can keep session records with an expiry (for recovery)."""
    multi_process: bool = True
    """Nodes in different processes or machines can share it."""
    routes_rooms: bool = False
    """Publishes to a room key, to the nodes subscribed to it only (the
    ``subscriptions="rooms"`` mode of the manager)."""


COMMON_OPTIONS: tuple[Option, ...] = (
    Option("channel", non_empty_str, "socketio",
           "prefix of every channel name, so several apps can share one broker"),
    Option("connect_timeout", positive_float, 10.0,
           "seconds start() waits for the first subscription before it fails"),
)


class Backend(Frames, RoomSubscriptions, abc.ABC):
    """Base class of every backend. Subclasses set the class attributes and implement
    :meth:`_run`, :meth:`publish` and optionally :meth:`_close` (framing: see
    :class:`~socketio_adapters.backends.frames.Frames`).
    """

    name: ClassVar[str]
    extra: ClassVar[str | None] = None
    """The pip extra that installs this backend's client library."""
    capabilities: ClassVar[Capabilities] = Capabilities()
    options: ClassVar[tuple[Option, ...]] = ()
    """Backend-specific options, on top of ``COMMON_OPTIONS``."""
    frame_cap: ClassVar[int] = FRAME_CAP
    """Largest frame of small payloads sent as one broker message (see
    :mod:`socketio_adapters.framing`); lower it where large messages cost more."""
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)
    """Errors that mean "the connection is gone": logged, then reconnect."""
    auth_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Errors that mean "the broker refused our credentials" (see :meth:`is_auth_error`):
    :meth:`start` raises :class:`AuthenticationFailed` at once; later they are logged as
    errors and retried like lost connections."""
    log_key_parts: ClassVar[int] = 1
    """Numbers in a log record's key (see :mod:`socketio_adapters.storage.offsets`)."""
    log_key_max: ClassVar[int] = 2**63 - 1
    """Largest number in a log record's key."""
    log_packs: ClassVar[bool] = False
    """Pack the consecutive log entries of a batch into one record (where the
    broker's cost per record dominates)."""
    log_in_memory: ClassVar[bool] = False
    """The log is read back from this process's memory (no broker): no window of
    recent records is kept for restores."""

    def __init__(self, url: str, **options: Any) -> None:
        RoomSubscriptions.__init__(self)
        self.url = url
        self.settings = resolve(COMMON_OPTIONS + self.options, options,
                                f"{self.name} backend")
        self.channel: str = self.settings["channel"]
        self.logger = logging.getLogger(f"socketio_adapters.{self.name}")
        self.state = ConnectionState()
        self.node_id = ""
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self.message_limit: int | None = None
        """The broker's largest message, when it has a small one (e.g. NATS's
        max_payload): larger payloads are sent in chunks and joined on receipt. A
        backend sets it in ``_open`` (from the server's settings) or leaves it None."""
        self._reassembler = Reassembler(self.logger)
        self.log: LogSettings | None = None
        """Set by :meth:`enable_log`; ``None`` when this node keeps no log."""
        self._log_reader: LogReader | None = None

    @classmethod
    def from_url(cls, url: str, query: Mapping[str, str], **kwargs: Any) -> Backend:
        """Build from a URL; query parameters and keyword arguments are both options."""
        return cls(url, **{**query, **kwargs})

    @property
    def started(self) -> bool:
        return self._opened

    async def start(self, node_id: str, deliver: Deliver | None) -> None:
        """Connect and subscribe; return once subscribed, or raise
        :class:`BrokerUnavailable` after ``connect_timeout`` (at once its subclass
        :class:`AuthenticationFailed` or :class:`TLSVerificationFailed` when the broker
        refuses the credentials or its certificate fails verification; see
        :meth:`refusal`). With ``deliver`` set to
        ``None`` the backend only publishes (an emitter) and subscribes to nothing."""
        if self._opened:
            raise RuntimeError(f"{self.name} backend already started")
        self.node_id = node_id
        self._deliver = deliver
        timeout = self.settings["connect_timeout"]
        try:
            await asyncio.wait_for(self._open(), timeout)
        except Exception as exc:
            if self.refusal(exc) is not None:
                raise self._refused(exc) from None
            if not isinstance(exc, self._open_errors()):
                raise
            why = f"{type(exc).__name__}: {exc}" if str(exc) else "is the broker running?"
            raise BrokerUnavailable(
                f"{self.name}: could not connect to {redact(self.url)} within {timeout}s "
                f"({why})") from None
        self._opened = True
        if deliver is None:
            self.state.mark_up()
            return
        self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-listener")
        try:
            await self.state.wait_up(timeout)  # or until the broker refuses us
        except asyncio.TimeoutError:
            await self.stop()
            raise BrokerUnavailable(
                f"{self.name}: could not subscribe at {redact(self.url)} within "
                f"{timeout}s (is the broker running?)") from None
        refusal = self.state.refusal
        if refusal is not None and not self.state.connected:
            await self.stop()
            raise self._refused(refusal) from None

    def is_auth_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the broker refused this client's credentials (by
        default: it is one of ``auth_errors``); a backend whose client library tells
        it only by message overrides this."""
        return isinstance(exc, self.auth_errors)

    def is_tls_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the broker's certificate failed verification (see
        :func:`socketio_adapters.tls.verification_failure`)."""
        return verification_failure(exc) is not None

    def refusal(self, exc: BaseException) -> str | None:
        """What is wrong when ``exc`` says the broker cannot be used as configured,
        however often we try (refused credentials, an untrusted certificate);
        ``None`` for any other error."""
        if self.is_auth_error(exc):
            return "authentication failed, wrong user or password?"
        if self.is_tls_error(exc):
            return "TLS certificate verification failed, wrong CA (option tls_ca_file)?"
        return None

    def _refused(self, exc: BaseException) -> BrokerUnavailable:
        if not self.is_auth_error(exc) and self.is_tls_error(exc):
            return TLSVerificationFailed(
                f"{self.name}: TLS certificate verification failed at "
                f"{redact(self.url)}: is the broker's certificate signed by the CA of "
                f"option tls_ca_file, for this host? ({verification_failure(exc)})")
        return AuthenticationFailed(
            f"{self.name}: authentication failed at {redact(self.url)}: wrong user or "
            f"password? ({type(exc).__name__}: {exc})")

    def _open_errors(self) -> tuple[type[BaseException], ...]:
        return (asyncio.TimeoutError, *self.connection_errors)

    async def stop(self) -> None:
        """Unsubscribe and close connections; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await settle(task, _STOP_SECONDS, self.logger, f"{self.name} listener")
        if self._opened:
            self._opened = False
            self.state.mark_down()
            await settle(self._close(), _STOP_SECONDS, self.logger,
                         f"closing the {self.name} connections")

    async def resubscribe(self, why: str) -> None:
        """Drop the listener's connections and subscribe anew: for a subscription
        that went deaf while its connection looks alive (a client library's read
        loop that died, say). Logged as an error, with ``why``."""
        task = self._task
        if task is None or self._deliver is None:
            return
        self.logger.error("%s %s: %s; subscribing again", self.name, redact(self.url), why)
        self.state.mark_down()
        self._task = None
        task.cancel()
        await settle(task, _STOP_SECONDS, self.logger, f"{self.name} listener")
        if self._opened:
            self._task = asyncio.create_task(self._supervise(),
                                             name=f"{self.name}-listener")

    async def _supervise(self) -> None:
        from ..backoff import supervise

        await supervise(f"{self.name} {redact(self.url)}", self._run, self.state,
                        self.connection_errors, self.logger, refused=self.refusal)

    async def _open(self) -> None:
        """Create clients before the listener starts (optional)."""

    async def _close(self) -> None:
        """Release clients (optional)."""

    # ------------------------------------------------------------ durable log, sessions

    def enable_log(self, deliver: DeliverLog | None, retention: float,
                   max_length: int, cache_bytes: int = 0) -> None:
        """Keep the durable log (call before :meth:`start`); ``deliver`` receives its
        entries, in order, or is ``None`` on an emitter, which only appends. A reader
        keeps up to ``cache_bytes`` of the records it read last, and
        :meth:`read_log` reads a range there when it lies wholly inside (see
        :mod:`socketio_adapters.storage.window`)."""
        if not self.capabilities.durable_log:
            raise ConfigurationError(
                f"the {self.name} backend keeps no durable log, so it cannot recover "
                "connection state")
        if self._opened:
            raise RuntimeError("enable_log() must be called before start()")
        self.log = LogSettings(deliver, retention, max_length, cache_bytes)
        window = None
        if deliver is not None and cache_bytes > 0 and not self.log_in_memory:
            window = LogWindow(cache_bytes, max(1, max_length // 2), retention / 2)
            # the broker may lose what it held while we are away: start anew
            self.state.on_down.append(window.clear)
        self._log_reader = LogReader(OffsetCodec(self.log_key_parts, self.log_key_max),
                                     deliver, self.logger, f"{self.name} log", window)

    @property
    def log_reader(self) -> LogReader:
        """This node's place in the log (see :mod:`socketio_adapters.storage.reader`)."""
        if self._log_reader is None:
            raise RuntimeError("enable_log() was not called")
        return self._log_reader

    @property
    def log_position(self) -> str | None:
        """Offset of the last log entry this node delivered, or, before the first one,
        of the last entry in the log when its reader began (``None``: empty log)."""
        return None if self._log_reader is None else self._log_reader.offset

    async def read_log(self, after: str, upto: str | None) -> list[tuple[str, bytes]] | None:
        """The entries with ``after < offset <= upto``, in log order, or ``None`` when
        no entry ``after`` is (any longer) in the log, or ``after`` is not an offset of
        this backend at all. ``upto`` is a position this node delivered (``None``:
        the log was empty when its reader began, so nothing is returned)."""
        log = self.log
        if log is None:
            raise NotImplementedError(f"the {self.name} backend keeps no durable log")
        reader = self.log_reader
        fetch = self.fetch_log if reader.window is None else reader.window.over(
            self.fetch_log)
        return await read_entries(fetch, reader.codec, after, upto, log.retention,
                                  log.max_length)

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        """The log records with ``first <= key <= last``, in order, at most ``limit``
        (see :data:`socketio_adapters.storage.FetchRange`)."""
        raise NotImplementedError(f"the {self.name} backend keeps no durable log")

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` under ``pid`` for ``ttl`` seconds (replacing any record)."""
        raise NotImplementedError(f"the {self.name} backend keeps no sessions")

    async def take_session(self, pid: str) -> bytes | None:
        """Return and delete the record kept under ``pid``: of several nodes taking
        the same record at once, exactly one gets it. ``None`` when there is none or
        it expired."""
        raise NotImplementedError(f"the {self.name} backend keeps no sessions")

    @abc.abstractmethod
    async def _run(self, ready: Callable[[], None]) -> None:
        """Connect, subscribe to this node's channels, call ``ready()``, then deliver
        every payload through :meth:`_dispatch` until the connection fails."""

    @abc.abstractmethod
    async def publish(self, batch: Sequence[Outgoing]) -> None:
        """Send every payload of ``batch`` in order; raise on failure."""
