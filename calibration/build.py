"""`mnt-export build --precision int8 --calibration-data DIR`: an FP32 build first (gated
as usual, in a hidden folder inside the staging folder; or an existing FP32 build of the
same checkpoint, `--from-fp32`, used read-only), then per component a Q/DQ INT8 graph
calibrated on real frames, with the blocks that cost most accuracy left in FP32, gated
against PyTorch on held-back real frames: while they miss, the next most sensitive INT8
block is kept in FP32 too, down to FP32 whole (recorded: a miss never fails the build). A
component whose INT8 graph passes its own gate but still costs the reenacted frames more
than the end-to-end bar stays FP32 whole. Then goldens, the accuracy report and the
manifest (last). A hidden FP32 build is removed before the folder is published."""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

import numpy as np

from mnt.calibration import report as reports
from mnt.calibration.data import CalibrationData, Feeds, Options, collect
from mnt.calibration.quantize import node_groups, qdq_counts
from mnt.calibration.sensitivity import Plan, Search
from mnt.export.errors import ExportError
from mnt.export.model.checkpoint import Reference, load_checkpoint
from mnt.export.model.components import COMPONENTS, component_modules
from mnt.export.onnx.build import GATE_KS, build_into, check_faces, parity_faces
from mnt.export.onnx.goldens import GOLDEN_K, write_golden
from mnt.export.onnx.parity import measure
from mnt.runtime.backends.onnxruntime import INT8_EXACT, OnnxRuntimeBackend
from mnt.runtime.cpu import int8_path
from mnt.runtime.errors import RuntimeStageError
from mnt.runtime.files import sha256_file, staged_folder
from mnt.runtime.manifest import STATS_NAME, ComponentInfo, Manifest, check_hashes, load_manifest
from mnt.runtime.reenactor import Reenactor

REFERENCE_DIR = ".fp32-reference"
MARGIN_DB = 2.0  # the search keeps this much above each gate on its samples (0.5 and 1.5 dB on 3
# samples let a held-back frame of the tiny target encoder fall 0.2 dB under its gate)
# End to end, a component other than the generator in INT8 (the rest FP32) must keep the
# reenacted frames of the calibration sample at least this close to the FP32 artefact's
# (uint8 PSNR, worst frame): the generator's own bar. Its outputs can pass their 30 dB gate and
# still move the frame more, since the generator amplifies them: measured, the INT8 target
# encoders of tiny and paper (33-36 dB against float64) alone bring frames to 22-23 dB.
E2E_GATE_DB = 30.0
T = TypeVar("T")


def _by_k(info: ComponentInfo, feeds: list[Feeds]) -> dict[int, list[Feeds]]:
    """Samples grouped by the component's dynamic axis (K or N)."""
    groups: dict[int, list[Feeds]] = {}
    for f in feeds:
        k = next(f[t.name].shape[axis] for t in info.inputs
                 for axis, d in enumerate(t.shape) if isinstance(d, str))
        groups.setdefault(int(k), []).append(f)
    return dict(sorted(groups.items()))


def _spread(items: list[T], count: int) -> list[T]:
    step = max(1, len(items) // count)
    return items[::step][:count]


def fp32_reference(folder: Path, checkpoint: Path) -> Manifest:
    """Check that `folder` is an intact standard FP32 build of `checkpoint` (to calibrate from)."""
    try:
        manifest = load_manifest(folder)
    except RuntimeStageError as err:
        raise ExportError(f"--from-fp32 {folder}: {err}", hint=err.hint) from err
    problems = []
    if manifest.precision != "fp32":
        problems.append(f"it is a {manifest.precision} build, not fp32")
    if manifest.checkpoint_sha256 != sha256_file(checkpoint):
        problems.append(f"it was built from another checkpoint than {checkpoint}")
    if any(c.custom_ops for c in manifest.components.values()):
        problems.append("it is a plugin variant (mnt:: nodes cannot be quantised)")
    changed = check_hashes(folder, manifest)
    if changed:
        problems.append(f"{', '.join(changed)} changed since it was built")
    if problems:
        raise ExportError(f"--from-fp32 {folder} cannot be used: " + "; ".join(problems),
                          hint=f"build it with `mnt-export build --checkpoint {checkpoint} --precision fp32 "
                               f"--out {folder} --force`, or leave out --from-fp32")
    return manifest


def build_int8(checkpoint: Path, out: Path, calibration_data: Path, options: Options | None = None,
               force: bool = False, faces: list[np.ndarray] | None = None,
               face_paths: Sequence[Path] = (), gate_ks: tuple[int, ...] = GATE_KS,
               log: Callable[[str], None] = print, from_fp32: Path | None = None) -> Manifest:
    """One INT8 artefact folder from `checkpoint`, calibrated on the driver videos and target
    photos in `calibration_data`; raises ExportError (nothing written). `from_fp32`: an
    existing FP32 build of the same checkpoint to calibrate from (read only)."""
    if from_fp32 is not None and Path(from_fp32).resolve() == Path(out).resolve():
        raise ExportError("--from-fp32 and --out are the same folder", hint="write the int8 build elsewhere")
    check_faces(faces)
    reference = load_checkpoint(checkpoint)
    with staged_folder(out, force, "the build", ExportError) as staging:
        return build_int8_into(staging, checkpoint, reference, parity_faces(reference, faces, face_paths),
                               gate_ks, Path(calibration_data), options or Options(), log,
                               from_fp32=from_fp32)


def build_int8_into(folder: Path, checkpoint: Path, reference: Reference, faces: list[np.ndarray],
                    gate_ks: tuple[int, ...], calibration_data: Path, options: Options,
                    log: Callable[[str], None], from_fp32: Path | None = None) -> Manifest:
    """`from_fp32`: an FP32 build of the same checkpoint to start from (read, never written);
    without it one is built (and gated) first in a hidden folder."""
    started = time.perf_counter()
    if from_fp32 is not None:
        fp32_dir = Path(from_fp32)
        fp32_manifest = fp32_reference(fp32_dir, checkpoint)
        log(f"int8: starting from the FP32 build {fp32_dir}")
    else:
        fp32_dir = folder / REFERENCE_DIR
        fp32_dir.mkdir()
        log("int8: building the FP32 reference first")
        build_into(fp32_dir, checkpoint, reference, "fp32", faces, gate_ks, log)
        fp32_manifest = load_manifest(fp32_dir)
    log(f"int8: calibration frames from {calibration_data} (seed {options.seed}) ...")
    try:
        with Reenactor(fp32_dir, backend="onnxruntime-cpu") as model:
            data = collect(calibration_data, model, options, say=log)
    except RuntimeStageError as err:  # bad media: this stage's error, with its hint
        raise ExportError(str(err), hint=err.hint) from err
    log(f"int8: {len(data.calibration)} calibration frames, {len(data.held_back)} held back, "
        f"{len(data.target_sets)} target sets ({time.perf_counter() - started:.0f} s so far)")
    modules = component_modules(reference.folded_generator(), copy.deepcopy(reference.disentangler))
    cache = folder / ".calibration-cache"
    cache.mkdir()
    components, plans, errors, kept_whole = {}, {}, {}, {}
    for name in COMPONENTS:
        fp32_info = fp32_manifest.components[name]
        info, plans[name], errors[name], why = _component(
            folder, fp32_dir, cache, fp32_info, modules[name], data, options.search_frames, log)
        components[name] = info
        if why:
            kept_whole[name] = why
            components[name] = _keep_fp32(folder, fp32_dir, fp32_info, info)
    log("int8: end to end on calibration frames, one component in INT8 at a time ...")
    decision = reports.attribution(fp32_dir, fp32_manifest, folder,
                                   {n: c for n, c in components.items() if n not in kept_whole},
                                   _spread(data.calibration, options.search_frames), data)
    for name, e in decision.items():
        log(f"  only {name} INT8: PSNR mean {e['psnr_db']['mean']} dB (min {e['psnr_db']['min']}), "
            f"SSIM mean {e['ssim']['mean']}")
        if name != "generator" and e["psnr_db"]["min"] < E2E_GATE_DB:
            kept_whole[name] = (f"in INT8 (the rest FP32) its reenacted calibration frames reach only "
                                f"{e['psnr_db']['min']} dB against the FP32 artefact (< {E2E_GATE_DB} dB), "
                                f"although its own outputs pass their gate")
            components[name] = _keep_fp32(folder, fp32_dir, fp32_manifest.components[name], components[name])
            log(f"  {name} stays FP32: {kept_whole[name]}")
    shutil.copyfile(fp32_dir / STATS_NAME, folder / STATS_NAME)
    files = {STATS_NAME: sha256_file(folder / STATS_NAME)}
    for face in fp32_manifest.faces.values():  # the face networks: as in the FP32 folder (no INT8)
        (folder / face.file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fp32_dir / face.file, folder / face.file)
        if face.golden:
            (folder / face.golden["file"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fp32_dir / face.golden["file"], folder / face.golden["file"])
    calibration = {
        "method": "onnxruntime.quantization.quantize_static, QDQ, symmetric int8 activations "
                  "(MinMax) and per-channel weights on Conv/MatMul/Gemm, float biases",
        "sample": data.sample(),
        "components": {n: _calibration_entry(p, kept_whole.get(n)) for n, p in plans.items()},
        "search_frames": options.search_frames,
        "end_to_end_gate_psnr_db": E2E_GATE_DB,
        "measured_on": measured_on(),
    }
    manifest = Manifest(
        tool_version=version("mnt"), checkpoint_sha256=fp32_manifest.checkpoint_sha256, precision="int8",
        opset=fp32_manifest.opset, versions=fp32_manifest.versions, model=fp32_manifest.model,
        components=components, files=files, calibration=calibration, faces=fp32_manifest.faces)
    manifest.write(folder)  # provisional: the end-to-end run loads the folder as an artefact
    log("int8: end to end on the held-back frames (FP32 vs INT8 artefact) ...")
    e2e = reports.end_to_end(fp32_dir, folder, data)
    log(f"int8: end to end {e2e['frames']} frames: PSNR mean {e2e['psnr_db']['mean']} dB "
        f"(min {e2e['psnr_db']['min']}), SSIM mean {e2e['ssim']['mean']}")
    report = {
        "checkpoint_sha256": manifest.checkpoint_sha256, "sample": data.sample(),
        "measured_on": calibration["measured_on"],
        "components": {n: {"precision": components[n].precision, "accuracy": errors[n],
                           "sensitivity": plans[n].to_json(), "kept_fp32_whole": kept_whole.get(n),
                           "qdq_nodes": qdq_counts(folder / components[n].file)} for n in COMPONENTS},
        "end_to_end": e2e,
        "end_to_end_one_component_int8": {"frames": "calibration frames", "gate_psnr_db": E2E_GATE_DB,
                                          "components": decision},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    for written in reports.write(folder, report):
        files[written] = sha256_file(folder / written)
    calibration["end_to_end"] = {k: e2e[k] for k in ("frames", "psnr_db", "ssim")}
    calibration["report"] = reports.JSON_NAME
    manifest = replace(manifest, files=files, calibration=calibration)
    if from_fp32 is None:
        shutil.rmtree(fp32_dir)
    shutil.rmtree(cache)
    manifest.write(folder)
    return manifest


def measured_on() -> dict:
    """Where the INT8 figures were measured: ONNX Runtime's CPU INT8 path. With exact
    products asked for where the kernels saturate, every x86 path gives the same integers."""
    import onnxruntime as ort

    path = int8_path()
    return {"cpu": path.cpu, "int8_path": path.name, "onnxruntime": ort.__version__,
            # set by session_options where the path saturates: u8 x u8 kernels
            INT8_EXACT[0]: path.saturates is not False}


def _calibration_entry(plan: Plan, kept_whole: str | None) -> dict:
    summary = plan.to_json()
    entry = {"precision": "fp32" if kept_whole else "int8",
             "kept_in_higher_precision": summary["kept_in_higher_precision"],
             "quantized_nodes": summary["quantized_nodes"], "fp32_nodes": summary["fp32_nodes"]}
    if kept_whole:
        entry.update(kept_in_higher_precision=[{"block": "(whole component)", "precision": "fp32",
                                                "why": kept_whole}],
                     quantized_nodes=0, fp32_nodes=summary["quantized_nodes"] + summary["fp32_nodes"])
    return entry


def _keep_fp32(folder: Path, fp32_dir: Path, fp32_info: ComponentInfo, int8_info: ComponentInfo
               ) -> ComponentInfo:
    """Replace a component's INT8 graph and goldens by the FP32 build's (its gate and figures too)."""
    shutil.copyfile(fp32_dir / fp32_info.file, folder / int8_info.file)
    if fp32_info.golden:
        shutil.copyfile(fp32_dir / fp32_info.golden["file"], folder / fp32_info.golden["file"])
    return fp32_info


def _component(folder: Path, fp32_dir: Path, cache: Path, fp32_info: ComponentInfo, module,
               data: CalibrationData, sensitivity_samples: int, log: Callable[[str], None]
               ) -> tuple[ComponentInfo, Plan, dict, str | None]:
    """-> (its INT8 entry, the search's plan, its held-back errors, why it stays FP32 whole or None)."""
    name, file = fp32_info.name, fp32_info.file
    calibration, held = data.feeds[name], data.held_back_feeds[name]
    log(f"{name}: INT8 from {len(calibration)} calibration inputs; sensitivity per block ...")
    started = time.perf_counter()
    search = Search(fp32_dir / file, folder / file, node_groups(fp32_dir / file), calibration,
                    _spread(calibration, sensitivity_samples), cache / f"{name}.json", MARGIN_DB, log)
    plan = search.run()
    info = replace(fp32_info, precision="int8", accuracy={}, golden=None)
    by_k = _by_k(info, held)
    names = [t.name for t in info.inputs]
    inputs_by_k = {k: tuple(np.asarray(f[n], np.float64) for n in names) for k, (f, *_) in by_k.items()}
    # A few search samples cannot vouch for every frame: while the held-back frames miss the
    # gate, the next most sensitive INT8 block goes back to FP32 (in the search's order).
    while True:
        info = replace(info, sha256=sha256_file(folder / file))
        with OnnxRuntimeBackend(info, folder) as backend:
            accuracy, references = measure(module, backend, inputs_by_k, "int8")
            errors = reports.component_errors(module, backend, held)
        # misses on any held-back input against PyTorch FP32; else measure's, on the first input
        # of each K against float64 (mostly the same misses: not said twice)
        failures = [f"{out}: {e['worst_psnr_db']} dB < {e['gate_psnr_db']} dB on a held-back frame"
                    for out, e in errors["outputs"].items()
                    if e["worst_psnr_db"] is not None and e["worst_psnr_db"] < e["gate_psnr_db"]
                    ] or list(accuracy["failures"])
        log(f"{name}: INT8 worst over K={sorted(inputs_by_k)}: {accuracy['psnr_db']:.1f} dB against "
            f"float64, held back ({errors['samples']} inputs): "
            + ", ".join(f"{o} SNR {e['snr_db']} dB" for o, e in list(errors["outputs"].items())[:3])
            + f" ({time.perf_counter() - started:.0f} s)")
        if not failures:
            break
        miss = "; ".join(failures[:2])
        log(f"{name}: INT8 missed the gate on held-back frames ({miss}); keeping the next most "
            "sensitive block in FP32 ...")
        if search.hand_back(miss) is None:
            last = ", ".join(plan.final.quantized if plan.final else ()) or "no block"
            why = f"its INT8 graphs missed the gate on held-back frames down to {last} alone INT8 ({miss})"
            log(f"{name}: stays FP32 whole: {why}")
            return info, plan, errors, why
    golden_k = GOLDEN_K if GOLDEN_K in inputs_by_k else max(inputs_by_k)
    golden = write_golden(folder, info, inputs_by_k[golden_k], references[golden_k])
    accuracy = {**accuracy, "inputs": "held-back calibration frames (real faces, runtime preprocessing)",
                "held_back": errors, "sensitivity_seconds": round(plan.seconds, 1)}
    json.dumps(accuracy)  # fail here, not while writing the manifest, on a non-JSON value
    return replace(info, accuracy=accuracy, golden=golden), plan, errors, None
