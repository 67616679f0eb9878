"""Counting what a node publishes, and what it drops instead of crashing on it."""

from __future__ import annotations

import logging

__all__ = ["Drops", "PublishCounters"]


class Drops:
    """Malformed or foreign input dropped: counted, and logged (the first ten, then
    every thousandth, so that whoever sends it cannot flood the log)."""

    def __init__(self, logger: logging.Logger,
                 what: str = "a malformed cluster message") -> None:
        self.logger = logger
        self.what = what
        self.count = 0

    def drop(self, why: str) -> None:
        self.count += 1
        if self.count <= 10 or self.count % 1000 == 0:
            self.logger.warning("dropped %s (%d so far): %s", self.what, self.count, why)


class PublishCounters:
    """Messages this node handed to the broker (``sent``) and lost on the way
    (``dropped``: the oldest past ``max_buffer``, those the broker refused, and those
    still queued when the manager stopped). Owned by the publisher, so they count over
    the manager's whole life, across stop() and start(), not one outbox's."""

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0
