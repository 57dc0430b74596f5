"""A client of the `mnt_reenact` model (mnt-serve, or the exported repository on NVIDIA's
Triton): one `RemoteStream` per stream, over gRPC (grpc://HOST:PORT) or HTTP (http://...).

    with RemoteStream("grpc://127.0.0.1:8001", photos) as stream:
        face, crop = stream.frame(rgb, at=0.04) or (None, None)
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np

from mnt.runtime.align import Crop
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.hub import rgb_pixels
from mnt.runtime.pipeline import Timings
from mnt.runtime.serve.protocol import MODEL, OUTPUTS, REFUSED, pack_photos

CLIENT_HINT = "pip install 'mnt[serve]' (tritonclient)"
_ids = itertools.count(1)
_id_lock = threading.Lock()


def new_correlation_id() -> int:
    """Unique among this process's streams and, with the PID and the clock in it, across
    the clients of one server (below 2**63: gRPC carries Triton's IDs as signed 64-bit)."""
    with _id_lock:
        serial = next(_ids) & 0xFFFFFF
    return ((int(time.time() * 1000) & 0x7FFFFF) << 40 | (os.getpid() & 0xFFFF) << 24 | serial) or 1


def connect(url: str) -> tuple[Any, Any, str]:
    """URL -> (its tritonclient module, a client, the address). tritonclient's HTTP client
    (gevent) works only on the thread that made it: make one per thread."""
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.scheme not in ("grpc", "http") or not parsed.hostname or not parsed.port:
        raise RuntimeStageError(f"server {url!r} is not grpc://HOST:PORT or http://HOST:PORT",
                                hint="e.g. grpc://127.0.0.1:8001, what mnt-serve prints")
    try:
        if parsed.scheme == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as err:
        raise RuntimeStageError(f"talking to a Triton server needs tritonclient: {err}",
                                hint=CLIENT_HINT) from err
    address = f"{parsed.hostname}:{parsed.port}"
    return module, module.InferenceServerClient(address), address


class RemoteStream:
    """One stream on a server: started with its target photos (image files' bytes), one
    call per driver frame, ended on close. Not for use from several threads at once."""

    def __init__(self, url: str, photos: Sequence[bytes], names: Sequence[str] = ()) -> None:
        self.url = url
        self._module, client, _ = connect(url)
        self._local = threading.local()
        self._local.client = client
        self.id = new_correlation_id()
        self.timings = Timings()
        try:
            ready = self._client.is_model_ready(MODEL)
        except Exception as err:  # tritonclient raises its own errors, and the transport's
            raise RuntimeStageError(f"no Triton server answers at {url}: {_reason(err)}",
                                    hint="start one with `mnt-serve`, or check the address") from err
        if not ready:
            raise RuntimeStageError(f"the server at {url} has no ready {MODEL} model",
                                    hint="serve an artefact folder with mnt-serve, or load the "
                                         "exported repository's models")
        # Triton's sequence batcher (the exported repository) takes the stream's ID and flags
        # as request fields; mnt-serve (PyTriton) as inputs.
        config = self._client.get_model_config(MODEL)
        config = getattr(config, "config", None) or (config if isinstance(config, dict) else {})
        self._sequenced = bool(config.get("sequence_batching") if isinstance(config, dict)
                               else config.HasField("sequence_batching"))
        batch = config.get("max_batch_size", 0) if isinstance(config, dict) else config.max_batch_size
        self._batched = int(batch) > 0  # (then each input has a batch axis of 1)
        self._open = False
        out = self._call(start=True, targets=list(photos), names=list(names))
        self._open = True
        self.target_crops = list(out["TARGET_CROPS"])
        self.target_matrices = list(out["TARGET_MATRICES"])

    def frame(self, frame: np.ndarray, at: float | None = None) -> tuple[np.ndarray, Crop] | None:
        """One driver frame (uint8 RGB) -> (reenacted face, the driver's crop: its image
        only), or None while the server has seen no face in this stream."""
        frame = rgb_pixels(frame, "driver frame")  # (what the server would refuse, refused here)
        started = time.perf_counter()
        out = self._call(frame=frame, at=at)
        self.timings.generator += time.perf_counter() - started
        if not out["FOUND"].reshape(-1)[0]:
            self.timings.frames_without_face += 1
            return None
        self.timings.frames += 1
        return out["FACE"], Crop(out["CROP"], np.zeros((68, 3)), np.zeros((2, 3)))

    def close(self) -> None:
        """End the stream on the server (its state is freed there)."""
        if self._open:
            self._open = False
            try:
                self._call(end=True)
            except RuntimeStageError:
                pass  # (the server is gone, or dropped the stream after its idle time)

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self.url)[1]
        return client

    def _call(self, start: bool = False, end: bool = False, targets: list[bytes] | None = None,
              names: list[str] | None = None, frame: np.ndarray | None = None,
              at: float | None = None) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        if targets is not None:
            arrays.update(pack_photos(targets))
        if names:
            arrays["TARGET_NAMES"] = np.frombuffer("\n".join(names).encode(), np.uint8)
        if frame is not None:
            arrays["FRAME"] = np.ascontiguousarray(frame)
        if at is not None:
            arrays["TIME"] = np.array([at], np.float64)
        flags: dict[str, Any] = {}
        if self._sequenced:
            flags = {"sequence_id": self.id, "sequence_start": start, "sequence_end": end}
        else:
            arrays.update(CORRID=np.array([self.id], np.uint64), START=np.array([start]),
                          END=np.array([end]))
        if self._batched:
            arrays = {name: array[None] for name, array in arrays.items()}
        inputs = []
        for name, array in arrays.items():
            item = self._module.InferInput(name, list(array.shape), _TRITON_TYPES[array.dtype.type])
            item.set_data_from_numpy(array)
            inputs.append(item)
        try:
            result = self._client.infer(MODEL, inputs, **flags)
        except Exception as err:
            raise RuntimeStageError(f"{self.url}: {_reason(err)}") from err
        # (an output that does not apply to the request does not come)
        out = {s.name: array for s in OUTPUTS if (array := result.as_numpy(s.name)) is not None}
        return {name: array[0] for name, array in out.items()} if self._batched else out


class RemoteDriver:
    """mnt-run's two frame steps (pipeline.DriverStream's) over a RemoteStream: the first
    hands the frame on, the second is the request (the server runs both of its steps)."""

    def __init__(self, remote: RemoteStream) -> None:
        self.remote, self.timings = remote, remote.timings

    def landmarks(self, frame: np.ndarray, at: float | None = None) -> tuple[np.ndarray, float | None]:
        return frame, at

    def generate(self, frame: np.ndarray, at: float | None) -> tuple[np.ndarray, Crop] | None:
        return self.remote.frame(frame, at)

    def close(self) -> None:
        self.remote.close()


_TRITON_TYPES = {np.uint8: "UINT8", np.uint64: "UINT64", np.int64: "INT64", np.bool_: "BOOL",
                 np.float64: "FP64"}


def _reason(err: Exception) -> str:
    """A refusal's reason, else tritonclient's message without its wrapping."""
    message = getattr(err, "message", None)
    text = message() if callable(message) else str(err)
    if REFUSED in text:
        return text.rsplit(f"{REFUSED}: ", 1)[-1].split("\n", 1)[0].strip()
    return text.split("] ", 1)[-1].strip() if text.startswith("[") else text.strip()


@dataclass
class RemoteTargets:
    """What mnt-run's summary and paste-back read of the targets (pipeline.Targets' names)."""

    files: list[Path]
    crops: list[Crop]
    photo: np.ndarray
    cache_hit: bool = False


def remote_driver(url: str, folder: Path, say: Callable[[str], None]) -> tuple[RemoteDriver, RemoteTargets]:
    """mnt-run --server: FOLDER's photos (read and checked as mnt-run reads them) start a
    stream on the server at URL."""
    from mnt.runtime.pipeline import read_photos

    photos = read_photos(folder, 8, say)
    remote = RemoteStream(url, [encoded(image) for _, image in photos], [p.name for p, _ in photos])
    crops = [Crop(image, np.zeros((68, 3)), matrix)
             for image, matrix in zip(remote.target_crops, remote.target_matrices, strict=True)]
    return RemoteDriver(remote), RemoteTargets([p for p, _ in photos], crops, photos[0][1])


def encoded(image: np.ndarray) -> bytes:
    """uint8 RGB -> PNG bytes (lossless: the server decodes the pixels read here)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeStageError("could not encode a target photo as PNG")
    return data.tobytes()
