"""Video in and out through PyAV: H.264 with the driver's audio copied, temporary names."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mnt.runtime import RuntimeStageError
from mnt.runtime.video import VideoWriter, read_frames, video_info
from tests.helpers import SHARED_DATA

DRIVING = SHARED_DATA / "driving"
needs_media = pytest.mark.skipif(not DRIVING.exists(), reason=f"{DRIVING} not present")


def _frames(count, size=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_writes_h264_under_a_temporary_name_then_renames(tmp_path):
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, Fraction(25), 64, 64)
    for frame in _frames(10):
        writer.write(frame)
    assert not out.exists()  # only a temporary name until close()
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert sum(1 for _ in read_frames(out)) == 10 and video_info(out)[0] == 25


def test_odd_sizes_are_padded_for_yuv420(tmp_path):
    writer = VideoWriter(tmp_path / "odd.mp4", Fraction(30), 63, 41)
    writer.write(np.zeros((41, 63, 3), np.uint8))
    writer.close()
    assert next(read_frames(tmp_path / "odd.mp4")).shape == (42, 64, 3)


def test_no_frames_and_abort_leave_nothing(tmp_path):
    with pytest.raises(RuntimeStageError, match="no frames were written"):
        VideoWriter(tmp_path / "empty.mp4", Fraction(25), 64, 64).close()
    writer = VideoWriter(tmp_path / "aborted.mp4", Fraction(25), 64, 64)
    writer.write(_frames(1)[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@needs_media
def test_audio_is_copied_up_to_the_end_of_the_video(tmp_path):
    source = DRIVING / "d11.mp4"
    rate, count, has_audio = video_info(source)
    assert has_audio and count == 225
    out = tmp_path / "with-audio.mp4"
    writer = VideoWriter(out, rate, 128, 128, audio_from=source)
    for frame in read_frames(source, limit=50):  # a run cut short, like Ctrl-C
        writer.write(np.ascontiguousarray(frame[:128, :128]))
    writer.close()
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        seconds = float(container.duration / 1e6)
    assert abs(seconds - 50 / 25) < 0.1
    assert sum(1 for _ in read_frames(out)) == 50


def test_unreadable_videos_are_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(RuntimeStageError, match="broken.mp4"):
        next(read_frames(bad))
    with pytest.raises(RuntimeStageError, match="broken.mp4"):
        video_info(bad)
    with pytest.raises(RuntimeStageError, match="nope.mp4"):
        video_info(Path(tmp_path / "nope.mp4"))


@needs_media
def test_truncated_video_fails_at_a_named_frame_or_ends_early(tmp_path):
    source = (DRIVING / "d0.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source[: len(source) // 2])
    try:
        frames = sum(1 for _ in read_frames(cut))
    except RuntimeStageError as err:
        assert "cut.mp4" in str(err)
    else:
        assert frames < 78  # FFmpeg may stop quietly at the cut: fewer frames, no crash
