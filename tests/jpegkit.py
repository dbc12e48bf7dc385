"""Taking JPEG files apart in tests (marker segments), for building odd and broken files."""

from __future__ import annotations


def jpeg_segments(d: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) of every segment after SOI; a scan's entropy-coded data stays with its SOS."""
    pos, segs = 2, []
    while pos < len(d):
        marker = d[pos + 1]
        if marker == 0xD9:
            segs.append((marker, d[pos : pos + 2]))
            break
        end = pos + 2 + int.from_bytes(d[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            while not (d[end] == 0xFF and d[end + 1] != 0 and not 0xD0 <= d[end + 1] <= 0xD7):
                end += 1
        segs.append((marker, d[pos:end]))
        pos = end
    return segs
