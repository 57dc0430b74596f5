"""Image limits checked from the header before decoding (issue 30, item 13): a file that
claims too many pixels, or is too many bytes, is refused at once by name; sizes are read
right for every format OpenCV is given; anything else never reaches OpenCV."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.images import MAX_IMAGE_BYTES, decode_image, image_size, read_image
from tests.helpers import SHARED_DATA


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (its data: a few zero rows), as an
    image bomb's would: OpenCV allocates the whole image from the header alone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(b"\0" * (3 * width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("suffix", "params"), [
    (".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
    (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tiff", []),
    (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 1])])
def test_sizes_are_read_from_every_format_decoded(suffix, params):
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, data = cv2.imencode(suffix, image, params)
    if not ok:
        pytest.skip(f"this OpenCV cannot write {suffix}")
    assert image_size(data.tobytes()) == (53, 37)
    assert decode_image(data.tobytes()).shape == (37, 53, 3)


def test_real_photos_sizes_skip_their_exif_thumbnails():
    photos = sorted((SHARED_DATA / "targets").glob("*.jpg")) if SHARED_DATA.is_dir() else []
    if not photos:
        pytest.skip("no shared photos here")
    for path in photos:
        data = path.read_bytes()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
        assert image_size(data) == (width, height), path.name


def test_an_image_bomb_is_refused_from_its_header_at_once(tmp_path, monkeypatch):
    bomb = png_claiming(24000, 24000)  # 1.7 GB decoded, a few kB on the wire
    with monkeypatch.context() as patched:
        patched.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded"))  # (it allocates 1.7 GB)
        with pytest.raises(RuntimeStageError, match="bomb.png: 24000x24000 pixels is over the limit"):
            decode_image(bomb, "bomb.png")
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(RuntimeStageError, match="24000x24000 pixels"):
        read_image(tmp_path / "bomb.png")


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(MAX_IMAGE_BYTES + 1)  # (sparse: nothing to read if it is not read)
    with pytest.raises(RuntimeStageError, match="big.png: 48.0 MiB is over the limit of 48 MiB"):
        read_image(big)
    with pytest.raises(RuntimeStageError, match="over the limit"):
        decode_image(bytes(MAX_IMAGE_BYTES + 1), "sent")


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM\0\0", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0\xff\xff\xff\x7f",
    b"P6\n4 4\n255\n" + bytes(48),  # a PPM: OpenCV reads it, its size is not read here
    png_claiming(0, 5)])
def test_unknown_formats_and_cut_headers_are_unreadable_not_errors(data):
    assert image_size(data) is None or min(image_size(data)) == 0
    assert decode_image(data) is None
