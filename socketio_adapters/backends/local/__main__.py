"""Host the hub of a ``local://`` cluster whenever no server of it does.

    python -m socketio_adapters.backends.local local://NAME

Optional: servers host the hub themselves. A process that only hosts it (under a
service manager, beside the workers) keeps the hub out of the workers' event loops.
It prints ``HUB <folder>`` once it hosts the hub, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from .standalone import serve


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
