"""RabbitMQ with its own epmd."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .probes import amqp_start
from .process import (
    HOST,
    LocalBroker,
    exited,
    free_port,
    listening,
    spawn,
    stop_child,
    wait_for,
    which,
)

__all__ = ["RabbitMQBroker"]


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
        return which("epmd", *map(str, sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))))

    @classmethod
    def find_binary(cls) -> Path | None:
        server = which("/usr/lib/rabbitmq/bin/rabbitmq-server")
        return server if cls._epmd_binary() else None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    @property
    def running(self) -> bool:
        return super().running and self._epmd is not None and not exited(self._epmd)

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
        self._epmd = spawn([str(epmd), "-port", str(self.epmd_port), "-address", HOST],
                            self.log_path)
        if not wait_for(lambda: listening(self.epmd_port), deadline - time.monotonic()):
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
        self._proc = spawn([str(self.binary)], self.log_path, env)

    def _halt(self) -> None:
        try:
            super()._halt()
        finally:
            if self._epmd is not None:
                stop_child(self._epmd)
                self._epmd = None

    def _probe(self, timeout: float) -> str | None:
        return amqp_start(HOST, self.port, timeout)
