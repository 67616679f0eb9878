"""Waiting for background work with a bound that a misbehaving task cannot break."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["settle"]


async def settle(work: Awaitable[Any], seconds: float, logger: logging.Logger,
                 what: str) -> bool:
    """Wait at most ``seconds`` for ``work``; True if it finished. Unlike
    ``asyncio.wait_for``, this returns on time even when the work swallows its
    cancellation: it is cancelled, logged and left behind. Its errors are logged."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        logger.error("%s did not finish within %.1fs; abandoned", what, seconds)
        return False
    if not task.cancelled() and task.exception() is not None:
        logger.warning("%s failed: %r", what, task.exception())
    return True
