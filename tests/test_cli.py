"""The ``socketio-adapters`` command: ``check URL`` against memory://, local:// and a
real redis-server; its one-line errors and exit codes; ``--help`` as a subprocess;
``demo``'s early errors and the socket.io client it serves."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.brokers import BrokerStartError, RedisBroker, free_port
from socketio_adapters import create_manager
from socketio_adapters.cli import main
from socketio_adapters.probe import probe

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "socketio_adapters" / "demo" / "static"
ROUND_TRIP = re.compile(r"^round trip: (\d+\.\d\d) ms \(median of 3 probes", re.M)


def _run(*args: str, prelude: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m socketio_adapters ARGS`` in a fresh interpreter; ``prelude`` runs
    first (e.g. to hide a client library as if it were not installed)."""
    code = f"{prelude}\nimport runpy\nrunpy.run_module('socketio_adapters', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _hidden(module: str) -> str:
    return f"import sys\nsys.modules[{module!r}] = None"


def _error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"socketio-adapters {command}: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        broker = RedisBroker()
        broker.start()
    except BrokerStartError as exc:
        pytest.skip(f"no redis-server: {exc}")
    try:
        yield broker.url
    finally:
        broker.stop()


# ---------------------------------------------------------------- help


def test_help_explains_each_command() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: socketio-adapters")
    assert "check" in result.stdout and "demo" in result.stdout
    check = _run("check", "--help")
    assert check.returncode == 0
    for option in ("URL", "--timeout", "--count", "round trip", "capabilities"):
        assert option in check.stdout
    demo = _run("demo", "--help")
    assert demo.returncode == 0
    for option in ("--workers", "--port", "--host", "--url", "local://socketio-adapters-demo",
                   "websocket"):
        assert option in demo.stdout


def test_no_command_is_a_usage_error() -> None:
    result = _run()
    assert result.returncode == 2
    assert "usage: socketio-adapters" in result.stderr


# ---------------------------------------------------------------- check


@pytest.mark.parametrize("url", ["memory://", "local://sioa-check-{token}",
                                 pytest.param("redis", marks=pytest.mark.broker)],
                         ids=["memory", "local", "redis"])
def test_check_times_a_round_trip_and_prints_the_capabilities(
        url: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    if url == "redis":
        url = request.getfixturevalue("redis_url")
    url = url.format(token=secrets.token_hex(4))
    assert main(["check", url, "--count", "3", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    scheme = url.split("://")[0]
    assert out.startswith(f"ok: {url} ({scheme} backend)\n")
    match = ROUND_TRIP.search(out)
    assert match is not None, out
    assert float(match.group(1)) > 0
    assert "other nodes on this URL and channel: 0" in out
    capabilities = re.search(r"^capabilities: (.*)$", out, re.M)
    assert capabilities is not None
    shown = dict(item.split("=") for item in capabilities.group(1).split(", "))
    assert set(shown) == {"direct", "max_payload", "sharded", "durable_log",
                          "session_store", "multi_process", "routes_rooms"}
    assert shown["multi_process"] == ("no" if scheme == "memory" else "yes")
    assert shown["routes_rooms"] == "yes"  # memory, local and Redis route rooms


@pytest.mark.broker
def test_check_runs_as_a_subprocess_against_redis(redis_url: str) -> None:
    result = _run("check", redis_url, "--count", "3")
    assert result.returncode == 0, result.stderr
    assert ROUND_TRIP.search(result.stdout), result.stdout
    assert "durable_log=yes" in result.stdout


async def test_check_counts_the_nodes_already_on_the_url() -> None:
    url = f"memory://sioa-check-{secrets.token_hex(4)}"
    running = create_manager(url)
    await running.start()
    try:
        result = await probe(url, timeout=5, count=2)
    finally:
        await running.stop()
    assert result.other_nodes == 1
    assert len(result.round_trips) == 2
    assert result.backend == "memory"


def test_check_unknown_scheme() -> None:
    line = _error_line(_run("check", "redsi://127.0.0.1:6379"), "check")
    assert "unknown broker scheme 'redsi'" in line
    assert "did you mean 'redis'" in line


def test_check_not_a_url() -> None:
    line = _error_line(_run("check", "127.0.0.1:6379"), "check")
    assert "not a broker URL" in line


def test_check_bad_option_names_it() -> None:
    line = _error_line(_run("check", "memory://?channel="), "check")
    assert "channel" in line


def test_check_missing_extra_names_it() -> None:
    result = _run("check", "redis://127.0.0.1:6379/0", prelude=_hidden("redis"))
    line = _error_line(result, "check")
    assert 'pip install "socketio-adapters[redis]"' in line


def test_check_broker_down_fails_within_the_timeout() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    line = _error_line(_run("check", url, "--timeout", "1", timeout=30), "check")
    assert f"could not connect to {url}" in line or f"could not subscribe at {url}" in line
    assert "within 1.0s" in line


def test_check_redacts_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    result = _run("check", url, "--timeout", "1", timeout=30)
    line = _error_line(result, "check")
    assert "s3cret" not in result.stderr and "user:***@" in line


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_check_rejects_a_bad_timeout(value: str) -> None:
    result = _run("check", "memory://", "--timeout", value)
    assert result.returncode == 2
    assert "--timeout" in result.stderr


# ---------------------------------------------------------------- demo


def test_demo_bad_url_fails_before_starting() -> None:
    line = _error_line(_run("demo", "--url", "nope://x"), "demo")
    assert "unknown broker scheme 'nope'" in line


def test_demo_without_uvicorn_names_the_extra() -> None:
    line = _error_line(_run("demo", "--url", "memory://", prelude=_hidden("uvicorn")), "demo")
    assert 'pip install "socketio-adapters[demo]"' in line


def test_demo_serves_the_vendored_socket_io_client_of_the_version_it_names() -> None:
    client = (STATIC / "socket.io.min.js").read_text()
    header = re.match(r"/\*!\n \* Socket\.IO v(\d+\.\d+\.\d+)\n", client)
    assert header is not None, "socket.io.min.js lost its license header"
    version = header.group(1)
    assert "Released under the MIT License" in client[:300]
    assert f"socket.io-client {version}" in (STATIC / "README.md").read_text()
    assert f"({version})" in (STATIC / "index.html").read_text()
    assert "MIT License" in (STATIC / "socket.io-client.LICENSE").read_text()
    assert 'src="/static/socket.io.min.js"' in (STATIC / "index.html").read_text()


# ---------------------------------------------------------------- hub


def test_hub_help_and_a_url_that_is_not_local() -> None:
    helped = _run("hub", "--help")
    assert helped.returncode == 0 and "local://" in helped.stdout
    assert "a hub is for local:// URLs" in _error_line(_run("hub", "redis://h:1/0"), "hub")


async def test_hub_hosts_the_cluster_until_sigterm(tmp_path: Path) -> None:
    import asyncio
    import signal

    url = f"local://{tmp_path}/c"
    code = "import runpy\nrunpy.run_module('socketio_adapters', run_name='__main__')"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "hub", url, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line == f"HUB {tmp_path / 'c'}\n"
        nodes = [create_manager(url) for _ in range(2)]
        for node in nodes:
            await node.start()
            assert getattr(node.backend, "hub", "?") is None  # the hub process hosts it
        for node in nodes:
            await node.stop()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
