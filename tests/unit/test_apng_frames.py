"""An APNG frame rectangle (fcTL) outside the canvas is refused by :func:`imaging.verify`, naming the frame.

The decoder refuses such a file only when it gets to that frame ("Format error decoding Png: Sub frame
is out-of-bounds."), so the upload node, which verifies without decoding, used to store it and the
processing node failed it later. The files are written chunk by chunk (:mod:`tests.animkit`).
"""

from __future__ import annotations

import pytest

from pixelfox import imaging
from pixelfox.imaging import CorruptImage
from tests.animkit import apng

FULL = (100, 100, 0, 0)


def test_frames_inside_the_canvas_are_verified_and_processed() -> None:
    data = apng(100, 100, [FULL, (50, 50, 10, 10), (60, 60, 40, 40)])  # the last one touches both edges
    assert imaging.verify(data).frames == 3
    thumb = imaging.Recipe(variants=(imaging.VariantSpec("thumb", 200, 200, ("webp",)),))
    (webp,) = imaging.process(data, thumb).variants
    assert (webp.width, webp.height, webp.frames) == (100, 100, 3)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([FULL, (50, 50, 10, 10), (60, 60, 50, 50)], "APNG frame 3 (60x60 at 50,50) lies outside the 100x100 canvas"),
        ([FULL, (101, 1, 0, 0)], "APNG frame 2 (101x1 at 0,0) lies outside the 100x100 canvas"),
        ([FULL, (1, 1, 0, 0xFFFF_FFFF)], "APNG frame 2 (1x1 at 0,4294967295) lies outside the 100x100 canvas"),
        ([FULL, (0, 10, 0, 0)], "APNG frame 2 is empty (0x10)"),
        ([(50, 50, 0, 0)], "APNG frame 1 (50x50 at 0,0) is the default image and must cover the whole 100x100 canvas"),
    ],
)
def test_a_frame_outside_the_canvas_is_refused_by_verify_naming_it(
    frames: list[tuple[int, int, int, int]], message: str
) -> None:
    data = apng(100, 100, frames)
    expected = f"corrupt PNG: {message}"
    with pytest.raises(CorruptImage) as verified:
        imaging.verify(data)
    assert str(verified.value) == expected
    with pytest.raises(CorruptImage) as probed:  # the header walk of a prefix sees it too
        imaging.probe(data)
    assert str(probed.value) == expected
    with pytest.raises(CorruptImage) as processed:  # process verifies first: the same words
        imaging.process(data)
    assert str(processed.value) == expected
