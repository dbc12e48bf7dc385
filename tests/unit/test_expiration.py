"""``expiration`` of ``POST /api/1/upload``: Chevereto's ISO 8601 durations and ImgBB's seconds."""

from __future__ import annotations

import pytest

from pixelfox import errors
from web.views.chevereto import MAX_EXPIRATION_S, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT5M", 300), ("P3D", 3 * 86400), ("pt1h30m", 5400), ("P1Y", 365 * 86400),
    ("600", 600), (" 600 ", 600), ("0000000000000600", 600), (str(MAX_EXPIRATION_S), MAX_EXPIRATION_S),
])
def test_durations_and_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("0", "longer than zero"), ("PT0S", "longer than zero"),
    (str(MAX_EXPIRATION_S + 1), "longer than 10 years"), ("9" * 40, "longer than 10 years"),
    ("P11Y", "longer than 10 years"), ("P3651D", "longer than 10 years"),
    ("soon", "neither an ISO 8601 duration"), ("-5", "neither"), ("600.5", "neither"),
    ("\u0666\u0660\u0660", "neither"), ("PT\u0666\u0660\u0660S", "neither"),  # Arabic-Indic digits: refused alike
])
def test_bad_expirations_are_a_bad_request(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest, match=message):
        parse_duration(text)


async def test_read_capped_stops_past_its_cap() -> None:
    """The Chevereto body reader takes what aiohttp's 1 MiB cap would refuse, up to its own cap."""
    from web.views.chevereto import _read_capped

    def reader(total: int):  # type: ignore[no-untyped-def]
        left = [total]

        async def read(n: int) -> bytes:
            take = min(n, left[0])
            left[0] -= take
            return b"A" * take
        return read

    too_large = errors.PayloadTooLarge("too large")
    assert len(await _read_capped(reader(3 * 1024 * 1024), 3 * 1024 * 1024, too_large)) == 3 * 1024 * 1024
    with pytest.raises(errors.PayloadTooLarge, match="too large"):
        await _read_capped(reader(3 * 1024 * 1024 + 1), 3 * 1024 * 1024, too_large)
