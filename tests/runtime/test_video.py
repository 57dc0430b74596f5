"""Video in and out through PyAV: H.264 with the driver's audio copied, temporary names."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mnt.runtime import RuntimeStageError
from mnt.runtime.video import VideoWriter, read_frames, read_timed_frames, video_info
from tests.helpers import SHARED_DATA, sound_by_time, talking_clip

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


def test_a_file_without_pictures_says_what_to_give(tmp_path):
    sound = tmp_path / "speech.m4a"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in (*stream.encode(frame), *stream.encode(None)):
            container.mux(packet)
    for call in (lambda: next(read_frames(sound)), lambda: video_info(sound)):
        with pytest.raises(RuntimeStageError, match="speech.m4a has no video stream") as raised:
            call()
        assert "give a video file" in raised.value.hint


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


def test_frames_keep_their_source_times_counted_from_the_first(tmp_path):
    out = tmp_path / "timed.mp4"
    writer = VideoWriter(out, Fraction(25), 64, 64)
    for frame, at in zip(_frames(4), (10.0, 10.04, 10.2, 10.2), strict=True):  # a gap, then a tie
        writer.write(frame, at)
    writer.close()
    times = [round(t, 3) for t, _ in read_timed_frames(out)]
    assert times == [0.0, 0.04, 0.2, 0.24]  # (a tie takes the next frame's slot)


class _Recording:
    """An output container that notes the type of each packet it is given."""

    def __init__(self, container):
        self.container, self.muxed = container, []

    def mux(self, packet):
        self.muxed.append(packet.stream.type)
        self.container.mux(packet)

    def __getattr__(self, name):
        return getattr(self.container, name)


def test_audio_is_muxed_as_the_video_goes_and_follows_the_first_frame(tmp_path):
    source = talking_clip(tmp_path / "source.mp4", faceless=25, faces=25, size=64)  # tone from 1.0 s
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, Fraction(25), 64, 64, audio_from=source)
    writer.container = _Recording(writer.container)
    muxed = writer.container.muxed
    for i, frame in enumerate(_frames(20)):
        writer.write(frame, 1.0 + i / 25)  # the frames from 1.0 s on, as after a faceless start
    before_close = list(muxed)
    writer.close()
    # not held back until close: the muxer would keep every video packet waiting for them
    assert "audio" in before_close[: len(before_close) // 2]
    sound, rate = sound_by_time(out)
    assert np.sqrt(np.mean(sound[int(0.02 * rate):int(0.2 * rate)] ** 2)) > 0.2  # the tone at once
    assert abs(len(sound) / rate - 20 / 25) < 0.1
