"""The FP32 parity gate's float32 floor: an error at float32's rounding noise passes whatever
its ratio to PyTorch float32's, and a genuinely wrong export still fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnt.export.onnx.gates import FP32_EPS, FP32_FLOOR_EPS, THRESHOLDS, Error, judge


def _noisy(reference: np.ndarray, rms: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(reference.shape)
    return reference + noise * (rms / np.sqrt(np.mean(noise * noise)))


def test_the_floor_is_a_few_float32_eps_of_the_range():
    floor = THRESHOLDS["fp32"]["rmse_floor_psnr_db"]
    assert floor == pytest.approx(-20 * math.log10(FP32_FLOOR_EPS * FP32_EPS), abs=0.01)
    assert 120 < floor < 135  # far above anything but float32 rounding, far below float64's noise


def test_the_reported_disentangler_failure_passes():
    # issue 16: small seed 1, coefficients at 146.5 dB, "RMS error 1.69e-08 > 1.32e-08"
    export = Error(max_abs_error=5.37e-08, rmse=1.69e-08, psnr_db=146.5)
    torch32 = Error(max_abs_error=2.4e-08, rmse=6.6e-09, psnr_db=154.6)
    assert judge("fp32", "coefficients", export, torch32) == []


# export and PyTorch float32 RMS errors in float32 eps x the output's range
@pytest.mark.parametrize("export_eps, torch_eps, passes", [
    (0.4, 0.1, True),  # both at the rounding floor: a ratio of 4 means nothing
    (0.95 * FP32_FLOOR_EPS, 0.1, True),
    (1.05 * FP32_FLOOR_EPS, 0.1, False),  # above the floor the ratio rules again
    (10.0, 6.0, True),
    (10.0, 4.0, False),
])
def test_judge_fp32_passes_under_the_floor_and_else_within_twice_pytorch(export_eps, torch_eps, passes):
    reference = np.random.default_rng(0).uniform(-0.15, 0.2, (3, 64))  # like the coefficients
    scale = FP32_EPS * float(reference.max() - reference.min())
    export = Error.between(_noisy(reference, export_eps * scale, 1), reference)
    torch32 = Error.between(_noisy(reference, torch_eps * scale, 2), reference)
    failures = judge("fp32", "coefficients", export, torch32)
    assert (failures == []) == passes, failures
    if not passes:
        assert "the float32 floor" in failures[0]


def test_the_floor_does_not_excuse_the_image_bars():
    export = Error(max_abs_error=2e-4, rmse=1e-9, psnr_db=186.0)
    assert judge("fp32", "image", export, export) == ["image: max abs error 0.0002 > 0.0001"]


@pytest.fixture(scope="module")
def disentangler(tiny_checkpoint, parity_faces):
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.model.components import component_specs
    from mnt.export.onnx.samples import component_inputs

    reference = load_checkpoint(tiny_checkpoint)
    spec = component_specs(reference.config)["landmark_disentangler"]
    inputs = {k: component_inputs(reference, parity_faces, k)[spec.name] for k in (1, 3)}
    return reference.disentangler.eval(), spec, inputs


def _export_and_gate(disentangler, folder, perturb=None, scale_output=1.0):
    """build's own export-and-gate of the disentangler; `perturb` changes the exported copy's
    weights only, `scale_output` what ONNX Runtime returns."""
    import copy

    import torch

    from mnt.export.onnx import build
    from mnt.runtime.backends.onnxruntime import OnnxRuntimeBackend

    module, spec, inputs = disentangler
    exporter = build.export_component

    def export(module, *args, **kwargs):
        if perturb is not None:
            module = copy.deepcopy(module)
            with torch.no_grad():
                for p in module.parameters():
                    perturb(p)
        return exporter(module, *args, **kwargs)

    class Scaled(OnnxRuntimeBackend):
        def infer_impl(self, ready, dims):
            return {n: y * np.float32(scale_output) for n, y in super().infer_impl(ready, dims).items()}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "export_component", export)
        mp.setattr(build, "OnnxRuntimeBackend", Scaled)
        return build._export_component(folder, module, spec, "fp32", inputs, log=lambda _: None)


def test_a_right_export_passes_the_fp32_gate(disentangler, tmp_path):
    info = _export_and_gate(disentangler, tmp_path)
    assert info.accuracy["passed"], info.accuracy["failures"]


def test_weights_off_by_1e_4_fail_the_fp32_gate(disentangler, tmp_path):
    from mnt.export.errors import AccuracyError

    signs = np.random.default_rng(0)

    def perturb(p):  # every weight off by 1e-4 of itself, either way
        p.mul_(1 + 1e-4 * p.new_tensor(signs.choice([-1.0, 1.0], tuple(p.shape))))

    with pytest.raises(AccuracyError, match=r"coefficients: RMS error .*\(the float32 floor\)"):
        _export_and_gate(disentangler, tmp_path, perturb=perturb)


def test_an_output_scaled_by_1e_5_fails_the_fp32_gate(disentangler, tmp_path):
    from mnt.export.errors import AccuracyError

    with pytest.raises(AccuracyError, match=r"coefficients: RMS error .*\(the float32 floor\)"):
        _export_and_gate(disentangler, tmp_path, scale_output=1 + 1e-5)


@pytest.mark.slow
def test_models_at_the_float32_floor_pass_the_fp32_gate(tmp_path):
    """Several seeds' disentangler exported and gated as `mnt-export build` does, on its default
    faces: its coefficients are the outputs at float32's rounding, where the ratio rule misfired
    (over 40 tiny and small models; the other components' ratios stay near 1). Small seeds 1
    and 10 failed the gate without its floor on this project's CPU."""
    from mnt.export.errors import AccuracyError
    from mnt.export.model.checkpoint import init_reference
    from mnt.export.model.components import component_specs
    from mnt.export.model.config import PRESETS
    from mnt.export.onnx.build import GATE_KS, _export_component
    from mnt.export.onnx.goldens import GOLDEN_K
    from mnt.export.onnx.samples import component_inputs, default_faces

    failures = []
    for preset, seed in [("tiny", 1), ("tiny", 2), ("tiny", 3), ("small", 1), ("small", 10)]:
        reference = init_reference(PRESETS[preset], seed=seed)
        spec = component_specs(reference.config)["landmark_disentangler"]
        faces = default_faces(reference.config.image_size)
        inputs = {k: component_inputs(reference, faces, k)[spec.name] for k in sorted({*GATE_KS, GOLDEN_K})}
        folder = tmp_path / f"{preset}-{seed}"
        folder.mkdir()
        try:
            _export_component(folder, reference.disentangler.eval(), spec, "fp32", inputs, log=lambda _: None)
        except AccuracyError as err:
            failures.append(f"{preset} seed {seed}: {err}")
    assert not failures
