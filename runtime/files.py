"""Writing files so that an interrupted or failed write never leaves a file that looks valid."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from mnt.runtime.errors import MntError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on any
    failure (a full disk, Ctrl-C) it is removed and `path` is left as it was."""
    final = Path(path)
    temporary = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except OSError as err:
        raise MntError(f"cannot write {final}: {err.strerror or err}",
                       hint="check that the folder exists, is writable and has free space") from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
