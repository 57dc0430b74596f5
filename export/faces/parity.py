"""Parity of the converted face networks against the TFLite interpreter, on real faces,
in the units that matter downstream: the mesh's points in pixels of its 192 px crop, the
detector's scores as probabilities and its boxes in pixels of its 128 px input."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mnt.export.faces.models import DETECTOR, MESH, FaceModel
from mnt.export.faces.reference import TfliteReference
from mnt.runtime.landmarkers import blazeface as bf

Runner = Callable[[np.ndarray], Mapping[str, np.ndarray]]
# ROI perturbations for the mesh's inputs (shift and scale as fractions of the ROI, rotation
# in radians): a tracked face's ROI comes from the last frame, not from this frame's face.
ROI_JITTER = ((0.0, 0.0, 1.0, 0.0), (0.08, -0.05, 1.1, 0.25), (-0.06, 0.07, 0.9, -0.3))


@dataclass(frozen=True)
class Samples:
    detector: list[np.ndarray]  # (1, 128, 128, 3) inputs
    mesh: list[np.ndarray]  # (1, 192, 192, 3) inputs


def _jitter(roi: bf.Roi, dx: float, dy: float, scale: float, turn: float) -> bf.Roi:
    return bf.Roi(roi.cx + dx * roi.size, roi.cy + dy * roi.size, roi.size * scale, roi.rotation + turn)


def samples(images: Sequence[np.ndarray], detector: Runner | None = None) -> Samples:
    """Both networks' inputs from uint8 RGB images: each image letterboxed for the detector;
    for the mesh, the ROI of each face the (reference) detector finds, as is and jittered."""
    detector = detector or TfliteReference(DETECTOR).run
    det_inputs, mesh_inputs = [], []
    for image in images:
        x, roi = bf.detector_input(image)
        det_inputs.append(x)
        out = detector(x)
        for found in bf.weighted_nms(bf.decode(out["boxes"], out["scores"], roi))[:2]:
            face_roi = bf.roi_from_detection(found)
            mesh_inputs += [bf.mesh_input(image, _jitter(face_roi, *j)) for j in ROI_JITTER]
    return Samples(det_inputs, mesh_inputs)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -bf.SCORE_CLIP, bf.SCORE_CLIP)))


def _psnr(diff: np.ndarray, reference: np.ndarray) -> float:
    rmse = float(np.sqrt(np.mean(diff * diff)))
    peak = float(reference.max() - reference.min()) or 1.0
    return round(20 * math.log10(peak / rmse), 2) if rmse > 0 else math.inf


def compare(model: FaceModel, got: Sequence[Mapping[str, np.ndarray]],
            want: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """The figures of one component over paired outputs (converted, reference)."""
    if model is MESH:
        a = np.stack([g["landmarks"].reshape(-1, 3) for g in got]).astype(np.float64)
        b = np.stack([w["landmarks"].reshape(-1, 3) for w in want]).astype(np.float64)
        xy = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
        p = np.array([_sigmoid(g["presence"]).item() - _sigmoid(w["presence"]).item()
                      for g, w in zip(got, want, strict=True)])
        return {"landmarks_max_px": float(xy.max()), "landmarks_mean_px": float(xy.mean()),
                "landmarks_p99_px": float(np.percentile(xy, 99)),
                "depth_max_px": float(np.abs(a[..., 2] - b[..., 2]).max()),
                "presence_max_abs": float(np.abs(p).max())}
    scores = np.stack([_sigmoid(g["scores"]) - _sigmoid(w["scores"]) for g, w in zip(got, want, strict=True)])
    boxes, counts = [], 0
    for g, w in zip(got, want, strict=True):
        keep = _sigmoid(w["scores"]).reshape(-1) >= bf.MIN_DETECTION_SCORE
        counts += int(keep.sum())
        boxes.append(np.abs(g["boxes"].reshape(-1, 16)[keep] - w["boxes"].reshape(-1, 16)[keep]).ravel())
    box_errors = np.concatenate(boxes) if boxes else np.zeros(1)
    return {"scores_max_abs": float(np.abs(scores).max()), "boxes_max_px": float(box_errors.max(initial=0.0)),
            "boxes_mean_px": float(box_errors.mean()) if box_errors.size else 0.0,
            "detected_anchors": counts}


def raw_errors(model: FaceModel, got: Sequence[Mapping[str, np.ndarray]],
               want: Sequence[Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per output, max abs error and PSNR over the raw values (what inspect and verify show)."""
    errors = {}
    for name in model.output_shapes:
        a = np.stack([g[name] for g in got]).astype(np.float64)
        b = np.stack([w[name] for w in want]).astype(np.float64)
        errors[name] = {"max_abs_error": float(np.abs(a - b).max()), "psnr_db": _psnr(a - b, b)}
    return errors


def measure(model: FaceModel, run: Runner, inputs: Sequence[np.ndarray],
            reference: Runner | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]],
                                                       list[dict[str, np.ndarray]]]:
    """(figures, raw errors per output, the reference outputs) of `run` over `inputs`."""
    reference = reference or TfliteReference(model).run
    want = [reference(x) for x in inputs]
    got = [{k: np.array(v) for k, v in run(x).items()} for x in inputs]
    return compare(model, got, want), raw_errors(model, got, want), want
