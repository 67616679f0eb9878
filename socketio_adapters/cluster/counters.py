"""Counting what a node drops instead of crashing on it."""

from __future__ import annotations

import logging

__all__ = ["Drops"]


class Drops:
    """Malformed or foreign messages dropped: counted, and logged (the first ten,
    then every thousandth)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.count = 0

    def drop(self, why: str) -> None:
        self.count += 1
        if self.count <= 10 or self.count % 1000 == 0:
            self.logger.warning("dropped a malformed cluster message (%d so far): %s",
                                self.count, why)
