"""From a URL to a backend and a manager.

The registry names each backend by dotted path and imports it only when its scheme is
used, so importing this package never needs a broker's client library, and backends
never import the registry (arrows only point down).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .backends.base import Backend
from .cluster import ClusterManager
from .cluster.routing import MODES
from .errors import ConfigurationError, MissingDependency
from .options import Option, choice, parse_bool, positive_float, positive_int, resolve
from .recovery import RecoveryOptions

__all__ = ["BACKENDS", "DEFAULT_URL", "MANAGER_OPTIONS", "URL_VARIABLE", "backend_class",
           "create_backend", "create_manager", "default_url"]

URL_VARIABLE = "SOCKETIO_ADAPTER_URL"
"""The environment variable read when no URL is given."""
DEFAULT_URL = "local://default"
"""With no URL and no ``SOCKETIO_ADAPTER_URL``: the processes of this machine."""


@dataclass(frozen=True)
class Entry:
    target: str
    """``module:Class`` relative to this package."""
    requires: tuple[str, ...] = ()
    """Top-level modules of the client library (to tell a missing extra from a bug)."""
    extra: str | None = None


_REDIS = Entry("backends.redis:RedisBackend", ("redis", "hiredis"), "redis")
_REDIS_CLUSTER = Entry("backends.redis.cluster:RedisClusterBackend", ("redis", "hiredis"),
                       "redis")
_AMQP = Entry("backends.amqp:AmqpBackend", ("aio_pika", "aiormq"), "amqp")
_NATS = Entry("backends.nats:NatsBackend", ("nats",), "nats")
_KAFKA = Entry("backends.kafka:KafkaBackend", ("aiokafka",), "kafka")
_POSTGRES = Entry("backends.postgres:PostgresBackend", ("asyncpg",), "postgres")

BACKENDS: dict[str, Entry] = {
    "memory": Entry("backends.memory:MemoryBackend"),
    "local": Entry("backends.local:LocalBackend"),
    "redis": _REDIS,
    "rediss": _REDIS,
    "unix": _REDIS,
    "redis+cluster": _REDIS_CLUSTER,
    "rediss+cluster": _REDIS_CLUSTER,
    "amqp": _AMQP,
    "amqps": _AMQP,
    "nats": _NATS,
    "tls": _NATS,
    "kafka": _KAFKA,
    "postgres": _POSTGRES,
    "postgresql": _POSTGRES,
}

def _recovery(value: Any) -> RecoveryOptions | None:
    if isinstance(value, str):
        value = parse_bool(value)
    return RecoveryOptions.coerce(value)


MANAGER_OPTIONS: tuple[Option, ...] = (
    Option("heartbeat_interval", positive_float, 5.0, "seconds between heartbeats"),
    Option("heartbeat_timeout", positive_float, 10.0,
           "seconds of silence after which a node is dropped"),
    Option("request_timeout", positive_float, 5.0, "default timeout of cluster requests"),
    Option("write_only", parse_bool, False, "emitter only: publish, never subscribe"),
    Option("max_buffer", positive_int, 100_000,
           "messages the outbox holds for the broker; past that an emit waits for room"),
    Option("max_buffer_bytes", positive_int, 64 * 2**20,
           "bytes the outbox holds for the broker; past that an emit waits for room"),
    Option("buffer_timeout", positive_float, 10.0,
           "seconds an emit waits for room in a full outbox before raising OutboxFull"),
    Option("callback_ttl", positive_float, 300.0,
           "seconds a callback for a remote client waits for its ack"),
    Option("ordered", parse_bool, True,
           "an emit returns once the broker accepted it, so emits of several nodes "
           "reach clients in the order they returned (false: once queued)"),
    Option("subscriptions", choice(*MODES), "all",
           "all: every node receives every message; rooms: a node receives the "
           "broadcasts to a room only while it has a member in it (backends that "
           "route rooms; a node routes only while every node does; an emitter "
           "with rooms routes, so set it on every server first)"),
    Option("connection_state_recovery", _recovery, None,
           "recovery settings (a dict, or true for the defaults); servers usually set "
           "it through socketio_adapters.AsyncServer, an emitter through this option"),
)
_MANAGER_NAMES = {opt.name for opt in MANAGER_OPTIONS}


def _scheme(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"not a broker URL: {url!r} (expected scheme://..., e.g. redis://127.0.0.1:6379)")
    return url.split("://", 1)[0].lower()


def backend_class(url: str) -> type[Backend]:
    """The backend class for a URL's scheme, importing its module on first use."""
    scheme = _scheme(url)
    entry = BACKENDS.get(scheme)
    if entry is None:
        close = difflib.get_close_matches(scheme, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"unknown broker scheme {scheme!r}{hint} (known: {', '.join(sorted(BACKENDS))})")
    module_name, _, class_name = entry.target.partition(":")
    full_name = f"{__package__}.{module_name}"
    try:
        module = importlib.import_module(full_name)
    except ImportError as exc:
        if exc.name == full_name:
            raise ConfigurationError(
                f"the {scheme}:// backend is not part of this version of "
                "socketio-adapters") from None
        if entry.extra and exc.name and exc.name.split(".")[0] in entry.requires:
            raise MissingDependency(
                f"the {scheme}:// backend needs {exc.name!r}: "
                f'pip install "socketio-adapters[{entry.extra}]"') from exc
        raise
    cls: type[Backend] = getattr(module, class_name)
    return cls


def _split_query(url: str) -> tuple[str, dict[str, str]]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed URL: {exc}") from None
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in query:
            raise ConfigurationError(f"option {key!r} given twice in the URL")
        query[key] = value
    return urlunsplit(parts._replace(query="")), query


def create_backend(url: str, **options: Any) -> Backend:
    """Build the backend for ``url``; query parameters and keyword arguments are
    its options (a keyword argument wins over the same query parameter)."""
    cls = backend_class(url)
    base, query = _split_query(url)
    return cls.from_url(base, query, **options)


def default_url() -> str:
    """``$SOCKETIO_ADAPTER_URL``, else :data:`DEFAULT_URL` (said in one log line)."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if url:
        return url
    logging.getLogger("socketio_adapters").info(
        "no URL given and %s is not set: using %s (the processes of this machine that "
        "use it form one cluster, with no broker)", URL_VARIABLE, DEFAULT_URL)
    return DEFAULT_URL


def create_manager(url: str | None = None, **options: Any) -> ClusterManager:
    """A :class:`ClusterManager` on the broker at ``url`` (default:
    ``$SOCKETIO_ADAPTER_URL``, else ``local://default``, the embedded backend).

    >>> manager = create_manager("redis://127.0.0.1:6379/0?channel=myapp")
    >>> sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")

    Manager options (``heartbeat_interval``, ``heartbeat_timeout``,
    ``request_timeout``, ``write_only``, ``max_buffer``, ``max_buffer_bytes``,
    ``buffer_timeout``, ``callback_ttl``, ``ordered``, ``subscriptions``) may be
    given as keyword arguments or query parameters; every other option goes to the
    backend, which rejects names it does not know.
    """
    if url is None:
        url = default_url()
    cls = backend_class(url)
    base, query = _split_query(url)
    manager_given = {k: v for k, v in {**query, **options}.items() if k in _MANAGER_NAMES}
    settings = resolve(MANAGER_OPTIONS, manager_given, "the manager")
    backend = cls.from_url(
        base, {k: v for k, v in query.items() if k not in _MANAGER_NAMES},
        **{k: v for k, v in options.items() if k not in _MANAGER_NAMES})
    return ClusterManager(backend, **settings)
