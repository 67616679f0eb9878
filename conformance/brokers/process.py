"""The broker process: a child in its own session on a free loopback port, with its
own data dir, started, probed until ready, restarted and stopped (see the package doc)."""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, TypeVar

__all__ = ["HOST", "BrokerStartError", "LocalBroker", "NotReady", "exchange", "exited",
           "free_port", "listening", "spawn", "stop_child", "wait_for", "which"]

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 5.0
_B = TypeVar("_B", bound="LocalBroker")


class BrokerStartError(RuntimeError):
    """A broker is not installed or did not come up; the message says why, with its log."""


class NotReady(Exception):
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


def which(*candidates: str) -> Path | None:
    for name in candidates:
        found = name if "/" in name else shutil.which(name)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return Path(found)
    return None


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether our child exited, without reaping it: its pid, which is also its process
    group id, stays reserved until ``proc.wait()``, so killpg cannot hit a stranger."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
           ) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)


def stop_child(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                target: int | None = None) -> None:
    """Send sig to target (default: the child), give the child STOP_GRACE_SECONDS to
    exit, then SIGKILL its whole process group (stragglers included) and reap it."""
    if proc.returncode is not None:
        return
    if not exited(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target or proc.pid, sig)
        wait_for(lambda: exited(proc), STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: not _group_alive(proc.pid), 5.0)  # SIGKILL takes a moment


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


def exchange(port: int, payload: bytes, timeout: float, done: Callable[[bytes], bool],
             host: str = HOST) -> bytes:
    """Connect to host:port, send payload, read until done(what was read)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        buf = b""
        while not done(buf):
            chunk = sock.recv(65536)
            if not chunk:
                raise NotReady(f"connection closed after {len(buf)} bytes: {buf[:100]!r}")
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
        self.version: str = ""
        """What the broker said it is, e.g. ``Redis 7.0.15`` (once started)."""
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

    @property
    def conformance_url(self) -> str:
        """The URL the conformance suite runs its nodes on: :attr:`url`, unless the
        broker's kind is tested in a configuration of its own (Kafka)."""
        return self.url

    @abc.abstractmethod
    def _probe(self, timeout: float) -> str | None:
        """Return if the broker serves clients (with the version it reports, if it
        does), else raise OSError or NotReady."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:  # noqa: B027 - optional hook: first start, empty data dir
        pass

    def _launch(self, deadline: float) -> None:
        self._proc = spawn(self._command(), self.log_path)

    def _halt(self) -> None:
        """Stop the processes, keep the data dir."""
        if self._proc is not None:
            stop_child(self._proc)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and not exited(self._proc)

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
                    told = self._probe(min(2.0, max(0.2, deadline - time.monotonic())))
                    self.version = told or self.version or self.kind
                    break
                except (OSError, NotReady, ValueError, struct.error,
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

    @property
    def source(self) -> str:
        """Where this broker comes from, for the run's report."""
        return f"local binary {self.binary}"

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
