"""Animations written byte by byte, for tests that need a structure no encoder writes: a GIF of one-pixel
frames on a huge screen."""

from __future__ import annotations

import struct


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

