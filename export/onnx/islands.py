"""Measure what each FP32 island buys: run the reference end to end (target encoding, then
one frame) in PyTorch float16 with all islands, with each one left out, and with none, and
compare the frame with PyTorch float64 on the same real-face inputs.

PyTorch float16 on the CPU rounds every op's output to float16 (arithmetic inside an op is
wider), which is how TensorRT's FP16 layers behave; ONNX Runtime's CPU provider is no guide
here, as it runs runs of float16 nodes without float16 kernels in float32 between casts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch

from mnt.export.model.blocks import ISLANDS, fp32_islands
from mnt.export.model.checkpoint import Reference
from mnt.export.onnx.samples import component_inputs


def island_variants() -> dict[str, tuple[str, ...]]:
    variants = {"all islands": ISLANDS}
    variants.update({f"without {name}": tuple(i for i in ISLANDS if i != name) for name in ISLANDS})
    variants["no islands"] = ()
    return variants


def _psnr(actual: torch.Tensor, reference: torch.Tensor) -> float:
    if not torch.isfinite(actual).all():
        return math.nan
    mse = torch.mean((actual.double() - reference) ** 2).item()
    return 20 * math.log10(2.0 / math.sqrt(mse)) if mse > 0 else math.inf


def ablate(reference: Reference, faces: list[np.ndarray], k: int = 1,
           log: Callable[[str], None] = print) -> dict[str, float]:
    """{variant: PSNR in dB of the float16 frame against float64 (nan: non-finite)}."""
    generator = reference.folded_generator()
    inputs = component_inputs(reference, faces, k)
    images, landmarks = (torch.from_numpy(x)[None] for x in inputs["target_encoder"])
    driver = torch.from_numpy(inputs["generator"][0])
    with torch.no_grad():
        expected = copy.deepcopy(generator).double()(driver.double(), images.double(),
                                                     landmarks.double())
        half = copy.deepcopy(generator).half()
        results = {}
        for variant, islands in island_variants().items():
            with fp32_islands(*islands):
                frame = half(driver.half(), images.half(), landmarks.half())
            results[variant] = round(_psnr(frame, expected), 1)
            log(f"{variant:<18} {results[variant]:6.1f} dB")
    return results
