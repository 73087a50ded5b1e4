"""Image sizes read from file headers, without decoding pixels: the size limit of every reader
(``live.imagecodec`` for CompressedImage, ``training.data.read_image`` for files) is checked before
any pixel memory is allocated.

- ``png_size(data)`` / ``jpeg_size(data)``: (width, height) from a PNG IHDR / the first JPEG
  start-of-frame; ``HeaderError`` (``kind`` "bad_png" / "bad_jpeg") when the header is broken.
- ``header_size(data)``: the same for data starting as PNG, JPEG, BMP or TIFF; None for other data.
- ``file_image_size(path)``: ``header_size`` of a file, reading only its head (TIFF: its first
  directory); None when the format is not one of these or the header lies beyond what was read.
- ``MAX_PIXELS``: the default input limit (the node's ``max_image_pixels``); ``size_limit_problem(
  width, height, max_pixels)`` says why a size exceeds a limit (None within it, or with no limit);
  ``format_pixels(n)`` writes a pixel count for such messages.
"""
from __future__ import annotations

import struct
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic variants)
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# markers that carry no length field
_STANDALONE_MARKERS = {0x01, 0xD8} | set(range(0xD0, 0xD8))
HEAD_BYTES = 1 << 20  # a file's first MiB holds its header (JPEG: unless the APP segments are larger)
MAX_PIXELS = 4096 * 4096  # the node's max_image_pixels default (config/fuse.yaml)


class HeaderError(ValueError):
    """A PNG/JPEG whose header is broken; ``kind`` is "bad_png" or "bad_jpeg"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def png_size(data) -> tuple[int, int]:
    """(width, height) from the IHDR chunk of PNG ``data`` (bytes-like)."""
    # signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4)
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise HeaderError("bad_png", "PNG without a valid IHDR header")
    width, height = struct.unpack(">II", bytes(data[16:24]))
    return width, height


def jpeg_size(data) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment of JPEG ``data`` (bytes-like)."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise HeaderError("bad_jpeg", f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length = struct.unpack(">H", bytes(data[pos + 2:pos + 4]))[0]
        if marker in _SOF_MARKERS:
            if pos + 9 > n or length < 7:
                break
            height, width = struct.unpack(">HH", bytes(data[pos + 5:pos + 9]))
            return width, height
        pos += 2 + length
    raise HeaderError("bad_jpeg", "JPEG without a frame header (SOF)")


def _bmp_size(data) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    if struct.unpack("<I", bytes(data[14:18]))[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", bytes(data[18:22]))
        return width, height
    width, height = struct.unpack("<ii", bytes(data[18:26]))
    return abs(width), abs(height)  # a negative height is a top-down bitmap


def _tiff_size(data, read_at=None) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory; ``read_at(offset, n)`` reads
    beyond ``data`` (a file's directory often follows the pixels)."""
    order = "<" if bytes(data[:2]) == b"II" else ">"

    def chunk(offset: int, n: int) -> bytes:
        if offset + n <= len(data):
            return bytes(data[offset:offset + n])
        return read_at(offset, n) if read_at else b""

    if len(data) < 8:
        return None
    ifd = struct.unpack(order + "I", bytes(data[4:8]))[0]
    head = chunk(ifd, 2)
    if len(head) < 2:
        return None
    count = struct.unpack(order + "H", head)[0]
    entries = chunk(ifd + 2, 12 * count)
    size = {}
    for i in range(len(entries) // 12):
        tag, kind = struct.unpack(order + "HH", entries[12 * i:12 * i + 4])
        if tag in (256, 257):
            value = entries[12 * i + 8:12 * i + 12]
            size[tag] = struct.unpack(order + "H", value[:2])[0] if kind == 3 else struct.unpack(order + "I", value)[0]
    return (size[256], size[257]) if len(size) == 2 else None


def header_size(data, read_at=None) -> tuple[int, int] | None:
    """(width, height) of PNG, JPEG, BMP or TIFF ``data`` from its header; None for other data."""
    head = bytes(data[:8])
    if head.startswith(PNG_MAGIC):
        return png_size(data)
    if head.startswith(JPEG_MAGIC):
        return jpeg_size(data)
    if head.startswith(b"BM"):
        return _bmp_size(data)
    if head[:4] in _TIFF_MAGICS:
        return _tiff_size(data, read_at)
    return None


def file_image_size(path: str | Path) -> tuple[int, int] | None:
    """``header_size`` of the file at ``path`` (OSError when it cannot be read)."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)

        def read_at(offset: int, n: int) -> bytes:
            fh.seek(offset)
            return fh.read(n)

        try:
            return header_size(head, read_at)
        except HeaderError:
            if head.startswith(JPEG_MAGIC) and len(head) == HEAD_BYTES:  # the SOF may follow large APP segments
                return header_size(head + fh.read(), read_at)
            raise


def format_pixels(pixels: int) -> str:
    """A pixel count for messages: "7,680 px" below 0.1 MP, else "16.8 MP"."""
    return f"{pixels:,} px" if pixels < 100_000 else f"{pixels / 1e6:.1f} MP"


def size_limit_problem(width: int, height: int, max_pixels: int | None) -> str | None:
    """"WxH = N exceeds the input limit of M (--max-pixels raises it)", or None within the limit."""
    if max_pixels is None or width * height <= max_pixels:
        return None
    return (f"{width}x{height} = {format_pixels(width * height)} exceeds the input limit of "
            f"{format_pixels(max_pixels)} (--max-pixels raises it)")
