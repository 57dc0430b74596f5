"""The reenactment runtime: one loaded model (`Reenactor`) serving any number of streams.

`encode_targets` runs the target phase once (target encoder, target landmark transformer)
and returns an immutable `TargetState`; `generate` runs the frame phase (driver landmark
transformer, rasteriser, generator) for one driver frame. Faces come in already cropped
to the model's input size, with their 68 landmarks in crop pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnt.runtime.backends.base import Backend
from mnt.runtime.backends.registry import make_backends
from mnt.runtime.errors import MntError, RuntimeStageError
from mnt.runtime.files import atomic_path
from mnt.runtime.input_checks import check_landmarks, state_problem
from mnt.runtime.landmarks import LandmarkStats, LandmarkTransformer
from mnt.runtime.manifest import (
    MANIFEST_NAME,
    REBUILD_HINT,
    STATS_NAME,
    check_hashes,
    load_manifest,
)
from mnt.runtime.rasterize import rasterize, to_model_input


@dataclass(frozen=True)
class TargetState:
    """Everything the frame phase needs from K target photos (arrays are read-only)."""

    feeds: dict[str, np.ndarray]  # the generator's target inputs: keys_*, values_*, warped_*
    identity: np.ndarray  # (68, 3) l̂_id averaged over the targets (normalised frame)
    k: int
    key: str  # cache key: artefact and target contents
    artefact_key: str = ""  # the Reenactor.artefact_key of the model that made it

    def save(self, handle: BinaryIO) -> None:
        np.savez(handle, identity=self.identity, k=np.int64(self.k), **self.feeds)

    @classmethod
    def load(cls, path: Path, key: str, artefact_key: str = "") -> TargetState:
        """Raises OSError, EOFError, ValueError, KeyError or zipfile.BadZipFile on a damaged file."""
        with np.load(path, allow_pickle=False) as data:
            feeds = {name: _frozen(data[name]) for name in data.files if name not in ("identity", "k")}
            k = np.asarray(data["k"])
            if k.shape != () or not np.isfinite(k) or float(k) != int(k):  # inf and 2.5 too (fuzzed)
                raise ValueError(f"target count {k!r} is not a whole number")
            return cls(feeds, _frozen(data["identity"]), int(k), key, artefact_key)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.setflags(write=False)
    return array


def load_stats(folder: Path) -> LandmarkStats:
    """The folder's landmark statistics, checked by value (hashes only say they are the
    build's, and a build from a bad checkpoint hashes bad numbers)."""
    path = folder / STATS_NAME
    try:
        with np.load(path, allow_pickle=False) as data:
            return LandmarkStats(mean=data["mean"], basis=data["basis"], coef_mean=data["coef_mean"],
                                 coef_std=data["coef_std"], lambda_exp=float(data["lambda_exp"]))
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise RuntimeStageError(f"{path} is missing or unreadable: {err}", hint=REBUILD_HINT) from err
    except RuntimeStageError as err:
        raise RuntimeStageError(f"{path}: {err}", hint=REBUILD_HINT) from err


class Reenactor:
    """One loaded artefact folder: the model, shared and never changed by a stream. Its own
    `driver_landmarks` and `generate` serve one stream at a time (the backends reuse their
    buffers); `stream(state)` makes a `Stream` for each of any number of concurrent ones."""

    def __init__(self, folder: str | Path, backend: str = "auto", allow_fallback: bool = False,
                 check_files: bool = True, backends: dict[str, Backend] | None = None,
                 **options: object) -> None:
        """`backend`: a name from the backend registry (`options` go to its factory, e.g.
        the torch backend's `checkpoint`); `backends`: ready-made (not yet active) backends,
        one per component, instead (mnt-bench wraps its engines this way)."""
        self.folder = Path(folder)
        self.manifest = load_manifest(self.folder)
        if check_files:
            changed = check_hashes(self.folder, self.manifest, goldens=False)
            if changed:
                raise RuntimeStageError(f"{self.folder}: {', '.join(changed)} changed since the build",
                                        hint=REBUILD_HINT)
        self.size = int(self.manifest.model["image_size"])
        self.stats = load_stats(self.folder)
        self.backends = backends or make_backends(self.folder, self.manifest, backend, allow_fallback,
                                                  **options)
        for b in self.backends.values():
            b.activate()
        self.transformer = LandmarkTransformer(self.stats, self._coefficients)
        self.artefact_key = hashlib.sha256(
            (self.folder / MANIFEST_NAME).read_bytes()).hexdigest()

    @property
    def target_range(self) -> tuple[int, int]:
        """How many target photos (K) the artefacts accept: (fewest, most)."""
        lo, hi = self.manifest.components["target_encoder"].dims["K"]
        return int(lo), int(hi)

    def close(self) -> None:
        for b in self.backends.values():
            b.deactivate()

    def __enter__(self) -> Reenactor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _coefficients(self, images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = self.backends["landmark_disentangler"].infer(
            {"images": images, "landmark_offsets": offsets})
        return np.array(out["coefficients"], dtype=np.float64)

    def target_key(self, faces: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> str:
        digest = hashlib.sha256(self.artefact_key.encode())
        for face, points in zip(faces, landmarks, strict=True):
            digest.update(np.ascontiguousarray(face, np.uint8).tobytes())
            digest.update(np.ascontiguousarray(points, np.float64).tobytes())
        return digest.hexdigest()

    def encode_targets(self, faces: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                       cache: Path | None = None, say: Callable[[str], None] = lambda line: None
                       ) -> tuple[TargetState, bool]:
        """K = 1..8 face crops (uint8 RGB, size x size) with their landmarks (68, 3) in crop
        pixels -> (state, whether it came from the cache folder). `say` gets a note when a
        cache entry is damaged or wrong (it is recomputed)."""
        lo, hi = self.target_range
        if not lo <= len(faces) <= hi or len(faces) != len(landmarks):
            raise RuntimeStageError(f"need {lo} to {hi} target faces with landmarks, got "
                                    f"{len(faces)} faces and {len(landmarks)} landmark sets")
        faces = [self._check_face(f) for f in faces]  # before the key: it reads them as uint8
        landmarks = [check_landmarks(p, self.size, f"target {i + 1}") for i, p in enumerate(landmarks)]
        key = self.target_key(faces, landmarks)
        cache = Path(cache) if cache is not None else None
        cached = cache / f"{key}.npz" if cache else None
        if cached and cached.is_file():
            state, problem = self._cached(cached, key, len(faces))
            if state is not None:
                return state, True
            say(f"note: the target cache entry {cached} {problem}; encoding the targets again")
            with contextlib.suppress(OSError):
                cached.unlink()
        images = np.stack([to_model_input(f) for f in faces])
        drawn = np.stack([to_model_input(rasterize(p, self.size)) for p in landmarks])
        out = self.backends["target_encoder"].infer(
            {"target_images": images, "target_landmarks": drawn})
        identity = self.transformer.target_identity(images, np.stack(landmarks))
        state = TargetState({n: _frozen(v) for n, v in out.items()}, _frozen(identity), len(faces), key,
                            self.artefact_key)
        if cached:
            # A cache that cannot be written (full, read-only) costs only the next run's time.
            with contextlib.suppress(OSError, MntError):
                cached.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cached) as temporary, open(temporary, "wb") as handle:
                    state.save(handle)
        return state, False

    def _cached(self, path: Path, key: str, faces: int) -> tuple[TargetState | None, str]:
        """A cache entry, checked by value like the manifest: (state, "") or (None, what is wrong)."""
        try:
            state = TargetState.load(path, key, self.artefact_key)
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            return None, f"is unreadable ({type(err).__name__})"
        expected = tuple(t for t in self.manifest.components["generator"].inputs
                         if t.name != "driver_landmarks")
        problem = state_problem(state.feeds, state.identity, state.k, faces, expected)
        return (None, f"is wrong: {problem}") if problem else (state, "")

    def driver_landmarks(self, state: TargetState, face: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The landmark transformer for one driver frame: the target's identity with the
        driver's expression, in the driver's pose (crop pixels)."""
        self._check_state(state)
        return self.transformer.drive(state.identity, to_model_input(self._check_face(face)),
                                      check_landmarks(landmarks, self.size, "driver landmarks"))

    def generate(self, state: TargetState, landmarks: np.ndarray) -> np.ndarray:
        """Driver landmarks (68, 3) in crop pixels -> the reenacted face, uint8 RGB."""
        self._check_state(state)
        out = self.backends["generator"].infer({"driver_landmarks": self._drawn(landmarks), **state.feeds})
        return _picture(out["image"])

    def stream(self, state: TargetState) -> Stream:
        """A stream of its own on this model, for `state`'s targets (close it when done)."""
        return Stream(self, state)

    def _drawn(self, landmarks: np.ndarray) -> np.ndarray:
        points = check_landmarks(landmarks, self.size, "generate: driver landmarks")
        return to_model_input(rasterize(points, self.size))[None]

    def _check_state(self, state: TargetState) -> None:
        # another model's state of the same shapes would run, and give a wrong face
        if not isinstance(state, TargetState) or state.artefact_key != self.artefact_key:
            raise RuntimeStageError(
                f"this target state was not encoded by the model of {self.folder}",
                hint="encode the targets again with this Reenactor (encode_targets)")

    def _check_face(self, face: np.ndarray) -> np.ndarray:
        if not isinstance(face, np.ndarray) or face.shape != (self.size, self.size, 3) \
                or face.dtype != np.uint8:
            got = f"{face.dtype} {face.shape}" if isinstance(face, np.ndarray) else type(face).__name__
            raise RuntimeStageError(f"face crops must be uint8 ({self.size}, {self.size}, 3), got {got}")
        return face


def _picture(image: np.ndarray) -> np.ndarray:
    """The generator's image (1, 3, H, W) in [-1, 1] -> uint8 RGB (H, W, 3), a new array."""
    image = np.asarray(image[0], dtype=np.float32)
    return np.clip((image.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


class Stream:
    """One stream on a shared Reenactor (whisper.cpp's state beside its model): backend
    states of its own for the disentangler and the generator (their buffers, bindings and,
    on a GPU, execution context and CUDA stream), its target state resident in the
    generator's (given once, uploaded to a GPU once, never per frame), and its own landmark
    transformer. Streams run concurrently from any threads. Within one stream,
    `driver_landmarks` and `generate` may overlap each other (the pipelined path runs them
    on two threads: they use different backend states), but neither may overlap itself."""

    def __init__(self, model: Reenactor, state: TargetState) -> None:
        model._check_state(state)
        self.model, self.state = model, state
        self._generator = model.backends["generator"].new_state(resident=state.feeds)
        self._disentangler = model.backends["landmark_disentangler"].new_state()
        self.transformer = LandmarkTransformer(model.stats, self._coefficients)

    def _coefficients(self, images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = self.model.backends["landmark_disentangler"].infer(
            {"images": images, "landmark_offsets": offsets}, self._disentangler)
        return np.array(out["coefficients"], dtype=np.float64)

    def driver_landmarks(self, face: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """As Reenactor.driver_landmarks, for this stream's targets."""
        face = to_model_input(self.model._check_face(face))
        points = check_landmarks(landmarks, self.model.size, "driver landmarks")
        return self.transformer.drive(self.state.identity, face, points)

    def generate(self, landmarks: np.ndarray) -> np.ndarray:
        """As Reenactor.generate, for this stream's targets: only the driver's landmark
        image goes to the generator."""
        out = self.model.backends["generator"].infer({"driver_landmarks": self.model._drawn(landmarks)},
                                                     self._generator)
        return _picture(out["image"])

    @property
    def bytes_per_frame(self) -> float:
        """Input bytes handed to the generator and disentangler per generated frame (what a
        GPU copies to the device), the resident target state aside."""
        moved = self._generator.moved_bytes + self._disentangler.moved_bytes
        return moved / max(self._generator.calls, 1)

    def close(self) -> None:
        self._generator.close()
        self._disentangler.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
