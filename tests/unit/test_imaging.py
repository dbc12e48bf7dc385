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

from pixelfox import errors, imaging
from pixelfox.imaging import (
    CorruptImage,
    ImageError,
    LimitExceeded,
    Limits,
    Recipe,
    UnsupportedFormat,
    VariantSpec,
)
from tests.jpegkit import jpeg_segments

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
    # the parser stops counting at the first frame over the limit: it said "has 101 frames" of these 380
    with pytest.raises(LimitExceeded, match=r"^animation has more than 100 frames \(the frame limit\)$"):
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


def test_a_second_jpeg_frame_header_is_corruption_not_a_limit() -> None:
    """An unstuffed FF C0 inside the entropy data reads as a second SOF with a noise "size":
    the file is corrupt (as libjpeg says), not over the pixel limit."""
    data = read("photos/iphone5_orient3_gps.jpg")
    mid = data.index(b"\xff\xda") + (len(data) - data.index(b"\xff\xda")) // 2
    stray = b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    bad = data[:mid] + stray + data[mid:]
    assert imaging.probe(bad).width == imaging.probe(data).width  # the header is fine
    for check in (imaging.verify, lambda b: imaging.process(b, THUMB_WEBP)):
        with pytest.raises(CorruptImage, match=f"second frame header \\(SOF\\) at byte {mid}"):
            check(bad)


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


def test_an_animated_gif_at_full_size_is_smaller_as_webp_than_the_gif() -> None:
    """Frames may be lossless where that is smaller (libwebp's allow_mixed): a GIF's flat
    frames came out lossy at 1.13 MB for this 357 KB GIF; now about 0.3 MB."""
    data = read("edge/many_frames_380.gif")
    recipe = Recipe(variants=(VariantSpec("full", 1024, 1024, ("webp",)),))
    (webp,) = imaging.process(data, recipe).variants
    assert (webp.width, webp.height, webp.frames) == (472, 298, 380)
    assert len(webp.data) < len(data), len(webp.data)


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


# --------------------------------------------------------------------------- time limit / CPU bombs


def scan_bomb(side: int, extra_scans: int) -> bytes:
    """A small progressive JPEG of ``side`` x ``side`` px with ``extra_scans`` copies of its luma
    AC refinement scan: every scan is a pass over all blocks, so the file is a CPU bomb."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 130, 140)).save(buf, "JPEG", progressive=True, quality=90)
    segs = jpeg_segments(buf.getvalue())
    refine = [s for m, s in segs if m == 0xDA and s[4] == 1 and s[7] == 1 and s[9] == 0x10][-1]
    out = [b"\xff\xd8"]
    for marker, seg in segs:
        if marker == 0xD9:
            out.extend([refine] * extra_scans)
        out.append(seg)
    return b"".join(out)


def test_progressive_scan_bomb_stopped_in_verify() -> None:
    data = scan_bomb(4096, 3000)
    assert len(data) < 400_000
    start = time.perf_counter()
    with pytest.raises(LimitExceeded, match="scans"):
        imaging.process(data, limits=Limits(timeout_s=1.0))
    assert time.perf_counter() - start < 1.0 + 1.0  # limit + 1 s; in practice milliseconds
    with pytest.raises(LimitExceeded, match="scans"):
        imaging.verify(data)
    # the worker is healthy: the next image processes normally
    assert imaging.process(read("photos/samsung_j3_orient6.jpg"), THUMB_WEBP).variants[0].width == 150


def test_scan_limit_is_configurable() -> None:
    data = scan_bomb(256, 60)
    with pytest.raises(LimitExceeded, match="more than 50 scans"):
        imaging.verify(data, Limits(max_scans=50))
    assert imaging.verify(data, Limits(max_scans=200)).width == 256


def test_time_limit_stops_processing() -> None:
    data = read("photos/leica_t_16mp_orient8_gps.jpg")
    start = time.perf_counter()
    with pytest.raises(imaging.Timeout, match="time limit") as err:
        imaging.process(data, limits=Limits(timeout_s=0.05))
    assert time.perf_counter() - start < 0.05 + 1.0
    assert err.value.code == "timeout"
    # the core says when and where it stopped, as data as well as in the message
    assert err.value.elapsed_s is not None and 0.05 <= err.value.elapsed_s < 1.05
    assert err.value.step and f"during {err.value.step}: over the 50 ms time limit" in str(err.value)
    assert issubclass(imaging.Timeout, ImageError)
    # the same call without the low limit succeeds in the same thread
    assert imaging.process(data, THUMB_WEBP).variants[0].height == 200


def test_time_limit_checked_per_animation_frame() -> None:
    data = read("edge/many_frames_380.gif")
    start = time.perf_counter()
    with pytest.raises(imaging.Timeout):
        imaging.process(data, limits=Limits(timeout_s=0.001))
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- AVIF input


def test_avif_photo_probed_and_processed() -> None:
    data = read("photos/canon70d_20mp_gps.avif")
    info = imaging.verify(data)
    assert (info.format, info.mime) == ("avif", "image/avif")
    ref = decode(data).convert("RGB")  # Pillow 13 reads AVIF (libavif)
    assert (info.width, info.height) == ref.size
    result = imaging.process(data, ALL_FORMATS_SMALL)
    thumb = result.variants[0]
    assert max(thumb.width, thumb.height) == 200
    ref.thumbnail((200, 200))
    assert grey_diff(decode(thumb.data), ref) < 8
    for v in result.variants:
        assert MAGIC[v.format](v.data)
        assert_no_metadata(v.data)


def test_avif_output_of_our_core_reads_back() -> None:
    (avif,) = imaging.process(
        read("photos/blackbug_alpha.png"), Recipe(variants=(VariantSpec("t", 200, 200, ("avif",)),))
    ).variants
    (webp,) = imaging.process(avif.data, THUMB_WEBP).variants
    assert (webp.width, webp.height) == (200, 150)
    assert decode(webp.data).convert("RGBA").getchannel("A").getextrema()[0] == 0  # alpha survives AVIF input


def test_avif_by_libaom_keeps_colour_and_honours_per_variant_settings() -> None:
    """The AVIF encoder (libaom via libavif): sRGB colours survive (4:2:0, full range, BT.601),
    and a variant's own quality/speed replaces the recipe's; the same size at two settings
    is encoded twice (not shared), and the lower quality is smaller."""
    data = read("photos/blackberry_z10_orient6_16x9.jpg")
    recipe = Recipe(variants=(
        VariantSpec("lo", 400, 400, ("avif",), avif_quality=20, avif_speed=9),
        VariantSpec("hi", 400, 400, ("avif",), avif_quality=80),
        VariantSpec("ref", 400, 400, ("webp",)),
    ), webp_quality=100)
    lo, hi, ref = imaging.process(data, recipe).variants
    assert (lo.width, lo.height) == (hi.width, hi.height) == (ref.width, ref.height) == (225, 400)
    assert lo.data[4:12] == hi.data[4:12] == b"ftypavif"
    assert len(lo.data) < 0.6 * len(hi.data), (len(lo.data), len(hi.data))
    want = decode(ref.data).convert("RGB")
    for v, max_diff in ((hi, 3.0), (lo, 8.0)):
        got = decode(v.data).convert("RGB")
        assert got.size == want.size
        means = [abs(a - b) for a, b in zip(ImageStat.Stat(got).mean, ImageStat.Stat(want).mean, strict=True)]
        assert max(means) < 2.0, (v.name, means)  # no colour cast (wrong matrix or range shifts these)
        assert grey_diff(got, want, got.size) < max_diff, v.name
    with pytest.raises(ValueError, match="avif_speed"):
        VariantSpec("x", 10, 10, ("avif",), avif_speed=11)


def test_avif_without_rect_partitions_is_its_own_encode_and_keeps_the_picture() -> None:
    """``avif_rect_partitions=False`` (libaom ``enable-rect-partitions=0``, the default medium
    variant's setting) reaches the encoder: the same box with it on and off is encoded twice, into
    different bytes of about the same size, and as close to the source as the other."""
    data = read("photos/blackberry_z10_orient6_16x9.jpg")
    recipe = Recipe(variants=(
        VariantSpec("on", 400, 400, ("avif",), avif_speed=5),
        VariantSpec("off", 400, 400, ("avif",), avif_speed=5, avif_rect_partitions=False),
        VariantSpec("ref", 400, 400, ("webp",)),
    ), webp_quality=100)
    on, off, ref = imaging.process(data, recipe).variants
    assert (on.width, on.height) == (off.width, off.height) == (225, 400)
    assert on.data != off.data
    assert 0.8 < len(off.data) / len(on.data) < 1.25, (len(on.data), len(off.data))
    want = decode(ref.data).convert("RGB")
    d_on, d_off = (grey_diff(decode(v.data).convert("RGB"), want, want.size) for v in (on, off))
    assert d_off < 5.0 and d_off < 1.1 * d_on, (d_on, d_off)
    medium = next(v for v in imaging.DEFAULT_RECIPE.variants if v.name == "medium")
    assert (medium.avif_speed, medium.avif_rect_partitions) == (5, False)


def test_the_managers_recipe_version_is_the_cores() -> None:
    """New uploads are recorded with the recipe version the processing nodes encode (the manager
    does not load the image core, so it keeps its own default: this keeps the two equal)."""
    from nodes.manager.config import ManagerSettings

    assert ManagerSettings.model_fields["recipe_version"].default == imaging.DEFAULT_RECIPE.version == 4


@pytest.mark.parametrize("bad", [
    {"avif_quality": float("nan")}, {"avif_quality": 500}, {"avif_speed": 11}, {"avif_speed": -1},
    {"avif_speed": 5.5}, {"webp_method": 7}, {"webp_quality": -1}, {"jpeg_quality": 0}, {"background": (0, 0, 256)},
])
def test_recipe_settings_out_of_range_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Recipe(**bad)  # type: ignore[arg-type]


def test_truncated_avif_is_corrupt() -> None:
    data = read("photos/canon70d_20mp_gps.avif")
    with pytest.raises(CorruptImage):
        imaging.process(data[: len(data) // 2], THUMB_WEBP)


@pytest.mark.parametrize("cut", [8, 9, 10, 11, 12, 40])
def test_an_avif_cut_in_its_first_bytes_is_truncated(cut: int) -> None:
    """Cut at 8-11 bytes (inside its brand) it was an "unsupported format: ISO media file"."""
    data = read("photos/canon70d_20mp_gps.avif")
    with pytest.raises(CorruptImage, match=r"^truncated image: "):
        imaging.probe(data[:cut])


def _boxes(d: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """``type -> (offset, size)`` of the ISO-BMFF boxes in ``d[start:end]`` (32-bit sizes only)."""
    out, pos = {}, start
    while pos + 8 <= end:
        size = int.from_bytes(d[pos:pos + 4], "big")
        out[d[pos + 4:pos + 8]] = (pos, size)
        pos += size
    return out


def _mdat_first(d: bytes) -> bytes:
    """The corpus AVIF as ftyp, mdat, meta (ISO-BMFF allows either order), its ``iloc`` offsets moved."""
    top = _boxes(d, 0, len(d))
    (ftyp, _), (meta, meta_size), (mdat, _) = top[b"ftyp"], top[b"meta"], top[b"mdat"]
    assert ftyp < meta < mdat and mdat + top[b"mdat"][1] == len(d)
    iloc, _ = _boxes(d, meta + 12, meta + meta_size)[b"iloc"]
    body = bytearray(d[meta:meta + meta_size])
    at = iloc - meta + 8
    assert body[at] == 0 and body[at + 4:at + 6] == b"\x44\x40"  # version 0; 4-byte offsets, lengths, bases
    count, at = int.from_bytes(body[at + 6:at + 8], "big"), at + 8
    for _ in range(count):  # id, data_reference_index, base_offset, extent_count, then offset and length each
        base = int.from_bytes(body[at + 4:at + 8], "big")
        body[at + 4:at + 8] = (base - meta_size).to_bytes(4, "big")
        at += 10 + 8 * int.from_bytes(body[at + 8:at + 10], "big")
    return d[:meta] + d[mdat:] + bytes(body)


@pytest.mark.parametrize("layout", ["trailing-text", "trailing-free-box", "mdat-first"])
def test_valid_avif_layouts_pass_verify(layout: str) -> None:
    """Bytes appended after the last box (a tester's "hello world"), and an ``mdat`` before the ``meta``:
    both valid files libavif decodes. The first was refused as "truncated" (the junk read as a box
    header), the second as "data ends before the image size" (ispe was looked for in the first 64 KiB)."""
    data = read("photos/canon70d_20mp_gps.avif")
    edited = {"trailing-text": data + b"hello world\n", "trailing-free-box": data + b"\0\0\0\x10free" + bytes(8),
              "mdat-first": _mdat_first(data)}[layout]
    info = imaging.verify(edited)
    assert (info.format, info.width, info.height) == ("avif", 5472, 3648)
    with Image.open(io.BytesIO(edited)) as im:  # the reference decoder reads it too
        assert im.size == (5472, 3648)
    assert imaging.verify(imaging.strip_metadata(edited)).width == 5472  # the clean original of it
    if layout == "mdat-first":
        with pytest.raises(CorruptImage, match="truncated image: the AVIF file ends 10 bytes before its 'meta' box"):
            imaging.verify(edited[:-10])


def test_only_an_empty_file_is_empty_file() -> None:
    """An AVIF whose image item is empty ("Missing or empty image item") is a corrupt image, not the
    ``empty-file`` of a 0-byte upload (every message with "empty" in it was mapped to that code)."""
    with pytest.raises(CorruptImage) as empty:
        imaging.verify(b"")
    assert errors.from_image_error(empty.value).code == "empty-file"
    item = CorruptImage("corrupt AVIF (container): Missing or empty image item")
    assert errors.from_image_error(item).code == "corrupt-image"


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_avif_is_refused_by_verify(keep: float) -> None:
    """The upload check (verify: the whole file, no decode) sees a cut-off AVIF: libavif's parse
    alone passed it (it reads only the meta box), and the image failed later, at the decode."""
    data = read("photos/canon70d_20mp_gps.avif")
    assert imaging.verify(data).width == 5472
    cut = data[: int(len(data) * keep)]
    with pytest.raises(CorruptImage, match=r"truncated image: the AVIF file ends \d+ bytes before "):
        imaging.verify(cut)
    assert imaging.probe(cut).format == "avif"  # a prefix still reads as AVIF: uploads stream in


# --------------------------------------------------------------------------- EXIF as data, stripped originals


def test_exif_fields_and_gps_returned_as_data() -> None:
    data = read("photos/nikon_d90_12mp_gps_64kb_exif.jpg")
    exif, gps = imaging.read_exif(data)
    src = Image.open(io.BytesIO(data)).getexif()
    assert exif["make"] == src[0x010F].strip("\0 ")
    assert exif["model"] == src[0x0110].strip("\0 ")
    sub = src.get_ifd(0x8769)
    assert exif["taken_at"] == sub[0x9003]
    assert exif["iso"] == str(sub[0x8827])
    assert {"exposure_time", "f_number", "focal_length"} <= exif.keys()
    assert exif["exposure_time"] == "1/10 s"
    assert imaging.read_exif(read("photos/nokia83_wide_9mp_gps.jpg"))[0]["exposure_time"] == "1/1848 s"
    assert gps is None  # this Nikon has a GPS IFD with only the version tag
    result = imaging.process(data, THUMB_WEBP)
    assert result.exif == exif and result.gps is None
    data = read("photos/iphone5_orient3_gps.jpg")
    exif, gps = imaging.read_exif(data)
    g = Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)
    assert gps is not None
    lat = sum(float(v) / 60**i for i, v in enumerate(g[2]))
    lon = sum(float(v) / 60**i for i, v in enumerate(g[4]))
    assert (g[1], g[3]) == ("N", "W")
    assert abs(gps[0] - lat) < 1e-6 and abs(gps[1] + lon) < 1e-6  # west is negative
    assert not any("gps" in k for k in exif)
    result = imaging.process(data, THUMB_WEBP)
    assert result.exif == exif and result.gps == gps


def test_no_exif_gives_empty_data() -> None:
    assert imaging.read_exif(read("photos/painting_rgb.png")) == ({}, None)
    result = imaging.process(read("edge/palette_trns.png"), THUMB_WEBP)
    assert (result.exif, result.gps) == ({}, None)


STRIP = [
    "photos/iphone5_orient3_gps.jpg",
    "photos/nokia83_wide_9mp_gps.jpg",
    "photos/nikon_d90_12mp_gps_64kb_exif.jpg",
    "photos/samsung_j3_orient6.jpg",
    "edge/progressive_icc_exif.jpg",
    "edge/large_exif_43kb.jpg",
    "edge/cmyk_adobe_app14.jpg",
    "edge/png_exif_orient6.png",
    "photos/htc_desire_gps_icc.webp",
    "edge/animated.webp",
    "photos/painting_rgb.png",
]


@pytest.mark.parametrize("name", STRIP)
def test_strip_metadata_is_lossless(name: str) -> None:
    data = read(name)
    stripped = imaging.strip_metadata(data)
    assert len(stripped) <= len(data) + 64
    src, out = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(stripped))
    assert out.format == src.format
    for i in range(getattr(src, "n_frames", 1)):
        src.seek(i)
        out.seek(i)
        assert out.tobytes() == src.tobytes(), i  # identical pixels
    exif = out.getexif()
    orientation = src.getexif().get(0x0112, 1)
    assert dict(exif) == ({0x0112: orientation} if orientation != 1 else {})
    for marker in (b"GPS", b"<x:xmpmeta", b"Photoshop 3.0", b"XMP "):
        assert marker not in stripped
    assert out.info.get("icc_profile") == src.info.get("icc_profile")  # colour kept
    assert imaging.verify(stripped).orientation == imaging.verify(data).orientation
    assert imaging.read_exif(stripped)[1] is None


def test_strip_metadata_rejects_non_images() -> None:
    with pytest.raises(UnsupportedFormat):
        imaging.strip_metadata(read("edge/svg_with_script.svg"))
    with pytest.raises(CorruptImage):
        imaging.strip_metadata(b"")


# --------------------------------------------------------------------------- CASES.md rows, one named test each


def test_B01_orient6_thumbnails_are_upright() -> None:
    cases = (("photos/samsung_j3_orient6.jpg", (150, 200)), ("photos/blackberry_z10_orient6_16x9.jpg", (113, 200)))
    for name, size in cases:
        data = read(name)
        (thumb,) = imaging.process(data, THUMB_WEBP).variants
        assert abs(thumb.width - size[0]) <= 1 and thumb.height == size[1]
        upright = ImageOps.exif_transpose(decode(data)).convert("RGB")
        on_side = decode(data).convert("RGB").rotate(90, expand=True)
        out = decode(thumb.data)
        assert grey_diff(out, upright) < 12
        assert grey_diff(out, upright) * 2 < grey_diff(out, on_side)


def test_B03_orientation_applied_before_encoding() -> None:
    data = read("photos/iphone5_orient3_gps.jpg")
    result = imaging.process(data, THUMB_WEBP)
    assert (result.width, result.height) == (3264, 2448)
    stored = decode(data).convert("RGB")
    out = decode(result.variants[0].data)
    assert grey_diff(out, stored.rotate(180)) * 2 < grey_diff(out, stored)
    leica = imaging.process(read("photos/leica_t_16mp_orient8_gps.jpg"), THUMB_WEBP)
    assert (leica.width, leica.height) == (3264, 4928)
    assert (leica.variants[0].width, leica.variants[0].height) == (132, 200)


def test_B04_cmyk_app14_not_a_negative() -> None:
    recipe = Recipe(variants=(VariantSpec("full", 4096, 4096, ("jpeg",)),), jpeg_quality=95)
    (out,) = imaging.process(read("edge/cmyk_adobe_app14.jpg"), recipe).variants
    ref = decode(read("edge/cmyk_adobe_app14.reference_rgb.jpg")).convert("RGB")
    got = decode(out.data).convert("RGB")
    assert got.size == ref.size
    diff = ImageStat.Stat(ImageChops.difference(got, ref)).mean
    assert max(diff) < 10  # single digits out of 255
    negative = ImageStat.Stat(ImageChops.difference(ImageChops.invert(got), ref)).mean
    assert min(negative) > 40


def test_B08_wide_gamut_converted_to_srgb() -> None:
    recipe = Recipe(variants=(VariantSpec("full", 4096, 4096, ("jpeg",)),), jpeg_quality=95)
    for name in ("edge/icc_rgb_to_gbr.jpg", "edge/icc_display_p3.jpg"):
        data = read(name)
        (out,) = imaging.process(data, recipe).variants
        src = decode(data)
        profile = ImageCms.ImageCmsProfile(io.BytesIO(src.info["icc_profile"]))
        ref = ImageCms.profileToProfile(src.convert("RGB"), profile, ImageCms.createProfile("sRGB"))
        assert ref is not None
        got = decode(out.data).convert("RGB")
        assert max(ImageStat.Stat(ImageChops.difference(got, ref)).mean) < 4
        if name.endswith("gbr.jpg"):  # ignoring the profile puts the labels on the wrong colours
            assert max(ImageStat.Stat(ImageChops.difference(got, src.convert("RGB"))).mean) > 20
        else:  # P3 keeps its saturation
            sat = ImageStat.Stat(got.convert("HSV").getchannel("S")).mean[0]
            ref_sat = ImageStat.Stat(ref.convert("HSV").getchannel("S")).mean[0]
            assert sat > 0.95 * ref_sat


def test_B09_animations_keep_every_frame_and_timing() -> None:
    (webp,) = imaging.process(read("photos/rotating_squares_30f.gif"), THUMB_WEBP).variants
    assert frames_of(webp.data) == (30, [30] * 30, 0)
    (webp,) = imaging.process(read("edge/animated.webp"), THUMB_WEBP).variants
    assert webp.frames == 6 and frames_of(webp.data)[0] == 6


def test_B11_transparency_kept_or_flattened_on_white() -> None:
    recipe = Recipe(variants=(VariantSpec("thumb", 200, 200, ("webp", "avif", "jpeg")),))
    webp, avif, jpeg = imaging.process(read("photos/blackbug_alpha.png"), recipe).variants
    assert (webp.width, webp.height) == (200, 150)
    for v in (webp, avif):
        assert decode(v.data).convert("RGBA").getchannel("A").getextrema()[0] == 0
    flat = decode(jpeg.data).convert("L")
    assert ImageStat.Stat(flat).mean[0] > 128 and flat.getextrema()[0] < 100  # dark writing on white
    (gray,) = imaging.process(read("edge/gray_alpha_8bit.png"), THUMB_WEBP).variants
    assert decode(gray.data).convert("RGBA").getchannel("A").getextrema()[0] == 0


def test_B12_16bit_png_scaled_not_clipped() -> None:
    recipe = Recipe(variants=(VariantSpec("full", 4096, 4096, ("webp",)),), webp_quality=100)
    data = read("edge/png16_gray_interlaced.png")
    (out,) = imaging.process(data, recipe).variants
    got = decode(out.data).convert("L")
    src = decode(data)
    ref = Image.eval(src, lambda v: v / 257).convert("L") if src.mode.startswith("I") else src.convert("L")
    assert grey_diff(got, ref, src.size) < 2
    hist = got.histogram()
    assert hist[255] < 0.5 * sum(hist)
    (rgba,) = imaging.process(read("edge/png16_rgba.png"), THUMB_WEBP).variants
    src_a = decode(read("edge/png16_rgba.png")).convert("RGBA").getchannel("A").getextrema()
    assert decode(rgba.data).convert("RGBA").getchannel("A").getextrema()[0] <= src_a[0] + 8


def test_B13_malformed_gif_fails_fast_and_worker_stays_healthy() -> None:
    data = read("edge/gif_stall_issue101.gif")
    start = time.perf_counter()
    with contextlib.suppress(ImageError):
        imaging.process(data, THUMB_WEBP)
    assert time.perf_counter() - start < 1.0
    assert imaging.process(read("photos/rotating_squares_30f.gif"), THUMB_WEBP).variants[0].frames == 30


def test_B14_bombs_rejected_in_milliseconds_with_flat_memory() -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in ("edge/bomb_100000x100000.png", "edge/bomb_65535x66601.gif"):
        data = read(name)
        for fn in (imaging.probe, imaging.verify, imaging.process):
            start = time.perf_counter()
            with pytest.raises(LimitExceeded, match="exceeds the pixel limit"):
                fn(data)
            assert time.perf_counter() - start < 0.05, (name, fn)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def test_B16_truncated_jpeg_rejected_but_every_photo_accepted() -> None:
    with pytest.raises(CorruptImage, match="truncated"):
        imaging.process(read("edge/truncated.jpg"), THUMB_WEBP)
    for path in sorted((CORPUS / "photos").iterdir()):
        result = imaging.process(path.read_bytes(), THUMB_WEBP)
        thumb = result.variants[0]
        assert max(thumb.width, thumb.height) == min(200, max(result.width, result.height)), path.name


def test_B18_tall_and_wide_outputs_fit_webp_limit() -> None:
    recipe = Recipe(variants=(VariantSpec("thumb", 200, 200, ("webp",)), VariantSpec("full", 65535, 65535, ("webp",))))
    thumb, full = imaging.process(read("edge/panorama_20000x300.jpg"), recipe).variants
    assert (thumb.width, thumb.height) == (200, 3)
    assert (full.width, full.height) == (16383, 246)
    assert decode(full.data).size == (16383, 246)


def test_B19_outputs_carry_no_exif_although_sources_have_gps() -> None:
    for name in ("photos/nokia83_wide_9mp_gps.jpg", "photos/htc_desire_gps_icc.webp"):
        data = read(name)
        result = imaging.process(data, ALL_FORMATS_SMALL)
        assert result.gps is not None, name  # the source has GPS ...
        for v in result.variants:  # ... and no output has any EXIF tag
            assert len(Image.open(io.BytesIO(v.data)).getexif()) == 0
            assert_no_metadata(v.data)


def test_B20_webp_uploads_accepted() -> None:
    result = imaging.process(read("photos/htc_desire_gps_icc.webp"), THUMB_WEBP)
    assert (result.info.format, result.width, result.height) == ("webp", 776, 909)
    assert (result.variants[0].width, result.variants[0].height) == (171, 200)
    info = imaging.verify(read("edge/looks_like_svg.webp"))
    assert (info.format, info.width, info.height) == ("webp", 256, 256)
    assert imaging.process(read("edge/looks_like_svg.webp"), THUMB_WEBP).variants[0].width == 200
