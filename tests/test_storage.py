"""The durable log's semantics, written once in socketio_adapters.storage and tested
once here, without a broker: offsets, packed records, the live reader (where it
starts, resumes, restarts), range reads and their bounds, session expiry stamps.
Each backend's driver is proven against its real broker by conformance/test_log.py."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from socketio_adapters.backends.base import LOG
from socketio_adapters.backends.memory import MemoryBackend
from socketio_adapters.storage import (
    LOG_RECORD_ENTRIES,
    LogReader,
    LogRecord,
    LogWindow,
    Offset,
    OffsetCodec,
    RecordKey,
    entries_of,
    pack_entries,
    read_entries,
    stamp_expiry,
    unstamp_expiry,
)

# ------------------------------------------------------------------ offsets


def test_offsets_name_a_record_and_an_entry() -> None:
    one, two = OffsetCodec(1), OffsetCodec(2, key_max=2**64 - 1)
    assert one.format((42,), 0) == "42.0"
    assert two.format((1700000000000, 3), 12) == "1700000000000-3.12"
    assert one.parse("42.0") == Offset((42,), 0)
    assert two.parse("1700000000000-3.12") == Offset((1700000000000, 3), 12)
    assert two.parse(f"{2**64 - 1}-0.0") == Offset((2**64 - 1, 0), 0)
    assert Offset((1,), 5) < Offset((2,), 0) < Offset((2,), 1)


@pytest.mark.parametrize("text", [
    "", "garbage", "42", "1-0", "42.", ".0", "042.0", "42.01", "-1.0", "+1.0", " 1.0",
    "1.0 ", "1.0\n", "1-2.0", "1.5.0", "\x00", "٣.0", "1.1234567", f"{2**63}.0",
])
def test_anything_else_is_not_an_offset(text: str) -> None:
    assert OffsetCodec(1).parse(text) is None


def test_a_two_part_log_refuses_one_part_offsets_and_big_numbers() -> None:
    two = OffsetCodec(2, key_max=2**64 - 1)
    assert two.parse("5.0") is None
    assert two.parse(f"{2**64}-0.0") is None
    assert two.parse("1-2-3.0") is None


# ------------------------------------------------------------------ packing


def test_entries_are_packed_up_to_a_size_and_a_count() -> None:
    payloads = [bytes([65 + i % 26]) * (i % 7) for i in range(3000)]
    bodies = pack_entries(payloads, 64 * 1024)
    assert len(bodies) == 3  # by count: 1024 + 1024 + 952
    assert [e for body in bodies for e in entries_of(body)] == payloads
    assert all(len(entries_of(b)) <= LOG_RECORD_ENTRIES for b in bodies)
    big = [b"x" * 1000] * 200
    assert all(len(body) <= 64 * 1024 for body in pack_entries(big, 64 * 1024))
    # one entry, or one over the cap, is stored as itself
    assert pack_entries([b"solo"], 1024) == [b"solo"]
    assert pack_entries([b"a", b"y" * 5000, b"b"], 1024) == [b"a", b"y" * 5000, b"b"]
    assert pack_entries([], 1024) == []


def test_every_node_reads_a_record_the_same_way() -> None:
    (body,) = pack_entries([b"\xc1\x02", b"", b"two"], 1024)
    assert entries_of(body) == [b"\xc1\x02", b"", b"two"]
    # a broken frame, or anything that is not one, is a single entry
    assert entries_of(body[:-1]) == [body[:-1]]
    assert entries_of(b"\x84plain") == [b"\x84plain"]
    assert entries_of(b"") == [b""]


# ------------------------------------------------------------------ the live reader


class Delivered:
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.fail_on = fail_on

    async def __call__(self, offset: str, payload: bytes) -> None:
        if payload == self.fail_on:
            raise RuntimeError("the manager failed")
        self.items.append((offset, payload))


def reader(deliver: Delivered, parts: int = 1) -> LogReader:
    return LogReader(OffsetCodec(parts), deliver, logging.getLogger("test.storage"), "test")


def record(*entries: bytes) -> bytes:
    (body,) = pack_entries(list(entries), 1 << 20) if len(entries) > 1 else (entries[0],)
    return body


async def test_the_first_start_is_at_the_end_of_the_log() -> None:
    got = Delivered()
    r = reader(got)
    assert r.restart(((7,), record(b"a", b"b", b"c"))) == (7,)
    assert r.offset == "7.2"  # the last entry of the last record
    await r.feed((7,), record(b"a", b"b", b"c"))  # read again from the start key
    await r.feed((8,), b"new")
    assert got.items == [("8.0", b"new")]
    assert r.offset == "8.0"


async def test_an_empty_log_is_read_from_its_start() -> None:
    got = Delivered()
    r = reader(got)
    assert r.restart(None) is None
    assert r.offset is None
    await r.feed((1,), b"first")
    assert got.items == [("1.0", b"first")]


async def test_a_reconnect_resumes_inside_a_record_once() -> None:
    got = Delivered()
    r = reader(got)
    r.restart(((3,), b"old"))
    await r.feed((4,), record(b"a", b"b"))
    r.position = Offset((5,), 1)  # stopped after entry 5.1 (the connection dropped)
    assert r.restart(((9,), b"z")) == (5,)  # the record of the position, included
    for _ in range(2):  # a replaced reader may hand the same record over again
        await r.feed((5,), record(b"p", b"q", b"r", b"s"))
    await r.feed((4,), b"older")
    await r.feed((6,), b"t")
    assert got.items == [("4.0", b"a"), ("4.1", b"b"), ("5.2", b"r"), ("5.3", b"s"),
                         ("6.0", b"t")]
    assert r.offset == "6.0"


async def test_a_trimmed_resume_record_is_reported_and_reading_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    got = Delivered()
    r = reader(got)
    r.restart(((4,), record(b"a", b"b", b"c")))
    assert r.restart(((12,), b"x")) == (4,)
    with caplog.at_level(logging.WARNING, "test.storage"):
        await r.feed((9,), record(b"x", b"y"))
    assert got.items == [("9.0", b"x"), ("9.1", b"y")]
    assert "trimmed" in caplog.text


async def test_a_lost_log_is_read_again_from_its_start(
        caplog: pytest.LogCaptureFixture) -> None:
    got = Delivered()
    r = reader(got, parts=2)
    r.restart(((100, 5), b"x"), epoch="log-1")
    await r.feed((101, 6), b"y")
    with caplog.at_level(logging.WARNING, "test.storage"):
        # the broker lost its data: its last record is before our position
        assert r.restart(((3, 7), b"z"), epoch="log-1") is None
    assert r.offset is None and "no longer holds" in caplog.text
    await r.feed((0, 7), b"new0")
    assert got.items[-1] == ("0-7.0", b"new0")
    # another identity (the log was created anew) restarts too, even further along
    r.position = Offset((500, 1), 0)
    assert r.restart(((900, 1), b"q"), epoch="log-2") is None
    # an emptied log as well
    r.position = Offset((5, 1), 0)
    assert r.restart(None, epoch="log-2") is None


async def test_a_failing_delivery_is_logged_counted_and_skipped() -> None:
    got = Delivered(fail_on=b"b")
    r = reader(got)
    r.restart(None)
    await r.feed((1,), record(b"a", b"b", b"c"))
    assert got.items == [("1.0", b"a"), ("1.2", b"c")]
    assert r.failures == 1
    assert r.highest == (1,)


async def test_the_position_moves_before_each_entry_is_handed_over() -> None:
    seen: list[str | None] = []
    r: LogReader

    async def deliver(offset: str, payload: bytes) -> None:
        seen.append(r.offset)

    r = LogReader(OffsetCodec(1), deliver, logging.getLogger("test"), "test")
    r.restart(None)
    await r.feed((7,), record(b"a", b"b"))
    assert seen == ["7.0", "7.1"]


# ------------------------------------------------------------------ reading back


class Log:
    """Records in memory, fetched as a backend driver would."""

    def __init__(self, records: list[tuple[RecordKey, bytes, int | None]]) -> None:
        self.records = records
        self.fetches: list[tuple[RecordKey, RecordKey, int]] = []

    async def fetch(self, first: RecordKey, last: RecordKey,
                    limit: int) -> list[LogRecord] | None:
        self.fetches.append((first, last, limit))
        if first > last:
            last = first
        out = [LogRecord(k, b, t) for k, b, t in self.records if first <= k <= last]
        return out[:limit]


def now_ms() -> int:
    """Stamps are taken when a test runs (the suite can run long after import)."""
    return int(time.time() * 1000)


def sample() -> Log:
    now = now_ms()
    return Log([((1,), b"a", now), ((2,), record(b"b", b"c", b"d"), now),
                ((4,), b"e", now), ((5,), record(b"f", b"g"), now)])


async def read(log: Log, after: str, upto: str | None, retention: float = 60,
               max_length: int = 100) -> Any:
    return await read_entries(log.fetch, OffsetCodec(1), after, upto, retention,
                              max_length)


async def test_read_returns_the_entries_between_two_offsets() -> None:
    log = sample()
    assert await read(log, "1.0", "5.1") == [
        ("2.0", b"b"), ("2.1", b"c"), ("2.2", b"d"), ("4.0", b"e"), ("5.0", b"f"),
        ("5.1", b"g")]
    assert await read(log, "2.0", "2.1") == [("2.1", b"c")]
    assert await read(log, "2.2", "5.0") == [("4.0", b"e"), ("5.0", b"f")]
    assert await read(log, "5.1", "5.1") == []


class StaleLog(Log):
    """A broker that answers its first ``short`` range fetches from a stale high
    watermark: only the records up to the first one asked for."""

    def __init__(self, records: list[tuple[RecordKey, bytes, int | None]],
                 short: int) -> None:
        super().__init__(records)
        self.short = short

    async def fetch(self, first: RecordKey, last: RecordKey,
                    limit: int) -> list[LogRecord] | None:
        found = await super().fetch(first, last, limit)
        if self.short and found and first < last:
            self.short -= 1
            return found[:1]
        return found


async def test_a_range_read_short_is_continued_or_fails() -> None:
    log = sample()
    stale = StaleLog(log.records, short=2)
    assert await read(stale, "1.0", "5.1") == await read(log, "1.0", "5.1")
    never = StaleLog(log.records, short=100)
    # never "nothing missed" ([]), which would lose events: not readable, a fresh session
    assert await read(never, "1.0", "5.1") is None


async def test_an_entry_that_is_not_there_reads_as_none() -> None:
    log = sample()
    assert await read(log, "3.0", "5.1") is None  # no record 3
    assert await read(log, "2.3", "5.1") is None  # record 2 has three entries
    assert await read(log, "0.0", "5.1") is None  # before the first (trimmed)
    assert await read(log, "junk", "5.1") is None
    assert await read(log, "1.0", None) is None  # this node's log was empty
    assert await read(log, "1.0", "junk") is None


async def test_a_client_ahead_of_this_node_reads_nothing_if_its_entry_exists() -> None:
    log = sample()
    assert await read(log, "5.0", "2.1") == []
    assert log.fetches[-1] == ((5,), (2,), 1)  # first > last: the record first alone
    assert await read(log, "6.0", "2.1") is None
    assert await read(log, "5.2", "2.1") is None


async def test_reads_are_bounded_by_age_and_length() -> None:
    now = now_ms()
    old = Log([((1,), b"a", now - 10_000), ((2,), b"b", now)])
    assert await read(old, "1.0", "2.0", retention=5) is None
    assert await read(old, "1.0", "2.0", retention=60) == [("2.0", b"b")]
    log = sample()
    assert await read(log, "1.0", "5.1", max_length=6) is None  # six entries follow
    assert await read(log, "1.0", "5.1", max_length=7) is not None
    assert await read(log, "4.0", "5.1", max_length=2) is None
    # records are fetched at most max_length + 1 at a time
    assert log.fetches[-1][2] == 3


# ------------------------------------------------------------------ the window


def windowed(log: Log, max_bytes: int = 1 << 20, max_entries: int = 100,
             max_age: float = 60) -> tuple[LogReader, LogWindow]:
    """A reader that keeps a window, fed ``log``'s records as a live reader would be
    (the first start at its first record)."""
    window = LogWindow(max_bytes, max_entries, max_age)
    r = LogReader(OffsetCodec(1), Delivered(), logging.getLogger("test.storage"),
                  "test", window)
    return r, window


async def feed_all(r: LogReader, log: Log) -> None:
    for key, body, stamp in log.records:
        await r.feed(key, body, stamp)


async def read_through(window: LogWindow, log: Log, after: str, upto: str | None,
                       retention: float = 60, max_length: int = 100) -> Any:
    return await read_entries(window.over(log.fetch), OffsetCodec(1), after, upto,
                              retention, max_length)


async def test_a_range_inside_the_window_is_read_from_memory() -> None:
    log = sample()
    r, window = windowed(log)
    r.restart(None)
    await feed_all(r, log)
    for after, upto in [("1.0", "5.1"), ("2.0", "2.1"), ("2.2", "5.0"), ("5.1", "5.1"),
                        ("5.0", "2.1")]:
        assert await read_through(window, log, after, upto) == await read(
            sample(), after, upto)
    # offsets in its span that name no entry read as they do from the broker
    for after in ("3.0", "2.3", "5.2"):
        assert await read_through(window, log, after, "5.1") is None
    assert await read_through(window, log, "1.0", "5.1", max_length=6) is None
    assert log.fetches == []  # the broker was never asked
    assert window.served > 0


async def test_a_range_not_wholly_in_the_window_is_read_from_the_broker() -> None:
    log = sample()
    r, window = windowed(log)
    r.restart(((2,), log.records[1][1]))  # the first start: at record 2
    await feed_all(r, log)  # record 1 is older than the position: not kept
    assert (window.first, window.last) == ((2,), (5,))
    # older than the window: the broker answers, the same as without a window
    assert await read_through(window, log, "1.0", "5.1") == await read(sample(), "1.0",
                                                                         "5.1")
    assert log.fetches[0][0] == (1,)
    # ahead of what this node read (a client from a node further on): the broker too
    log.fetches.clear()
    log.records.append(((7,), b"h", now_ms()))
    assert await read_through(window, log, "7.0", "5.1") == []
    assert log.fetches == [((7,), (5,), 1)]


async def test_the_window_is_bounded_by_bytes_entries_and_age() -> None:
    now = now_ms()
    window = LogWindow(max_bytes=10, max_entries=4, max_age=60)
    window.add((1,), b"12345", 1, now)
    window.add((2,), b"123456", 1, now)  # 11 bytes: the oldest goes
    assert (window.first, window.last, len(window)) == ((2,), (2,), 1)
    window.add((3,), b"abc", 3, now)  # a record of three entries
    assert (window.first, len(window)) == ((2,), 2)
    window.add((4,), b"x", 1, now)  # five entries: record 2 goes
    assert (window.first, len(window)) == ((3,), 2)
    window.add((5,), b"y", 1, now)  # five entries again: record 3 goes
    assert (window.first, len(window)) == ((4,), 2)
    window.add((7,), b"big" * 10, 1, now)  # larger than the window on its own
    assert len(window) == 0 and window.fetch((7,), (7,), 1) is None
    window.add((8,), b"z", 1, now - 61_000)  # appended long ago (a backlog)
    assert len(window) == 0
    aging = LogWindow(1 << 20, 100, max_age=0.05)
    aging.add((1,), b"a", 1)
    assert aging.fetch((1,), (1,), 1) is not None
    await asyncio.sleep(0.06)
    assert aging.fetch((1,), (1,), 1) is None and len(aging) == 0
    # a record fed again (a resumed read) is kept once
    window.clear()
    window.add((9,), b"a", 1, now)
    window.add((9,), b"a", 1, now)
    window.add((8,), b"older", 1, now)
    assert len(window) == 1


async def test_a_reconnect_empties_the_window_and_a_gap_is_never_served() -> None:
    log = sample()
    r, window = windowed(log)
    r.restart(None)
    await feed_all(r, log)
    # a reconnect: the reader resumes at its position's record; what came before
    # is read from the broker again
    assert r.restart(((5,), log.records[3][1])) == (5,)
    assert len(window) == 0
    await r.feed((5,), log.records[3][1], log.records[3][2])
    assert await read_through(window, log, "2.0", "5.1") is not None
    assert log.fetches and log.fetches[0][0] == (2,)
    # records trimmed before the node read them on: the window starts after the gap,
    # so a range from before it goes to the broker (which no longer holds its start)
    log.fetches.clear()
    r.restart(((5,), log.records[3][1]))
    trimmed = Log([((9,), b"i", now_ms()), ((10,), b"j", now_ms())])
    await feed_all(r, trimmed)
    assert window.first == (9,)
    assert await read_through(window, trimmed, "5.1", "10.0") is None
    assert trimmed.fetches and trimmed.fetches[0][0] == (5,)


async def test_a_backend_keeps_a_window_that_a_lost_connection_empties() -> None:
    class Windowed(MemoryBackend):
        log_in_memory = False  # as a broker's backend: reads go through fetch_log
        fetched = 0

        async def fetch_log(self, first: RecordKey, last: RecordKey,
                            limit: int) -> list[LogRecord] | None:
            self.fetched += 1
            return await super().fetch_log(first, last, limit)

    got = Delivered()
    backend = Windowed("memory://window-test")
    backend.enable_log(got, 60.0, 1000, cache_bytes=1 << 20)
    assert MemoryBackend("memory://other").log_in_memory
    async def nothing(payload: bytes) -> None:
        pass

    await backend.start("node", nothing)
    try:
        await backend.publish([(LOG, b"\x01")])
        await backend.publish([(LOG, b"\x02")])
        await backend.publish([(LOG, b"\x03")])
        for _ in range(100):
            if len(got.items) == 3:
                break
            await asyncio.sleep(0.01)
        first, _, last = (offset for offset, _ in got.items)
        assert await backend.read_log(first, last) == got.items[1:]
        assert backend.fetched == 0
        backend.state.mark_down()  # the connection dropped: the broker may have lost
        assert await backend.read_log(first, last) == got.items[1:]
        assert backend.fetched > 0
    finally:
        await backend.stop()


# ------------------------------------------------------------------ sessions


def test_session_records_carry_their_expiry() -> None:
    stamped = stamp_expiry(b"\x00data\xff", 1000.0)
    assert unstamp_expiry(stamped, 999.0) == b"\x00data\xff"
    assert unstamp_expiry(stamped, 1000.0) is None
    assert unstamp_expiry(stamp_expiry(b"", 10.0), 9.0) == b""
    assert unstamp_expiry(b"short", 0.0) is None
