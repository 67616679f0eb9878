"""Real servers for the multi-process tests: the app of ``tests/workers_app.py``
served by ``uvicorn --workers 3``, ``gunicorn -k uvicorn_worker.UvicornWorker -w 3``,
``hypercorn --workers 3``, three ``uvicorn`` processes started by hand, or those three
behind Debian's ``nginx`` with a plain round-robin upstream (no ``ip_hash``, no
cookie: each request goes to the next node), all on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.brokers import free_port

__all__ = ["APP", "DEADLINE", "REPO_ROOT", "WORKERS", "Servers", "deployed",
           "nginx_binary", "nginx_config"]

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = "tests.workers_app:app"
WORKERS = 3
DEADLINE = 30.0
"""Liveness bound of each wait (heartbeats: 0.5 s, timeout 3 s in the app)."""


@dataclass
class Servers:
    """The processes of one deployment; ``ports`` are the ones clients use."""

    kind: str
    url: str
    ports: list[int]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    node_ports: list[int] = field(default_factory=list)
    """Behind nginx: the nodes' own ports."""

    @classmethod
    def on_free_ports(cls, kind: str, url: str) -> Servers:
        if kind == "nginx":
            return cls(kind, url, [free_port()], node_ports=[free_port()
                                                          for _ in range(WORKERS)])
        return cls(kind, url, [free_port() for _ in range(
            WORKERS if kind == "by hand" else 1)])

    def http(self, path: str, body: bytes | None = None, port: int | None = None) -> Any:
        """One request on a new connection (so the kernel picks the worker); with no
        ``port``, on the first port that accepts it (processes by hand may be dead)."""
        for candidate in [port] if port is not None else self.ports:
            request = urllib.request.Request(
                f"http://127.0.0.1:{candidate}{path}", data=body,
                headers={"Connection": "close"})
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return json.loads(reply.read())
            except urllib.error.URLError as exc:
                if port is not None or candidate == self.ports[-1]:
                    raise
                if not isinstance(exc.reason, ConnectionRefusedError):
                    raise
        raise AssertionError("unreachable")

    def start(self, env: dict[str, str], log: Path) -> None:
        commands = commands_for(self.kind, self.node_ports or self.ports)
        if self.kind == "nginx":
            config = log.parent / "nginx" / "nginx.conf"
            config.parent.mkdir(exist_ok=True)
            config.write_text(nginx_config(config.parent, self.ports[0], self.node_ports))
            commands.append([nginx_binary(), "-p", str(config.parent), "-c", str(config),
                             "-e", "stderr"])
        with open(log, "wb") as out:
            for command in commands:
                self.procs.append(subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue

    def answers(self, tries: int = 40) -> dict[int, int]:
        """pid -> server count, from ``tries`` requests spread over the ports."""
        seen: dict[int, int] = {}
        for i in range(tries):
            try:
                reply = self.http("/whoami", port=self.ports[i % len(self.ports)])
            except OSError:
                continue
            seen[reply["pid"]] = reply["count"]
        return seen


def commands_for(kind: str, ports: list[int]) -> list[list[str]]:
    """The server commands of ``kind`` (behind nginx: the nodes, "by hand")."""
    bind = f"127.0.0.1:{ports[0]}"
    if kind == "uvicorn":
        return [[sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port",
                 str(ports[0]), "--workers", str(WORKERS), "--log-level", "warning"]]
    if kind == "gunicorn":
        return [[sys.executable, "-m", "gunicorn", APP, "-k", "uvicorn_worker.UvicornWorker",
                 "-w", str(WORKERS), "-b", bind, "--log-level", "warning"]]
    if kind == "hypercorn":
        return [[sys.executable, "-m", "hypercorn", APP, "--workers", str(WORKERS), "-b",
                 bind]]
    return [[sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port",
             str(port), "--log-level", "warning"] for port in ports]



def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(found):
        raise RuntimeError("nginx is not installed: scripts/test.sh installs Debian's "
                           "package (apt-get install nginx)")
    return found


def nginx_config(prefix: Path, port: int, nodes: list[int]) -> str:
    """nginx in the foreground on loopback ``port``, a plain round-robin upstream of
    ``nodes`` (no keepalive either: each request is a new connection to the next
    node; ``max_fails=0``: a node that was not up yet is not set aside for 10 s),
    websocket upgrades passed through, everything under ``prefix``."""
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in nodes)
    temp = "".join(f"    {kind}_temp_path {prefix}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}    upstream nodes {{
{servers}    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://nodes;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 120s;
            proxy_buffering off;
        }}
    }}
}}
"""


@contextlib.asynccontextmanager
async def deployed(kind: str, folder: Path) -> AsyncIterator[Servers]:
    """``kind``'s servers on one ``local://`` cluster in ``folder``, stopped after;
    their log is printed (pytest shows a failed test's output)."""
    url = f"local://{folder}/cluster"
    env = {**os.environ, "SIOA_WORKERS_URL": url, "PYTHONPATH": str(REPO_ROOT)}
    found = Servers.on_free_ports(kind, url)
    try:
        await asyncio.to_thread(found.start, env, folder / "servers.log")
        yield found
    finally:
        await asyncio.to_thread(found.stop)
        print((folder / "servers.log").read_text(errors="replace")[-4000:])
