"""The Kafka listener's guard against holes in the log partition's offsets (a broker
giving out a record before an earlier one is readable): pure logic, no broker."""

from __future__ import annotations

import pytest

pytest.importorskip("aiokafka")

from socketio_adapters.backends.kafka.gaps import Contiguity


def test_consecutive_offsets_are_taken() -> None:
    order = Contiguity()
    assert [order.take(offset, 0.0) for offset in (7, 8, 9)] == [True, True, True]
    assert order.expected == 10 and order.lost == 0


def test_the_first_record_after_a_restart_is_taken_wherever_it_is() -> None:
    order = Contiguity()
    assert order.take(3, 0.0)
    order.restart()
    assert order.take(50, 0.0)  # retention may have deleted what lay between
    assert order.expected == 51 and order.lost == 0


def test_a_record_after_a_hole_is_refused_until_the_missing_one_comes() -> None:
    order = Contiguity(wait=2.0)
    assert order.take(10, 0.0)
    assert not order.take(12, 0.1)  # 11 is not readable yet: read again from it
    assert order.expected == 11
    assert not order.take(12, 1.0)
    assert order.take(11, 1.2)
    assert order.take(12, 1.2)
    assert order.lost == 0


def test_a_hole_that_stays_is_given_up_after_the_wait_and_counted() -> None:
    order = Contiguity(wait=2.0)
    assert order.take(10, 0.0)
    assert not order.take(12, 5.0)
    assert not order.take(12, 6.9)
    assert order.take(12, 7.0)
    assert order.lost == 1 and order.expected == 13


def test_each_hole_has_its_own_deadline() -> None:
    order = Contiguity(wait=2.0)
    assert order.take(10, 0.0)
    assert not order.take(12, 0.0)
    assert order.take(11, 1.9)
    assert order.take(12, 1.9)
    assert not order.take(14, 3.0)  # a new hole at 13: waits from now, not from 0.0
    assert not order.take(14, 4.9)
    assert order.take(13, 4.9)
    assert order.lost == 0


def test_an_older_record_is_taken_as_the_reader_skips_it() -> None:
    order = Contiguity()
    assert order.take(10, 0.0)
    assert order.take(4, 0.0)  # a log created anew: the reader decides (not a hole)
    assert order.expected == 5


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def test_a_fetch_is_cut_at_its_first_hole() -> None:
    order = Contiguity()
    taken, again = order.readable([Record(o) for o in (3, 4, 6, 7)], 0.0)
    assert [r.offset for r in taken] == [3, 4] and again and order.expected == 5
    taken, again = order.readable([Record(o) for o in (5, 6, 7)], 0.1)
    assert [r.offset for r in taken] == [5, 6, 7] and not again and order.expected == 8
