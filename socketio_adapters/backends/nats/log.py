"""The NATS log driver: the JetStream stream ``{name}_log`` on ``{channel}.log``.

Each stream message is one log record (a lone entry, or a frame of entries packed by
the base class): its key is the stream sequence, so offsets read ``"{seq}.{index}"``.
The stream keeps ``max_length`` messages for ``retention`` seconds. See
docs/backends/nats.md for the design.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
from nats.js import api

from ...errors import ConfigurationError
from ...storage import DeliverLog, LogRecord, RecordKey
from .follower import Follower
from .link import Acks, Link, NatsBase
from .naming import MAX_NAME_TOKEN, name_token

__all__ = ["NatsLog"]

_WATCH = 0.5
"""Seconds between two checks of a log consumer."""


def _ms(stamp: datetime.datetime | None) -> int | None:
    """Milliseconds since the epoch of a time nats-py gives (None stays None)."""
    return None if stamp is None else int(stamp.timestamp() * 1000)


class NatsLog(NatsBase):
    """Appends to, follows and reads back the stream of the durable log."""

    log_packs: ClassVar[bool] = True
    log_key_max: ClassVar[int] = 2**64 - 1

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._appended_seq = 0
        """Highest sequence this node appended (with the highest it read: a stream
        this node has to create again starts after both, so no offset is reused)."""

    def enable_log(self, deliver: DeliverLog | None, retention: float,
                   max_length: int, cache_bytes: int = 0) -> None:
        if len(name_token(self.channel)) > MAX_NAME_TOKEN:
            raise ConfigurationError(
                f"nats backend: channel {self.channel!r} is too long for a JetStream "
                f"stream name ({MAX_NAME_TOKEN} characters once escaped)")
        super().enable_log(deliver, retention, max_length, cache_bytes)

    # ---------------------------------------------------------------- the stream

    def _stream_config(self) -> api.StreamConfig:
        log = self.log
        if log is None:
            raise RuntimeError("enable_log() was not called")
        return api.StreamConfig(
            name=self.names.log_stream, subjects=[self.names.log_subject],
            retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.OLD,
            max_msgs=log.max_length, max_age=log.retention,
            duplicate_window=min(log.retention, 120.0),
            storage=api.StorageType(self.settings["storage"]),
            num_replicas=self.settings["replicas"])

    def _seen_seq(self) -> int:
        """The highest sequence this node appended or read (0: none)."""
        highest = self.log_reader.highest
        return max(self._appended_seq, 0 if highest is None else highest[0])

    async def _ensure_stream(self, link: Link) -> api.StreamInfo:
        """The log stream's info, after creating it, or updating its limits when they
        differ from this node's (the node started last sets them)."""
        js, wanted, stream = link.js, self._stream_config(), self.names.log_stream
        try:
            info = await js.stream_info(stream)
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            raise ConnectionError(f"nats: JetStream is not available on {link.server} "
                                  "(recovery needs nats-server -js)") from None
        except nats.js.errors.NotFoundError:
            seen = self._seen_seq()
            if seen:  # the broker lost it: go on numbering after what this node saw
                wanted.first_seq = seen + 1
            try:
                info = await js.add_stream(wanted)
            except nats.js.errors.BadRequestError:  # another node created it meanwhile
                info = await js.stream_info(stream)
        have = info.config
        if (have.max_msgs, have.subjects, have.discard, have.num_replicas) != (
                wanted.max_msgs, wanted.subjects, wanted.discard, wanted.num_replicas
        ) or abs((have.max_age or 0) - (wanted.max_age or 0)) > 0.001:
            self.logger.warning(
                "nats %s: stream %s kept max_msgs=%s max_age=%ss; setting max_msgs=%s "
                "max_age=%ss", self.where, stream, have.max_msgs, have.max_age,
                wanted.max_msgs, wanted.max_age)
            info = await js.update_stream(dataclasses.replace(
                have, subjects=wanted.subjects, discard=wanted.discard,
                max_msgs=wanted.max_msgs, max_age=wanted.max_age,
                duplicate_window=wanted.duplicate_window,
                num_replicas=wanted.num_replicas))
        link.stream_ready = True
        return info

    # ---------------------------------------------------------------- following

    async def _follow_log(self, link: Link) -> Follower:
        """Start reading the stream live, where the log reader says: at its last
        message the first time, then at the message of the position."""
        info = await self._ensure_stream(link)
        state = info.state
        last = await self._last_record(link) if state.messages else None
        async with self._order:  # a reader being replaced may still deliver
            start = self.log_reader.restart(last, epoch=info.created)
        first = start[0] if start is not None else max(state.first_seq, 1)
        reader = Follower(link, self.names.log_stream, first, self._feed, self.logger)
        await reader.begin()
        return reader

    async def _feed(self, seq: int, body: bytes, time_ms: int) -> None:
        async with self._order:  # one payload or record at a time, in order
            await self.log_reader.feed((seq,), body, time_ms)

    async def _last_record(self, link: Link) -> tuple[RecordKey, bytes] | None:
        """The key and body of the stream's last message (None: empty)."""
        try:
            raw = await link.js.get_last_msg(self.names.log_stream, self.names.log_subject)
        except nats.js.errors.NotFoundError:
            return None
        if raw.seq is None:
            return None
        return (raw.seq,), raw.data or b""

    async def _watch(self, link: Link, reader: Follower,
                     gone: asyncio.Future[None]) -> Follower:
        """Wait until the connection is gone or the live reader needs replacing (a
        reconnect, a gap, a silent consumer); return the reader to go on with."""
        revived = asyncio.ensure_future(link.revived.wait())
        try:
            await asyncio.wait((gone, revived), timeout=_WATCH,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            revived.cancel()
        if gone.done() or not link.nc.is_connected:
            return reader
        if not link.revived.is_set() and reader.healthy:
            return reader
        link.revived.clear()
        await reader.stop()
        try:
            replaced = await self._follow_log(link)
        except (nats.errors.Error, asyncio.TimeoutError, ConnectionError) as exc:
            # JetStream is not back yet
            self.logger.debug("nats %s: cannot read stream %s yet (%s: %s)", self.where,
                              self.names.log_stream, type(exc).__name__, exc)
            return reader  # stopped, so not healthy: tried again on the next round
        self.logger.info("nats %s: reading stream %s again from message %d", self.where,
                         self.names.log_stream, replaced.start)
        return replaced

    # ---------------------------------------------------------------- appending

    async def _confirm_log(self, link: Link, acks: Acks, timeout: float) -> None:
        """Wait for the stream's acks of the appended records (all in flight at once):
        a lost connection or a timeout is a connection error (the outbox retries), a
        refusal by the stream (e.g. storage full) is not."""
        acks.sent()
        waiting: set[asyncio.Future[None]] = {acks.done}
        if link.live:  # else they wait in nats-py's buffer until it is back
            waiting.add(link.lost)
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stream = self.names.log_stream
        if not acks.done.done():
            raise ConnectionError(
                f"nats: stream {stream} confirmed {acks.received} of {acks.count} log "
                f"records before the connection dropped or {timeout}s passed")
        error = acks.error
        if isinstance(error, nats.js.errors.NoStreamResponseError):
            link.stream_ready = False  # the broker lost it: create it again
            raise ConnectionError(f"nats: no stream {stream} (created again on the next "
                                  "try)")
        if error is not None:
            raise error
        self._appended_seq = max(self._appended_seq, acks.last_seq)

    # ---------------------------------------------------------------- reading back

    async def fetch_log(self, first: RecordKey, last: RecordKey,
                        limit: int) -> list[LogRecord] | None:
        link = self.ready_link()
        if first >= last:
            record = await self._get_record(link, first[0])
            return [] if record is None else [record]
        stream = self.names.log_stream
        records: list[LogRecord] = []
        end = last[0]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        async def collect(seq: int, body: bytes, time_ms: int) -> None:
            if done.done():
                return
            if seq != first[0] + len(records):  # the first is gone, or a gap
                finish()
                return
            records.append(LogRecord((seq,), body, time_ms))
            if seq >= end or len(records) >= limit:
                finish()

        reader = Follower(link, stream, first[0], collect, self.logger)
        try:
            if await reader.begin() <= last[0] - first[0] and not done.done():
                # fewer messages than up to ``last``: the stream may end before it, or
                # hold none from ``first`` on, and then nothing more comes
                state = (await link.js.stream_info(stream)).state
                end = min(end, state.last_seq)
                if (not state.messages or end < max(first[0], state.first_seq)
                        or (records and records[-1].key[0] >= end)):
                    finish()
            while not done.done():
                await asyncio.wait((done,), timeout=_WATCH)
                if not done.done() and not reader.healthy:  # rare: a dropped message
                    raise ConnectionError(f"nats: reading stream {stream} failed")
        finally:
            await reader.stop()
        return records

    async def _get_record(self, link: Link, seq: int) -> LogRecord | None:
        """The stream message at ``seq``, or None when there is none (any longer)."""
        try:
            raw = await link.js.get_msg(self.names.log_stream, seq)
        except (nats.js.errors.NotFoundError, nats.js.errors.BadRequestError):
            return None
        if raw.seq != seq:
            return None
        return LogRecord((seq,), raw.data or b"", _ms(raw.time))
