"""The camera details of an image page: the EXIF date shown as people write it."""

from __future__ import annotations

import asyncio

import pytest

from pixelfox.v1 import common_pb2
from web import exif


def test_stored_exif_date_is_shown_with_dashes() -> None:
    image = common_pb2.Image(slug="x", status=common_pb2.IMAGE_STATUS_READY,
                             exif={"make": "Canon", "taken_at": "2013:08:17 18:54:52"})
    # stored fields never reach Redis: there is none to give
    shown = asyncio.run(exif.summary(None, image))  # type: ignore[arg-type]
    assert shown == [("Camera make", "Canon"), ("Taken", "2013-08-17 18:54:52")]


@pytest.mark.parametrize(("raw", "shown"), [
    ("2013:08:17 18:54:52", "2013-08-17 18:54:52"),
    ("2013:08:17", "2013-08-17"),
    ("2013:08:17T18:54:52", "2013-08-17T18:54:52"),
    ("    :  :     :  :  ", "    :  :     :  :  "),  # a camera without a clock: left as it is
    ("18:54:52", "18:54:52"),
    ("2013:08:1718", "2013:08:1718"),
])
def test_readable_date(raw: str, shown: str) -> None:
    assert exif.readable_date(raw) == shown
