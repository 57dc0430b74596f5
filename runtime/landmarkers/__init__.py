"""Landmark backends: each finds the main face of an image and its 68 3D landmarks.
`base` holds the interface; `onnx_mesh` mediapipe's networks on the artefact folder's own
engines (no mediapipe needed), `mediapipe_mesh` mediapipe's own face mesh, `fan` the
paper's 3D-FAN; `blazeface` and `mesh_faces` what the two face-mesh backends share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers.base import LandmarkBackend

CHOICES = ("auto", "engines", "mediapipe")


def landmark_backend(static_image_mode: bool, fan_weights: os.PathLike[str] | str | None = None,
                     artifacts: os.PathLike[str] | str | None = None, backend: str = "auto",
                     landmarks: str = "auto", **options: Any) -> LandmarkBackend:
    """3D-FAN when its weights are given (or in $MNT_FAN_WEIGHTS); else `landmarks`:
    "engines": the face components of the `artifacts` folder on `backend` (a registry
    name, `options` to its factory); "mediapipe": mediapipe's own face mesh; "auto":
    the engines when the folder holds face components, else mediapipe."""
    from mnt.runtime.landmarkers.fan import FanLandmarks, weights_folder

    if landmarks not in CHOICES:
        raise RuntimeStageError(f"unknown landmark backend {landmarks!r}; choose one of {', '.join(CHOICES)}")
    folder = weights_folder(fan_weights)
    if folder is not None:
        return FanLandmarks(folder, static_image_mode=static_image_mode)
    if landmarks != "mediapipe" and artifacts is not None:
        from mnt.runtime.landmarkers.onnx_mesh import OnnxMeshLandmarks, has_face_components
        from mnt.runtime.manifest import load_manifest

        manifest = load_manifest(Path(artifacts))
        if landmarks == "engines" or has_face_components(manifest):
            # The torch backend holds only the model's components, and folders whose engines
            # were built before the face components have none for them: those run where auto says.
            lacking = any(backend not in c.engines for c in manifest.faces.values())
            kind = "auto" if backend == "torch" or (backend.startswith("tensorrt") and lacking) else backend
            return OnnxMeshLandmarks(artifacts, kind, static_image_mode=static_image_mode, **options)
    if landmarks == "engines":
        raise RuntimeStageError("the engines landmark backend needs an artefact folder (--artifacts DIR)")
    from mnt.runtime.landmarkers.mediapipe_mesh import MediaPipeLandmarks

    return MediaPipeLandmarks(static_image_mode=static_image_mode)
