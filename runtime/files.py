"""Writing files so that an interrupted or failed write never leaves a file that looks valid."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
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


@contextlib.contextmanager
def staged_folder(out: Path, force: bool, what: str, error: type[MntError] = MntError) -> Iterator[Path]:
    """Yield a hidden folder beside `out` to build `what` in; when the block ends without
    error it is renamed onto `out` (an old `out`, replaced only with `force`, is removed
    afterwards), so an interrupted or failed build never leaves a folder that looks valid.
    OS errors (a full disk, a vanished folder) become `error`."""
    if out.exists() and not force:
        raise error(f"{out} already exists", hint="pass --force to replace it with this build")
    if out.exists() and not out.is_dir():
        raise error(f"{out} exists and is not a folder")
    staging = out.with_name(f".{out.name}.partial-{time.time_ns()}")
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise error(f"cannot create {staging.parent}: {err.strerror}") from err
    try:
        yield staging
        old = out.with_name(f".{out.name}.old-{time.time_ns()}") if out.exists() else None
        if old:
            out.rename(old)
        staging.rename(out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        raise error(f"cannot write {what} {out}: {err.strerror or err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
