"""Frame times and orientation come from the container: a variable-rate driver keeps every
frame's time (picture and sound in sync), a sideways phone video is turned upright."""

import shutil
import subprocess
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from skimage import data

from mnt.runtime.video import VideoWriter, read_frames, read_timed_frames, video_info, video_time_base
from tests.helpers import mnt_run, mux_tone

FFMPEG = shutil.which("ffmpeg")


def _face(size=192):
    return cv2.resize(data.astronaut()[:360, 60:420], (size, size))


def _variable_rate_clip(path, size=192, sample_rate=16000):
    """1 s at 60 fps, then 1 s at 15 fps (as a phone drops its rate in low light), a moving
    face, and sound throughout; -> the frames' times in seconds."""
    face = _face(size)
    ticks = list(range(0, 60)) + list(range(60, 120, 4))  # in 1/60 s
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=60)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 60)
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        for i, tick in enumerate(ticks):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(face, i % 7 - 3, axis=1)),
                                               format="rgb24")
            frame.pts = tick
            for packet in video.encode(frame):
                container.mux(packet)
        t = np.arange(2 * sample_rate) / sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        mux_tone(container, audio, tone, sample_rate)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return [tick / 60 for tick in ticks]


def test_a_variable_rate_source_keeps_every_frames_time(tmp_path):
    source = tmp_path / "vfr.mp4"
    times = _variable_rate_clip(source, size=64)
    read = [at for at, _ in read_timed_frames(source)]
    assert np.allclose(read, times, atol=1e-3)
    rate, _, _ = video_info(source)
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, rate, 64, 64, audio_from=source, time_base=video_time_base(source))
    for at, frame in read_timed_frames(source):
        writer.write(frame, at)
    writer.close()
    written = [at for at, _ in read_timed_frames(out)]
    assert len(written) == len(times)
    assert np.max(np.abs(np.array(written) - times)) < 1e-3  # frame 60, at 1.000 s, stays there


def test_a_constant_rate_source_stays_on_its_slots(tmp_path):
    source = tmp_path / "cfr.mp4"
    writer = VideoWriter(source, Fraction(30000, 1001), 32, 32)
    for value in range(12):
        writer.write(np.full((32, 32, 3), 20 * value, np.uint8))
    writer.close()
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, Fraction(30000, 1001), 32, 32, time_base=video_time_base(source))
    for at, frame in read_timed_frames(source):
        writer.write(frame, at)
    writer.close()
    written = [at for at, _ in read_timed_frames(out)]
    assert np.allclose(written, np.arange(12) * 1001 / 30000, atol=1e-4)


def test_mnt_run_keeps_a_variable_rate_drivers_times(artefacts, env, tmp_path):
    driver = tmp_path / "vfr.mp4"
    times = _variable_rate_clip(driver)
    (tmp_path / "targets").mkdir()
    cv2.imwrite(str(tmp_path / "targets" / "a.png"), cv2.cvtColor(_face(256), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.mp4"
    result = mnt_run(driver, "--targets", tmp_path / "targets", "--artifacts", artefacts, "-o", out, env=env)
    assert result.returncode == 0, result.stderr
    written = [at for at, _ in read_timed_frames(out)]
    assert len(written) == len(times)
    # before: every frame on one rate's slots, so the 15 fps second lagged its sound
    assert np.max(np.abs(np.array(written) - times)) < 1e-3
    with av.open(str(out)) as container:
        assert container.streams.audio and abs(container.duration / 1e6 - 2.0) < 0.15


def _marked(height=48, width=80):
    """An asymmetric picture: which way up it is shows in every corner."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:12, :20] = (255, 0, 0)
    picture[-12:, -20:] = (0, 255, 0)
    picture[:12, -20:] = (0, 0, 255)
    return picture


def _stored(path, picture, degrees, hflip=False):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = picture.shape[:2]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        if degrees or hflip:
            stream.set_display_rotation(degrees, hflip=hflip)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_sideways_video_is_turned_upright(tmp_path, degrees):
    upright = _marked()
    # stored turned back by the angle its display matrix turns it on (counter-clockwise)
    stored = _stored(tmp_path / "phone.mp4", np.rot90(upright, -degrees // 90), degrees)
    frame = next(read_frames(stored))
    assert frame.shape == upright.shape
    assert np.abs(frame.astype(int) - upright).mean() < 8


@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command (apt-get install ffmpeg) as the "
                                           "reference for display-matrix orientation")
@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_orientation_matches_ffmpegs_autorotation(tmp_path, degrees, hflip):
    stored = _stored(tmp_path / "phone.mp4", _marked(), degrees, hflip)
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(stored), "-frames:v", "1",
                    str(tmp_path / "ffmpeg.png")], check=True)
    reference = cv2.cvtColor(cv2.imread(str(tmp_path / "ffmpeg.png")), cv2.COLOR_BGR2RGB)
    frame = next(read_frames(stored))
    assert frame.shape == reference.shape
    assert np.abs(frame.astype(int) - reference).mean() < 8


def test_mnt_run_finds_the_face_in_a_sideways_driver(artefacts, env, tmp_path):
    driver = tmp_path / "sideways.mp4"
    face = _face()
    with av.open(str(driver), "w") as container:  # a portrait phone video, stored sideways
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = face.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(-90)
        for i in range(6):
            picture = np.rot90(np.roll(face, i - 3, axis=1), 1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (tmp_path / "targets").mkdir()
    cv2.imwrite(str(tmp_path / "targets" / "a.png"), cv2.cvtColor(_face(256), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.mp4"
    result = mnt_run(driver, "--targets", tmp_path / "targets", "--artifacts", artefacts, "-o", out, env=env)
    assert result.returncode == 0, result.stderr  # before: "no human face found in any frame"
    assert sum(1 for _ in read_frames(out)) == 6
