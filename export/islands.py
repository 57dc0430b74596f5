"""Measure what each FP32 island buys: export the FP16 target encoder and generator with
all islands, with each one left out, and with none, and compare each against float64."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnt.export.checkpoint import Reference
from mnt.export.components import component_modules, component_specs
from mnt.export.model.blocks import ISLANDS, fp32_islands
from mnt.export.onnx_export import export_component
from mnt.export.parity import measure
from mnt.export.samples import component_inputs
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import ComponentInfo, TensorInfo

MEASURED = ("target_encoder", "generator")


def island_variants() -> dict[str, tuple[str, ...]]:
    variants = {"all islands": ISLANDS}
    variants.update({f"without {name}": tuple(i for i in ISLANDS if i != name) for name in ISLANDS})
    variants["no islands"] = ()
    return variants


def ablate(reference: Reference, faces: list[np.ndarray], k: int = 3,
           log: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """{variant: {component: worst PSNR in dB against float64}} for FP16 graphs."""
    modules = component_modules(reference.folded_generator(), copy.deepcopy(reference.disentangler))
    specs = component_specs(reference.config)
    inputs = component_inputs(reference, faces, k)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant, islands in island_variants().items():
            results[variant] = {}
            for name in MEASURED:
                spec, path = specs[name], Path(folder) / f"{name}.onnx"
                with fp32_islands(*islands):
                    export_component(modules[name], spec, "fp16", path)
                info = ComponentInfo(
                    name, path.name, "-", "fp16", spec.phase,
                    tuple(TensorInfo(t.name, "float16", t.shape) for t in spec.inputs),
                    tuple(TensorInfo(t.name, "float16", t.shape) for t in spec.outputs),
                    dict(spec.dims), {})
                with OnnxRuntimeBackend(info, folder) as backend:
                    accuracy, _ = measure(modules[name], backend, {k: inputs[name]}, "fp16")
                results[variant][name] = accuracy["psnr_db"]
            log(f"{variant:<18}" + "".join(f"{n} {results[variant][n]:6.1f} dB   " for n in MEASURED))
    return results
