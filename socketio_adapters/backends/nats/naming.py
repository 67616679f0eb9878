"""NATS names: subject tokens, stream and bucket names, and what a NATS URL says.

A channel or node uid reaches a subject escaped, so that nothing NATS treats as
special (``.``, ``*``, ``>``, ``$``, whitespace, non-ASCII) gets through and two
channels never share a subject; stream and bucket names take no ``%``, so they use
another escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ...errors import ConfigurationError
from ...hosts import parse_hosts
from ...options import redact

__all__ = ["DEFAULT_PORT", "MAX_NAME_TOKEN", "NatsNames", "NatsServers", "escape_token",
           "name_token", "parse_url", "session_key", "unescape_token"]

DEFAULT_PORT = 4222
MAX_NAME_TOKEN = 240
"""Longest escaped channel in a stream or bucket name (JetStream allows 255 chars)."""
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_NAME_SAFE = _SAFE - {"_"}


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


def session_key(pid: str) -> str:
    """The key of a session record in the bucket."""
    return "s" + name_token(pid)


@dataclass(frozen=True)
class NatsNames:
    """The subjects, stream and bucket of one channel."""

    broadcast_subject: str
    """``{channel}.all``: what every node receives."""
    node_prefix: str
    """``{channel}.node.``, followed by a node's escaped uid: what is addressed to it."""
    log_subject: str
    """``{channel}.log``: the subject of the log stream."""
    log_stream: str
    """``{name}_log``: the stream of the durable log."""
    session_bucket: str
    """``{name}_sessions``: the key-value bucket of sessions."""
    room_prefix: str = ""
    """``{channel}.r.``, followed by a room key (hex): one room's broadcasts."""

    @classmethod
    def of(cls, channel: str) -> NatsNames:
        prefix, name = escape_token(channel), name_token(channel)
        return cls(f"{prefix}.all", f"{prefix}.node.", f"{prefix}.log", f"{name}_log",
                   f"{name}_sessions", f"{prefix}.r.")

    def room_subject(self, key: str) -> str:
        """The subject of one room's broadcasts (``key`` is hex: one token)."""
        return self.room_prefix + key

    def node_subject(self, uid: str) -> str:
        """The subject of what is addressed to the node ``uid``."""
        return self.node_prefix + escape_token(uid)


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
    servers = tuple(f"{scheme}://{server.netloc}"
                    for server in parse_hosts(hosts, DEFAULT_PORT, url))
    return NatsServers(servers, user, password, token)
