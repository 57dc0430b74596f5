"""The geometry around mediapipe's two face networks, as its face mesh graph does it
(face_detection_short_range, face_detection_front_detection_to_roi, face_landmark_cpu,
face_landmark_landmarks_to_roi of mediapipe 0.10.21), numpy and OpenCV only:

- the detector's input: the whole image letterboxed into 128x128, values in [-1, 1];
- its 896 SSD anchors, box and keypoint decoding, weighted non-maximum suppression;
- the face ROI: a square rotated so that the eyes are level, 1.5 times the face box (from
  a detection: eye keypoints 0 and 1; from the last landmarks: mesh points 33 and 263);
- the mesh's input: that ROI warped to 192x192, values in [0, 1]; its 468 points mapped back.

All coordinates are the image's pixels (x right, y down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DETECTOR_SIZE = 128
MESH_SIZE = 192
N_MESH_POINTS = 468
# SsdAnchorsCalculator options of face_detection_short_range: 4 layers of strides 8, 16,
# 16, 16; one anchor of aspect 1 plus one interpolated per layer; fixed size (w = h = 1).
ANCHOR_STRIDES = (8, 16, 16, 16)
ANCHORS_PER_CELL = 2
ANCHOR_OFFSET = 0.5
# TensorsToDetectionsCalculator: 16 values per anchor (box centre, size, 6 keypoints), in
# units of the 128 px input; logits clipped to +-100 before the sigmoid.
N_KEYPOINTS = 6
SCORE_CLIP = 100.0
MIN_DETECTION_SCORE = 0.5
NMS_IOU = 0.3  # NonMaxSuppressionCalculator: weighted, IoU above this merges
ROI_SCALE = 1.5  # RectTransformationCalculator: scale 1.5, square_long
DETECTION_EYES = (0, 1)  # keypoints: right eye, left eye (the subject's)
MESH_EYES = (33, 263)  # mesh points: right eye's outer corner, left eye's outer corner
MIN_PRESENCE = 0.5  # face_landmark_cpu's threshold on the mesh's face-presence score


@dataclass(frozen=True)
class Detection:
    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1 in image pixels
    keypoints: np.ndarray  # (6, 2) in image pixels


@dataclass(frozen=True)
class Roi:
    """A square region, rotated by `rotation` radians (clockwise on screen, y down)."""

    cx: float
    cy: float
    size: float
    rotation: float

    def corners(self) -> np.ndarray:
        """cv::RotatedRect::points order (bottom-left, top-left, top-right, bottom-right)."""
        rect = ((self.cx, self.cy), (self.size, self.size), math.degrees(self.rotation))
        return cv2.boxPoints(rect).astype(np.float32)


def ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres in [0, 1], in the order of the detector's outputs."""
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        repeats = 0  # layers of one stride share their cells
        while layer < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[layer] == stride:
            repeats += ANCHORS_PER_CELL
            layer += 1
        cells = math.ceil(DETECTOR_SIZE / stride)
        for y in range(cells):
            for x in range(cells):
                centres += [((x + ANCHOR_OFFSET) / cells, (y + ANCHOR_OFFSET) / cells)] * repeats
    return np.asarray(centres, dtype=np.float64)


ANCHORS = ssd_anchors()


def letterbox_roi(height: int, width: int) -> Roi:
    """The whole image, padded to a square about its centre (keep_aspect_ratio)."""
    return Roi(width / 2.0, height / 2.0, float(max(height, width)), 0.0)


def crop(image: np.ndarray, roi: Roi, size: int, low: float, high: float,
         border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """(1, size, size, 3) float32: `roi` of the uint8 RGB image warped to size x size (the
    ROI's corners onto the output's), values mapped from 0..255 to low..high."""
    target = np.array([[0, size], [0, 0], [size, 0], [size, size]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(roi.corners(), target)
    warped = cv2.warpPerspective(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=border, borderValue=(0, 0, 0))
    scale = (high - low) / 255.0
    return (warped.astype(np.float32) * np.float32(scale) + np.float32(low))[None]


def detector_input(image: np.ndarray) -> tuple[np.ndarray, Roi]:
    roi = letterbox_roi(*image.shape[:2])
    return crop(image, roi, DETECTOR_SIZE, -1.0, 1.0, cv2.BORDER_CONSTANT), roi


def decode(boxes: np.ndarray, scores: np.ndarray, roi: Roi,
           min_score: float = MIN_DETECTION_SCORE) -> list[Detection]:
    """The detector's raw outputs ((1, 896, 16), (1, 896, 1)) -> detections above `min_score`
    in image pixels (the letterbox `roi` undone), before suppression."""
    raw = np.asarray(boxes, dtype=np.float64).reshape(-1, 16)
    logits = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    probability = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(probability >= min_score)
    found = []
    for i in keep:
        # normalised tensor coordinates: offsets from the anchor in units of the input size
        centre = raw[i, :2] / DETECTOR_SIZE + ANCHORS[i]
        half = raw[i, 2:4] / DETECTOR_SIZE / 2.0
        points = raw[i, 4:].reshape(N_KEYPOINTS, 2) / DETECTOR_SIZE + ANCHORS[i]
        box = np.concatenate([centre - half, centre + half]).reshape(2, 2)
        found.append(Detection(float(probability[i]), _from_letterbox(box, roi).reshape(4),
                               _from_letterbox(points, roi)))
    return found


def _from_letterbox(points: np.ndarray, roi: Roi) -> np.ndarray:
    return (points - 0.5) * roi.size + np.array([roi.cx, roi.cy])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def weighted_nms(detections: list[Detection], threshold: float = NMS_IOU) -> list[Detection]:
    """mediapipe's WEIGHTED suppression: the best remaining detection absorbs every one
    overlapping it by more than `threshold` IoU (itself included); box and keypoints become
    their score-weighted mean, the score stays the best one's."""
    remaining = sorted(detections, key=lambda d: -d.score)
    kept = []
    while remaining:
        best = remaining[0]
        merged = [d for d in remaining if _iou(d.box, best.box) > threshold]
        remaining = [d for d in remaining if _iou(d.box, best.box) <= threshold]
        weights = np.array([d.score for d in merged])
        weights = weights / weights.sum()
        box = np.einsum("n,nk->k", weights, np.stack([d.box for d in merged]))
        keypoints = np.einsum("n,nkc->kc", weights, np.stack([d.keypoints for d in merged]))
        kept.append(Detection(best.score, box, keypoints))
        if best not in merged:  # a degenerate box (no area) overlaps nothing, not even itself
            remaining = remaining[1:]
    return kept


def _normalise_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def _roi(box: np.ndarray, start: np.ndarray, end: np.ndarray) -> Roi:
    """DetectionsToRects (rotation from the eye vector, target angle 0) followed by
    RectTransformation (square on the long side, scaled 1.5)."""
    rotation = _normalise_radians(-math.atan2(-(end[1] - start[1]), end[0] - start[0]))
    width, height = box[2] - box[0], box[3] - box[1]
    centre = (box[:2] + box[2:]) / 2.0
    return Roi(float(centre[0]), float(centre[1]), float(max(width, height) * ROI_SCALE), rotation)


def roi_from_detection(detection: Detection) -> Roi:
    return _roi(detection.box, *detection.keypoints[list(DETECTION_EYES)])


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """The next frame's ROI from this frame's 468 mesh points (pixels)."""
    xy = points[:, :2]
    box = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
    return _roi(box, xy[MESH_EYES[0]], xy[MESH_EYES[1]])


def mesh_input(image: np.ndarray, roi: Roi) -> np.ndarray:
    return crop(image, roi, MESH_SIZE, 0.0, 1.0, cv2.BORDER_REPLICATE)


def project(landmarks: np.ndarray, roi: Roi) -> np.ndarray:
    """The mesh's (1, 1404) output in 192 px crop units -> (468, 3) image pixels (z in the
    same scale as x, as mediapipe's LandmarkProjection scales z by the ROI's width)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(N_MESH_POINTS, 3) / MESH_SIZE
    u, v = (points[:, 0] - 0.5) * roi.size, (points[:, 1] - 0.5) * roi.size
    cos, sin = math.cos(roi.rotation), math.sin(roi.rotation)
    return np.stack([roi.cx + cos * u - sin * v, roi.cy + sin * u + cos * v, points[:, 2] * roi.size],
                    axis=1)


def presence(logit: np.ndarray) -> float:
    return float(1.0 / (1.0 + math.exp(-float(np.clip(np.asarray(logit).reshape(-1)[0], -SCORE_CLIP,
                                                                            SCORE_CLIP)))))
