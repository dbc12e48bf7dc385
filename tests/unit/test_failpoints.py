"""Failpoint spec parsing: exits and sleeps."""

from __future__ import annotations

import pytest

from pixelfox import failpoints


def test_parse_exits_and_sleeps() -> None:
    exits, sleeps = failpoints._parse(" after-dispatch , before-process=sleep(700),")
    assert exits == frozenset({"after-dispatch"})
    assert sleeps == {"before-process": 0.7}


def test_parse_refuses_unknown_action() -> None:
    with pytest.raises(ValueError, match="NAME=sleep"):
        failpoints._parse("before-process=panic")


async def test_pause_unarmed_returns_at_once() -> None:
    await failpoints.pause("not-armed")
