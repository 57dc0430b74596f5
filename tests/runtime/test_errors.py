"""Error lines say what went wrong in words: FFmpeg's and the OS's error numbers, which
PyAV and Python put in their messages, are left out (issue 30's rough edges)."""

import pytest

from mnt.runtime.errors import MntError, RuntimeStageError
from mnt.runtime.video import read_frames


def test_a_damaged_video_is_named_without_ffmpegs_error_number(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(MntError) as caught:
        list(read_frames(bad))
    line = caught.value.one_line()
    assert "Invalid data found when processing input" in line and str(bad) in line
    assert "Errno" not in line and "1094995529" not in line


def test_os_error_numbers_are_left_out_and_the_hint_kept():
    err = RuntimeStageError("cannot open x.mp4: [Errno 2] No such file or directory: 'x.mp4'", hint="fix")
    assert err.one_line() == "cannot open x.mp4: No such file or directory: 'x.mp4' (fix)"
