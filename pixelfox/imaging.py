"""Typed public face of the Rust image core (``pixelfox._core``).

Three entry points, all CPU work done in Rust with the GIL released:

* :func:`probe`   - header only (works on a prefix of the file), no pixel decode.
* :func:`verify`  - the whole file: probe plus a structural completeness check.
* :func:`process` - verify, decode once, auto-orient, resize, convert to sRGB,
  encode every variant of a :class:`Recipe`.

Every failure is an :class:`ImageError` subclass with a stable ``code``; the
private ``_core`` exception classes are mapped here, once.

Input ``data`` may be any C-contiguous bytes-like object: ``bytes``,
``bytearray``, ``memoryview`` or ``mmap``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from pixelfox import _core

if TYPE_CHECKING:
    from typing_extensions import Buffer as BytesLike

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_RECIPE",
    "OUTPUT_FORMATS",
    "CorruptImage",
    "ImageError",
    "ImageInfo",
    "LimitExceeded",
    "Limits",
    "ProcessResult",
    "Recipe",
    "Timeout",
    "UnsupportedFormat",
    "Variant",
    "VariantSpec",
    "probe",
    "process",
    "read_exif",
    "strip_metadata",
    "verify",
]

OutputFormat: TypeAlias = Literal["webp", "avif", "jpeg"]
OUTPUT_FORMATS: Final[tuple[str, ...]] = ("webp", "avif", "jpeg")


# --------------------------------------------------------------------------- errors


class ImageError(Exception):
    """Base class: the input is not an image PixelFox can accept.

    ``code`` is a stable kebab-case identifier for APIs and logs; ``str(err)``
    is a short message that is safe to show to the uploader.
    """

    code: str = "invalid-image"


class CorruptImage(ImageError):
    """Truncated or broken image data, or an empty file."""

    code = "corrupt-image"


class UnsupportedFormat(ImageError):
    """Not an image, or a format we do not accept; the message names what was
    detected, e.g. ``"unsupported format: SVG"``, ``"unsupported format: HEIC"``,
    ``"not an image (text)"``."""

    code = "unsupported-format"


class LimitExceeded(ImageError):
    """Over a configured limit, e.g. ``"image 100000x100000 exceeds the pixel
    limit (100 MP)"``. Checked from the header before any pixel allocation."""

    code = "image-too-large"


class Timeout(ImageError):
    """Processing ran over :attr:`Limits.timeout_s` (a CPU bomb, or an overloaded
    node). The Rust pipeline checks its deadline between steps, per animation frame
    and per encode job, so the call returns shortly after the limit; code
    ``"timeout"`` (same as :class:`pixelfox.errors.Timeout`).

    ``elapsed_s`` (seconds since the call began) and ``step`` (the pipeline step that noticed
    the deadline, e.g. ``"decode"``) come from the core; None when raised without them."""

    code = "timeout"

    def __init__(self, message: str, elapsed_s: float | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.elapsed_s = elapsed_s
        self.step = step


# Private core exception class -> public class (httpx-style mapping table).
_ERROR_MAP: Final[tuple[tuple[type[Exception], type[ImageError]], ...]] = (
    (_core.TimeoutError, Timeout),
    (_core.CorruptImageError, CorruptImage),
    (_core.UnsupportedFormatError, UnsupportedFormat),
    (_core.LimitExceededError, LimitExceeded),
    (_core.CoreError, ImageError),
)


@contextmanager
def _map_exceptions() -> Iterator[None]:
    try:
        yield
    except _core.CoreError as exc:
        message, *details = exc.args or (str(exc),)  # TimeoutError: (message, elapsed_s, step)
        for core_cls, public_cls in _ERROR_MAP:
            if isinstance(exc, core_cls):
                raise public_cls(str(message), *details) from exc
        raise ImageError(str(exc)) from exc  # pragma: no cover - CoreError is in the table


# --------------------------------------------------------------------------- limits / info


@dataclass(frozen=True)
class Limits:
    """Decompression-bomb limits, checked from headers before allocation."""

    max_pixels: int = 100_000_000
    """Per frame (the canvas), px."""
    max_width: int = 65_535
    """px"""
    max_height: int = 65_535
    """px"""
    max_frames: int = 1_000
    max_total_pixels: int = 2_000_000_000
    """Summed area of all frames (canvas area x frames), px."""
    max_input_bytes: int = 100 * 1024 * 1024
    """Whole-file size accepted by :func:`verify` / :func:`process`, bytes."""
    max_scans: int = 100
    """Max scans (SOS segments) of one JPEG. Every progressive scan is a pass over
    the whole image, so a file with thousands of tiny scans is a CPU bomb; the
    same guard as libjpeg-turbo's ``djpeg -maxscans`` / TurboJPEG
    ``TJPARAM_SCANLIMIT``. The default, 100, is the limit of the JPEG decoder
    itself (zune-jpeg, under the ``image`` crate), which only notices it after
    decoding 100 scans (about 4 s for a 16 MP bomb); :func:`verify` counts the
    scans first and rejects such a file in milliseconds."""
    timeout_s: float = 30.0
    """Wall-clock limit of one :func:`process` call, seconds (0 = none). Checked
    in Rust between the pipeline steps, per animation frame and per encode job
    (a thread that released the GIL cannot be stopped from Python); over it,
    :class:`Timeout` is raised. One step that is already running (a single
    decode or AVIF encode) finishes first."""

    max_animation_bytes: int = 1 << 30
    """Bytes of pixel buffers one animation (GIF, APNG, animated WebP with a WebP output)
    may need while :func:`process` streams it: a few canvases, a few frames of each
    rendition and each animated WebP encoder's working set, summed from the header and the
    recipe's sizes before the first frame is decoded; over it, :class:`LimitExceeded`
    (``"animation needs 1,728 MiB of frame buffers, over the 1,024 MiB limit"``). Decoded
    frames are not kept, so the frame count does not enter. :func:`verify` and :func:`probe`
    given a recipe make the same check (an upload node does, before it stores the file).
    Default 1 GiB: a 4000x4000 canvas needs 446 MiB with the default recipe, a 1080p one
    135 MiB (docs/imaging.md)."""

    def _as_tuple(self) -> tuple[int, int, int, int, int, int, int, int, int]:
        return (
            self.max_pixels,
            self.max_width,
            self.max_height,
            self.max_frames,
            self.max_total_pixels,
            self.max_input_bytes,
            self.max_scans,
            max(0, round(self.timeout_s * 1000)),
            self.max_animation_bytes,
        )


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True)
class ImageInfo:
    """Facts read from the header of a source image."""

    format: str
    """``"jpeg" | "png" | "gif" | "webp" | "avif"`` (APNG is ``"png"``)."""
    mime: str
    """``"image/jpeg"``, ..."""
    width: int
    """Stored width in px (before EXIF orientation); for GIF the union of the
    logical screen and all frame rectangles."""
    height: int
    """Stored height in px."""
    frames: int
    """1 for stills; the frame count of GIF / APNG / animated WebP."""
    orientation: int
    """EXIF orientation 1..8 (1 when absent)."""

    @property
    def display_width(self) -> int:
        """Width in px after applying the orientation (swapped for 5..8)."""
        return self.height if self.orientation >= 5 else self.width

    @property
    def display_height(self) -> int:
        """Height in px after applying the orientation (swapped for 5..8)."""
        return self.width if self.orientation >= 5 else self.height

    @classmethod
    def _from_core(cls, t: tuple[str, str, int, int, int, int]) -> ImageInfo:
        fmt, mime, width, height, frames, orientation = t
        return cls(format=fmt, mime=mime, width=width, height=height, frames=frames, orientation=orientation)


def probe(data: BytesLike, limits: Limits = DEFAULT_LIMITS, recipe: Recipe | None = None) -> ImageInfo:
    """Read format, size, frame count and orientation from the header only.

    Works on a prefix of the file (e.g. the first 256 KiB of an upload); the
    format comes from magic bytes, never from a name. With ``recipe``, an
    animation is also checked against ``limits.max_animation_bytes`` as
    :func:`process` with that recipe checks it (from the header seen so far: a
    prefix may not show every frame yet, so :func:`verify` checks it again).

    Raises:
        CorruptImage: empty input, or a header that is broken/cut short.
        UnsupportedFormat: SVG, HTML, text, HEIC, PDF, ... (the message names it).
        LimitExceeded: declared size or frame count over ``limits``; with ``recipe``,
            also an animation over ``limits.max_animation_bytes``.
    """
    variants = None if recipe is None else _variant_tuples(recipe)
    with _map_exceptions():
        return ImageInfo._from_core(_core.probe(data, limits._as_tuple(), variants))


def verify(data: BytesLike, limits: Limits = DEFAULT_LIMITS, recipe: Recipe | None = None) -> ImageInfo:
    """:func:`probe` plus a structural check of the WHOLE file, without decoding
    pixels: JPEG reaches EOI, PNG chunk CRCs, APNG frame rectangles inside the
    canvas and IEND, GIF trailer, WebP RIFF length. With ``recipe``, an animation
    is also refused as :func:`process` with that recipe would refuse it, for its
    memory budget (``limits.max_animation_bytes``), with the same message.

    Raises:
        CorruptImage: ``"truncated image: ..."`` or broken structure (``"corrupt PNG:
            APNG frame 3 (60x60 at 50,50) lies outside the 100x100 canvas"``).
        UnsupportedFormat, LimitExceeded: as for :func:`probe`.
    """
    variants = None if recipe is None else _variant_tuples(recipe)
    with _map_exceptions():
        return ImageInfo._from_core(_core.verify(data, limits._as_tuple(), variants))


# --------------------------------------------------------------------------- process


def _check_range(name: str, value: float, low: float, high: float, integer: bool = False) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (finite; an ``int`` if ``integer``)."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be a whole number {low}..{high}, not {value!r}")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be {low}..{high}, not {value!r}")


@dataclass(frozen=True)
class VariantSpec:
    """One output size: fit inside ``width`` x ``height`` px, keep the aspect
    ratio, never upscale; every side is also clamped to 16383 px (WebP's limit)."""

    name: str
    width: int
    height: int
    formats: tuple[str, ...]
    """Subset of ``("webp", "avif", "jpeg")``, encoded in this order."""
    avif_quality: float | None = None
    """This variant's AVIF quality 0..100; ``None`` takes :attr:`Recipe.avif_quality`."""
    avif_speed: int | None = None
    """This variant's AVIF speed 0..10; ``None`` takes :attr:`Recipe.avif_speed`."""
    avif_rect_partitions: bool = True
    """libaom's rectangular (and AB, 1:4) partition search (``enable-rect-partitions``); off
    halves the time at speed 5 for about 0.002 SSIM (docs/benchmarks.md)."""

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in OUTPUT_FORMATS]
        if unknown:
            raise ValueError(f"unknown output format(s) {unknown}; expected {OUTPUT_FORMATS}")
        if self.width < 1 or self.height < 1:
            raise ValueError("variant box must be at least 1x1 px")
        if self.avif_quality is not None:
            _check_range("avif_quality", self.avif_quality, 0, 100)
        if self.avif_speed is not None:
            _check_range("avif_speed", self.avif_speed, 0, 10, integer=True)


def _default_variants() -> tuple[VariantSpec, ...]:
    return (
        # AVIF speed 5 on the two smaller boxes: libvips' SSIM at its bytes for little time
        # (medium without rectangular partitions: half its time, SSIM still within 0.002 of
        # libvips'); the large box takes the recipe's speed 6 (measurements: docs/benchmarks.md)
        VariantSpec("thumb", 200, 200, ("webp", "avif"), avif_speed=5),
        VariantSpec("medium", 1024, 1024, ("webp", "avif", "jpeg"), avif_speed=5, avif_rect_partitions=False),
        VariantSpec("large", 2048, 2048, ("webp", "avif")),
    )


@dataclass(frozen=True)
class Recipe:
    """What :func:`process` produces. Bump ``version`` when outputs change (2: AVIF by libaom; 3: JPEG
    shrink-on-load, which moves some pixels of qualifying JPEGs' variants by a level or so, and
    JPEGs with chroma finer than luma decoded with the right colours; 4: medium AVIF without
    rectangular partitions)."""

    version: int = 4
    variants: tuple[VariantSpec, ...] = field(default_factory=_default_variants)
    webp_quality: float = 80.0
    """libwebp lossy quality 0..100."""
    webp_method: int = 4
    """libwebp effort 0 (fast) .. 6 (slow)."""
    avif_quality: float = 50.0
    """libavif quality 0..100 (AV1 quantizer = (100 - q) * 63 / 100, libheif's mapping for
    libvips' ``Q``); the default gives libvips' ``Q=50`` bytes and SSIM (docs/benchmarks.md)."""
    avif_speed: int = 6
    """libavif/libaom speed 0 (slow) .. 10 (fast), for variants that do not set their own."""
    jpeg_quality: int = 85
    """1..100"""
    background: tuple[int, int, int] = (255, 255, 255)
    """RGB flatten colour for outputs without alpha (JPEG)."""

    def __post_init__(self) -> None:
        """Raises ``ValueError`` naming the first setting out of its range."""
        _check_range("webp_quality", self.webp_quality, 0, 100)
        _check_range("webp_method", self.webp_method, 0, 6, integer=True)
        _check_range("avif_quality", self.avif_quality, 0, 100)
        _check_range("avif_speed", self.avif_speed, 0, 10, integer=True)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100, integer=True)
        if len(self.background) != 3:
            raise ValueError(f"background must be an (r, g, b) tuple, not {self.background!r}")
        for c in self.background:
            _check_range("background", c, 0, 255, integer=True)


DEFAULT_RECIPE: Final = Recipe()


def _variant_tuples(recipe: Recipe) -> list[tuple[str, int, int, list[str], float | None, int | None, bool]]:
    """``recipe``'s variants as ``_core`` takes them."""
    return [
        (v.name, v.width, v.height, list(v.formats), v.avif_quality, v.avif_speed, bool(v.avif_rect_partitions))
        for v in recipe.variants
    ]


@dataclass(frozen=True)
class Variant:
    """One encoded output."""

    name: str
    """The :class:`VariantSpec` name, e.g. ``"thumb"``."""
    format: str
    """``"webp" | "avif" | "jpeg"``; the source format (also ``png``, ``gif``) for :data:`CLEAN_ORIGINAL`."""
    mime: str
    width: int
    """px"""
    height: int
    """px"""
    data: bytes = field(repr=False)
    frames: int
    """>1 only for animated WebP."""


@dataclass(frozen=True)
class ProcessResult:
    info: ImageInfo
    """Header facts of the source."""
    width: int
    """Upright (after orientation) full size of the source, px."""
    height: int
    variants: tuple[Variant, ...]
    """In recipe order, one per (spec, format)."""
    exif: dict[str, str] = field(default_factory=dict)
    """Useful EXIF fields of the source as display text, for the manager to
    store; only the keys present: ``make``, ``model``, ``lens``, ``taken_at``
    (``"2013:05:18 14:03:11"``, EXIF local time), ``exposure_time`` (``"1/60 s"``),
    ``f_number`` (``"f/2.8"``), ``iso`` (``"200"``), ``focal_length`` (``"4.1 mm"``).
    Never contains GPS. No output variant carries any of it."""
    gps: tuple[float, float] | None = None
    """(latitude, longitude) in decimal degrees (south/west negative) when the
    source has a GPS position; show it to the owner only."""


def process(data: BytesLike, recipe: Recipe = DEFAULT_RECIPE, limits: Limits = DEFAULT_LIMITS) -> ProcessResult:
    """Verify, decode once, apply EXIF orientation, resize (Lanczos3) each variant
    from the next larger one, convert to sRGB, and encode.

    A still JPEG whose largest variant is at most half its size (both axes) is
    decoded at 1/2 or 1/4 with DCT scaling (shrink-on-load); variant sizes and
    ``width``/``height`` are the same as with a full decode (docs/imaging.md).

    WebP/AVIF keep alpha; JPEG is flattened onto ``recipe.background``. No output
    carries EXIF/XMP/ICC/GPS. Animated sources (GIF, APNG, animated WebP) give
    animated WebP variants (every frame, delays, loop count); AVIF/JPEG use the
    first frame. Animations are streamed (each frame resized and encoded, then
    dropped), after a memory budget from the header (``limits.max_animation_bytes``).

    Raises:
        CorruptImage, UnsupportedFormat, LimitExceeded: see :func:`verify`;
        decode errors are ``CorruptImage``. ``LimitExceeded`` also for an animation
        over ``limits.max_animation_bytes``.
        Timeout: over ``limits.timeout_s``.
        ImageError: an encoder failed (should not happen).
    """
    with _map_exceptions():
        info_t, width, height, outs, exif, gps = _core.process(
            data,
            _variant_tuples(recipe),
            webp_quality=float(recipe.webp_quality),
            webp_method=int(recipe.webp_method),
            avif_quality=float(recipe.avif_quality),
            avif_speed=int(recipe.avif_speed),
            jpeg_quality=int(recipe.jpeg_quality),
            background=recipe.background,
            limits=limits._as_tuple(),
        )
    return ProcessResult(
        info=ImageInfo._from_core(info_t),
        width=width,
        height=height,
        variants=tuple(
            Variant(name=n, format=f, mime=m, width=w, height=h, data=d, frames=fr) for (n, f, m, w, h, d, fr) in outs
        ),
        exif=dict(exif),
        gps=gps,
    )


def read_exif(data: BytesLike) -> tuple[dict[str, str], tuple[float, float] | None]:
    """The EXIF fields of :attr:`ProcessResult.exif` and the GPS position of
    :attr:`ProcessResult.gps` (JPEG, PNG, WebP, AVIF), without decoding pixels.
    Absent or broken EXIF gives ``({}, None)``; never raises for bad metadata."""
    with _map_exceptions():
        fields, gps = _core.read_exif(data)
    return dict(fields), gps


def strip_metadata(data: BytesLike) -> bytes:
    """The original file with its metadata removed losslessly: what is served as
    the "original" unless the owner opts in to keeping metadata.

    JPEG: every APPn segment except JFIF (APP0), ICC (APP2) and Adobe (APP14,
    which decides CMYK inversion) is dropped, and COM; entropy-coded data is
    copied unchanged, up to the end-of-image marker (appended data such as a
    motion-photo video or a polyglot's payload is dropped). PNG: ``tEXt``, ``zTXt``, ``iTXt``, ``eXIf`` and ``tIME``
    chunks are dropped. WebP: ``EXIF`` and ``XMP `` chunks are dropped and their
    VP8X flags cleared, the RIFF size fixed. AVIF: every ``Exif`` item and XMP
    (``mime`` ``application/rdf+xml``) item is overwritten with zeros in place and
    its item type renamed ``void``, so no offset moves. GIF is returned as is (it
    has no EXIF).
    Decoded pixels of the result are identical to the input's.

    Raises:
        UnsupportedFormat: not an image format PixelFox accepts.
        CorruptImage: the structure cannot be walked (truncated segment/chunk).
    """
    with _map_exceptions():
        return _core.strip_metadata(data)


CLEAN_ORIGINAL: Final = "original"
"""Variant name of the upload with its metadata removed (what "download original" serves)."""


def clean_original(data: BytesLike, result: ProcessResult) -> Variant:
    """The upload ``data`` (already processed into ``result``) as a :class:`Variant` named
    :data:`CLEAN_ORIGINAL`, with its metadata removed by :func:`strip_metadata`: source format and
    mime, upright size (px) of ``result``, the source's frame count. A non-1 EXIF orientation is
    kept, so it still displays upright.

    Raises:
        UnsupportedFormat, CorruptImage: as :func:`strip_metadata` (not after a successful
        :func:`process` of the same bytes).
    """
    return Variant(
        name=CLEAN_ORIGINAL, format=result.info.format, mime=result.info.mime, width=result.width,
        height=result.height, data=strip_metadata(data), frames=result.info.frames,
    )


STRIPPABLE_FORMATS: Final = ("jpeg", "png", "webp", "gif", "avif")
"""Source formats that get a clean original (every format PixelFox accepts; GIF carries no EXIF)."""


def process_with_original(
    data: BytesLike, recipe: Recipe = DEFAULT_RECIPE, limits: Limits = DEFAULT_LIMITS
) -> ProcessResult:
    """:func:`process`, with :func:`clean_original` appended to the variants when the source format is
    in :data:`STRIPPABLE_FORMATS`: what a processing node stores for each job. Raises as :func:`process`."""
    result = process(data, recipe, limits)
    if result.info.format not in STRIPPABLE_FORMATS:
        return result
    try:
        clean = clean_original(data, result)
    except ImageError as exc:  # e.g. an AVIF metadata item in an odd place: renditions still go out
        logging.getLogger(__name__).warning("no clean original: %s", exc)
        return result
    return replace(result, variants=(*result.variants, clean))
