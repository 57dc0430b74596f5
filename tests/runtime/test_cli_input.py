"""mnt-run refuses bad inputs in one line, before it loads the model or reads a frame."""

import os
from fractions import Fraction

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mnt.runtime import cli
from mnt.runtime.video import VideoWriter, read_frames


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def mnt_run(place, *args, driver="driver.mp4", targets="targets"):
    before = _tree(place)
    result = CliRunner().invoke(cli.main, [driver, "--targets", targets, "--artifacts", "art",
                                           *map(str, args)])
    assert _tree(place) == before  # nothing written, not even a hidden probe or partial file
    return result


def assert_refused(result, *names):
    """Exit 1, one error line naming each of `names`, and no model load."""
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and errors[0].startswith("mnt-run: error:"), result.output
    assert all(name in errors[0] for name in names), errors[0]
    assert "loaded" not in result.output and "Traceback" not in result.output


def test_good_inputs_get_as_far_as_the_model_load(place):
    for name in ("out.mp4", "out.mov", "out.mkv", "OUT.MP4"):
        result = mnt_run(place, "-o", name)
        assert result.exit_code == 4 and "AssertionError: loaded" in result.output, result.output


@pytest.mark.parametrize(("output", "message"), [
    ("nodir/x.mp4", "folder nodir does not exist"),
    ("x.gif", "cannot write H.264 video to a .gif file"),
    ("x.png", "cannot write H.264 video to a .png file"),
    ("x.webm", "cannot write H.264 video to a .webm file"),
    ("x.txt", "cannot write H.264 video to a .txt file"),
    ("x", "a file without a suffix"),
    ("art", "is a folder"),
])
def test_an_output_that_cannot_be_written_is_refused_first(place, output, message):
    result = mnt_run(place, "-o", output)
    assert_refused(result, output, message)
    assert "-o" in result.output or ".mp4" in result.output  # the hint says what to give


def test_the_suffixes_allowed_are_those_the_writer_can_write(tmp_path):
    for suffix in (*cli.VIDEO_SUFFIXES, ".webm", ".gif", ""):
        path = tmp_path / f"v{suffix}"
        try:
            writer = VideoWriter(path, Fraction(25), 32, 32)
            writer.write(np.zeros((32, 32, 3), np.uint8))
            writer.close()
            written = len(list(read_frames(path))) == 1
        except (ValueError, OSError):
            written = False
        assert written == (suffix in cli.VIDEO_SUFFIXES), suffix


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a read-only folder")
def test_a_read_only_folder_is_refused(place):
    (place / "ro").mkdir()
    os.chmod(place / "ro", 0o555)
    try:
        assert_refused(mnt_run(place, "-o", "ro/x.mp4"), "ro/x.mp4", "not writable")
    finally:
        os.chmod(place / "ro", 0o755)


def test_a_folder_that_refuses_new_files_is_refused(place, monkeypatch):
    # os.access may say yes (root, some mounts) where creating a file fails: the probe decides.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
    assert_refused(mnt_run(place, "-o", "x.mp4"), "x.mp4", "not writable")


def test_the_write_probe_leaves_nothing_behind(place):
    assert cli._can_create_in(place) and not [p for p in place.iterdir() if p.name.startswith(".")]


def test_an_existing_output_needs_force(place):
    (place / "x.mp4").write_bytes(b"mine")
    assert_refused(mnt_run(place, "-o", "x.mp4"), "x.mp4", "--force")
    assert (place / "x.mp4").read_bytes() == b"mine"


def test_a_targets_file_is_refused(place):
    result = mnt_run(place, "-o", "out.mp4", targets="targets/p.jpg")
    assert_refused(result, "targets/p.jpg", "is a file; --targets takes a folder of 1 to 8 photos")


def test_missing_targets_are_refused_before_the_load(place):
    assert_refused(mnt_run(place, "-o", "out.mp4", targets="nope"), "nope", "does not exist")


@pytest.mark.parametrize(("driver", "message"), [
    ("rtsp://camera.local/stream", "streams are not supported yet"),
    ("https://example.com/v.mp4", "streams are not supported yet"),
    ("targets", "is a folder; give a video file"),
    ("missing.mp4", "does not exist"),
])
def test_a_driver_that_is_not_a_video_file_is_named(place, driver, message):
    assert_refused(mnt_run(place, "-o", "out.mp4", driver=driver), driver, message)


def test_streams_get_the_hint(place):
    result = mnt_run(place, "-o", "out.mp4", driver="rtsp://camera.local/stream")
    assert "give a video file or a camera index" in result.output


def test_a_camera_device_path_suggests_its_index(place):
    result = mnt_run(place, "-o", "out.mp4", driver="/dev/video3")
    assert_refused(result, "/dev/video3", "mnt-run 3")


def test_a_camera_that_cannot_be_opened_is_refused_before_the_load(place, monkeypatch):
    opened = []

    class Missing:
        def __init__(self, index):
            opened.append(index)

        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return False

        def release(self):
            opened.append("released")

    monkeypatch.setattr(cv2, "VideoCapture", Missing)
    assert_refused(mnt_run(place, "-o", "out.mp4", driver="5"), "camera 5")
    assert opened == [5, "released"]


def test_a_real_missing_camera_is_refused(place):
    assert_refused(mnt_run(place, driver="99"), "camera 99")
