"""JPEG shrink-on-load: a still JPEG whose largest variant is at most half its size is decoded
with DCT scaling (1/2, 1/4) by the Rust core (steps/decode.rs, docs/imaging.md).

What is checked, on corpus photos and on generated large JPEGs:

* every output keeps exactly the size a full decode gives, and ``width``/``height`` stay the
  full upright size;
* the pixels stay close to a full-decode reference: Pillow decodes the whole file (no
  ``draft``), applies the EXIF orientation and resizes with Lanczos to the output's size; the
  outputs are JPEG q100 so the encoder adds little. Threshold: PSNR >= 36 dB on RGB. Measured
  here: 37.2-52 dB with shrink-on-load against 47-53 dB for the same outputs from a full
  decode. The lowest was a 2400x1800 photo into a 200 px box at 1/8 (then only 1.5x of Lanczos),
  which is no longer used (it also shifted colours: see the mean-colour test);
  jpeg-decoder's reduced IDCTs and its chroma upsampling at the reduced
  size are coarser than libjpeg's, and a small final resize leaves that visible to PSNR. A
  wrong quarter turn is under 20 dB (checked below);
* which files take the path: a recipe with an extra full-size variant that has no formats
  forces the full decode (the largest target is then the source itself) and changes nothing
  else, so its bytes equal the plain recipe's exactly when the plain recipe decoded at full
  size too;
* the full-decode fallback (CMYK, an Adobe RGB transform, broken data) gives the full
  decode's result: identical bytes, colours and errors;
* the speed-up on a 48 MP photo (generous bound; the measured figures are in
  docs/benchmarks.md).
"""

from __future__ import annotations

import io
import math
import random
import time
from functools import cache
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat

from pixelfox import imaging
from pixelfox.imaging import CorruptImage, ImageError, Recipe, VariantSpec
from tests.jpegkit import jpeg_segments

CORPUS = Path(__file__).parents[2].parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")

MIN_PSNR_DB = 36.0
BOXES = tuple((v.name, v.width, v.height) for v in imaging.DEFAULT_RECIPE.variants)  # 200, 1024, 2048 px


@cache
def read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def q100(boxes: tuple[tuple[str, int, int], ...] = BOXES, full_decode: bool = False) -> Recipe:
    """JPEG q100 outputs for ``boxes``. With ``full_decode`` one more variant without formats
    whose 16383 px box (WebP's limit, over every source here) fits the whole source: it adds
    no output, forces the full decode and leaves the other renditions' chain as it was."""
    variants = [VariantSpec(name, w, h, ("jpeg",)) for name, w, h in boxes]
    if full_decode:
        variants.append(VariantSpec("full", 16383, 16383, ()))
    return Recipe(variants=tuple(variants), jpeg_quality=100)


def outputs(data: bytes, recipe: Recipe) -> list[bytes]:
    return [v.data for v in imaging.process(data, recipe).variants]


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def upright_reference(data: bytes) -> Image.Image:
    """The whole file decoded by Pillow (libjpeg, no draft), EXIF orientation applied, RGB."""
    return ImageOps.exif_transpose(decode(data)).convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB of two RGB images of the same size (mean squared error over all channels)."""
    assert a.size == b.size
    rms = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).rms
    mse = sum(r * r for r in rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def assert_close_to_full_decode(data: bytes, recipe: Recipe, reference: Image.Image | None = None) -> list[float]:
    ref = upright_reference(data) if reference is None else reference
    scores = []
    for v in imaging.process(data, recipe).variants:
        out = decode(v.data)
        assert out.size == (v.width, v.height)
        scores.append(psnr(out, ref.resize(out.size, Image.Resampling.LANCZOS)))
    assert min(scores) >= MIN_PSNR_DB, scores
    print(f"PSNR dB: {[round(x, 2) for x in scores]}")
    return scores


# --------------------------------------------------------------------------- corpus photos

# name -> upright full size, then thumb, medium and large as the full decode gives them
# (default recipe)
CORPUS_JPEGS = {
    "photos/nikon_d90_12mp_gps_64kb_exif.jpg": ((4288, 2848), (200, 133), (1024, 680), (2048, 1360)),
    "photos/leica_t_16mp_orient8_gps.jpg": ((3264, 4928), (132, 200), (678, 1024), (1356, 2048)),
    "photos/nokia83_wide_9mp_gps.jpg": ((4608, 1976), (200, 86), (1024, 439), (2048, 878)),
    "photos/samsung_j3_orient6.jpg": ((1932, 2576), (150, 200), (768, 1024), (1536, 2048)),
}
# at the default 2048 px box: 1/2 for the first three, a full decode for the Samsung
# (upright 1932x2576 into 2048 is 1536x2048, over half of 2576)
SHRUNK = {
    "photos/nikon_d90_12mp_gps_64kb_exif.jpg": True,
    "photos/leica_t_16mp_orient8_gps.jpg": True,
    "photos/nokia83_wide_9mp_gps.jpg": True,
    "photos/samsung_j3_orient6.jpg": False,
}


@pytest.mark.parametrize("name", list(CORPUS_JPEGS))
def test_corpus_photo_keeps_every_output_size(name: str) -> None:
    upright, *boxes = CORPUS_JPEGS[name]
    sizes = dict(zip(("thumb", "medium", "large"), boxes, strict=True))
    result = imaging.process(read(name))
    assert (result.width, result.height) == upright
    assert len(result.variants) == 7  # thumb webp+avif, medium webp+avif+jpeg, large webp+avif
    for v in result.variants:
        assert (v.width, v.height) == sizes[v.name], (v.name, v.format)
        assert decode(v.data).size == sizes[v.name]


@pytest.mark.parametrize("name", list(CORPUS_JPEGS))
def test_corpus_photo_takes_shrink_on_load_exactly_when_half_or_less(name: str) -> None:
    data = read(name)
    plain = outputs(data, q100())
    full = outputs(data, q100(full_decode=True))
    assert (plain != full) is SHRUNK[name]


@pytest.mark.parametrize("name", list(CORPUS_JPEGS))
def test_corpus_photo_pixels_close_to_full_decode(name: str) -> None:
    assert_close_to_full_decode(read(name), q100())


def test_orientation_8_photo_is_upright() -> None:
    """Leica T, orientation 8 (stored 4928x3264, shown 3264x4928): the 1/2-scale frame is
    turned like the full one; the other quarter turn (orientation 6's) is far off."""
    data = read("photos/leica_t_16mp_orient8_gps.jpg")
    recipe = q100((("thumb", 200, 200),))
    (thumb,) = imaging.process(data, recipe).variants
    out = decode(thumb.data)
    assert out.size == (132, 200)
    stored = decode(data).convert("RGB")
    right = stored.transpose(Image.Transpose.ROTATE_90).resize(out.size, Image.Resampling.LANCZOS)
    wrong = stored.transpose(Image.Transpose.ROTATE_270).resize(out.size, Image.Resampling.LANCZOS)
    assert psnr(out, right) >= MIN_PSNR_DB
    assert psnr(out, wrong) < 20
    assert outputs(data, recipe) != outputs(data, q100((("thumb", 200, 200),), full_decode=True))


# --------------------------------------------------------------------------- ICC, fallbacks, errors


@pytest.mark.parametrize("name", ["edge/icc_display_p3.jpg", "edge/icc_rgb_to_gbr.jpg"])
def test_icc_profile_read_on_the_shrink_path(name: str) -> None:
    """1000 px files into a 200 px box (1/4): the profile still reaches the sRGB conversion."""
    data = read(name)
    recipe = q100((("thumb", 200, 200),))
    src = decode(data)
    assert outputs(data, recipe) != outputs(data, q100((("thumb", 200, 200),), full_decode=True))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(src.info["icc_profile"]))
    ref = ImageCms.profileToProfile(src.convert("RGB"), profile, ImageCms.createProfile("sRGB"))
    assert ref is not None
    (out,) = imaging.process(data, recipe).variants
    img = decode(out.data).convert("RGB")
    diff = ImageStat.Stat(ImageChops.difference(img, ref.resize(img.size, Image.Resampling.LANCZOS))).mean
    assert max(diff) < 4


def test_cmyk_falls_back_to_the_full_decode() -> None:
    """100x100 CMYK (Adobe APP14) into a 40 px box would qualify for 1/2 but is left to the
    full decode: the same bytes as a forced full decode, and not a negative."""
    data = read("edge/cmyk_adobe_app14.jpg")
    recipe = q100((("small", 40, 40),))
    plain = outputs(data, recipe)
    assert plain == outputs(data, q100((("small", 40, 40),), full_decode=True))
    ref = decode(read("edge/cmyk_adobe_app14.reference_rgb.jpg")).convert("RGB")
    ref = ref.resize((40, 40), Image.Resampling.LANCZOS)
    diff = ImageStat.Stat(ImageChops.difference(decode(plain[0]).convert("RGB"), ref)).mean
    assert max(diff) < 10


def with_adobe_app14(jpeg: bytes, transform: int) -> bytes:
    """``jpeg`` with an Adobe APP14 segment (colour transform ``transform``) after SOI."""
    segment = b"\xff\xee\x00\x0e" + b"Adobe" + bytes([0, 100, 0, 0, 0, 0, transform])
    return jpeg[:2] + segment + jpeg[2:]


@pytest.mark.parametrize("transform", [0, 1])
def test_adobe_colour_transform_decides_the_path(transform: int) -> None:
    """Adobe transform 0 on 3 components is RGB to the full decode (zune-jpeg): left to it,
    same bytes. Transform 1 (YCbCr) takes the shrink path."""
    img = Image.open(CORPUS / "photos/nikon_d90_12mp_gps_64kb_exif.jpg").convert("RGB").resize((800, 600))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = with_adobe_app14(buf.getvalue(), transform)
    recipe = q100((("thumb", 200, 200),))
    assert (outputs(data, recipe) != outputs(data, q100((("thumb", 200, 200),), full_decode=True))) is (transform == 1)


def test_broken_jpeg_on_the_shrink_path_is_corrupt_like_the_full_decode() -> None:
    """No Huffman tables: jpeg-decoder fails, the full decode reports it (CorruptImage, with
    the full decode's message), not a panic and not a grey picture."""
    buf = io.BytesIO()
    Image.new("RGB", (1600, 1200), (90, 140, 200)).save(buf, "JPEG", quality=90)
    data = b"\xff\xd8" + b"".join(seg for marker, seg in jpeg_segments(buf.getvalue()) if marker != 0xC4)
    with pytest.raises(CorruptImage) as shrunk:
        imaging.process(data, q100((("thumb", 200, 200),)))
    with pytest.raises(CorruptImage) as full:
        imaging.process(data, q100((("thumb", 200, 200),), full_decode=True))
    assert str(shrunk.value) == str(full.value)
    assert "huffman" in str(shrunk.value).lower()


def test_mutated_jpegs_on_the_shrink_path_never_crash() -> None:
    """Random bytes of the scan data of an 800x600 photo (64 px box: 1/4) give an output or
    an ImageError, never another exception."""
    img = Image.open(CORPUS / "photos/nikon_d90_12mp_gps_64kb_exif.jpg").convert("RGB").resize((800, 600))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, progressive=True)
    original = buf.getvalue()
    recipe = Recipe(variants=(VariantSpec("t", 64, 64, ("webp",)),))
    rng = random.Random(800600)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(60):
        data = bytearray(original)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(700, len(data) - 2)] = rng.randrange(256)
        try:
            imaging.process(bytes(data), recipe)
            outcomes["ok"] += 1
        except ImageError:
            outcomes["error"] += 1
    assert outcomes["ok"] + outcomes["error"] == 60


# --------------------------------------------------------------------------- generated photos


@cache
def generated(width: int, height: int, mode: str = "RGB", progressive: bool = False) -> bytes:
    """A ``width`` x ``height`` JPEG (q90) of four corpus photos side by side, so it has real
    photographic detail."""
    names = ["nikon_d90_12mp_gps_64kb_exif.jpg", "nokia83_wide_9mp_gps.jpg", "iphone5_orient3_gps.jpg",
             "leica_t_16mp_orient8_gps.jpg"]  # fmt: skip
    canvas = Image.new("RGB", (width, height))
    tw, th = width // 2, height // 2
    for i, name in enumerate(names):
        with Image.open(CORPUS / "photos" / name) as src:
            src.draft("RGB", (tw, th))  # only to make the test fast; the reference is this file
            tile = ImageOps.fit(src.convert("RGB"), (tw, th), Image.Resampling.BILINEAR)
        canvas.paste(tile, ((i % 2) * tw, (i // 2) * th))
    buf = io.BytesIO()
    canvas.convert(mode).save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


BIG = (8000, 6000)


def test_generated_48mp_keeps_sizes_with_the_default_recipe() -> None:
    result = imaging.process(generated(*BIG))
    assert (result.width, result.height) == BIG
    sizes = {"thumb": (200, 150), "medium": (1024, 768), "large": (2048, 1536)}
    for v in result.variants:
        assert (v.width, v.height) == sizes[v.name]
        assert decode(v.data).size == sizes[v.name]


@pytest.mark.parametrize(
    "boxes",
    [BOXES, (("medium", 1024, 1024),), (("thumb", 200, 200),)],
    ids=["default-boxes-1/2", "1024-box-1/4", "200-box-1/4"],
)
def test_generated_48mp_close_to_full_decode(boxes: tuple[tuple[str, int, int], ...]) -> None:
    data = generated(*BIG)
    assert outputs(data, q100(boxes)) != outputs(data, q100(boxes, full_decode=True))
    assert_close_to_full_decode(data, q100(boxes))


@pytest.mark.parametrize(("mode", "progressive"), [("L", False), ("RGB", True)], ids=["grey", "progressive"])
def test_generated_grey_and_progressive_take_the_path(mode: str, progressive: bool) -> None:
    data = generated(2400, 1800, mode, progressive)
    recipe = q100((("thumb", 200, 200),))
    assert outputs(data, recipe) != outputs(data, q100((("thumb", 200, 200),), full_decode=True))
    (thumb,) = imaging.process(data, recipe).variants
    assert (thumb.width, thumb.height) == (200, 150)
    assert_close_to_full_decode(data, recipe)


def test_generated_48mp_thumbnail_is_faster_than_a_full_decode() -> None:
    """A 200 px box from 8000x6000: 1/4 scale against the forced full decode of the same file
    (best of 3, interleaved). Bound: 1.5x (measured figures: docs/benchmarks.md)."""
    data = generated(*BIG)
    shrunk, full = q100((("thumb", 200, 200),)), q100((("thumb", 200, 200),), full_decode=True)
    times: dict[str, list[float]] = {"shrunk": [], "full": []}
    for _ in range(3):
        for key, recipe in (("shrunk", shrunk), ("full", full)):
            start = time.perf_counter()
            imaging.process(data, recipe)
            times[key].append(time.perf_counter() - start)
    assert min(times["shrunk"]) * 1.5 < min(times["full"]), times


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_shrink_on_load_keeps_the_mean_colour(mode: str) -> None:
    """The reduced decode must not shift colours: per channel, the mean of a 200 px thumbnail decoded
    at 1/4 is within 0.3 levels of the same thumbnail from a full decode. (jpeg-decoder's 1/8 IDCT
    truncates and measured -0.5 on grey and -1.0 / -0.1 / -1.5 on R/G/B, so 1/8 is not used.)"""
    data = generated(2400, 1800, mode)
    boxes = (("thumb", 200, 200),)
    (shrunk,) = [decode(o).convert("RGB") for o in outputs(data, q100(boxes))]
    (full,) = [decode(o).convert("RGB") for o in outputs(data, q100(boxes, full_decode=True))]
    assert shrunk.size == full.size == (200, 150)
    assert shrunk.tobytes() != full.tobytes()  # the shrink path was taken
    shift = [a - b for a, b in zip(ImageStat.Stat(shrunk).mean, ImageStat.Stat(full).mean, strict=True)]
    assert all(abs(x) < 0.3 for x in shift), shift


def cjpeg(source: Image.Image, *args: str) -> bytes:
    """``source`` encoded by libjpeg-turbo's ``cjpeg`` (Debian libjpeg-turbo-progs, installed by
    scripts/install) with ``args``: sampling layouts neither Pillow nor the Rust encoders write."""
    import subprocess

    ppm = io.BytesIO()
    source.save(ppm, "PPM")
    return subprocess.run(["cjpeg", "-quality", "92", *args], input=ppm.getvalue(), capture_output=True,
                          check=True).stdout


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("sampling", ["2x2,1x1,1x1", "1x1,2x2,2x2", "1x1,2x1,2x1", "2x1,1x2,1x2", "1x1,1x1,2x2",
                                      "3x1,1x1,1x1", "3x2,1x1,1x1"])
def test_every_legal_sampling_layout_decodes_with_its_colours(sampling: str, progressive: bool) -> None:
    """ITU T.81 allows any sampling factors 1-4. zune-jpeg 0.4 decodes chroma sampled more finely
    than luma with colours off by about 50 levels, and refuses a horizontal luma factor of 3
    ("not a power of two"), which made such a file corrupt or not depending on the recipe's
    sizes; the core takes both through jpeg-decoder. Against
    libjpeg-turbo's decode (Pillow) of the same file, at full size (no resize, no shrink-on-load):
    each channel's mean within 1 level and the mean absolute difference under 3 levels (measured:
    at most 0.5 and 2; the usual 4:2:0 layout is the control)."""
    source = decode(generated(800, 600)).convert("RGB")
    data = cjpeg(source, "-sample", sampling, *(["-progressive"] if progressive else []))
    (out,) = imaging.process(data, q100((("full", 800, 800),))).variants
    ours, ref = decode(out.data).convert("RGB"), decode(data).convert("RGB")
    assert ours.size == ref.size == (800, 600)
    shift = [a - b for a, b in zip(ImageStat.Stat(ours).mean, ImageStat.Stat(ref).mean, strict=True)]
    diff = ImageStat.Stat(ImageChops.difference(ours, ref)).mean
    assert all(abs(x) < 1.0 for x in shift) and max(diff) < 3.0, (shift, diff)
