"""Arrays of an uncompressed .npz read row by row from disk, never loaded whole: the crops
of VoxCeleb-sized data do not fit in memory, and a training step reads a few dozen rows.
No memory map and no open file per array (a hundred thousand clips would exhaust either):
each read opens the file, seeks and reads."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from mnt.export.errors import ExportError

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length (30 bytes)


class Rows:
    """A read-only (N, ...) array inside an .npz file: len, shape, dtype, and indexing by
    an integer, a slice or an integer array along its first axis (-> numpy arrays)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, handle, row: int) -> np.ndarray:  # noqa: ANN001 - a binary file
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} of {len(self)} in {self.path}")
        handle.seek(self.offset + (row % len(self)) * self.row_bytes)
        data = handle.read(self.row_bytes)
        if len(data) != self.row_bytes:
            raise ExportError(f"{self.path} is cut short", hint="delete it: it is prepared again")
        return np.frombuffer(data, self.dtype).reshape(self.shape[1:])

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        with open(self.path, "rb") as handle:
            if isinstance(index, (int, np.integer)):
                return self._read(handle, int(index)).copy()
            rows = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).ravel()
            out = np.empty((len(rows), *self.shape[1:]), self.dtype)
            for i, row in enumerate(rows):
                out[i] = self._read(handle, int(row))
            return out


def open_npz(path: Path, on_disk: set[str]) -> dict[str, np.ndarray | Rows]:
    """The arrays of `path` (written by np.savez): those named in `on_disk` as Rows, the
    others loaded."""
    arrays: dict[str, np.ndarray | Rows] = {}
    with np.load(path) as data:
        arrays.update({k: data[k] for k in data.files if k not in on_disk})
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name not in on_disk:
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                raise ExportError(f"{path}: {name} is compressed and cannot be read row by row",
                                  hint="delete the file: it is prepared again, uncompressed")
            handle.seek(info.header_offset)
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise ExportError(f"{path} is not a readable .npz", hint="delete it: it is prepared again")
            handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            if fortran or dtype.hasobject:
                raise ExportError(f"{path}: {name} is not a plain C-ordered array")
            arrays[name] = Rows(path, handle.tell(), shape, dtype)
    missing = on_disk - set(arrays)
    if missing:
        raise ExportError(f"{path} lacks {sorted(missing)}", hint="delete it: it is prepared again")
    return arrays
