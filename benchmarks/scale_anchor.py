"""Which server nodes :mod:`benchmarks.bench_scale` starts.

``--anchor python`` (the default) starts ours, ``python -m benchmarks.scale_node``.
``--anchor node`` starts Node.js socket.io with ``@socket.io/redis-adapter`` on Redis
(``benchmarks/js/scale_node.mjs``, same endpoints and connect behaviour), so the same
scenario code measures the same figures for an anchor. Its results files are named
``scale-<scenario>-<backend>-node.json``.

Node's adapters publish fire-and-forget. Ours emit ordered by default (each emit waits
for the broker); ``--emits fire-and-forget`` runs ours as Node's run, for a like-for-like
comparison, with results in ``scale-<scenario>-<backend>-ff.json``. Our nodes run
python-socketio's ``AsyncServer`` on our manager (the drop-in) unless ``--server
socketio-adapters`` gives them ours (``socketio_adapters.AsyncServer``; files with
``-sioa``).
"""

from __future__ import annotations

import sys
from typing import Any

from .bench_cross_node import JS_DIR, ensure_js, js_versions

__all__ = ["ANCHORS", "EMITS", "NO_RECOVERY", "SERVERS", "anchor_environment", "anchor_error",
           "node_command", "result_name"]

ANCHORS = ("python", "node")
EMITS = ("ordered", "fire-and-forget")
"""How our nodes emit (``--emits``); Node's anchor is always fire-and-forget."""
SERVERS = ("python-socketio", "socketio-adapters")
"""The server class of our nodes (``--server``), both on our cluster manager."""
NODE_SCALE_JS = JS_DIR / "scale_node.mjs"
NO_RECOVERY = ("not measured with --anchor node: @socket.io/redis-adapter (Redis "
               "pub/sub) does not implement socket.io's connection state recovery, so a "
               "Node node saves no session to weigh")


def anchor_error(anchor: str, backends: list[str], emits: str | None = None) -> str | None:
    """Why ``anchor`` cannot run on ``backends`` with ``emits``, or None."""
    if anchor == "node" and emits == "ordered":
        return ("--anchor node emits fire-and-forget only (@socket.io/redis-adapter "
                "publishes without waiting for Redis); --emits ordered is for ours")
    if anchor == "node" and backends != ["redis"]:
        return (f"--anchor node runs with --backend redis only (Node's nodes use "
                f"@socket.io/redis-adapter), not {','.join(backends)}")
    if anchor == "node" and not NODE_SCALE_JS.exists():
        return f"--anchor node needs {NODE_SCALE_JS}, which is missing"
    return None


def node_command(anchor: str, url: str, channel: str, nofile: int,
                 recovery: bool, emits: str = "ordered", gc_threshold: int = 0,
                 server: str = "python-socketio") -> list[str]:
    """The command of one server node. Node.js raises its own soft ``RLIMIT_NOFILE``
    to the hard limit at start, so ``nofile`` only goes to ours. A Node node on
    ``recovery`` is a caller's error (see :data:`NO_RECOVERY`). Our recovery nodes
    (which only save sessions) emit ordered whatever ``emits`` says."""
    if anchor == "node":
        if recovery:
            raise ValueError(NO_RECOVERY)
        ensure_js()
        return ["node", str(NODE_SCALE_JS), "--url", url, "--channel", channel]
    cmd = [sys.executable, "-m", "benchmarks.scale_node", "--url", url, "--channel",
           channel, "--nofile", str(nofile)]
    if gc_threshold:
        cmd += ["--gc-threshold", str(gc_threshold)]
    if server != "python-socketio":
        cmd += ["--server", server]
    if recovery:
        return [*cmd, "--recovery"]
    return [*cmd, "--fire-and-forget"] if emits == "fire-and-forget" else cmd


def result_name(scenario: str, backend: str, anchor: str, emits: str = "ordered",
                gc_threshold: int = 0, server: str = "python-socketio") -> str:
    suffix = ("-node" if anchor == "node"
              else "-ff" if emits == "fire-and-forget" else "")
    if server != "python-socketio":
        suffix += "-sioa"
    if gc_threshold:
        suffix += f"-gc{gc_threshold}"
    return f"scale-{scenario}-{backend}{suffix}.json"


def anchor_environment(anchor: str) -> dict[str, Any]:
    """Node.js and the npm packages' versions when the nodes are Node's."""
    return {"js": js_versions()} if anchor == "node" else {}
