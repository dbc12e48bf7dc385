"""pixelfox.background.Background: tasks held until they end, failures logged, cancels not."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from pixelfox.background import Background


async def test_a_task_runs_to_its_end_and_is_let_go() -> None:
    done: list[int] = []

    async def work() -> None:
        await asyncio.sleep(0.01)
        gc.collect()  # nothing but the Background holds the task
        done.append(1)

    bg = Background(logging.getLogger("test.background"))
    bg.start(work(), "work")
    assert len(bg) == 1
    await asyncio.sleep(0.05)
    assert done == [1]
    assert len(bg) == 0


async def test_a_failure_is_logged_with_what_it_was_and_a_cancel_is_not(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("disk on fire")

    bg = Background(logging.getLogger("test.background"))
    with caplog.at_level(logging.ERROR, logger="test.background"):
        failing = bg.start(boom(), "deletes waiting for ab12")
        sleeping = bg.start(asyncio.sleep(10), "sleep")
        await asyncio.sleep(0)
        sleeping.cancel()
        await asyncio.gather(failing, sleeping, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert [r.getMessage() for r in caplog.records] == [
        "background task failed: deletes waiting for ab12: disk on fire"]
    assert caplog.records[0].exc_info is not None
    assert len(bg) == 0
