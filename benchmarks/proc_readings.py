"""What :mod:`benchmarks.bench_scale` reads about its processes: resident memory from
``/proc``, and whether the file-descriptor limit allows a process's sockets."""

from __future__ import annotations

import resource
from pathlib import Path

from .bench_cross_node import BenchError

__all__ = ["check_nofile", "rss_bytes", "tree_rss_bytes"]


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (``VmRSS``), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_rss_bytes(roots: list[int]) -> int:
    """Resident memory of processes ``roots`` and their live descendants."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(
                stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    chosen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in chosen:
            continue
        chosen.add(pid)
        todo.extend(p for p, parent in parents.items() if parent == pid)
    return sum(rss_bytes(p) or 0 for p in chosen)


def check_nofile(needed: int) -> None:
    """Fail clearly when a process could not open ``needed`` file descriptors."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"{needed} file descriptors needed in one process but the hard "
                         f"limit is {hard}: raise it (ulimit -Hn) or use fewer clients "
                         "or more --swarms")
