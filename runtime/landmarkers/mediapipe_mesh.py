"""mediapipe's face mesh (optional extra ``faces``, whose models ship in the wheel) mapped
to iBUG's 68 points, with dlib's HOG detector as the human-face check. mediapipe and dlib
are imported only when a backend is built, so importing this module needs neither.
"""

from __future__ import annotations

import numpy as np

from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.landmarkers.base import FACES_HINT, Box, Face, LandmarkBackend, check_image, import_optional
from mnt.runtime.landmarkers.mesh_faces import HUMAN_SCORE_THRESHOLD, HumanCheck, pick_face


class MediaPipeLandmarks(LandmarkBackend):
    """mediapipe's face mesh (468 3D points) mapped to iBUG's 68 points, with dlib's HOG
    frontal-face detector as the judge of "is this a human face".

    static_image_mode: True detects in every image (photos, the first frame of a video);
        False lets mediapipe track the face between consecutive frames of one video.
    max_num_faces: how many faces mediapipe looks for; the largest is returned.
    human_check: run the dlib check by default (``detect`` can override it per call). It
        costs about 0.1 s for a 512 px image on one CPU core (mediapipe: ~10 ms).
    min_human_score: the dlib score a face needs (see ``HUMAN_SCORE_THRESHOLD``).

    After each ``detect``, ``last_rejected`` says how many mesh faces the human check turned
    down (so a caller can tell "no face" from "no human face").
    """

    def __init__(self, static_image_mode: bool = True, max_num_faces: int = 4,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 human_check: bool = True, min_human_score: float = HUMAN_SCORE_THRESHOLD) -> None:
        if max_num_faces < 1:
            raise RuntimeStageError(f"max_num_faces must be at least 1, got {max_num_faces}")
        mp = import_optional("mediapipe")
        try:
            face_mesh = mp.solutions.face_mesh
        except AttributeError as err:  # mediapipe >= 0.10.30 dropped the solutions API and its models
            raise RuntimeStageError(
                f"mediapipe {getattr(mp, '__version__', '?')} has no face mesh solution (0.10.21 has)",
                hint=FACES_HINT) from err
        self.human_check = human_check
        self.min_human_score = float(min_human_score)
        self.last_rejected = 0
        self._check = HumanCheck(min_human_score)
        if human_check:
            self._check.load()  # fail now, not on the first image, when dlib is missing
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=static_image_mode, max_num_faces=max_num_faces, refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence)

    def human_scores(self, image: np.ndarray) -> list[tuple[Box, float]]:
        """dlib's HOG face boxes (in the image's pixels) and scores, down to HUMAN_CHECK_ADJUST."""
        return self._check.scores(image)

    def detect(self, image: np.ndarray, *, human_check: bool | None = None) -> Face | None:
        image = check_image(image)
        if self._mesh is None:
            raise RuntimeStageError("MediaPipeLandmarks: used after close()")
        height, width = image.shape[:2]
        result = self._mesh.process(image)
        meshes = []
        for face in result.multi_face_landmarks or ():
            normalised = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            # mediapipe normalises x by the width, y by the height, and z "roughly as x".
            points = normalised * np.array([width, height, width], dtype=np.float64)
            if points.shape[0] >= 468 and np.all(np.isfinite(points)):
                meshes.append(points)
        check = self.human_check if human_check is None else human_check
        self._check.min_score = self.min_human_score
        found, self.last_rejected, _ = pick_face(image, meshes, self._check if check else None)
        return found

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None
