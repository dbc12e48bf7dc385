"""Inputs found by fuzzing the Rust core (`scripts/fuzz`, cargo-afl; docs/imaging.md).

Each one once made the core panic. The Python API catches panics, so here every input must
give a clean typed error (or a result) from the public functions, and the specific cases
must be refused by the check that now stops them. A new crash input goes into
tests/data/fuzz/ (it is then replayed by `test_every_fuzz_input_gives_a_typed_error`) plus
a test that names its cause.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest

from pixelfox import imaging
from pixelfox.imaging import CorruptImage, ImageError, Recipe, VariantSpec

DATA = Path(__file__).parents[1] / "data" / "fuzz"
SMALL = Recipe(variants=(VariantSpec("t", 64, 64, ("webp", "jpeg")),))


@pytest.mark.parametrize("path", sorted(DATA.iterdir()), ids=lambda p: p.name)
def test_every_fuzz_input_gives_a_typed_error(path: Path) -> None:
    data = path.read_bytes()
    for call in (
        imaging.probe,
        imaging.verify,
        lambda d: imaging.process(d, SMALL),
        imaging.strip_metadata,
        imaging.read_exif,
    ):
        with contextlib.suppress(ImageError):
            call(data)


def test_webp_animation_frame_smaller_than_its_anmf_is_corrupt() -> None:
    """image-webp 0.2.4 panicked (slice index in yuv.rs) on an animation frame whose VP8
    bitstream is 200x71 inside a 200x200 ANMF: the corpus' animated.webp with one byte
    changed. verify() now compares the two sizes before any decode."""
    data = (DATA / "webp_anmf_frame_size_mismatch.webp").read_bytes()
    assert imaging.probe(data).format == "webp"  # header only, no frame walk
    with pytest.raises(CorruptImage, match="200x71 frame in a 200x200 ANMF"):
        imaging.verify(data)
    with pytest.raises(CorruptImage, match="200x71 frame in a 200x200 ANMF"):
        imaging.process(data, SMALL)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def _animated_webp(frame_body: bytes) -> bytes:
    vp8x = bytes([0b0001_0010, 0, 0, 0]) + (15).to_bytes(3, "little") * 2  # animation + alpha, 16x16
    anim = bytes(4) + struct.pack("<H", 0)
    anmf = bytes(6) + (15).to_bytes(3, "little") * 2 + (100).to_bytes(3, "little") + b"\0" + frame_body
    body = b"WEBP" + _chunk(b"VP8X", vp8x) + _chunk(b"ANIM", anim) + _chunk(b"ANMF", anmf)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("frame_body", "message"),
    [
        (_chunk(b"ALPH", b"\0\0") + _chunk(b"VP8 ", b""), "bad VP8 start code"),  # image-webp issue 182
        (_chunk(b"ALPH", b"\0\0"), "ANMF frame without image data"),
    ],
    ids=["empty-vp8-after-alph", "no-bitstream"],
)
def test_webp_animation_frame_without_a_bitstream_is_corrupt(frame_body: bytes, message: str) -> None:
    data = _animated_webp(frame_body)
    with pytest.raises(CorruptImage, match=message):
        imaging.verify(data)
    with pytest.raises(CorruptImage, match=message):
        imaging.process(data, SMALL)
