"""What the two face-mesh backends (mediapipe's own, and its networks on mnt's engines in
``onnx_mesh``) share: the 468-to-68 point table, and the human-face check (dlib's HOG
detector) that picks the main face among the meshes found.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from mnt.runtime.landmarkers.base import Box, Face, check_image, import_optional

# mediapipe face mesh index -> iBUG 68-point index (position in this table).
#
# The convention is the one of Peizhi Yan's public mapping
# (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks, mp2dlib.py), which pairs each dlib/iBUG
# point with one or two face-mesh vertices (two are averaged). Here every point is one
# vertex, so the points move exactly with the mesh and the table is easy to check. Where
# that mapping averages two vertices, or where its jaw vertex sat off the iBUG spacing, the
# vertex was chosen by measurement: the face mesh of 22 real faces (the shared targets and
# driving-video frames) was aligned to the iBUG mean shape (dlib's / OpenFace's template) by
# a similarity fit on eye corners, nose and mouth corners, and each point took the vertex
# closest to it in position and in arc length along its contour. That moved jaw points 3, 4,
# 6, 7, 9, 10, 12, 13 (and made the jaw mirror-symmetric: 58/288, 172/397, 149/378,
# 148/377). Brows follow the mesh's upper brow line (70-107, 300-336), as iBUG annotates the
# brows' upper edge; the mesh's lower brow line (46-55) sat closer to the mean shape's brows.
MEDIAPIPE_TO_IBUG68: tuple[int, ...] = (
    # jaw 0-16, from the right ear over the chin (8 = 152) to the left ear
    127, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 356,
    # right brow 17-21 (outer to inner), left brow 22-26 (inner to outer)
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    # nose bridge 27-30 (top to tip), nose base 31-35 (right ala, subnasale 33, left ala)
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    # right eye 36-41: outer corner, upper lid x2, inner corner, lower lid x2
    33, 160, 158, 133, 153, 144,
    # left eye 42-47: inner corner, upper lid x2, outer corner, lower lid x2
    362, 385, 387, 263, 373, 380,
    # outer lips 48-59: right corner, upper lip to the left corner (54), lower lip back
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67: right corner, upper, left corner (64), lower
    78, 82, 13, 312, 308, 317, 14, 87,
)

# The human-face check (mediapipe's face mesh also fits the monkey and the dog
# of ../shared/data/non-faces): dlib's HOG frontal-face detector, upsampled once, run with
# an adjusted threshold of -0.5 on the image scaled to at most 800 px, must report a face
# that overlaps the mesh's face with at least this score.
#
# Scores measured here (dlib-bin 20.0.1, mediapipe 0.10.21), best dlib box over the mesh's face:
#   targets (and mirrored): s1 1.15 (1.14), s12 2.53 (2.64), s2 2.27 (2.26), s42 2.56 (2.54),
#     s9 (painting) 2.47 (2.32); skimage astronaut 1.16, matplotlib grace_hopper 1.27
#   driving videos, every 10th frame (min / median): d0 2.52 / 2.65, d3 1.01 / 2.16,
#     d6 0.55 / 1.52, d9 0.18 / 1.17, d10 1.13 / 2.01, d11 1.19 / 1.70; every 3rd frame of
#     d9: 6 of 196 below 0.5, lowest 0.06 (head tilted ~20 degrees, frames 531-543)
#   non-faces: s22 (monkey) -0.02 (mirrored 0.15); s25 (dog) no detection at all
# 0.5 sits between the monkey's 0.15 and every still photo's >= 1.14. Tilted heads in video
# can score lower still, so a tracker should run the check when it acquires a face (the
# targets, a video's first frame) and not on every frame: see ``detect(human_check=...)``.
HUMAN_SCORE_THRESHOLD = 0.5
HUMAN_CHECK_MAX_SIDE = 800
HUMAN_CHECK_UPSAMPLE = 1
HUMAN_CHECK_ADJUST = -0.5
# A dlib box belongs to a mesh face when their intersection covers this share of the
# smaller box (measured IoU of true pairs: 0.70-0.86; dlib's box is the inner face square).
HUMAN_CHECK_MIN_OVERLAP = 0.5


def _overlap(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller if smaller > 0 else 0.0


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


class HumanCheck:
    """dlib's HOG frontal-face detector as the judge of "is this a human face" (dlib is
    imported on the first use, or at once with ``load``)."""

    def __init__(self, min_score: float = HUMAN_SCORE_THRESHOLD) -> None:
        self.min_score = float(min_score)
        self._detector: Any = None

    def load(self) -> Any:
        if self._detector is None:
            dlib = import_optional("dlib")
            self._detector = dlib.get_frontal_face_detector()
        return self._detector

    def scores(self, image: np.ndarray) -> list[tuple[Box, float]]:
        """dlib's HOG face boxes (in the image's pixels) and scores, down to HUMAN_CHECK_ADJUST."""
        image = check_image(image)
        height, width = image.shape[:2]
        scale = min(1.0, HUMAN_CHECK_MAX_SIDE / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self.load().run(image, HUMAN_CHECK_UPSAMPLE, HUMAN_CHECK_ADJUST)
        return [((r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale), float(s))
                for r, s in zip(rects, scores, strict=True)]


def mesh_box(points: np.ndarray) -> Box:
    return (points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max())


def pick_face(image: np.ndarray, meshes: list[np.ndarray], check: HumanCheck | None
              ) -> tuple[Face | None, int, int]:
    """(the largest of `meshes` ((468, 3) pixel points each) that passes the human check
    (None: unchecked) as a 68-point Face, how many meshes the check turned down, the
    chosen mesh's index (-1 when none))."""
    if not meshes:
        return None, 0, -1
    boxes = [mesh_box(points) for points in meshes]
    scores: list[float | None] = [None] * len(meshes)
    if check is not None:
        dlib_faces = check.scores(image)
        kept = []
        for i, box in enumerate(boxes):
            overlapping = [s for b, s in dlib_faces if _overlap(b, box) >= HUMAN_CHECK_MIN_OVERLAP]
            score = max(overlapping, default=-math.inf)
            if score >= check.min_score:
                kept.append(i)
                scores[i] = score
        rejected = len(meshes) - len(kept)
        if not kept:
            return None, rejected, -1
    else:
        kept, rejected = list(range(len(meshes))), 0
    best = max(kept, key=lambda i: _area(boxes[i]))
    face = Face(landmarks=meshes[best][list(MEDIAPIPE_TO_IBUG68)], box=boxes[best], score=scores[best],
                count=len(kept))
    return face, rejected, best
