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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    "UnsupportedFormat",
    "Variant",
    "VariantSpec",
    "probe",
    "process",
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


# Private core exception class -> public class (httpx-style mapping table).
_ERROR_MAP: Final[tuple[tuple[type[Exception], type[ImageError]], ...]] = (
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
        for core_cls, public_cls in _ERROR_MAP:
            if isinstance(exc, core_cls):
                raise public_cls(str(exc)) from exc
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

    def _as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.max_pixels,
            self.max_width,
            self.max_height,
            self.max_frames,
            self.max_total_pixels,
            self.max_input_bytes,
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


def probe(data: BytesLike, limits: Limits = DEFAULT_LIMITS) -> ImageInfo:
    """Read format, size, frame count and orientation from the header only.

    Works on a prefix of the file (e.g. the first 256 KiB of an upload); the
    format comes from magic bytes, never from a name.

    Raises:
        CorruptImage: empty input, or a header that is broken/cut short.
        UnsupportedFormat: SVG, HTML, text, HEIC, PDF, AVIF (no AVIF decode yet), ...
        LimitExceeded: declared size or frame count over ``limits``.
    """
    with _map_exceptions():
        return ImageInfo._from_core(_core.probe(data, limits._as_tuple()))


def verify(data: BytesLike, limits: Limits = DEFAULT_LIMITS) -> ImageInfo:
    """:func:`probe` plus a structural check of the WHOLE file, without decoding
    pixels: JPEG reaches EOI, PNG chunk CRCs and IEND, GIF trailer, WebP RIFF
    length.

    Raises:
        CorruptImage: ``"truncated image: ..."`` or broken structure.
        UnsupportedFormat, LimitExceeded: as for :func:`probe`.
    """
    with _map_exceptions():
        return ImageInfo._from_core(_core.verify(data, limits._as_tuple()))


# --------------------------------------------------------------------------- process


@dataclass(frozen=True)
class VariantSpec:
    """One output size: fit inside ``width`` x ``height`` px, keep the aspect
    ratio, never upscale; every side is also clamped to 16383 px (WebP's limit)."""

    name: str
    width: int
    height: int
    formats: tuple[str, ...]
    """Subset of ``("webp", "avif", "jpeg")``, encoded in this order."""

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in OUTPUT_FORMATS]
        if unknown:
            raise ValueError(f"unknown output format(s) {unknown}; expected {OUTPUT_FORMATS}")
        if self.width < 1 or self.height < 1:
            raise ValueError("variant box must be at least 1x1 px")


def _default_variants() -> tuple[VariantSpec, ...]:
    return (
        VariantSpec("thumb", 200, 200, ("webp", "avif")),
        VariantSpec("medium", 1024, 1024, ("webp", "avif", "jpeg")),
        VariantSpec("large", 2048, 2048, ("webp", "avif")),
    )


@dataclass(frozen=True)
class Recipe:
    """What :func:`process` produces. Bump ``version`` when outputs change."""

    version: int = 1
    variants: tuple[VariantSpec, ...] = field(default_factory=_default_variants)
    webp_quality: float = 80.0
    """libwebp lossy quality 0..100."""
    webp_method: int = 4
    """libwebp effort 0 (fast) .. 6 (slow)."""
    avif_quality: float = 60.0
    """ravif quality 1..100."""
    avif_speed: int = 8
    """rav1e speed 1 (slow) .. 10 (fast)."""
    jpeg_quality: int = 85
    """1..100"""
    background: tuple[int, int, int] = (255, 255, 255)
    """RGB flatten colour for outputs without alpha (JPEG)."""


DEFAULT_RECIPE: Final = Recipe()


@dataclass(frozen=True)
class Variant:
    """One encoded output."""

    name: str
    """The :class:`VariantSpec` name, e.g. ``"thumb"``."""
    format: str
    """``"webp" | "avif" | "jpeg"``"""
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


def process(data: BytesLike, recipe: Recipe = DEFAULT_RECIPE, limits: Limits = DEFAULT_LIMITS) -> ProcessResult:
    """Verify, decode once, apply EXIF orientation, resize (Lanczos3) each variant
    from the next larger one, convert to sRGB, and encode.

    WebP/AVIF keep alpha; JPEG is flattened onto ``recipe.background``. No output
    carries EXIF/XMP/ICC/GPS. Animated sources (GIF, APNG, animated WebP) give
    animated WebP variants (every frame, delays, loop count); AVIF/JPEG use the
    first frame.

    Raises:
        CorruptImage, UnsupportedFormat, LimitExceeded: see :func:`verify`;
        decode errors are ``CorruptImage``.
        ImageError: an encoder failed (should not happen).
    """
    variants = [(v.name, v.width, v.height, list(v.formats)) for v in recipe.variants]
    with _map_exceptions():
        info_t, width, height, outs = _core.process(
            data,
            variants,
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
    )
