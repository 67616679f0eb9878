"""The Redis session store: keys ``{channel}#session#{pid}`` written with
``SET ... PX`` and taken with GETDEL (atomic: of concurrent takers one gets it)."""

from __future__ import annotations

from .connections import RedisConnections

__all__ = ["RedisSessions"]


class RedisSessions(RedisConnections):
    """Session records as Redis keys that expire."""

    def session_key(self, pid: str) -> str:
        return f"{self.prefix}#session#{pid}"

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        await self._require_client().set(self.session_key(pid), data,
                                         px=max(1, int(ttl * 1000)))

    async def take_session(self, pid: str) -> bytes | None:
        record = await self._require_client().getdel(self.session_key(pid))
        return record.encode() if isinstance(record, str) else record
