"""Writing files: nothing half-written, nothing replaced behind the user's back, no strays."""

import errno
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mnt.runtime import defaults
from mnt.runtime.errors import MntError
from mnt.runtime.files import atomic_path, exclusive, partial_path, staged_folder, sweep_partials


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_partials_of_dead_writers_are_swept_by_the_next_write(tmp_path):
    final = tmp_path / "out.mp4"
    dead = tmp_path / f".out.partial-{_dead_pid()}.mp4"
    dead.write_bytes(b"half a video")
    dead_folder = tmp_path / f".out.old-{_dead_pid()}.mp4"
    dead_folder.mkdir()
    (dead_folder / "x").write_text("x")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = tmp_path / f".out.partial-{writer.pid}.mp4"  # a live writer's: kept
    live.write_bytes(b"being written")
    other = tmp_path / f".other.partial-{_dead_pid()}.mp4"  # another name's: not ours to judge
    other.write_bytes(b"x")
    try:
        with atomic_path(final) as temporary:
            assert temporary == partial_path(final)
            temporary.write_bytes(b"done")
    finally:
        writer.kill()
        writer.wait()
    assert final.read_bytes() == b"done"
    assert not dead.exists() and not dead_folder.exists() and live.exists() and other.exists()


def test_a_sweep_never_raises():
    assert sweep_partials(pathlib.Path("/no/such/folder/out.mp4")) == []


def test_without_replace_a_file_that_appeared_meanwhile_is_kept(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(MntError, match="appeared while this run was writing it"):
        with atomic_path(final, replace=False) as temporary:
            temporary.write_text("mine")
            final.write_text("theirs")  # another program, while we wrote
    assert final.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_files_get_the_mode_a_plain_create_would(tmp_path):
    # safetensors creates its files 0600; a checkpoint must be readable like any other file
    final = tmp_path / "checkpoint.safetensors"
    mask = os.umask(0o022)
    try:
        with atomic_path(final) as temporary:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600))
    finally:
        os.umask(mask)
    assert final.stat().st_mode & 0o777 == 0o644


def test_a_read_only_filesystem_reports_the_write_not_the_cleanup(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    with pytest.raises(MntError, match="cannot write .*out.txt: Read-only file system"):
        with atomic_path(tmp_path / "out.txt") as temporary:
            read_only(temporary)


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mnt.runtime.files import exclusive
    with exclusive(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(path: pathlib.Path, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_at_once_naming_the_first(tmp_path):
    out = tmp_path / "artefacts"
    holder = _hold(out, 30)
    try:
        with pytest.raises(MntError, match=rf"{out} is being written by process {holder.pid}"):
            with staged_folder(out, force=False, what="the build"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the next build goes ahead, and its
    # lock file is gone afterwards
    with staged_folder(out, force=False, what="the build") as staging:
        (staging / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefacts"]


def test_a_waiting_writer_waits_for_the_first(tmp_path):
    out = tmp_path / "x"
    holder = _hold(out, 1.5)
    said = []
    started = time.monotonic()
    with exclusive(out, waiting=said.append):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.5 and said == [f"waiting for process {holder.pid}, which is writing {out}"]


def test_a_folder_that_appeared_during_a_build_is_not_replaced(tmp_path):
    out = tmp_path / "artefacts"
    with pytest.raises(MntError, match="already exists"):
        with staged_folder(out, force=False, what="the build") as staging:
            (staging / "manifest.json").write_text("{}")
            out.mkdir()  # another program made it meanwhile
            (out / "theirs").write_text("x")
    assert [p.name for p in out.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefacts"]


def test_a_build_killed_earlier_is_swept_by_the_next(tmp_path):
    out = tmp_path / "artefacts"
    leftover = tmp_path / f".artefacts.partial-{_dead_pid()}"  # what SIGKILL left
    leftover.mkdir()
    (leftover / "generator.onnx").write_bytes(b"\0" * 1000)
    with staged_folder(out, force=False, what="the build") as staging:
        (staging / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefacts"]


def test_the_default_artefacts_are_built_once_however_many_ask(monkeypatch, tmp_path):
    monkeypatch.setenv("MNT_CACHE_DIR", str(tmp_path))
    builds, said, folders = [], [], []
    other_waits = threading.Event()

    def say(line):
        said.append(line)
        if line.startswith("waiting for "):  # ("another process" before the holder wrote its PID)
            other_waits.set()

    def fake_build(arguments):
        builds.append(arguments)
        assert other_waits.wait(timeout=60)  # the second caller found the lock held
        out = pathlib.Path(arguments[arguments.index("--out") + 1])
        out.mkdir()
        (out / "manifest.json").write_text("{}")

    monkeypatch.setattr(defaults, "_build", fake_build)
    threads = [threading.Thread(target=lambda: folders.append(defaults.default_artifacts(say)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(folders) == 2 and len(set(folders)) == 1
    assert sum(line.startswith("waiting for ") for line in said) == 1


def test_an_unwritable_cache_folder_is_named(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MNT_CACHE_DIR", str(blocker))
    with pytest.raises(MntError, match=f"cannot write the cache folder {blocker}/targets") as caught:
        defaults.cache_folder("targets")
    assert "MNT_CACHE_DIR" in caught.value.hint
