"""What an encoded image says about itself, read from its header without decoding a pixel.

The graphs decode PNG and JPEG (`models/image_codec.py`). A PNG's size is in its IHDR chunk, a
JPEG's in its start-of-frame segment, so a decompression bomb (a few KB that declare
50000x50000) is recognised here from bytes the request already holds. A file cut short is
recognised by its missing end (PNG's IEND chunk, JPEG's EOI marker).

Hand-written rather than `PIL.Image.open`: Pillow refuses a bomb with DecompressionBombError
against one process-wide pixel limit before saying its size, while each signature here has its
own limit and the error must name the size; and Pillow does not notice truncation until it
decodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its (fixed) CRC
_JPEG_END = b"\xff\xd9"
TAIL = 1024  # bytes at the end searched for the end marker (decoders ignore trailing bytes)
# JPEG start-of-frame markers (C0-CF except DHT C4, JPG C8 and DAC CC) carry the frame size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM: no length field


class NotAnImage(ValueError):
    """The bytes are not a PNG or JPEG this server can size (the message says why)."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG" or "JPEG"
    height: int
    width: int
    bit_depth: int  # bits per sample (PNG 1-16, JPEG 8 or 12)
    channels: int
    complete: bool  # the file's end marker is present (False: truncated)

    @property
    def pixels(self) -> int:
        return self.height * self.width


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type (3: palette, decoded to RGB)


def _png(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise NotAnImage("a PNG signature without a complete IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS:
        raise NotAnImage(f"a PNG with the unknown colour type {colour}")
    complete = _PNG_END in data[-TAIL:]
    return ImageHeader("PNG", height, width, depth, _PNG_CHANNELS[colour], complete)


def _jpeg(data: bytes) -> ImageHeader:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise NotAnImage(f"a JPEG whose segment at byte {at} has no marker")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF:
            if at + 10 > len(data):
                break
            depth, height, width, channels = struct.unpack(">BHHB", data[at + 4 : at + 10])
            complete = _JPEG_END in data[-TAIL:]
            return ImageHeader("JPEG", height, width, depth, channels, complete)
        if marker == 0xDA or length < 2:  # image data before any frame header
            break
        at += 2 + length
    raise NotAnImage("a JPEG without a complete frame header (SOF)")


def read_header(data: bytes) -> ImageHeader:
    """The header of PNG or JPEG ``data``; `NotAnImage` for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data.startswith(JPEG_SIGNATURE):
        return _jpeg(data)
    start = data[:8]
    raise NotAnImage(f"neither PNG nor JPEG ({len(data)} bytes starting {start!r})")
