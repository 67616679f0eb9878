"""A conformance node in its own process, for faults that need a real process death.

    python -m conformance.node_process URL [manager options as JSON]

Prints ``READY <port> <uid>`` once it serves, then runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from .cluster import Node


async def main(url: str, options: dict[str, Any]) -> None:
    node = Node(url, **options)
    await node.start()
    print(f"READY {node.port} {node.uid}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
