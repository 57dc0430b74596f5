"""The INT8 accuracy report, written beside the manifest: per component the SNR and NMSE of
each output against PyTorch FP32 on the held-back frames' inputs, and end to end the PSNR
and SSIM of reenacted frames (INT8 artefact vs the FP32 artefact of the same checkpoint,
each through the whole runtime: target encoding, landmark transformer, generator) on the
held-back frames, which were not in the calibration sample."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnt.calibration.data import CalibrationData, DriverFrame, Feeds
from mnt.export.onnx.gates import int8_gate
from mnt.export.onnx.parity import run_torch
from mnt.runtime.backends.base import Backend
from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend
from mnt.runtime.manifest import ComponentInfo, Manifest
from mnt.runtime.reenactor import Reenactor

JSON_NAME = "calibration_report.json"
MARKDOWN_NAME = "calibration_report.md"


def _db(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def component_errors(module: nn.Module, backend: Backend, feeds: list[Feeds]) -> dict[str, Any]:
    """Per output, over all samples: SNR = signal power / error power (dB), NMSE = its
    inverse, PSNR over the reference's range (the gate's measure)."""
    inputs = [t.name for t in backend.component.inputs]
    sums: dict[str, list[float]] = {}
    for f in feeds:
        reference = run_torch(module, tuple(f[n] for n in inputs), _float32())
        got = backend.infer(f)
        for t, ref in zip(backend.component.outputs, reference, strict=True):
            err = np.asarray(got[t.name], np.float64) - ref
            s = sums.setdefault(t.name, [0.0, 0.0, 0.0, math.inf])
            s[0] += float(np.sum(ref * ref))
            s[1] += float(np.sum(err * err))
            s[2] += err.size
            rmse = float(np.sqrt(np.mean(err * err)))
            peak = float(ref.max() - ref.min()) or 1.0
            s[3] = min(s[3], 20 * math.log10(peak / rmse) if rmse > 0 else math.inf)
    out = {}
    for name, (signal, noise, _, worst_psnr) in sums.items():
        nmse = noise / signal if signal > 0 else math.inf
        out[name] = {"snr_db": _db(10 * math.log10(1 / nmse)) if nmse > 0 else None,
                     "nmse": nmse if math.isfinite(nmse) else None, "worst_psnr_db": _db(worst_psnr),
                     "gate_psnr_db": int8_gate(name)}
    return {"samples": len(feeds), "outputs": out}


def _float32():
    import torch

    return torch.float32


PSNR_CAP_DB = 100.0  # identical uint8 frames would be infinitely close: capped so means stay finite


def _frames(model: Reenactor, data: CalibrationData, frames: list[DriverFrame]) -> list[np.ndarray]:
    """Reenact `frames`, each with its target set (encoded once per set)."""
    states = {}
    for s in sorted({f.target_set for f in frames}):
        faces = data.target_sets[s]
        states[s] = model.encode_targets([t.image for t in faces], [t.landmarks for t in faces])[0]
    return [model.generate(states[f.target_set],
                           model.driver_landmarks(states[f.target_set], f.image, f.landmarks))
            for f in frames]


def _compare(reference: list[np.ndarray], candidate: list[np.ndarray],
             frames: list[DriverFrame]) -> dict[str, Any]:
    """PSNR (uint8 range, capped) and SSIM of reenacted frames against the reference's."""
    from skimage.metrics import structural_similarity

    psnr, ssim = [], []
    for x, y in zip(reference, candidate, strict=True):
        mse = float(np.mean((x.astype(np.float64) - y) ** 2))
        psnr.append(min(PSNR_CAP_DB, 10 * math.log10(255.0 ** 2 / mse)) if mse > 0 else PSNR_CAP_DB)
        ssim.append(float(structural_similarity(x, y, channel_axis=2, data_range=255)))
    return {
        "frames": len(psnr),
        "psnr_db": {"mean": _db(float(np.mean(psnr))), "min": _db(float(np.min(psnr))),
                    "capped_at": PSNR_CAP_DB},
        "ssim": {"mean": round(float(np.mean(ssim)), 4), "min": round(float(np.min(ssim)), 4)},
        "per_frame": [{"video": f.video, "frame": f.index, "psnr_db": _db(p), "ssim": round(s, 4)}
                      for f, p, s in zip(frames, psnr, ssim, strict=True)],
    }


def end_to_end(fp32: Path, int8: Path, data: CalibrationData) -> dict[str, Any]:
    """Reenact every held-back frame with both artefacts; compare the uint8 frames."""
    with Reenactor(fp32, backend="onnxruntime-cpu") as a, Reenactor(int8, backend="onnxruntime-cpu") as b:
        return _compare(_frames(a, data, data.held_back), _frames(b, data, data.held_back), data.held_back)


def attribution(fp32: Path, fp32_manifest: Manifest, int8: Path, int8_components: dict[str, ComponentInfo],
                frames: list[DriverFrame], data: CalibrationData) -> dict[str, dict[str, Any]]:
    """Per component: the reenacted `frames` with only that component's INT8 graph (from
    `int8`, the others FP32) against the FP32 artefact: where the end-to-end error comes from."""
    with Reenactor(fp32, backend="onnxruntime-cpu") as model:
        reference = _frames(model, data, frames)
    out = {}
    for name, info in int8_components.items():
        backends: dict[str, Backend] = {
            n: OnnxRuntimeBackend(info, int8) if n == name else OnnxRuntimeBackend(c, fp32)
            for n, c in fp32_manifest.components.items()}
        with Reenactor(fp32, backends=backends) as mixed:
            result = _compare(reference, _frames(mixed, data, frames), frames)
        out[name] = {k: result[k] for k in ("frames", "psnr_db", "ssim")}
    return out


def write(folder: Path, report: dict[str, Any]) -> list[str]:
    (folder / JSON_NAME).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (folder / MARKDOWN_NAME).write_text(markdown(report))
    return [JSON_NAME, MARKDOWN_NAME]


def _measured_on(where: dict[str, Any] | None) -> str:
    if not where:
        return "Measured on: not recorded."
    how = "u8 x u8 kernels (`session.x64quantprecision`)" if where["session.x64quantprecision"] \
        else "exact u8 x s8 kernels"
    return (f"Measured in ONNX Runtime {where['onnxruntime']} on {where['cpu'] or 'an unnamed CPU'}, "
            f"INT8 path {where['int8_path']}, {how}: every x86 path gives the same integers "
            "(calibration/README.md).")


def markdown(report: dict[str, Any]) -> str:
    sample = report["sample"]
    e2e = report["end_to_end"]
    lines = [
        "# INT8 calibration report", "",
        f"Checkpoint `{report['checkpoint_sha256'][:12]}`; calibration media `{sample['folder']}`: "
        f"{len(sample['frames'])} calibration frames, {len(sample['held_back'])} held-back frames, "
        f"{len(sample['target_sets'])} target sets (sample sha256 `{sample['sha256'][:12]}`).", "",
        _measured_on(report.get("measured_on")), "",
        "## Per component (held-back inputs, the INT8 graph against PyTorch FP32)", "",
        "| component | output | SNR dB | NMSE | worst PSNR dB | gate dB | as built |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, c in report["components"].items():
        for output, e in c["accuracy"]["outputs"].items():
            nmse = "-" if e["nmse"] is None else format(e["nmse"], ".2e")
            lines.append(f"| {name} | {output} | {e['snr_db']} | {nmse} | {e['worst_psnr_db']} "
                         f"| {e['gate_psnr_db']} | {c['precision']} |")
    lines += ["", "## End to end (held-back frames, INT8 artefact vs FP32 artefact, uint8 frames)", "",
              f"{e2e['frames']} frames: PSNR mean {e2e['psnr_db']['mean']} dB (min {e2e['psnr_db']['min']}), "
              f"SSIM mean {e2e['ssim']['mean']} (min {e2e['ssim']['min']}).", ""]
    one = report["end_to_end_one_component_int8"]
    lines += [f"One component in INT8, the others FP32 ({one['frames']}; a component other than the "
              f"generator below {one['gate_psnr_db']} dB on its worst frame stays FP32 whole):", "",
              "| INT8 component | frames | PSNR mean dB | PSNR min dB | SSIM mean |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, e in one["components"].items():
        lines.append(f"| {name} | {e['frames']} | {e['psnr_db']['mean']} | {e['psnr_db']['min']} "
                     f"| {e['ssim']['mean']} |")
    lines += ["", "## Layers kept in higher precision (FP32)", ""]
    for name, c in report["components"].items():
        if c["kept_fp32_whole"]:
            lines += [f"**{name}**: the whole component stays FP32: {c['kept_fp32_whole']}.", ""]
            continue
        s = c["sensitivity"]
        lines.append(f"**{name}**: {s['blocks'] - len(s['kept_in_higher_precision'])} of {s['blocks']} "
                     f"blocks INT8 ({s['quantized_nodes']} of {s['quantized_nodes'] + s['fp32_nodes']} "
                     f"Conv/MatMul/Gemm nodes); all INT8 it measured "
                     f"{_worst(s['all_int8']['psnr_db'])} dB, as built "
                     f"{_worst(s['final']['psnr_db'])} dB (calibration frames).")
        lines.append("")
        for kept in s["kept_in_higher_precision"]:
            lines.append(f"- `{kept['block']}` ({len(kept['nodes'])} nodes): {kept['why']}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _worst(psnr_db: dict[str, float | None]) -> str:
    """The worst output's PSNR (None: identical to FP32)."""
    finite = [v for v in psnr_db.values() if v is not None]
    return f"{min(finite):.1f}" if finite else "identical"
