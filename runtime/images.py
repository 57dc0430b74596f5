"""Still images on disk: which files count as photos, and reading one as RGB."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_image(path: Path) -> np.ndarray | None:
    """uint8 RGB (H, W, 3), or None when the file cannot be read or decoded (see decode_image)."""
    try:
        return decode_image(path.read_bytes())
    except OSError:
        return None


def decode_image(data: bytes) -> np.ndarray | None:
    """An image file's bytes -> uint8 RGB (H, W, 3), or None when OpenCV cannot decode them,
    or they are a JPEG cut short (which libjpeg decodes anyway, grey below the cut, with
    only a line on stderr)."""
    if data[:2] == b"\xff\xd8" and _truncated_jpeg(data):
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _truncated_jpeg(data: bytes) -> bool:
    """No end-of-image marker (FFD9) after the last start-of-scan (FFDA): the entropy-coded
    data between them cannot hold FFD9, so only a cut file lacks it (an EXIF thumbnail's
    own markers come before the main image's scans)."""
    scan = data.rfind(b"\xff\xda")
    return scan >= 0 and data.rfind(b"\xff\xd9") < scan
