"""Private Rust core of PixelFox. Use :mod:`pixelfox.imaging` instead.

All functions accept any C-contiguous bytes-like object and release the GIL.
"""

from typing_extensions import Buffer

__all__ = [
    "CoreError",
    "CorruptImageError",
    "LimitExceededError",
    "TimeoutError",
    "UnsupportedFormatError",
    "__version__",
    "probe",
    "process",
    "read_exif",
    "strip_metadata",
    "verify",
]

__version__: str

# (format, mime, width, height, frames, orientation)
_InfoTuple = tuple[str, str, int, int, int, int]
# (max_pixels, max_width, max_height, max_frames, max_total_pixels, max_input_bytes,
#  max_scans, timeout_ms, max_animation_bytes)
_LimitsTuple = tuple[int, int, int, int, int, int, int, int, int]
# (name, box width, box height, formats, AVIF quality or None, AVIF speed or None, AVIF rect partitions)
_VariantSpecTuple = tuple[str, int, int, list[str], float | None, int | None, bool]
# (name, format, mime, width, height, data, frames)
_VariantTuple = tuple[str, str, str, int, int, bytes, int]

class CoreError(Exception):
    """Base class of every error raised by pixelfox._core."""

class CorruptImageError(CoreError):
    """Truncated or broken image data, or an empty file."""

class UnsupportedFormatError(CoreError):
    """Not an image, or an image format PixelFox does not accept."""

class LimitExceededError(CoreError):
    """The image is over one of the configured limits."""

class TimeoutError(CoreError):
    """Processing took longer than the configured time limit."""

def probe(
    data: Buffer, limits: _LimitsTuple | None = None, variants: list[_VariantSpecTuple] | None = None
) -> _InfoTuple:
    """Header-only probe (works on a prefix of the file); with ``variants``, also the
    animation budget of ``process()`` with them, from the header seen so far."""

def verify(
    data: Buffer, limits: _LimitsTuple | None = None, variants: list[_VariantSpecTuple] | None = None
) -> _InfoTuple:
    """Probe plus structural completeness of the whole file; no pixel decode. With
    ``variants``, also the animation budget of ``process()`` with them."""

def process(
    data: Buffer,
    variants: list[_VariantSpecTuple],
    *,
    webp_quality: float,
    webp_method: int,
    avif_quality: float,
    avif_speed: int,
    jpeg_quality: int,
    background: tuple[int, int, int],
    limits: _LimitsTuple | None = None,
) -> tuple[
    _InfoTuple, int, int, list[_VariantTuple], list[tuple[str, str]], tuple[float, float] | None
]:
    """Decode once, orient, resize, convert to sRGB and encode every variant."""

def strip_metadata(data: Buffer) -> bytes:
    """The original file with EXIF/XMP/IPTC/comments removed losslessly."""

def read_exif(data: Buffer) -> tuple[list[tuple[str, str]], tuple[float, float] | None]:
    """The useful EXIF fields and GPS position of a file (no pixel decode)."""
