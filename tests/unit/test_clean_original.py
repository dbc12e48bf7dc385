"""The clean original: the upload with its metadata removed, stored beside the renditions (issues 3 and 5)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pixelfox import imaging
from tests.conftest import CORPUS

SMALL = imaging.Recipe(variants=(imaging.VariantSpec("thumb", 64, 64, ("webp",)),))


@pytest.mark.parametrize("name", ["iphone5_orient3_gps.jpg", "samsung_j3_orient6.jpg", "painting_rgb.png",
                                  "htc_desire_gps_icc.webp", "rotating_squares_30f.gif"])
def test_clean_original_keeps_pixels_and_orientation_drops_the_rest(name: str) -> None:
    data = (CORPUS / "photos" / name).read_bytes()
    result = imaging.process_with_original(data, SMALL)
    assert [v.name for v in result.variants] == ["thumb", imaging.CLEAN_ORIGINAL]
    clean = result.variants[-1]
    assert (clean.format, clean.mime) == (result.info.format, result.info.mime)
    assert (clean.width, clean.height) == (result.width, result.height)  # upright size, px
    assert clean.frames == result.info.frames and len(clean.data) <= len(data)
    with Image.open(io.BytesIO(data)) as src, Image.open(io.BytesIO(clean.data)) as got:
        assert got.size == src.size and got.tobytes() == src.tobytes()
        orientation = src.getexif().get(0x0112, 1)
        assert dict(got.getexif()) == ({0x0112: orientation} if orientation != 1 else {})
        assert "xmp" not in got.info and "comment" not in got.info
    assert b"GPS" not in clean.data[:65536]


def test_avif_gets_no_clean_original() -> None:
    data = (CORPUS / "photos" / "canon70d_20mp_gps.avif").read_bytes()
    result = imaging.process_with_original(data, SMALL)
    assert [v.name for v in result.variants] == ["thumb"]  # its EXIF/GPS items cannot be removed yet
