"""Evaluation on held-back frames in the paper's two settings.

Self-reenactment (its Table 1): for every clip, held-back driver frames (never trained on)
are reenacted from K targets taken evenly from the clip's training part, with the driver's
own landmarks, and compared with the driver crop: SSIM, PSNR and their face-masked variants
(the convex hull of the driver's landmarks, supplement A4's face region). Two trivial
baselines return the first target unchanged: as its own crop, and as the same video frame
seen through the driver's crop (the same camera, so it only misses the driver's motion).

Different identity (its Table 2): every clip's held-back frames drive the targets of the
next clip of another person, through the landmark transformer (as `mnt-run` does); with no
ground truth, only identity (against the targets) and pose (against the driver) are
measured, beside two trivial baselines: the target unchanged (the right person, the wrong
pose) and the driver frame unchanged (the right pose, the wrong person).

CSIM, dlib's same-person rate and PRMSE (`identity`) need the `identity` extra; without it
they are left out and the different-identity setting with them."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from mnt.export.model.checkpoint import Reference
from mnt.export.train.dataset import Dataset, Pick, face_mask, make_batch, same_clip
from mnt.export.train.identity import FaceMetrics, csim, prmse, same_person
from mnt.runtime.landmarks import LandmarkTransformer
from mnt.runtime.rasterize import rasterize, to_model_input

SELF, CROSS = "self-reenactment", "different identity"
METHODS = {SELF: ("model", "target unchanged (its crop)", "target frame in the driver's crop"),
           CROSS: ("model (landmark transformer)", "target unchanged", "driver frame unchanged")}
IMAGE_METRICS = ("SSIM", "M-SSIM", "PSNR", "M-PSNR")
FACE_METRICS = ("CSIM", "same person", "PRMSE")
GENERATION_BATCH = 8


def image_metrics(output: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """uint8 (S, S, 3) images and a (S, S) 0/1 mask -> SSIM, M-SSIM, PSNR, M-PSNR (dB).
    SSIM as Wang et al. (Gaussian window, sigma 1.5), per channel, averaged; M-SSIM averages
    the SSIM map over the mask; M-PSNR takes the error over the mask only."""
    a, b = output.astype(np.float64), truth.astype(np.float64)
    ssim, ssim_map = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=255.0, full=True)
    inside = mask > 0.5
    squared = ((a - b) ** 2).mean(axis=2)

    def psnr(mse: float) -> float:
        return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)

    return {"SSIM": float(ssim), "M-SSIM": float(ssim_map.mean(axis=2)[inside].mean()),
            "PSNR": psnr(float(squared.mean())), "M-PSNR": psnr(float(squared[inside].mean()))}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip((image.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


class _Faces:
    """Face metrics of outputs against fixed targets (embeddings) and a driver (points)."""

    def __init__(self, metrics: FaceMetrics, targets: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.metrics = metrics
        self.targets = [metrics.embedding(image, points) for image, points in targets]

    def __call__(self, image: np.ndarray, points: np.ndarray, driver: np.ndarray,
                 driver_points: np.ndarray) -> dict[str, float]:
        e = self.metrics.embedding(image, points)
        return {"CSIM": float(np.mean([csim(e, t) for t in self.targets])),
                "same person": float(np.mean([same_person(e, t) for t in self.targets])),
                "PRMSE": prmse(self.metrics.points(image, points),
                               self.metrics.points(driver, driver_points))}


def _generate(reference: Reference, dataset: Dataset, picks: list[Pick],
              driver_landmarks: list[np.ndarray] | None = None) -> Iterator[tuple[Pick, np.ndarray]]:
    """(pick, uint8 output) in batches; `driver_landmarks` (68, 3) per pick replace the
    driver frames' own."""
    for start in range(0, len(picks), GENERATION_BATCH):
        end = start + GENERATION_BATCH
        chunk = picks[start:end]
        inputs = make_batch(dataset, chunk)
        if driver_landmarks is not None:
            inputs.driver_landmarks = np.stack([to_model_input(rasterize(points, dataset.size))
                                                for points in driver_landmarks[start:end]])
        with torch.no_grad():
            out = reference.generator(*(torch.from_numpy(a) for a in (
                inputs.driver_landmarks, inputs.targets, inputs.target_landmarks))).numpy()
        yield from ((pick, _to_uint8(image)) for pick, image in zip(chunk, out, strict=True))


def _drivers(dataset: Dataset, c: int, frames: int) -> list[int]:
    held = dataset.clips[c].held_back
    return [int(d) for d in held[np.unique(np.linspace(0, len(held) - 1, frames).round().astype(int))]]


def _self_reenactment(reference: Reference, dataset: Dataset, k: int, frames: int,
                      metrics: FaceMetrics | None) -> dict[str, list[dict[str, float]]]:
    size, scores = dataset.size, {m: [] for m in METHODS[SELF]}
    for c, clip in enumerate(dataset.clips):
        targets = clip.spread_targets(k)
        first = targets[0]
        # The first target's video frame, re-cropped as the driver's crop sees it.
        to_driver = clip.driver_matrices @ np.vstack([cv2.invertAffineTransform(
            clip.target_matrices[first]), [0, 0, 1]])
        faces = metrics and _Faces(metrics, [(clip.target_images[t], clip.target_landmarks[t])
                                             for t in targets])
        picks = [same_clip(c, d, targets) for d in _drivers(dataset, c, frames)]
        for ((_, d), _), generated in _generate(reference, dataset, picks):
            truth, truth_points = clip.driver_images[d], clip.driver_landmarks[d]
            same_view = cv2.warpAffine(clip.target_images[first], to_driver[d], (size, size),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            seen = clip.target_landmarks[first][:, :2] @ to_driver[d][:, :2].T + to_driver[d][:, 2]
            outputs = ((generated, truth_points), (clip.target_images[first], clip.target_landmarks[first]),
                       (same_view, seen))
            for method, (image, points) in zip(METHODS[SELF], outputs, strict=True):
                row = image_metrics(image, truth, face_mask(truth_points, size))
                if faces:
                    row.update(faces(image, points, truth, truth_points))
                scores[method].append(row)
    return scores


def _other_person(dataset: Dataset, c: int) -> int:
    """The next clip (cyclically) of another identity: whose targets clip c's frames drive."""
    n, person = len(dataset.clips), dataset.clips[c].identity
    return next(o % n for o in range(c + 1, c + n) if dataset.clips[o % n].identity != person)


def _different_identity(reference: Reference, dataset: Dataset, k: int, frames: int,
                        metrics: FaceMetrics) -> dict[str, list[dict[str, float]]]:
    def predict(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference.disentangler(torch.from_numpy(images), torch.from_numpy(offsets)).numpy()

    transformer = LandmarkTransformer(dataset.stats, predict)
    scores: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS[CROSS]}
    for c, clip in enumerate(dataset.clips):
        o = _other_person(dataset, c)
        other = dataset.clips[o]
        targets = other.spread_targets(k)
        images = np.stack([to_model_input(other.target_images[t]) for t in targets])
        identity = transformer.target_identity(images, other.target_landmarks[targets])
        drivers = _drivers(dataset, c, frames)
        driven = [transformer.drive(identity, to_model_input(clip.driver_images[d]), clip.driver_landmarks[d])
                  for d in drivers]
        faces = _Faces(metrics, [(other.target_images[t], other.target_landmarks[t]) for t in targets])
        picks: list[Pick] = [((c, d), [(o, t) for t in targets]) for d in drivers]
        for (((_, d), _), generated), points in zip(_generate(reference, dataset, picks, driven), driven,
                                                    strict=True):
            truth, truth_points = clip.driver_images[d], clip.driver_landmarks[d]
            first = targets[0]
            outputs = ((generated, points), (other.target_images[first], other.target_landmarks[first]),
                       (truth, truth_points))
            for method, (image, box) in zip(METHODS[CROSS], outputs, strict=True):
                scores[method].append(faces(image, box, truth, truth_points))
    return scores


def evaluate(reference: Reference, dataset: Dataset, k_values: list[int], frames: int,
             metrics: FaceMetrics | None = None) -> dict[str, object]:
    """Both settings (the different-identity one only with `metrics`); mean per K and method."""
    reference.generator.eval()
    started = time.perf_counter()
    runs: dict[str, dict[int, dict[str, list[dict[str, float]]]]] = {
        SELF: {k: _self_reenactment(reference, dataset, k, frames, metrics) for k in k_values}}
    if metrics is not None:
        runs[CROSS] = {k: _different_identity(reference, dataset, k, frames, metrics) for k in k_values}
    generated = sum(len(per_method[METHODS[s][0]]) for s, per_k in runs.items()
                    for per_method in per_k.values())
    table = {setting: {str(k): {m: {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
                                for m, rows in per_method.items()} for k, per_method in per_k.items()}
             for setting, per_k in runs.items()}
    return {"clips": [c.name for c in dataset.clips], "frames_per_clip": frames,
            "evaluated": {s: {str(k): len(per_method[METHODS[s][0]]) for k, per_method in per_k.items()}
                          for s, per_k in runs.items()},
            "seconds_per_frame": (time.perf_counter() - started) / max(generated, 1), "results": table}


def _cell(metric: str, value: float) -> str:
    return f"{value:.2f}" if "PSNR" in metric or metric == "PRMSE" else f"{value:.3f}"


def markdown(results: dict[str, object]) -> str:
    table = results["results"]
    evaluated = results["evaluated"]
    assert isinstance(table, dict) and isinstance(evaluated, dict)
    parts = []
    for setting, per_k in table.items():
        measured = next(iter(next(iter(per_k.values())).values()))  # the first method's metrics
        names = [m for m in (*IMAGE_METRICS, *FACE_METRICS) if m in measured]
        lines = [f"{setting}:", "", "| K | method | " + " | ".join(names) + " |",
                 "| --- | --- |" + " --- |" * len(names)]
        for k, per_method in per_k.items():
            for method, values in per_method.items():
                cells = " | ".join(_cell(m, values[m]) for m in names)
                lines.append(f"| {k} | {method} | {cells} |")
        counts = ", ".join(f"K={k}: {n}" for k, n in evaluated[setting].items())
        parts.append("\n".join(lines) + f"\n\n{counts} held-back driver frames")
    return "\n\n".join(parts) + f"\n\nclips: {', '.join(results['clips'])}"  # type: ignore[arg-type]
