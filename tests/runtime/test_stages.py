"""The pipelined frame path: order kept, errors in order, stages stopped when the caller
stops, and a live source that outruns the pipeline dropping frames to keep latency bounded."""

import subprocess
import threading
import time

import av
import numpy as np
import pytest

from mnt.runtime.sources import PacedSource
from mnt.runtime.stages import DEPTH, Counters, reenact
from mnt.runtime.video import DecodeError, read_timed_frames
from tests.helpers import console_script, talking_clip


class Source:
    """`count` frames 1/`rate` s apart; frame i is filled with i (0: no face). A live one
    delivers them in real time; `fail_at` raises as a damaged driver would."""

    def __init__(self, count, rate=100.0, live=False, fail_at=None):
        self.count, self.rate, self.live, self.fail_at = count, rate, live, fail_at

    def __iter__(self):
        started = time.monotonic()
        for i in range(self.count):
            if i == self.fail_at:
                raise DecodeError(f"cannot decode frame {i + 1}", i)
            if self.live:
                time.sleep(max(0.0, started + i / self.rate - time.monotonic()))
            yield i / self.rate, np.full((2, 2, 3), i % 256, np.uint8)


class Stream:
    """DriverStream's two steps, each taking `seconds`; a frame filled with 0 has no face."""

    def __init__(self, seconds=0.0):
        self.seconds = seconds
        self.steps = []

    def landmarks(self, frame, at):
        time.sleep(self.seconds)
        self.steps.append(("landmarks", int(frame[0, 0, 0])))
        return None if frame[0, 0, 0] == 0 else ("crop", int(frame[0, 0, 0]))

    def generate(self, crop, driver):
        time.sleep(self.seconds)
        self.steps.append(("generate", driver))
        return f"face {driver}", crop


@pytest.mark.parametrize("pipelined", [True, False])
def test_every_frame_of_a_file_in_order(pipelined):
    items = list(reenact(Source(40), Stream(), pipelined=pipelined))
    assert [i.index for i in items] == list(range(40))
    assert items[0].produced is None  # frame 0: no face yet
    assert [i.produced[0] for i in items[1:]] == [f"face {n}" for n in range(1, 40)]
    assert [round(i.at, 2) for i in items[:3]] == [0.0, 0.01, 0.02]


def test_a_driver_that_breaks_off_raises_after_the_frames_before_it():
    got = []
    with pytest.raises(DecodeError, match="frame 8"):
        for item in reenact(Source(20, fail_at=7), Stream()):
            got.append(item.index)
    assert got == list(range(7))


def test_an_error_in_a_stage_is_raised_in_order():
    class Failing(Stream):
        def generate(self, crop, driver):
            if driver == 5:
                raise RuntimeError("the generator failed")
            return super().generate(crop, driver)

    got = []
    with pytest.raises(RuntimeError, match="the generator failed"):
        for item in reenact(Source(20), Failing()):
            got.append(item.index)
    assert got == list(range(5))


def test_leaving_the_loop_stops_every_stage():
    for item in reenact(Source(1000), Stream(0.001)):
        if item.index == 3:
            break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(t.name.startswith("mnt-") for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("mnt-")]


def test_a_live_source_faster_than_the_pipeline_drops_frames_and_latency_stays_bounded():
    # 100 frames at 100 fps (1 s), each stage 30 ms: without dropping, the last frames would
    # wait about 2 s; dropped, no more than the few frames the queues hold
    counters = Counters()
    items = list(reenact(Source(100, live=True), Stream(0.03), counters=counters))
    assert counters.dropped > 30 and len(items) + counters.dropped == 100
    assert [i.index for i in items] == sorted(i.index for i in items)  # order kept
    bound = (3 * DEPTH + 4) * 0.03
    assert max(counters.latencies) < max(bound, 0.6), counters.latencies
    # the same frames from a file: none dropped, and the wait grows
    slow = Counters()
    assert len(list(reenact(Source(100), Stream(0.03), counters=slow))) == 100 and slow.dropped == 0


def test_a_paced_source_delivers_in_real_time(tmp_path):
    clip = talking_clip(tmp_path / "clip.mp4", faces=25, size=64)  # 1 s at 25 fps
    source = PacedSource(clip, speed=2.0)
    started = time.monotonic()
    times = [at for at, _ in source]
    took = time.monotonic() - started
    assert source.live and len(times) == 25 and times == [at for at, _ in read_timed_frames(clip)]
    assert took >= 0.45  # half a second at twice the speed: it waited for each frame's time


def test_mnt_run_live_records_real_time_with_dropped_frames(tiny_artefacts, tmp_path):
    pytest.importorskip("mediapipe")
    import cv2
    from skimage import data

    targets = tmp_path / "targets"
    targets.mkdir()
    cv2.imwrite(str(targets / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    driver = talking_clip(tmp_path / "driver.mp4", faces=50)  # 2 s at 25 fps: more than the CPU keeps up with
    out = tmp_path / "live.mp4"
    result = subprocess.run([console_script("mnt-run"), str(driver), "--targets", str(targets), "--artifacts",
                             str(tiny_artefacts("fp32")), "-o", str(out), "--live"], capture_output=True,
                            text=True, timeout=600, env={"MNT_CACHE_DIR": str(tmp_path / "cache"),
                                                         **__import__("os").environ})
    assert result.returncode == 0, result.stderr
    assert "frames dropped to keep up" in result.stderr
    times = [at for at, _ in read_timed_frames(out)]
    assert 1 < len(times) < 50
    # kept at their real times: the recording spans the driver's 2 s, not a sped-up fraction
    assert times[-1] > 1.4
    with av.open(str(out)) as container:
        assert container.streams.audio  # the driver's audio came along


def test_a_camera_is_live_with_times_from_the_clock(monkeypatch):
    import cv2

    from mnt.runtime.errors import RuntimeStageError
    from mnt.runtime.sources import CameraSource

    class Capture:  # three BGR frames, 20 ms apart, then the camera is gone
        def __init__(self, index):
            self.left, self.released = 3 if index == 0 else 0, False

        def isOpened(self):
            return self.left > 0

        def read(self):
            time.sleep(0.02)
            self.left -= 1
            return self.left >= 0, np.array([[[255, 0, 0]]], np.uint8)  # blue, in BGR

        def release(self):
            self.released = True

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    source = CameraSource(0)
    got = list(source)
    assert source.live and len(got) == 3 and got[0][0] < 0.01
    assert all(b[0] - a[0] >= 0.015 for a, b in zip(got, got[1:], strict=False))  # wall-clock times
    assert got[0][1][0, 0].tolist() == [0, 0, 255]  # RGB
    with pytest.raises(RuntimeStageError, match="cannot open camera 1"):
        list(CameraSource(1))
