"""The paper's landmark detector: 3D-FAN (Bulat and Tzimiropoulos, 2017) through the
`face-alignment` package, from weight files already on disk.

MarioNETte was trained on 3D-FAN's 68 points, so this backend is the faithful one; the
default (mediapipe's face mesh) ships its models in its wheel, 3D-FAN's do not, and
nothing is downloaded at run time. face-alignment needs torch: it is imported only when
this backend is built, never by `import mnt.runtime`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers.base import Face, LandmarkBackend, check_image

WEIGHTS_ENV = "MNT_FAN_WEIGHTS"
# What face-alignment 1.5 loads: the 3D-FAN network, its depth network, the S3FD detector.
FILES = {
    "3DFAN4-7835d9f11d.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/3DFAN4-7835d9f11d.pth.tar",
    "depth-2a464da4ea.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/depth-2a464da4ea.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}
INSTALL_HINT = ("pip install --no-deps face-alignment && pip install scipy numba tqdm "
                "(--no-deps keeps its opencv-python from replacing mnt's OpenCV)")
TRACK_MARGIN = 0.1  # a tracked face's detector box: the last landmarks' extent, grown by this


def weights_folder(given: str | os.PathLike[str] | None) -> Path | None:
    """--fan-weights, else $MNT_FAN_WEIGHTS, else None (use the default backend)."""
    chosen = given or os.environ.get(WEIGHTS_ENV)
    return Path(chosen) if chosen else None


def check_weights(folder: Path) -> None:
    """Fail before anything is built when a weight file is missing, saying where to get it."""
    if not folder.is_dir():
        raise RuntimeStageError(f"3D-FAN weights folder {folder} does not exist",
                                hint=f"create it and put {', '.join(FILES)} in it")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeStageError(
            f"3D-FAN weights folder {folder} lacks {', '.join(missing)}",
            hint="download them on a machine with internet access: "
                 + " ".join(FILES[name] for name in missing))


class FanLandmarks(LandmarkBackend):
    """3D-FAN's 68 3D points (already in iBUG order) and S3FD's face box. In a video
    (`static_image_mode=False`) the detector runs only while no face is tracked; otherwise
    FAN is given the box of the last landmarks."""

    def __init__(self, folder: Path, static_image_mode: bool = True, device: str = "cpu") -> None:
        check_weights(folder)
        try:
            import face_alignment
            import torch
        except ImportError as err:
            raise RuntimeStageError(f"3D-FAN needs the face-alignment package ({err.name} is missing)",
                                    hint=INSTALL_HINT) from err
        self.static = static_image_mode
        self._last_box: np.ndarray | None = None
        # face-alignment looks for the FAN files in torch's hub folder: point it at ours.
        self._hub = tempfile.TemporaryDirectory(prefix="mnt-fan-")
        (Path(self._hub.name) / "checkpoints").symlink_to(folder.resolve(), target_is_directory=True)
        torch.hub.set_dir(self._hub.name)
        self._model: Any = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.THREE_D, device=device, flip_input=False, compile=False,
            face_detector="sfd",
            face_detector_kwargs={"path_to_detector": str(folder / "s3fd-619a316812.pth")})

    def detect(self, image: np.ndarray, *, human_check: bool | None = None) -> Face | None:
        """`human_check` is accepted for the tracker's sake and unused: S3FD is a
        detector of human faces already."""
        image = check_image(image)
        if self._model is None:
            raise RuntimeStageError("FanLandmarks: used after close()")
        boxes = None if self.static or self._last_box is None else [self._last_box]
        found = self._model.get_landmarks_from_image(image, detected_faces=boxes, return_bboxes=True)
        landmarks, _, detected = found if found is not None else (None, None, None)
        if not landmarks:
            self._last_box = None
            return None
        return self._face(landmarks, detected, image.shape)

    def _face(self, landmarks: list[np.ndarray], detected: Any, shape: tuple[int, ...]) -> Face:
        areas = [np.ptp(p[:, 0]) * np.ptp(p[:, 1]) for p in landmarks]
        points = np.asarray(landmarks[int(np.argmax(areas))], dtype=np.float64)
        lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
        grow = TRACK_MARGIN * (hi - lo)
        self._last_box = np.array([*(lo - grow), *(hi + grow), 1.0])
        score = None if detected is None or len(detected) == 0 else float(np.max(np.asarray(detected)[:, -1]))
        return Face(landmarks=points, box=(lo[0], lo[1], hi[0], hi[1]), score=score, count=len(landmarks))

    def close(self) -> None:
        self._model = None
        self._hub.cleanup()
