from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from socketio_adapters import (
    ConfigurationError,
    MissingDependency,
    create_backend,
    create_manager,
)
from socketio_adapters.backends.memory import MemoryBackend
from socketio_adapters.backends.redis import RedisBackend
from socketio_adapters.options import redact


def test_scheme_picks_the_backend() -> None:
    assert isinstance(create_backend("memory://"), MemoryBackend)
    for url in ("redis://127.0.0.1:6379/0", "rediss://h:6380", "unix:///tmp/r.sock"):
        assert isinstance(create_backend(url), RedisBackend)
    assert isinstance(create_backend("REDIS://127.0.0.1"), RedisBackend)


def test_unknown_scheme_lists_known_ones_and_suggests() -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_manager("rediz://127.0.0.1")
    assert "did you mean 'redis'" in str(caught.value)
    assert "memory" in str(caught.value) and "kafka" in str(caught.value)


@pytest.mark.parametrize("url", ["", "127.0.0.1:6379", "redis:/x"])
def test_not_a_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not a broker URL"):
        create_manager(url)


def test_query_options_reach_the_backend_and_the_manager() -> None:
    manager = create_manager(
        "redis://127.0.0.1:6379/0?channel=app1&sharded=yes&heartbeat_interval=2"
        "&heartbeat_timeout=7&socket_timeout=1.5")
    backend = manager.backend
    assert isinstance(backend, RedisBackend)
    assert backend.channel == "app1"
    assert backend.sharded is True
    assert backend.settings["socket_timeout"] == 1.5
    assert manager.heartbeat_interval == 2.0
    assert manager.nodes.timeout == 7.0


def test_keyword_arguments_win_over_the_query() -> None:
    manager = create_manager("memory://?channel=a", channel="b", request_timeout=9)
    assert manager.backend.channel == "b"
    assert manager.request_timeout == 9.0


@pytest.mark.parametrize("url, message", [
    ("memory://?nope=1", "unknown option 'nope'"),
    ("memory://?heartbeat_interval=soon", "bad value 'soon' for option 'heartbeat_interval'"),
    ("memory://?heartbeat_interval=-1", "option 'heartbeat_interval'"),
    ("redis://h?sharded=maybe", "option 'sharded'"),
    ("memory://?channel=", "option 'channel'"),
    ("memory://?channel=a&channel=b", "given twice"),
    ("memory://?max_buffer=0", "option 'max_buffer'"),
])
def test_bad_options_name_the_option(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_manager(url)


def test_heartbeat_timeout_must_exceed_interval() -> None:
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        create_manager("memory://?heartbeat_interval=5&heartbeat_timeout=5")


def test_missing_client_library_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import socketio_adapters\n"  # importing the package itself never fails
        "try:\n"
        "    socketio_adapters.create_manager('redis://127.0.0.1')\n"
        "except socketio_adapters.MissingDependency as e:\n"
        "    print('MISSING', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'pip install "socketio-adapters[redis]"' in out
    assert issubclass(MissingDependency, ImportError)


def test_redact_hides_passwords() -> None:
    assert redact("redis://user:secret@h:1/0") == "redis://user:***@h:1/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact("postgresql://bob@h/db") == "postgresql://bob@h/db"
    assert redact("nats://s3cret-token@h1:1,h2:2") == "nats://***@h1:1,h2:2"
    assert redact("tls://u:pw@h:1") == "tls://u:***@h:1"
    assert redact("postgresql://h/db?sslmode=require&password=pw&sslpassword=x") == (
        "postgresql://h/db?sslmode=require&password=***&sslpassword=***")


def test_no_url_means_the_environment_then_the_embedded_backend(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SOCKETIO_ADAPTER_URL", "memory://from-env")
    assert create_manager().backend.url == "memory://from-env"
    monkeypatch.delenv("SOCKETIO_ADAPTER_URL")
    with caplog.at_level(logging.INFO, logger="socketio_adapters"):
        manager = create_manager()
    assert manager.backend.name == "local" and manager.backend.url == "local://default"
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "local://default" in said[0] and "SOCKETIO_ADAPTER_URL" in said[0]
