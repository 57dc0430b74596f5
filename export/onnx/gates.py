"""Parity gates: the thresholds an exported component must meet against the PyTorch
reference in float64, with PyTorch float32's own error as the yardstick. Numpy only, so
`verify` runs on a device without PyTorch.

PSNR is taken over each output's peak-to-peak range in the reference (2 for images in
[-1, 1]), so one figure reads the same for images, features and coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# FP32: within twice PyTorch float32's own RMS error against float64,
# and for the generated image (range [-1, 1]) max abs <= 1e-4 and PSNR >= 60 dB.
# FP16: every output at least 40 dB; the generator's image is what the user sees.
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"rmse_vs_torch_fp32_max_ratio": 2.0, "image_max_abs_error": 1e-4,
             "image_min_psnr_db": 60.0},
    "fp16": {"min_psnr_db": 40.0},
    # INT8 (mnt.calibration): the generated image at least 30 dB against FP32 on real
    # faces; the target encoder's and disentangler's outputs (features, coefficients) feed the
    # generator, so they get the same bar (see calibration/README.md for what it costs).
    "int8": {"image_min_psnr_db": 30.0, "min_psnr_db": 30.0},
}
IMAGE_OUTPUTS = {"image"}


@dataclass(frozen=True)
class Error:
    max_abs_error: float
    rmse: float
    psnr_db: float

    @classmethod
    def between(cls, actual: np.ndarray, reference: np.ndarray) -> Error:
        diff = actual.astype(np.float64) - reference
        rmse = float(np.sqrt(np.mean(diff * diff)))
        peak = float(reference.max() - reference.min()) or 1.0
        psnr = 20 * math.log10(peak / rmse) if rmse > 0 else math.inf
        return cls(float(np.abs(diff).max()), rmse, round(psnr, 2))


def int8_gate(output: str) -> float:
    """The INT8 gate of one output, in dB."""
    t = THRESHOLDS["int8"]
    return t["image_min_psnr_db"] if output in IMAGE_OUTPUTS else t["min_psnr_db"]


def judge(precision: str, output: str, export: Error, torch32: Error) -> list[str]:
    """The gate's failures for one output (empty when it passes)."""
    t = THRESHOLDS[precision]
    failures = []
    if precision == "fp32":
        limit = t["rmse_vs_torch_fp32_max_ratio"] * torch32.rmse
        if export.rmse > limit:
            failures.append(f"{output}: RMS error {export.rmse:.3g} > {limit:.3g} "
                            f"(twice PyTorch float32's {torch32.rmse:.3g})")
        if output in IMAGE_OUTPUTS and export.max_abs_error > t["image_max_abs_error"]:
            failures.append(f"{output}: max abs error {export.max_abs_error:.3g} > "
                            f"{t['image_max_abs_error']:g}")
        if output in IMAGE_OUTPUTS and export.psnr_db < t["image_min_psnr_db"]:
            failures.append(f"{output}: {export.psnr_db} dB < {t['image_min_psnr_db']} dB")
    elif precision == "int8":
        if export.psnr_db < int8_gate(output):
            failures.append(f"{output}: {export.psnr_db} dB < {int8_gate(output)} dB")
    elif export.psnr_db < t["min_psnr_db"]:
        failures.append(f"{output}: {export.psnr_db} dB < {t['min_psnr_db']} dB")
    return failures
