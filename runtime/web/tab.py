"""One browser tab's state on the server: its stream on the hub, its output mode and its
recording. Called from worker threads (each call runs inference or codecs), one call at a
time per tab: the socket's messages are handled in order."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from mnt.runtime.compose import OUTPUTS, backdrop, compose
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.hub import Hub
from mnt.runtime.images import decode_image
from mnt.runtime.video import VideoWriter

JPEG_QUALITY = 85
MAX_PASTE_BACK_SIDE = 960  # paste-back frames go over the socket: keep them a screen's size


def jpeg(image: np.ndarray) -> bytes:
    """uint8 RGB -> JPEG bytes."""
    _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                            JPEG_QUALITY])
    return data.tobytes()


class Tab:
    def __init__(self, hub: Hub, tab_id: str, folder: Path) -> None:
        self.hub, self.id = hub, tab_id
        self.key = secrets.token_urlsafe(18)  # in its recordings' URLs: only this tab knows them
        self.folder = Path(tempfile.mkdtemp(prefix=f"tab-{tab_id}-", dir=folder))  # its recordings
        self.stream: str | None = None
        self.photos: list[bytes] = []
        self.names: list[str] = []
        self.notes: list[str] = []  # the targets' (a photo with several faces: which was used)
        self.mode = "side-by-side"
        self.started = time.monotonic()
        self.frames = 0  # driver frames received
        self.writer: _LazyWriter | None = None
        self.recordings = 0
        self._starts = 0
        self._canvas = None

    def set_targets(self, photos: list[bytes], names: list[str]) -> list[bytes]:
        """Start a stream on these photos -> their aligned crops as JPEG. On a bad photo the
        error is raised and the tab keeps its previous targets."""
        self._starts += 1
        stream = f"{self.id}-{self._starts}"
        notes: list[str] = []
        session = self.hub.start(stream, photos, names, say=notes.append)  # (the old one stays on error)
        self._end_stream()
        self.stream, self.photos, self.names, self.notes = stream, photos, names, notes
        self._canvas = backdrop(session.targets.photo, session.targets.crops[0], MAX_PASTE_BACK_SIDE)
        return [jpeg(crop.image) for crop in session.targets.crops]

    def set_mode(self, mode: str) -> None:
        if mode not in OUTPUTS:
            raise RuntimeStageError(f"unknown output mode {mode!r}",
                                    hint=f"choose one of {', '.join(OUTPUTS)}")
        if self.writer is not None and mode != self.mode:
            raise RuntimeStageError("the output mode cannot change while recording",
                                    hint="stop the recording first")
        self.mode = mode

    def frame(self, data: bytes) -> tuple[bytes, bytes, dict[str, float]] | None:
        """A driver frame (JPEG bytes) -> (driver crop JPEG, output JPEG, server times in ms),
        or None while no face has been seen."""
        self.frames += 1
        if self.stream is None:
            raise RuntimeStageError("no target photo yet", hint="drop a photo or pick the astronaut first")
        began = time.perf_counter()
        image = decode_image(data, f"driver frame {self.frames}")
        if image is None:
            raise RuntimeStageError(f"driver frame {self.frames}: not a readable JPEG image",
                                    hint="send the camera's frames as JPEG")
        if self.stream not in self.hub.streams:  # ended by the hub after a long pause: resume
            self.hub.start(self.stream, self.photos, self.names)
        decoded = time.perf_counter()
        out = self.hub.frame(self.stream, image, time.monotonic() - self.started)
        reenacted = time.perf_counter()
        if out is None:
            return None
        face, crop = out
        picture = compose(self.mode, face, crop, self._canvas)
        if self.writer is not None:
            self.writer.write(picture, time.monotonic() - self.started)
        answer = jpeg(crop.image), jpeg(picture)
        ms = {"decode": decoded - began, "model": reenacted - decoded,
              "encode": time.perf_counter() - reenacted}
        return (*answer, {k: round(1000 * v, 1) for k, v in ms.items()})

    def record(self, on: bool) -> str | None:
        """Start (-> None) or stop a recording (-> the finished mp4's file name)."""
        if on:
            if self.writer is None:
                self.recordings += 1
                self.writer = _LazyWriter(self.folder / f"mnt-web-{self.recordings}.mp4")
            return None
        writer, self.writer = self.writer, None
        if writer is None or not writer.frames:
            if writer is not None:
                writer.abort()
            raise RuntimeStageError("nothing was recorded: no reenacted frame came while recording",
                                    hint="start the camera and face it, then record")
        return writer.close().name

    def recording(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.parent == self.folder and path.is_file() else None

    def _end_stream(self) -> None:
        if self.stream is not None:
            self.hub.end(self.stream, " (new targets)")
            self.stream = None

    def close(self) -> None:
        """The tab went away: end its stream, drop its recordings."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        if self.stream is not None:
            self.hub.end(self.stream, " (tab closed)")
            self.stream = None
        shutil.rmtree(self.folder, ignore_errors=True)


class _LazyWriter:
    """A VideoWriter opened at the first frame (its size is the first frame's), times in ms."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer = path, None

    @property
    def frames(self) -> int:
        return 0 if self.writer is None else self.writer.frames

    def write(self, picture: np.ndarray, at: float) -> None:
        if self.writer is None:
            self.writer = VideoWriter(self.path, Fraction(1000), picture.shape[1], picture.shape[0])
        self.writer.write(picture, at)

    def close(self) -> Path:
        assert self.writer is not None
        return self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
