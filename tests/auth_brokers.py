"""Brokers that require credentials, for tests/test_auth.py: the launchers of
conformance/brokers/ with authentication turned on. Each knows its one good login
(``user``, ``password``) and builds URLs with any other (``url_as``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from conformance.brokers import (
    HOST,
    BrokerStartError,
    KafkaBroker,
    LocalBroker,
    NatsBroker,
    PostgresBroker,
    RabbitMQBroker,
    RedisBroker,
    available,
)

__all__ = ["AuthKafka", "AuthNats", "AuthPostgres", "AuthRabbitMQ", "AuthRedis",
           "userinfo"]


def _first_line(port: int, payload: bytes, timeout: float) -> bytes:
    """Connect, send ``payload``, return what arrived up to the last CRLF read."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {data[:100]!r}")
            data += chunk
        return data


def userinfo(user: str | None, password: str | None) -> str:
    """``user:password@``, percent-encoded, or nothing."""
    if user is None and password is None:
        return ""
    secret = "" if password is None else ":" + quote(password, safe="")
    return f"{quote(user or '', safe='')}{secret}@"


class AuthRedis(RedisBroker):
    """redis-server with a password for the default user (``requirepass``) and an ACL
    user ``alice``."""

    password = "redis-pw-1"
    acl_user, acl_password = "alice", "alice-pw-2"

    def _command(self) -> list[str]:
        return [*super()._command(), "--requirepass", self.password, "--user",
                self.acl_user, "on", f">{self.acl_password}", "~*", "&*", "+@all"]

    def _probe(self, timeout: float) -> None:
        reply = _first_line(self.port, f"AUTH {self.password}\r\nPING\r\n".encode(),
                            timeout)
        if reply != b"+OK\r\n+PONG\r\n":
            raise ConnectionError(f"AUTH and PING answered {reply!r}")

    def url_as(self, user: str | None, password: str | None) -> str:
        return f"redis://{userinfo(user, password)}{HOST}:{self.port}/0"


class AuthRabbitMQ(RabbitMQBroker):
    """RabbitMQ as it comes: the user ``guest`` (password ``guest``) on loopback."""

    user, password = "guest", "guest"

    def url_as(self, user: str | None, password: str | None) -> str:
        return f"amqp://{userinfo(user, password)}{HOST}:{self.port}/"


class AuthNats(NatsBroker):
    """nats-server with one user and password (``--user``/``--pass``)."""

    user, password = "alice", "nats-pw-3"

    def _command(self) -> list[str]:
        return [*super()._command(), "--user", self.user, "--pass", self.password]

    def _probe(self, timeout: float) -> None:
        info = _first_line(self.port, b"", timeout)  # the server speaks first
        if not json.loads(info.partition(b" ")[2]).get("auth_required"):
            raise ConnectionError(f"no auth_required in {info[:200]!r}")

    def url_as(self, user: str | None, password: str | None) -> str:
        return f"nats://{userinfo(user, password)}{HOST}:{self.port}"


class AuthPostgres(PostgresBroker):
    """Postgres whose loopback TCP logins need a password: role ``alice`` with a
    SCRAM-SHA-256 password (pg_hba ``scram-sha-256``), role ``bob`` with an MD5 one
    (pg_hba ``md5``); the superuser stays trusted, for the launcher's probe."""

    user, password = "alice", "pg-pw-4"
    md5_user, md5_password = "bob", "pg-pw-5"

    def _prepare(self) -> None:
        super()._prepare()
        data = self.data_dir / "data"
        sql = ("SET password_encryption = 'scram-sha-256';\n"
               f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}';\n"
               "SET password_encryption = 'md5';\n"
               f"CREATE ROLE {self.md5_user} LOGIN PASSWORD '{self.md5_password}';\n")
        result = subprocess.run(
            self._as_owner("postgres", "--single", "-D", str(data), "postgres"),
            input=sql.encode(), capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise self._start_error(f"could not create roles: {result.stderr[-500:]!r}")
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all postgres {HOST}/32 trust\n"
            f"host all {self.md5_user} {HOST}/32 md5\n"
            f"host all all {HOST}/32 scram-sha-256\n")

    def url_as(self, user: str | None, password: str | None) -> str:
        return f"postgresql://{userinfo(user, password)}{HOST}:{self.port}/postgres"


class AuthKafka(KafkaBroker):
    """tansu with ``--authentication``: every client must log in with SASL SCRAM. It
    has no users (see the Kafka backend's ``is_auth_error``), so every login fails."""

    def _launch(self, deadline: float) -> None:
        listener = f"tcp://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in self._TANSU_ENV}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), "broker", "--listener-url", listener,
                 "--advertised-listener-url", listener, "--storage-engine",
                 "memory://tansu/", "--cluster-id", f"sioa_{self.port}", "--authentication"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.log_path.parent, start_new_session=True)

    def url_as(self, user: str | None, password: str | None) -> str:
        return (f"kafka://{userinfo(user, password)}{HOST}:{self.port}"
                "?security_protocol=SASL_PLAINTEXT&sasl_mechanism=SCRAM-SHA-256")


class OnFirstUse:
    """Brokers started on first use (``get(kind)``), by ``make(kind)``; a broker
    whose binary (the part of ``kind`` before ``-``) is missing skips the test, one
    that does not start fails it. ``stop()`` stops them all."""

    def __init__(self, make: Callable[[str], LocalBroker]) -> None:
        self.make = make
        self.started: dict[str, LocalBroker] = {}

    def get(self, kind: str) -> Any:
        if kind not in self.started:
            binary = kind.partition("-")[0]
            if not available(binary):
                pytest.skip(f"{binary} is not installed (scripts/install-brokers.sh {binary})")
            broker = self.make(kind)
            try:
                broker.start()
            except BrokerStartError as exc:
                pytest.fail(str(exc))
            self.started[kind] = broker
        return self.started[kind]

    def stop(self) -> None:
        for broker in self.started.values():
            broker.stop()
