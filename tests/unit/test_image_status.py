"""``public_status`` and ``image_to_json``: the status and error pages and JSON answers give an image."""

from __future__ import annotations

import pytest

from pixelfox.client.images import (
    FILES_LOST_CODE,
    FILES_LOST_MESSAGE,
    image_to_json,
    public_status,
)
from pixelfox.v1 import common_pb2

READY, PROCESSING, FAILED = (common_pb2.IMAGE_STATUS_READY, common_pb2.IMAGE_STATUS_PROCESSING,
                             common_pb2.IMAGE_STATUS_FAILED)


def _image(status: common_pb2.ImageStatus.ValueType, *, original: str = "", variant: str = "",
           visibility: str = "public") -> common_pb2.Image:
    img = common_pb2.Image(slug="abc", status=status, original_url=original, visibility=visibility,
                           error_code="corrupt-image" if status == FAILED else "",
                           error_message="cannot decode" if status == FAILED else "")
    img.variants.add(name="thumb", format="webp", width=160, height=160, url=variant)
    return img


@pytest.mark.parametrize(("image", "status", "error"), [
    (_image(READY, original="http://s/o/a.png", variant="http://s/v/t.webp"), "ready", None),
    (_image(READY, variant="http://s/v/t.webp"), "ready", None),  # the original alone lost: variants served
    (_image(READY, original="http://s/o/a.png"), "ready", None),
    (_image(READY), "lost", {"code": FILES_LOST_CODE, "message": FILES_LOST_MESSAGE}),
    (_image(READY, visibility="private"), "lost", {"code": FILES_LOST_CODE, "message": FILES_LOST_MESSAGE}),
    (_image(PROCESSING), "processing", None),  # no URL yet: not lost
    (_image(FAILED), "failed", {"code": "corrupt-image", "message": "cannot decode"}),
])
def test_status_and_error(image: common_pb2.Image, status: str, error: dict[str, str] | None) -> None:
    assert public_status(image) == status
    body = image_to_json(image)
    assert (body["status"], body["error"]) == (status, error)
