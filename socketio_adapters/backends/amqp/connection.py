"""The AMQP backend's connections: the URL and its options, the publishing
connection (also used to read the log and keep sessions) and short-lived channels."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection

from ...errors import AdapterError, ConfigurationError
from ...options import Option, int_in_range, non_empty_str, parse_bool, text
from ...tls import TLS_OPTIONS, alias_options, client_context, tls_files
from ..base import Backend
from .naming import PASS_THROUGH, TLS_ALIASES, AmqpNames, connect_url

__all__ = ["CLOSE_TIMEOUT", "CONNECTION_OPTIONS", "AmqpConnection", "ConnectionLost",
           "PublishRefused", "alive", "now_ms"]

CLOSE_TIMEOUT = 2.0
"""How long closing a connection or a channel may take."""

CONNECTION_OPTIONS: tuple[Option, ...] = (
    Option("heartbeat", int_in_range(0, 65535, "whole seconds"), 20,
           "AMQP heartbeat in seconds, 0 disables it"),
    *(Option(name, text, None, "passed to aiormq") for name in PASS_THROUGH),
    *TLS_OPTIONS,
    *alias_options(TLS_ALIASES),
    Option("capath", non_empty_str, None, "directory of CA certificates (amqps)"),
    Option("no_verify_ssl", parse_bool, False,
           "do not verify the broker's certificate (amqps; unsafe)"),
)


class ConnectionLost(aiormq.exceptions.AMQPConnectionError):
    """The broker connection (or the consuming channel) closed under the listener."""


class PublishRefused(AdapterError):
    """The broker answered a publisher confirm with a nack."""


def alive(connection: AbstractConnection) -> bool:
    """Whether ``connection`` is open, down to aiormq's own connection."""
    transport = connection.transport
    return (transport is not None and not connection.is_closed
            and not transport.connection.is_closed)


def now_ms() -> int:
    return int(time.time() * 1000)


class AmqpConnection(Backend):
    """The connections every part of the AMQP backend uses (options:
    :data:`CONNECTION_OPTIONS`)."""

    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        aiormq.exceptions.AMQPConnectionError,
        aiormq.exceptions.ChannelInvalidStateError,  # its connection closed under it
        ConnectionError, asyncio.TimeoutError, OSError)
    auth_errors: ClassVar[tuple[type[BaseException], ...]] = (
        aiormq.exceptions.AuthenticationError,)  # no SASL mechanism in common

    def is_auth_error(self, exc: BaseException) -> bool:
        """The broker closed the connection with ACCESS_REFUSED while logging in
        (aiormq's ProbableAuthenticationError, which it also raises for other reasons
        to close then, such as a missing vhost), or no SASL mechanism in common."""
        return super().is_auth_error(exc) or (
            isinstance(exc, aiormq.exceptions.ProbableAuthenticationError)
            and "ACCESS_REFUSED" in str(exc))

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.names = AmqpNames(self.channel)
        self.connect_url = connect_url(
            url, self.settings["heartbeat"],
            {name: self.settings[name] for name in PASS_THROUGH})
        """The URL aiormq connects to, with the options it takes in its query."""
        self.tls = self._tls_context(url)
        """The TLS context of an ``amqps`` URL (None: plain AMQP)."""
        self._publisher: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._publish_lock = asyncio.Lock()

    def _tls_context(self, url: str) -> ssl.SSLContext | None:
        s = self.settings
        files = tls_files(s, "amqp backend", TLS_ALIASES)
        if not url.lower().startswith("amqps://"):
            if files.given or s["capath"] or s["no_verify_ssl"]:
                raise ConfigurationError("amqp backend: TLS options need an amqps:// URL")
            return None
        return client_context("amqp backend", files.ca_file, files.cert_file,
                              files.key_file, s["capath"], not s["no_verify_ssl"])

    async def _connect(self) -> AbstractConnection:
        return await aio_pika.connect(self.connect_url, ssl_context=self.tls,
                                      timeout=self.settings["connect_timeout"])

    async def _publisher_connection(self) -> AbstractConnection:
        """The publishing connection, also used to read the log and for sessions."""
        connection = self._publisher
        if connection is not None and alive(connection):
            return connection
        async with self._publish_lock:
            return await self._open_publisher()

    async def _open_publisher(self) -> AbstractConnection:
        """The publishing connection, opened anew if it is lost (under the lock)."""
        if not self._opened:
            raise ConnectionLost(f"{self.name} backend is not open")
        connection = self._publisher
        if connection is None or not alive(connection):
            self._publisher = None
            self._publish_channel = None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
            connection = await self._connect()
            self._publisher = connection
        return connection

    @contextlib.asynccontextmanager
    async def _side_channel(self, connection: AbstractConnection, confirms: bool = False,
                            ) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A short-lived channel: an error the broker answers with (a missing queue,
        other arguments) closes only this channel."""
        transport = connection.transport
        if transport is None:
            raise ConnectionLost(f"{self.name} publishing connection is closed")
        channel = await transport.connection.channel(publisher_confirms=confirms)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT)

    async def _close(self) -> None:
        async with self._publish_lock:
            connection, self._publisher = self._publisher, None
            self._publish_channel = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
