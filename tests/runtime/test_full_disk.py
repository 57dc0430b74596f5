"""A disk that is already full, and a second writer: one clear line and exit 1, at once,
before any slow work (issue 30, item 9 and its rough edges). On a real full filesystem (a
64 KiB tmpfs, where root can mount one) and by a patched os.pwrite everywhere."""

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnt.runtime.errors import MntError
from mnt.runtime.files import atomic_path, exclusive, staged_folder

CHECKPOINT = Path(__file__).parents[2] / "export" / "pretrained" / "small-demo.safetensors"


@pytest.fixture()
def full(tmp_path):
    """A folder on a filesystem with no free byte left (skipped where tmpfs cannot be mounted)."""
    folder = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(params=["tmpfs", "patched"])
def no_space(request, tmp_path, monkeypatch):
    """A folder where writing a byte fails with ENOSPC: really, or by a patched os.pwrite."""
    if request.param == "tmpfs":
        return request.getfixturevalue("full")

    def refuse(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", refuse)
    return tmp_path


def _assert_full_disk_line(text: str, folder: Path) -> None:
    assert "No space left on device" in text and f"in {folder}" in text and "free some space" in text
    assert "Errno" not in text and "internal error" not in text


def test_the_lock_on_a_full_disk_is_a_clear_error_naming_the_folder(no_space):
    with pytest.raises(MntError) as caught:
        with exclusive(no_space / "o.mp4"):
            raise AssertionError("the lock was taken on a full disk")
    _assert_full_disk_line(caught.value.one_line(), no_space)
    with pytest.raises(MntError) as caught:
        with staged_folder(no_space / "build", False, "the build"):
            raise AssertionError("a build was staged on a full disk")
    _assert_full_disk_line(caught.value.one_line(), no_space)
    assert not (no_space / "build").exists()
    assert not [p for p in no_space.iterdir() if p.name.startswith(".") and "partial" in p.name]


def test_a_file_written_onto_a_full_disk_is_a_clear_error(full):
    with pytest.raises(MntError) as caught:
        with atomic_path(full / "x.bin") as temporary:
            temporary.write_bytes(b"x" * 100_000)
    _assert_full_disk_line(caught.value.one_line(), full)
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_mnt_run_onto_a_full_disk_exits_1_naming_the_folder(no_space, place):
    from mnt.runtime import cli

    result = CliRunner().invoke(cli.main, ["driver.mp4", "--targets", "targets", "--artifacts", "art",
                                           "-o", str(no_space / "o.mp4")])
    assert result.exit_code == 1, result.output
    _assert_full_disk_line(result.output, no_space)
    assert "loaded" not in result.output


def _build(out: Path, monkeypatch):
    from mnt.export.cli import main

    def too_late(*args, **kwargs):
        raise AssertionError("the export began")

    monkeypatch.setattr("mnt.export.onnx.build.build", too_late)
    return CliRunner().invoke(main, ["build", "--checkpoint", str(CHECKPOINT), "--out", str(out),
                                     "--engines", "none"])


def test_a_second_build_stops_before_the_export_naming_the_first(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    with exclusive(out):  # (an flock: a second open of the lock file conflicts, in-process too)
        result = _build(out, monkeypatch)
    assert result.exit_code == 1, result.output
    assert f"is being written by process {os.getpid()}" in result.output
    assert "the export began" not in result.output


def test_a_build_onto_a_disk_too_small_stops_before_the_export(full, monkeypatch):
    pytest.importorskip("torch")
    result = _build(full / "out", monkeypatch)
    assert result.exit_code == 1, result.output
    assert "MiB free in" in result.output and str(full) in result.output
    assert "the export began" not in result.output
