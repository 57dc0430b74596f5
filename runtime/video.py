"""Video in and out with PyAV (FFmpeg): frames as uint8 RGB, H.264 out with the audio copied."""

from __future__ import annotations

import contextlib
import numbers
import os
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import WRITE_HINT, partial_path, publish, sweep_partials


class DecodeError(RuntimeStageError):
    """A driver that cannot be decoded past some frame; `frames` were read before it."""

    def __init__(self, message: str, frames: int) -> None:
        super().__init__(message)
        self.frames = frames


# FFmpeg's display matrix (a, b, c, d of its 3x3, rounded) -> (np.rot90 turns, then a
# left-right mirror) that shows the frame upright: the eight rotations and mirrors a phone or
# editor writes, as the ffmpeg command's autorotation shows them (checked against it).
_ORIENTATIONS = {
    (1, 0, 0, 1): (0, False), (0, -1, 1, 0): (1, False), (-1, 0, 0, -1): (2, False),
    (0, 1, -1, 0): (3, False), (-1, 0, 0, 1): (0, True), (0, -1, -1, 0): (1, True),
    (1, 0, 0, -1): (2, True), (0, 1, 1, 0): (3, True),
}


def _orientation(frame) -> tuple[int, bool]:
    """How to turn a decoded frame upright, from its display matrix (frame side data, where
    FFmpeg puts the stream's: PyAV 14+ has no stream side data)."""
    from av.sidedata.sidedata import Type

    data = frame.side_data.get(Type.DISPLAYMATRIX)
    if data is None:
        return 0, False
    a, b, _, c, d = struct.unpack("=5i", bytes(data)[:20])
    key = tuple(int(round(v / 65536)) for v in (a, b, c, d))  # 16.16 fixed point
    # any other angle: the nearest quarter turn (FFmpeg's rotation is counter-clockwise)
    return _ORIENTATIONS.get(key, (round(frame.rotation / 90) % 4, False))


def upright(frame) -> np.ndarray:
    """A decoded PyAV frame as uint8 (H, W, 3) RGB, as it is meant to be shown."""
    turns, mirror = _orientation(frame)
    picture = frame.to_ndarray(format="rgb24")
    if turns or mirror:
        picture = np.rot90(picture, turns)
        picture = np.ascontiguousarray(picture[:, ::-1] if mirror else picture)
    return picture


def read_timed_frames(path: str | os.PathLike[str], limit: int | None = None,
                      step: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (source time in seconds, frame) for every `step`-th frame, frames as uint8
    (H, W, 3) RGB turned upright (display-matrix rotation applied), at most `limit` of
    them. Raises DecodeError at a damaged frame."""
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
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        yielded = decoded = 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index % step:
                    continue
                at = frame.time if frame.time is not None else index / rate
                yield float(at), upright(frame)
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
        except av.error.FFmpegError as err:
            raise DecodeError(f"{path}: cannot decode frame {decoded + 1}: {err}", decoded) from err


def _video_stream(container: Any, path: str | os.PathLike[str]) -> Any:
    if not container.streams.video:
        raise RuntimeStageError(f"{path} has no video stream",
                                hint="give a video file (.mp4, .mov, .mkv, .webm, .avi): an audio "
                                     "file or a still image has no picture to drive with")
    return container.streams.video[0]


def read_frames(path: str | os.PathLike[str], limit: int | None = None,
                step: int = 1) -> Iterator[np.ndarray]:
    """Yield every `step`-th frame as uint8 (H, W, 3) RGB, at most `limit` frames."""
    for _, frame in read_timed_frames(path, limit, step):
        yield frame


def video_time_base(path: str | os.PathLike[str]) -> Fraction:
    """The unit the video stream's frame times are counted in (a writer given it keeps
    them exactly, whatever the frame rate does)."""
    import av

    try:
        with av.open(str(path)) as container:
            return Fraction(_video_stream(container, path).time_base or Fraction(1, 90000))
    except (av.error.FFmpegError, OSError) as err:
        raise RuntimeStageError(f"cannot open video {path}: {err}") from err


def video_info(path: str | os.PathLike[str]) -> tuple[Fraction, int, bool]:
    """(frame rate, frame count as the container states it (0 if unknown), has audio)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            return Fraction(rate), int(stream.frames or 0), bool(container.streams.audio)
    except (av.error.FFmpegError, OSError) as err:
        raise RuntimeStageError(f"cannot open video {path}: {err}") from err


class VideoWriter:
    """H.264 (yuv420p) video under a hidden partial name beside `path` (mnt.runtime.files);
    `close` flushes it and moves it onto `path` (without `replace`, only if no file appeared
    there meanwhile); `abort` deletes it. A video cut short (Ctrl-C) is closed as a valid file.

    Each frame keeps its source time (`write(frame, at)`), counted from the first frame
    written, to one tick of `time_base` (default 1 / rate: frame slots of `rate`; give the
    source's time base and a variable-rate source keeps its times exactly); the audio of
    `audio_from` (packets as they are) is cut and shifted by the same start, and muxed as the
    video goes, so that picture and sound stay in sync whatever the frames skipped, and the
    muxer never holds the whole video waiting for audio."""

    def __init__(self, path: str | os.PathLike[str], rate: Fraction, width: int, height: int,
                 audio_from: str | os.PathLike[str] | None = None, crf: int = 18,
                 replace: bool = True, time_base: Fraction | None = None) -> None:
        import av

        self.path = Path(path)
        self.temporary = partial_path(self.path)
        self.replace = replace
        self.frames = 0
        self.width, self.height = width, height
        self.closed = False
        self.rate = Fraction(rate).limit_denominator(1001)
        self.time_base = Fraction(time_base) if time_base else 1 / self.rate
        self.start: float | None = None  # source time of the first frame written
        self.pts = -1  # of the last frame written, in ticks of time_base
        sweep_partials(self.path)
        try:
            self.container = av.open(str(self.temporary), mode="w")
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = width + width % 2, height + height % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(crf), "preset": "veryfast"}
            self.stream.codec_context.time_base = self.stream.time_base = self.time_base
            self.source = av.open(str(audio_from)) if audio_from else None
            self.audio = self._audio_packets = self._pending = None  # (_pending: read, not yet due)
            if self.source is not None and self.source.streams.audio:
                template = self.source.streams.audio[0]
                self.audio = self.container.add_stream_from_template(template)
                self._audio_packets = (p for p in self.source.demux(template) if p.dts is not None)
        except (av.error.FFmpegError, OSError) as err:
            self._discard()
            raise RuntimeStageError(f"cannot write {self.path}: {err}") from err

    def write(self, frame: np.ndarray, at: float | None = None) -> None:
        """One frame; `at`: its time in the source, in seconds (default: the next frame)."""
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
        if at is None:  # one frame of `rate` after the last
            at = (self.start or 0.0) + (self._end() if self.pts >= 0 else 0.0)
        if self.start is None:
            self.start = float(at)
        # the nearest tick, strictly after the last frame's
        self.pts = max(round((at - self.start) / self.time_base), self.pts + 1)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.pts
        self._mux(self.stream.encode(video_frame))
        self.frames += 1
        self._mux_audio(until=self._end())

    def _end(self) -> float:
        """Where the last frame written ends, in seconds of output: one frame of `rate` on."""
        return float(self.pts * self.time_base + 1 / self.rate)

    def _mux(self, packets) -> None:
        import av

        try:
            for packet in packets:
                self.container.mux(packet)
        except (av.error.FFmpegError, OSError) as err:  # a full disk, a vanished folder
            self.abort()
            reason = getattr(err, "strerror", None) or err
            raise RuntimeStageError(f"cannot write {self.path}: {reason}", hint=WRITE_HINT) from err

    def _mux_audio(self, until: float) -> None:
        """The source's audio packets that start before `until` seconds of output."""
        if self._audio_packets is None or self.start is None:
            return
        base = self.source.streams.audio[0].time_base
        shift = round(self.start / base)
        ready = []
        while True:
            packet = self._pending or next(self._audio_packets, None)
            self._pending = None
            if packet is None:
                self._audio_packets = None
                break
            if packet.pts is not None and packet.pts < shift:
                continue  # sound from before the first frame written
            if packet.pts is not None and (packet.pts - shift) * base >= until:
                self._pending = packet
                break
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts -= shift
            packet.stream = self.audio
            ready.append(packet)
        self._mux(ready)

    def close(self) -> Path:
        """Finish the file and move it onto `path` (only if at least one frame was written).
        Closing again (or after abort) does nothing; a failure removes the partial file."""
        import av

        if self.closed:
            return self.path
        self._mux(self.stream.encode())
        self._mux_audio(until=self._end())
        self.closed = True
        try:
            self.container.close()
            if self.frames == 0:
                raise RuntimeStageError(f"no frames were written; {self.path} was not created")
            publish(self.temporary, self.path, self.replace, RuntimeStageError)
        except (av.error.FFmpegError, OSError) as err:
            raise RuntimeStageError(f"cannot write {self.path}: {getattr(err, 'strerror', None) or err}",
                                    hint=WRITE_HINT) from err
        finally:
            self._discard()
        return self.path

    def abort(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.container.close()
        self._discard()

    def _discard(self) -> None:
        source = getattr(self, "source", None)
        if source is not None:
            source.close()
            self.source = None
        with contextlib.suppress(OSError):
            self.temporary.unlink()
