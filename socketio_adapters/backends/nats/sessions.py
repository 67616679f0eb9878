"""The NATS session store: the JetStream key-value bucket ``{name}_sessions``.

Its TTL is the longest session TTL asked for (raised when a longer one comes); each
record also holds its own expiry (:func:`socketio_adapters.storage.stamp_expiry`),
checked when it is taken. Taking deletes the record with the revision read as the
expected last one, so of several nodes taking it at once exactly one gets it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from ...storage import stamp_expiry, unstamp_expiry
from .link import Link, NatsBase
from .naming import session_key

__all__ = ["NatsSessions"]

_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a write that expected another last revision."""


class NatsSessions(NatsBase):
    """Session records in a JetStream key-value bucket."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._bucket_ttl: float | None = None
        """The session bucket's max_age as last seen (0: unlimited)."""

    async def _bucket(self, link: Link, ttl: float | None) -> KeyValue | None:
        """The session bucket, created (``ttl`` given) with a max_age of at least
        ``ttl``; ``None`` when it does not exist and ``ttl`` is None."""
        js, kv, bucket = link.js, link.kv, self.names.session_bucket
        if kv is None:
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                if ttl is None:
                    return None
                try:
                    kv = await js.create_key_value(api.KeyValueConfig(
                        bucket=bucket, history=1, ttl=ttl,
                        storage=api.StorageType(self.settings["storage"]),
                        replicas=self.settings["replicas"]))
                except nats.js.errors.BadRequestError:  # another node created it
                    kv = await js.key_value(bucket)
            self._bucket_ttl = (await kv.status()).ttl or 0.0
            link.kv = kv
        if ttl is not None and self._bucket_ttl and ttl > self._bucket_ttl:
            stream = f"KV_{bucket}"  # a bucket's max_age is its TTL: grow it
            config = (await js.stream_info(stream)).config
            if config.max_age and config.max_age < ttl:
                config = (await js.update_stream(
                    dataclasses.replace(config, max_age=ttl))).config
            self._bucket_ttl = config.max_age or 0.0
        return kv

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        link = self.ready_link()
        record = stamp_expiry(data, time.time() + ttl)
        for attempt in (1, 2):
            kv = await self._bucket(link, ttl)
            if kv is None:  # not with a ttl given
                raise RuntimeError("nats: the session bucket was not created")
            try:
                await kv.put(session_key(pid), record)
                return
            except nats.js.errors.NoStreamResponseError:
                link.kv = None  # the broker lost the bucket: create it again, once
                if attempt == 2:
                    raise

    async def take_session(self, pid: str) -> bytes | None:
        link = self.ready_link()
        kv = await self._bucket(link, None)
        if kv is None:
            return None
        key = session_key(pid)
        try:
            entry = await kv.get(key)
            # of several takers, one deletes this revision; the others find it gone
            await kv.delete(key, last=entry.revision)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return None
            raise
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            link.kv = None  # the broker lost the bucket, and the sessions with it
            return None
        return unstamp_expiry(entry.value or b"", time.time())
