"""Arrays read row by row from an uncompressed .npz (the training crops, left on disk)."""

from __future__ import annotations

import numpy as np
import pytest

from mnt.export.errors import ExportError
from mnt.export.train.ondisk import Rows, open_npz


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8),
            "points": rng.normal(size=(7, 68, 3)), "frames": np.arange(7) * 3}


def test_rows_read_what_np_load_reads(tmp_path, arrays):
    np.savez(tmp_path / "clip.npz", **arrays)
    opened = open_npz(tmp_path / "clip.npz", {"images", "points"})
    assert isinstance(opened["frames"], np.ndarray)  # not named: loaded
    np.testing.assert_array_equal(opened["frames"], arrays["frames"])
    for name in ("images", "points"):
        rows, full = opened[name], arrays[name]
        assert isinstance(rows, Rows) and rows.shape == full.shape and len(rows) == 7
        for index in (0, 6, -1, np.int64(3), slice(1, 6, 2), np.array([5, 0, 5]), [2, 4]):
            got = rows[index]
            np.testing.assert_array_equal(got, full[index])
            assert got.dtype == full.dtype and got.flags.writeable
    with pytest.raises(IndexError):
        opened["images"][7]


def test_bad_cache_files_are_named(tmp_path, arrays):
    np.savez_compressed(tmp_path / "packed.npz", **arrays)
    with pytest.raises(ExportError, match="images is compressed"):
        open_npz(tmp_path / "packed.npz", {"images"})
    np.savez(tmp_path / "clip.npz", **arrays)
    with pytest.raises(ExportError, match=r"lacks \['masks'\]"):
        open_npz(tmp_path / "clip.npz", {"images", "masks"})
    rows = open_npz(tmp_path / "clip.npz", {"images"})["images"]
    data = (tmp_path / "clip.npz").read_bytes()
    (tmp_path / "clip.npz").write_bytes(data[:rows.offset + 2 * rows.row_bytes])  # cut inside row 2
    np.testing.assert_array_equal(rows[1], arrays["images"][1])
    with pytest.raises(ExportError, match="cut short"):
        rows[2]
