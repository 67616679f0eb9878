"""benchmarks/runs.py: a benchmark's run ends with every child process killed,
whether it finished, failed or was interrupted."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from benchmarks.runs import cancel_on_sigterm, load_average, run_to_end


class Kids:
    def __init__(self) -> None:
        self.killed = 0

    def kill_all_now(self) -> None:
        self.killed += 1


def test_the_result_comes_back_and_children_are_killed() -> None:
    kids = Kids()

    async def work() -> int:
        return 7

    assert run_to_end(work(), [kids]) == 7
    assert kids.killed == 1


def test_a_failure_is_raised_after_the_children_are_killed() -> None:
    kids = Kids()

    async def work() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_to_end(work(), [kids])
    assert kids.killed == 1


def test_sigterm_interrupts_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    kids = Kids()

    async def work() -> int:
        cancel_on_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(10)
        return 7

    assert run_to_end(work(), [kids, kids]) is None
    assert kids.killed == 2
    assert "interrupted" in capsys.readouterr().err


def test_load_average_names_three_figures() -> None:
    words = load_average().split()
    assert words[:2] == ["load", "average"] and len(words) == 5
    assert all(float(w) >= 0 for w in words[2:])
