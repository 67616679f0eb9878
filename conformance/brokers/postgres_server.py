"""PostgreSQL's postmaster."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from pathlib import Path

from .probes import postgres_startup
from .process import HOST, LocalBroker, spawn, stop_child, which

__all__ = ["PostgresBroker"]


class PostgresBroker(LocalBroker):
    """PostgreSQL's postmaster as a foreground child (a daemon left by pg_ctl would be
    orphaned); as root it runs as the ``postgres`` user, by runuser."""

    kind = "postgres"

    @classmethod
    def find_binary(cls) -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                       key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
        binary = which(*map(str, found[-1:]), "postgres")
        if binary is None or not (binary.resolve().parent / "pg_isready").exists():
            return None
        if os.geteuid() == 0 and (  # postgres refuses to run as root
                which("runuser") is None or "postgres" not in {u.pw_name for u in pwd.getpwall()}):
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
        self._proc = spawn(self._as_owner(
            "postgres", "-D", f"{d}/data", "-p", str(self.port), "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={sockets}"), self.log_path)

    def _halt(self) -> None:
        if self._proc is not None:  # SIGINT: fast shutdown; runuser would send SIGTERM, smart
            with contextlib.suppress(OSError, ValueError, IndexError):
                lock = (self.data_dir / "data" / "postmaster.pid").read_text()
                stop_child(self._proc, signal.SIGINT, int(lock.split()[0]))
            stop_child(self._proc)
            self._proc = None

    def _probe(self, timeout: float) -> str | None:
        return postgres_startup(HOST, self.port, timeout)
