"""An INT8 graph that passes on its search samples but misses on held-back frames: the build
keeps the next most sensitive blocks in FP32 until the held-back frames pass, or the whole
component in FP32 (recorded), instead of failing. The tiny disentangler, with held-back images
brighter than any it was calibrated on, so their activations clip."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def disentangler(tiny_checkpoint, tmp_path_factory):
    from mnt.export.model.checkpoint import load_checkpoint
    from mnt.export.model.components import component_specs
    from mnt.export.onnx.build import _export_component
    from mnt.export.onnx.samples import component_inputs, default_faces

    reference = load_checkpoint(tiny_checkpoint)
    spec = component_specs(reference.config)["landmark_disentangler"]
    faces = default_faces(reference.config.image_size)
    module = reference.disentangler.eval()
    fp32 = tmp_path_factory.mktemp("fp32")
    info = _export_component(fp32, module, spec, "fp32",
                             {k: component_inputs(reference, faces, k)[spec.name] for k in (1, 3)},
                             log=lambda _: None)

    def feeds(seed: int, k: int, gain: float = 1.0) -> dict[str, np.ndarray]:
        images, offsets = component_inputs(reference, faces, k, seed=seed)[spec.name]
        return {"images": (images * gain).astype(np.float32), "landmark_offsets": offsets.astype(np.float32)}

    return fp32, info, module, feeds


def _int8(disentangler, tmp_path, gain: float):
    from mnt.calibration.build import _component
    from mnt.calibration.data import CalibrationData

    fp32, info, module, feeds = disentangler
    data = CalibrationData(folder=tmp_path, target_sets=[], calibration=[], held_back=[],
                           feeds={info.name: [feeds(seed, 1) for seed in range(6)]},
                           held_back_feeds={info.name: [feeds(10, 1, gain), feeds(20, 3, gain)]})
    (tmp_path / "cache").mkdir()
    lines: list[str] = []
    result = _component(tmp_path, fp32, tmp_path / "cache", info, module, data, 3, lines.append)
    return (*result, lines)


def test_a_held_back_miss_keeps_more_blocks_in_fp32_until_it_passes(disentangler, tmp_path):
    from mnt.export.onnx.gates import int8_gate
    from tests.tolerances import INT8_SEARCH_SLACK_MIN_DB

    info, plan, errors, kept_whole, lines = _int8(disentangler, tmp_path, gain=2.4)
    assert plan.all_int8.slack_db > INT8_SEARCH_SLACK_MIN_DB  # the search frames saw no problem ...
    assert any("missed the gate on held-back frames" in line for line in lines)  # ... the held-back did
    assert kept_whole is None and info.precision == "int8" and info.accuracy["passed"]
    assert errors["outputs"]["coefficients"]["worst_psnr_db"] >= int8_gate("coefficients")
    assert plan.handed_back and plan.final is not None and plan.final.quantized
    kept = plan.to_json()["kept_in_higher_precision"]
    assert [k["block"] for k in kept] == plan.kept() and set(plan.handed_back) == set(plan.kept())
    assert all("handed back after the gate missed on held-back frames" in k["why"]
               and "quantised alone" in k["why"] for k in kept)
    # the costliest blocks on the search samples went first
    alone = sorted(plan.alone, key=lambda b: plan.alone[b].slack_db)
    assert list(plan.handed_back) == alone[:len(plan.handed_back)]
    assert b"QuantizeLinear" in (tmp_path / info.file).read_bytes()


def test_a_component_no_int8_graph_fits_stays_fp32_whole(disentangler, tmp_path):
    from mnt.calibration.build import _calibration_entry

    _, plan, _, kept_whole, lines = _int8(disentangler, tmp_path, gain=5.0)
    assert kept_whole and "missed the gate on held-back frames" in kept_whole
    assert any(line.startswith("landmark_disentangler: stays FP32 whole") for line in lines)
    entry = _calibration_entry(plan, kept_whole)  # the manifest's record
    assert entry["precision"] == "fp32" and entry["quantized_nodes"] == 0
    assert entry["kept_in_higher_precision"][0]["why"] == kept_whole
