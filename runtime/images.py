"""Still images on disk: which files count as photos, and reading one as RGB.

Images come from untrusted places (a server's clients, a folder of downloads), so their
size is read from the header before anything is decoded: a 560 kB PNG can claim 24,000 x
24,000 pixels, 1.7 GB once decoded. Only formats whose header is read here reach OpenCV."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from mnt.runtime.errors import RuntimeStageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_IMAGE_BYTES = 48 * 2**20  # one file
MAX_IMAGE_PIXELS = 64_000_000  # width x height: a 64-megapixel phone photo (190 MB decoded)
LIMIT_HINT = "scale it down: photos are used at 4096 pixels a side at most"


def read_image(path: Path) -> np.ndarray | None:
    """uint8 RGB (H, W, 3), or None when the file cannot be read or decoded (see decode_image)."""
    try:
        _check_bytes(path.stat().st_size, path)  # (before reading it in)
        return decode_image(path.read_bytes(), path)
    except OSError:
        return None


def decode_image(data: bytes, name: object = "image") -> np.ndarray | None:
    """An image file's bytes -> uint8 RGB (H, W, 3), or None when they are no JPEG, PNG, BMP,
    WebP or TIFF whose size can be read, OpenCV cannot decode them, or they are a JPEG cut
    short (which libjpeg decodes anyway, grey below the cut, with only a line on stderr).
    RuntimeStageError, naming `name`, when the file or its pixel count is over the limits."""
    _check_bytes(len(data), name)
    size = image_size(data)
    if size is None or min(size) < 1:
        return None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise _too_large(name, f"{size[0]}x{size[1]} pixels", f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels")
    if data[:2] == b"\xff\xd8" and _truncated_jpeg(data):
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_bytes(size: int, name: object) -> None:
    if size > MAX_IMAGE_BYTES:
        raise _too_large(name, f"{size / 2**20:.1f} MiB", f"{MAX_IMAGE_BYTES // 2**20} MiB")


def _too_large(name: object, what: str, limit: str) -> RuntimeStageError:
    return RuntimeStageError(f"{name}: {what} is over the limit of {limit}", hint=LIMIT_HINT)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, BMP, WebP or TIFF file; None for
    anything else or a header cut short."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data.startswith(b"BM"):
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 core header: 16-bit sides
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # (a negative height: rows stored top-down)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(data)
    except struct.error:  # cut short
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """From the first frame header (SOFn) among the top-level segments: an EXIF thumbnail's
    own lies inside its APP1 segment, which is skipped whole."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # no length
            at += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        if marker == 0xDA:  # scan data before any frame header
            return None
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8X":
        width, height = data[24:27] + b"\0", data[27:30] + b"\0"
        return 1 + struct.unpack("<I", width)[0], 1 + struct.unpack("<I", height)[0]
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory: the page OpenCV reads."""
    order = "<" if data[:2] == b"II" else ">"
    at = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[at:at + 2])[0]
    sides = {}
    for entry in range(count):
        tag, kind, _, value = struct.unpack(order + "HHI4s", data[at + 2 + 12 * entry:at + 14 + 12 * entry])
        if tag in (256, 257):
            sides[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[:2 if kind == 3 else 4])[0]
    return (sides[256], sides[257]) if len(sides) == 2 else None


def _truncated_jpeg(data: bytes) -> bool:
    """No end-of-image marker (FFD9) after the last start-of-scan (FFDA): the entropy-coded
    data between them cannot hold FFD9, so only a cut file lacks it (an EXIF thumbnail's
    own markers come before the main image's scans)."""
    scan = data.rfind(b"\xff\xda")
    return scan >= 0 and data.rfind(b"\xff\xd9") < scan
