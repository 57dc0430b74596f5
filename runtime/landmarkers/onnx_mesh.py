"""mediapipe's face detector and face mesh as ONNX components of an artefact folder
(`face_detector`, `face_landmarks`, converted by `mnt-export build`), run by the runtime's
own backends (ONNX Runtime CPU or CUDA, TensorRT): the landmark step without mediapipe.

Per image it does what mediapipe's face mesh graph does (see ``blazeface``): detect, take
each face's rotated ROI, run the mesh on it; in a video it then tracks, the next frame's
ROI coming from this frame's mesh, and detects again only when the mesh loses the face.
The 68 points and the human-face check are those of mediapipe's own backend (``mesh_faces``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.backends.base import Backend
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers.base import Face, LandmarkBackend, check_image
from mnt.runtime.landmarkers.blazeface import (
    Detection,
    Roi,
    decode,
    detector_input,
    mesh_input,
    presence,
    project,
    roi_from_detection,
    roi_from_landmarks,
    weighted_nms,
)
from mnt.runtime.landmarkers.mesh_faces import HUMAN_SCORE_THRESHOLD, HumanCheck, pick_face
from mnt.runtime.manifest import REBUILD_HINT, Manifest, load_manifest

DETECTOR, MESH = "face_detector", "face_landmarks"
MISSING_HINT = ("rebuild the folder with `mnt-export build` on a machine with mediapipe 0.10.21 "
                "(pip install 'mnt[faces]'), or use the mediapipe landmark backend")


def has_face_components(manifest: Manifest) -> bool:
    return DETECTOR in manifest.faces and MESH in manifest.faces


def face_backends(folder: Path, manifest: Manifest, backend: str = "auto", allow_fallback: bool = False,
                  **options: Any) -> dict[str, Backend]:
    """The two face components on backend `backend` of the registry (inactive)."""
    from mnt.runtime.backends.registry import make_backends

    if not has_face_components(manifest):
        raise RuntimeStageError(f"{folder} holds no face components ({DETECTOR}, {MESH})", hint=MISSING_HINT)
    faces_only = replace(manifest, components={n: manifest.faces[n] for n in (DETECTOR, MESH)})
    return make_backends(folder, faces_only, backend, allow_fallback, **options)


class OnnxMeshLandmarks(LandmarkBackend):
    """The face mesh (468 points) on the artefact folder's engines, mapped to iBUG's 68.

    folder: an artefact folder with face components; backend: a registry name (`auto`, or
        the one the model runs on), `options` go to its factory; `backends`: ready-made
        (inactive) backends for the two components instead.
    static_image_mode, max_num_faces, min_detection_confidence, min_tracking_confidence,
    human_check, min_human_score: as ``MediaPipeLandmarks``. In a video (static False) the
        main face is tracked; others are not looked for until it is lost.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None, backend: str = "auto",
                 static_image_mode: bool = True,
                 max_num_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, human_check: bool = True,
                 min_human_score: float = HUMAN_SCORE_THRESHOLD, backends: dict[str, Backend] | None = None,
                 allow_fallback: bool = False, **options: Any) -> None:
        if max_num_faces < 1:
            raise RuntimeStageError(f"max_num_faces must be at least 1, got {max_num_faces}")
        if backends is None:
            if folder is None:
                raise RuntimeStageError("OnnxMeshLandmarks needs an artefact folder or ready-made backends")
            manifest = load_manifest(folder)
            self._check_files(Path(folder), manifest)
            backends = face_backends(Path(folder), manifest, backend, allow_fallback, **options)
        missing = {DETECTOR, MESH} - set(backends)
        if missing:
            raise RuntimeStageError(f"face landmarks: no backend for {', '.join(sorted(missing))}")
        self.static = static_image_mode
        self.max_faces = max_num_faces
        self.min_detection = float(min_detection_confidence)
        self.min_tracking = float(min_tracking_confidence)
        self.human_check = human_check
        self.last_rejected = 0
        self.detections = 0  # how often the detector ran (tracking skips it)
        self._check = HumanCheck(min_human_score)
        if human_check:
            self._check.load()  # fail now, not on the first image, when dlib is missing
        self._backends: dict[str, Backend] | None = backends
        self._roi: Roi | None = None  # the tracked face's ROI for the next frame
        try:
            for b in backends.values():
                b.activate()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _check_files(folder: Path, manifest: Manifest) -> None:
        from mnt.runtime.files import sha256_file

        for info in manifest.faces.values():
            path = folder / info.file
            if not path.is_file() or sha256_file(path) != info.sha256:
                raise RuntimeStageError(f"{path} changed since the build (or is missing)", hint=REBUILD_HINT)

    def _run(self, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._backends is None:
            raise RuntimeStageError("OnnxMeshLandmarks: used after close()")
        return self._backends[name].infer({"image": x})

    def find(self, image: np.ndarray) -> list[Detection]:
        """The detector's faces, best first (weighted NMS), at most max_num_faces."""
        x, roi = detector_input(image)
        out = self._run(DETECTOR, x)
        self.detections += 1
        found = decode(out["boxes"], out["scores"], roi, self.min_detection)
        return weighted_nms(found)[:self.max_faces]

    def mesh(self, image: np.ndarray, roi: Roi) -> np.ndarray | None:
        """(468, 3) pixel points of the face in `roi`, or None when the mesh says there is none."""
        out = self._run(MESH, mesh_input(image, roi))
        if presence(out["presence"]) < self.min_tracking:
            return None
        points = project(out["landmarks"], roi)
        return points if np.all(np.isfinite(points)) else None

    def detect(self, image: np.ndarray, *, human_check: bool | None = None) -> Face | None:
        image = check_image(image)
        check = self.human_check if human_check is None else human_check
        tracked = None if self.static or self._roi is None else self.mesh(image, self._roi)
        if tracked is not None:
            meshes = [tracked]
        else:  # acquire (again): every face the detector finds
            found = (self.mesh(image, roi_from_detection(d)) for d in self.find(image))
            meshes = [m for m in found if m is not None]
        face, self.last_rejected, best = pick_face(image, meshes, self._check if check else None)
        self._roi = None if face is None or self.static else roi_from_landmarks(meshes[best])
        return face

    def reset(self) -> None:
        """Forget the tracked face (a new video)."""
        self._roi = None

    def close(self) -> None:
        if self._backends is not None:
            for b in self._backends.values():
                b.deactivate()
            self._backends = None

