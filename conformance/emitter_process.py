"""A worker process with no server: emits numbered events with a SyncEmitter, then
exits at once, as a script, a cron job or a Celery task does.

    python -m conformance.emitter_process URL COUNT MODE [OPTIONS_JSON]

Emits ``seq`` 0..COUNT-1 to every client. MODE says how the emitter ends: ``with``
(a with-block), ``close`` (an explicit close()), or ``forget`` (never closed: the
interpreter's exit closes it).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from socketio_adapters import SyncEmitter

KEPT: list[SyncEmitter] = []
"""``forget`` keeps its emitter here, so that only the interpreter's exit ends it."""


def main(url: str, count: int, mode: str, options: dict[str, Any]) -> None:
    if mode == "with":
        with SyncEmitter(url, **options) as emitter:
            for i in range(count):
                emitter.emit("seq", i, namespace="/")
        return
    emitter = SyncEmitter(url, **options)
    for i in range(count):
        emitter.emit("seq", i)
    if mode == "close":
        emitter.close()
    elif mode == "forget":
        KEPT.append(emitter)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3],
         json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
