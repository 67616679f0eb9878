"""Readiness at the protocol level, for a broker on any host and port: the local
launchers and the containers (conformance/containers.py) ask the same questions.
Each returns the version the broker tells about itself, or "" when its protocol does
not say, and raises ``OSError`` or :class:`NotReady` while it is not ready."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable

from .process import NotReady, exchange

__all__ = ["Ask", "amqp_start", "kafka_api_versions", "nats_jetstream", "postgres_startup",
           "redis_cluster_ok", "redis_ping", "resp_reply_done"]

Ask = Callable[[int, bytes, float, Callable[[bytes], bool]], bytes]
"""Send to a port, read until done: :func:`exchange` on some host, or over TLS."""


def redis_ping(host: str, port: int, timeout: float) -> str:
    """``PING``, then ``INFO server``: Redis's (or Valkey's) version."""
    reply = exchange(port, b"PING\r\nINFO server\r\n", timeout, _pong_and_info, host=host)
    if not reply.startswith(b"+PONG"):
        raise NotReady(f"PING answered {reply[:100]!r}")
    found = re.search(rb"(valkey|redis)_version:([^\r\n]+)", reply)
    if found is None:
        return ""
    name = "Valkey" if found.group(1) == b"valkey" else "Redis"
    return f"{name} {found.group(2).decode()}"


def _pong_and_info(buf: bytes) -> bool:
    """Whether both answers were read whole: a line, then a line or a bulk string."""
    first, newline, rest = buf.partition(b"\r\n")
    if not newline or not first.startswith(b"+PONG"):
        return bool(newline)  # an error (LOADING, NOAUTH...): complete as a line
    head, newline, body = rest.partition(b"\r\n")
    if not newline:
        return False
    if not head.startswith(b"$"):
        return True
    return len(body) >= int(head[1:]) + 2


def resp_reply_done(buf: bytes) -> bool:
    """Whether ``buf`` holds one whole RESP reply: a line, or a bulk string."""
    if buf.startswith((b"-", b"+")):
        return buf.endswith(b"\r\n")
    head, sep, rest = buf.partition(b"\r\n")
    return bool(sep) and head.startswith(b"$") and len(rest) >= int(head[1:]) + 2


def redis_cluster_ok(ports: list[int], timeout: float, ask: Ask) -> str:
    """``CLUSTER INFO`` says ``cluster_state:ok`` on every master; the server's name
    and version from ``INFO server``."""
    for port in ports:
        reply = ask(port, b"CLUSTER INFO\r\n", timeout, resp_reply_done)
        if b"cluster_state:ok" not in reply:
            state = next((line for line in reply.split(b"\r\n")
                          if line.startswith((b"cluster_state", b"-"))), reply[:80])
            raise NotReady(f"node on port {port}: {state.decode(errors='replace')}")
    info = ask(ports[0], b"INFO server\r\n", timeout, resp_reply_done)
    found = re.search(rb"(valkey|redis)_version:([^\r\n]+)", info)
    name = "Valkey" if found and found.group(1) == b"valkey" else "Redis"
    version = f" {found.group(2).decode()}" if found else ""
    return f"{name} Cluster{version} ({len(ports)} masters)"


def nats_jetstream(host: str, port: int, timeout: float) -> str:
    """A JetStream API request (``$JS.API.INFO``) with its reply: ready means JetStream
    answers, not just the server."""
    inbox = f"_INBOX.sioa_probe_{port}"
    request = ('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n'
               f"SUB {inbox} 1\r\nPUB $JS.API.INFO {inbox} 0\r\n\r\n").encode()
    buf = exchange(port, request, timeout, lambda b: b"-ERR" in b or (
        f"MSG {inbox} ".encode() in b and b.endswith(b"}\r\n")), host=host)
    info = json.loads(buf.split(b"\r\n", 1)[0].partition(b" ")[2])
    if not info.get("jetstream"):
        raise NotReady(f"JetStream is not enabled in nats-server {info.get('version')}")
    if b"-ERR" in buf or b'"error"' in buf:
        raise NotReady(f"$JS.API.INFO answered {buf[-300:]!r}")
    return f"nats-server {info.get('version', '?')}"


def kafka_api_versions(host: str, port: int, timeout: float) -> str:
    """ApiVersions v0 (api key 18, correlation id 1), answered without error. The
    protocol names no product or version."""
    client = b"sioa-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    reply = exchange(port, struct.pack(">i", len(body)) + body, timeout,
                     lambda b: len(b) >= 4 and len(b) >= 4 + struct.unpack(">i", b[:4])[0],
                     host=host)
    _, correlation, error = struct.unpack(">iih", reply[:10])
    if correlation != 1 or error != 0:
        raise NotReady(f"ApiVersions answered correlation {correlation}, error {error}")
    return ""


def amqp_start(host: str, port: int, timeout: float) -> str:
    """The AMQP 0-9-1 protocol header, answered by Connection.Start, whose server
    properties hold ``product`` and ``version``."""
    def whole_frame(b: bytes) -> bool:
        return len(b) >= 7 and len(b) >= 8 + struct.unpack(">I", b[3:7])[0]

    reply = exchange(port, b"AMQP\x00\x00\x09\x01", timeout, whole_frame, host=host)
    if reply[0] != 1 or reply[7:11] != b"\x00\x0a\x00\x0a":
        raise NotReady(f"no Connection.Start after the AMQP header: {reply[:16]!r}")
    props = {key.decode(): value.decode(errors="replace") for key, value in
             re.findall(rb"(product|version)S(?:\x00[\x00-\xff]{3})([\x20-\x7e]+)", reply)}
    return " ".join(props[k] for k in ("product", "version") if k in props)


CANNOT_CONNECT_NOW = "57P03"
"""The SQLSTATE of a server that starts, stops or recovers."""


def postgres_startup(host: str, port: int, timeout: float, user: str = "postgres",
                     database: str = "postgres") -> str:
    """A StartupMessage: the server either lets the user in (trust) and reports
    ``server_version``, or asks for a password or refuses this login (up, version
    unknown); ``cannot_connect_now`` (starting, recovering) is not ready."""
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    startup = struct.pack(">ii", 8 + len(params), 196608) + params

    def complete(b: bytes) -> bool:
        at = 0
        while at + 5 <= len(b):
            kind, size = b[at:at + 1], struct.unpack(">i", b[at + 1:at + 5])[0]
            if at + 1 + size > len(b):
                return False
            if kind in (b"Z", b"E") or (kind == b"R" and b[at + 5:at + 9] != b"\0\0\0\0"):
                return True
            at += 1 + size
        return False

    reply = exchange(port, startup, timeout, complete, host=host)
    version, at = "", 0
    while at + 5 <= len(reply):
        kind, size = reply[at:at + 1], struct.unpack(">i", reply[at + 1:at + 5])[0]
        body = reply[at + 5:at + 1 + size]
        if kind == b"E":
            fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
            if fields.get(b"C") == CANNOT_CONNECT_NOW:
                raise NotReady(f"startup refused: {fields.get(b'M', '')}")
            break  # it serves, but not this login (pg_hba.conf, no TLS): as pg_isready
        if kind == b"S" and body.startswith(b"server_version\0"):
            version = body.split(b"\0")[1].decode(errors="replace")
        at += 1 + size
    return f"PostgreSQL {version}" if version else "PostgreSQL"
