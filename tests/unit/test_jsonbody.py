"""web.jsonbody.parse: strict JSON with messages that say what is wrong."""

from __future__ import annotations

import pytest

from pixelfox import errors
from web.jsonbody import MAX_NUMBER_DIGITS, parse


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "the body is empty: send a JSON object"),
    (b"  \r\n", "the body is empty: send a JSON object"),
    (b'{"size": NaN}', "the body must be JSON: NaN is not a JSON value"),
    (b'{"size": -Infinity}', "the body must be JSON: -Infinity is not a JSON value"),
    (b'{"size": ' + b"9" * 5000 + b"}", f"a number in the body is longer than {MAX_NUMBER_DIGITS} characters"),
    (b'{"size": 1.' + b"5" * 100 + b"}", f"a number in the body is longer than {MAX_NUMBER_DIGITS} characters"),
    (b"title=x", "the body must be JSON"),
    (b'{"title": "\xff"}', "the body must be JSON"),
    # which one was meant? (the last was taken, silently)
    (b'{"title": "a", "title": "b"}', 'the body gives "title" more than once: send each field once'),
    (b'{"x": {"k": 1, "k": 1}}', 'the body gives "k" more than once: send each field once'),
])
def test_refused(raw: bytes, says: str) -> None:
    with pytest.raises(errors.BadRequest) as exc:
        parse(raw)
    assert exc.value.message == says


def test_accepted() -> None:
    assert parse(b'{"a": {"k": 1}, "b": {"k": 2}, "k": [{"k": 3}]}') == {"a": {"k": 1}, "b": {"k": 2}, "k": [{"k": 3}]}
    assert parse(b'{"size": 9223372036854775807, "ratio": -1.5e3, "title": null}') == {
        "size": 2**63 - 1, "ratio": -1500.0, "title": None}
    assert type(parse(b"[1, 2.0]")[0]) is int and type(parse(b"[1, 2.0]")[1]) is float
