"""Self-reenactment evaluation (paper Table 1's SSIM, PSNR, M-SSIM, M-PSNR; the
identity, pose and action-unit metrics need networks that are not available here).

For every clip: held-back driver frames (never trained on) are reenacted from K targets
taken evenly from the clip's training part, with the driver's own landmarks, and compared
with the driver crop. Two trivial baselines return the first target unchanged: as its own
crop, and as the same video frame seen through the driver's crop (the same camera, so this
one only misses the driver's motion). The masked variants use the convex hull of the
driver's landmarks (the face region of supplement A4)."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from mnt.export.model.checkpoint import Reference
from mnt.export.train.dataset import Dataset, face_mask, make_batch

METHODS = ("model", "target unchanged (its crop)", "target frame in the driver's crop")
METRICS = ("SSIM", "M-SSIM", "PSNR", "M-PSNR")


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


def evaluate(reference: Reference, dataset: Dataset, k_values: list[int], frames: int,
             batch: int = 8) -> dict[str, object]:
    generator = reference.generator.eval()
    size = dataset.size
    scores: dict[int, dict[str, list[dict[str, float]]]] = {k: {m: [] for m in METHODS} for k in k_values}
    started, generated = time.perf_counter(), 0
    for c, clip in enumerate(dataset.clips):
        held = clip.held_back
        drivers = held[np.unique(np.linspace(0, len(held) - 1, frames).round().astype(int))]
        for k in k_values:
            targets = clip.spread_targets(k)
            first = targets[0]
            # The first target's video frame, re-cropped as the driver's crop sees it.
            to_driver = clip.driver_matrices @ np.vstack([cv2.invertAffineTransform(
                clip.target_matrices[first]), [0, 0, 1]])
            for start in range(0, len(drivers), batch):
                chunk = [int(d) for d in drivers[start:start + batch]]
                inputs = make_batch(dataset, [(c, d, targets) for d in chunk])
                with torch.no_grad():
                    out = generator(torch.from_numpy(inputs.driver_landmarks),
                                    torch.from_numpy(inputs.targets),
                                    torch.from_numpy(inputs.target_landmarks)).numpy()
                generated += len(chunk)
                for i, d in enumerate(chunk):
                    truth = clip.driver_images[d]
                    mask = face_mask(clip.driver_landmarks[d], size)
                    same_view = cv2.warpAffine(clip.target_images[first], to_driver[d], (size, size),
                                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                    for method, image in zip(METHODS, (_to_uint8(out[i]), clip.target_images[first],
                                                       same_view), strict=True):
                        scores[k][method].append(image_metrics(image, truth, mask))
    table = {str(k): {m: {name: float(np.mean([s[name] for s in rows])) for name in METRICS}
                      for m, rows in per_k.items()} for k, per_k in scores.items()}
    return {"clips": [c.name for c in dataset.clips], "frames_per_clip": frames,
            "evaluated": {str(k): len(scores[k]["model"]) for k in k_values},
            "seconds_per_frame": (time.perf_counter() - started) / max(generated, 1), "results": table}


def markdown(results: dict[str, object]) -> str:
    lines = ["| K | method | " + " | ".join(METRICS) + " |", "| --- | --- |" + " --- |" * len(METRICS)]
    table = results["results"]
    assert isinstance(table, dict)
    for k, per_method in table.items():
        for method, values in per_method.items():
            lines.append(f"| {k} | {method} | " + " | ".join(
                f"{values[m]:.3f}" if "SSIM" in m else f"{values[m]:.2f}" for m in METRICS) + " |")
    evaluated = results["evaluated"]
    assert isinstance(evaluated, dict)
    return "\n".join(lines) + (f"\n\n{', '.join(f'K={k}: {n}' for k, n in evaluated.items())} held-back "
                               f"frames from {', '.join(results['clips'])}")  # type: ignore[arg-type]
