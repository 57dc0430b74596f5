"""Where driver frames come from: one interface for files, cameras and paced replays.

A source yields (time in seconds on its own clock, uint8 RGB frame). A `live` one delivers
in real time whether or not anyone keeps up (a camera): the pipelined path then drops
frames rather than queue them, so that latency stays bounded. A file is not live: it waits
for the pipeline, and every frame is used."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Protocol

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.video import read_timed_frames, video_info, video_time_base


class FrameSource(Protocol):
    live: bool
    rate: Fraction  # nominal frames per second (what a recording is written at)
    count: int  # frames, as far as known (0: not known, as for a camera)
    audio_from: str | None  # a file whose audio a recording copies
    time_base: Fraction | None  # the unit of a file's frame times (None: the clock's)

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]: ...


class VideoSource:
    """A video file, frame by frame at its own pace (not live)."""

    live = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.rate, self.count, has_audio = video_info(path)
        self.time_base = video_time_base(path)
        self.audio_from = self.path if has_audio else None

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return read_timed_frames(self.path)


class PacedSource(VideoSource):
    """A video file delivered in real time, as a camera would (`speed` times as fast): a
    frame not taken when the next is due is the pipeline's to drop. For rehearsing a live
    set-up, and for testing the live path without a camera."""

    live = True

    def __init__(self, path: str | os.PathLike[str], speed: float = 1.0) -> None:
        super().__init__(path)
        if not speed > 0:
            raise RuntimeStageError(f"PacedSource: speed must be > 0, got {speed!r}")
        self.speed = speed

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        started = None
        for at, frame in read_timed_frames(self.path):
            if started is None:
                started = time.monotonic() - at / self.speed
            delay = started + at / self.speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield at, frame


class CameraSource:
    """A camera through OpenCV: live; times from the monotonic clock at capture (OpenCV
    gives no reliable camera clock), so a slow pipeline records at the pace it really kept."""

    live = True
    audio_from = None
    time_base = None
    count = 0

    def __init__(self, index: int, rate: Fraction = Fraction(30)) -> None:
        self.index, self.rate = index, rate

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        import cv2

        capture = cv2.VideoCapture(self.index)
        if not capture.isOpened():
            raise RuntimeStageError(f"cannot open camera {self.index}")
        started = None
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                started = started if started is not None else time.monotonic()
                yield time.monotonic() - started, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
