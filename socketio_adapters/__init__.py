"""socketio-adapters: run python-socketio on many processes and machines.

>>> import socketio
>>> from socketio_adapters import create_manager
>>> manager = create_manager("redis://127.0.0.1:6379/0")
>>> sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")

Start the manager with the application (``await manager.start()``, or
:func:`attach_aiohttp` / :class:`LifespanMiddleware`) so the node is subscribed before
its first client arrives.
"""

from .backends.base import (
    AuthenticationFailed,
    Backend,
    BrokerUnavailable,
    Capabilities,
    TLSVerificationFailed,
)
from .client import AsyncClient
from .cluster import ClusterManager, RemoteSocket
from .distributor import ApplicationServer, EdgeRelay
from .emitter import Emitter, create_emitter
from .errors import (
    AdapterError,
    ClusterTimeout,
    ConfigurationError,
    EmitFailed,
    EmitTimeout,
    MalformedMessage,
    MissingDependency,
    NotStarted,
    OutboxFull,
    PayloadTooLarge,
)
from .lifecycle import LifespanMiddleware, attach_aiohttp
from .recovery import RecoveryOptions
from .registry import create_backend, create_manager
from .server import AsyncServer
from .sync_emitter import SyncEmitter
from .websocket import websocket_compression

__all__ = [
    "AdapterError",
    "ApplicationServer",
    "AsyncClient",
    "AsyncServer",
    "AuthenticationFailed",
    "Backend",
    "BrokerUnavailable",
    "Capabilities",
    "ClusterManager",
    "ClusterTimeout",
    "ConfigurationError",
    "EdgeRelay",
    "EmitFailed",
    "EmitTimeout",
    "Emitter",
    "LifespanMiddleware",
    "MalformedMessage",
    "MissingDependency",
    "NotStarted",
    "OutboxFull",
    "PayloadTooLarge",
    "RecoveryOptions",
    "RemoteSocket",
    "SyncEmitter",
    "TLSVerificationFailed",
    "attach_aiohttp",
    "create_backend",
    "create_emitter",
    "create_manager",
    "websocket_compression",
]
__version__ = "0.1.0"
