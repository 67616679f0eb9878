"""docker/: the compose file and the nginx configuration in front of the demo nodes.

- The compose file is valid for Compose: ``docker compose config -q`` where the
  Compose plugin exists (GitHub's runners), else Debian's ``docker-compose`` 1.29
  (scripts/test.sh installs it), which checks it offline against the Compose
  Specification's schema as of 2021 (unknown or misplaced keys, value types,
  variable interpolation, ``depends_on`` naming a service that exists), not
  durations nor whether images exist. And always its shape, read with PyYAML: the
  five brokers on the images of conformance/images.py, three nodes built from
  docker/Dockerfile on one broker URL, nginx depending on healthy nodes, published
  ports on 127.0.0.1 only.
- docker/nginx.conf itself, served by Debian's nginx here: the same file with only
  the upstream servers and the listen address changed to loopback ones, in front of
  three real nodes (tests/servers.py, on ``local://``), with python-socketio clients
  on long-polling and on websocket, each receiving a broadcast from every node.

Nothing here runs a container: the images, their healthchecks and the demo on each
broker run only where a Docker engine does (docker/README.md).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.brokers import free_port
from conformance.cluster import eventually
from conformance.images import IMAGES

from .servers import DEADLINE, WORKERS, Servers, deployed, nginx_binary
from .swarm import PySwarm
from .test_ci_files import require_tools

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
NGINX_CONF = DOCKER / "nginx.conf"

BROKERS = {"redis": ("redis", "7.4"), "rabbitmq": ("rabbitmq", "4.0"),
           "nats": ("nats", "2.11"), "kafka": ("kafka", "4.0"),
           "postgres": ("postgres", "17")}
"""Compose service -> its image's key in conformance/images.py."""
NODES = ("node1", "node2", "node3")
NO_HEALTHCHECK = {"nats"}
"""The nats image holds nothing but nats-server: no command to check it with."""


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


# ---------------------------------------------------------------- compose


def _compose_command() -> list[str] | None:
    """A Compose that validates offline: the docker CLI's plugin, or Debian's 1.29."""
    docker = shutil.which("docker")
    if docker is not None and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_compose_validates(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        message = "neither 'docker compose' nor 'docker-compose' is installed"
        if require_tools():
            pytest.fail(f"{message} (SIOA_REQUIRE_TOOLS=1: scripts/test.sh installs "
                        "Debian's docker-compose)")
        pytest.skip(message)

    def config(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, "--project-directory", str(DOCKER), "-f",
                               str(path), "config", *options],
                              capture_output=True, text=True, timeout=60, check=False)

    done = config(COMPOSE, "-q")
    assert done.returncode == 0, done.stderr
    # the relative paths resolve to the repository (build context) and nginx.conf
    resolved = config(COMPOSE)
    assert resolved.returncode == 0, resolved.stderr
    assert f"context: {ROOT}\n" in resolved.stdout and str(NGINX_CONF) in resolved.stdout
    # and it does catch a mistake (so passing means something)
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace(
        "node1: {condition: service_healthy}", "node9: {condition: service_healthy}"))
    done = config(broken, "-q")
    assert done.returncode != 0 and "node9" in done.stderr, done.stderr


def test_brokers_run_the_images_of_the_ci_matrix() -> None:
    services = compose()["services"]
    for name, (kind, version) in BROKERS.items():
        assert services[name]["image"] == IMAGES[kind][version].ref, name
    assert "-js" in services["nats"]["command"]  # JetStream: the log and sessions
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_every_image_is_pinned() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if "build" in service:  # the nodes: this repository, built on the spot
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and re.fullmatch(r"[\w.-]*\d[\w.-]*", tag) and tag != "latest", (
            name, image)
    base = re.search(r"^FROM (\S+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert base is not None and re.search(r":\d+\.\d+\.\d+", base.group(1)), base


def test_three_nodes_on_one_broker_url_behind_nginx() -> None:
    services = compose()["services"]
    assert set(services) == {*BROKERS, *NODES, "nginx"}
    nodes = [services[name] for name in NODES]
    for node in nodes:
        assert node["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert node["environment"]["SOCKETIO_ADAPTER_URL"] == (
            "${SOCKETIO_ADAPTER_URL:-redis://redis:6379/0}")
        assert set(node["depends_on"]) == set(BROKERS)
        assert "ports" not in node  # reached through nginx only
    nginx = services["nginx"]
    assert nginx["depends_on"] == {name: {"condition": "service_healthy"} for name in NODES}
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    upstream = re.findall(r"^\s*server (\S+);", NGINX_CONF.read_text(), re.M)
    assert upstream == [f"{name}:8000" for name in NODES]


def test_every_service_has_a_healthcheck_and_ports_only_on_loopback() -> None:
    for name, service in compose()["services"].items():
        assert ("healthcheck" in service) == (name not in NO_HEALTHCHECK), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_build_context_holds_what_the_dockerfile_copies(tmp_path: Path) -> None:
    allowed = [line[1:].rstrip("/") for line in
               (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    copied = [part for line in (DOCKER / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") for part in line.split()[1:-1]]
    assert copied and set(copied) <= set(allowed), (copied, allowed)
    # the package builds from those files alone (the image's pip install, offline)
    context = tmp_path / "context"
    for path in copied:
        source = ROOT / path
        if source.is_dir():
            shutil.copytree(source, context / path,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(source, context / path)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--quiet", "--wheel-dir",
                            str(tmp_path / "dist"), str(context)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    assert list((tmp_path / "dist").glob("socketio_adapters-*.whl"))


def test_docs_say_how_to_run_and_switch() -> None:
    text = (DOCKER / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml up" in text
    assert "SOCKETIO_ADAPTER_URL" in text
    for url in ("redis://redis:6379/0", "amqp://sioa:sioa@rabbitmq:5672/",
                "nats://nats:4222", "kafka://kafka:9092",
                "postgres://sioa:sioa@postgres:5432/sioa"):
        assert url in text, url
    assert "docker/README.md" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- nginx.conf


def loopback_config(text: str, listen: int, nodes: list[int]) -> str:
    """docker/nginx.conf with its upstream servers and listen address on loopback."""
    ports = iter(nodes)
    swapped = re.sub(r"^(\s*)server node\d:8000;$",
                     lambda m: f"{m.group(1)}server 127.0.0.1:{next(ports)};", text,
                     flags=re.M)
    return re.sub(r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{listen};", swapped,
                  flags=re.M)


def test_only_addresses_change_for_loopback() -> None:
    original = NGINX_CONF.read_text().splitlines()
    changed = loopback_config(NGINX_CONF.read_text(), 18080, [18001, 18002, 18003])
    lines = changed.splitlines()
    assert len(lines) == len(original)
    differ = [(a.strip(), b.strip()) for a, b in zip(original, lines, strict=True) if a != b]
    assert differ == [("server node1:8000;", "server 127.0.0.1:18001;"),
                      ("server node2:8000;", "server 127.0.0.1:18002;"),
                      ("server node3:8000;", "server 127.0.0.1:18003;"),
                      ("listen 80;", "listen 127.0.0.1:18080;")]


def _main_config(prefix: Path, snippet: Path) -> str:
    """What the nginx image's own nginx.conf does around conf.d/*.conf, for Debian's
    nginx as any user: foreground, everything under ``prefix``."""
    temp = "".join(f"    {kind}_temp_path {prefix}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log stderr warn;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log off;\n{temp}    include {snippet};\n}}\n")


def _start_nginx(prefix: Path, listen: int, nodes: list[int],
                 log: Path) -> subprocess.Popen[bytes]:
    """Debian's nginx serving docker/nginx.conf (made loopback) under ``prefix``."""
    binary = nginx_binary()
    prefix.mkdir()
    snippet = prefix / "default.conf"
    snippet.write_text(loopback_config(NGINX_CONF.read_text(), listen, nodes))
    (prefix / "nginx.conf").write_text(_main_config(prefix, snippet))
    with open(log, "wb") as out:
        return subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                 "-e", "stderr"], stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture
async def behind_nginx(tmp_path: Path) -> AsyncIterator[tuple[Servers, int]]:
    """Three nodes (uvicorn processes on loopback, one local:// cluster) and Debian's
    nginx serving docker/nginx.conf in front of them; yields them and nginx's port."""
    async with deployed("by hand", tmp_path) as nodes:
        port = free_port()
        log = tmp_path / "nginx.log"
        proc = await asyncio.to_thread(_start_nginx, tmp_path / "nginx", port,
                                       nodes.ports, log)
        try:
            yield nodes, port
        finally:
            await asyncio.to_thread(_stop, proc)
            print(log.read_text(errors="replace")[-2000:])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Connection": "close", **(headers or {})})
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.status, reply.read()


async def test_nginx_conf_serves_three_nodes_with_no_sticky_routing(
        behind_nginx: tuple[Servers, int]) -> None:
    nodes, port = behind_nginx
    base = f"http://127.0.0.1:{port}"
    last: dict[int, int] = {}

    async def ready() -> bool:
        nonlocal last
        last = await asyncio.to_thread(nodes.answers)  # on the nodes' own ports
        return len(last) == WORKERS and set(last.values()) == {WORKERS}

    await eventually(ready, True, f"every node counts every node (last: {last})",
                     timeout=DEADLINE)
    pids = set(last)

    async def healthz() -> tuple[int, bytes]:
        try:
            return await asyncio.to_thread(_get, f"{base}/healthz")
        except OSError:
            return 0, b""

    await eventually(healthz, (200, b"ok\n"), "nginx answers /healthz", timeout=DEADLINE)
    # a browser's handshake: its Origin matches the Host nginx passes on (with the port)
    status, body = await asyncio.to_thread(
        _get, f"{base}/socket.io/?EIO=4&transport=polling", {"Origin": base})
    assert status == 200 and body.startswith(b"0{"), body

    py = PySwarm()
    try:
        await py.connect(base, 3, ["polling"])
        await py.connect(base, 3, ["polling", "websocket"])  # upgrades through nginx
        await py.connect(base, 3, ["websocket"])
        await eventually(py.transports, ["polling"] * 3 + ["websocket"] * 6,
                         "clients' transports")
        assert await py.clients[0].call("shout", timeout=20) in pids

        async def news() -> list[list[int]]:
            return [sorted(got) for got in py.news]

        await eventually(news, [sorted(pids)] * 9, "every client has every node's "
                         "broadcast", timeout=DEADLINE)
        # round-robin really spread the sessions' requests: some were forwarded
        counts = (await asyncio.to_thread(nodes.http, "/forwarding")).values()
        assert sum(c["forwarded"] for c in counts) > 0
    finally:
        await py.close()
