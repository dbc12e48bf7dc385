"""Animations written byte by byte (``struct`` and ``zlib``; PNG chunks with correct CRCs), for tests that
need a structure no encoder writes: a GIF of one-pixel frames on a huge screen, an APNG frame outside its
canvas."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def one_pixel_frames_gif(width: int, height: int, frames: int, delay_cs: int = 5) -> bytes:
    """A GIF89a of a ``width`` x ``height`` screen (black/white global palette, looping for
    ever) whose every frame is a single 1x1 white image: the tester's file."""
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table, 2 entries
    out += bytes([0, 0, 0, 255, 255, 255])
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for i in range(frames):
        out += b"\x21\xf9\x04" + struct.pack("<BHB", 0, delay_cs, 0) + b"\x00"
        out += b"\x2c" + struct.pack("<HHHHB", (i * 7) % width, (i * 13) % height, 1, 1, 0)
        # LZW with minimum code size 2: clear (4), index 1, end (5), 3-bit codes, LSB first
        out += b"\x02\x02" + struct.pack("<H", 4 | (1 << 3) | (5 << 6)) + b"\x00"
    out += b"\x3b"
    return bytes(out)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, ``kind`` (4 bytes), ``data``, CRC-32 of kind and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def rgba_rows(width: int, height: int, rgba: tuple[int, int, int, int]) -> bytes:
    """zlib data of a ``width`` x ``height`` RGBA image of one colour (filter 0 on every row)."""
    row = b"\x00" + bytes(rgba) * width
    return zlib.compress(row * height)


def apng(width: int, height: int, frames: list[tuple[int, int, int, int]], delay_ms: int = 100) -> bytes:
    """An APNG of a ``width`` x ``height`` RGBA canvas, looping for ever, whose frames are the rectangles
    ``(w, h, x, y)`` of ``frames`` in order (the first is also the default image, in IDAT; the others
    in fdAT), each one colour. Nothing checks the rectangles: a test may put one outside the canvas."""
    out = bytearray(SIGNATURE)
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    out += png_chunk(b"acTL", struct.pack(">II", len(frames), 0))
    seq = 0
    for i, (w, h, x, y) in enumerate(frames):
        out += png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, x, y, delay_ms, 1000, 0, 0))
        seq += 1
        pixels = rgba_rows(w, h, (40 * i % 256, 255 - 40 * i % 256, 128, 255))
        if i == 0:
            out += png_chunk(b"IDAT", pixels)
        else:
            out += png_chunk(b"fdAT", struct.pack(">I", seq) + pixels)
            seq += 1
    out += png_chunk(b"IEND", b"")
    return bytes(out)
