"""Writing files so that whatever stops the program (an error, a full disk, Ctrl-C, SIGTERM,
SIGKILL) never leaves a file that looks valid, never replaces what another process wrote
meanwhile, and leaves no stray hidden file after the next run.

Every write goes to a hidden partial beside its final name, tagged with the writer's PID
(`.NAME.partial-PID.SUFFIX`), and is moved onto the final name only when complete. A partial
whose writer is dead (killed) is removed by the next write to the same name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from mnt.runtime.errors import MntError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent writers are then not detected
    fcntl = None  # type: ignore[assignment]

WRITE_HINT = "check that the folder exists, is writable and has free space"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def write_error(what: Path, err: OSError, error: type[MntError] = MntError, verb: str = "write") -> MntError:
    """An OSError met writing `what` -> one line naming its folder and the fix (a full disk
    said as such: an errno alone reads like a bug, and exit 4 would call it one)."""
    folder = Path(os.path.abspath(what)).parent
    text = f"cannot {verb} {what}: {err.strerror or err}"
    if err.errno in _FULL:
        return error(f"{text} in {folder}", hint="free some space there, or write somewhere else")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return error(text, hint=f"check that {folder} is writable")
    return error(text, hint=WRITE_HINT)


def partial_path(final: Path, kind: str = "partial") -> Path:
    """The hidden name this process writes `final` under (the suffix kept: FFmpeg picks the
    container by it)."""
    return final.with_name(f".{final.stem}.{kind}-{os.getpid()}{final.suffix}")


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # (os.kill on Windows would end the process: keep its files)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def sweep_partials(final: Path) -> list[Path]:
    """Remove the partials (and replaced old copies) of `final` whose writers are dead;
    -> what was removed. Never raises: a sweep must not hide the real work's outcome."""
    pattern = re.compile(rf"\.{re.escape(final.stem)}\.(?:partial|old)-(\d+){re.escape(final.suffix)}")
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or _alive(int(match[1])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def publish(temporary: Path, final: Path, replace: bool, error: type[MntError] = MntError) -> None:
    """Move a finished `temporary` onto `final`. Without `replace`, a `final` that appeared
    meanwhile (another run, another program) is kept and this is an error: the hard link
    fails where a rename would silently overwrite."""
    if replace:
        os.replace(temporary, final)
        return
    try:
        os.link(temporary, final)
    except FileExistsError:
        raise error(f"{final} appeared while this run was writing it; it was not replaced",
                    hint="pass --force to replace it, or give another output name") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists():  # a filesystem without hard links: check, then rename
            raise error(f"{final} appeared while this run was writing it; it was not replaced",
                        hint="pass --force to replace it, or give another output name") from None
        os.rename(temporary, final)
        return
    os.unlink(temporary)


def _created_mode() -> int:
    # What open() would give a new file: some writers (safetensors) create theirs 0600.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], replace: bool = True,
                error: type[MntError] = MntError) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is synced and moved onto `path`
    (without `replace`: only if nothing appeared there meanwhile), on any failure it is
    removed and `path` is left as it was."""
    final = Path(path)
    temporary = partial_path(final)
    sweep_partials(final)
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, _created_mode())
        publish(temporary, final, replace, error)
    except OSError as err:
        raise write_error(final, err, error) from err
    finally:
        with contextlib.suppress(OSError):  # (a read-only filesystem must not hide the error)
            temporary.unlink()


@contextlib.contextmanager
def exclusive(path: Path, error: type[MntError] = MntError,
              waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of `path` (a hidden `.NAME.lock` beside it, released by the kernel
    however the holder ends) while writing it. Another holder is an error, or with
    `waiting` (told once why) is waited for."""
    if fcntl is None:
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise write_error(path, err, error) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            if waiting is None:
                os.close(fd)
                raise _busy(path, who, error) from None
            waiting(f"waiting for {who}, which is writing {path}")
            waiting = _silent
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # (else the previous holder removed the file while we waited: retry)
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        try:  # (a full disk fails here, before any work: say so, not OSError)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as err:
            raise write_error(path, err, error) from err
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _silent(line: str) -> None:
    pass


def _holder(fd: int) -> str:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"process {holder}" if holder.isdigit() else "another process"


def _busy(path: Path, who: str, error: type[MntError]) -> MntError:
    return error(f"{path} is being written by {who}", hint="wait for it to finish, or give another output")


def refuse_if_locked(path: Path, error: type[MntError] = MntError) -> None:
    """Raise at once when another process holds `path`'s lock: a check before slow work
    (imports, loading a checkpoint) that `exclusive` would otherwise meet only after it.
    Takes nothing: `exclusive` still guards the write."""
    if fcntl is None:
        return
    try:
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDONLY)
    except OSError:
        return  # no lock file (or none readable): exclusive() decides
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(path, _holder(fd), error) from None
    finally:
        os.close(fd)  # (releases the shared lock, if it was taken)


@contextlib.contextmanager
def staged_folder(out: Path, force: bool, what: str, error: type[MntError] = MntError) -> Iterator[Path]:
    """Yield a hidden folder beside `out` to build `what` in; when the block ends without
    error it is renamed onto `out` (an old `out`, replaced only with `force`, is removed
    afterwards), so an interrupted or failed build never leaves a folder that looks valid.
    Two builds to one `out` exclude each other; a build killed earlier is swept away. OS
    errors (a full disk, a vanished folder) become `error`."""

    def check_free() -> None:
        if out.exists() and not force:
            raise error(f"{out} already exists", hint="pass --force to replace it with this build")
        if out.exists() and not out.is_dir():
            raise error(f"{out} exists and is not a folder")

    check_free()
    if not out.parent.is_dir():
        try:
            out.parent.mkdir(parents=True)
        except OSError as err:
            raise write_error(out.parent, err, error, "create") from err
    staging = partial_path(out)
    with exclusive(out, error):
        sweep_partials(out)
        try:
            staging.mkdir()
        except OSError as err:
            raise write_error(out, err, error, "create") from err
        try:
            yield staging
            check_free()  # again: a folder may have appeared meanwhile (another program)
            old = partial_path(out, "old") if out.exists() else None
            if old:
                out.rename(old)
            staging.rename(out)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            raise write_error(out, err, error) from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def refuse_if_short(out: Path, need: int, error: type[MntError] = MntError) -> None:
    """Raise at once when the disk that would hold `out` has less than `need` bytes free: a
    lower bound known before slow work (a build's weights), so a disk that is surely too
    small fails now, not at the end. A disk that passes may still fill: writes handle that."""
    folder = Path(os.path.abspath(out))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise error(f"cannot write {out}: {free / 2**20:.1f} MiB free in {folder}, and it needs at least "
                    f"{need / 2**20:.1f} MiB", hint="free some space there, or write somewhere else")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
