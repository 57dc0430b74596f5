"""Identity and pose metrics by dlib's networks (the `identity` extra: face-recognition-models
with dlib-bin), independent of the mediapipe landmarks the model trains on. CSIM in the
paper's spirit: the cosine similarity of dlib's face-recognition ResNet embeddings (128-d;
the paper used another face-recognition network), with dlib's own rule that two faces of
one person lie within a Euclidean distance of 0.6. PRMSE here: the RMSE of dlib's 68
shape-predictor points between two images, in pixels (the paper's is of head-pose angles).

Both networks take a face box instead of running dlib's detector, which misses blurred
generated faces: the box around the landmarks the image was made or cropped with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mnt.export.errors import ExportError

SAME_PERSON = 0.6  # dlib's threshold on the embeddings' Euclidean distance
EXTRA_HINT = "install the identity extra: pip install 'mnt[identity]'"


def model_file(name: str) -> Path:
    # Located, not imported: the package's __init__ needs pkg_resources, which recent
    # setuptools no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("identity metrics need face-recognition-models (dlib's networks)", hint=EXTRA_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ExportError(f"face-recognition-models lacks {path.name}", hint=EXTRA_HINT)
    return path


class FaceMetrics:
    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as err:
            raise ExportError("identity metrics need dlib", hint=EXTRA_HINT) from err
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        network = model_file("dlib_face_recognition_resnet_model_v1.dat")
        self._network = dlib.face_recognition_model_v1(str(network))

    def _detection(self, image: np.ndarray, landmarks: np.ndarray):  # noqa: ANN202 - dlib's type
        x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
        x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
        return self._shape(np.ascontiguousarray(image), self._dlib.rectangle(x0, y0, x1, y1))

    def points(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """dlib's 68 points (68, 2) of the face in uint8 RGB `image` near `landmarks`."""
        shape = self._detection(image, landmarks)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    def embedding(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The 128-d face descriptor of the face in uint8 RGB `image` near `landmarks`."""
        image = np.ascontiguousarray(image)
        return np.array(self._network.compute_face_descriptor(image, self._detection(image, landmarks)))


def csim(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.linalg.norm(a - b) < SAME_PERSON)


def prmse(a: np.ndarray, b: np.ndarray) -> float:
    """RMSE over the points of the Euclidean distances between (N, 2) point sets."""
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=1))))
