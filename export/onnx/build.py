"""`mnt-export build`: checkpoint -> one artefact folder of ONNX components, goldens,
landmark statistics and, written last, the manifest.

The folder is assembled under a temporary name beside OUT and renamed at the end, so an
interrupted or failed build never leaves a folder that looks valid.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from mnt.export.errors import AccuracyError, ExportError
from mnt.export.faces.build import available as faces_available
from mnt.export.faces.build import build_faces_into, face_images
from mnt.export.model.checkpoint import Reference, load_checkpoint
from mnt.export.model.components import COMPONENTS, ComponentSpec, component_modules, component_specs
from mnt.export.onnx.custom_ops import PLUGIN_COMPONENTS, custom_ops
from mnt.export.onnx.exporter import DTYPES, OPSET, export_component, grid_sample_modes
from mnt.export.onnx.goldens import GOLDEN_K, write_golden
from mnt.export.onnx.parity import measure
from mnt.export.onnx.samples import component_inputs, default_faces, faces_from
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.files import sha256_file, staged_folder
from mnt.runtime.manifest import STATS_NAME, ComponentInfo, Manifest, TensorInfo
from mnt.runtime.versions import installed_versions

GATE_KS = (1, 8)  # the ends of the supported range; the goldens add K=3
NUMPY_DTYPES = {"fp32": "float32", "fp16": "float16"}
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy")  # in the manifest


def toolchain_versions() -> dict[str, str]:
    return installed_versions(TOOLCHAIN)


def _save_stats(reference: Reference, path: Path) -> None:
    s = reference.stats
    np.savez(path, mean=s.mean, basis=s.basis, coef_mean=s.coef_mean, coef_std=s.coef_std,
             lambda_exp=np.float64(s.lambda_exp))


def check_faces(faces: list[np.ndarray] | None) -> None:
    if faces is not None and not faces:
        raise ExportError("no faces given for the parity inputs")


def parity_faces(reference: Reference, faces: list[np.ndarray] | None, face_paths: Sequence[Path]
                 ) -> list[np.ndarray]:
    """The parity inputs' faces: `faces` (crops), else read from `face_paths`, else the
    default photo."""
    size = reference.config.image_size
    if faces is not None:
        return faces
    return faces_from(face_paths, size) if face_paths else default_faces(size)


def build(checkpoint: Path, precision: str, out: Path, force: bool = False,
          faces: list[np.ndarray] | None = None, face_paths: Sequence[Path] = (),
          gate_ks: tuple[int, ...] = GATE_KS, log: Callable[[str], None] = print,
          plugins: bool = False, with_faces: bool = True) -> Manifest:
    """Export, gate and write one FP32 or FP16 artefact folder; raises ExportError (nothing
    written). `plugins`: the target encoder and generator with `mnt::` custom nodes for warp
    and attention (export/onnx/custom_ops.py), gated like the standard graph. INT8 builds
    start from one of these: mnt.calibration.build.build_int8."""
    if precision not in DTYPES:
        hint = ("int8 builds need calibration media: --precision int8 --calibration-data DIR"
                if precision == "int8" else None)
        raise ExportError(f"unknown precision {precision!r} here; choose one of {sorted(DTYPES)}", hint=hint)
    check_faces(faces)
    reference = load_checkpoint(checkpoint)
    with staged_folder(out, force, "the build", ExportError) as staging:
        images = face_images(face_paths) if with_faces else None
        return build_into(staging, checkpoint, reference, precision,
                          parity_faces(reference, faces, face_paths), gate_ks, log, plugins,
                          face_images=images)


def build_into(folder: Path, checkpoint: Path, reference: Reference, precision: str,
               faces: list[np.ndarray], gate_ks: tuple[int, ...],
               log: Callable[[str], None], plugins: bool = False,
               face_images: Sequence[np.ndarray] | None = None) -> Manifest:
    """Export and gate every component into the (empty, staged) `folder`; the manifest last.
    `face_images`: whole images with faces for the face components' gate (mnt.export.faces);
    None leaves them out, as does an export machine without mediapipe's models (logged)."""
    modules = component_modules(reference.folded_generator(), copy.deepcopy(reference.disentangler))
    specs = component_specs(reference.config)
    ks = sorted({*gate_ks, GOLDEN_K})
    log(f"parity inputs: {len(faces)} real faces, K = {ks}; reference: PyTorch in float64")
    inputs_by_k = {k: component_inputs(reference, faces, k) for k in ks}
    components = {}
    for name in COMPONENTS:
        with_plugins = plugins and name in PLUGIN_COMPONENTS
        log(f"{name}: exporting ({precision}{', plugin ops' if with_plugins else ''}) "
            "and checking parity ...")
        inputs = {k: inputs_by_k[k][name] for k in ks}
        components[name] = _export_component(folder, modules[name], specs[name], precision, inputs,
                                             log, with_plugins)
    faces_built = {}
    if face_images is not None:
        missing = faces_available()
        if missing is None:
            faces_built = build_faces_into(folder, precision, face_images, log)
        else:
            log(f"face components left out: {missing}")
    _save_stats(reference, folder / STATS_NAME)
    manifest = Manifest(
        tool_version=version("mnt"), checkpoint_sha256=sha256_file(checkpoint), precision=precision,
        opset=OPSET, versions=toolchain_versions(), model=json.loads(reference.config.to_json()),
        components=components, files={STATS_NAME: sha256_file(folder / STATS_NAME)}, faces=faces_built)
    manifest.write(folder)
    return manifest


def _export_component(folder: Path, module: torch.nn.Module, spec: ComponentSpec, precision: str,
                      inputs_by_k: dict[int, tuple[np.ndarray, ...]],
                      log: Callable[[str], None], plugins: bool = False) -> ComponentInfo:
    """Export one component, gate it, and store its goldens; -> its manifest entry."""
    file = f"{spec.name}.onnx"
    started = time.perf_counter()
    export_component(module, spec, precision, folder / file, plugins)
    exported = time.perf_counter() - started
    bad_modes = [m for m in grid_sample_modes(folder / file) if m != "bilinear"]
    if bad_modes:
        raise ExportError(f"{spec.name}: GridSample exported with mode {bad_modes[0]!r}, not 'bilinear'")
    ops: dict[str, int] = {}
    if plugins:
        try:
            ops = custom_ops(folder / file)
        except ValueError as err:
            raise ExportError(f"{spec.name}: plugin variant: {err}") from err
        if not ops:
            raise ExportError(f"{spec.name}: plugin variant exported without any mnt:: node")
    dtype = NUMPY_DTYPES[precision]
    info = ComponentInfo(
        name=spec.name, file=file, sha256=sha256_file(folder / file), precision=precision,
        phase=spec.phase,
        inputs=tuple(TensorInfo(t.name, dtype, t.shape) for t in spec.inputs),
        outputs=tuple(TensorInfo(t.name, dtype, t.shape) for t in spec.outputs),
        dims=dict(spec.dims), accuracy={}, custom_ops=ops)
    with OnnxRuntimeBackend(info, folder) as backend:
        accuracy, references = measure(module, backend, inputs_by_k, precision)
    log(f"{spec.name}: exported in {exported:.1f} s, worst over K={sorted(inputs_by_k)}: "
        f"{accuracy['psnr_db']:.1f} dB, max abs {accuracy['max_abs_error']:.2e} "
        f"(PyTorch float32: {accuracy['torch_fp32']['psnr_db']:.1f} dB)")
    if not accuracy["passed"]:
        raise AccuracyError(f"{spec.name} ({precision}) failed its parity gate: "
                          + "; ".join(accuracy["failures"]), hint="no artefact was written")
    return replace(info, accuracy={**accuracy, "export_seconds": round(exported, 1)},
                   golden=write_golden(folder, info, inputs_by_k[GOLDEN_K], references[GOLDEN_K]))
