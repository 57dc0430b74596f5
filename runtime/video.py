"""Video in and out with PyAV (FFmpeg): frames as uint8 RGB, H.264 out with the audio copied."""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from mnt.runtime.errors import RuntimeStageError


def read_frames(path: str | os.PathLike[str], limit: int | None = None,
                step: int = 1) -> Iterator[np.ndarray]:
    """Yield every `step`-th frame as uint8 (H, W, 3) RGB, at most `limit` frames."""
    import av  # imported here: reading videos is the only use, and PyAV loads FFmpeg

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral)
                              or limit < 0):
        raise RuntimeStageError(f"read_frames: limit must be None or an integer >= 0, got {limit!r}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise RuntimeStageError(f"read_frames: step must be an integer >= 1, got {step!r}")
    if limit == 0:
        return

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise RuntimeStageError(f"cannot open video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise RuntimeStageError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yielded = 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % step:
                    continue
                yield frame.to_ndarray(format="rgb24")
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
        except av.error.FFmpegError as err:
            raise RuntimeStageError(f"{path}: cannot decode frame {index + 1}: {err}") from err


def video_info(path: str | os.PathLike[str]) -> tuple[Fraction, int, bool]:
    """(frame rate, frame count as the container states it (0 if unknown), has audio)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise RuntimeStageError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            return Fraction(rate), int(stream.frames or 0), bool(container.streams.audio)
    except (av.error.FFmpegError, OSError) as err:
        raise RuntimeStageError(f"cannot open video {path}: {err}") from err


class VideoWriter:
    """H.264 (yuv420p) video under a temporary name beside `path`; `close` flushes it, copies
    the audio of `audio_from` (packets as they are, cut at the video's end) and renames it
    onto `path`; `abort` deletes it. A video cut short (Ctrl-C) is closed as a valid file."""

    def __init__(self, path: str | os.PathLike[str], rate: Fraction, width: int, height: int,
                 audio_from: str | os.PathLike[str] | None = None, crf: int = 18) -> None:
        import av

        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self.frames = 0
        self.width, self.height = width, height
        self.closed = False
        self.rate = Fraction(rate).limit_denominator(1001)
        try:
            self.container = av.open(str(self.temporary), mode="w")
        except (av.error.FFmpegError, OSError) as err:
            raise RuntimeStageError(f"cannot write {self.path}: {err}") from err
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.source = av.open(str(audio_from)) if audio_from else None
        self.audio = None
        if self.source is not None and self.source.streams.audio:
            self.audio = self.container.add_stream_from_template(self.source.streams.audio[0])

    def write(self, frame: np.ndarray) -> None:
        import av

        if self.closed:
            raise RuntimeStageError(f"{self.path}: write after close")
        want = (self.height, self.width, 3)
        if not isinstance(frame, np.ndarray) or frame.shape != want or frame.dtype != np.uint8:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise RuntimeStageError(f"{self.path}: frame {self.frames + 1} must be uint8 {want}, got {got}")
        if frame.shape[:2] != (self.stream.height, self.stream.width):
            frame = np.pad(frame, ((0, self.stream.height - frame.shape[0]),
                                   (0, self.stream.width - frame.shape[1]), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)
        self.frames += 1

    def _copy_audio(self) -> None:
        assert self.source is not None and self.audio is not None
        end = self.frames / self.rate  # seconds of video written
        source_stream = self.source.streams.audio[0]
        for packet in self.source.demux(source_stream):
            if packet.dts is None:
                continue
            if packet.pts is not None and packet.pts * source_stream.time_base >= end:
                break
            packet.stream = self.audio
            self.container.mux(packet)

    def close(self) -> Path:
        """Finish the file and move it onto `path` (only if at least one frame was written).
        Closing again (or after abort) does nothing."""
        if self.closed:
            return self.path
        self.closed = True
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            if self.audio is not None:
                self._copy_audio()
        finally:
            self.container.close()
            if self.source is not None:
                self.source.close()
        if self.frames == 0:
            self.temporary.unlink(missing_ok=True)
            raise RuntimeStageError(f"no frames were written; {self.path} was not created")
        os.replace(self.temporary, self.path)
        return self.path

    def abort(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.container.close()
        if self.source is not None:
            self.source.close()
        self.temporary.unlink(missing_ok=True)
