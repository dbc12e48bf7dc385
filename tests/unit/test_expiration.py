"""``expiration`` of ``POST /api/1/upload``: Chevereto's ISO 8601 durations and ImgBB's seconds."""

from __future__ import annotations

import pytest

from pixelfox import errors
from web.expiration import MAX_EXPIRATION_S, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("PT5M", 300), ("P3D", 3 * 86400), ("pt1h30m", 5400), ("P1Y", 365 * 86400),
    ("600", 600), (" 600 ", 600), ("0000000000000600", 600), (str(MAX_EXPIRATION_S), MAX_EXPIRATION_S),
    ("P0000000001D", 86400), ("P10Y", MAX_EXPIRATION_S),
])
def test_durations_and_seconds(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("0", "longer than zero"), ("PT0S", "longer than zero"),
    (str(MAX_EXPIRATION_S + 1), "longer than 10 years"), ("9" * 40, "longer than 10 years"),
    ("P11Y", "longer than 10 years"), ("P3651D", "longer than 10 years"),
    ("soon", "neither an ISO 8601 duration"), ("-5", "neither"), ("600.5", "neither"),
    ("\u0666\u0660\u0660", "neither"), ("PT\u0666\u0660\u0660S", "neither"),  # Arabic-Indic digits: refused alike
    ("P1DT", "neither"), ("PT", "neither"), ("P1DT2", "neither"),  # a "T" needs a time part (P1DT was a day)
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


def _chunks(text: bytes, size: int = 1000):  # type: ignore[no-untyped-def]
    async def read(n: int) -> bytes:
        nonlocal text
        piece, text = text[:min(n, size)], text[min(n, size):]
        return piece
    return read


@pytest.mark.parametrize("wrap", ["plain", "mime-lines", "data-url", "DATA-URL", "url-safe", "url-safe-unpadded"])
async def test_base64_sources_decode_as_they_stream(wrap: str) -> None:
    """Chunk edges fall anywhere (1000-byte reads); line breaks and a data: URL prefix (any case) are
    not part of the file."""
    import base64
    import os

    from web.views.chevereto import _decode_stream

    data = os.urandom(100_003)
    text = base64.b64encode(data)
    if wrap == "mime-lines":
        text = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif wrap == "data-url":
        text = b"data:image/png;base64," + text
    elif wrap == "DATA-URL":
        text = b"  DATA:image/png;base64," + text
    elif wrap.startswith("url-safe"):  # RFC 4648 §5, as JavaScript's and Python's URL-safe encoders write it
        text = base64.urlsafe_b64encode(data)
        assert b"-" in text and b"_" in text
        if wrap.endswith("unpadded"):
            text = text.rstrip(b"=")
    path = await _decode_stream(_chunks(text), 10**9)
    try:
        assert path.read_bytes() == data
    finally:
        path.unlink()


async def test_base64_bound_is_on_the_decoded_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import os

    from web.views import chevereto

    monkeypatch.setattr(chevereto, "BASE64_MAX_BYTES", 3000)
    exact = base64.encodebytes(os.urandom(3000))  # line breaks do not count against the bound
    path = await chevereto._decode_stream(_chunks(exact, 7), 10**9)
    assert path.stat().st_size == 3000
    path.unlink()
    with pytest.raises(errors.PayloadTooLarge, match="at most 3000 bytes"):
        await chevereto._decode_stream(_chunks(base64.b64encode(os.urandom(3001))), 10**9)
    with pytest.raises(errors.PayloadTooLarge, match="at most 2000 bytes"):  # the upload limit when lower
        await chevereto._decode_stream(_chunks(base64.b64encode(os.urandom(2001))), 2000)


@pytest.mark.parametrize(("text", "error", "says"), [
    (b"https://example.org/a.png", errors.BadRequest, "source URLs are not supported"),
    (b"  HTTP://example.org/a.png", errors.BadRequest, "source URLs are not supported"),
    (b"QUFB" * 100 + b"Q", errors.BadRequest, "neither a file nor base64"),  # cut short (2-3 are unpadded)
    (b"QUFB" * 100 + b"Q=Q", errors.BadRequest, "neither a file nor base64"),
    # curl -F "source=data:image/png;base64,..." ends the value at ';'
    (b"data:image/png", errors.BadRequest, "source is a data: URL with no ',' before its data .curl -F cuts"),
    (b" DATA:image/png;base64" + b"QUFB" * 100, errors.BadRequest, "source is a data: URL with no ','"),
    (b"!!!!", errors.EmptyFile, "empty file"),
    (b"", errors.EmptyFile, "empty file"),
])
async def test_sources_that_are_no_base64_file(text: bytes, error: type[Exception], says: str) -> None:
    from web.views.chevereto import _decode_stream

    with pytest.raises(error, match=says):
        await _decode_stream(_chunks(text), 10**9)
