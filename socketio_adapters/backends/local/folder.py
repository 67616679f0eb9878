"""Where the processes of one ``local://`` cluster meet: a runtime folder holding
the hub's Unix domain socket and the lock that elects the hub.

``local://NAME``
    ``$XDG_RUNTIME_DIR/socketio-adapters/NAME`` when that directory exists, else
    ``<temp dir>/socketio-adapters-<uid>/NAME`` (created with mode 0700: only the
    user who runs the processes can join).
``local:///an/absolute/folder``
    That folder (created if missing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ...errors import ConfigurationError

__all__ = ["DEFAULT_NAME", "HubLock", "RuntimeFolder"]

DEFAULT_NAME = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SOCKET_PATH_MAX = 107
"""Longest path of a Unix domain socket (``sun_path`` holds 108 bytes)."""


def _user_root() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "socketio-adapters"
    return Path(tempfile.gettempdir()) / f"socketio-adapters-{os.getuid()}"


class RuntimeFolder:
    """The folder of one cluster and the files in it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.netloc and parts.path not in ("", "/"):
            raise ConfigurationError(
                f"local:// takes a name (local://NAME) or an absolute folder "
                f"(local:///path/to/folder), not both: {url!r}")
        if parts.netloc:
            name = unquote(parts.netloc)
            if not _NAME.fullmatch(name):
                raise ConfigurationError(
                    f"local://{name}: a name is 1-64 letters, digits, '.', '_' or '-' "
                    "(for a folder of your choice use local:///absolute/path)")
            self.path = _user_root() / name
            self.private_root = True
        elif parts.path not in ("", "/"):
            self.path = Path(unquote(parts.path))
            self.private_root = False
        else:
            self.path = _user_root() / DEFAULT_NAME
            self.private_root = True
        self.socket_path = self.path / "hub.sock"
        self.lock_path = self.path / "hub.lock"
        if len(os.fsencode(self.socket_path)) > _SOCKET_PATH_MAX:
            raise ConfigurationError(
                f"{url}: the hub's socket path {self.socket_path} is longer than Unix "
                f"sockets allow ({_SOCKET_PATH_MAX} bytes): choose a shorter folder")

    def create(self) -> None:
        """Create the folder (private to this user when under the user's root)."""
        try:
            if self.private_root:
                self.path.parent.mkdir(mode=0o700, exist_ok=True)
                info = self.path.parent.stat()
                if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
                    raise ConfigurationError(
                        f"{self.path.parent} must belong to this user with mode 0700 "
                        "(another user could join the cluster); remove it or use "
                        "local:///a/folder/of/yours")
            self.path.mkdir(mode=0o700, parents=not self.private_root, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the local:// folder "
                                     f"{self.path}: {exc}") from None

    def hub_pid(self) -> int | None:
        """The pid of the process that hosts the hub now, as it wrote it (or None)."""
        try:
            text = self.lock_path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


class HubLock:
    """The lock whose holder hosts the hub. The kernel releases it when its holder
    exits, however it exits (a SIGKILL included), so another process takes over."""

    def __init__(self, folder: RuntimeFolder) -> None:
        self.folder = folder
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no process holds it; never waits."""
        if self._fd is not None:
            return True
        fd = os.open(self.folder.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock
