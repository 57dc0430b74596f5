"""Which TFLite files become which components: where they are in the installed mediapipe
wheel, their ONNX interface, and their source and licence for the manifest."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mnt.export.errors import ExportError
from mnt.runtime.files import sha256_file

MEDIAPIPE_VERSION = "0.10.21"  # the last release that ships its face models in the wheel
LICENCE = "Apache-2.0"
HOMEPAGE = "https://github.com/google-ai-edge/mediapipe"
FACES_HINT = f"pip install 'mediapipe=={MEDIAPIPE_VERSION}' (the export machine's 'mnt[faces]')"


@dataclass(frozen=True)
class FaceModel:
    component: str
    file: str  # inside the mediapipe package
    input_name: str
    input_shape: tuple[int, int, int, int]  # NHWC, float32
    outputs: dict[str, str]  # TFLite output name -> ONNX name
    output_shapes: dict[str, tuple[int, ...]]
    summary: str


DETECTOR = FaceModel(
    "face_detector", "modules/face_detection/face_detection_short_range.tflite", "image", (1, 128, 128, 3),
    {"regressors": "boxes", "classificators": "scores"},
    {"boxes": (1, 896, 16), "scores": (1, 896, 1)},
    "BlazeFace short range: 896 anchors, per anchor a box and 6 keypoints (128 px units) and a logit")
MESH = FaceModel(
    "face_landmarks", "modules/face_landmark/face_landmark.tflite", "image", (1, 192, 192, 3),
    {"conv2d_21": "landmarks", "conv2d_31": "presence"},
    {"landmarks": (1, 1404), "presence": (1, 1)},
    "face mesh: 468 points (x, y, z in 192 px crop units) and a face-presence logit")
MODELS = (DETECTOR, MESH)
COMPONENT_NAMES = tuple(m.component for m in MODELS)


def mediapipe_folder() -> Path:
    """The installed mediapipe package's folder (found without importing it)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("the face components are converted from mediapipe's wheel, which is not installed",
                          hint=FACES_HINT)
    return Path(next(iter(spec.submodule_search_locations)))


def model_path(model: FaceModel) -> Path:
    path = mediapipe_folder() / model.file
    if not path.is_file():
        raise ExportError(f"mediapipe {_mediapipe_version()} has no {model.file} (0.10.21 ships it)",
                          hint=FACES_HINT)
    return path


def _mediapipe_version() -> str:
    try:
        return version("mediapipe")
    except PackageNotFoundError:
        return "?"


def source(model: FaceModel) -> dict[str, str]:
    """The manifest's record of where a face component came from."""
    path = model_path(model)
    return {"package": "mediapipe", "version": _mediapipe_version(), "file": f"mediapipe/{model.file}",
            "sha256": sha256_file(path), "licence": LICENCE, "homepage": HOMEPAGE,
            "summary": model.summary}
