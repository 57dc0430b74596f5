"""Many streams on one loaded model, keyed by an id: what a server holds (mnt-serve, the
web page, the Triton model). A stream starts with its target photos, then takes driver
frames one at a time, and ends; a stream left idle longer than `idle_s` is ended by the
hub, so a client that goes away frees its state."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnt.runtime.align import Crop
from mnt.runtime.backends.base import Backend
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.images import decode_image
from mnt.runtime.landmarkers import landmark_backend
from mnt.runtime.landmarkers.base import LandmarkBackend
from mnt.runtime.pipeline import DriverStream, Targets, checked_photo, encode_photos
from mnt.runtime.reenactor import Reenactor


@dataclass
class Session:
    """One stream's state on the hub."""

    id: str
    targets: Targets
    driver: DriverStream
    tracker: LandmarkBackend
    used: float = field(default_factory=time.monotonic)
    frames: int = 0
    clock: float | None = None  # the last frame's time in the stream, seconds
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def close(self) -> None:
        with self.lock:  # (after the frame it may be running)
            self.closed = True
            self.driver.close()
            self.tracker.close()


class Hub:
    """`folder`: an artefact folder; `backend`/`landmarks` as mnt-run's options. With
    `backends` (a factory of name -> Backend, for the model's and the face components) the
    engines are given, not loaded (the Triton model's calls to its component models); it
    is called for the model and for each landmark tracker, which activate and close their own."""

    def __init__(self, folder: str | Path, backend: str = "auto", landmarks: str = "auto",
                 transform: bool = True, max_streams: int = 16, idle_s: float = 60.0,
                 cache: Path | None = None, backends: Callable[[], dict[str, Backend]] | None = None,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.folder = Path(folder)
        self.transform, self.max_streams, self.idle_s = transform, max_streams, idle_s
        self.cache, self.say = cache, say
        self._made = backends
        self.model = Reenactor(self.folder, backend=backend, check_files=backends is None,
                               backends=self._given(lambda name: not name.startswith("face_")))
        self._faces = {"artifacts": self.folder, "backend": backend, "landmarks": landmarks}
        self._photos = self._landmarker(True)
        self._photos_lock = threading.Lock()
        self._sessions: dict[str, Session | None] = {}  # None: reserved while its targets encode
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="mnt-hub-reaper", daemon=True)
        self._reaper.start()

    @property
    def size(self) -> int:
        return self.model.size

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def start(self, stream: str, photos: Sequence[bytes | np.ndarray], names: Sequence[str] = (),
              rate: float = 30.0, say: Callable[[str], None] | None = None) -> Session:
        """Start `stream` with 1 to K target photos (image files' bytes, or uint8 RGB arrays);
        `say`: where the targets' notes go (a photo with several faces), besides the hub's."""
        stream = _checked_id(stream)
        lo, hi = self.model.target_range
        if not lo <= len(photos) <= hi:
            raise RuntimeStageError(f"stream {stream!r}: {len(photos)} target photos; these artefacts take "
                              f"{lo} to {hi}", hint="send 1 to 8 photos of one person")
        with self._lock:
            self._check_room(stream)
            self._sessions[stream] = None
        try:
            session = self._open(stream, photos, names, rate, say)
        except BaseException:
            with self._lock:
                self._sessions.pop(stream, None)
            raise
        with self._lock:
            self._sessions[stream] = session
        self.say(f"stream {stream}: started with {len(photos)} target photo(s)")
        return session

    def _check_room(self, stream: str) -> None:
        if stream in self._sessions:
            raise RuntimeStageError(f"stream {stream!r} is already running",
                                    hint="end it first, or start the new one under another id")
        if len(self._sessions) >= self.max_streams:
            raise RuntimeStageError(f"the server runs its most streams ({self.max_streams}); {stream!r} "
                                    "was not started", hint="end a stream, or allow more (--max-streams)")

    def _open(self, stream: str, photos: Sequence[bytes | np.ndarray], names: Sequence[str],
              rate: float, say: Callable[[str], None] | None) -> Session:
        decoded = []
        for index, photo in enumerate(photos):
            name = Path(names[index] if index < len(names) else f"target {index + 1}")
            image = decode_image(photo, name) if isinstance(photo, bytes) else rgb_pixels(photo, name)
            if image is None:
                raise RuntimeStageError(f"{name}: not a readable image (damaged, cut short or not a photo)",
                                        hint="send JPEG or PNG files")
            decoded.append((name, checked_photo(name, image)))
        with self._photos_lock:
            targets = encode_photos(decoded, self.model, self._photos, self.cache,
                                    self.say if say is None else lambda line: (self.say(line), say(line)))
        tracker = self._landmarker(False)
        return Session(stream, targets, DriverStream(self.model, targets, tracker, rate, self.transform),
                       tracker)

    def _given(self, wanted: Callable[[str], bool]) -> dict[str, Backend] | None:
        return None if self._made is None else {n: b for n, b in self._made().items() if wanted(n)}

    def _landmarker(self, static: bool) -> LandmarkBackend:
        given = self._given(lambda name: name.startswith("face_"))
        return landmark_backend(static, **self._faces, **({} if given is None else {"backends": given}))

    def session(self, stream: str) -> Session:
        with self._lock:
            session = self._sessions.get(stream)
        if session is None:
            what = "is still starting" if stream in self.streams else "is not running"
            raise RuntimeStageError(f"stream {stream!r} {what}",
                                    hint="start it with its target photos first (it ends after "
                                         f"{self.idle_s:g} s without frames)")
        return session

    def frame(self, stream: str, frame: np.ndarray, at: float | None = None
              ) -> tuple[np.ndarray, Crop] | None:
        """One driver frame (uint8 RGB) at `at` seconds -> (reenacted face, the driver's crop),
        or None while no face has been seen yet in this stream. Times must be finite and
        increase; a frame without one comes 1/rate after the stream's previous frame (so
        frames with and without times mix). A refused frame leaves the stream as it was."""
        session = self.session(stream)
        frame = rgb_pixels(frame, f"stream {stream!r}: driver frame")
        with session.lock:
            if session.closed:
                raise RuntimeStageError(f"stream {stream!r} ended while this frame waited")
            at = _next_time(session, at)
            session.used, session.clock = time.monotonic(), at
            out = session.driver(frame, at)
            session.used = time.monotonic()
            session.frames += 1
        return out

    def end(self, stream: str, why: str = "") -> bool:
        """End `stream` and free its state; False when it was not running."""
        with self._lock:
            session = self._sessions.get(stream)
            if session is None:
                return False
            del self._sessions[stream]
        session.close()
        self.say(f"stream {stream}: ended after {session.frames} frame(s){why}")
        return True

    def _reap(self) -> None:
        while not self._closed.wait(min(max(self.idle_s / 4, 0.05), 5.0)):
            now = time.monotonic()
            with self._lock:
                idle = [s.id for s in self._sessions.values()
                        if s is not None and not s.lock.locked() and now - s.used > self.idle_s]
            for stream in idle:
                self.end(stream, f", {self.idle_s:g} s without one")

    def close(self) -> None:
        self._closed.set()
        for stream in self.streams:
            self.end(stream)
        self._photos.close()
        self.model.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _next_time(session: Session, at: float | None) -> float:
    if at is None:
        return 0.0 if session.clock is None else session.clock + 1 / session.driver.rate
    at = float(at)
    if not math.isfinite(at) or (session.clock is not None and not at > session.clock):
        after = "" if session.clock is None else f" after {session.clock:g} s"
        raise RuntimeStageError(f"stream {session.id!r}: frame time {at:g} s{after}: times must be "
                                "finite and increase",
                                hint="send increasing times in seconds, or none (each frame then comes "
                                     f"1/{session.driver.rate:g} s after the last)")
    return at


def _checked_id(stream: object) -> str:
    if not isinstance(stream, str) or not stream or len(stream) > 128:
        raise RuntimeStageError(f"a stream id must be a string of 1 to 128 characters, got {stream!r}")
    return stream


def rgb_pixels(image: object, name: object) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise RuntimeStageError(f"{name}: expected uint8 RGB pixels (height, width, 3), got {got}")
    return image
