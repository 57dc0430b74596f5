"""A small INT8 build from ../shared/data, calibrated from the session's FP32 build: it
passes its gate, records its sample and the layers it kept in FP32, writes the accuracy
report, and the runtime plays it."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import SHARED_DATA, console_script

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"{SHARED_DATA} is not beside the checkout")


@pytest.fixture(scope="module")
def int8_build(tiny_checkpoint, tiny_artefacts, tmp_path_factory):
    from mnt.calibration.build import build_int8
    from mnt.calibration.data import Options

    media = tmp_path_factory.mktemp("int8-media")
    for video in ("d0.mp4", "d11.mp4"):
        (media / video).symlink_to(SHARED_DATA / "driving" / video)
    for photo in ("s42.jpg", "s12.jpg"):
        (media / photo).symlink_to(SHARED_DATA / "targets" / photo)
    out = tmp_path_factory.mktemp("int8") / "artefact"
    fp32 = tiny_artefacts("fp32")
    before = {str(p.relative_to(fp32)): p.stat().st_mtime_ns for p in fp32.rglob("*")}
    manifest = build_int8(tiny_checkpoint, out, media, Options(frames=6, held_back=2, search_frames=3),
                          log=lambda _: None, from_fp32=fp32)
    assert {str(p.relative_to(fp32)): p.stat().st_mtime_ns for p in fp32.rglob("*")} == before  # untouched
    return out, manifest


def test_int8_build_passes_its_gate_and_records_its_calibration(int8_build):
    from mnt.calibration.build import E2E_GATE_DB
    from mnt.export.onnx.gates import int8_gate

    out, manifest = int8_build
    assert manifest.precision == "int8"
    assert manifest.components["generator"].precision == "int8"  # never kept FP32 whole
    recorded = manifest.calibration["components"]
    for name, c in manifest.components.items():
        assert c.accuracy["passed"] and recorded[name]["precision"] == c.precision, name
        assert all(t.dtype == "float32" for t in (*c.inputs, *c.outputs))  # IO stays float32
        model = (out / c.file).read_bytes()
        if c.precision == "int8":
            for output, e in c.accuracy["outputs"].items():
                assert e["psnr_db"] >= int8_gate(output)
            assert b"QuantizeLinear" in model and b"DequantizeLinear" in model
        else:  # kept FP32 whole, for its measured end-to-end cost
            assert c.precision == "fp32" and b"QuantizeLinear" not in model
            why = recorded[name]["kept_in_higher_precision"][0]["why"]
            assert "reenacted calibration frames reach only" in why
    sample = manifest.calibration["sample"]
    assert len(sample["frames"]) == 6 and len(sample["held_back"]) == 2 and len(sample["sha256"]) == 64
    assert not {(f["video"], f["frame"]) for f in sample["frames"]} & {
        (f["video"], f["frame"]) for f in sample["held_back"]}
    for c in manifest.calibration["components"].values():
        for kept in c["kept_in_higher_precision"] if c["precision"] == "int8" else ():
            assert kept["nodes"] and "quantised alone" in kept["why"]
    report = json.loads((out / "calibration_report.json").read_text())
    # where the figures were measured (issue 31): this CPU's INT8 path, exact products on it
    from mnt.runtime.cpu import int8_path

    where = manifest.calibration["measured_on"]
    assert where == report["measured_on"] and where["int8_path"] == int8_path().name
    assert where["session.x64quantprecision"] == (int8_path().saturates is not False)
    assert where["int8_path"] in (out / "calibration_report.md").read_text()
    assert report["end_to_end"]["frames"] == 2
    assert 0 < report["end_to_end"]["ssim"]["min"] <= 1
    assert report["components"]["generator"]["accuracy"]["outputs"]["image"]["snr_db"] > 0
    one = report["end_to_end_one_component_int8"]["components"]
    assert set(one) == set(manifest.components) and all(e["frames"] >= 1 for e in one.values())
    for name, c in manifest.components.items():  # the end-to-end rule was applied as recorded
        if name != "generator":
            assert (c.precision == "fp32") == (one[name]["psnr_db"]["min"] < E2E_GATE_DB), name
    assert "End to end" in (out / "calibration_report.md").read_text()
    assert not list(out.glob(".*"))  # the FP32 reference and the range cache are gone


def test_runtime_plays_an_int8_artefact(int8_build, tmp_path):
    from mnt.export.onnx.verify import verify
    from mnt.runtime.reenactor import Reenactor
    from tests.helpers import placed_landmarks, real_faces

    out, _ = int8_build
    _, rows = verify(out)
    assert all(r.status == "ok" for r in rows), rows
    with Reenactor(out, backend="onnxruntime-cpu") as model:
        face = real_faces()[0]
        points = placed_landmarks(model.size)
        state, _ = model.encode_targets([face], [points])
        frame = model.generate(state, model.driver_landmarks(state, face, points))
    assert frame.shape == (256, 256, 3) and frame.std() > 0
    video = tmp_path / "out.mp4"
    result = subprocess.run([console_script("mnt-run"), str(SHARED_DATA / "driving" / "d0.mp4"),
                             "--targets", str(SHARED_DATA / "targets"), "--artifacts", str(out),
                             "--max-frames", "2", "-o", str(video)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert video.stat().st_size > 0


def test_from_fp32_refuses_a_build_of_another_checkpoint(tiny_artefacts, tmp_path):
    from mnt.calibration.build import fp32_reference
    from mnt.export.errors import ExportError

    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not the checkpoint of that build")
    with pytest.raises(ExportError, match="built from another checkpoint") as err:
        fp32_reference(tiny_artefacts("fp32"), other)
    assert "--precision fp32" in (err.value.hint or "")


def test_from_fp32_is_for_int8_builds_only(tmp_path):
    from click.testing import CliRunner

    from mnt.export.cli import main

    result = CliRunner().invoke(main, ["build", "--checkpoint", str(tmp_path / "c.safetensors"),
                                       "--precision", "fp32", "--from-fp32", str(tmp_path),
                                       "--out", str(tmp_path / "out"), "--no-engines"])
    assert result.exit_code != 0
    assert "--from-fp32 is for int8 builds only" in result.output
    assert not (tmp_path / "out").exists()


def test_int8_graphs_build_tensorrt_rtx_engines(int8_build, tmp_path):
    # Q/DQ of 8-bit types only (float biases): what TensorRT's and TensorRT-RTX's parsers take.
    import shutil

    from mnt.export.tensorrt.builder import EngineSettings, build_engines, engines_unavailable

    reason = engines_unavailable("tensorrt-rtx")
    if reason:
        pytest.skip(f"needs TensorRT-RTX: {reason}")
    out, _ = int8_build
    folder = tmp_path / "int8"
    shutil.copytree(out, folder)
    manifest = build_engines(folder, EngineSettings(runtime="tensorrt-rtx"), log=lambda _: None)
    assert all("tensorrt-rtx" in c.engines for c in manifest.components.values())

