"""The clean original: the upload with its metadata removed, stored beside the renditions (issues 3 and 5)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pixelfox import imaging
from tests.conftest import CORPUS

SMALL = imaging.Recipe(variants=(imaging.VariantSpec("thumb", 64, 64, ("webp",)),))


@pytest.mark.parametrize("name", ["iphone5_orient3_gps.jpg", "samsung_j3_orient6.jpg", "painting_rgb.png",
                                  "htc_desire_gps_icc.webp", "rotating_squares_30f.gif",
                                  "canon70d_20mp_gps.avif"])
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


def test_avif_metadata_items_are_blanked_in_place() -> None:
    data = (CORPUS / "photos" / "canon70d_20mp_gps.avif").read_bytes()
    with Image.open(io.BytesIO(data)) as src:
        assert 0x8825 in src.getexif()  # the source has a GPS IFD
        pixels = src.tobytes()
    clean = imaging.process_with_original(data, SMALL).variants[-1]
    assert clean.name == imaging.CLEAN_ORIGINAL and clean.format == "avif"
    assert len(clean.data) == len(data) and clean.data.count(b"Exif") == 0  # zeroed, no byte moved
    with Image.open(io.BytesIO(clean.data)) as got:
        assert dict(got.getexif()) == {} and got.tobytes() == pixels


def test_truncated_avif_meta_is_corrupt_not_half_cleaned() -> None:
    data = (CORPUS / "photos" / "canon70d_20mp_gps.avif").read_bytes()
    meta = data.index(b"meta") - 4
    with pytest.raises(imaging.CorruptImage):
        imaging.strip_metadata(data[:meta + 40])


@pytest.mark.parametrize("progressive", [False, True])
def test_data_appended_after_the_jpeg_is_dropped(progressive: bool) -> None:
    buf = io.BytesIO()
    src = Image.radial_gradient("L").convert("RGB").resize((320, 200))
    src.save(buf, "JPEG", quality=1, progressive=progressive)  # quality 1: tables full of 0xFF
    jpeg = buf.getvalue()
    payload = b"PK\x03\x04 a zip, or a phone's motion-photo video \xff\xd9 with markers inside"
    clean = imaging.strip_metadata(jpeg + payload)
    assert clean == jpeg  # nothing to strip in Pillow's output; the image ends at its EOI
    with Image.open(io.BytesIO(clean)) as a, Image.open(io.BytesIO(jpeg)) as b:
        assert a.tobytes() == b.tobytes()
