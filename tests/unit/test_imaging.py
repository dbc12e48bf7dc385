"""pixelfox.imaging against the real corpus in /work/shared/corpus (MANIFEST.tsv, CASES.md)."""

from __future__ import annotations

import contextlib
import csv
import io
import mmap
import random
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat

from pixelfox import imaging
from pixelfox.imaging import (
    CorruptImage,
    ImageError,
    LimitExceeded,
    Limits,
    Recipe,
    UnsupportedFormat,
    VariantSpec,
)

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")

THUMB_WEBP = Recipe(variants=(VariantSpec("thumb", 200, 200, ("webp",)),))
ALL_FORMATS_SMALL = Recipe(
    variants=(
        VariantSpec("thumb", 200, 200, ("webp", "avif", "jpeg")),
        VariantSpec("medium", 1024, 1024, ("webp", "jpeg")),
    )
)
MAGIC = {
    "webp": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
    "avif": lambda d: d[4:12] == b"ftypavif",
    "jpeg": lambda d: d[:2] == b"\xff\xd8",
}


def manifest() -> Iterator[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="") as fh:
        yield from csv.DictReader(fh, delimiter="\t")


ROWS = list(manifest()) if CORPUS.is_dir() else []
ACCEPTED = [r for r in ROWS if r["expected_outcome"] == "accept"]
REJECTED = [r for r in ROWS if r["expected_outcome"] == "reject-with-error"]


@cache
def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def grey_diff(a: Image.Image, b: Image.Image, size: tuple[int, int] = (64, 64)) -> float:
    """Mean absolute difference of two images on a downscaled grey comparison (0..255)."""
    ga = a.convert("L").resize(size, Image.Resampling.BILINEAR)
    gb = b.convert("L").resize(size, Image.Resampling.BILINEAR)
    return float(ImageStat.Stat(ImageChops.difference(ga, gb)).mean[0])


def on_white(img: Image.Image) -> Image.Image:
    """Composite onto white, so transparent pixels compare equal whatever their RGB."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


# --------------------------------------------------------------------------- probe


@pytest.mark.parametrize("row", ACCEPTED, ids=[r["file"] for r in ACCEPTED])
def test_probe_matches_manifest(row: dict[str, str]) -> None:
    data = read(row["file"])
    if row["format"] == "AVIF":
        with pytest.raises(UnsupportedFormat, match="AVIF"):
            imaging.probe(data)
        return
    info = imaging.probe(data)
    expected_format = {"APNG": "png"}.get(row["format"], row["format"].lower())
    assert info.format == expected_format
    assert info.mime == f"image/{expected_format}"
    assert (info.width, info.height, info.frames) == (int(row["width"]), int(row["height"]), int(row["frames"]))
    assert imaging.verify(data) == info


REJECT_EXPECT: dict[str, tuple[type[ImageError], str]] = {
    "edge/truncated.jpg": (CorruptImage, "truncated"),
    "edge/empty.jpg": (CorruptImage, "empty file"),
    "edge/text_renamed.jpg": (UnsupportedFormat, r"not an image \(text\)"),
    "edge/bomb_65535x66601.gif": (LimitExceeded, "65535x66601 exceeds the pixel limit"),
    "edge/bomb_100000x100000.png": (LimitExceeded, "100000x100000 exceeds the pixel limit"),
    "edge/svg_with_script.svg": (UnsupportedFormat, "unsupported format: SVG"),
    "edge/heif_unsupported.heic": (UnsupportedFormat, "unsupported format: HEIC"),
    "edge/gif_stall_issue101.gif": (LimitExceeded, "exceeds the pixel limit"),
}


@pytest.mark.parametrize("row", REJECTED, ids=[r["file"] for r in REJECTED])
def test_rejects_fast_with_reason(row: dict[str, str]) -> None:
    exc_type, pattern = REJECT_EXPECT[row["file"]]
    data = read(row["file"])
    start = time.perf_counter()
    with pytest.raises(exc_type, match=pattern) as err:
        imaging.verify(data)
    with pytest.raises(exc_type):
        imaging.process(data)
    assert time.perf_counter() - start < 2.0
    assert err.value.code == exc_type.code


def test_error_codes() -> None:
    assert ImageError.code == "invalid-image"
    assert CorruptImage.code == "corrupt-image"
    assert UnsupportedFormat.code == "unsupported-format"
    assert LimitExceeded.code == "image-too-large"
    assert issubclass(LimitExceeded, ImageError)


def test_bomb_rejected_from_header_quickly() -> None:
    data = read("edge/bomb_100000x100000.png")
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(LimitExceeded):
            imaging.probe(data)
    assert (time.perf_counter() - start) / 100 < 0.01


def test_probe_works_on_prefix() -> None:
    data = read("photos/nikon_d90_12mp_gps_64kb_exif.jpg")[: 256 * 1024]
    info = imaging.probe(data)
    assert (info.width, info.height) == (4288, 2848)
    with pytest.raises(CorruptImage, match="truncated"):
        imaging.verify(data)
    gif = imaging.probe(read("edge/many_frames_380.gif")[:50_000])
    assert (gif.width, gif.height) == (472, 298)
    assert 1 <= gif.frames < 380


def test_probe_orientation_and_display_size() -> None:
    info = imaging.probe(read("photos/samsung_j3_orient6.jpg"))
    assert info.orientation == 6
    assert (info.display_width, info.display_height) == (1932, 2576)
    assert imaging.probe(read("edge/png_exif_orient6.png")).orientation == 6
    assert imaging.probe(read("photos/leica_t_16mp_orient8_gps.jpg")).orientation == 8


def test_limits_are_configurable() -> None:
    data = read("photos/painting_rgb.png")
    with pytest.raises(LimitExceeded, match="pixel limit"):
        imaging.probe(data, Limits(max_pixels=100_000))
    with pytest.raises(LimitExceeded, match="dimension limit"):
        imaging.probe(data, Limits(max_height=400))
    with pytest.raises(LimitExceeded, match="frame"):
        imaging.probe(read("edge/many_frames_380.gif"), Limits(max_frames=100))
    with pytest.raises(LimitExceeded, match="bytes"):
        imaging.verify(data, Limits(max_input_bytes=1000))


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_accepts_bytes_like(wrap: type) -> None:
    data = read("photos/painting_rgb.png")
    assert imaging.probe(wrap(data)).width == 290


def test_accepts_mmap() -> None:
    with (
        (CORPUS / "photos/painting_rgb.png").open("rb") as fh,
        mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm,
    ):
        assert imaging.verify(mm).height == 442
        assert imaging.process(mm, THUMB_WEBP).variants[0].width == 131


def test_rejects_non_buffer() -> None:
    with pytest.raises(TypeError):
        imaging.probe("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- verify


@pytest.mark.parametrize(
    "name",
    [
        "photos/painting_rgb.png",
        "photos/rotating_squares_30f.gif",
        "photos/htc_desire_gps_icc.webp",
        "edge/animated.webp",
        "photos/samsung_j3_orient6.jpg",
        "edge/apng_20_frames.png",
    ],
)
def test_verify_rejects_half_file(name: str) -> None:
    data = read(name)
    imaging.verify(data)
    with pytest.raises(CorruptImage, match="truncated"):
        imaging.verify(data[: len(data) // 2])
    with pytest.raises(CorruptImage):
        imaging.process(data[: len(data) // 2], THUMB_WEBP)


def test_verify_png_crc() -> None:
    data = bytearray(read("photos/painting_rgb.png"))
    data[100] ^= 0xFF
    with pytest.raises(CorruptImage, match="CRC"):
        imaging.verify(bytes(data))


def test_verify_allows_trailing_bytes_after_jpeg_eoi() -> None:
    data = read("edge/md5_collision_a.jpg") + b"trailing junk"
    assert imaging.verify(data).width == 612


def test_garbage_after_header_is_corrupt_not_panic() -> None:
    head = read("photos/painting_rgb.png")[:33]  # signature + IHDR
    fake = head + b"\x00\x00\x00\x04IDAT\xde\xad\xbe\xef" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    with pytest.raises(CorruptImage):
        imaging.process(fake, THUMB_WEBP)


# --------------------------------------------------------------------------- process


ORIENTED = [
    "photos/leica_t_16mp_orient8_gps.jpg",
    "photos/iphone5_orient3_gps.jpg",
    "photos/samsung_j3_orient6.jpg",
    "photos/blackberry_z10_orient6_16x9.jpg",
    "photos/unsplash_landscape_orient5.jpg",
    "edge/png_exif_orient6.png",
]


@pytest.mark.parametrize("name", ORIENTED)
def test_thumbs_are_upright_like_pillow(name: str) -> None:
    data = read(name)
    ref = ImageOps.exif_transpose(decode(data)).convert("RGB")
    ref.thumbnail((200, 200))
    result = imaging.process(data, THUMB_WEBP)
    (thumb,) = result.variants
    assert abs(thumb.width - ref.width) <= 1 and abs(thumb.height - ref.height) <= 1
    assert grey_diff(decode(thumb.data), ref) < 12
    info = result.info
    assert (result.width, result.height) == (info.display_width, info.display_height)


def test_samsung_orient6_thumb_is_150x200() -> None:
    result = imaging.process(read("photos/samsung_j3_orient6.jpg"), THUMB_WEBP)
    assert (result.width, result.height) == (1932, 2576)
    assert (result.variants[0].width, result.variants[0].height) == (150, 200)


def test_panorama_clamped_to_webp_limit() -> None:
    recipe = Recipe(variants=(VariantSpec("thumb", 200, 200, ("webp",)), VariantSpec("full", 65535, 65535, ("webp",))))
    result = imaging.process(read("edge/panorama_20000x300.jpg"), recipe)
    thumb, full = result.variants
    assert (thumb.width, thumb.height) == (200, 3)
    assert (full.width, full.height) == (16383, 246)
    for v in result.variants:
        assert decode(v.data).size == (v.width, v.height)


def test_default_recipe_outputs_in_order_with_magic_and_no_metadata() -> None:
    result = imaging.process(read("photos/nokia83_wide_9mp_gps.jpg"))
    expected = [(s.name, f) for s in imaging.DEFAULT_RECIPE.variants for f in s.formats]
    assert [(v.name, v.format) for v in result.variants] == expected
    for v in result.variants:
        assert MAGIC[v.format](v.data), (v.name, v.format)
        assert v.mime == f"image/{v.format}"
        assert max(v.width, v.height) <= {"thumb": 200, "medium": 1024, "large": 2048}[v.name]
        assert_no_metadata(v.data)


def assert_no_metadata(data: bytes) -> None:
    for marker in (b"Exif", b"<x:xmpmeta", b"GPS", b"ICC_PROFILE", b"iCCP"):
        assert marker not in data
    img = Image.open(io.BytesIO(data))
    assert len(img.getexif()) == 0
    assert "icc_profile" not in img.info or not img.info["icc_profile"]


@pytest.mark.parametrize(
    "name",
    [
        "photos/htc_desire_gps_icc.webp",
        "photos/iphone5_orient3_gps.jpg",
        "edge/large_exif_43kb.jpg",
        "edge/progressive_icc_exif.jpg",
        "edge/png_exif_orient6.png",
    ],
)
def test_outputs_carry_no_metadata(name: str) -> None:
    for v in imaging.process(read(name), ALL_FORMATS_SMALL).variants:
        assert MAGIC[v.format](v.data)
        assert_no_metadata(v.data)


def test_alpha_kept_in_webp_and_flattened_on_white_in_jpeg() -> None:
    recipe = Recipe(
        variants=(VariantSpec("thumb", 200, 200, ("webp", "avif")), VariantSpec("medium", 1024, 1024, ("jpeg",)))
    )
    webp, avif, jpeg = imaging.process(read("photos/blackbug_alpha.png"), recipe).variants
    assert (webp.width, webp.height) == (200, 150)
    alpha = decode(webp.data).convert("RGBA").getchannel("A")
    assert alpha.getextrema()[0] == 0
    assert MAGIC["avif"](avif.data)
    flat = decode(jpeg.data).convert("RGB")
    assert flat.mode == "RGB"
    w, h = flat.size
    for xy in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]:
        assert min(flat.getpixel(xy)) > 200, xy  # type: ignore[arg-type]
    assert ImageStat.Stat(flat.convert("L")).mean[0] > 128  # white page with writing, not a black rectangle


def test_gray_alpha_and_palette_transparency() -> None:
    for name in ["edge/gray_alpha_8bit.png", "edge/palette_trns.png", "edge/png16_rgba.png"]:
        (webp,) = imaging.process(read(name), THUMB_WEBP).variants
        src_alpha = decode(read(name)).convert("RGBA").getchannel("A").getextrema()
        out_alpha = decode(webp.data).convert("RGBA").getchannel("A").getextrema()
        assert out_alpha[0] <= src_alpha[0] + 8, name


def test_png16_gray_keeps_gradient() -> None:
    recipe = Recipe(variants=(VariantSpec("full", 64, 64, ("jpeg",)),))
    data = read("edge/png16_gray_interlaced.png")
    (jpeg,) = imaging.process(data, recipe).variants
    out = decode(jpeg.data).convert("L")
    src = decode(data)
    ref = Image.eval(src, lambda v: v / 257).convert("L") if src.mode.startswith("I") else src.convert("L")
    assert grey_diff(out, ref, src.size) < 4
    lo, hi = out.getextrema()
    assert hi - lo > 100  # a gradient, not clipped white/black
    hist = out.histogram()
    assert hist[255] < 0.5 * sum(hist)


def test_never_upscaled() -> None:
    result = imaging.process(read("photos/painting_rgb.png"), Recipe())
    large = [v for v in result.variants if v.name == "large"]
    assert {(v.width, v.height) for v in large} == {(290, 442)}
    assert (result.width, result.height) == (290, 442)


def test_cmyk_jpeg_not_inverted() -> None:
    recipe = Recipe(variants=(VariantSpec("full", 100, 100, ("jpeg",)),))
    (out,) = imaging.process(read("edge/cmyk_adobe_app14.jpg"), recipe).variants
    ref = decode(read("edge/cmyk_adobe_app14.reference_rgb.jpg")).convert("RGB")
    diff = ImageStat.Stat(ImageChops.difference(decode(out.data).convert("RGB"), ref)).mean
    assert max(diff) < 10


@pytest.mark.parametrize("name", ["edge/icc_rgb_to_gbr.jpg", "edge/icc_display_p3.jpg"])
def test_icc_converted_to_srgb(name: str) -> None:
    recipe = Recipe(variants=(VariantSpec("full", 4096, 4096, ("jpeg",)),))
    (out,) = imaging.process(read(name), recipe).variants
    src = decode(read(name))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(src.info["icc_profile"]))
    ref = ImageCms.profileToProfile(src.convert("RGB"), profile, ImageCms.createProfile("sRGB"))
    assert ref is not None
    diff = ImageStat.Stat(ImageChops.difference(decode(out.data).convert("RGB"), ref)).mean
    assert max(diff) < 4


def test_md5_collision_pair_gives_different_thumbs() -> None:
    a = imaging.process(read("edge/md5_collision_a.jpg"), THUMB_WEBP).variants[0].data
    b = imaging.process(read("edge/md5_collision_b.jpg"), THUMB_WEBP).variants[0].data
    assert a != b


# --------------------------------------------------------------------------- animation


def frames_of(data: bytes) -> tuple[int, list[int], int | None]:
    """(frame count, per-frame durations in ms, loop count) as Pillow sees the file."""
    img = Image.open(io.BytesIO(data))
    durations = []
    for i in range(img.n_frames):
        img.seek(i)
        img.load()
        durations.append(int(img.info.get("duration", 0)))
    return img.n_frames, durations, img.info.get("loop")


def test_gif_animation_survives_in_webp() -> None:
    result = imaging.process(read("photos/rotating_squares_30f.gif"), ALL_FORMATS_SMALL)
    webp = [v for v in result.variants if v.format == "webp"]
    assert webp and all(v.frames == 30 for v in webp)
    n, durations, loop = frames_of(webp[0].data)
    assert n == 30
    assert durations == [30] * 30
    assert loop == 0
    assert all(v.frames == 1 for v in result.variants if v.format != "webp")


@pytest.mark.parametrize(
    ("name", "frames"),
    [("edge/animated.webp", 6), ("edge/apng_20_frames.png", 20), ("edge/gif_dispose_previous.gif", 3)],
)
def test_animations_keep_every_frame(name: str, frames: int) -> None:
    (webp,) = imaging.process(read(name), THUMB_WEBP).variants
    assert webp.frames == frames
    assert frames_of(webp.data)[0] == frames


def test_gif_without_loop_extension_plays_once() -> None:
    (webp,) = imaging.process(read("edge/gif_dispose_previous.gif"), THUMB_WEBP).variants
    assert frames_of(webp.data)[2] == 1
    (webp,) = imaging.process(read("edge/animated.webp"), THUMB_WEBP).variants
    assert frames_of(webp.data)[2] == 0


def test_gif_dispose_previous_composited() -> None:
    recipe = Recipe(variants=(VariantSpec("full", 100, 100, ("webp",)),), webp_quality=100)
    (webp,) = imaging.process(read("edge/gif_dispose_previous.gif"), recipe).variants
    expected = decode(read("edge/gif_dispose_previous.expected.png")).convert("RGB")
    img = Image.open(io.BytesIO(webp.data))
    refs = [expected.crop((0, 100 * i, 100, 100 * (i + 1))) for i in range(3)]
    for i in range(3):
        img.seek(i)
        frame = img.convert("RGB")
        diffs = [max(ImageStat.Stat(ImageChops.difference(frame, ref)).mean) for ref in refs]
        # lossy WebP: close to its own reference frame, far from the others
        assert diffs[i] < 10, (i, diffs)
        assert all(diffs[i] * 2 < d for j, d in enumerate(diffs) if j != i), (i, diffs)


def test_many_frames_gif() -> None:
    start = time.perf_counter()
    (webp,) = imaging.process(read("edge/many_frames_380.gif"), THUMB_WEBP).variants
    assert webp.frames == 380
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("name", ["photos/rotating_squares_30f.gif", "edge/many_frames_380.gif"])
def test_animated_frames_and_delays_match_source(name: str) -> None:
    """Every output frame shows the matching source frame for the source's delay
    (merged identical frames are split back into transparent hold frames)."""
    data = read(name)
    recipe = Recipe(variants=(VariantSpec("full", 4096, 4096, ("webp",)),), webp_quality=90)
    (webp,) = imaging.process(data, recipe).variants
    src_n, src_delays, src_loop = frames_of(data)
    out_n, out_delays, out_loop = frames_of(webp.data)
    assert (out_n, out_delays) == (src_n, src_delays)
    assert webp.frames == src_n
    assert out_loop == src_loop
    src, out = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(webp.data))
    for i in range(0, src_n, max(1, src_n // 40)):
        src.seek(i)
        out.seek(i)
        assert grey_diff(on_white(out), on_white(src)) < 8, i


@pytest.mark.parametrize(
    "name",
    [
        "edge/interlaced_rgb.png",
        "edge/palette_trns.png",
        "edge/gif_dispose_previous.gif",
        "edge/animated.webp",
        "edge/large_exif_43kb.jpg",
        "edge/cmyk_adobe_app14.jpg",
    ],
)
def test_mutated_inputs_never_crash(name: str) -> None:
    """Random byte flips give a result or an ImageError - never a panic, hang or other exception."""
    rng = random.Random(name)
    original = read(name)
    start = time.perf_counter()
    for _ in range(40):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        for fn in (imaging.probe, imaging.verify):
            with contextlib.suppress(ImageError):
                fn(data)
        with contextlib.suppress(ImageError):
            imaging.process(bytes(data), THUMB_WEBP)
    assert time.perf_counter() - start < 20
