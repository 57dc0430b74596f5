"""`mnt-export build`: checkpoint -> one artefact folder of ONNX components, goldens,
landmark statistics and, written last, the manifest.

The folder is assembled under a temporary name beside OUT and renamed at the end, so an
interrupted or failed build never leaves a folder that looks valid.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from mnt.export.checkpoint import Reference, load_checkpoint
from mnt.export.components import COMPONENTS, component_modules, component_specs
from mnt.export.errors import ExportError
from mnt.export.onnx_export import DTYPES, OPSET, export_component, grid_sample_modes
from mnt.export.parity import measure
from mnt.export.samples import component_inputs
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.files import sha256_file
from mnt.runtime.manifest import ComponentInfo, Manifest, TensorInfo

GATE_KS = (1, 8)  # the ends of the supported range; the goldens add K=3
GOLDEN_K = 3
NUMPY_DTYPES = {"fp32": "float32", "fp16": "float16"}
STATS_FILE = "landmark_stats.npz"


def toolchain_versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _save_stats(reference: Reference, path: Path) -> None:
    s = reference.stats
    np.savez(path, mean=s.mean, basis=s.basis, coef_mean=s.coef_mean, coef_std=s.coef_std,
             lambda_exp=np.float64(s.lambda_exp))


def _claim_output(out: Path, force: bool) -> Path:
    if out.exists() and not force:
        raise ExportError(f"{out} already exists", hint="pass --force to replace it with this build")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    staging = out.with_name(f".{out.name}.partial-{time.time_ns()}")
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise ExportError(f"cannot create {staging.parent}: {err.strerror}") from err
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished folder into place; an old build is removed only afterwards."""
    old = out.with_name(f".{out.name}.old-{time.time_ns()}") if out.exists() else None
    if old:
        out.rename(old)
    staging.rename(out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def build(checkpoint: Path, precision: str, out: Path, force: bool = False,
          faces: list[np.ndarray] | None = None, gate_ks: tuple[int, ...] = GATE_KS,
          log: Callable[[str], None] = print) -> Manifest:
    if precision not in DTYPES:
        raise ExportError(f"unknown precision {precision!r}; choose one of {sorted(DTYPES)}")
    reference = load_checkpoint(checkpoint)
    if not faces and faces is not None:
        raise ExportError("no faces given for the parity inputs")
    staging = _claim_output(out, force)
    try:
        manifest = _build_into(staging, checkpoint, reference, precision, faces, gate_ks, log)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build_into(folder: Path, checkpoint: Path, reference: Reference, precision: str,
                faces: list[np.ndarray] | None, gate_ks: tuple[int, ...],
                log: Callable[[str], None]) -> Manifest:
    from mnt.export.samples import default_faces

    size = reference.config.image_size
    faces = faces if faces is not None else default_faces(size)
    modules = component_modules(reference.folded_generator(), copy.deepcopy(reference.disentangler))
    specs = component_specs(reference.config)
    ks = sorted({*gate_ks, GOLDEN_K})
    log(f"parity inputs: {len(faces)} real faces, K = {ks}; reference: PyTorch in float64")
    inputs_by_k = {k: component_inputs(reference, faces, k) for k in ks}
    components = {}
    for name in COMPONENTS:
        spec, module = specs[name], modules[name]
        file = f"{name}.onnx"
        log(f"{name}: exporting ({precision}) and checking parity ...")
        started = time.perf_counter()
        export_component(module, spec, precision, folder / file)
        bad_modes = [m for m in grid_sample_modes(folder / file) if m != "bilinear"]
        if bad_modes:
            raise ExportError(f"{name}: GridSample exported with mode {bad_modes[0]!r}, not 'bilinear'")
        dtype = NUMPY_DTYPES[precision]
        info = ComponentInfo(
            name=name, file=file, sha256=sha256_file(folder / file), precision=precision,
            phase=spec.phase,
            inputs=tuple(TensorInfo(t.name, dtype, t.shape) for t in spec.inputs),
            outputs=tuple(TensorInfo(t.name, dtype, t.shape) for t in spec.outputs),
            dims=dict(spec.dims), accuracy={})
        exported = time.perf_counter() - started
        with OnnxRuntimeBackend(info, folder) as backend:
            accuracy, references = measure(
                module, backend, {k: inputs_by_k[k][name] for k in ks}, precision)
        log(f"{name}: exported in {exported:.1f} s, "
            f"worst over K={ks}: {accuracy['psnr_db']:.1f} dB, "
            f"max abs {accuracy['max_abs_error']:.2e} "
            f"(PyTorch float32: {accuracy['torch_fp32']['psnr_db']:.1f} dB)")
        if not accuracy["passed"]:
            raise ExportError(f"{name} ({precision}) failed its parity gate: "
                              + "; ".join(accuracy["failures"]),
                              hint="no artefact was written")
        golden = f"goldens/{name}.npz"
        (folder / "goldens").mkdir(exist_ok=True)
        np.savez(folder / golden,
                 **{f"input:{t.name}": x for t, x in zip(spec.inputs, inputs_by_k[GOLDEN_K][name],
                                                         strict=True)},
                 **{f"output:{t.name}": y for t, y in zip(spec.outputs, references[GOLDEN_K],
                                                          strict=True)})
        components[name] = ComponentInfo(
            **{**info.__dict__, "accuracy": {**accuracy, "export_seconds": round(exported, 1)},
               "golden": {"file": golden, "sha256": sha256_file(folder / golden)}})
    _save_stats(reference, folder / STATS_FILE)
    manifest = Manifest(
        tool_version=version("mnt"), checkpoint_sha256=sha256_file(checkpoint), precision=precision,
        opset=OPSET, versions=toolchain_versions(), model=json.loads(reference.config.to_json()),
        components=components, files={STATS_FILE: sha256_file(folder / STATS_FILE)})
    manifest.write(folder)
    return manifest
